"""The deployment files, checked without Docker: compose.yaml against the Compose
Specification's JSON Schema plus what a schema can't see, the Dockerfile with hadolint plus
what a linter can't see. Nothing here builds an image or starts a container."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from imagine.config import Settings
from imagine.providers.kie import KieSettings
from imagine.providers.xai import XaiSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


# `${VAR}`, `${VAR:-default}`, `${VAR:?message}`; `$${...}` is a literal dollar.
SUBSTITUTION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def role_of(service: dict[str, Any]) -> str | None:
    """`serve`, `worker` or `db` for the containers of our image; None for the others."""
    if not str(service.get("image", "")).startswith("imagine:"):
        return None
    return (command(service) or ["serve"])[0]


def services_in_role(role: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if role_of(svc) == role}


def env_example() -> dict[str, str]:
    """Every variable the example names, set (`VAR=`) or shown commented (`#VAR=default`)."""
    names: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            names[match.group(1)] = line.strip()
    return names


def real_settings() -> set[str]:
    names: set[str] = set()
    for section in (Settings, KieSettings, XaiSettings):
        prefix = str(section.model_config.get("env_prefix") or "")
        names.update(f"{prefix}{field}".upper() for field in section.model_fields)
    return names


def dev_tool(name: str) -> str:
    """A linter binary that a dev dependency installs beside the interpreter."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    assert found is not None, f"{name} comes with the dev dependencies: run `make install`"
    return found


# --- compose.yaml: the schema -----------------------------------------------------------


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema_rs.validator_for(json.loads(COMPOSE_SCHEMA.read_text()))
    return [
        f"/{'/'.join(map(str, error.instance_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    """The vendored schema is strict enough to matter: an unknown service key is refused."""
    broken = compose()
    broken["services"]["postgres"]["healthcheck"]["intervall"] = "5s"
    errors = schema_errors(broken)
    assert errors
    assert all(error.startswith("/services/postgres") for error in errors)
    assert any("'intervall' was unexpected" in error for error in errors)


# --- compose.yaml: what the schema can't see --------------------------------------------


def dependencies() -> Iterator[tuple[str, str, str]]:
    """(service, the service it depends on, the condition) for every depends_on entry."""
    for name, service in services().items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {other: {"condition": "service_started"} for other in depends}
        for other, how in depends.items():
            yield name, other, how.get("condition", "service_started")


def test_every_dependency_names_a_service() -> None:
    assert [(name, other) for name, other, _ in dependencies() if other not in services()] == []


def test_what_others_wait_healthy_for_has_a_healthcheck() -> None:
    missing = [
        (name, other)
        for name, other, condition in dependencies()
        if condition == "service_healthy"
        and (
            "test" not in services()[other].get("healthcheck", {})
            or services()[other]["healthcheck"].get("disable")
        )
    ]
    assert missing == []


def test_every_long_running_service_has_a_healthcheck() -> None:
    one_shots = {name for name, svc in services().items() if svc.get("restart") == "no"}
    assert one_shots == {"migrate", "bucket"}
    unchecked = [
        name
        for name, svc in services().items()
        if name not in one_shots and "test" not in svc.get("healthcheck", {})
    ]
    assert unchecked == []


def test_what_others_wait_to_complete_is_a_one_shot() -> None:
    waited = {other for _, other, c in dependencies() if c == "service_completed_successfully"}
    assert waited == {"migrate", "bucket"}
    assert all(services()[name].get("restart") == "no" for name in waited)


def test_migrations_run_once_before_every_api_process_and_worker() -> None:
    (migrate,) = services_in_role("db").values()
    assert command(migrate) == ["db", "upgrade"]
    waiting = {
        name
        for name, other, condition in dependencies()
        if other == "migrate" and condition == "service_completed_successfully"
    }
    assert waiting == set(services_in_role("serve")) | set(services_in_role("worker"))


def test_two_api_processes_without_workers() -> None:
    apis = services_in_role("serve")
    assert len(apis) == 2
    for name, service in apis.items():
        args = command(service)
        assert "--no-worker" in args, name
        assert args[args.index("--host") + 1] == "0.0.0.0", name


def test_workers_run_with_replicas() -> None:
    workers = services_in_role("worker")
    replicas = sum(svc.get("deploy", {}).get("replicas", 1) for svc in workers.values())
    assert replicas >= 2
    for service in workers.values():
        assert service["environment"]["IMAGINE_METRICS_PORT"] == "9100"


def test_every_imagine_container_gets_the_shared_settings() -> None:
    shared = compose()["x-imagine-env"]
    assert shared["IMAGINE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert shared["IMAGINE_STORAGE_URL"] == "s3://imagine/results"
    assert shared["IMAGINE_LOG_FORMAT"] == "json"
    ours = [svc for svc in services().values() if role_of(svc) is not None]
    assert len(ours) == 4
    for service in ours:
        assert shared.items() <= service["environment"].items()


def test_every_imagine_variable_is_a_setting() -> None:
    known = real_settings()
    used = {
        key
        for service in services().values()
        for key in service.get("environment", {})
        if key.startswith("IMAGINE_")
    }
    assert used - known == set()


def test_every_substituted_variable_is_in_the_env_example() -> None:
    used = {match.group(1) for match in SUBSTITUTION.finditer(COMPOSE.read_text())}
    assert used, "compose.yaml takes its secrets from substitutions"
    assert used - set(env_example()) == set()


def test_secrets_are_required_substitutions_never_literals() -> None:
    text = COMPOSE.read_text()
    required = {m.group(1) for m in SUBSTITUTION.finditer(text) if m.group(2) == ":?"}
    assert {"IMAGINE_ADMIN_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= required
    assert "MINIO_ROOT_PASSWORD" in required
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|REDISCLI_AUTH")
    for service in services().values():
        for key, value in service.get("environment", {}).items():
            if secret.search(key):
                match = SUBSTITUTION.fullmatch(str(value))
                assert match is not None, key
                assert match.group(1) in required, key
    # The example leaves every required value empty: nothing to copy into production.
    example = env_example()
    assert all(example[name] == f"{name}=" for name in required)


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = str(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository, name
        assert tag not in ("", "latest"), name
    assert services()["postgres"]["image"].startswith("postgres:16")
    assert services()["redis"]["image"].startswith("redis:7")


def test_the_bucket_of_the_storage_url_is_created() -> None:
    bucket = services()["bucket"]
    storage = compose()["x-imagine-env"]["IMAGINE_STORAGE_URL"]
    name = storage.removeprefix("s3://").split("/")[0]
    assert bucket["entrypoint"][-1] == f"store/{name}"
    assert "--ignore-existing" in bucket["entrypoint"]


# --- compose.yaml: as Docker Compose itself reads it ---------------------------------------

REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "IMAGINE_ADMIN_TOKEN",
)


def docker_compose(tmp_path: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`config` needs no daemon: the Compose CLI of the dev dependencies loads, merges and
    interpolates the file as `up` does before it starts anything, and stops there."""
    # Only what we pass: no COMPOSE_* or secrets of the caller's shell, no ~/.docker.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path),
    }
    return subprocess.run(
        [
            dev_tool("docker-compose"),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )


def filled_env_file(tmp_path: Path) -> Path:
    """The example with each required secret given a value, as an operator would."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    filled = [
        f"{line}{line[:-1].lower()}0123456789" if line.rstrip("=") in REQUIRED_SECRETS else line
        for line in lines
    ]
    path = tmp_path / ".env"
    path.write_text("\n".join(filled) + "\n")
    return path


def test_docker_compose_accepts_the_file_with_the_example_filled_in(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, filled_env_file(tmp_path), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert set(resolved["services"]) == {
        "proxy",
        "api-1",
        "api-2",
        "worker",
        "migrate",
        "postgres",
        "redis",
        "minio",
        "bucket",
    }
    api = resolved["services"]["api-1"]
    assert api["environment"]["IMAGINE_DATABASE_URL"] == (
        "postgresql+asyncpg://imagine:postgres_password0123456789@postgres:5432/imagine"
    )
    assert api["environment"]["IMAGINE_PUBLIC_URL"] == "http://localhost:8080"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert resolved["services"]["worker"]["deploy"]["replicas"] == 2
    assert resolved["services"]["proxy"]["ports"][0]["published"] == "8080"


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, ENV_EXAMPLE, "config", "--quiet")
    assert result.returncode != 0
    for name in REQUIRED_SECRETS:
        assert f"required variable {name} is missing a value: set {name}" in result.stderr


# --- the proxy --------------------------------------------------------------------------


def test_the_proxy_balances_over_both_api_processes() -> None:
    text = CADDYFILE.read_text()
    (upstreams,) = re.findall(r"^\s*reverse_proxy\s+([^{\n]+)\{", text, re.MULTILINE)
    assert set(upstreams.split()) == {f"{name}:8000" for name in services_in_role("serve")}
    assert re.search(r"^\s*lb_policy\s+round_robin\s*$", text, re.MULTILINE)
    for header in ("Host", "X-Forwarded-Host", "X-Forwarded-Proto"):
        assert re.search(rf"^\s*header_up\s+{header}\s", text, re.MULTILINE), header
    proxy = services()["proxy"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    waits_for = {other for name, other, _ in dependencies() if name == "proxy"}
    assert waits_for == set(services_in_role("serve"))


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [dev_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_faults() -> None:
    """The lint is real: a Dockerfile with known faults fails it."""
    result = subprocess.run(
        [dev_tool("hadolint"), "--no-color", "-"],
        input="FROM python\nRUN cd /tmp && pip install uv\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image
    assert "DL3003" in result.stdout  # cd instead of WORKDIR


def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.StringIO(DOCKERFILE.read_text()))


def stages() -> list[list[dict[str, Any]]]:
    """The instructions of each stage, from its FROM on."""
    found: list[list[dict[str, Any]]] = []
    for instruction in dockerfile().structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found and instruction["instruction"] != "COMMENT":
            found[-1].append(dict(instruction))
    return found


def values(stage: list[dict[str, Any]], kind: str) -> list[str]:
    return [str(item["value"]) for item in stage if item["instruction"] == kind]


def dockerfile_args() -> dict[str, str]:
    found: dict[str, str] = {}
    for item in dockerfile().structure:
        if item["instruction"] == "ARG" and "=" in item["value"]:
            name, _, default = str(item["value"]).partition("=")
            found[name.strip()] = default.strip()
    return found


def test_dockerfile_is_multi_stage_with_a_slim_runtime() -> None:
    parser = dockerfile()
    assert parser.is_multistage
    assert len(stages()) == 2
    assert all(re.fullmatch(r"python:3\.\d+-slim", image) for image in parser.parent_images)
    final = stages()[-1]
    # Nothing is installed in the final stage: it receives the venv and nothing else.
    assert not [run for run in values(final, "RUN") if re.search(r"pip|apt|apk|uv\b", run)]
    assert values(final, "COPY") == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_python_meets_requires_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert floor is not None
    minor = re.fullmatch(r"3\.(\d+)", dockerfile_args()["PYTHON_VERSION"])
    assert minor is not None
    assert int(minor.group(1)) >= int(floor.group(1))


def test_dockerfile_uv_is_the_makefile_uv() -> None:
    pinned = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert dockerfile_args()["UV_VERSION"] == pinned.group(1)
    assert any('"uv==${UV_VERSION}"' in run for run in values(stages()[0], "RUN"))


def test_dockerfile_installs_the_lock_without_dev_dependencies() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    syncs = [run for run in values(stages()[0], "RUN") if run.startswith("uv sync")]
    assert len(syncs) == 2
    for sync in syncs:
        args = shlex.split(sync)
        assert {"--frozen", "--no-dev"} <= set(args), sync
        assert args[args.index("--extra") + 1] in extras, sync


def test_dockerfile_runtime_contract() -> None:
    final = stages()[-1]
    (user,) = values(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    (health,) = values(final, "HEALTHCHECK")
    assert "urllib" in health
    assert "/healthz" in health
    assert json.loads(values(final, "ENTRYPOINT")[0]) == ["imagine"]
    assert json.loads(values(final, "CMD")[0]) == ["serve", "--host", "0.0.0.0"]
    assert values(final, "EXPOSE") == ["8000"]
    assert json.loads(values(final, "VOLUME")[0]) == ["/data"]
    env = dict(pair.split("=", 1) for value in values(final, "ENV") for pair in shlex.split(value))
    assert env["IMAGINE_DATA_DIR"] == "/data"


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    let_in = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for value in values(stages()[0], "COPY")
        for source in shlex.split(value)[:-1]
    }
    assert copied == let_in
    assert not let_in & {".env", ".venv", ".git", "imagine-data", "deploy"}


@pytest.mark.parametrize("path", [COMPOSE, ENV_EXAMPLE, CADDYFILE, DOCKERFILE])
def test_deployment_files_speak_for_themselves(path: Path) -> None:
    """Each file opens with a comment saying what it is for."""
    assert path.read_text().lstrip().startswith("#")
