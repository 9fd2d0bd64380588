"""pytest fixtures for integration tests on fresh systemd-nspawn machines (see machine.py).

Options:
    --os debian-12            OS to test on; repeat it or give a comma list; "all" means every supported OS.

Fixtures:
    os_name        the OS under test (tests using it, directly or through the fixtures below, are parametrized
                   over every --os given; session-scoped, so broader fixtures may depend on it)
    boot_machine   factory: boot_machine(**kw) -> Machine (kw as Machine.boot; os_name defaults to the one under
                   test); every machine it boots is destroyed after the test
    machine        a fresh booted machine of the OS under test, destroyed after the test

Root is required: without it every integration test FAILS (never skips) with a clear message.

Parallel runs (pytest-xdist, ``-n 4 --dist loadgroup`` as test.sh does): every machine has its own network, so
workers never wait on each other. Tests that share a module-scoped machine form one xdist group (one worker
runs them in order; xdist starts the groups with the most tests first); other tests go to any free worker.
"""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine as machine_lib  # noqa: E402
from machine import OSES, Machine  # noqa: E402

DEFAULT_OS = "debian-12"


def pytest_addoption(parser):
    parser.addoption(
        "--os", action="append", default=None, metavar="OS",
        help=f"OS for integration tests: {', '.join(OSES)} or all; repeat or comma-separate (default {DEFAULT_OS})",
    )


def selected_oses(config):
    values = config.getoption("--os") or [DEFAULT_OS]
    oses = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            names = list(OSES) if name == "all" else [name]
            for n in names:
                if n not in OSES:
                    raise pytest.UsageError(f"--os {n}: unknown OS; choose from {', '.join(OSES)} or all")
                if n not in oses:
                    oses.append(n)
    return oses


def pytest_configure(config):
    # In every pytest process (the xdist controller and each worker): Ctrl-C, SIGTERM and SIGHUP end the run
    # like Ctrl-C, which tears fixtures (and so machines) down. A process started in the background by a
    # script inherits SIGINT ignored; this undoes that. Repeats are ignored so that teardown can finish.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def _interrupt(signum, _frame):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _tearing_down)
    raise KeyboardInterrupt(f"signal {signum}")


def _tearing_down(signum, _frame):
    print(f"signal {signum}: already tearing down test machines; kill -9 to abandon them (`machine.py gc` cleans up)",
          file=sys.stderr, flush=True)


def _shared_machine_group(item):
    """The xdist group of a test that uses a fixture broader than one test (a module's machine), else None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # pytest internals changed: keep each module together, always correct
        return item.module.__name__
    if not any(defs and defs[-1].scope in ("class", "module", "package") for defs in info.name2fixturedefs.values()):
        return None
    os_param = getattr(getattr(item, "callspec", None), "params", {}).get("os_name", "")
    # no "]" in a group name: xdist would take the "@group" suffix for part of a parameter id and ignore it
    return f"{item.module.__name__}-{os_param}"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests sharing a machine form one group for `--dist loadgroup` (xdist then starts the largest groups first)."""
    for item in items:
        group = _shared_machine_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_generate_tests(metafunc):
    if "os_name" in metafunc.fixturenames:
        oses = selected_oses(metafunc.config)
        metafunc.parametrize("os_name", oses, ids=oses, scope="session")


NOT_ROOT = "integration tests boot systemd-nspawn machines and need root: run `sudo ./test.sh`"


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    """Never skip for lack of root: every integration test fails with this message instead."""
    if os.geteuid() != 0:
        pytest.fail(NOT_ROOT, pytrace=False)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        # Every machine this process has running (the test's own and module-scoped ones): what the guest saw.
        for m in list(machine_lib._live.values()):
            rep.sections.append((f"machine {m.name} ({m.os_name}, {m.address}): network, failed units, journal",
                                 m.diagnostics()))


@pytest.fixture(scope="session", autouse=True)
def _collect_garbage(_require_root):
    """Machines and networks left by a test run that was killed with SIGKILL (other runs' live machines are
    left alone: each machine has its own network, so any number of runs share this host)."""
    machine_lib.destroy_orphans()


@pytest.fixture
def boot_machine(os_name):
    """Factory fixture: boot_machine(os_name=..., memory_max=..., name=...) -> Machine."""
    machines = []

    def boot(**kw):
        kw.setdefault("os_name", os_name)
        m = Machine.boot(**kw)
        machines.append(m)
        return m

    yield boot

    errors = []
    for m in machines:
        try:
            m.destroy()
        except Exception as e:  # noqa: BLE001 - report every teardown problem, after trying all
            errors.append(f"{m.name}: {e}")
    if errors:
        pytest.fail("machine teardown left something behind: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def machine(boot_machine):
    """A fresh machine of the OS under test (booted per test, destroyed after)."""
    return boot_machine()
