"""Static checks of docker-compose.yml and docker/Dockerfile.

No Docker engine is needed: the compose file is parsed with PyYAML (which
resolves the ``x-*`` anchors and ``<<`` merge keys the way Compose does) and
checked for internal consistency: services, health checks behind
``service_healthy``, one image for all Airflow components, bind-mount sources,
ports, database URLs against the postgres service, the Airflow 3 endpoints
against the installed Airflow package, and no host outside the compose network.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "sitekb-api"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0"}
URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s'\"`]+)", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default; ${VAR:?msg}: a placeholder."""

    def repl(match: re.Match) -> str:
        name, op, arg = match.groups()
        if op == "-":
            return arg
        return f"<{name}>"

    return INTERPOLATION.sub(repl, value).replace("$$", "$")


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    data = yaml.safe_load(raw)
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else interpolate(str(v))) for k, v in env.items()}


def depends_of(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def container_ports(service: dict) -> list[tuple[str | None, str]]:
    """(host port or None, container port) for each published port."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("published")) if port.get("published") else None, str(port["target"])))
            continue
        spec = interpolate(str(port)).split("/")[0]
        parts = spec.split(":")
        out.append((parts[-2] if len(parts) >= 2 else None, parts[-1]))
    return out


def postgres_env(services) -> dict:
    return env_of(services["postgres"])


def init_sql_objects() -> tuple[dict[str, str], dict[str, str]]:
    """Roles (name -> password) and databases (name -> owner) created by the init scripts."""
    roles: dict[str, str] = {}
    databases: dict[str, str] = {}
    for path in sorted((REPO / "docker" / "postgres-init").glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        for name, password in re.findall(
            r"CREATE\s+(?:ROLE|USER)\s+(\w+)\s+.*?PASSWORD\s+'([^']*)'", sql, re.IGNORECASE | re.DOTALL
        ):
            roles[name] = password
        for name, owner in re.findall(r"CREATE\s+DATABASE\s+(\w+)(?:\s+OWNER\s+(\w+))?", sql, re.IGNORECASE):
            databases[name] = owner
    return roles, databases


def assert_postgres_url(url: str, services: dict, what: str) -> None:
    """The URL points at the postgres service with a user/password/database that exists there."""
    parts = urlsplit(url)
    assert parts.hostname == "postgres", f"{what}: host {parts.hostname!r} is not the postgres service"
    assert parts.port in (None, 5432), f"{what}: port {parts.port} is not Postgres' 5432"
    pg = postgres_env(services)
    user, password, database = parts.username, parts.password, parts.path.lstrip("/")
    if (user, password, database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]):
        return
    roles, databases = init_sql_objects()
    assert user in roles, f"{what}: role {user!r} is neither POSTGRES_USER nor created in docker/postgres-init"
    assert roles[user] == password, f"{what}: password for {user!r} differs from docker/postgres-init"
    assert database in databases, f"{what}: database {database!r} is not created in docker/postgres-init"
    assert databases[database] in (user, None) or user == pg["POSTGRES_USER"], (
        f"{what}: database {database!r} is owned by {databases[database]!r}, not {user!r}"
    )


# --- the file and its services ----------------------------------------------


def test_parses_as_compose_spec(compose):
    assert "version" not in compose, "the Compose spec has no top-level `version:`"
    assert isinstance(compose.get("services"), dict) and compose["services"]


def test_expected_services_exist(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_depends_on_targets_exist_and_health_conditions_have_healthchecks(services):
    for name, service in services.items():
        for dep, condition in depends_of(service).items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name, f"{name} depends on itself"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", (
                    f"{name} waits for {dep} to complete, but {dep} restarts"
                )


def test_long_running_services_restart_and_init_does_not(services):
    for name, service in services.items():
        if name == "airflow-init":
            assert service.get("restart", "no") == "no"
        else:
            assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name} has no restart policy"


def test_healthchecks_on_long_running_services(services):
    for name, service in services.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_airflow_services_wait_for_database_broker_and_migration(services):
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = depends_of(services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("airflow-init") == "service_completed_successfully", name
    assert depends_of(services["airflow-init"]).get("postgres") == "service_healthy"
    assert depends_of(services["sitekb-api"]).get("postgres") == "service_healthy"


def test_airflow_3_components_and_commands(services):
    def command(name):
        cmd = services[name].get("command")
        return " ".join(cmd) if isinstance(cmd, list) else str(cmd)

    assert command("airflow-init") == "db migrate"
    assert command("airflow-apiserver") == "api-server"
    assert command("airflow-scheduler") == "scheduler"
    assert command("airflow-dag-processor") == "dag-processor"
    assert command("airflow-worker") == "celery worker"
    assert command("airflow-triggerer") == "triggerer"
    assert command("sitekb-api") == "sitekb serve --host 0.0.0.0 --port 8000"
    # The Airflow image's entrypoint prefixes unknown commands with `airflow`.
    assert services["sitekb-api"].get("entrypoint"), "sitekb-api must bypass the Airflow entrypoint"


def test_service_images(services):
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    assert services["redis"]["image"].split(":")[0] == "redis"


# --- one image --------------------------------------------------------------


def test_airflow_services_and_api_share_one_image_and_build(services):
    built = {name: (services[name].get("image"), services[name].get("build")) for name in AIRFLOW_SERVICES | {"sitekb-api"}}
    first = next(iter(built.values()))
    assert first[1], "the Airflow services must be built from docker/Dockerfile"
    for name, value in built.items():
        assert value == first, f"{name} uses a different image/build than the other Airflow services"


def test_build_uses_repo_root_and_docker_dockerfile(services):
    build = services["airflow-scheduler"]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "docker/Dockerfile"
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_airflow_services_share_environment_and_volumes(services):
    base = env_of(services["airflow-scheduler"])
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        for key, value in base.items():
            assert env.get(key) == value, f"{name}: {key} differs from the other Airflow services"
        assert services[name]["volumes"] == services["airflow-scheduler"]["volumes"], name


# --- mounts and ports -------------------------------------------------------


def _volume_specs(service: dict):
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            yield volume.get("type", "volume"), str(volume.get("source", "")), str(volume["target"])
            continue
        parts = interpolate(str(volume)).split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        yield kind, source, target


def test_bind_mount_sources_exist_and_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for kind, source, target in _volume_specs(service):
            if kind == "bind":
                assert source.startswith("./"), f"{name}: bind mount {source!r} must be relative to the repo"
                assert (REPO / source).exists(), f"{name}: bind mount source {source} does not exist"
            elif source:
                assert source in declared, f"{name}: named volume {source!r} is not declared under volumes:"


def test_postgres_data_and_init_scripts_are_mounted(services):
    mounts = {target: (kind, source) for kind, source, target in _volume_specs(services["postgres"])}
    assert mounts["/var/lib/postgresql/data"][0] == "volume"
    kind, source = mounts["/docker-entrypoint-initdb.d"]
    assert kind == "bind" and (REPO / source).is_dir()
    assert list((REPO / source).glob("*.sql")), "docker/postgres-init holds no .sql script"


def test_dags_are_mounted_at_the_airflow_dags_folder(services):
    for name in AIRFLOW_SERVICES:
        mounts = {target: source for _, source, target in _volume_specs(services[name])}
        assert mounts.get("/opt/airflow/dags") == "./dags", name


def test_host_ports_do_not_collide(services):
    seen: dict[str, str] = {}
    for name, service in services.items():
        for host, _ in container_ports(service):
            if host is None:
                continue
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name
    assert seen.get("8080") == "airflow-apiserver"
    assert seen.get("8000") == "sitekb-api"


def test_scalable_worker(services):
    worker = services["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports"), "a scaled worker cannot have a fixed name or host port"


# --- environment: URLs point where they should -----------------------------


def test_sitekb_database_url_matches_postgres_service(services):
    pg = postgres_env(services)
    assert pg["POSTGRES_USER"] == pg["POSTGRES_PASSWORD"] == pg["POSTGRES_DB"] == "sitekb"
    for name in AIRFLOW_SERVICES | {"sitekb-api"}:
        url = env_of(services[name]).get("SITEKB_DATABASE_URL")
        assert url, f"{name} has no SITEKB_DATABASE_URL"
        parts = urlsplit(url)
        assert parts.scheme in ("postgresql", "postgres"), f"{name}: not a libpq URL: {url}"
        assert (parts.hostname, parts.username, parts.password, parts.path.lstrip("/")) == (
            "postgres",
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        ), f"{name}: SITEKB_DATABASE_URL does not match the postgres service"


def test_sitekb_runtime_env(services):
    for name in AIRFLOW_SERVICES | {"sitekb-api"}:
        env = env_of(services[name])
        assert env.get("HF_HUB_OFFLINE") == "1", name
        assert env.get("GX_ANALYTICS_ENABLED") == "false", name
        assert "OPENAI_API_KEY" in env, name


def test_environment_values_are_strings(services):
    # Compose rejects unquoted booleans; numbers are accepted but quoted is clearer.
    for name, service in services.items():
        env = service.get("environment") or {}
        if isinstance(env, dict):
            for key, value in env.items():
                assert value is None or isinstance(value, str), f"{name}: quote the value of {key}"


def test_airflow_metadata_db_and_celery(services):
    env = env_of(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("postgresql+psycopg2://")
    assert_postgres_url(conn, services, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend.startswith("db+postgresql://")
    assert_postgres_url(backend.removeprefix("db+"), services, "AIRFLOW__CELERY__RESULT_BACKEND")
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port or 6379) == ("redis", "redis", 6379)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"


def test_airflow_shared_secrets_are_required_not_generated(raw, services):
    # Unset, each container generates its own secrets and task tokens are rejected.
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        values = {env_of(services[name]).get(key) for name in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values and "" not in values, key
    assert re.search(r"AIRFLOW__API_AUTH__JWT_SECRET:\s*\$\{\w+:\?", raw)


def test_execution_api_url_points_at_the_apiserver(services):
    url = urlsplit(env_of(services["airflow-worker"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.scheme == "http"
    assert url.hostname == "airflow-apiserver"
    container = {target for _, target in container_ports(services["airflow-apiserver"])}
    assert str(url.port or 80) in container, "EXECUTION_API_SERVER_URL port is not the apiserver's port"
    assert url.path == "/execution/"


def _airflow_source(relative: str) -> str:
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("apache-airflow is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        pytest.skip(f"{relative} not in the installed Airflow")
    return path.read_text(encoding="utf-8")


def test_endpoint_paths_exist_in_installed_airflow(services):
    # The execution API is mounted at /execution on the API server.
    assert 'app.mount("/execution"' in _airflow_source("api_fastapi/app.py")
    # The API server health endpoint.
    openapi = _airflow_source("api_fastapi/core_api/openapi/v2-rest-api-generated.yaml")
    assert "/api/v2/monitor/health:" in openapi
    assert "/api/v2/monitor/health" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    # The scheduler's health server answers /health on 8974 when enabled.
    assert 'self.path == "/health"' in _airflow_source("utils/scheduler_health.py")
    assert "localhost:8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert env_of(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    # The simple auth manager needs no user creation, only this option.
    config = _airflow_source("config_templates/config.yml")
    assert "simple_auth_manager_users:" in config
    assert "SIMPLE_AUTH_MANAGER_USERS" in " ".join(env_of(services["airflow-apiserver"]))


def test_sitekb_api_healthcheck(services):
    test = " ".join(services["sitekb-api"]["healthcheck"]["test"])
    assert "http://localhost:8000/healthz" in test
    assert "urllib" in test, "curl may be missing from the image; use python's urllib"


def test_no_host_outside_the_compose_network(raw, services):
    allowed = set(services) | LOCAL_HOSTS
    for scheme, rest in URL.findall(raw):
        url = urlsplit(f"{scheme}://{interpolate(rest)}")
        assert url.hostname in allowed, f"{scheme}://{rest} names a host outside the compose network"
    for name, service in services.items():
        image = interpolate(str(service.get("image") or ""))
        if image:
            first = image.split("/")[0]
            assert "/" not in image or not re.search(r"[.:]|^localhost$", first), (
                f"{name}: image {image!r} names a registry host"
            )


# --- the Dockerfile ---------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile(services) -> str:
    build = services["airflow-scheduler"]["build"]
    return (REPO / build["context"] / build["dockerfile"]).read_text(encoding="utf-8")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_base_image_matches_pinned_airflow(dockerfile):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (airflow_pin,) = pyproject["project"]["optional-dependencies"]["airflow"]
    version = airflow_pin.split("==")[1]
    froms = [rest for kw, rest in _instructions(dockerfile) if kw == "FROM"]
    assert froms == [f"apache/airflow:{version}-python3.11"]


def test_dockerfile_installs_the_project(dockerfile):
    runs = " ".join(rest for kw, rest in _instructions(dockerfile) if kw == "RUN")
    match = re.search(r"pip install[^&;]*\"/opt/sitekb\[([a-z,]+)\]\"", runs)
    assert match, "the Dockerfile must pip install /opt/sitekb with its extras"
    extras = set(match.group(1).split(","))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    known = set(pyproject["project"]["optional-dependencies"])
    assert {"local", "openai", "quality", "serve"} <= extras <= known
    assert "--no-cache-dir" in runs
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in runs, "pin airflow to the base image's version"
    # torch comes from pyproject's pin, not from a separate install line.
    assert "torch" not in runs
    assert any(dep.startswith("torch==") for dep in pyproject["project"]["optional-dependencies"]["local"])


def test_dockerfile_copies_what_the_install_needs(dockerfile):
    copied = set()
    for kw, rest in _instructions(dockerfile):
        if kw == "COPY":
            args = [a for a in rest.split() if not a.startswith("--")]
            copied.update(args[:-1])
    assert {"pyproject.toml", "plugins", "crawlers", "dags"} <= copied


def test_dockerfile_copy_sources_exist(dockerfile):
    for kw, rest in _instructions(dockerfile):
        if kw == "COPY":
            for source in [a for a in rest.split() if not a.startswith("--")][:-1]:
                assert (REPO / source).exists(), f"COPY source {source} is missing from the repository"


def test_dockerignore_keeps_copied_sources(dockerfile):
    ignore = REPO / "docker" / "Dockerfile.dockerignore"
    assert ignore.is_file()
    lines = [ln.strip() for ln in ignore.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    if "*" in lines:
        for kw, rest in _instructions(dockerfile):
            if kw == "COPY":
                for source in [a for a in rest.split() if not a.startswith("--")][:-1]:
                    assert f"!{source}" in lines, f"{source} is excluded from the build context"


def test_dockerfile_names_no_host(dockerfile):
    code = "\n".join(f"{kw} {rest}" for kw, rest in _instructions(dockerfile))
    assert "://" not in code, "the Dockerfile must not name a host"
    assert not re.search(r"--(extra-)?index-url|--find-links|\s-i\s", code)
