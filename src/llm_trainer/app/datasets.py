"""What a dataset picker offers besides the home's history: the built-in datasets and the
files of a folder that training could read. Reads only. No torch.

What counts as a dataset file is what training reads (``data.spec``'s suffixes), so a file
offered here is one `--dataset` accepts."""

from __future__ import annotations

import os
from pathlib import Path

from llm_trainer.data.spec import BUILTIN_PYDOCS, is_data_file
from llm_trainer.views import BuiltinDataset, DatasetFile

BUILTIN_DATASETS = (
    BuiltinDataset("wikitext-2", "WikiText-2 raw from Hugging Face (downloaded once)"),
    BuiltinDataset(BUILTIN_PYDOCS, "Python's own documentation topics (works offline)"),
)
HOME_FOLDERS = ("runs", "checkpoints", "data")  # the home's own records, never a dataset


def dataset_files(folder: Path, *, home: Path | None = None) -> list[DatasetFile]:
    """The dataset files of ``folder`` and its subfolders that hold dataset files directly
    (one level: a folder's own subfolders are not searched, so a big tree costs little),
    sorted by name. In the home, its runs/, checkpoints/ and data/ are left out. Each spec
    is the name when ``folder`` is the home (training runs there), else the full path."""
    folder = Path(folder).resolve()
    in_home = home is not None and Path(home).resolve() == folder
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    out: list[DatasetFile] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                if in_home and entry.name in HOME_FOLDERS:
                    continue
                sizes = [e.stat().st_size for e in os.scandir(entry.path)
                         if is_data_file(e.name) and e.is_file()]
                if not sizes:
                    continue
                count, size, is_dir = len(sizes), sum(sizes), True
            elif entry.is_file() and is_data_file(entry.name):
                count, size, is_dir = 1, entry.stat().st_size, False
            else:
                continue
        except OSError:  # unreadable, or gone since the listing
            continue
        out.append(DatasetFile(spec=entry.name if in_home else str(folder / entry.name),
                               name=entry.name, is_dir=is_dir, files=count, size_bytes=size))
    return sorted(out, key=lambda f: (f.name.casefold(), f.name))
