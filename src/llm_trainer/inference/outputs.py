"""Where an export writes: the checks on its ``--out``, the atomic replacement of a file and
the staging of a folder. Shared by ``export`` (the formats and the HF / safetensors folders)
and ``gguf_export``, so neither imports the other for them. An export that fails (a full
disk, a kill) leaves nothing half-written under ``--out``, so that a retry works."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llm_trainer.errors import DiskFullError, UsageError
from llm_trainer.store.atomic import disk_full, file_mode, fsync_dir, process_umask


def check_out_folder(out: Path, fmt: str, overwrite: bool) -> None:
    """A format that writes a folder refuses a file, and a non-empty folder without --force."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; --format {fmt} writes a folder",
                         hint="pick a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty",
                         hint="pick a new --out folder, or pass --force to overwrite")


def check_out_outside(out: Path, models_root: Path) -> None:
    """``--out`` may not be inside the models' folder: an export into a model's own folder
    or one of its checkpoints (``--force`` allows a non-empty folder) would change the files
    their manifests vouch for, or look like a model of its own."""
    target, root = out.expanduser().resolve(), models_root.resolve()
    if target == root or root in target.parents:
        raise UsageError(f"--out {out} is inside the models' folder {root}; an export there "
                         "would change a model's checkpoints",
                         hint="pick a folder outside it, e.g. --out exports/NAME")


def disk_full_error(exc: BaseException, out: Path) -> DiskFullError | None:
    return DiskFullError(f"disk full while exporting to {out}; nothing was written there") \
        if isinstance(exc, Exception) and disk_full(exc, out.parent) else None


def replace_atomically(dest: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``dest``, then rename it over."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    except BaseException as exc:
        full = disk_full_error(exc, dest)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write an export in; once it is complete, it becomes
    ``out`` (one rename), or, when ``out`` already exists (empty, or ``--force``), its files
    replace theirs one rename each (other files there are kept). On failure it is removed and
    ``out`` is as before."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        yield staging
        for f in staging.iterdir():
            os.chmod(f, file_mode())
        if out.exists():
            for f in sorted(staging.iterdir()):
                os.replace(f, out / f.name)
            staging.rmdir()
        else:
            os.chmod(staging, 0o777 & ~process_umask())  # mkdtemp's is 0700
            os.rename(staging, out)
        fsync_dir(out.parent)
    except BaseException as exc:
        full = disk_full_error(exc, out)
        shutil.rmtree(staging, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise
