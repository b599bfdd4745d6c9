"""The binding Secret the app consumes, following servicebinding.io conventions.

Pure. Keys: ``type``/``provider``/``host``/``port``/``database``/``username``/
``password``/``uri`` (the Service Binding spec's postgresql entries) plus the
environment-style names apps already read (``DATABASE_URL_POOLED``).
"""

from __future__ import annotations

from urllib.parse import quote

from headroom.builders import common, pgbouncer
from headroom.planning import plan as plan_mod

COMPONENT = "binding"
SECRET_TYPE = "servicebinding.io/postgresql"  # noqa: S105 - a Secret type


def secret_name(plan: plan_mod.Plan) -> str:
    return f"{plan.name}-binding"


def postgres_uri(*, user: str, password: str, host: str, port: int, database: str) -> str:
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(database, safe='')}"
    )


def build(plan: plan_mod.Plan, creds: common.Credentials) -> list[common.Obj]:
    host = pgbouncer.service_host(plan)
    uri = postgres_uri(
        user=creds.username,
        password=creds.password,
        host=host,
        port=pgbouncer.SERVICE_PORT,
        database=plan.database.name,
    )
    data = {
        "type": "postgresql",
        "provider": "headroom",
        "host": host,
        "port": str(pgbouncer.SERVICE_PORT),
        "database": plan.database.name,
        "username": creds.username,
        "password": creds.password,
        "uri": uri,
        "DATABASE_URL_POOLED": uri,
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(
            plan,
            name=secret_name(plan),
            component=COMPONENT,
            app_name="headroom-binding",
            annotations={"headroom.dev/connection-budget": plan.budget.summary},
        ),
        "type": SECRET_TYPE,
        "stringData": data,
    }
    return [secret]
