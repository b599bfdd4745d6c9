"""The tables of docs/api.md that mirror code, generated from it (``make docs``).

- ``fields``: every field path of the ScalingProfile spec in the CRD
  (``crds/``), with its type, its default and its description, as Kubernetes
  generates its API reference from its OpenAPI;
- ``parameters``: the pgbouncer.ini and redis.conf keys a profile may set
  (planning.pgbouncer_params, planning.redis_params);
- ``settings``: the operator's HEADROOM_* settings (headroom.settings), in
  docs/operations.md;
- ``binding``: every key of the binding Secrets, per client dialect and for a
  queue's workers, as ``headroom render`` writes them for one profile that uses
  every section (read replicas, a cache, a Sentinel queue instance, a worker
  with database pools, a builtin bucket on a public server, an s3 bucket, a
  private CA).

Each table sits between ``<!-- generated: NAME (make docs) -->`` and
``<!-- end generated: NAME -->``; ``make docs`` rewrites them in place and
tests/unit/test_docs.py fails when the committed text differs. A key the
binding gains without a line in :data:`KEY_NOTES` stops the generator: the
table must say when each key is there.
"""

from __future__ import annotations

import base64
import copy
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from headroom import cli, settings
from headroom.builders import desired, pgbouncer, redis
from headroom.planning import pgbouncer_params, planner, redis_params

ROOT = Path(__file__).resolve().parents[1]
DIALECTS = ("generic", "prisma", "node-postgres")

# One profile that makes every key the binding can hold (rendered in each dialect).
EVERYTHING: dict[str, Any] = {
    "apiVersion": "headroom.dev/v1alpha1",
    "kind": "ScalingProfile",
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {
        "app": {"deployment": "shop-web", "replicas": {"min": 2, "max": 10}, "poolSizePerPod": 5},
        "database": {
            "host": "shop-db.default.svc",
            "name": "shop",
            "credentialsSecret": {"name": "shop-db"},
            "sslMode": "verify-full",
            "serverCASecret": {"name": "shop-db-ca"},
            "readReplicas": {
                "mode": "external",
                "hosts": [{"host": "shop-db-ro.default.svc"}],
                "readPoolSizePerPod": 2,
            },
        },
        "cache": {
            "instances": [
                {"name": "sessions", "use": "cache"},
                {"name": "jobs", "use": "queue", "sentinel": {"replicas": 2}},
            ]
        },
        "queues": [
            {
                "name": "emails",
                "redis": "jobs",
                "listName": "bull:emails:wait",
                "image": "registry.example/shop-worker:1.0",
                "replicas": {"min": 0, "max": 4},
                "databasePoolSize": 2,
                "databaseReadPoolSize": 1,
            }
        ],
        "storage": {
            "buckets": [
                {
                    "name": "uploads",
                    "builtin": {"public": {"host": "files.shop.example"}},
                },
                {
                    "name": "archive",
                    "s3": {
                        "endpoint": "https://s3.eu-west-1.amazonaws.com",
                        "region": "eu-west-1",
                        "bucketName": "shop-archive",
                        "credentialsSecret": {"name": "shop-s3"},
                    },
                    "publicUrl": "https://cdn.shop.example/archive",
                },
            ]
        },
    },
}

# When each key is in a binding: one line per key (the generic names of keys
# made per Redis instance or per bucket: <INSTANCE>, <NAME>).
KEY_NOTES: dict[str, str] = {
    "type": "servicebinding.io: `postgresql`",
    "provider": "servicebinding.io: `headroom`",
    "host": "servicebinding.io: the pooler's host",
    "port": "servicebinding.io: the pooler's port",
    "database": "servicebinding.io: `spec.database.name`",
    "username": "servicebinding.io: the app's login (from `credentialsSecret`)",
    "password": "servicebinding.io: its password",
    "uri": "servicebinding.io: the pooled URL, without parameters",
    "DATABASE_URL_POOLED": "the pooled URL (the app's queries)",
    "DATABASE_URL": "generic / node-postgres: direct to the primary (migrations, on "
    "`reservedConnections`); prisma: the pooled URL",
    "DIRECT_URL": "prisma only: direct to the primary (`directUrl`, `prisma.config.ts`)",
    "DATABASE_POOL_SIZE": "the client pool of one pod the budget counts (`poolSizePerPod`; "
    "a worker's `databasePoolSize`)",
    "DATABASE_PREPARED_STATEMENTS": "`true` when named prepared statements survive the pooler "
    "(session mode, or PgBouncer >= 1.21 with `max_prepared_statements` > 0)",
    "DATABASE_CA_CERT": "with `spec.database.serverCASecret`: the CA's PEM (mount it at "
    "`/etc/headroom/database-ca/ca.crt`)",
    "DATABASE_READ_URL": "with `spec.database.readReplicas`: the read pooler",
    "DATABASE_READ_POOL_SIZE": "with read replicas: `readPoolSizePerPod` (a worker's "
    "`databaseReadPoolSize`)",
    "DATABASE_READ_REPLICA_URL": "prisma, with read replicas: the read pooler, for Prisma's "
    "read-replicas extension",
    "REDIS_URL": "with `spec.cache`: the queue instance when there is one (never an evicting "
    "one), else the cache; a worker's: its queue's instance",
    "REDIS_CACHE_URL": "the `use: cache` instance (the one named `cache`, else the first)",
    "REDIS_QUEUE_URL": "the `use: queue` instance (the one named `queue`, else the first); a "
    "worker's: its queue's instance",
    "REDIS_<INSTANCE>_URL": "every instance; a Sentinel instance's is `redis+sentinel://:<password>@<host>:26379/"
    "<master set>/0`",
    "REDIS_<INSTANCE>_SENTINELS": "a Sentinel instance: the sentinels' `host:port`",
    "REDIS_<INSTANCE>_MASTER": "a Sentinel instance: the master set's name",
    "QUEUE_NAME": "workers only: BullMQ's queue name (the list itself for another layout)",
    "QUEUE_PREFIX": "workers only: BullMQ's `prefix` (a `<prefix>:<name>:wait` list)",
    "QUEUE_LIST": "workers only: the list the workers scale on",
    "S3_ENDPOINT": "with buckets: the first bucket's endpoint",
    "S3_BUCKET": "the first bucket's real name",
    "S3_REGION": "the first bucket's region",
    "S3_FORCE_PATH_STYLE": "`true` / `false`: address it as `<endpoint>/<bucket>`",
    "S3_MAX_UPLOAD_BYTES": "`maxUploadBytes`: sign it into presigned POST policies",
    "S3_PUBLIC_URL": "the first bucket's `publicUrl`, or a builtin bucket's on a public server",
    "S3_PUBLIC_ENDPOINT": "a builtin bucket on a public server (`builtin.public.host`): "
    "presign with it",
    "AWS_ACCESS_KEY_ID": "the first bucket's access key (read by the AWS SDKs themselves)",
    "AWS_SECRET_ACCESS_KEY": "its secret",
    "AWS_REGION": "its region (read by the AWS SDKs)",
    "AWS_ENDPOINT_URL_S3": "its endpoint (read by the AWS SDKs)",
    "S3_<NAME>_BUCKET": "with several buckets: each bucket's real name",
    "S3_<NAME>_MAX_UPLOAD_BYTES": "with several buckets: each bucket's `maxUploadBytes`",
    "S3_<NAME>_PUBLIC_URL": "with several buckets: each bucket's public base URL",
    "S3_<NAME>_PUBLIC_ENDPOINT": "with several buckets: a builtin bucket's public endpoint",
    "S3_<NAME>_ENDPOINT": "a bucket on another endpoint or key than the first: its endpoint",
    "S3_<NAME>_REGION": "... its region",
    "S3_<NAME>_FORCE_PATH_STYLE": "... its addressing",
    "S3_<NAME>_ACCESS_KEY_ID": "... its access key",
    "S3_<NAME>_SECRET_ACCESS_KEY": "... its secret",
}


def spec_schema() -> dict[str, Any]:
    text = (ROOT / "crds" / "headroom.dev_scalingprofiles.yaml").read_text()
    root = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: dict[str, Any] = root["properties"]["spec"]
    return found


def walk(node: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field path of the schema: ``[]`` for a list's items, ``.*`` for a
    map's values (folded into their parent's row)."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    items = node.get("items")
    if isinstance(items, dict) and items.get("properties"):
        yield from walk(items, f"{path}[]")
    values = node.get("additionalProperties")
    if isinstance(values, dict) and values.get("properties"):
        yield from walk(values, f"{path}.*")


def type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity" if "pattern" in node or "anyOf" not in node else "int or string"
    kind = str(node.get("type", "any"))
    items = node.get("items")
    if kind == "array" and isinstance(items, dict):
        return f"list of {type_of(items)}" if not items.get("properties") else "list of objects"
    values = node.get("additionalProperties")
    if kind == "object" and isinstance(values, dict):
        return f"map of {type_of(values)}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def default_text(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list):
        return f"`{yaml.safe_dump(value, default_flow_style=True).strip()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def fields_table() -> str:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for path, node in walk(spec_schema()):
        if path == "spec":
            continue
        description = _cell(str(node.get("description", "")))
        rows.append(f"| `{path}` | {type_of(node)} | {default_text(node)} | {description} |")
    return "\n".join(rows)


def _allowed(*, kind: str, low: int, high: int, choices: tuple[str, ...]) -> str:
    if kind == "int":
        return f"integer {low}..{high}"
    if choices:
        return " \\| ".join(f"`{c}`" for c in choices)
    words = {
        "bool": "`0` \\| `1`",
        "yesno": "`yes` \\| `no`",
        "text": "text (letters, digits, `_ ,.:;()=*'-`)",
        "idents": "names, comma-separated",
        "flags": "keyspace-event flags (`KEg$lshzxetmdnA`)",
    }
    return words.get(kind, kind)


def _defaults() -> tuple[dict[str, str], dict[str, str]]:
    """What Headroom renders for a profile that sets nothing (transaction mode,
    the default image's PgBouncer; a cache instance): pgbouncer.ini, redis.conf."""
    spec = EVERYTHING["spec"]
    bare = {
        **EVERYTHING,
        "spec": {
            "app": spec["app"],
            "database": {k: spec["database"][k] for k in ("host", "name", "credentialsSecret")},
            "cache": {"instances": [{"name": "sessions", "use": "cache"}]},
        },
    }
    profile = cli.v1alpha1.parse_profile(bare)
    plan = planner.plan(profile, facts=planner.Facts(keda=True, cosi="v1alpha1"))
    ini = pgbouncer.render_ini(plan)
    section = ini[ini.index("[pgbouncer]") :]
    pooler = {}
    for line in section.splitlines()[1:]:
        key, sep, value = line.partition(" = ")
        if sep:
            pooler[key.strip()] = value.strip()
    conf = {}
    for line in redis.render_conf(plan.redis[0]).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value  # the last line of a key is what redis-server keeps
    return pooler, conf


def parameters_table() -> str:
    pooler, conf = _defaults()
    rows = [
        "| file | key | value | PgBouncer from | Headroom's default |",
        "|---|---|---|---|---|",
    ]
    for key, param in pgbouncer_params.ALLOWED.items():
        value = _allowed(kind=param.kind, low=param.low, high=param.high, choices=param.choices)
        sizing = key in pgbouncer_params.SIZING_KEYS
        pinned = " (pins the planner)" if sizing else ""
        since = ".".join(map(str, param.min_version))
        default = "planned (the budget)" if sizing else _shown_default(pooler.get(key))
        rows.append(f"| pgbouncer.ini | `{key}`{pinned} | {value} | {since} | {default} |")
    for key, setting in redis_params.ALLOWED.items():
        value = _allowed(
            kind=setting.kind, low=setting.low, high=setting.high, choices=setting.choices
        )
        rows.append(f"| redis.conf | `{key}` | {value} | | {_shown_default(conf.get(key))} |")
    return "\n".join(rows)


def _shown_default(value: str | None) -> str:
    return "the program's own" if value is None else f"`{value}`"


def _render_bindings(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The binding Secrets ``headroom render`` writes for this profile, decoded."""
    profile = cli.v1alpha1.parse_profile(body)
    plan = planner.plan(profile, facts=planner.Facts(keda=True, cosi="v1alpha1"))
    assert plan.ok, plan.problem_text()
    creds = cli.placeholder_credentials(profile, plan)
    objects = desired.build(plan, creds, app_pod_selector={"app": profile.spec.app.deployment})
    out = {}
    for obj in objects.values():
        if obj["kind"] == "Secret" and obj["metadata"]["name"].endswith("-binding"):
            data = obj.get("data", {})
            out[obj["metadata"]["name"]] = {
                k: base64.b64decode(v).decode() for k, v in sorted(data.items())
            }
    return out


def generic_key(key: str) -> str:
    """REDIS_JOBS_URL -> REDIS_<INSTANCE>_URL, S3_ARCHIVE_BUCKET -> S3_<NAME>_BUCKET."""
    for instance in EVERYTHING["spec"]["cache"]["instances"]:
        upper = instance["name"].upper()
        if re.fullmatch(f"REDIS_{upper}_(URL|SENTINELS|MASTER)", key):
            return key.replace(f"_{upper}_", "_<INSTANCE>_")
    for bucket in EVERYTHING["spec"]["storage"]["buckets"]:
        upper = bucket["name"].upper()
        if key.startswith(f"S3_{upper}_"):
            return key.replace(f"_{upper}_", "_<NAME>_")
    return key


def binding_rendered() -> dict[str, dict[str, str]]:
    """Per column (a dialect's app binding, the workers'), key -> value."""
    columns: dict[str, dict[str, str]] = {}
    for dialect in DIALECTS:
        body = copy.deepcopy(EVERYTHING)
        body["spec"]["app"]["client"] = dialect
        bindings = _render_bindings(body)
        columns[dialect] = bindings["shop-binding"]
        if dialect == "generic":
            columns["worker"] = bindings["shop-worker-emails-binding"]
    return columns


# render's placeholders, as the table shows them
_SHOWN = {
    "%3Cshop-db%2Fusername%3E": "<user>",
    "%3Cshop-db%2Fpassword%3E": "<password>",
    "<shop-db/username>": "<user>",
    "<shop-db/password>": "<password>",
    "REPLACE-generated-by-headroom": "<generated>",
    "REPLACEgeneratedAppKey": "<generated>",
}


def _value(value: str | None) -> str:
    if value is None:
        return "-"
    if value.startswith("<shop-db-ca/"):
        return "the CA's PEM"
    for placeholder, shown in _SHOWN.items():
        value = value.replace(placeholder, shown)
    return f"`{_cell(value)}`"


def binding_table() -> str:
    columns = binding_rendered()
    order: list[str] = []
    for values in columns.values():
        order += [k for k in values if k not in order]
    missing = sorted({generic_key(k) for k in order} - set(KEY_NOTES))
    if missing:
        raise SystemExit(f"hack/docs_tables.py: add a line to KEY_NOTES for {missing}")
    head = "| key | when | `generic` | `prisma` | `node-postgres` | a queue's workers |"
    rows = [head, "|---|---|---|---|---|---|"]
    for key in sorted(order, key=lambda k: list(KEY_NOTES).index(generic_key(k))):
        cells = " | ".join(_value(columns[c].get(key)) for c in (*DIALECTS, "worker"))
        rows.append(f"| `{key}` | {KEY_NOTES[generic_key(key)]} | {cells} |")
    return "\n".join(rows)


def settings_table() -> str:
    """The operator's settings (HEADROOM_<NAME>), from the one settings object."""
    rows = ["| environment | default | what it does |", "|---|---|---|"]
    home = str(Path.home())
    for name, field in settings.Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        elif field.default == "":
            default = "(unset)"
        else:
            default = f"`{str(field.default).replace(home, '~')}`"
        env = f"`HEADROOM_{name.upper()}`"
        rows.append(f"| {env} | {default} | {_cell(field.description or '')} |")
    return "\n".join(rows)


TABLES = {
    "fields": fields_table,
    "parameters": parameters_table,
    "binding": binding_table,
    "settings": settings_table,
}
_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z]+) \(make docs\) -->\n)(?P<body>(?:.*?\n)?)"
    r"(<!-- end generated: (?P=name) -->)",
    re.S,
)


def sections(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _SECTION.finditer(text)}


def regenerate(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        return match[1] + TABLES[match["name"]]() + "\n" + match[4]

    return _SECTION.sub(replace, text)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> int:
    found: set[str] = set()
    for path in documents():
        text = path.read_text()
        found |= set(sections(text))
        path.write_text(regenerate(text))
    if set(TABLES) - found:
        print(f"no document has the tables {sorted(set(TABLES) - found)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
