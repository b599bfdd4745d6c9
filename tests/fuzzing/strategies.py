"""Hypothesis strategies for ScalingProfile bodies (plain dicts, as the API
server and ``headroom plan`` receive them).

A body is drawn in two steps:

1. :func:`valid_profile` writes a plausible profile over every section by hand
   (app, database with read replicas of every mode, pooler parameters, Redis,
   queues, autoscaling, network, buckets of every provider with CORS, alerts),
   with the fields whose grammar matters (durations, label names, origins,
   endpoints, bucket names, hosts, quantities) drawn *near* their grammar:
   mostly valid, often just outside it.
2. :func:`mutated` applies up to a few mutations at random places: a value from
   the CRD schema of that place (its pattern, enum and bounds, one past each
   bound), a hostile value of the same type (configuration-file and PromQL
   injection, Go template text, look-alike Unicode, huge values), a type swap,
   a dropped or unknown key, a hostile map key, or an optional field the hand
   generator never sets, drawn from the schema. The schema is the generated
   CRD, so fields added to the API are fuzzed without a change here.

Strings never hold lone surrogates: no YAML file or JSON request can carry
them, so no user can send one.
"""

from __future__ import annotations

import copy
import functools
import string
from typing import Any

from hypothesis import strategies as st

from headroom.api import crd

Body = dict[str, Any]
Path = tuple[str | int, ...]

# -- text ----------------------------------------------------------------------

# Every character a YAML file or a JSON request can carry (no lone surrogates).
_ANY_CHAR = st.characters(blacklist_categories=("Cs",))

# Lines that end a value and start a directive, a PromQL matcher, a template, a
# shell word, a CSV field or an XML element in the files Headroom renders.
INJECTIONS = (
    "\n",
    "\r",
    "\r\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x85",
    "\u2028",
    "\t",
    " ",
    "x\nauth_type = trust",
    "600\r\nrequirepass evil",
    "\n[databases]\nevil = host=attacker",
    "\ninclude /etc/passwd",
    "0 # comment",
    "1;2",
    "x = y",
    '"',
    "'",
    "\\",
    '\\"',
    'a", evil="1',
    '"} or vector(1) or {x="',
    "{{ $value }}",
    "{{",
    "}}",
    '{{ printf "%s" }}',
    "${HOME}",
    "$(id)",
    "`id`",
    "%s%n",
    "*",
    "?",
    "..",
    "../../etc",
    "/",
    ":",
    "@",
    "#",
    ";",
    ",",
    "<Cors>",
    "]]>",
    "&amp;",
    "-",
    "",
)
# Characters that look like ASCII but are not, and ones Unicode case mapping,
# normalization or int() treat specially.
LOOKALIKES = (
    "\u0430",  # Cyrillic a
    "\u0455",  # Cyrillic s
    "\u03bf",  # Greek omicron
    "\uff53",  # fullwidth s
    "\uff11",  # fullwidth 1
    "\u0663",  # Arabic-Indic 3
    "\u0130",  # I with dot above (lowercases to two characters)
    "\u212a",  # Kelvin sign (lowercases to k)
    "\u017f",  # long s (uppercases to S)
    "\ufb01",  # fi ligature
    "\u00df",  # sharp s
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\u0301",  # combining acute accent
    "\ufeff",  # byte-order mark
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
)


@st.composite
def hostile_text(draw: st.DrawFn, original: str = "") -> str:
    """A string meant to break whatever reads it, often built on ``original``."""
    choice = draw(st.integers(0, 9))
    if choice <= 2 and original:
        # the original with something slipped in at the start, middle or end
        extra = draw(st.sampled_from(INJECTIONS + LOOKALIKES))
        at = draw(st.integers(0, len(original)))
        return original[:at] + extra + original[at:]
    if choice == 3 and original:
        # one character swapped for a look-alike, or the case changed
        at = draw(st.integers(0, len(original) - 1))
        swap = draw(st.sampled_from((*LOOKALIKES, original[at].upper(), original[at].lower())))
        return original[:at] + swap + original[at + 1 :]
    if choice == 4:
        return draw(st.sampled_from(INJECTIONS))
    if choice == 5:
        # huge: past every maxLength, up to the webhook's body limit
        size = draw(st.sampled_from((64, 65, 128, 129, 254, 257, 4097, 70_000)))
        return (original or "a") * (size // max(len(original), 1) + 1)
    if choice == 6:
        return draw(st.text(_ANY_CHAR, max_size=40))
    if choice == 7:
        return draw(
            st.sampled_from(("10", "1e3", "0x10", "-1", "+1", " 1", "1 ", "\u0661", "true"))
        )
    if choice == 8:
        return draw(st.text(st.sampled_from(LOOKALIKES + tuple("ab1-.")), min_size=1, max_size=8))
    return draw(st.sampled_from(INJECTIONS)) + (original or "x")


HOSTILE_INTS = (
    -1,
    0,
    1,
    2,
    255,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(2**63),
)


def hostile_value(original: Any) -> st.SearchStrategy[Any]:
    """A value of the same JSON type as ``original`` meant to break things, or
    one of another type."""
    other_types = st.sampled_from(
        (None, True, False, 1.5, 0.0, -0.0, 1e308, "1", "", [], {}, [1], {"a": 1})
    )
    if isinstance(original, bool):
        return st.one_of(other_types, st.sampled_from(("true", "false", "yes", 1, 0)))
    if isinstance(original, int):
        return st.one_of(
            st.sampled_from(HOSTILE_INTS),
            st.sampled_from((original - 1, original + 1, -original, original * 1000)),
            st.floats(allow_nan=False, allow_infinity=False),
            st.just(str(original)),
            other_types,
        )
    if isinstance(original, float):
        return st.one_of(
            st.sampled_from((0.0, -0.0, 1e-300, 5e-324, 1e308, -1.0, 1.0, 100.0)),
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-10, 10),
            other_types,
        )
    if isinstance(original, str):
        return st.one_of(hostile_text(original), other_types)
    if isinstance(original, list):
        return st.one_of(
            st.just([]),
            st.just(original * 20),
            st.lists(hostile_text(), max_size=3),
            other_types,
        )
    return st.one_of(other_types, st.just({"unknownField": 1}))


# -- grammar-near values -----------------------------------------------------------

_LOWER = string.ascii_lowercase
_DIGITS = string.digits


def _odd(draw: st.DrawFn) -> bool:
    """True about one time in five: a field's value is drawn from just outside
    its grammar (profiles have many such fields: most must be valid for the
    whole profile to plan and reach the programs). Rare choices are the largest
    value drawn: Hypothesis draws the smallest most often."""
    return draw(st.integers(0, 4)) == 4


def dns_label(max_size: int = 12) -> st.SearchStrategy[str]:
    return st.from_regex(rf"[a-z]([-a-z0-9]{{0,{max_size - 2}}}[a-z0-9])?", fullmatch=True)


def short_name() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z]([-a-z0-9]{0,6}[a-z0-9])?", fullmatch=True)


_DURATION_UNITS = ("y", "w", "d", "h", "m", "s", "ms")


@st.composite
def durations(draw: st.DrawFn) -> str:
    """Prometheus durations: usually in order with each unit once (1h30m),
    sometimes out of order, repeated, zero, or out of range (300y)."""
    if not _odd(draw):
        return draw(st.sampled_from(("5m", "1h30m", "90s", "0", "1d", "15m", "2w")))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(("0", "", "5", "5 m", "1.5h", "-5m", "5M", "5min", "1h1h")))
    units = list(_DURATION_UNITS)
    if kind <= 6:  # in Prometheus' order, each once
        chosen = sorted(
            draw(st.lists(st.sampled_from(units), min_size=1, max_size=3, unique=True)),
            key=units.index,
        )
    else:  # any order, repeats allowed
        chosen = draw(st.lists(st.sampled_from(units), min_size=1, max_size=4))
    parts = []
    for unit in chosen:
        digits = draw(
            st.one_of(
                st.integers(0, 90).map(str),
                st.integers(0, 10**12).map(str),
                st.sampled_from(("292", "293", "15250", "15251", "00", "0001", "9" * 20)),
            )
        )
        parts.append(digits + unit)
    return "".join(parts)


# Label names Headroom sets itself, or Prometheus reserves.
TAKEN_LABELS = (
    "__name__",
    "__meta_x",
    "__",
    "le",
    "namespace",
    "pod",
    "container",
    "alertname",
    "severity",
    "profile",
    "component",
    "pool",
    "redis",
    "queue",
)


@st.composite
def label_names(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True))
    if kind == 1:
        return draw(st.sampled_from(TAKEN_LABELS))
    return draw(
        st.sampled_from(
            (
                "_",
                "job",
                "code",
                "team-name",
                "1team",
                "team\n",
                "t\u0435am",  # Cyrillic e
                "http_server_request_duration_seconds_bucket",
                "http_requests_count",
                "x" * 64,
                "x" * 65,
            )
        )
    )


_BLOCKED_HOSTS = (
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",
    "169.254.170.2",
    "0.0.0.0",  # noqa: S104 - a value under test
    "100.100.100.200",
    "localhost",
    "api.localhost",
    "metadata.google.internal",
    "metadata",
    "0x7f000001",
    "2130706433",
    "0177.0.0.1",
    "127.1",
    "0",
)


@st.composite
def hosts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 7)) if _odd(draw) else 0
    if kind <= 3:
        labels = draw(st.lists(dns_label(10), min_size=1, max_size=4))
        return ".".join(labels)
    if kind == 4:
        return ".".join(str(draw(st.integers(0, 300))) for _ in range(4))
    if kind == 5:
        return draw(st.sampled_from(_BLOCKED_HOSTS))
    return draw(
        st.sampled_from(
            (
                "a..b",
                "-a.example",
                "a-.example",
                "example.com.",
                "EXAMPLE.com",
                "x" * 64 + ".example",
                "s3.amazonaws.com",
                "acct.r2.cloudflarestorage.com",
                "minio",
                "minio.objects.svc",
                "10.0.0.1",
                "192.168.1.10",
            )
        )
    )


_PORTS = ("", ":0", ":1", ":80", ":443", ":8080", ":65535", ":65536", ":99999", ":0080", ":")


@st.composite
def endpoints(draw: st.DrawFn) -> str:
    odd = _odd(draw)
    scheme = draw(st.sampled_from(("https", "http", "HTTPS", "ftp", ""))) if odd else "https"
    host = draw(hosts())
    port = draw(st.sampled_from(_PORTS)) if odd or _odd(draw) else ""
    tail = draw(st.sampled_from(("", "/", "/bucket", "?x=1", "#f", "@evil.com"))) if odd else ""
    return f"{scheme}://{host}{port}{tail}" if scheme else f"{host}{port}{tail}"


@st.composite
def origins(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9)) if _odd(draw) else 5
    if kind == 0:
        return "*"
    if kind == 1:
        return draw(
            st.sampled_from(
                (
                    "https://*.com",
                    "https://*",
                    "https://*.*.example.com",
                    "https://a.*.example.com",
                    "*.example.com",
                    "https://example.com/",
                    "https://example.com:443",
                    "http://example.com:80",
                    "null",
                    "https://user@example.com",
                )
            )
        )
    if kind == 5:  # a valid one
        wildcard = "*." if draw(st.integers(0, 3)) == 3 else ""
        port = draw(st.sampled_from(("", ":3000", ":8443")))
        return f"https://{wildcard}{draw(dns_label(10))}.example.com{port}"
    scheme = draw(st.sampled_from(("https", "http", "ftp")))
    wildcard = "*." if draw(st.integers(0, 3)) == 3 else ""
    return f"{scheme}://{wildcard}{draw(hosts())}{draw(st.sampled_from(_PORTS))}"


@st.composite
def bucket_names(draw: st.DrawFn) -> str:
    if not _odd(draw):
        return draw(st.from_regex(r"[a-z][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True))
    if draw(st.booleans()):
        return draw(st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True))
    return draw(
        st.sampled_from(
            (
                "ab",
                "a" * 63,
                "a" * 64,
                "xn--bucket",
                "sthree-x",
                "amzn-s3-demo-x",
                "b-s3alias",
                "b--ol-s3",
                "b--x-s3",
                "b.mrap",
                "192.168.1.10",
                "a..b",
                "a.-b",
                "Bucket",
                "bucket_1",
                "b\u0430cket",
            )
        )
    )


@st.composite
def quantities(draw: st.DrawFn) -> str | int:
    kind = draw(st.integers(0, 6)) if _odd(draw) else 0
    if kind <= 2:
        number = draw(st.integers(1, 4096))
        return f"{number}{draw(st.sampled_from(('Mi', 'Gi', 'M', 'G', 'Ki', '', 'k')))}"
    if kind == 3:
        return draw(st.integers(-(2**40), 2**40))
    return draw(
        st.sampled_from(
            ("0", "-2G", "-1", "0.5Gi", "1e9", "1e99", "8Ei", "1.5", ".5", "1Mi ", "1mi", "0x10")
        )
    )


# -- sections -------------------------------------------------------------------------

_PGBOUNCER_VALUES: dict[str, st.SearchStrategy[str]] = {
    "min_pool_size": st.integers(0, 5).map(str),
    "reserve_pool_timeout": st.integers(0, 10).map(str),
    "server_round_robin": st.sampled_from(("0", "1")),
    "server_lifetime": st.integers(0, 86_400).map(str),
    "server_idle_timeout": st.integers(0, 86_400).map(str),
    "server_connect_timeout": st.integers(1, 60).map(str),
    "query_timeout": st.integers(0, 600).map(str),
    "query_wait_timeout": st.integers(0, 600).map(str),
    "client_idle_timeout": st.integers(0, 600).map(str),
    "idle_transaction_timeout": st.integers(0, 600).map(str),
    "server_check_query": st.sampled_from(("select 1", "SELECT 1;", "select 'a'", "")),
    "server_reset_query": st.sampled_from(("DISCARD ALL", "RESET ALL; SET x = 1")),
    "ignore_startup_parameters": st.sampled_from(
        ("extra_float_digits", "extra_float_digits, search_path", "options")
    ),
    "log_connections": st.sampled_from(("0", "1")),
    "stats_period": st.integers(1, 300).map(str),
    "verbose": st.integers(0, 3).map(str),
    "tcp_keepalive": st.sampled_from(("0", "1")),
    "tcp_keepcnt": st.integers(0, 127).map(str),
    "pkt_buf": st.sampled_from(("512", "4096", "1048576")),
    "server_tls_sslmode": st.sampled_from(("disable", "prefer", "require")),
    "max_prepared_statements": st.integers(0, 500).map(str),
    "cancel_wait_timeout": st.integers(0, 60).map(str),
    "default_pool_size": st.integers(1, 60).map(str),
    "reserve_pool_size": st.integers(0, 10).map(str),
    "max_db_connections": st.integers(1, 60).map(str),
    "max_client_conn": st.integers(10, 5000).map(str),
}

_REDIS_VALUES: dict[str, st.SearchStrategy[str]] = {
    "timeout": st.integers(0, 3600).map(str),
    "tcp-keepalive": st.integers(0, 600).map(str),
    "hz": st.integers(1, 500).map(str),
    "maxclients": st.integers(1, 100_000).map(str),
    "maxmemory-samples": st.integers(1, 64).map(str),
    "appendfsync": st.sampled_from(("always", "everysec", "no")),
    "slowlog-log-slower-than": st.integers(-1, 100_000).map(str),
    "slowlog-max-len": st.integers(0, 1000).map(str),
    "latency-monitor-threshold": st.integers(0, 1000).map(str),
    "lazyfree-lazy-eviction": st.sampled_from(("yes", "no")),
    "activedefrag": st.sampled_from(("yes", "no")),
    "notify-keyspace-events": st.sampled_from(("", "Ex", "KEA", "K$", "Kg$lshzxetmdn")),
}

_PGBOUNCER_IMAGES = (
    "registry.example/pgbouncer:1.18.0",
    "registry.example/pgbouncer:1.18.0",
    "ghcr.io/cloudnative-pg/pgbouncer:1.24.1",
    "registry.example/pgbouncer:1.21.0",
    "registry.example/pgbouncer:latest",
)


def _maybe(draw: st.DrawFn, body: Body, key: str, value: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        body[key] = draw(value)


@st.composite
def app_section(draw: st.DrawFn) -> Body:
    app: Body = {"deployment": draw(st.sampled_from(("web", "shop-web", "api.v2")))}
    if draw(st.integers(0, 4)):
        low = draw(st.integers(1, 5))
        app["replicas"] = {"min": low, "max": draw(st.integers(low, 30))}
    else:
        app["capacity"] = {
            "targetConcurrentUsers": draw(st.integers(100, 200_000)),
            "usersPerPod": draw(st.integers(50, 5000)),
            "minReplicas": draw(st.integers(1, 3)),
        }
    _maybe(draw, app, "poolSizePerPod", st.integers(1, 20))
    _maybe(draw, app, "client", st.sampled_from(("generic", "prisma", "node-postgres")))
    if draw(st.integers(0, 3)) == 3:
        renames = {"S3_BUCKET": "R2_BUCKET_NAME", "AWS_ACCESS_KEY_ID": "R2_ACCESS_KEY_ID"}
        renames |= {"DATABASE_URL": "PG_URL", "REDIS_URL": "CACHE_URL"}
        app["bindingKeys"] = draw(
            st.dictionaries(
                st.sampled_from(sorted(renames)),
                st.sampled_from(("R2_X", "DATABASE_X", "type", "1BAD", "SAME")),
                max_size=2,
            )
            if _odd(draw)
            else st.fixed_dictionaries({}, optional={k: st.just(v) for k, v in renames.items()})
        )
    return app


@st.composite
def read_replicas(draw: st.DrawFn, *, queues_read: bool) -> Body:
    mode = draw(st.sampled_from(("external", "external", "streaming", "cnpg")))
    rr: Body = {"mode": mode}
    if mode == "external":
        count = draw(st.integers(1, 3))
        rr["hosts"] = [
            {"host": f"replica-{index}.db.example"}
            if draw(st.integers(0, 3))
            else {"host": draw(hosts())}
            for index in range(count)
        ]
        if draw(st.booleans()):
            rr["hosts"][0]["maxConnections"] = draw(st.integers(20, 1000))
    elif mode == "streaming":
        rr["streaming"] = {"replicationSecret": {"name": "repl"}}
        _maybe(draw, rr["streaming"], "standbys", st.integers(1, 3))
    else:
        rr["cnpg"] = {"cluster": "pg"}
    _maybe(draw, rr, "readPoolSizePerPod", st.integers(1, 10))
    _maybe(draw, rr, "maxLagSeconds", st.integers(1, 120))
    _maybe(draw, rr, "pollSeconds", st.integers(1, 300) if _odd(draw) else st.integers(1, 5))
    _maybe(draw, rr, "whenAllLagging", st.sampled_from(("primary", "refuse")))
    _maybe(draw, rr, "primaryFallbackConnections", st.integers(1, 60))
    _maybe(draw, rr, "reservedConnections", st.integers(0, 10))
    _maybe(draw, rr, "maxLagBytes", st.integers(1, 10**9))
    del queues_read
    return rr


@st.composite
def database_section(draw: st.DrawFn, *, replicas: bool) -> Body:
    db: Body = {
        "host": draw(st.sampled_from(("db", "shop-db.default.svc", "10.0.0.5", "pg-rw"))),
        "name": draw(st.sampled_from(("shop", "app_1", "Shop-db", "Shop$db")))
        if _odd(draw)
        else "shop",
        "credentialsSecret": {"name": "db-credentials"},
    }
    _maybe(draw, db, "maxConnections", st.sampled_from((100, 200, 500, 1000, 60, 2000)))
    _maybe(draw, db, "superuserReservedConnections", st.integers(0, 5))
    _maybe(draw, db, "reservedConnections", st.integers(0, 10))
    _maybe(draw, db, "readLimits", st.booleans())
    if draw(st.integers(0, 4)) == 4:
        db["sslMode"] = draw(st.sampled_from(("require", "verify-full", "disable")))
        if db["sslMode"] == "verify-full":
            db["serverCASecret"] = {"name": "db-ca"}
    if replicas:
        db["readReplicas"] = draw(read_replicas(queues_read=False))
        if db["readReplicas"]["mode"] == "cnpg":
            db["host"] = "pg-rw"
    if draw(st.integers(0, 3)) == 3:
        metrics: Body = {}
        _maybe(draw, metrics, "enabled", st.booleans())
        _maybe(draw, metrics, "credentialsSecret", st.just({"name": "db-monitor"}))
        _maybe(
            draw,
            metrics,
            "image",
            st.sampled_from(("quay.io/prometheuscommunity/postgres-exporter:v0.17.1", "x:1")),
        )
        db["metrics"] = metrics
    return db


@st.composite
def pooler_section(draw: st.DrawFn) -> Body:
    pooler: Body = {}
    _maybe(draw, pooler, "instances", st.integers(1, 3))
    _maybe(draw, pooler, "poolMode", st.sampled_from(("transaction", "transaction", "session")))
    pooler["image"] = draw(st.sampled_from(_PGBOUNCER_IMAGES))
    if pooler["image"].endswith(":latest"):
        pooler["version"] = "1.18"
    keys = draw(st.lists(st.sampled_from(sorted(_PGBOUNCER_VALUES)), max_size=3, unique=True))
    if keys:
        pooler["parameters"] = {key: draw(_PGBOUNCER_VALUES[key]) for key in keys}
    if draw(st.integers(0, 3)) == 3:
        tune: Body = {}
        _maybe(draw, tune, "enabled", st.booleans())
        _maybe(draw, tune, "maxChangesPerHour", st.sampled_from((1, 2, 12)))
        pooler["autoTune"] = tune
    return pooler


@st.composite
def cache_section(draw: st.DrawFn) -> Body:
    names = draw(st.lists(short_name(), min_size=1, max_size=3, unique=True))
    instances = []
    for name in names:
        inst: Body = {"name": name, "use": draw(st.sampled_from(("cache", "queue", "counters")))}
        if name in ("cache", "queue", "counters"):
            inst["use"] = name
        _maybe(draw, inst, "memory", st.sampled_from(("64Mi", "256Mi", "1Gi", "512M")))
        if draw(st.integers(0, 3)) == 3:
            inst["persistence"] = {"size": "1Gi"}
        if draw(st.integers(0, 4)) == 4:
            inst["sentinel"] = {"replicas": draw(st.integers(1, 2))}
        keys = draw(st.lists(st.sampled_from(sorted(_REDIS_VALUES)), max_size=2, unique=True))
        if keys:
            inst["config"] = {key: draw(_REDIS_VALUES[key]) for key in keys}
        instances.append(inst)
    return {"instances": instances}


@st.composite
def queues_section(draw: st.DrawFn, *, cache: Body, reads: bool) -> list[Body]:
    targets = [i["name"] for i in cache["instances"] if i["use"] == "queue"]
    if not targets:
        return []
    queues = []
    for name in draw(st.lists(short_name(), max_size=2, unique=True)):
        queue: Body = {
            "name": name,
            "redis": draw(st.sampled_from(targets)),
            "listName": draw(
                st.one_of(
                    st.sampled_from(("bull:emails:wait", f"{name}:jobs", "{bull}:q:wait")),
                    st.from_regex(r"[A-Za-z0-9_:.{}-]{1,24}", fullmatch=True),
                )
            ),
            "image": "registry.example/worker:1.0",
        }
        high = draw(st.integers(1, 10))
        queue["replicas"] = {"min": draw(st.integers(0, high)), "max": high}
        _maybe(draw, queue, "databasePoolSize", st.integers(0, 3))
        if reads:
            _maybe(draw, queue, "databaseReadPoolSize", st.integers(0, 3))
        if draw(st.integers(0, 3)) == 3:
            queue["args"] = draw(st.lists(st.sampled_from(("--once", "a b", "$(X)")), max_size=2))
        if draw(st.integers(0, 2)) == 2:
            queue["load"] = draw(queue_load())
        queues.append(queue)
    return queues


@st.composite
def queue_load(draw: st.DrawFn) -> Body:
    """spec.queues[].load: jobs near and past what the slots carry, the fields' bounds,
    and a database time beside, equal to or past the job's."""
    seconds = draw(
        st.sampled_from((0.05, 1, 30, 86_400, 86_401, 0))
        | st.floats(min_value=0.001, max_value=120, allow_nan=False)
    )
    load: Body = {
        "peakJobsPerSecond": draw(
            st.sampled_from((0.1, 5, 1_000_000, 1_000_001, 0, -1))
            | st.floats(min_value=0.01, max_value=500, allow_nan=False)
        ),
        "secondsPerJob": seconds,
    }
    _maybe(draw, load, "concurrencyPerPod", st.sampled_from((1, 5, 50, 10_000, 10_001, 0)))
    _maybe(
        draw,
        load,
        "databaseSecondsPerJob",
        st.sampled_from((seconds, 0.01, 0)) | st.floats(min_value=0.001, max_value=150),
    )
    _maybe(draw, load, "redis", queue_memory())
    return load


@st.composite
def queue_memory(draw: st.DrawFn) -> Body:
    """spec.queues[].load.redis: jobs from a few bytes to past the largest, kept counts
    from none to past what any maxmemory holds (and past the bounds), now and then a
    required field missing."""
    memory: Body = {
        "bytesPerJob": draw(
            st.sampled_from((1, 64, 65, 536_870_912, 536_870_913, 0, -1)) | st.integers(1, 100_000)
        ),
        "keptCompleted": draw(
            st.sampled_from((0, 1000, 100_000_000, 100_000_001, -1)) | st.integers(0, 50_000)
        ),
        "keptFailed": draw(
            st.sampled_from((0, 5000, 100_000_000, 100_000_001, -1)) | st.integers(0, 50_000)
        ),
    }
    _maybe(
        draw,
        memory,
        "returnBytesPerJob",
        st.sampled_from((0, 64, 65, 536_870_912, 536_870_913, -1)) | st.integers(0, 10_000),
    )
    _maybe(
        draw,
        memory,
        "eventsMaxLen",
        st.sampled_from((0, 10_000, 100_000_000, 100_000_001, -1)) | st.integers(0, 20_000),
    )
    if draw(st.integers(0, 9)) == 0:
        del memory[draw(st.sampled_from(sorted(memory)))]
    return memory


@st.composite
def load_section(draw: st.DrawFn) -> Body:
    """spec.load: a rate or users (now and then both, or neither), near and past the
    budget of the profiles drawn here, and past the fields' bounds."""
    load: Body = {
        "databaseSecondsPerRequest": draw(
            st.sampled_from((0.001, 0.02, 0.05, 0.2, 1, 60, 61, 0))
            | st.floats(min_value=0.0005, max_value=2, allow_nan=False)
        )
    }
    shape = draw(st.integers(0, 9))
    if shape <= 5 or shape == 9:
        load["peakRequestsPerSecond"] = draw(
            st.sampled_from((1, 200, 660.5, 1_000_000, 1_000_001, 0, -1))
            | st.floats(min_value=0.01, max_value=5000, allow_nan=False)
        )
    if shape >= 6:
        load["users"] = {
            "concurrent": draw(st.sampled_from((1, 4000, 10_000_000, 0)) | st.integers(1, 50_000)),
            "thinkSeconds": draw(st.sampled_from((0, 6, 3600, 3601)) | st.floats(0, 60)),
        }
    # the reads' part of the request's database time: below, equal to and past it
    _maybe(
        draw,
        load,
        "readSecondsPerRequest",
        st.sampled_from((load["databaseSecondsPerRequest"], 0.001, 60, 61, 0))
        | st.floats(min_value=0.0005, max_value=2, allow_nan=False),
    )
    _maybe(
        draw,
        load,
        "waitProbability",
        st.sampled_from((1e-12, 0.0001, 0.05, 0.5, 0.51, 0, 1)) | st.floats(0, 0.5),
    )
    return load


@st.composite
def cors(draw: st.DrawFn) -> Body:
    rules: Body = {"allowedOrigins": draw(st.lists(origins(), min_size=1, max_size=2))}
    _maybe(
        draw,
        rules,
        "allowedMethods",
        st.lists(st.sampled_from(("GET", "PUT", "POST")), min_size=1, max_size=3, unique=True),
    )
    _maybe(
        draw,
        rules,
        "allowedHeaders",
        st.lists(
            st.sampled_from(("*", "content-type", "x-amz-*", "Bad Header"))
            if _odd(draw)
            else st.sampled_from(("*", "content-type")),
            max_size=2,
        ),
    )
    _maybe(draw, rules, "exposeHeaders", st.lists(st.sampled_from(("ETag", "x-id")), max_size=2))
    _maybe(draw, rules, "maxAgeSeconds", st.integers(0, 86_400))
    _maybe(draw, rules, "allowCredentials", st.booleans())
    return rules


@st.composite
def storage_section(draw: st.DrawFn) -> Body:
    names = draw(st.lists(bucket_names(), min_size=1, max_size=3, unique=True))
    buckets = []
    builtin_done = False
    for name in names:
        provider = draw(st.sampled_from(("cosi", "s3", "builtin")))
        bucket: Body = {"name": name}
        if provider == "cosi":
            bucket["cosi"] = {"bucketClassName": "standard", "bucketAccessClassName": "rw"}
        elif provider == "s3":
            bucket["s3"] = {
                "endpoint": draw(
                    st.one_of(st.just("https://acct.r2.cloudflarestorage.com"), endpoints())
                ),
                "bucketName": draw(bucket_names()),
                "credentialsSecret": {"name": "s3-keys"},
            }
            _maybe(draw, bucket["s3"], "region", st.sampled_from(("auto", "eu-west-1")))
            _maybe(draw, bucket["s3"], "forcePathStyle", st.booleans())
            if draw(st.integers(0, 9)) == 9:
                same = draw(st.sampled_from(("AWS_ACCESS_KEY_ID", "key")))
                bucket["s3"]["credentialsSecret"].update(
                    accessKeyIdKey=same, secretAccessKeyKey=same
                )
        else:
            bucket["builtin"] = {} if builtin_done else draw(st.sampled_from(({}, {"storage": {}})))
            if not builtin_done and draw(st.integers(0, 2)) == 2:
                bucket["builtin"]["public"] = {
                    "host": draw(st.sampled_from(("files.example.com", "s3.app.example")))
                }
            builtin_done = True
        if draw(st.integers(0, 3)) == 3:
            bucket["publicUrl"] = draw(
                st.sampled_from(("https://cdn.example.com/photos", "https://cdn.example.com"))
                if not _odd(draw)
                else st.sampled_from(
                    ("https://cdn.example.com:99999/x", "cdn.example.com", "https://a..b/x")
                )
            )
        if draw(st.integers(0, 2)) == 2:
            bucket["cors"] = draw(cors())
        if provider != "s3" or _odd(draw):
            _maybe(draw, bucket, "deletionPolicy", st.sampled_from(("Retain", "Delete")))
        _maybe(draw, bucket, "maxUploadBytes", st.integers(1, 10**10))
        buckets.append(bucket)
    return {"buckets": buckets}


_ROUTES = ("/week/[n]", "/api/", "/api/users/:id", "/posts/{slug}", "/a.b(c)*", "/")


@st.composite
def alerts_section(draw: st.DrawFn, *, instances: tuple[str, ...] = ()) -> Body:
    """``instances``: the profile's Redis instance names (per-instance settings)."""
    alerts: Body = {}
    if draw(st.integers(0, 9)) == 9:
        alerts["enabled"] = False
    if draw(st.booleans()):
        alerts["labels"] = draw(
            st.dictionaries(
                label_names(),
                st.text(_ANY_CHAR, max_size=12)
                if _odd(draw)
                else st.sampled_from(("shop", "platform", "", "a b", "{{ $value }}", "é")),
                max_size=3,
            )
        )
    for group in ("pooler", "database", "cache", "queues", "app"):
        if not draw(st.integers(0, 2)):
            continue
        settings: Body = {}
        _maybe(draw, settings, "for", durations())
        _maybe(draw, settings, "severity", st.sampled_from(("info", "warning", "critical")))
        _maybe(draw, settings, "enabled", st.booleans())
        if group in ("pooler", "database"):
            warning = draw(st.integers(1, 99))
            settings["connectionsWarningPercent"] = warning
            settings["connectionsCriticalPercent"] = draw(st.integers(warning, 100))
        if group == "pooler":
            _maybe(draw, settings, "maxWaitSeconds", st.sampled_from((0.5, 1, 5, 3600)))
            _maybe(draw, settings, "queryTimeBaselineFactor", st.sampled_from((1.0001, 3, 100)))
            _maybe(draw, settings, "queryTimeFloorSeconds", st.sampled_from((1e-6, 0.05, 3600)))
            for side in ("write", "read"):
                if draw(st.integers(0, 3)) == 3:
                    own: Body = {}
                    _maybe(draw, own, "enabled", st.booleans())
                    _maybe(draw, own, "connectionsWarningPercent", st.integers(1, 94))
                    _maybe(draw, own, "connectionsCriticalPercent", st.integers(95, 100))
                    _maybe(draw, own, "maxWaitSeconds", st.sampled_from((0.5, 2, 3600)))
                    _maybe(draw, own, "queryTimeBaselineFactor", st.sampled_from((1.5, 10)))
                    _maybe(draw, own, "queryTimeFloorSeconds", st.sampled_from((0.01, 1)))
                    settings[side] = own
        if group == "database":
            if draw(st.booleans()):
                count = draw(st.integers(1, 500))
                settings["connectionsWarningCount"] = count
                _maybe(draw, settings, "connectionsCriticalCount", st.integers(count + 1, 1000))
            _maybe(draw, settings, "slowQuerySeconds", st.sampled_from((0.1, 1, 2.5, 86400)))
            _maybe(draw, settings, "queryRatePerSecond", st.sampled_from((100, 0.5, 10**7)))
            _maybe(draw, settings, "replicaLagSeconds", st.sampled_from((0.5, 10, 86400)))
        if group == "cache":
            _maybe(draw, settings, "hitRateMin", st.sampled_from((0.5, 0.8, 1)))
            _maybe(draw, settings, "memoryPercent", st.integers(1, 100))
            chosen = draw(st.lists(st.sampled_from(instances), unique=True)) if instances else []
            if chosen:
                settings["instances"] = {
                    name: draw(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "enabled": st.booleans(),
                                "memoryPercent": st.integers(1, 100),
                                "hitRateMin": st.sampled_from((0.5, 0.9, 1)),
                                "evictions": st.booleans(),
                            },
                        )
                    )
                    for name in chosen
                }
        if group == "app":
            _maybe(draw, settings, "memory", quantities())
            _maybe(draw, settings, "p95LatencySeconds", st.sampled_from((0.2, 3, 600)))
            _maybe(draw, settings, "errorRatio", st.sampled_from((0.001, 0.5, 1)))
            _maybe(draw, settings, "cpuPercent", st.integers(1, 1000))
            if draw(st.integers(0, 2)) == 2:
                settings["routes"] = [
                    {
                        draw(st.sampled_from(("route", "prefix"))): draw(st.sampled_from(_ROUTES)),
                        "p95LatencySeconds": draw(st.sampled_from((0.05, 0.1, 2, 600))),
                    }
                    for _ in range(draw(st.integers(1, 3)))
                ]
            kind = draw(st.integers(0, 3))
            if kind == 0:
                settings["metrics"] = draw(st.sampled_from((None, {"enabled": False})))
            elif kind >= 2:
                metrics: Body = {}
                _maybe(
                    draw,
                    metrics,
                    "histogram",
                    st.one_of(
                        label_names(),
                        st.sampled_from(("http_requests_bucket", "rpc_duration_seconds")),
                    ),
                )
                _maybe(draw, metrics, "statusLabel", label_names())
                _maybe(draw, metrics, "routeLabel", label_names())
                _maybe(draw, metrics, "port", st.sampled_from((9464, 8080, 0, 65536)))
                _maybe(
                    draw,
                    metrics,
                    "path",
                    st.sampled_from(("/m?x=1", "m")) if _odd(draw) else st.just("/metrics"),
                )
                settings["metrics"] = metrics
        alerts[group] = settings
    return alerts


@st.composite
def valid_profile(draw: st.DrawFn, *, name: str | None = None) -> Body:
    """A plausible profile over every section (most fields drawn near their grammar)."""
    replicas = draw(st.booleans())
    spec: Body = {
        "app": draw(app_section()),
        "database": draw(database_section(replicas=replicas)),
    }
    pooler = draw(pooler_section())
    if pooler:
        spec["pooler"] = pooler
    if draw(st.booleans()):
        spec["cache"] = draw(cache_section())
        queues = draw(queues_section(cache=spec["cache"], reads=replicas))
        if queues:
            spec["queues"] = queues
    if draw(st.integers(0, 3)) == 3:
        spec["autoscaling"] = {
            "enabled": draw(st.booleans()),
            "cpuUtilization": draw(st.integers(1, 100)),
        }
    if draw(st.integers(0, 4)) == 4:
        spec["network"] = {"monitoringNamespace": "monitoring"}
    if draw(st.integers(0, 2)) == 2:
        spec["load"] = draw(load_section())
    if draw(st.booleans()):
        spec["storage"] = draw(storage_section())
    if draw(st.integers(0, 2)):
        instances = tuple(i["name"] for i in spec.get("cache", {}).get("instances", []))
        spec["alerts"] = draw(alerts_section(instances=instances))
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": name or draw(dns_label(12)), "namespace": "default"},
        "spec": spec,
    }


# -- mutations ----------------------------------------------------------------------


@functools.cache
def crd_schema() -> Body:
    """The openAPIV3Schema of the CRD as generated now (``make crds``)."""
    schema: Body = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def schema_at(path: Path) -> Body | None:
    """The schema node of ``path`` in a body, or None where the schema has none."""
    node: Body | None = crd_schema()
    for part in path:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        elif part in (node.get("properties") or {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def from_schema(node: Body, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values a schema node describes, and ones just past its bounds."""
    if "enum" in node:
        return st.one_of(
            st.sampled_from(node["enum"]),
            st.sampled_from(node["enum"]).map(lambda v: v.upper() if isinstance(v, str) else v),
        )
    if node.get("x-kubernetes-int-or-string"):
        return quantities()
    kind = node.get("type")
    if kind == "string":
        size = node.get("maxLength", 64)
        plain = st.text(_ANY_CHAR, max_size=min(size + 1, 80))
        if "pattern" in node:
            matching = st.from_regex(node["pattern"], fullmatch=True)
            return st.one_of(matching, matching.map(lambda s: s[:size]), plain)
        return st.one_of(plain, st.just("a" * size), st.just("a" * (size + 1)))
    if kind == "integer":
        low, high = node.get("minimum", -(2**31)), node.get("maximum", 2**31)
        return st.one_of(
            st.integers(low, high),
            st.sampled_from((low - 1, low, low + 1, high - 1, high, high + 1)),
        )
    if kind == "number":
        low, high = node.get("minimum", -1e9), node.get("maximum", 1e9)
        return st.one_of(
            st.floats(low, high), st.sampled_from((low, high, high + 1, low - 1, low + 1e-9))
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = node.get("items") or {}
        most = node.get("maxItems", 3)
        return st.lists(
            from_schema(items, depth + 1) if depth < 4 else st.just({}),
            min_size=0,
            max_size=min(most + 1, 4),
        )
    if kind == "object":
        if isinstance(node.get("additionalProperties"), dict):
            return st.dictionaries(
                st.one_of(st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True), hostile_text()),
                from_schema(node["additionalProperties"], depth + 1),
                max_size=3,
            )
        props = node.get("properties") or {}
        if depth >= 4 or not props:
            return st.just({})
        required = node.get("required") or []
        return st.fixed_dictionaries(
            {key: from_schema(props[key], depth + 1) for key in required if key in props},
            optional={
                key: from_schema(sub, depth + 1)
                for key, sub in props.items()
                if key not in required
            },
        )
    return st.none()


def paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a body a value sits (dict keys and list items, recursively)."""
    found: list[Path] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*prefix, index))
            found += paths(value, (*prefix, index))
    return found


def _parent(body: Body, path: Path) -> Any:
    node: Any = body
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutation(draw: st.DrawFn, body: Body) -> Body:
    """``body`` with one thing changed (see the module's docstring)."""
    body = copy.deepcopy(body)
    candidates = [p for p in paths(body) if p[0] == "spec" or p == ("metadata", "name")]
    if not candidates:
        return body
    path = draw(st.sampled_from(candidates))
    parent = _parent(body, path)
    key = path[-1]
    current = parent[key]
    node = schema_at(path)
    kind = draw(st.integers(0, 9))
    if kind <= 2 and node is not None:
        parent[key] = draw(from_schema(node))
    elif kind <= 5:
        parent[key] = draw(hostile_value(current))
    elif kind == 6:
        del parent[key]
    elif kind == 7 and isinstance(current, dict):
        # an optional field the hand generator never sets, or one nobody defined
        props = (node or {}).get("properties") or {}
        absent = sorted(k for k in props if k not in current)
        if absent and draw(st.booleans()):
            field = draw(st.sampled_from(absent))
            current[field] = draw(from_schema(props[field]))
        elif isinstance((node or {}).get("additionalProperties"), dict):
            current[draw(hostile_text("key"))] = draw(
                from_schema(node["additionalProperties"])  # type: ignore[index]
            )
        else:
            current[
                draw(st.sampled_from(("unknownField", "Name", "name ", "\uff4e\uff41\uff4d\uff45")))
            ] = 1
    elif kind == 8 and isinstance(current, list) and current:
        current.append(copy.deepcopy(current[0]))  # a duplicate list entry
    else:
        parent[key] = draw(hostile_value(current))
    return body


@st.composite
def mutated(draw: st.DrawFn, body: Body) -> Body:
    """``body`` with no change (often: the near-grammar values of the sections
    are worth judging alone), or up to three."""
    for _ in range(draw(st.sampled_from((0, 0, 0, 1, 1, 2, 3)))):
        body = draw(mutation(body))
    return body


@st.composite
def queue_load_profiles(draw: st.DrawFn) -> Body:
    """A plausible profile whose queue declares its jobs (spec.queues[].load, with what
    they hold in Redis more often than not) on a queue instance of a drawn memory:
    profiles() reaches a queue's load rarely, past a valid profile's other fields."""
    memory = draw(st.sampled_from(("32Mi", "64Mi", "256Mi", "1Gi", "16Gi")))
    load = draw(queue_load())
    if "redis" not in load and draw(st.booleans()):
        load["redis"] = draw(queue_memory())
    queue: Body = {"name": "mail", "redis": "jobs", "listName": "bull:mail:wait", "image": "w:1"}
    queue["replicas"] = {"min": 0, "max": draw(st.sampled_from((1, 4, 30, 1000)))}
    if "databaseSecondsPerJob" in load:
        queue["databasePoolSize"] = 1
    spec: Body = {
        "app": {"deployment": "web", "replicas": {"min": 1, "max": 4}},
        "database": {"host": "db", "name": "shop", "credentialsSecret": {"name": "db-creds"}},
        "cache": {"instances": [{"name": "jobs", "use": "queue", "memory": memory}]},
        "queues": [{**queue, "load": load}],
    }
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": "queued", "namespace": "default"},
        "spec": spec,
    }


@st.composite
def profiles(draw: st.DrawFn) -> Body:
    """The fuzzer's input: a plausible profile, mutated at up to three places."""
    return draw(mutated(draw(valid_profile())))
