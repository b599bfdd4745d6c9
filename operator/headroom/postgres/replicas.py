"""One round of lag probes of a read pool's replicas against their primary:
what :func:`headroom.planning.membership.decide` judges. Used by the read-pool
agent (every pollSeconds, in the read-pooler pod) and by the operator (status,
conditions and Events, on its own slower schedule).

Blocking (psycopg); callers run it in a thread or a loop of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from headroom.planning import membership
from headroom.postgres import lag, server_limits

Probe = Callable[[server_limits.Target], "lag.Position | str"]


def observe(
    config: membership.ReadPoolConfig,
    *,
    user: str,
    password: str,
    server_ca_pem: str | None = None,
    probe: Probe = lag.position,
) -> dict[str, membership.Observed]:
    """One round of probes. The primary is read just before each replica, so a
    slow replica does not make the next one look further behind than it is."""

    def target(host: str, port: int) -> server_limits.Target:
        return server_limits.Target(
            host=host,
            port=port,
            database=config.dbname,
            username=user,
            password=password,
            ssl_mode=config.sslmode,
            server_ca_pem=server_ca_pem,
        )

    primary_target = target(config.primary.host, config.primary.port)
    primary_down = False
    found: dict[str, membership.Observed] = {}
    for replica in config.replicas:
        primary: lag.Position | str = "not read again this round"
        if not primary_down:
            primary = _safe(probe, primary_target)
            primary_down = isinstance(primary, str)
        found[replica.name] = judge(primary, _safe(probe, target(replica.host, config.port)))
    return found


def judge(primary: lag.Position | str, replica: lag.Position | str) -> membership.Observed:
    """What one probe of ``replica`` says, given the primary's position read
    around the same time (text: why either could not be read)."""
    if isinstance(replica, str):
        return membership.Observed.unreachable(replica)
    if isinstance(primary, str):
        return membership.Observed(in_recovery=replica.in_recovery)
    behind = lag.lag(primary, replica)
    return membership.Observed(
        in_recovery=replica.in_recovery, lag_bytes=behind.bytes, lag_seconds=behind.seconds
    )


def _safe(probe: Probe, target: server_limits.Target) -> lag.Position | str:
    try:
        return probe(target)
    except Exception as err:  # a probe must never end the loop
        return f"probe failed: {type(err).__name__}"
