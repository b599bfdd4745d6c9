"""How long each fuzz test runs: a short, repeatable run in ``make test``
(derandomized: the same examples on every machine), a long random one in
``make fuzz`` (``HEADROOM_FUZZ_EXAMPLES``, ``HEADROOM_FUZZ_SEED``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings


def fuzz_settings(short: int) -> settings:
    """``short`` examples in ``make test``; ``$HEADROOM_FUZZ_EXAMPLES`` when set."""
    examples = int(os.environ.get("HEADROOM_FUZZ_EXAMPLES", short))
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize="HEADROOM_FUZZ_EXAMPLES" not in os.environ,
        # the inputs are big by design, and each example plans and renders
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    )
