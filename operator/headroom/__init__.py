"""Headroom: a Kubernetes operator that turns one ScalingProfile into the
pieces an app needs to grow (connection pooling, replicas, cache, queues,
autoscaling, alerts) and proves the connection budget fits.

Layers (enforced by import-linter, see pyproject.toml): api -> planning ->
builders are pure; kube talks to the API server; reconcile runs one idempotent
pass; runtime (the process) and cli are the thin edges.
"""

__version__ = "0.1.0"
