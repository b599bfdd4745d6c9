"""The ScalingProfile API: pydantic models that are the only schema (the CRD in
crds/ is generated from them by :mod:`headroom.api.crd`)."""
