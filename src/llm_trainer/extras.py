"""Optional features and the package extra that provides each. No imports of them here.

A feature asked for without its package fails before anything starts, in one line that
names the extra to install.
"""

from __future__ import annotations

import importlib.util

from llm_trainer.errors import UsageError

EXTRAS = {
    # feature: (module to import, extra that installs it)
    "tensorboard": ("tensorboard", "tensorboard"),
    "gguf": ("gguf", "gguf"),
    "lora": ("peft", "lora"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),  # the mlflow-skinny client is enough (a file store)
}


def require(feature: str, *, option: str, load: bool = True) -> None:
    """Raise a UsageError naming ``option`` and the extra when ``feature``'s package is
    missing (or, with ``load``, broken: importing it is what the feature will do; without it
    only the package's presence is checked, for callers that must stay light)."""
    module, extra = EXTRAS[feature]
    try:
        found = importlib.util.find_spec(module) is not None
        if found and load:
            importlib.import_module(module)
    except ImportError:
        found = False
    if not found:
        raise UsageError(f"{option} needs the {module} package, which is not installed",
                         hint=f"pip install 'llm-trainer[{extra}]'")
