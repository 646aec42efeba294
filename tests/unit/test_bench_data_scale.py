"""benchmarks/data_scale.py: reading a run's log, the 40 GB extrapolation and the tables
(the measuring itself runs real trainings, minutes each: not a unit test)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_scale.py"

OLD_LOG = """\
16:47:24 run 20261206-164724-c-tiny-1: training model c-tiny-1 (pid 24506, foreground)
16:47:26 device: requested auto, using cpu (CPU); precision fp32
16:47:36 tokenizer ready in 10.0s (58 tokens)
16:47:36 tokenizing c.txt...
16:48:16 tokenized in 40.0s
16:48:16 data: c.txt: 4,467,150 training and 496,384 validation tokens (char tokenizer)
16:48:17 step 5/5 epoch 0.00 loss 4.0144 lr 1.50e-03 35,344 tok/s ETA n/a
"""


@pytest.fixture(scope="module")
def ds():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("data_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_preparation_from_todays_log(ds):
    prep = ds.parse_prepare(OLD_LOG, 100_000_000)
    assert prep["vocabulary_s"] == 10.0 and prep["tokenizing_s"] == 40.0
    assert prep["prepare_s"] == 50.0 and prep["mb_per_s"] == pytest.approx(2.0)
    assert prep["tokenize_mb_per_s"] == pytest.approx(2.5)
    assert prep["prepare_clock_s"] == 50.0  # from the "device:" line to the "data:" line
    assert any(line.endswith("tokenized in 40.0s") for line in prep["log_lines"])


def test_preparation_from_a_log_that_prints_mb_per_s(ds):
    log = ("10:00:00 device: cpu\n"
           "10:00:01 preparing data: vocabulary...\n"
           "10:00:30 preparing data 50% 30.5 MB/s 1,000 tokens/s ETA 29s\n"
           "10:01:00 tokenized in 59.0s (1,000,000 tokens this time, 33.9 MB/s)\n"
           "10:01:00 data: big.txt: 1,000 training tokens\n")
    prep = ds.parse_prepare(log, 1_000_000_000)
    assert prep["tokenize_mb_per_s"] == 33.9  # the last figure the log printed
    assert prep["tokenizing_s"] == 59.0
    assert prep["prepare_s"] == 60.0  # no "tokenizer ready" line: the log's clock
    assert prep["mb_per_s"] == pytest.approx(1000 / 60)


def test_fit_is_a_line_or_proportional_for_one_size(ds):
    slope, intercept, how = ds.fit([1.0, 2.0, 4.0], [3.0, 5.0, 9.0])
    assert (slope, intercept) == pytest.approx((2.0, 1.0)) and "3 sizes" in how
    slope, intercept, how = ds.fit([0.25], [7.6e9])
    assert (slope, intercept) == (7.6e9 / 0.25, 0.0) and "proportional" in how


def case(size_gb, kind, peak, wall, prep_s, status="completed"):
    size = int(size_gb * 1e9)
    return {"size_gb": size_gb, "size_bytes": size, "tokenizer": kind, "train": {
        "status": status, "wall_s": wall, "others_cpu_share": 0.1,
        "peak": {"tree_rss": peak, "tree_pss": peak, "worker_rss": peak,
                 "max_one_process_rss": peak},
        "prepare": {"prepare_s": prep_s, "mb_per_s": size / 1e6 / prep_s,
                    "tokenizing_s": prep_s / 2},
        "tokens_on_disk": {"bytes": 2 * size, "dtype": "uint16", "per_source_byte": 2.0}},
        "library": {"status": "completed", "mb_per_s": size / 1e6 / prep_s, "others_cpu_share": 0}}


def test_on_paper_and_tables(ds, tmp_path):
    cases = [case(0.25, "char", 1.0e9, 30, 10), case(1, "char", 1.1e9, 60, 40),
             case(4, "char", 1.2e9, 180, 160), case(0.25, "bpe", 7.6e9, 288, 200)]
    rows = {r["tokenizer"]: r for r in ds.on_paper(cases)}
    assert rows["char"]["disk_bytes"] == pytest.approx(80e9)  # 2 bytes per source byte
    assert 1.2e9 < rows["char"]["peak_tree_rss_bytes"] < 3e9  # a nearly flat line
    assert rows["char"]["prepare_s_at_measured_rate"] == pytest.approx(40e3 / 25)
    assert rows["bpe"]["peak_tree_rss_bytes"] == pytest.approx(7.6e9 * 160)
    report = {"date": "d", "machine": "m", "commit": "c", "invocation": "python x",
              "poll_interval_s": 0.1, "cases": cases, "on_paper": list(rows.values())}
    text = ds.markdown(report)
    assert "- char: highest peak 1.20 GB (PASS < 1.5 GB); 4.00 GB / 0.25 GB: 1.20x (PASS" in text
    assert "- bpe: highest peak 7.60 GB (FAIL < 1.5 GB)" in text
    assert "| 0.25 GB | char | 10.0 s | 25.00 | 50.00 | 25.00 | 2.00x | 2.00 (uint16) |" in text
    assert "Scale on paper: a 40 GB corpus" in text
    # --from-json merges earlier outputs and prints the same tables
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json"
    a.write_text(json.dumps({**report, "cases": cases[:3]}))
    b.write_text(json.dumps({**report, "cases": cases[3:]}))
    assert ds.main(["--from-json", str(a), str(b), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["cases"]) == 4
