"""``spec.load``: the load the app must carry at peak, and the chance of waiting it accepts.

Optional. When given, the planner sizes the pooler's server connections from it (queueing
theory, planning.queueing) instead of filling the budget, checks that the app's client pool
carries it, and refuses at admission, naming the limit and by how much, when the budget
cannot serve it.
"""

from __future__ import annotations

from pydantic import Field

from headroom.api.v1alpha1.schema import Broken, Model, Rule, exactly_one_of

DEFAULT_WAIT_PROBABILITY = 0.05


class Users(Model):
    """Concurrent users who each send a request, wait for it, then think before the next."""

    concurrent: int = Field(
        ge=1,
        le=10_000_000,
        description="Users active at once at peak (seed 003: 3,000-4,000 gym members).",
    )
    think_seconds: float = Field(
        ge=0,
        le=3600,
        description="Seconds a user waits between one response and the next request "
        "(seed 003: 10 requests a minute each, 6 s).",
    )


def _reads_within_request(load: Load) -> Broken | None:
    reads, held = load.read_seconds_per_request, load.database_seconds_per_request
    if reads is None or reads < held:
        return None
    return Broken(
        "readSecondsPerRequest",
        lambda at: (
            f"{reads} must be < {at('databaseSecondsPerRequest')} {held}: it is the part of "
            "a request's database time spent on the read pool, the rest is on the primary"
        ),
    )


class Load(Model):
    """The peak load, as a request rate or as users with a think time."""

    RULES = (
        exactly_one_of("peakRequestsPerSecond", "users", path="spec.load"),
        Rule(
            "!has(self.readSecondsPerRequest) || "
            "self.readSecondsPerRequest < self.databaseSecondsPerRequest",
            "spec.load.readSecondsPerRequest must be < spec.load.databaseSecondsPerRequest",
            _reads_within_request,
        ),
    )

    peak_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Requests per second at peak that use the database. Exclusive with users.",
    )
    users: Users | None = Field(
        default=None,
        description="Concurrent users and their think time; the rate is at most "
        "concurrent / (thinkSeconds + databaseSecondsPerRequest). Exclusive with "
        "peakRequestsPerSecond.",
    )
    database_seconds_per_request: float = Field(
        gt=0,
        le=60,
        description="Seconds one request holds a database connection (its queries' time; "
        "seed 003: 20 ms a query, 50 ms under load).",
    )
    read_seconds_per_request: float | None = Field(
        default=None,
        gt=0,
        le=60,
        description="Of databaseSecondsPerRequest, the seconds a request's reads hold a "
        "read-pool connection (DATABASE_URL_READ, spec.database.readReplicas): the read "
        "pool is sized for them and the write pool for the rest.",
    )
    wait_probability: float = Field(
        default=DEFAULT_WAIT_PROBABILITY,
        # gt 0, not ge 0.0001: the API server compares an integer value with a
        # fractional bound cut to an integer, so 0 would pass "minimum: 0.0001"
        gt=0,
        le=0.5,
        description="The accepted chance that a request finds every connection busy and "
        "waits (Erlang C); the pools are the smallest that meet it.",
    )
