"""Shared pytest setup.

* Tests marked ``gpu`` are skipped unless CuPy can use a CUDA device.
* Fixtures of the kernel parity tests: ``poison`` (uninitialised CuPy outputs filled with a
  pattern) and ``rng`` (fresh entropy each run, its seed printed).
* ``--per-test-timeout S``: a time limit for each test (setup, call and teardown together),
  for machines without pytest-timeout (the GPU machine; ``bench/gpu_check.sh`` passes it).
  After S seconds a ``SIGALRM`` fails the test with a message naming the limit and the run goes
  on; if the test does not return to Python (a hung CUDA kernel, a blocked C call), a
  :mod:`faulthandler` watchdog dumps every thread's traceback and ends the process
  (exit 1) ``hard_timeout_grace(S)`` seconds later, so the run as a whole stops by itself.
  With the option, SIGTERM ends the run as Ctrl-C does (the JUnit XML is still written).
* ``server``: a module's running decal server over its ``synth`` dataset (the module defines
  the ``synth`` fixture).
"""

from __future__ import annotations

import faulthandler
import gc
import functools
import os
import signal
import sys
from typing import Iterator

import numpy as np
import pytest


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one usable CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, driver too old, no device ...
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--per-test-timeout", type=float, default=0.0, metavar="S",
        help="fail a test that runs longer than S seconds (setup + call + teardown); end the "
             "process if it does not return to Python within a grace period (0: no limit)",
    )


#: A copy of the real stderr's descriptor for the watchdog (pytest captures fd 2 during tests).
_WATCHDOG_FD = pytest.StashKey[int]()


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("per_test_timeout"):
        config.stash[_WATCHDOG_FD] = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
        # A time-limited run (``timeout`` sends SIGTERM) ends like Ctrl-C: pytest stops and
        # still writes its JUnit XML and summary for the tests that ran.
        signal.signal(signal.SIGTERM, _terminate)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _WATCHDOG_FD in config.stash:
        os.close(config.stash[_WATCHDOG_FD])
        del config.stash[_WATCHDOG_FD]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a usable CUDA device (cupy getDeviceCount() > 0)")
    for item in gpu_items:
        item.add_marker(skip)


class PerTestTimeout(BaseException):
    """Raised in the main thread when a test overruns ``--per-test-timeout``. A
    BaseException, so an ``except Exception`` in the code under test does not swallow it."""


def hard_timeout_grace(limit: float) -> float:
    """Seconds past ``limit`` before the watchdog ends the process: a quarter of the limit, at
    least 10 (a test still in a C call that long after the alarm is not coming back)."""
    return max(10.0, limit / 4)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = float(item.config.getoption("per_test_timeout") or 0.0)
    if limit <= 0 or _WATCHDOG_FD not in item.config.stash:
        yield
        return

    def overrun(signum: int, frame: object) -> None:
        raise PerTestTimeout(f"{item.nodeid} exceeded --per-test-timeout={limit:g} s")

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(limit + hard_timeout_grace(limit), exit=True,
                                     file=item.config.stash[_WATCHDOG_FD])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill every CuPy output the kernels allocate with 0xAB bytes (``DECAL_POISON=1``), so a
    kernel that leaves an element unwritten fails its parity test."""
    monkeypatch.setenv("DECAL_POISON", "1")


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for the test (after one collection): what a test sees
    released was released by the code under test, not found by a collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator with fresh entropy each run, its seed printed (shown when a test fails)."""
    seq = np.random.SeedSequence()
    print(f"seed entropy: np.random.SeedSequence({seq.entropy})")  # shown on failure
    return np.random.default_rng(seq)


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Loaders cache compiled dataset indices (``CocoDataset.open``): keep the tests' in a
    temporary directory, not in the user's cache."""
    before = os.environ.get("DECAL_INDEX_DIR")
    os.environ["DECAL_INDEX_DIR"] = str(tmp_path_factory.mktemp("coco_index"))
    yield
    if before is None:
        os.environ.pop("DECAL_INDEX_DIR", None)
    else:
        os.environ["DECAL_INDEX_DIR"] = before


@pytest.fixture(scope="module")
def server(synth: tuple) -> Iterator[object]:
    """A running server (:func:`server_helpers.running_server`) that serves the requesting
    module's ``synth`` fixture as the dataset ``synth``."""
    from server_helpers import make_config, running_server

    with running_server(make_config({"synth": synth})) as s:
        yield s
