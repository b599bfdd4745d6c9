"""``spec.queues``: Redis lists drained by worker pods that scale on their
backlog (KEDA when installed, an HPA on CPU otherwise)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from headroom.api.v1alpha1.pods import Resources
from headroom.api.v1alpha1.schema import IMAGE, SHORT_NAME, SHORT_NAME_MAX, Broken, Model, Rule

REDIS_KEY = r"^[A-Za-z0-9_:.{}-]{1,128}$"


class WorkerReplicas(Model):
    RULES = (
        Rule(
            "self.min <= self.max",
            "spec.queues[].replicas.min must be <= spec.queues[].replicas.max",
            lambda r: (
                None
                if r.min <= r.max
                else Broken("min", lambda at: f"{r.min} must be <= {at('max')} {r.max}")
            ),
        ),
    )

    min: int = Field(default=0, ge=0, le=1000, description="0 scales to zero (KEDA only).")
    max: int = Field(default=10, ge=1, le=1000, description="Most worker pods.")


def _database_time_within_job(load: QueueLoad) -> Broken | None:
    held, job = load.database_seconds_per_job, load.seconds_per_job
    if held is None or held <= job:
        return None
    return Broken(
        "databaseSecondsPerJob",
        lambda at: (
            f"{held} must be <= {at('secondsPerJob')} {job}: a job holds a database "
            "connection only while it runs"
        ),
    )


DEFAULT_EVENTS_MAX_LEN = 10_000  # BullMQ's streams.events.maxLen


class QueueMemory(Model):
    """What the queue's jobs hold in its Redis (BullMQ): the planner adds the jobs
    waiting at peak (Erlang C), running and kept, and the events stream, and checks
    them against the instance's maxmemory (a queue's Redis never evicts: full, it
    refuses new jobs)."""

    bytes_per_job: int = Field(
        ge=1,
        le=536_870_912,
        description="Bytes of one job's data as JSON (what queue.add is given); "
        "BullMQ's own fields, ids and indexes are added by the planner.",
    )
    return_bytes_per_job: int = Field(
        default=0,
        ge=0,
        le=536_870_912,
        description="Bytes of the processor's return value as JSON, kept in each completed "
        "job and in its completed event (0: none).",
    )
    kept_completed: int = Field(
        ge=0,
        le=100_000_000,
        description="Completed jobs the app keeps (BullMQ's removeOnComplete count; "
        "{age: s} keeps about peakJobsPerSecond x s). BullMQ keeps every one unless "
        "removeOnComplete says otherwise, which no maxmemory holds.",
    )
    kept_failed: int = Field(
        ge=0,
        le=100_000_000,
        description="Failed jobs the app keeps (removeOnFail), each with its failure "
        "reason and stack trace.",
    )
    events_max_len: int = Field(
        default=DEFAULT_EVENTS_MAX_LEN,
        ge=0,
        le=100_000_000,
        description="The queue's events stream length (BullMQ's streams.events.maxLen, "
        "default 10000).",
    )


class QueueLoad(Model):
    """The jobs the queue's workers must carry at peak: Erlang C sizes their slots (and,
    with databaseSecondsPerJob beside spec.load, their share of the pooler) as it sizes
    the app's requests."""

    RULES = (
        Rule(
            "!has(self.databaseSecondsPerJob) || self.databaseSecondsPerJob <= self.secondsPerJob",
            "spec.queues[].load.databaseSecondsPerJob must be <= spec.queues[].load.secondsPerJob",
            _database_time_within_job,
        ),
    )

    peak_jobs_per_second: float = Field(
        gt=0, le=1_000_000, description="Jobs added to the list per second at peak."
    )
    seconds_per_job: float = Field(
        gt=0, le=86_400, description="Seconds one job keeps a worker slot busy."
    )
    concurrency_per_pod: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="Jobs one worker pod runs at once (BullMQ's Worker concurrency, default 1).",
    )
    database_seconds_per_job: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Seconds one job holds a database connection (needs databasePoolSize); "
        "with spec.load the pooler counts this load instead of the workers' whole pools.",
    )
    redis: QueueMemory | None = Field(
        default=None,
        description="What a job holds in the queue's Redis: the jobs waiting at peak, "
        "running and kept are checked against its maxmemory.",
    )


def _database_time_needs_a_pool(queue: Queue) -> Broken | None:
    if queue.load is None or queue.load.database_seconds_per_job is None:
        return None
    if queue.database_pool_size > 0:
        return None
    return Broken(
        "load.databaseSecondsPerJob",
        lambda at: f"needs {at('databasePoolSize')} > 0: these workers open no database connection",
    )


class Queue(Model):
    """A Redis list drained by worker pods that scale on its backlog."""

    RULES = (
        Rule(
            "!has(self.load) || !has(self.load.databaseSecondsPerJob) || self.databasePoolSize > 0",
            "spec.queues[].load.databaseSecondsPerJob needs spec.queues[].databasePoolSize > 0",
            _database_time_needs_a_pool,
        ),
    )

    name: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Queue name."
    )
    redis: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Name of a spec.cache.instances entry with use: queue."
    )
    list_name: Annotated[str, Field(pattern=REDIS_KEY, max_length=128)] = Field(
        description="Redis list key holding the backlog (e.g. bull:emails:wait)."
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(description="Worker image.")
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=32
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    replicas: WorkerReplicas = Field(default_factory=WorkerReplicas)
    backlog_per_worker: int = Field(
        default=10, ge=1, le=1_000_000, description="Target list length per worker pod."
    )
    activation_backlog: int = Field(
        default=0, ge=0, le=1_000_000, description="Backlog above which workers wake from zero."
    )
    termination_grace_period_seconds: int = Field(
        default=300,
        ge=1,
        le=86_400,
        description="Time a worker gets to finish in-flight jobs when scaled down.",
    )
    database_pool_size: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Connections one worker pod opens through the pooler (0: no database); "
        "counted in the connection budget.",
    )
    database_read_pool_size: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Connections one worker pod opens to the read endpoint "
        "(DATABASE_READ_URL; 0: none); counted in the read budget.",
    )
    cpu_utilization: int = Field(
        default=70, ge=1, le=100, description="CPU target of the HPA fallback (no KEDA)."
    )
    load: QueueLoad | None = Field(
        default=None,
        description="The jobs at peak: the workers' slots (replicas.max x concurrencyPerPod) "
        "are checked against them with the profile's chance of waiting.",
    )
