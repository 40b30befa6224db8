"""bench/gpu_summary.py: the one-page summary of a GPU check, from synthetic run outputs —
JUnit XML by file, a hung run read from its log, a timed-out step, the bench table and the
targets' ratios, and missing or broken files reported instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decal.bench import gpu_summary as gs

# What pytest 9 writes with -o junit_family=xunit1 (cut down): a collection error, a module
# skipped by importorskip, passes, a failure, a setup error, a skip, a class and a parameter.
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="2"
failures="1" skipped="2" tests="8" time="1.7">
<testcase classname="" name="tests.test_b" file="tests/test_b.py" time="0.000"><error message="collection failure">
ModuleNotFoundError: No module named 'fastapi'</error></testcase>
<testcase classname="" name="tests.test_c" file="tests/test_c.py" time="0.000"><skipped message="collection skipped">
could not import 'fastapi'</skipped></testcase>
<testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="1" time="0.0" />
<testcase classname="tests.test_a" name="test_fail" file="tests/test_a.py" line="2" time="0.0"><failure
message="AssertionError: twin and kernel differ on 3 pixels&#10;assert 3 == 0">trace</failure></testcase>
<testcase classname="tests.test_a" name="test_p[1-a]" file="tests/test_a.py" line="3" time="0.0" />
<testcase classname="tests.test_a.TestC" name="test_m" file="tests/test_a.py" line="6" time="0.0" />
<testcase classname="tests.test_a" name="test_err" file="tests/test_a.py" line="10" time="0.0"><error
message="failed on setup with &quot;RuntimeError: fixture broke&quot;">trace</error></testcase>
<testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py" line="11" time="0.0"><skipped
type="pytest.skip" message="nope">x</skipped></testcase>
</testsuite></testsuites>"""

LOG_1 = """============================= test session starts ==============================
collecting ... collected 692 items / 1 error / 682 deselected / 10 selected
tests/test_a.py::test_ok PASSED                                          [ 12%]
"""

# A run whose process the watchdog ended: no XML, the log is all there is.
LOG_2 = """collecting ... collected 692 items / 684 deselected / 8 selected
tests/test_k.py::test_one PASSED                                         [ 25%]
tests/test_k.py::test_two[3] SKIPPED (needs a usable CUDA device)        [ 50%]
tests/test_k.py::test_three FAILED                                       [ 75%]
tests/test_k.py::test_hangs Timeout (0:01:30)!
Thread 0x00007f8a51220b80 (most recent call first):
  File "/repo/kernels/composite.py", line 80 in composite_cupy
"""

BENCH = {
    "date": "2026-11-29 22:00 UTC", "device": "NVIDIA H200", "output_size": 1024,
    "cpu": {"model": "Xeon", "cores": 16}, "dataset": {"images": 256},
    "modes": {
        "decode_gpu": {"images_per_s": 4000.0, "batch_size": 64},
        "pipeline_gpu": {"images_per_s": 3000.0, "batch_size": 64, "device_memory_gib": 21.5},
        "pipeline_cpu": {"images_per_s": 50.0, "batch_size": 16, "threads": 16},
        "baseline": {"images_per_s": 120.0, "batch_size": 16, "workers": 16},
        "pipeline_cpu_gpumasks": {"error": "RuntimeError: boom"},
        "kernels": {"milliseconds": {"composite_occlusion (fused)": 1.5}, "copy_bandwidth_gb_s": 3900.0,
                    "composite_occlusion_fraction_of_copy": 0.61},
        "peers": {"batch_size": 64, "output_size": 1024, "rows": [
            {"name": "decal copy_paste_batch_fused", "ms": 9.0, "images_per_s": 7111.1, "device_memory_gib": 3.2, "note": "n"},
            {"name": "kornia RandomTransplantation", "skipped": "kornia.augmentation not importable"}]},
    },
    "ratios": {"b_over_a": 0.75, "b_over_best_cpu": 25.0},
}


#: Lines the summary of :func:`_write_run`'s files must hold.
SUMMARY_LINES = (
    "Mode: gpu; commit abc1234",
    "| bench | timed out | 124 | 230.4 | 230 |",
    "Did not finish cleanly: pytest-2 (failed, log `pytest-2.log`), bench (timed out, log `bench.log`).",
    "| tests/test_a.py | 3 | 1 | 1 | 1 |",
    "| tests/test_k.py | 1 | 1 | 1 | 1 |",
    "| **total** | 4 | 2 | 3 | 3 |",
    "10 of 10 selected tests reported",
    "`tests/test_k.py::test_hangs` hung in pytest-2.log (no readable junit-2.xml)",
    "- `tests/test_a.py::test_fail`: AssertionError: twin and kernel differ on 3 pixels",
    "From `bench/throughput-gpu.json` (partial: the run stopped before its last mode)",
    "| (b) full pipeline, GPU | 3000.0 | 64 | device_memory_gib=21.5 |",
    "| (c') GPU-mask pipeline on DALI CPU | — | — | error: RuntimeError: boom |",
    "| kornia RandomTransplantation | — | — | — | kornia.augmentation not importable |",
    "| (b) ≥ 0.8 × (a) | 0.75 | missed |",
    "| (b) ≥ 30 × best CPU row | 25.0 | missed |",
    "| composite_occlusion ≥ 70 % of D2D copy bandwidth | 0.61 | missed |",
    "| GPU memory of (b) | 21.5 GiB at batch 64 | measured |",
)


def _write_run(out: Path) -> None:
    (out / "bench").mkdir(parents=True)
    (out / "steps.tsv").write_text("name\tstatus\trc\tseconds\tbudget\n"
                                   "install\tok\t0\t3.1\t90\n"
                                   "pytest-1\tok\t1\t40.0\t170\n"
                                   "pytest-2\tfailed\t1\t95.2\t130\n"
                                   "bench\ttimed_out\t124\t230.4\t230\n"
                                   "garbage line\n")
    (out / "versions.txt").write_text("mode: gpu\ndate: 2026-11-29 22:00 UTC\ncommit: abc1234\ntotal_budget_s: 470\n"
                                      "python: 3.12.3\ndali: 2.4.0\ndevice: NVIDIA H200\ndriver: NVIDIA H200, 580.1\n")
    (out / "junit-1.xml").write_text(JUNIT)
    (out / "pytest-1.log").write_text(LOG_1)
    (out / "pytest-2.log").write_text(LOG_2)
    (out / "bench" / "throughput-gpu.json").write_text(json.dumps(dict(BENCH, partial=True)))


def test_junit_counts_by_file_and_nodeids(tmp_path) -> None:
    (tmp_path / "j.xml").write_text(JUNIT)
    run = gs.parse_junit(tmp_path / "j.xml")
    ids = {r.nodeid: r.outcome for r in run.results}
    assert ids == {
        "tests/test_b.py": "error", "tests/test_c.py": "skipped",
        "tests/test_a.py::test_ok": "passed", "tests/test_a.py::test_fail": "failed",
        "tests/test_a.py::test_p[1-a]": "passed", "tests/test_a.py::TestC::test_m": "passed",
        "tests/test_a.py::test_err": "error", "tests/test_a.py::test_skip": "skipped",
    }
    assert gs.counts_by_file(run.results) == {
        "tests/test_a.py": {"passed": 3, "failed": 1, "error": 1, "skipped": 1},
        "tests/test_b.py": {"passed": 0, "failed": 0, "error": 1, "skipped": 0},
        "tests/test_c.py": {"passed": 0, "failed": 0, "error": 0, "skipped": 1},
    }
    failed = next(r for r in run.results if r.outcome == "failed")
    assert failed.message.startswith("AssertionError: twin and kernel differ on 3 pixels")


def test_xunit2_case_without_file_attribute(tmp_path) -> None:
    (tmp_path / "j.xml").write_text('<testsuites><testsuite><testcase classname="tests.test_z.TestK" name="test_q"/>'
                                    "</testsuite></testsuites>")
    (result,) = gs.parse_junit(tmp_path / "j.xml").results
    assert (result.file, result.nodeid) == ("tests/test_z.py", "tests/test_z.py::TestK::test_q")


def test_log_of_a_hung_run(tmp_path) -> None:
    (tmp_path / "pytest-2.log").write_text(LOG_2)
    run = gs.parse_pytest_log(tmp_path / "pytest-2.log")
    assert run.selected == 8 and run.hung == "tests/test_k.py::test_hangs"
    assert [(r.nodeid, r.outcome) for r in run.results] == [
        ("tests/test_k.py::test_one", "passed"), ("tests/test_k.py::test_two[3]", "skipped"),
        ("tests/test_k.py::test_three", "failed")]


def test_runs_merge_and_resume_list(tmp_path) -> None:
    _write_run(tmp_path)
    runs = gs.read_pytest_runs(tmp_path)
    assert [r.source for r in runs] == ["junit-1.xml", "pytest-2.log (no readable junit-2.xml)"]
    assert runs[0].selected == 10  # taken from the log next to the XML
    merged = gs.merged_results(runs)
    assert merged["tests/test_k.py::test_hangs"].outcome == "error"
    assert "hung" in merged["tests/test_k.py::test_hangs"].message
    done = gs.done_nodeids(tmp_path)
    assert "tests/test_k.py::test_hangs" in done and "tests/test_a.py::test_ok" in done
    assert "tests/test_b.py" not in done  # a collection error is collected again
    assert len(done) == len(merged) - 2


def test_summary_of_a_full_run(tmp_path) -> None:
    _write_run(tmp_path)
    assert gs.main([str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# decal GPU check — NVIDIA H200 — 2026-11-29 22:00 UTC")
    assert "11 of 10 selected tests reported" not in text
    for line in SUMMARY_LINES:
        assert line in text


def test_targets_met(tmp_path) -> None:
    bench = dict(BENCH, ratios={"b_over_a": 0.9, "b_over_best_cpu": 31.0})
    bench["modes"] = dict(BENCH["modes"], kernels={"composite_occlusion_fraction_of_copy": 0.7})
    lines = gs.targets_section(bench)
    assert "| (b) ≥ 0.8 × (a) | 0.9 | met |" in lines and "| (b) ≥ 30 × best CPU row | 31.0 | met |" in lines
    assert "| composite_occlusion ≥ 70 % of D2D copy bandwidth | 0.7 | met |" in lines


def test_summary_with_everything_missing_or_broken(tmp_path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "throughput-gpu.json").write_text("{not json")
    (tmp_path / "junit-1.xml").write_text("<testsuites><testsuite>")  # cut off mid-write
    text = gs.summary(tmp_path)
    assert "# decal GPU check — device unknown — ?" in text
    assert "No steps.tsv: the check stopped before its first step ended." in text
    assert "No pytest results" in text
    assert "No bench figures: throughput-gpu.json unreadable" in text
    assert text.count("| not measured |") == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No bench figures: no throughput-gpu.json or throughput-cpu.json in bench/." in gs.summary(empty)


def test_cli_usage_error(tmp_path, capsys) -> None:
    assert gs.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        gs.main([])
    assert exit_info.value.code == 2


def test_log_words_in_test_output_are_not_mistaken_for_the_watchdog(tmp_path) -> None:
    (tmp_path / "pytest-1.log").write_text(
        "collected 3 items\n"
        "tests/test_s.py::test_a FAILED                                           [ 33%]\n"
        "tests/test_s.py::test_b PASSED                                           [ 66%]\n"
        "E   grpc.RpcError: Timeout (deadline 5 s) while raising KeyboardInterrupt\n"
        "tests/test_s.py::test_c \n"
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! KeyboardInterrupt !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n")
    run = gs.parse_pytest_log(tmp_path / "pytest-1.log")
    assert run.hung is None and run.interrupted and run.selected == 3
    assert [r.outcome for r in run.results] == ["failed", "passed"]
    (tmp_path / "pytest-1.log").write_text("tests/test_s.py::test_a FAILED\nE   Timeout (deadline) KeyboardInterrupt\n")
    run = gs.parse_pytest_log(tmp_path / "pytest-1.log")
    assert run.hung is None and not run.interrupted
