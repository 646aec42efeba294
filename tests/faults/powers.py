"""Running the CLI as a user would: where the tests run as root, without the capabilities
that let root read and write every file whatever its mode (setpriv), so that a chmod means
for the command what it means for a user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NO_ROOT_POWERS = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search", "--"]


def as_a_user() -> list[str]:
    """The command prefix that drops root's file powers (nothing for another user)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None or subprocess.run(
            [*NO_ROOT_POWERS, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop root's file powers here: "
                    "chmod would not stop the command")
    return NO_ROOT_POWERS


def cli_as_a_user(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``llm-trainer ARGS`` in a real process, over ``home``, as a user."""
    return subprocess.run([*as_a_user(), sys.executable, "-m", "llm_trainer", *args],
                          capture_output=True, text=True, timeout=120, cwd=str(home),
                          env={**os.environ, "LLM_TRAINER_HOME": str(home),
                               "HF_HUB_OFFLINE": "1"})
