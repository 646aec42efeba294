"""The dependency direction of docs/architecture.md, read from the source: training never
imports inference (the sampler that needs the generator lives in inference), and nothing
imports the front ends or the worker (but the launcher, which starts it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llm_trainer

PACKAGE = Path(llm_trainer.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every llm_trainer module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("llm_trainer")}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.glob("*.py"))


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_training_never_imports_inference():
    found = {p.name: sorted(m for m in _imports(p) if m.startswith("llm_trainer.inference"))
             for p in _modules("training")}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_checkpoint_io_imports_neither_training_nor_inference():
    mods = _imports(PACKAGE / "checkpoint_io.py")
    assert not [m for m in mods if m.startswith(("llm_trainer.training",
                                                 "llm_trainer.inference"))]


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_nothing_imports_the_front_ends_or_the_worker():
    front = ("llm_trainer.cli", "llm_trainer.tui", "llm_trainer.worker")
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        if rel[0] in ("cli", "tui", "__main__.py", "worker.py"):
            continue
        bad = sorted(m for m in _imports(path) if m.startswith(front))
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    # the launcher starts the worker: as a process, or (Service(in_process=True), a
    # one-process --foreground run) by calling run_worker in this process
    assert offenders == {"launcher.py": ["llm_trainer.worker", "llm_trainer.worker.run_worker"]}
