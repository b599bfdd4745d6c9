"""Builder properties a user relies on, beyond the golden files."""

from __future__ import annotations

import dataclasses

import pytest

from headroom.api import v1alpha1
from headroom.builders import binding, common, desired, pgbouncer, revision
from headroom.planning import credentials, pgbouncer_params, planner
from tests import profiles

CREDS = credentials.Credentials(
    username="app", password="s3cr:t/@", stats_password="x", revision="7"
)


def _objects(**overrides: object) -> dict[str, common.Obj]:
    body = profiles.base(**overrides)
    body["metadata"]["uid"] = "uid-1"
    return desired.build(planner.plan(v1alpha1.parse_profile(body)), CREDS)


def test_every_child_has_labels_and_owner() -> None:
    for key, obj in _objects().items():
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "headroom", key
        assert meta["labels"]["headroom.dev/profile"] == "shop", key
        assert meta["ownerReferences"][0]["uid"] == "uid-1", key
        assert meta["ownerReferences"][0]["controller"] is True, key


def test_pooler_pods_are_restricted() -> None:
    dep = _objects()["Deployment/shop-pooler"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def _pooler(**o: object) -> tuple[common.Obj, str]:
    objects = _objects(**o)
    return objects["Deployment/shop-pooler"]["spec"]["template"], objects[
        "ConfigMap/shop-pooler-config"
    ]["data"]["pgbouncer.ini"]


@pytest.mark.parametrize(
    "change",
    [
        {"pooler.parameters": {"server_idle_timeout": "30"}},
        {"app.replicas": {"min": 2, "max": 4}},  # smaller pools and limits
        {"pooler.parameters": {"max_db_connections": "20", "default_pool_size": "18"}},
    ],
)
def test_a_change_pgbouncer_takes_on_reload_keeps_the_pooler_pods(
    change: dict[str, object],
) -> None:
    """The agent RELOADs it: the ConfigMap changes, the pod template does not."""
    template, ini = _pooler()
    changed_template, changed_ini = _pooler(**change)
    assert changed_ini != ini
    assert changed_template == template


def test_a_change_pgbouncer_takes_only_at_start_rolls_the_pooler_pods() -> None:
    template, _ = _pooler()
    changed, _ = _pooler(**{"pooler.parameters": {"pkt_buf": "8192"}})
    assert "pkt_buf" in pgbouncer_params.RESTART_SETTINGS
    key = "headroom.dev/inputs-revision"
    before = revision.parse(template["metadata"]["annotations"][key])
    after = revision.parse(changed["metadata"]["annotations"][key])
    assert {k for k in after if after[k] != before.get(k)} == {revision.POOLER_CONFIG}


def test_restart_changes_names_the_settings() -> None:
    before = "[databases]\nx = host=a\n[pgbouncer]\nlisten_port = 6432\npool_mode = session\n"
    after = before.replace("6432", "6433").replace("session", "transaction")
    assert pgbouncer_params.restart_changes(before, after) == ["listen_port"]
    assert pgbouncer_params.restart_changes(before, before.replace("host=a", "host=b")) == []


def test_only_the_agent_containers_hold_an_api_token() -> None:
    objects = _objects()
    pod = objects["Deployment/shop-pooler"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shop-pooler"
    holding = [
        c["name"]
        for c in [*pod["initContainers"], *pod["containers"]]
        if any(m["name"] == "agent-token" for m in c.get("volumeMounts") or [])
    ]
    assert holding == ["agent"]
    # the PgBouncer runs the file its agent writes, not the mounted ConfigMap
    (bouncer,) = [c for c in pod["containers"] if c["name"] == "pgbouncer"]
    assert bouncer["command"] == ["pgbouncer", pgbouncer.START_FILE]
    role = objects["Role/shop-pooler"]
    assert {(r["resourceNames"][0], tuple(r["verbs"])) for r in role["rules"]} == {
        ("shop-pooler-config", ("get", "list", "watch")),
        ("shop-pooler-state", ("get", "patch")),
    }
    # the operator creates the state ConfigMap without data: the agents' keys are theirs
    assert "data" not in objects["ConfigMap/shop-pooler-state"]


READS = {"database.readReplicas": profiles.external_replicas({"host": "r1.example.com"})}
READ_CREDS = dataclasses.replace(CREDS, agent_password="ag")


def _read_objects(**overrides: object) -> dict[str, common.Obj]:
    body = profiles.base(**{**READS, **overrides})
    body["metadata"]["uid"] = "uid-1"
    return desired.build(planner.plan(v1alpha1.parse_profile(body)), READ_CREDS)


def _read_pooler(**o: object) -> tuple[common.Obj, dict[str, str]]:
    objects = _read_objects(**o)
    return (
        objects["Deployment/shop-pooler-ro"]["spec"]["template"],
        objects["ConfigMap/shop-pooler-ro-config"]["data"],
    )


@pytest.mark.parametrize(
    "change",
    [
        {"pooler.parameters": {"server_idle_timeout": "30"}},
        {"app.replicas": {"min": 2, "max": 4}},  # smaller read pool and limit
    ],
)
def test_a_change_pgbouncer_takes_on_reload_keeps_the_read_pooler_pods(
    change: dict[str, object],
) -> None:
    """Its agent RELOADs it: the ConfigMap's pgbouncer.ini changes, the pod template does not."""
    template, data = _read_pooler()
    changed_template, changed_data = _read_pooler(**change)
    assert changed_data["pgbouncer.ini"] != data["pgbouncer.ini"]
    assert changed_template == template


def test_a_change_pgbouncer_takes_only_at_start_rolls_the_read_pooler_pods() -> None:
    template, _ = _read_pooler()
    changed, _ = _read_pooler(**{"pooler.parameters": {"pkt_buf": "8192"}})
    key = "headroom.dev/inputs-revision"
    before = revision.parse(template["metadata"]["annotations"][key])
    after = revision.parse(changed["metadata"]["annotations"][key])
    assert {k for k in after if after[k] != before.get(k)} == {revision.READ_POOLER_CONFIG}


def test_a_new_replica_list_keeps_the_read_pooler_pods() -> None:
    """readpool.json reaches the running agent by its watch: a replica more
    changes the ConfigMap, not the pod template."""
    template, data = _read_pooler()
    replicas = profiles.external_replicas({"host": "r1.example.com"}, {"host": "r2.example.com"})
    changed, changed_data = _read_pooler(**{"database.readReplicas": replicas})
    assert changed_data["readpool.json"] != data["readpool.json"]
    assert changed == template


def test_the_read_pooler_agent_follows_its_configmap_with_the_only_token() -> None:
    objects = _read_objects()
    template = objects["Deployment/shop-pooler-ro"]["spec"]["template"]
    pod = template["spec"]
    assert common.CONFIG_HASH_ANNOTATION not in template["metadata"]["annotations"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shop-pooler-ro"
    containers = {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}
    holding = [
        n
        for n, c in containers.items()
        if any(m["name"] == "agent-token" for m in c.get("volumeMounts") or [])
    ]
    assert holding == ["agent"]
    assert containers["pgbouncer"]["command"] == ["pgbouncer", pgbouncer.START_FILE]
    init, agent = containers["agent-init"]["command"], containers["agent"]["command"]
    # one process per container does both: the lag loop (--config) and the config loop
    assert init[:3] == agent[:3] == ["python", "-m", "headroom.agent.readpool"]
    assert "--config" in init and "--config" in agent
    assert init[init.index("--source") + 1] == "/etc/headroom-readpool/pgbouncer.ini"
    assert init[init.index("--output") + 1] == agent[agent.index("--output") + 1]
    assert agent[agent.index("--output") + 1] == pgbouncer.START_FILE
    assert agent[agent.index("--config-map") + 1] == "shop-pooler-ro-config"
    assert agent[agent.index("--state") + 1] == "shop-pooler-ro-state"
    env = {e["name"]: e for e in containers["agent"]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert (
        env["HEADROOM_AGENT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "shop-pooler-ro-auth"
    )
    role = objects["Role/shop-pooler-ro"]
    assert {(r["resourceNames"][0], tuple(r["verbs"])) for r in role["rules"]} == {
        ("shop-pooler-ro-config", ("get", "list", "watch")),
        ("shop-pooler-ro-state", ("get", "patch")),
    }
    assert objects["RoleBinding/shop-pooler-ro"]["subjects"][0]["name"] == "shop-pooler-ro"
    assert "data" not in objects["ConfigMap/shop-pooler-ro-state"]


def test_no_password_outside_secrets() -> None:
    for key, obj in _objects().items():
        if obj["kind"] != "Secret":
            assert CREDS.password not in str(obj), key


def test_binding_secret_follows_servicebinding() -> None:
    secret = _objects()["Secret/shop-binding"]
    data = profiles.secret_values(secret)
    assert secret["type"] == binding.SECRET_TYPE
    assert data["type"] == "postgresql"
    assert data["host"] == "shop-pooler-rw.default.svc"
    assert data["port"] == "5432"
    # the password's reserved characters are percent-encoded in the URI
    assert data["uri"] == "postgresql://app:s3cr%3At%2F%40@shop-pooler-rw.default.svc:5432/shop"
    assert data["DATABASE_URL_POOLED"] == data["uri"]


def test_single_instance_rolls_with_surge_many_without() -> None:
    one = _objects(**{"pooler.instances": 1})["Deployment/shop-pooler"]["spec"]["strategy"]
    two = _objects()["Deployment/shop-pooler"]["spec"]["strategy"]
    assert one["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert two["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize("bad", ["a\nb", "x\x00y", ""])
def test_userlist_refuses_control_characters(bad: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        pgbouncer.render_userlist({"app": bad})


def test_userlist_doubles_quotes() -> None:
    assert pgbouncer.render_userlist({"app": 'a"b'}) == '"app" "a""b"\n'


@pytest.mark.parametrize(
    ("overrides", "pooled_query", "direct_query"),
    [
        # generic clients: plain URLs, the pool size beside them
        ({}, "", "?sslmode=prefer"),
        # Prisma on PgBouncer 1.26 with max_prepared_statements: no pgbouncer=true
        ({"app.client": "prisma"}, "?connection_limit=5", "?sslmode=prefer"),
        # Prisma on 1.18 (no prepared statements across transactions)
        (
            {"app.client": "prisma", "pooler.image": "registry.example/pgbouncer:1.18.0"},
            "?connection_limit=5&pgbouncer=true",
            "?sslmode=prefer",
        ),
        # ... or with max_prepared_statements turned off
        (
            {"app.client": "prisma", "pooler.parameters": {"max_prepared_statements": "0"}},
            "?connection_limit=5&pgbouncer=true",
            "?sslmode=prefer",
        ),
        # session mode keeps them
        (
            {"app.client": "prisma", "pooler.poolMode": "session", "app.replicas.max": 4},
            "?connection_limit=5",
            "?sslmode=prefer",
        ),
        # Prisma has no verify-full; sslaccept=strict verifies the server against
        # sslcert, the CA's file in the pod
        (
            {
                "app.client": "prisma",
                "database.sslMode": "verify-full",
                "database.serverCASecret": {"name": "ca"},
            },
            "?connection_limit=5",
            "?sslmode=require&sslaccept=strict&sslcert=/etc/headroom/database-ca/ca.crt",
        ),
        # libpq (psycopg, asyncpg, Django) verifies against sslrootcert
        (
            {"database.sslMode": "verify-ca", "database.serverCASecret": {"name": "ca"}},
            "",
            "?sslmode=verify-ca&sslrootcert=/etc/headroom/database-ca/ca.crt",
        ),
        # a CA without verification: in the binding, not in the URL
        (
            {"database.sslMode": "require", "database.serverCASecret": {"name": "ca"}},
            "",
            "?sslmode=require",
        ),
        # node-postgres: no sslmode for prefer (it has no opportunistic TLS and reads
        # prefer as verify-full), no-verify for require, verify-full for both verify modes
        ({"app.client": "node-postgres"}, "", ""),
        ({"app.client": "node-postgres", "database.sslMode": "disable"}, "", "?sslmode=disable"),
        ({"app.client": "node-postgres", "database.sslMode": "require"}, "", "?sslmode=no-verify"),
        (
            {
                "app.client": "node-postgres",
                "database.sslMode": "verify-ca",
                "database.serverCASecret": {"name": "ca"},
            },
            "",
            "?sslmode=verify-full&sslrootcert=/etc/headroom/database-ca/ca.crt",
        ),
    ],
)
def test_binding_urls_follow_the_client_dialect(
    overrides: dict[str, object], pooled_query: str, direct_query: str
) -> None:
    data = profiles.secret_values(_objects(**overrides)["Secret/shop-binding"])
    user = "postgresql://app:s3cr%3At%2F%40"
    pooled = f"{user}@shop-pooler-rw.default.svc:5432/shop{pooled_query}"
    direct = f"{user}@db:5432/shop{direct_query}"
    assert data["DATABASE_URL_POOLED"] == pooled
    assert data["DATABASE_POOL_SIZE"] == "5"
    if overrides.get("app.client") == "prisma":
        # what Prisma's docs read goes through the pooler; migrations use DIRECT_URL,
        # straight to the primary, on the reserved connections
        assert data["DATABASE_URL"] == pooled
        assert data["DIRECT_URL"] == direct
    else:
        assert data["DATABASE_URL"] == direct
        assert "DIRECT_URL" not in data
    assert data["uri"] == f"{user}@shop-pooler-rw.default.svc:5432/shop"  # servicebinding: plain


@pytest.mark.parametrize("client", ["generic", "node-postgres", "prisma"])
def test_no_direct_url_without_connections_kept_for_it(client: str) -> None:
    """reservedConnections 0 gives the pooler everything: a direct URL would
    open connections nothing counts."""
    kept = profiles.secret_values(_objects(**{"app.client": client})["Secret/shop-binding"])
    assert kept["DATABASE_URL"].startswith("postgresql://app:s3cr%3At%2F%40@")
    none = {"app.client": client, "database.reservedConnections": 0}
    data = profiles.secret_values(_objects(**none)["Secret/shop-binding"])
    assert "DIRECT_URL" not in data
    assert "@db:5432/" not in data.get("DATABASE_URL", "")
    assert ("DATABASE_URL" in data) is (client == "prisma")  # prisma's is the pooled one
    assert data["DATABASE_URL_POOLED"].startswith("postgresql://app:s3cr%3At%2F%40@shop-pooler")


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _ca_plan(*, pool: int, **overrides: object) -> planner.Plan:
    """verify-full with a CA, a queue whose workers have ``pool`` database connections."""
    body = profiles.base(
        **{"database.sslMode": "verify-full", "database.serverCASecret": {"name": "db-ca"}},
        cache=profiles.instance(),
        queues=[
            {
                "name": "mail",
                "redis": "jobs",
                "listName": "mail",
                "image": "w:1",
                "databasePoolSize": pool,
            }
        ],
        **overrides,
    )
    body["metadata"]["uid"] = "uid-1"
    return planner.plan(v1alpha1.parse_profile(body))


def _with_ca(planned: planner.Plan, pem: str = CA_PEM) -> dict[str, common.Obj]:
    creds = dataclasses.replace(
        CREDS, server_ca_pem=pem, server_ca_revision="3", redis_passwords={"jobs": "r" * 16}
    )
    return desired.build(planned, creds)


@pytest.mark.parametrize("renamed", [None, "PG_CA"])
def test_the_primary_ca_reaches_app_and_worker_pods_through_their_bindings(
    renamed: str | None,
) -> None:
    """The binding carries the CA; the direct URL names the file a pod mounts it as;
    the workers' pods mount it from their own binding (under the app's key name)."""
    keys = {"app.bindingKeys": {binding.CA_KEY: renamed}} if renamed else {}
    objects = _with_ca(_ca_plan(pool=2, **keys))
    key = renamed or binding.CA_KEY
    for secret in ("Secret/shop-binding", "Secret/shop-worker-mail-binding"):
        data = profiles.secret_values(objects[secret])
        assert data[key] == CA_PEM, secret
        assert data["DATABASE_URL"].endswith(f"?sslmode=verify-full&sslrootcert={binding.CA_FILE}")
    pod = objects["Deployment/shop-worker-mail"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "database-ca"]
    assert volume["secret"] == {
        "secretName": "shop-worker-mail-binding",
        "items": [{"key": key, "path": "ca.crt"}],
    }
    (container,) = pod["containers"]
    assert {"name": "database-ca", "mountPath": binding.CA_DIR, "readOnly": True} in container[
        "volumeMounts"
    ]
    assert f"{binding.CA_DIR}/ca.crt" == binding.CA_FILE


def test_a_worker_without_a_database_pool_gets_no_ca() -> None:
    objects = _with_ca(_ca_plan(pool=0))
    assert binding.CA_KEY not in profiles.secret_values(objects["Secret/shop-worker-mail-binding"])
    pod = objects["Deployment/shop-worker-mail"]["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


def test_a_new_ca_rolls_the_workers() -> None:
    """The CA reaches the workers' pods as a file their URL is read with at start."""
    planned = _ca_plan(pool=2)

    def template(pem: str) -> common.Obj:
        deployment = _with_ca(planned, pem)["Deployment/shop-worker-mail"]
        template: common.Obj = deployment["spec"]["template"]["metadata"]
        return template

    assert template(CA_PEM) != template(CA_PEM.replace("MIIB", "MIIC"))


def _pooler_policy(app_selector: common.Obj | None, **overrides: object) -> common.Obj:
    body = profiles.base(**overrides)
    body["metadata"]["uid"] = "uid-1"
    planned = planner.plan(v1alpha1.parse_profile(body))
    built = desired.build_parts(planned, CREDS, app_pod_selector=app_selector).objects
    policy: common.Obj = built["NetworkPolicy/shop-pooler"]
    return policy


def test_the_pooler_admits_the_app_and_workers_and_metrics_only_from_monitoring() -> None:
    policy = _pooler_policy(
        {"matchLabels": {"app": "web"}}, **{"network.monitoringNamespace": "mon"}
    )
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "pooler"
    assert spec["policyTypes"] == ["Ingress"]
    pgbouncer_rule, metrics_rule = spec["ingress"]
    assert pgbouncer_rule["ports"] == [{"port": 6432}]
    # same-namespace pods only: no namespaceSelector on the client peers
    assert all("namespaceSelector" not in peer for peer in pgbouncer_rule["from"])
    selectors = [peer["podSelector"] for peer in pgbouncer_rule["from"]]
    assert {"matchLabels": {"app": "web"}} in selectors
    assert any(s["matchLabels"].get("app.kubernetes.io/component") == "worker" for s in selectors)
    assert metrics_rule == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
        "ports": [{"port": 9127}],
    }


def test_without_a_monitoring_namespace_metrics_stay_in_the_namespace() -> None:
    policy = _pooler_policy(None)
    pgbouncer_rule, metrics_rule = policy["spec"]["ingress"]
    assert metrics_rule["from"] == [{"podSelector": {}}]
    # the app's Deployment was not found: only Headroom's workers get in
    assert len(pgbouncer_rule["from"]) == 1
