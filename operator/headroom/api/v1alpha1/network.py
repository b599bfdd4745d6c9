"""``spec.network``: who may reach the pods Headroom runs (NetworkPolicies)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from headroom.api.v1alpha1.schema import DNS_LABEL, Model


class Network(Model):
    """Who may reach what Headroom runs. Every pooler and Redis pod gets a
    NetworkPolicy that admits the app's pods and Headroom's workers (same
    namespace) on the service port, and only the namespaces named here
    elsewhere."""

    monitoring_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] | None = Field(
        default=None,
        description="Namespace whose pods may scrape the exporters (pooler 9127, Redis "
        "9121), e.g. where Prometheus runs. Absent: only pods of the profile's namespace.",
    )
    keda_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = Field(
        default="keda",
        description="Namespace of KEDA's operator, which reads a queue's length from Redis "
        "itself when KEDA scales its workers.",
    )
