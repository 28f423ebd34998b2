"""``distillery models …``: the local models jobs can name, kept under the models root.

The root is ``DISTILLERY_MODELS_ROOT`` (default ``<data dir>/models``; the data dir is
``DISTILLERY_DATA_DIR``). A job names a model there by its path inside the root (``"student_model":
"smollm2"``), or a finished distill job's model as ``job:<id>``. ``add`` imports a Hugging Face folder or
a GGUF file (converted once), ``tiny`` builds a small random model for trying things on a CPU, ``rm``
deletes one. The work is ``worker.models``'; torch loads only for ``add`` and ``tiny``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from worker.models import ModelInfo

models_cli = typer.Typer(help="Local models jobs can name (under the models root).", no_args_is_help=True)

Force = Annotated[bool, typer.Option("--force", help="Replace a model of that name.")]


def models_root() -> Path:
    from app.config import get_settings

    root = get_settings().models_root
    if root is None:
        typer.echo("no models root is configured (set DISTILLERY_MODELS_ROOT)", err=True)
        raise typer.Exit(2)
    return root


@contextlib.contextmanager
def _exit_on_import_error() -> Iterator[None]:
    """A model that cannot be imported, built or removed: its message on stderr and exit status 1."""
    from worker.models import ModelImportError

    try:
        yield
    except ModelImportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _added(info: ModelInfo) -> None:
    typer.echo(f"added {info.name} ({info.model_type}, {_params(info.parameters)} parameters, "
               f"{_size(info.size_bytes)}) at {info.path}", err=True)
    typer.echo(f'jobs name it as "student_model": "{info.name}" (or teacher_model)', err=True)


@models_cli.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False) -> None:
    """The models under the models root: name (what a job names), type, parameters, size, source."""
    from rich.console import Console
    from rich.table import Table

    from worker.models import list_models as found

    root = models_root()
    models = found(root)
    if as_json:
        for info in models:
            typer.echo(json.dumps(info.to_json()))
        return
    typer.echo(f"models root: {root}", err=True)
    if not models:
        typer.echo("no models yet: 'distillery models add PATH' imports a Hugging Face folder or a .gguf file, "
                   "'distillery models tiny NAME' builds a small one", err=True)
        return
    table = Table("name", "type", "params", "size", "source", "added", box=None)
    for info in models:
        table.add_row(info.name, info.model_type or "?", _params(info.parameters), _size(info.size_bytes),
                      info.source, (info.added_at or "")[:19])
    Console(width=200).print(table)


@models_cli.command("add")
def add(
    source: Annotated[Path, typer.Argument(help="A Hugging Face model folder, or a .gguf file.")],
    name: Annotated[str | None, typer.Option(
        help="Its name under the root ('name' or 'org/name'; a hub id's name makes jobs naming that hub id use it). "
             "Default: the folder or file name.")] = None,
    dtype: Annotated[str, typer.Option(help="GGUF only: float32 (exact), bfloat16 or float16 (half the size).")
                     ] = "float32",
    force: Force = False,
) -> None:
    """Import a model: a folder is checked (architecture, fast tokenizer, weights) and copied; a GGUF file
    is dequantized once into a save_pretrained folder and checked against the GGUF's own logits."""
    from worker.models import import_folder, import_gguf

    root = models_root()
    if dtype not in ("float32", "bfloat16", "float16"):
        typer.echo("--dtype must be float32, bfloat16 or float16", err=True)
        raise typer.Exit(2)
    gguf = source.is_file() and source.suffix.lower() == ".gguf"
    target = name or (source.stem if gguf else source.expanduser().resolve().name)
    if not gguf and not source.is_dir():
        typer.echo(f"{source} is neither a model folder nor a .gguf file", err=True)
        raise typer.Exit(2)
    with _exit_on_import_error():
        if gguf:
            info = import_gguf(source, root, target, force=force, dtype=dtype,
                               log=lambda line: typer.echo(line, err=True))
        else:
            info = import_folder(source, root, target, force=force)
    _added(info)


@models_cli.command("tiny")
def tiny(
    name: Annotated[str, typer.Argument(help="Its name under the root, e.g. tiny-student.")],
    vocab_size: Annotated[int, typer.Option(min=261, max=65536, help="BPE vocabulary target.")] = 512,
    hidden_size: Annotated[int, typer.Option(min=8, max=4096)] = 64,
    layers: Annotated[int, typer.Option(min=1, max=64)] = 2,
    heads: Annotated[int, typer.Option(min=1, max=64)] = 4,
    intermediate_size: Annotated[int, typer.Option(min=8, max=16384)] = 128,
    max_positions: Annotated[int, typer.Option(min=64, max=32768, help="Context length.")] = 1024,
    seed: Annotated[int, typer.Option(help="Same seed, same weights.")] = 0,
    force: Force = False,
) -> None:
    """Build a small random Llama whose tokenizer is trained on the built-in synthetic task (seconds on a CPU):
    a student for trying jobs without downloading anything (distillery demo trains one)."""
    from worker.models import build_tiny

    with _exit_on_import_error():
        info = build_tiny(models_root(), name, vocab_size=vocab_size, hidden_size=hidden_size, num_layers=layers,
                          num_heads=heads, intermediate_size=intermediate_size,
                          max_position_embeddings=max_positions, seed=seed, force=force)
    _added(info)


@models_cli.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="The model's name under the root.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a model from the models root (jobs that already ran keep their own outputs)."""
    from worker.models import remove

    root = models_root()
    if not yes and not typer.confirm(f"delete {name} from {root}?"):
        raise typer.Exit(1)
    with _exit_on_import_error():
        path = remove(root, name)
    typer.echo(f"removed {name} ({path})", err=True)
