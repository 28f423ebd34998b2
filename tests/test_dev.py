"""``./dev``: its help, and how it installs torch — a CPU build on machines without an NVIDIA GPU even where
PyPI would resolve the CUDA build, unless pip's own configuration serves one (as on this machine, from a
local wheel). The decision runs in fake environments: a fake ``nvidia-smi``/``uname`` on PATH, and pip
configurations with and without a local torch wheel."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "dev"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DEV), *args], cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=120)


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def _no_local_wheels(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment where pip has no configuration: nothing serves torch without an index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, DISTILLERY_VENV=str(tmp_path / "no-venv"), **extra)
    return env


def _torch_wheel(folder: Path) -> Path:
    """A minimal, valid ``torch 2.13.0`` wheel (metadata only): what a find-links folder of a mirror holds."""
    folder.mkdir()
    wheel = folder / "torch-2.13.0+cpu-py3-none-any.whl"
    files = {"torch/__init__.py": b"",
             "torch-2.13.0+cpu.dist-info/METADATA": b"Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n",
             "torch-2.13.0+cpu.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                 b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items())
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("torch-2.13.0+cpu.dist-info/RECORD", record + "torch-2.13.0+cpu.dist-info/RECORD,,\n")
    return folder


def test_help_is_the_documented_commands_only():
    for args in (("help",), ()):
        out = _dev(*args)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("Distillery developer entry point")
        assert not any("set -e" in line or line.startswith("#") for line in lines)  # no stray script line
        for command in ("./dev up", "./dev demo", "./dev test", "./dev bench", "./dev run", "./dev torch-args"):
            assert any(line.strip().startswith(command) for line in lines), command
    unknown = _dev("frobnicate")
    assert unknown.returncode == 2 and "unknown command: frobnicate" in unknown.stderr
    assert "./dev up" in unknown.stderr and unknown.stdout == ""


def test_torch_is_the_cpu_build_without_a_gpu(tmp_path: Path):
    env = _no_local_wheels(tmp_path)
    out = _dev("torch-args", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch==2.13.0", "--index-url", CPU_INDEX]
    # an nvidia-smi that finds no GPU (no driver) does not count as a GPU
    _fake(tmp_path / "bin", "nvidia-smi", "exit 9")
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    assert _dev("torch-args", env=env).stdout.split() == ["torch==2.13.0", "--index-url", CPU_INDEX]


def test_torch_from_pypi_with_a_gpu_or_off_linux(tmp_path: Path):
    gpu = tmp_path / "gpu"
    _fake(gpu, "nvidia-smi", 'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"')
    env = _no_local_wheels(tmp_path, PATH=f"{gpu}:{os.environ['PATH']}")
    assert _dev("torch-args", env=env).stdout.split() == ["torch==2.13.0"]
    mac = tmp_path / "mac"
    _fake(mac, "uname", 'echo Darwin')
    env = _no_local_wheels(tmp_path, PATH=f"{mac}:{os.environ['PATH']}")
    assert _dev("torch-args", env=env).stdout.split() == ["torch==2.13.0"]


def test_a_torch_that_pips_configuration_serves_is_kept(tmp_path: Path):
    """Where pip's configuration serves torch without an index (a find-links folder, as here), that build is
    installed as is: the CPU index may be unreachable from such a machine."""
    env = _no_local_wheels(tmp_path, PIP_FIND_LINKS=str(_torch_wheel(tmp_path / "wheels")))
    assert _dev("torch-args", env=env).stdout.split() == ["torch==2.13.0"]


def test_an_explicit_index_wins(tmp_path: Path):
    gpu = tmp_path / "gpu"
    _fake(gpu, "nvidia-smi", "exit 0")
    env = _no_local_wheels(tmp_path, PATH=f"{gpu}:{os.environ['PATH']}",
                           DISTILLERY_TORCH_INDEX="https://download.pytorch.org/whl/cu128")
    assert _dev("torch-args", env=env).stdout.split() == [
        "torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu128"]
