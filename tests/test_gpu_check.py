"""bench/gpu_check.sh end to end in its CPU mode (tiny sizes), and the per-test time limit of
tests/conftest.py that its pytest step relies on. Counts are checked against the run's own
JUnit XML and bench JSON, never against fixed numbers; no timing is asserted beyond the
script's own limit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _check(out: Path, *args: str, env: dict[str, str] | None = None, limit: float = 240) -> tuple[int, float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu", *args, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=limit, env={**os.environ, "PYTHON": sys.executable, **(env or {})})
    return proc.returncode, time.monotonic() - t0, proc.stdout + proc.stderr


def _steps(out: Path) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    return {row[0]: row[1:] for row in rows}


def test_cpu_mode_end_to_end(tmp_path) -> None:
    out = tmp_path / "out"
    rc, _, output = _check(out, "--bench-data", str(tmp_path / "data"))
    assert rc == 0, output
    for name in ("steps.tsv", "versions.txt", "install.log", "versions.log", "pytest-1.log", "junit-1.xml",
                 "bench.log", "bench/throughput-cpu.json", "bench/throughput-cpu.png", "summary.md"):
        assert (out / name).is_file(), name
    steps = _steps(out)
    assert list(steps) == ["install", "versions", "pytest-1", "bench"]
    assert all(row[0] == "ok" and row[1] == "0" for row in steps.values()), steps
    versions = (out / "versions.txt").read_text()
    assert "mode: cpu" in versions and f"decal: 0.1.0 ({ROOT / 'decal'}" in versions and "torch: " in versions

    summary = (out / "summary.md").read_text()
    assert "Mode: cpu;" in summary and "CPU mode: no GPU step ran" in summary
    # pytest counts by file: exactly what the run's own JUnit XML says
    counts: dict[str, Counter] = {}
    for case in ET.parse(out / "junit-1.xml").getroot().iter("testcase"):
        outcome = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
        counts.setdefault(case.get("file"), Counter())[outcome] += 1
    assert set(counts) == {"tests/test_gpu_summary.py", "tests/test_rasterize_gpu.py"}
    assert counts["tests/test_rasterize_gpu.py"]["skipped"] > 0  # gpu tests skip without a GPU
    for file, c in counts.items():
        assert f"| {file} | {c['passed']} | {c['failure']} | {c['error']} | {c['skipped']} |" in summary
    # the bench table: the run's own figures
    bench = json.loads((out / "bench" / "throughput-cpu.json").read_text())
    assert set(bench["modes"]) == {"pipeline_cpu", "baseline", "masks"} and "partial" not in bench
    for mode, label in (("pipeline_cpu", "(c) DALI CPU pipeline"), ("baseline", "(d) DataLoader + mmdet-style NumPy")):
        assert f"| {label} | {bench['modes'][mode]['images_per_s']} | 2 |" in summary
    assert summary.count("| not measured |") == 4


ORPHAN = """
import signal, subprocess, time
from pathlib import Path

def test_passes():
    pass

def test_starts_a_worker_then_hangs():
    worker = subprocess.Popen(["sleep", "300"])  # as DALI / DataLoader workers are
    Path(__file__).with_name("worker.pid").write_text(str(worker.pid))
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # never returns to Python
    time.sleep(300)

def test_after_the_hang():
    pass
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.fixture
def hanging_tests():
    """A test folder inside the repository (under the ignored out/), so its test ids are
    repository-relative as those of tests/ are in a real run."""
    folder = ROOT / "out" / f"test-gpu-check-{os.getpid()}"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", folder / "conftest.py")
    (folder / "test_orphan.py").write_text(ORPHAN)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_failed_and_hung_steps_are_reported_within_the_limit(tmp_path, hanging_tests) -> None:
    tests = hanging_tests
    out = tmp_path / "out"
    total = 120  # the bench's own budget (8 s) ends it: the run takes well under this
    rc, seconds, output = _check(out, "--total", str(total), "--per-test-timeout", "1",
                                 "--bench-data", str(tmp_path / "data"), limit=total + 60,
                                 env={"GPU_CHECK_INJECT": "versions:fail bench:hang", "GPU_CHECK_BUDGET_BENCH": "8",
                                      "GPU_CHECK_PYTEST_ARGS": str(tests.relative_to(ROOT))})
    assert rc == 1, output
    assert seconds < total + 5  # stopped by itself, summary included, inside the whole-run limit
    steps = _steps(out)
    assert steps["install"][:2] == ["ok", "0"] and steps["versions"][:2] == ["failed", "1"]
    # the watchdog ended the first pytest run in the hung test; the second resumed after it
    assert steps["pytest-1"][:2] == ["failed", "1"] and steps["pytest-2"][:2] == ["ok", "0"]
    status, code, seconds_bench, budget = steps["bench"]
    # ended by its own 8 s budget (not a timing claim: the upper bound is the run's own limit)
    assert (status, code, budget) == ("timed_out", "124", "8") and 8 <= float(seconds_bench) < total
    assert not _alive(int((tests / "worker.pid").read_text()))  # the step's leftovers were killed
    summary = (out / "summary.md").read_text()
    assert ("Did not finish cleanly: versions (failed, log `versions.log`), pytest-1 (failed, log `pytest-1.log`), "
            "bench (timed out, log `bench.log`).") in summary
    assert "| bench | timed out | 124 |" in summary and "No bench figures" in summary
    file = f"{tests.relative_to(ROOT)}/test_orphan.py"
    assert f"| {file} | 2 | 0 | 1 | 0 |" in summary  # two passed, the hung one an error
    assert f"`{file}::test_starts_a_worker_then_hangs` hung in pytest-1.log" in summary
    assert "3 of 3 selected tests reported" in summary


def test_the_whole_run_stops_by_its_total_limit(tmp_path) -> None:
    out = tmp_path / "out"
    # Less the summary's 15 s and the 5 s kill grace, 15 s are left for every step together.
    # The script counts in whole seconds and skips a step with under 5 s left, so a total of 25
    # (5 s left) skipped even the install whenever its start crossed a second boundary under
    # load (CI at 1417fb3); 15 s leave room for that and still end the run inside --total.
    total = 35
    rc, seconds, output = _check(out, "--total", str(total), env={"GPU_CHECK_INJECT": "install:hang"}, limit=120)
    assert rc == 1 and seconds < total + 5, output
    steps = _steps(out)
    assert steps["install"][0] == "timed_out" and int(steps["install"][3]) <= total - 20
    assert steps["versions"][0] == steps["pytest-1"][0] == steps["bench"][0] == "skipped"
    summary = (out / "summary.md").read_text()
    assert "| install | timed out | 124 |" in summary and "| bench | skipped | - | 0 |" in summary
    assert "gpu_check: no time left for bench" in (out / "bench.log").read_text()


def test_usage_errors_say_what_to_do(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    for args, message in (([], "give the output folder"), (["--total", "soon", "x"], "'soon' is not a positive"),
                          (["--frobnicate", "x"], "unknown option --frobnicate")):
        proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert "bench/gpu_check.sh --help" in proc.stderr


# --------------------------------------------------------------------------- --per-test-timeout

SLOW = """
import time

def test_sleeps():
    time.sleep(60)

def test_after_sleep():
    pass
"""

BLOCKED = """
import signal, time

def test_blocks_the_alarm():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as a call that never returns would
    time.sleep(300)

def test_never_reached():
    pass
"""


def _pytest_with_conftest(tmp_path: Path, test_source: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """pytest on one test file next to a copy of this suite's conftest.py."""
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_it.py").write_text(test_source)
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *args, "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(path).getroot().iter("testcase")}


def test_per_test_timeout_fails_the_test_and_goes_on(tmp_path) -> None:
    proc = _pytest_with_conftest(tmp_path, SLOW, "--per-test-timeout", "1", "--junitxml", "j.xml")
    assert proc.returncode == 1
    cases = _junit_cases(tmp_path / "j.xml")
    failure = cases["test_sleeps"].find("failure")
    assert failure is not None and "tests/test_it.py::test_sleeps exceeded --per-test-timeout=1 s" in failure.get("message")
    assert float(cases["test_sleeps"].get("time")) < 30
    assert list(cases["test_after_sleep"]) == []  # passed


def test_per_test_timeout_ends_a_process_that_never_returns(tmp_path) -> None:
    t0 = time.monotonic()
    proc = _pytest_with_conftest(tmp_path, BLOCKED, "--per-test-timeout", "1")
    seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    # the watchdog dumps the stacks and ends the run, limit + grace after the test started
    assert "tests/test_it.py::test_blocks_the_alarm Timeout (" in log and "in test_blocks_the_alarm" in log
    assert "test_never_reached" not in log.split("Timeout (")[1] and proc.returncode == 1
    assert seconds < 100  # not the 300 s sleep: ended 1 + 10 s after the test began, plus start-up
    (tmp_path / "pytest-1.log").write_text(log)
    from decal.bench.gpu_summary import parse_pytest_log

    run = parse_pytest_log(tmp_path / "pytest-1.log")
    assert run.hung == "tests/test_it.py::test_blocks_the_alarm" and run.selected == 2 and run.results == []


def test_sigterm_still_writes_the_junit_xml(tmp_path) -> None:
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_it.py").write_text(
        "import time\n\ndef test_first():\n    pass\n\ndef test_sleeps():\n    time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--per-test-timeout", "250",
                             "--junitxml", "j.xml", "tests"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # as `timeout` does once the limit is reached in the second test
            if "test_first PASSED" in line:
                proc.send_signal(signal.SIGTERM)
                break
        log = proc.stdout.read()
        assert proc.wait(timeout=60) == 2 and "KeyboardInterrupt" in log
    finally:
        proc.kill()
    from decal.bench.gpu_summary import parse_junit

    # the finished test is in the XML; the interrupted one leaves an empty entry, which is ignored
    assert [(r.nodeid, r.outcome) for r in parse_junit(tmp_path / "j.xml").results] == [("tests/test_it.py::test_first", "passed")]


@pytest.mark.parametrize("limit, grace", [(1, 10), (60, 15), (120, 30)])
def test_hard_timeout_grace(limit, grace) -> None:
    from conftest import hard_timeout_grace

    assert hard_timeout_grace(limit) == grace
