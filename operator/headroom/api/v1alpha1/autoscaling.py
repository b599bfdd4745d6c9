"""``spec.autoscaling``: the HPA and PDB Headroom gives the app's own Deployment."""

from __future__ import annotations

from pydantic import Field

from headroom.api.v1alpha1.schema import Model


class Autoscaling(Model):
    """HPA (autoscaling/v2) and PDB for the app's own Deployment."""

    enabled: bool = Field(default=True, description="Create the HPA and the PDB.")
    cpu_utilization: int = Field(
        default=50, ge=1, le=100, description="Average CPU target (seed 000: under 50%)."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="Wait this long before scaling down."
    )
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    max_unavailable: int = Field(default=1, ge=1, le=100, description="PDB maxUnavailable.")
