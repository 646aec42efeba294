"""Where an export writes: the checks on its ``--out`` and the atomic replacement of a file.
Shared by ``export`` (the formats and the HF / safetensors folders) and ``gguf_export``, so
neither imports the other for them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from llm_trainer.errors import UsageError


def check_out_folder(out: Path, fmt: str, overwrite: bool) -> None:
    """A format that writes a folder refuses a file, and a non-empty folder without --force."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; --format {fmt} writes a folder",
                         hint="pick a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty",
                         hint="pick a new --out folder, or pass --force to overwrite")


def replace_atomically(dest: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``dest``, then rename it over."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
