"""`compare` and `status RUN` through the real CLI: differing keys, the best run, the rerun
command (round-tripped through `train`'s own parsing), refusals, and plots that appear on a
terminal only."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import typer

from llm_trainer import cli
from llm_trainer.config import RunConfig, load_config
from llm_trainer.service import Service
from llm_trainer.store.runs import RunStore
from tests.helpers import corpus_text, fake_run, run_cli, run_cli_tty, train_tiny

PLOT_FRAME = "┌"  # plotext's frame: present exactly when a plot was drawn


def call(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit code, stdout, stderr."""
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def parsed_train_config(monkeypatch, args: list[str]) -> RunConfig:
    """The config `llm-trainer train ARGS` would train with, parsed by the CLI and planned
    by the service exactly as a real train command (nothing is started)."""
    seen = {}

    def plan_only(self, req):
        seen["config"] = self.planner.plan_train(req).config
        raise typer.Exit(0)

    monkeypatch.setattr(Service, "train", plan_only)
    assert args[:2] == ["llm-trainer", "train"]
    assert cli.main(args[1:]) == 0
    return seen["config"]


# ============================================================================ fast


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_refusals_are_one_line_with_a_hint_and_exit_2(home, capsys):
    cfg = load_config().to_dict()
    fake_run(home, "20261130-100000-a", cfg, evals=((10, 3.0),))
    fake_run(home, "20261130-100100-b", cfg, evals=((10, 2.0),))
    for args, message in (
            (["compare"], "compare takes 2 to 8 runs or models (got 0)"),
            (["compare", "20261130-100000-a"], "compare takes 2 to 8 runs or models (got 1)"),
            (["compare", *["20261130-100000-a"] * 9], "(got 9)"),
            (["compare", "20261130-100000-a", "nosuch"], "no run or model named 'nosuch'"),
            (["compare", "20261130-100000-a", "20261130-100000-a"], "named twice"),
            (["compare", "--rerun", "nosuch"], "no run or model named 'nosuch'")):
        code, out, err = call(capsys, *args)
        assert code == 2, args
        lines = err.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0]
        assert lines[1].startswith("hint: ")
        assert out == ""


def test_best_run_and_missing_val_losses(home, capsys):
    """The lowest best val loss wins, even when it is not the final one; a run that never
    evaluated is listed without one; no evaluations at all: no best run."""
    cfg = load_config()
    fake_run(home, "20261130-100000-a", cfg.to_dict(), evals=((10, 3.0), (20, 2.5)))
    fake_run(home, "20261130-100100-b", cfg.replace(**{"train.lr": 0.01}).to_dict(),
             evals=((10, 2.4), (20, 2.6)))
    fake_run(home, "20261130-100200-c", cfg.replace(**{"train.lr": 0.02}).to_dict())
    code, out, _ = call(capsys, "compare", "--json", "20261130-100000-a", "20261130-100100-b",
                        "20261130-100200-c")
    data = json.loads(out)
    assert code == 0 and data["best_run"] == "20261130-100100-b"
    assert data["differing_keys"] == {"train.lr": [0.002, 0.01, 0.02]}
    by_id = {r["run_id"]: r for r in data["runs"]}
    assert by_id["20261130-100100-b"]["final_val_loss"] == 2.6
    assert by_id["20261130-100100-b"]["best_val_loss"] == 2.4
    assert by_id["20261130-100200-c"]["best_val_loss"] is None
    _code, out, _ = call(capsys, "compare", "--json", "20261130-100000-a", "20261130-100200-c",
                         "--rerun", "20261130-100200-c")
    assert json.loads(out)["best_run"] == "20261130-100000-a"
    assert "train.lr=0.02" in json.loads(out)["rerun"]["command"]
    _code, out, _ = call(capsys, "compare", "--json", "20261130-100200-c", "20261130-1000")
    assert json.loads(out)["best_run"] == "20261130-100000-a"  # a unique prefix of its id
    fake_run(home, "20261130-100300-d", cfg.to_dict())
    code, out, _ = call(capsys, "compare", "20261130-100200-c", "20261130-100300-d")
    assert code == 0 and "best val loss: none yet" in out


@pytest.mark.parametrize("changes", [
    {"train.epochs": 3, "train.lr": 3e-4, "model.bias": False, "model.dropout": 0.1,
     "train.sample_prompts": ("ROMEO:", "", 'say "hi" it\'s [me]'),
     "train.target_val_loss": 1.5, "train.lr_schedule": "linear", "runtime.num_threads": 2,
     "data.text_column": "text", "runtime.tensorboard": True, "train.seed": 0},
    {"train.max_steps": None, "train.epochs": 2, "model.n_embd": 96, "model.n_head": 3,
     "data.tokenizer": "byte", "train.weight_decay": 0.0, "runtime.device": "cpu"},
    {},
], ids=["many-types", "epochs-no-max-steps", "defaults"])
def test_rerun_command_round_trips_through_train(home, capsys, monkeypatch, changes):
    data = home / "my data.txt"  # a space: the command must quote it
    data.write_text(corpus_text(2000))
    want = load_config().replace(**{"data.dataset": str(data), **changes})
    fake_run(home, "20261130-100000-r", want.to_dict(), model="orig")
    code, out, err = call(capsys, "compare", "--rerun", "20261130-100000-r")
    assert code == 0 and err == ""
    args = shlex.split(out.strip())
    assert args[:2] == ["llm-trainer", "train"] and "--name" in args
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    base = load_config()
    differing = {k for k in changes if want.get(k) != base.get(k)}
    if "train.epochs" in differing:
        differing.add("train.max_steps")  # or --epochs would clear the default max_steps
    assert {s.split("=", 1)[0] for s in sets} == differing
    assert parsed_train_config(monkeypatch, args) == want


def test_rerun_notes_a_continued_run_on_stderr(home, capsys):
    fake_run(home, "20261130-100000-k", load_config().to_dict(), kind="resume")
    code, out, err = call(capsys, "compare", "--rerun", "20261130-100000-k")
    assert code == 0 and out.startswith("llm-trainer train ")
    assert err.startswith("note: run 20261130-100000-k continued model m from a checkpoint")


@pytest.fixture
def two_runs(home):
    cfg = load_config()
    curve = {"train": ((10, 4.0), (20, 3.4), (30, 3.1)), "evals": ((15, 3.5), (30, 3.2))}
    fake_run(home, "20261130-100000-a", cfg.to_dict(), **curve)
    fake_run(home, "20261130-100100-b", cfg.replace(**{"train.lr": 0.01}).to_dict(), **curve)
    return ["20261130-100000-a", "20261130-100100-b"]


@pytest.mark.slow  # a CLI on a pseudo-terminal (the fast suite's 30 s budget)
def test_status_plots_on_a_terminal_sized_to_it(home, two_runs):
    code, text = run_cli_tty("status", two_runs[0], home=home, columns=100, lines=30)
    assert code == 0 and "run:        20261130-100000-a" in text
    frame = next(line for line in text.splitlines() if PLOT_FRAME in line)
    assert len(re.sub(r"\x1b\[[0-9;]*m", "", frame).rstrip()) == 100
    assert "step" in text and "train" in text and "val" in text


@pytest.mark.slow  # a CLI on a pseudo-terminal (the fast suite's 30 s budget)
def test_compare_plots_every_run_on_a_terminal(home, two_runs):
    code, text = run_cli_tty("compare", *two_runs, home=home, columns=100, lines=30)
    assert code == 0 and PLOT_FRAME in text and "#1" in text and "#2" in text
    assert "\x1b[1;32m" in text  # the best val loss is bold green
    assert "\x1b[38;5;4m" in text and "\x1b[38;5;1m" in text  # one color per run


@pytest.mark.slow  # a CLI on a pseudo-terminal per case (the fast suite's 30 s budget)
@pytest.mark.parametrize("args, env", [
    (["status", "20261130-100000-a", "--no-plot"], {}),
    (["compare", "20261130-100000-a", "20261130-100100-b", "--no-plot"], {}),
    (["status", "20261130-100000-a"], {"TERM": "dumb"}),
    (["compare", "20261130-100000-a", "20261130-100100-b"], {"TERM": "dumb"}),
], ids=["status-no-plot", "compare-no-plot", "status-dumb", "compare-dumb"])
def test_no_plot_when_asked_or_on_a_dumb_terminal(home, two_runs, args, env):
    code, text = run_cli_tty(*args, home=home, env=env)
    assert code == 0 and "20261130-100000-a" in text and PLOT_FRAME not in text


@pytest.mark.parametrize("command", ["status", "compare"])
def test_no_plot_into_a_pipe(home, two_runs, command):
    args = [command, two_runs[0]] if command == "status" else [command, *two_runs]
    proc = run_cli(*args, home=home)
    assert proc.returncode == 0 and "20261130-100000-a" in proc.stdout
    assert PLOT_FRAME not in proc.stdout


# ============================================================================ real runs


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three tiny runs that differ in lr, width and seed."""
    home = tmp_path_factory.mktemp("compare")
    (home / "corpus.txt").write_text(corpus_text(30_000))
    common = ["--dataset", "corpus.txt", "--max-steps", "30", "--set", "train.eval_interval=10"]
    for name, extra in (("lr-low", []), ("lr-high", ["--set", "train.lr=0.01"]),
                        ("wide", ["--set", "model.n_embd=48", "--set", "train.seed=7"])):
        train_tiny(home, *common, "--name", name, *extra)
    return home


@pytest.mark.slow
def test_compare_three_real_runs(three_runs, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(three_runs, home)
    proc = run_cli("compare", "lr-low", "lr-high", "wide", "--json", home=home, check=True)
    data = json.loads(proc.stdout)
    runs = RunStore(home)
    ids = [r["run_id"] for r in data["runs"]]
    states = [runs.read_state(i) for i in ids]
    assert [r["model"] for r in data["runs"]] == ["lr-low", "lr-high", "wide"]
    assert data["differing_keys"] == {"model.n_embd": [32, 32, 48],
                                      "train.lr": [0.003, 0.01, 0.003],
                                      "train.seed": [1337, 1337, 7]}
    best = min(states, key=lambda s: s.best_val_loss)
    assert data["best_run"] == best.run_id
    for r, s in zip(data["runs"], states, strict=True):
        assert set(r) == {"run_id", "model", "final_val_loss", "best_val_loss", "tokens_per_s",
                          "steps", "wall_s", "device", "config"}
        assert r["steps"] == 30 and r["device"] == "cpu" and r["wall_s"] > 0
        assert r["best_val_loss"] == s.best_val_loss and r["final_val_loss"] == s.val_loss
        assert r["tokens_per_s"] > 0 and r["config"]["train.max_steps"] == 30

    table = run_cli("compare", *ids, home=home, check=True).stdout
    keys = [line.split()[0] for line in table.splitlines()
            if re.match(r"^[a-z]+\.[a-z_]+ ", line)]
    assert keys == ["model.n_embd", "train.lr", "train.seed"]  # only what differs
    best_label = f"#{ids.index(best.run_id) + 1}"
    assert f"best val loss: {best_label} {best.run_id}" in table
    for i, run_id in enumerate(ids):
        row = next(line for line in table.splitlines() if run_id in line and "#" in line)
        assert row.startswith(f"#{i + 1}") and f"{states[i].best_val_loss:.4f}" in row

    # a model name means its latest run: a newer run of "wide" (its records copied) wins
    src = runs.paths(ids[2]).dir
    newer = src.parent / "20991231-000000-wide-again"
    shutil.copytree(src, newer)
    for name in ("meta.json", "state.json"):
        record = json.loads((newer / name).read_text())
        record.update(run_id=newer.name, created_at=record["created_at"] + 1000)
        (newer / name).write_text(json.dumps(record))
    proc = run_cli("compare", "lr-low", "wide", "--json", home=home, check=True)
    assert [r["run_id"] for r in json.loads(proc.stdout)["runs"]] == [ids[0], newer.name]


@pytest.mark.slow
def test_rerun_of_a_real_run_round_trips(three_runs, monkeypatch, capsys):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(three_runs))
    monkeypatch.chdir(three_runs)
    code, out, _ = call(capsys, "compare", "--rerun", "wide")
    assert code == 0
    args = shlex.split(out.strip())
    assert args[args.index("--name") + 1] == "wide-rerun-1"
    run_id = Service(three_runs).comparison.resolve("wide")
    want = RunConfig.from_dict(RunStore(three_runs).read_meta(run_id).config)
    assert parsed_train_config(monkeypatch, args) == want


def test_compare_has_help(home):
    proc = run_cli("compare", "--help", home=home)
    assert proc.returncode == 0 and "--rerun" in proc.stdout and "--no-plot" in proc.stdout
    assert "--no-plot" in run_cli("status", "--help", home=home).stdout
