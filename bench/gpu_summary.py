"""The one-page ``summary.md`` of a ``bench/gpu_check.sh`` run, from whatever the run left.

Standard library only (plus the bench's row labels, read from ``throughput.py`` when it
loads), and run by path (``python3 bench/gpu_summary.py OUT``), so it works
even when the editable install or every other step of the check failed. It reads, under
``OUT`` (layout in ``bench/README.md``):

* ``steps.tsv``: one line per step, ``name<TAB>status<TAB>rc<TAB>seconds<TAB>budget``, status
  ``ok`` / ``failed`` / ``timed_out`` / ``skipped``;
* ``versions.txt``: ``key: value`` lines;
* ``junit-N.xml`` (``-o junit_family=xunit1``: every case names its file) and
  ``pytest-N.log`` (``-v`` output), N = 1, 2, ... for the first run and its resumptions
  after a hung test; a run whose XML is missing (the process was ended) is read from its log;
* ``bench/throughput-gpu.json`` or ``bench/throughput-cpu.json`` (``decal bench``).

Any of them may be missing or partial: the summary says so instead of failing. The targets
(issue "GPU truth", measured, never asserted): (b) ≥ 0.8 × (a); (b) ≥ 30 × the best CPU row of
the same run; the fused ``composite_occlusion`` kernel ≥ 70 % of device-to-device copy
bandwidth.

``python3 bench/gpu_summary.py --done-nodeids OUT`` prints the test ids the runs so far
reported or hung in, one a line (the resumed run deselects them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

OUTCOMES = ("passed", "failed", "error", "skipped")
TARGETS = (
    ("(b) ≥ 0.8 × (a)", "b_over_a", 0.8),
    ("(b) ≥ 30 × best CPU row", "b_over_best_cpu", 30.0),
    ("composite_occlusion ≥ 70 % of D2D copy bandwidth", "composite_occlusion_fraction_of_copy", 0.7),
)
CPU_ROWS = ("pipeline_cpu", "pipeline_cpu_gpumasks", "baseline")


def mode_labels() -> dict[str, str]:
    """``decal bench``'s row labels, read from ``throughput.py`` next to this file (so a new
    mode's label shows here too); {} if it cannot be loaded (the rows then show mode names)."""
    try:
        spec = importlib.util.spec_from_file_location("_decal_bench_throughput", Path(__file__).with_name("throughput.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return dict(module.LABELS)
    except Exception:  # no NumPy, a broken tree: the summary must still be written
        return {}


@dataclass(frozen=True)
class Step:
    """One line of ``steps.tsv``: seconds are wall-clock, budget the step's ``timeout``."""

    name: str
    status: str
    rc: str
    seconds: str
    budget: str


@dataclass(frozen=True)
class TestResult:
    """One test's outcome: ``file`` as pytest names it (``tests/test_x.py``)."""

    nodeid: str
    file: str
    outcome: str
    message: str = ""


@dataclass
class PytestRun:
    """What one pytest run reported, from its JUnit XML or, lacking that, its log."""

    source: str
    results: list[TestResult] = field(default_factory=list)
    selected: int | None = None
    hung: str | None = None
    interrupted: bool = False


# --------------------------------------------------------------------------- readers


def read_steps(path: Path) -> list[Step]:
    """``steps.tsv`` rows; [] when the file is missing. Malformed lines are skipped."""
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 5 and parts[0] != "name":
            steps.append(Step(*parts))
    return steps


def read_versions(path: Path) -> dict[str, str]:
    """``key: value`` lines of ``versions.txt`` ({} when missing)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _file_of(case: ET.Element) -> str:
    """A JUnit case's test file: xunit1's ``file``, else derived from the dotted classname
    (``tests.test_x.TestY`` → ``tests/test_x.py``) or, for a collection error, the name."""
    if case.get("file"):
        return case.get("file", "")
    dotted = case.get("classname") or case.get("name") or "?"
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        if parts[k - 1].startswith("test"):
            return "/".join(parts[:k]) + ".py"
    return dotted


def parse_junit(path: Path) -> PytestRun:
    """Results of a JUnit XML (``ET.ParseError`` / ``OSError`` if it is not one)."""
    root = ET.parse(path).getroot()
    run = PytestRun(source=path.name)
    for case in root.iter("testcase"):
        if case.get("name") is None:  # the test a SIGTERM / Ctrl-C interrupted: an empty entry
            continue
        file = _file_of(case)
        classname = case.get("classname", "")
        name = case.get("name", "?")
        module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
        inner = classname[len(module):].lstrip(".") if module and classname.startswith(module) else ""
        nodeid = "::".join(p for p in (file, *inner.split("."), name) if p) if classname else file
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (child.get("message") or child.text or "").strip()
                break
        run.results.append(TestResult(nodeid, file, outcome, message))
    return run


_LOG_RESULT = re.compile(r"^(\S+?\.py(?:::\S.*?)?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_LOG_START = re.compile(r"^(\S+?\.py::\S.*?) ")
_LOG_COLLECTED = re.compile(r"collected (\d+) items?")
_LOG_DESELECTED = re.compile(r"/ (\d+) deselected")
_LOG_SELECTED = re.compile(r"/ (\d+) selected")
#: faulthandler's header when the watchdog of ``tests/conftest.py`` fires: ``Timeout (0:01:15)!``
_LOG_WATCHDOG = re.compile(r"Timeout \(\d+:\d\d:\d\d(?:\.\d+)?\)!")
_LOG_INTERRUPTED = re.compile(r"^!+ KeyboardInterrupt !+$")
_LOG_WORD = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "error",
             "SKIPPED": "skipped", "XFAIL": "skipped"}


def parse_pytest_log(path: Path) -> PytestRun:
    """Results of a ``pytest -v`` log (the fallback when the XML is missing), the number of
    selected tests, and the test that hung: the last one started without an outcome before
    the watchdog's ``Timeout (`` dump (``tests/conftest.py``)."""
    run = PytestRun(source=path.name)
    pending: str | None = None
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_COLLECTED.search(line)
        if m and run.selected is None:
            selected, deselected = _LOG_SELECTED.search(line), _LOG_DESELECTED.search(line)
            run.selected = (int(selected.group(1)) if selected
                            else int(m.group(1)) - (int(deselected.group(1)) if deselected else 0))
        m = _LOG_RESULT.match(line)
        if m:
            nodeid = m.group(1)
            run.results.append(TestResult(nodeid, nodeid.split("::")[0], _LOG_WORD[m.group(2)]))
            pending = None
            continue
        start = _LOG_START.match(line)
        if _LOG_WATCHDOG.search(line):
            run.hung = start.group(1) if start else pending
        elif start:
            pending = start.group(1)
        if _LOG_INTERRUPTED.match(line):
            run.interrupted = True
    return run


def read_pytest_runs(folder: Path) -> list[PytestRun]:
    """Every run under ``folder`` in order: the XML when it parses, else the log; the log's
    selected count, hung test and interruption are kept either way."""
    runs = []
    numbers = sorted({int(m.group(2)) for p in folder.glob("*-*.*")
                      if (m := re.fullmatch(r"(junit|pytest)-(\d+)\.(xml|log)", p.name))})
    for n in numbers:
        xml, log = folder / f"junit-{n}.xml", folder / f"pytest-{n}.log"
        from_log = parse_pytest_log(log) if log.is_file() else None
        try:
            run = parse_junit(xml)
        except (OSError, ET.ParseError):
            if from_log is None or not (from_log.results or from_log.hung or from_log.selected is not None):
                continue  # the run never got as far as collecting (its log says why)
            run = from_log
            run.source = f"{log.name} (no readable {xml.name})"
        if from_log is not None:
            run.selected, run.hung, run.interrupted = from_log.selected, from_log.hung, from_log.interrupted
        runs.append(run)
    return runs


def merged_results(runs: Iterable[PytestRun]) -> dict[str, TestResult]:
    """One result per test id, the latest run's winning; a hung test counts as an error."""
    out: dict[str, TestResult] = {}
    for run in runs:
        for r in run.results:
            out[r.nodeid] = r
        if run.hung and run.hung not in out:
            out[run.hung] = TestResult(run.hung, run.hung.split("::")[0], "error",
                                       "hung: the per-test watchdog ended the process")
    return out


def counts_by_file(results: Iterable[TestResult]) -> dict[str, dict[str, int]]:
    """{file: {outcome: count}} over :data:`OUTCOMES`."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for r in results:
        table[r.file][r.outcome if r.outcome in OUTCOMES else "error"] += 1
    return dict(sorted(table.items()))


def done_nodeids(folder: Path) -> list[str]:
    """Test ids that the runs under ``folder`` reported or hung in (what a resumed run skips;
    collection errors, which name a file rather than a test, are left to be collected again)."""
    return sorted(nodeid for nodeid in merged_results(read_pytest_runs(folder)) if "::" in nodeid)


def read_bench(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The bench JSON under ``folder`` (GPU preferred) and its name, or None and why not."""
    for stem in ("throughput-gpu", "throughput-cpu"):
        path = folder / f"{stem}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text()), path.name
            except (OSError, ValueError) as error:
                return None, f"{path.name} unreadable ({error})"
    return None, f"no throughput-gpu.json or throughput-cpu.json in {folder.name}/"


# --------------------------------------------------------------------------- summary


def _cell(value: Any) -> str:
    return str(value).replace("|", "/").replace("\n", " ")[:160]


def steps_section(steps: Sequence[Step]) -> list[str]:
    lines = ["## Steps", ""]
    if not steps:
        return lines + ["No steps.tsv: the check stopped before its first step ended."]
    lines += ["| step | status | rc | seconds | budget (s) |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {s.name} | {s.status.replace('_', ' ')} | {s.rc} | {s.seconds} | {s.budget} |" for s in steps]
    bad = [s for s in steps if s.status in ("failed", "timed_out")]
    if bad:
        lines += ["", "Did not finish cleanly: " + ", ".join(f"{s.name} ({s.status.replace('_', ' ')}, "
                                                            f"log `{s.name}.log`)" for s in bad) + "."]
    return lines


def pytest_section(runs: Sequence[PytestRun]) -> list[str]:
    lines = ["## pytest", ""]
    if not runs:
        return lines + ["No pytest results: no readable `junit-N.xml`, and no `pytest-N.log` that got as far "
                        "as collecting (see the pytest steps' logs)."]
    results = merged_results(runs)
    table = counts_by_file(results.values())
    total = dict.fromkeys(OUTCOMES, 0)
    lines += ["| file | passed | failed | errors | skipped |", "| --- | ---: | ---: | ---: | ---: |"]
    for file, c in table.items():
        lines.append(f"| {file} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |")
        for k in OUTCOMES:
            total[k] += c[k]
    lines.append(f"| **total** | {total['passed']} | {total['failed']} | {total['error']} | {total['skipped']} |")
    notes = []
    selected = runs[0].selected
    if selected is not None:
        ran = sum("::" in nodeid for nodeid in results)
        notes.append(f"{ran} of {selected} selected tests reported")
    for run in runs:
        if run.hung:
            notes.append(f"`{run.hung}` hung in {run.source} (watchdog ended the process)")
        if run.interrupted:
            notes.append(f"{run.source} was interrupted (step time limit)")
    notes.append("read from " + ", ".join(r.source for r in runs))
    lines += ["", "; ".join(notes) + "."]
    bad = [r for r in results.values() if r.outcome in ("failed", "error")]
    if bad:
        lines += ["", f"Failures and errors ({len(bad)}, first 15):", ""]
        lines += [f"- `{r.nodeid}`: {_cell(r.message.splitlines()[0] if r.message else '')}" for r in bad[:15]]
    return lines


def _ratio_status(value: float | None, bar: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value >= bar else "missed"


def bench_section(bench: dict[str, Any] | None, source: str) -> list[str]:
    lines = ["## Bench", ""]
    if bench is None:
        return lines + [f"No bench figures: {source}."]
    modes = bench.get("modes", {})
    labels = mode_labels()
    partial = " (partial: the run stopped before its last mode)" if bench.get("partial") else ""
    lines += [f"From `bench/{source}`{partial}: device {bench.get('device', '?')}, CPU {bench.get('cpu', {}).get('model', '?')} "
              f"({bench.get('cpu', {}).get('cores', '?')} cores), output {bench.get('output_size', '?')}², "
              f"{bench.get('dataset', {}).get('images', '?')} images.", "",
              "| mode | images/s | batch | notes |", "| --- | ---: | ---: | --- |"]
    for mode, r in modes.items():
        if not isinstance(r, dict) or mode in ("kernels", "masks"):
            continue
        notes = [f"{k}={r[k]}" for k in ("threads", "workers", "device_memory_gib") if k in r]
        if "error" in r:
            notes.insert(0, "error: " + str(r["error"]))
        if "skipped" in r:
            notes.insert(0, "skipped: " + str(r["skipped"]))
        lines.append(f"| {labels.get(mode, mode)} | {r.get('images_per_s', '—')} | {r.get('batch_size', '—')} | {_cell('; '.join(notes))} |")
    for mode, r in modes.items():
        if isinstance(r, dict) and isinstance(r.get("rows"), list):  # peer comparisons
            lines += ["", f"{mode}:", "", "| row | ms / batch | images/s | peak device memory (GiB) | notes |",
                      "| --- | ---: | ---: | ---: | --- |"]
            lines += [f"| {_cell(row.get('name'))} | {row.get('ms', '—')} | {row.get('images_per_s', '—')} | "
                      f"{row.get('device_memory_gib', '—')} | {_cell(row.get('skipped') or row.get('error') or row.get('note', ''))} |"
                      for row in r["rows"]]
    kernels = modes.get("kernels", {})
    if isinstance(kernels, dict) and "milliseconds" in kernels:
        lines += ["", "| kernel | ms |", "| --- | ---: |"]
        lines += [f"| {name} | {ms} |" for name, ms in kernels["milliseconds"].items()]
        lines.append(f"| D2D copy bandwidth | {kernels.get('copy_bandwidth_gb_s')} GB/s |")
    missing = [m for m, r in modes.items() if isinstance(r, dict) and "error" in r]
    if missing:
        lines += ["", "Modes that failed: " + ", ".join(missing) + "."]
    return lines


def targets_section(bench: dict[str, Any] | None) -> list[str]:
    modes = (bench or {}).get("modes", {})
    ratios = dict((bench or {}).get("ratios", {}))
    kernels = modes.get("kernels", {})
    if isinstance(kernels, dict) and "composite_occlusion_fraction_of_copy" in kernels:
        ratios["composite_occlusion_fraction_of_copy"] = kernels["composite_occlusion_fraction_of_copy"]
    lines = ["## Targets (measured, never asserted)", "", "| target | measured | status |", "| --- | ---: | --- |"]
    for label, key, bar in TARGETS:
        value = ratios.get(key)
        lines.append(f"| {label} | {'—' if value is None else value} | {_ratio_status(value, bar)} |")
    memory = modes.get("pipeline_gpu", {}).get("device_memory_gib") if isinstance(modes.get("pipeline_gpu"), dict) else None
    batch = modes.get("pipeline_gpu", {}).get("batch_size") if memory is not None else None
    lines.append(f"| GPU memory of (b) | {'—' if memory is None else f'{memory} GiB at batch {batch}'} | "
                 f"{'measured' if memory is not None else 'not measured'} |")
    return lines


def summary(out: Path) -> str:
    """The Markdown of ``out/summary.md``."""
    steps = read_steps(out / "steps.tsv")
    versions = read_versions(out / "versions.txt")
    mode = versions.get("mode", "?")
    head = [f"# decal GPU check — {versions.get('device', 'device unknown')} — {versions.get('date', '?')}", "",
            f"Mode: {mode}; commit {versions.get('commit', '?')}; total {versions.get('total_budget_s', '?')} s budget.  ",
            "Versions: " + (", ".join(f"{k} {versions[k]}" for k in ("python", "dali", "cupy", "torch", "driver", "cuda_devices")
                                      if k in versions) or "no versions.txt") + ".", ""]
    if mode == "cpu":
        head += ["CPU mode: no GPU step ran; these figures only exercise the plumbing.", ""]
    bench, source = read_bench(out / "bench")
    body = (steps_section(steps) + [""] + pytest_section(read_pytest_runs(out)) + [""]
            + bench_section(bench, source) + [""] + targets_section(bench))
    return "\n".join(head + body) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_summary", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the check's output folder")
    p.add_argument("--done-nodeids", action="store_true", help="print the test ids already reported or hung")
    args = p.parse_args(argv)
    if args.done_nodeids:
        print("\n".join(done_nodeids(args.out)))
        return 0
    if not args.out.is_dir():
        print(f"gpu_summary: {args.out} is not a folder; pass the check's output folder", file=sys.stderr)
        return 2
    (args.out / "summary.md").write_text(summary(args.out))
    print(f"gpu_summary: wrote {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
