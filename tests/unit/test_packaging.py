"""The package as `pip install .`, `pipx install .` and `uv tool install .` build it: the
wheel holds the presets, the profiles and the dashboard's stylesheet, and installed outside
the repository it finds them from any folder."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # builds a wheel (a few seconds)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # hatchling comes with the dev extra: no network; without it pip fetches it
    offline = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                           "-q", "-w", str(out), *offline], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0 and not offline and "hatchling" in proc.stdout + proc.stderr:
        pytest.skip(f"no hatchling here and none from the index:\n{proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found, = out.glob("llm_trainer-*.whl")
    return found


def test_the_wheel_holds_every_preset_profile_and_stylesheet(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT / "configs").as_posix()
               for p in (ROOT / "configs").rglob("*.yaml")]
    assert shipped and "profiles/chatbot.yaml" in shipped
    missing = [f for f in shipped if f"llm_trainer/configs/{f}" not in names]
    assert missing == []
    assert "llm_trainer/tui/app.tcss" in names
    assert not [n for n in names if n.startswith(("runs/", "checkpoints/", "data/"))]


def test_installed_outside_the_repo_it_finds_its_presets(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    env.pop("LLM_TRAINER_HOME", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llm_trainer", *args], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=120)

    where, profiles = subprocess.run(
        [sys.executable, "-c", "import llm_trainer; print(llm_trainer.__file__); "
         "from llm_trainer.profiles import list_profiles; print(list_profiles())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert where.startswith(str(target))  # the installed copy, not this checkout
    assert "chatbot" in profiles
    proc = cli("train", "--preset", "tiny", "--dataset", "builtin:python-docs", "--dry-run",
               "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["config"]["model"]["n_layer"] == 2  # the tiny preset's
