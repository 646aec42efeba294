"""The program leaves without the interpreter's teardown when nothing is left to run at exit
(``cli._leave``): its output and exit code are what they were."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # real CLI processes


def test_output_and_exit_codes_survive_the_quick_exit(tmp_path):
    ok = run_cli("--version", home=tmp_path, process=True)
    assert ok.returncode == 0 and ok.stdout.startswith("llm-trainer ")
    listed = run_cli("models", "list", "--json", home=tmp_path, process=True)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    bad = run_cli("train", "--dataset", "nowhere.txt", "--foreground", home=tmp_path,
                  process=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: dataset 'nowhere.txt'")
    assert "hint:" in bad.stderr


def test_a_reader_that_goes_away_is_no_traceback(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m llm_trainer train --help | head -c 10",
                          shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout == "Usage: llm" and "Traceback" not in proc.stderr


LEAVER = """
import atexit, sys
from llm_trainer.cli import main

class Teardown:
    def __del__(self):
        sys.stdout.write("torn down\\n")
keep = Teardown()
if sys.argv[1] == "with-handler":
    atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
sys.argv = ["llm-trainer", "--version"]
main()
"""


def test_the_teardown_is_skipped_only_when_nothing_waits_for_the_exit(tmp_path):
    def run(arg):
        return subprocess.run([sys.executable, "-c", LEAVER, arg], capture_output=True,
                              text=True, cwd=tmp_path)

    quick = run("plain")
    assert quick.returncode == 0 and quick.stdout.startswith("llm-trainer ")
    assert "torn down" not in quick.stdout  # left before the interpreter's teardown
    normal = run("with-handler")
    assert normal.returncode == 0 and "atexit ran" in normal.stdout
    assert "torn down" in normal.stdout
