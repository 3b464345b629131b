"""docker-compose.yml and docker/Dockerfile, checked through Compose itself.

``docker-compose config`` (Debian's docker-compose 1.29; ``docker compose`` v2
when only that is installed) validates the file against the Compose
Specification, interpolates the environment and resolves the anchors, merge keys
and paths. The tests read what it prints: host ports on the loopback by default,
the query API reading as the ``sitekb_reader`` role, the Airflow containers'
user, named volumes for the password file and the Data Docs, the config and
plugins mounts, the demo site inside the stack, the CPU-only torch index as the
build default, the sitekb schema migrated by a one-shot service as the owner
before the API starts without the owner's credentials. Where the file points at code (the init SQL, the reader role,
sitekb's settings, Airflow's options and endpoints, the demo server's command),
that code is read or run. No Docker engine is needed; without Compose the tests
skip and say so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
}
SITEKB_SERVICES = {"sitekb-api", "sitekb-demo", "sitekb-migrate"}
ONE_SHOT_SERVICES = {"airflow-init", "sitekb-migrate"}   # run once and exit 0; others wait for them
BUILT_SERVICES = AIRFLOW_SERVICES | SITEKB_SERVICES
EXPECTED_SERVICES = BUILT_SERVICES | {"postgres", "redis"}
EXPECTED_VOLUMES = {"postgres-data", "airflow-logs", "airflow-auth", "sitekb-data-docs"}

# The only secrets without a default: Compose refuses to start without them.
REQUIRED_ENV = {"AIRFLOW_JWT_SECRET": "test-jwt-secret", "AIRFLOW_API_SECRET_KEY": "test-api-secret"}
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
AIRFLOW_HOME = PurePosixPath("/opt/airflow")  # the official image's
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0"}
URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s'\"`]+)", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


# --- running Compose --------------------------------------------------------


def compose_command() -> list[str] | None:
    """docker-compose (1.x), else `docker compose` (v2), else None."""
    if path := shutil.which("docker-compose"):
        return [path]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run installs it)")
    return cmd


@pytest.fixture(scope="module")
def run_config(compose_cmd, tmp_path_factory):
    """`compose config` in a clean environment: only PATH, HOME, the required secrets and ``env``.

    An empty --env-file keeps a developer's ./.env out of the result.
    """
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("", encoding="utf-8")

    def run(**env: str | None) -> subprocess.CompletedProcess:
        environment = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                       "LANG": "C.UTF-8", **REQUIRED_ENV}
        for key, value in env.items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return subprocess.run(
            [*compose_cmd, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
            cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
        )

    return run


def resolve(run_config, **env: str | None) -> dict:
    result = run_config(**env)
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict) and data.get("services"), result.stdout[:2000]
    return data


@pytest.fixture(scope="module")
def resolved(run_config) -> dict:
    """The configuration with nothing but the required secrets set."""
    return resolve(run_config)


@pytest.fixture(scope="module")
def services(resolved) -> dict:
    return resolved["services"]


OVERRIDES = {
    "AIRFLOW_UID": "1234",
    "AIRFLOW_API_PUBLISH": "0.0.0.0:18080",
    "SITEKB_API_PUBLISH": "0.0.0.0:18000",
    "PIP_EXTRA_INDEX_URL": "",
}


@pytest.fixture(scope="module")
def overridden(run_config) -> dict:
    """The configuration with every optional setting of the header overridden."""
    return resolve(run_config, **OVERRIDES)["services"]


# --- reading the resolved configuration (1.x and v2 print it differently) ---


class Mount(NamedTuple):
    kind: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def mounts_of(service: dict) -> list[Mount]:
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out.append(Mount(volume.get("type", "volume"), str(volume.get("source", "")), str(volume["target"]),
                             bool(volume.get("read_only"))))
            continue
        parts = str(volume).split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        mode = parts[2] if len(parts) > 2 else "rw"
        kind = "bind" if source.startswith("/") else "volume"
        out.append(Mount(kind, source, target, "ro" in mode.split(",")))
    return out


def mount_at(service: dict, target: str | PurePosixPath) -> Mount | None:
    return next((m for m in mounts_of(service) if m.target == str(target)), None)


def ports_of(service: dict) -> list[tuple[str | None, str | None, str]]:
    """(host address or None, host port or None, container port) of each published port."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = port.get("published")
            out.append((port.get("host_ip"), None if published in (None, "") else str(published), str(port["target"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        parts = [None] * (3 - len(parts)) + parts
        out.append((parts[0], parts[1], parts[2]))
    return out


def env_of(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_of(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_of(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return " ".join(test) if isinstance(test, list) else str(test)


def repo_path(source: str) -> Path:
    """A resolved bind-mount source as a path inside the repository."""
    path = Path(source)
    assert path.is_relative_to(REPO), f"bind mount {source} is outside the repository"
    return path


# --- the source file and the database it sets up ----------------------------


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}/${VAR-default} with nothing set: the default; ${VAR:?msg}: a placeholder."""

    def repl(match: re.Match) -> str:
        name, op, arg = match.groups()
        return arg if op == "-" else f"<{name}>"

    return INTERPOLATION.sub(repl, value).replace("$$", "$")


def init_sql_objects() -> tuple[dict[str, tuple[str, set[str]]], dict[str, str]]:
    """Roles (name -> (password, attributes)) and databases (name -> owner) created by the init scripts."""
    roles: dict[str, tuple[str, set[str]]] = {}
    databases: dict[str, str] = {}
    for path in sorted((REPO / "docker" / "postgres-init").glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        for name, attributes in re.findall(r"CREATE\s+(?:ROLE|USER)\s+(\w+)\s+([^;]*);", sql, re.IGNORECASE):
            password = re.search(r"PASSWORD\s+'([^']*)'", attributes, re.IGNORECASE)
            words = {w.upper() for w in re.sub(r"PASSWORD\s+'[^']*'", "", attributes, flags=re.IGNORECASE).split()}
            roles[name] = (password.group(1) if password else "", words - {"WITH"})
        for name, owner in re.findall(r"CREATE\s+DATABASE\s+(\w+)(?:\s+OWNER\s+(\w+))?", sql, re.IGNORECASE):
            databases[name] = owner
    return roles, databases


def assert_postgres_url(url: str, services: dict, what: str) -> None:
    """The URL points at the postgres service with a user/password/database that exists there."""
    parts = urlsplit(url)
    assert parts.hostname == "postgres", f"{what}: host {parts.hostname!r} is not the postgres service"
    assert parts.port in (None, 5432), f"{what}: port {parts.port} is not Postgres' 5432"
    pg = env_of(services["postgres"])
    user, password, database = parts.username, parts.password, parts.path.lstrip("/")
    if (user, password, database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]):
        return
    roles, databases = init_sql_objects()
    assert user in roles, f"{what}: role {user!r} is neither POSTGRES_USER nor created in docker/postgres-init"
    assert roles[user][0] == password, f"{what}: password for {user!r} differs from docker/postgres-init"
    assert "LOGIN" in roles[user][1], f"{what}: role {user!r} cannot log in"
    assert database in databases or database == pg["POSTGRES_DB"], (
        f"{what}: database {database!r} is neither POSTGRES_DB nor created in docker/postgres-init"
    )


# --- the file Compose accepts -----------------------------------------------


def test_compose_accepts_the_file(raw, resolved):
    # No `version:`: 1.29 reads such a file as the Compose Specification and v2 calls the key obsolete.
    assert "version" not in yaml.safe_load(raw)
    assert set(resolved["services"]) == EXPECTED_SERVICES
    assert set(resolved.get("volumes") or {}) == EXPECTED_VOLUMES


@pytest.mark.parametrize("secret", sorted(REQUIRED_ENV))
def test_shared_secrets_are_required_not_generated(run_config, secret):
    # Unset, each container would generate its own and the API server would reject the tasks' tokens.
    result = run_config(**{secret: None})
    assert result.returncode != 0, f"compose config accepted the file without {secret}"
    assert f"set {secret}" in result.stderr, result.stderr


def test_depends_on_targets_exist_and_health_conditions_have_healthchecks(services):
    for name, service in services.items():
        for dep, condition in depends_of(service).items():
            assert dep in services and dep != name, f"{name} depends on {dep!r}"
            if condition == "service_healthy":
                assert healthcheck_of(services[dep]), f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{name} waits for {dep} to complete; it restarts"


def test_long_running_services_restart_and_have_healthchecks(services):
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart", "no") == "no"
            continue
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name} has no restart policy"
        assert healthcheck_of(service), f"{name} has no healthcheck"


def test_airflow_services_wait_for_database_broker_and_migration(services):
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = depends_of(services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("airflow-init") == "service_completed_successfully", name
    for name in ("airflow-worker", "airflow-triggerer"):
        assert depends_of(services[name]).get("airflow-apiserver") == "service_healthy", name
    assert depends_of(services["airflow-init"]).get("postgres") == "service_healthy"
    assert depends_of(services["sitekb-migrate"]).get("postgres") == "service_healthy"
    assert depends_of(services["sitekb-api"]) == {"postgres": "service_healthy",
                                                  "sitekb-migrate": "service_completed_successfully"}


def test_airflow_3_components_and_commands(services):
    # sitekb's passthrough migrates the metadata database and creates the embedding pools first.
    assert command_of(services["airflow-init"]) == ["bash", "-c", "sitekb airflow pools list"]
    assert command_of(services["airflow-apiserver"]) == ["api-server"]
    assert command_of(services["airflow-scheduler"]) == ["scheduler"]
    assert command_of(services["airflow-dag-processor"]) == ["dag-processor"]
    assert command_of(services["airflow-worker"]) == ["celery", "worker"]
    assert command_of(services["airflow-triggerer"]) == ["triggerer"]
    assert command_of(services["sitekb-api"]) == ["sitekb", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert command_of(services["sitekb-migrate"]) == ["sitekb", "db", "migrate"]
    # sitekb's own CLI accepts what the services run.
    from sitekb.cli import build_parser

    for name in ("sitekb-api", "sitekb-migrate"):
        build_parser().parse_args(command_of(services[name])[1:])
    # The Airflow image's entrypoint runs unknown commands as `airflow <command>`.
    for name in SITEKB_SERVICES:
        assert services[name].get("entrypoint"), f"{name} must bypass the Airflow entrypoint"


def test_scalable_worker(services):
    worker = services["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports"), "a scaled worker cannot have a fixed name or host port"
    assert env_of(worker).get("DUMB_INIT_SETSID") == "0", "Celery needs a warm shutdown"


def test_service_images(services):
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    assert services["redis"]["image"].split(":")[0] == "redis"


# --- one image, built with the CPU-only torch index -------------------------


def test_airflow_and_sitekb_services_share_one_image_and_build(services):
    first = services["airflow-scheduler"]
    build = first.get("build")
    assert build, "the Airflow services must be built from docker/Dockerfile"
    assert Path(build["context"]) == REPO
    assert build["dockerfile"] == "docker/Dockerfile" and DOCKERFILE.is_file()
    for name in BUILT_SERVICES:
        assert (services[name].get("image"), services[name].get("build")) == (first["image"], build), name


def test_cpu_torch_index_is_the_build_default(services, overridden, dockerfile):
    for name in BUILT_SERVICES:
        assert services[name]["build"]["args"]["PIP_EXTRA_INDEX_URL"] == CPU_TORCH_INDEX, name
        # Set empty, it turns the extra index off (`${VAR-default}`, not `:-`).
        assert overridden[name]["build"]["args"]["PIP_EXTRA_INDEX_URL"] == "", name
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"') for kw, rest in _instructions(dockerfile)
            if kw == "ARG" and "=" in rest}
    assert args.get("PIP_EXTRA_INDEX_URL") == CPU_TORCH_INDEX, "docker build without Compose must default to it too"


# --- who the Airflow containers run as, and what they mount -----------------


def test_airflow_containers_run_as_airflow_uid(services, overridden):
    # The official Airflow compose convention: AIRFLOW_UID (default the image's 50000), group 0.
    for name in AIRFLOW_SERVICES:
        assert services[name].get("user") == "50000:0", name
        assert overridden[name].get("user") == "1234:0", name
    for name in EXPECTED_SERVICES - AIRFLOW_SERVICES:
        assert "user" not in services[name], f"{name} runs as its image's user"


def test_airflow_services_share_environment_and_mounts(services):
    base_env = env_of(services["airflow-scheduler"])
    base_mounts = set(mounts_of(services["airflow-scheduler"]))
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        for key, value in base_env.items():
            assert env.get(key) == value, f"{name}: {key} differs from the other Airflow services"
        assert base_mounts <= set(mounts_of(services[name])), f"{name} lacks a mount the other Airflow services have"


def test_bind_mounts_come_from_the_repository_and_named_volumes_are_declared(resolved, services):
    declared = set(resolved.get("volumes") or {})
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount.kind == "bind":
                assert repo_path(mount.source).exists(), f"{name}: bind mount source {mount.source} does not exist"
            else:
                assert mount.source in declared, f"{name}: named volume {mount.source!r} is not declared"


def test_dags_are_mounted_read_only_at_the_airflow_dags_folder(services):
    for name in AIRFLOW_SERVICES:
        mount = mount_at(services[name], AIRFLOW_HOME / "dags")
        assert mount and mount.kind == "bind" and mount.read_only, name
        assert repo_path(mount.source) == REPO / "dags", name


def test_config_folder_is_mounted_and_holds_airflow_cfg(services):
    config_template = _airflow_source("config_templates/config.yml")
    # Airflow puts AIRFLOW_HOME/config on sys.path (airflow_local_settings.py, log config).
    assert 'os.path.join(AIRFLOW_HOME, "config")' in _airflow_source("settings.py")
    assert "plugins_folder:" in config_template
    for name in AIRFLOW_SERVICES:
        mount = mount_at(services[name], AIRFLOW_HOME / "config")
        assert mount and mount.kind == "bind", f"{name} does not mount a config folder"
        cfg = PurePosixPath(env_of(services[name])["AIRFLOW_CONFIG"])
        assert cfg.parent == AIRFLOW_HOME / "config", f"{name}: AIRFLOW_CONFIG is not in the mounted folder"
        # Present, so that Airflow reads it instead of writing a generated one (with secrets) there.
        assert (repo_path(mount.source) / cfg.name).is_file(), f"{mount.source}/{cfg.name} is missing"


def test_plugins_folder_is_mounted_and_cannot_shadow_sitekb(services):
    # Airflow imports every .py under its plugins folder as a top-level module:
    # the repository's plugins/ (the sitekb library) must not be that folder.
    for name in AIRFLOW_SERVICES:
        mount = mount_at(services[name], AIRFLOW_HOME / "plugins")
        assert mount and mount.kind == "bind", f"{name} does not mount an Airflow plugins folder"
        source = repo_path(mount.source)
        assert source != REPO / "plugins", f"{name} mounts the sitekb library as Airflow's plugins folder"
        assert not list(source.rglob("sitekb*")), f"{source} holds a copy of sitekb"
    assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env_of(services["airflow-scheduler"])
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount.kind == "bind":
                assert not repo_path(mount.source).is_relative_to(REPO / "plugins"), f"{name} mounts {mount.source}"


def test_simple_auth_password_file_is_on_a_named_volume(resolved, services, dockerfile):
    assert "simple_auth_manager_passwords_file:" in _airflow_source("config_templates/config.yml")
    path = PurePosixPath(env_of(services["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    mount = mount_at(services["airflow-apiserver"], path.parent)
    assert mount and mount.kind == "volume" and not mount.read_only, "the API server writes the generated passwords"
    assert mount.source in (resolved.get("volumes") or {})
    # Only the API server reads it.
    for name in EXPECTED_SERVICES - {"airflow-apiserver"}:
        assert mount.source not in {m.source for m in mounts_of(services[name])}, f"{name} mounts {mount.source}"
    # The image creates the mount point, so a new volume gets its owner and group-writable mode.
    assert str(path.parent) in _created_dirs(dockerfile)


def test_data_docs_are_on_a_named_volume_where_sitekb_writes_them(resolved, services, dockerfile, monkeypatch):
    from sitekb.quality.gate import data_docs_dir
    from sitekb.settings import Settings
    from sitekb.sites import load_site

    home = PurePosixPath(_dockerfile_env(dockerfile)["SITEKB_HOME"])
    target = home / "data_docs"
    for name in AIRFLOW_SERVICES:
        mount = mount_at(services[name], target)
        assert mount and mount.kind == "volume" and not mount.read_only, f"{name}: no Data Docs volume at {target}"
        assert mount.source in (resolved.get("volumes") or {})
        assert "SITEKB_HOME" not in env_of(services[name]) or env_of(services[name])["SITEKB_HOME"] == str(home)
    assert str(target) in _created_dirs(dockerfile)
    # The folder sitekb's quality gate writes to, with SITEKB_HOME set as in the image.
    monkeypatch.setenv("SITEKB_HOME", str(home))
    settings = Settings.from_env()
    docs = data_docs_dir(load_site("demo"), "demo__manual_1", settings.home)
    assert docs is not None and PurePosixPath(docs.as_posix()).is_relative_to(target)


def test_postgres_data_and_init_scripts_are_mounted(services):
    pg = services["postgres"]
    assert mount_at(pg, "/var/lib/postgresql/data").kind == "volume"
    init = mount_at(pg, "/docker-entrypoint-initdb.d")
    assert init.kind == "bind" and init.read_only
    assert list(repo_path(init.source).glob("*.sql")), "docker/postgres-init holds no .sql script"


# --- ports ------------------------------------------------------------------


def test_host_ports_are_on_the_loopback_by_default(services):
    published = {name: ports_of(service) for name, service in services.items() if ports_of(service)}
    assert published == {
        "airflow-apiserver": [("127.0.0.1", "8080", "8080")],
        "sitekb-api": [("127.0.0.1", "8000", "8000")],
    }


def test_host_addresses_are_overridable(overridden):
    assert ports_of(overridden["airflow-apiserver"]) == [("0.0.0.0", "18080", "8080")]
    assert ports_of(overridden["sitekb-api"]) == [("0.0.0.0", "18000", "8000")]


# --- environment: URLs point where they should -----------------------------


def test_sitekb_database_url_is_the_owner_on_the_postgres_service(services):
    pg = env_of(services["postgres"])
    for name in AIRFLOW_SERVICES | {"sitekb-migrate"}:
        url = env_of(services[name]).get("SITEKB_DATABASE_URL")
        assert url, f"{name} has no SITEKB_DATABASE_URL"
        parts = urlsplit(url)
        assert parts.scheme in ("postgresql", "postgres"), f"{name}: not a libpq URL: {url}"
        assert (parts.hostname, parts.username, parts.password, parts.path.lstrip("/")) == (
            "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"],
        ), f"{name}: SITEKB_DATABASE_URL does not match the postgres service"


def test_query_api_holds_no_owner_credentials(services):
    # sitekb-migrate migrates as the owner; the API reads as the reader role and nothing else.
    pg = env_of(services["postgres"])
    env = env_of(services["sitekb-api"])
    assert "SITEKB_DATABASE_URL" not in env
    owner = f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@"
    assert not [key for key, value in env.items() if value and owner in value]


def test_query_api_keys_come_from_the_environment(services, run_config):
    # Keys on the command line would show in `ps`; SITEKB_API_KEYS is passed through (unset: empty, open access).
    assert "--api-key" not in command_of(services["sitekb-api"])
    assert env_of(services["sitekb-api"]).get("SITEKB_API_KEYS") == ""
    passed = resolve(run_config, SITEKB_API_KEYS="k1,k2")["services"]["sitekb-api"]
    assert env_of(passed)["SITEKB_API_KEYS"] == "k1,k2"


def test_query_api_reads_as_the_reader_role(services, monkeypatch):
    from sitekb.settings import Settings
    from sitekb.store.schema import READER_ROLE

    env = env_of(services["sitekb-api"])
    url = env.get("SITEKB_API_DATABASE_URL")
    assert url, "sitekb-api has no SITEKB_API_DATABASE_URL"
    assert urlsplit(url).username == READER_ROLE
    assert urlsplit(url).path.lstrip("/") == env_of(services["postgres"])["POSTGRES_DB"]
    assert_postgres_url(url, services, "SITEKB_API_DATABASE_URL")
    # sitekb reads that variable as the API's database URL.
    monkeypatch.setenv("SITEKB_API_DATABASE_URL", url)
    assert Settings.from_env().api_database_url == url
    # The init script's role is the one sitekb's migrations would create, plus a password.
    privileges = (REPO / "plugins" / "sitekb" / "store" / "sql" / "privileges.sql").read_text(encoding="utf-8")
    created = re.search(rf"CREATE ROLE {READER_ROLE}\s+([^;]*);", privileges)
    assert created, f"privileges.sql no longer creates {READER_ROLE}"
    roles, _ = init_sql_objects()
    assert roles[READER_ROLE][1] == set(created.group(1).upper().split()) - {"WITH"}
    # Only the API needs it.
    for name in AIRFLOW_SERVICES:
        assert "SITEKB_API_DATABASE_URL" not in env_of(services[name]), name


def test_sitekb_runtime_env(services):
    for name in AIRFLOW_SERVICES | {"sitekb-api", "sitekb-migrate"}:
        env = env_of(services[name])
        assert env.get("HF_HUB_OFFLINE") == "1", name
        assert env.get("GX_ANALYTICS_ENABLED") == "false", name
        assert "OPENAI_API_KEY" in env, name


def test_environment_values_are_strings(raw):
    # Compose rejects unquoted booleans; numbers are accepted but quoted is clearer.
    def check(mapping: dict, where: str) -> None:
        for key, value in mapping.items():
            if key == "<<":
                continue
            assert value is None or isinstance(value, str), f"{where}: quote the value of {key}"

    source = yaml.safe_load(raw)
    for name, service in source["services"].items():
        if isinstance(service.get("environment"), dict):
            check(service["environment"], name)


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


def test_shared_secrets_reach_every_airflow_service(raw, services):
    for key, variable in (("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
                          ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY")):
        values = {env_of(services[name]).get(key) for name in AIRFLOW_SERVICES}
        assert values == {REQUIRED_ENV[variable]}, key
        assert re.search(rf"{key}:\s*\$\{{{variable}:\?", raw), f"{key} must be required with ${{{variable}:?...}}"


def test_execution_api_url_points_at_the_apiserver(services):
    url = urlsplit(env_of(services["airflow-worker"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.scheme, url.hostname, url.path) == ("http", "airflow-apiserver", "/execution/")
    assert str(url.port or 80) in {target for _, _, target in ports_of(services["airflow-apiserver"])}


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
    openapi = _airflow_source("api_fastapi/core_api/openapi/v2-rest-api-generated.yaml")
    assert "/api/v2/monitor/health:" in openapi
    assert "/api/v2/monitor/health" in healthcheck_of(services["airflow-apiserver"])
    # The scheduler's health server answers /health on 8974 when enabled.
    assert 'self.path == "/health"' in _airflow_source("utils/scheduler_health.py")
    assert "localhost:8974/health" in healthcheck_of(services["airflow-scheduler"])
    assert env_of(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    # The simple auth manager needs no user creation, only this option.
    assert "simple_auth_manager_users:" in _airflow_source("config_templates/config.yml")
    assert env_of(services["airflow-apiserver"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"


def test_sitekb_api_healthcheck(services):
    test = healthcheck_of(services["sitekb-api"])
    assert "http://localhost:8000/healthz" in test
    assert "urllib" in test, "curl may be missing from the image; use python's urllib"


def test_no_host_outside_the_compose_network(raw, services):
    allowed = set(services) | LOCAL_HOSTS
    for scheme, rest in URL.findall(interpolate(raw)):
        url = f"{scheme}://{rest}"
        if url == CPU_TORCH_INDEX:  # a build argument: where pip finds the CPU-only torch
            continue
        assert urlsplit(url).hostname in allowed, f"{url} names a host outside the compose network"
    for name, service in services.items():
        first = str(service.get("image") or "").split("/")[0]
        assert "/" not in str(service.get("image") or "") or not re.search(r"[.:]|^localhost$", first), (
            f"{name}: image {service['image']!r} names a registry host"
        )


# --- the demo site inside the stack -----------------------------------------


def _demo_port(services) -> int:
    cmd = command_of(services["sitekb-demo"])
    assert "--port" in cmd, "sitekb-demo must name its port"
    return int(cmd[cmd.index("--port") + 1])


def test_demo_service_is_the_origin_the_airflow_containers_crawl(services):
    from sitekb.sites import load_site

    demo = services["sitekb-demo"]
    port = _demo_port(services)
    cmd = command_of(demo)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "the demo must listen beyond its container's loopback"
    assert not demo.get("ports"), "the demo site is for the stack, not the host"
    assert f"localhost:{port}/" in healthcheck_of(demo)
    for name in AIRFLOW_SERVICES:
        assert env_of(services[name]).get("SITEKB_DEMO_START_URL") == f"http://sitekb-demo:{port}/", name
    # sitekb-demo resolves to a private address of the compose network.
    assert load_site("demo").crawl.allow_private_addresses


class DemoProcess(NamedTuple):
    port: int
    process: subprocess.Popen


@pytest.fixture(scope="module")
def demo_process(services):
    """The sitekb-demo service's command, run here (port 0: a free one on this shared machine)."""
    cmd = command_of(services["sitekb-demo"])
    cmd[cmd.index("--port") + 1] = "0"
    if cmd[0] == "python":
        cmd[0] = sys.executable
    elif cmd[0] == "sitekb":
        cmd[0] = str(Path(sys.executable).with_name("sitekb"))
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"http://[^\s/]+:(\d+)", process.stdout.readline())
            port = int(match.group(1)) if match else None
        assert port, f"the demo command printed no URL (exit code {process.poll()})"
        yield DemoProcess(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses listening on ``port``, from /proc/net/tcp."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            addresses.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


def test_demo_command_listens_on_every_interface(demo_process):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert _listening_addresses(demo_process.port) == {"0.0.0.0"}
    with urllib.request.urlopen(f"http://127.0.0.1:{demo_process.port}/", timeout=10) as response:
        assert response.status == 200


def test_demo_sitemap_names_the_origin_it_is_crawled_at(services, demo_process):
    origin = urlsplit(env_of(services["airflow-worker"])["SITEKB_DEMO_START_URL"])
    request = urllib.request.Request(f"http://127.0.0.1:{demo_process.port}/sitemap.xml",
                                     headers={"Host": origin.netloc})
    with urllib.request.urlopen(request, timeout=10) as response:
        locations = re.findall(r"<loc>([^<]+)</loc>", response.read().decode("utf-8"))
    assert locations
    assert all(loc.startswith(f"{origin.scheme}://{origin.netloc}/") for loc in locations), locations[:3]


# --- the Dockerfile ---------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _dockerfile_env(dockerfile: str) -> dict[str, str]:
    env = {}
    for kw, rest in _instructions(dockerfile):
        if kw == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _created_dirs(dockerfile: str) -> set[str]:
    runs = " ".join(rest for kw, rest in _instructions(dockerfile) if kw == "RUN")
    return {arg for match in re.findall(r"mkdir\s+-p\s+([^&;]+)", runs) for arg in match.split()}


def test_dockerfile_base_image_matches_pinned_airflow(dockerfile):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    [airflow_pin] = [p for p in pyproject["project"]["optional-dependencies"]["airflow"]
                     if p.startswith("apache-airflow==")]
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
    # torch comes from pyproject's pin (and the CPU index), not from a separate install line.
    assert "torch" not in runs
    assert any(dep.startswith("torch==") for dep in pyproject["project"]["optional-dependencies"]["local"])


def test_dockerfile_copies_what_the_install_needs(dockerfile):
    copied = set()
    for kw, rest in _instructions(dockerfile):
        if kw == "COPY":
            copied.update([a for a in rest.split() if not a.startswith("--")][:-1])
    assert {"pyproject.toml", "plugins", "crawlers", "dags"} <= copied
    for source in copied:
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


def test_dockerfile_names_no_host_but_the_cpu_torch_index(dockerfile):
    code = "\n".join(f"{kw} {rest}" for kw, rest in _instructions(dockerfile))
    assert [f"{s}://{r}" for s, r in URL.findall(code)] == [CPU_TORCH_INDEX]
    assert not re.search(r"--(extra-)?index-url|--find-links|\s-i\s", code), "pip reads the index from the build arg"
