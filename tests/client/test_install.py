"""The client as its own distribution: installed alone it brings the one top-level package ``distillery``,
imports nothing of the server (or its dependencies), and carries the server's version."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

# What an agent's environment must never receive through the client.
SERVER_SIDE = ("app", "worker", "contract", "cli", "migrations", "fastapi", "sqlalchemy", "pydantic", "torch",
               "orjson", "typer", "psycopg")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target`` of a copy of ./client (building in place would write into the tree)."""
    work = tmp_path_factory.mktemp("client")
    source = work / "src"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target


def test_installs_only_the_distillery_package(installed: Path) -> None:
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"distillery"}
    assert (installed / "distillery" / "py.typed").exists()  # users' type checkers see the client's hints
    (dist_info,) = installed.glob("distillery_client-*.dist-info")
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", (dist_info / "METADATA").read_text(), re.MULTILINE)
    assert requires == ["httpx"]


def test_imports_nothing_of_the_server(installed: Path, tmp_path: Path) -> None:
    """With only the installed client and httpx's site-packages on the path (no site hooks, so the editable
    install of the server is invisible), importing and using the client loads no server-side module; a
    blocker makes any attempt fail loudly rather than succeed quietly."""
    httpx_site = str(Path(httpx.__file__).resolve().parents[1])
    code = f"""
import sys
sys.path[:0] = [{str(installed)!r}, {httpx_site!r}]
BLOCKED = {SERVER_SIDE!r}
SPOOL = {str(tmp_path / "spool")!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the client imported {{name}}")
        return None

sys.meta_path.insert(0, Blocker())
import httpx
import distillery
assert distillery.__file__.startswith({str(installed)!r}), distillery.__file__

def answer(request):
    return httpx.Response(201, json={{"id": "t1", "body": request.content.decode("utf-8")}})

with distillery.DistilleryClient("http://api", key="k", transport=httpx.MockTransport(answer), spool=SPOOL) as api:
    receipt = api.ingest({{"task": "Größe in °C"}})
    with api.trajectory(task="t", source="s") as t:  # the recorder, its spool and capture's module too
        t.final("a")
assert receipt["body"] == '{{"task":"Größe in °C"}}', receipt
assert t.status == "stored" and distillery.capture_openai and distillery.AsyncDistillery
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
"""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=installed, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_client_and_server_versions_agree() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert client["name"] == "distillery-client" and server["name"] == "distillery-server"
    assert client["version"] == server["version"]
    assert f"distillery-client=={client['version']}" in server["dependencies"]
    assert client["dependencies"] == ["httpx>=0.27"]
