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
"""

import os
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
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def host_lock():
    """Held for the whole session once a test needs a machine: one integration run at a time on this host,
    because machines share the host's network (ports 80, 443, ...). TLJH_TEST_NO_HOST_LOCK=1 skips it."""
    if os.geteuid() != 0:
        pytest.fail(NOT_ROOT, pytrace=False)
    with machine_lib.host_lock(f"pytest {' '.join(sys.argv[1:])[:100]}"):
        machine_lib.destroy_orphans()  # left by a test run that was killed with SIGKILL
        yield


@pytest.fixture
def boot_machine(request, os_name, host_lock):
    """Factory fixture: boot_machine(os_name=..., memory_max=..., name=...) -> Machine."""
    machines = []

    def boot(**kw):
        kw.setdefault("os_name", os_name)
        m = Machine.boot(**kw)
        machines.append(m)
        return m

    yield boot

    failed = getattr(request.node, "rep_call", None)
    failed = failed is not None and failed.failed
    errors = []
    for m in machines:
        if failed:
            _dump_diagnostics(m)
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


def _dump_diagnostics(m):
    """On failure, show the guest's recent journal and failed units (appears in pytest's captured output)."""
    try:
        r = m.run("systemctl --no-pager --failed; journalctl -b --no-pager -n 150", check=False, timeout=30)
        print(f"==== {m.name} ({m.os_name}): failed units and journal tail ====\n{r.stdout}{r.stderr}")
    except Exception as e:  # noqa: BLE001 - the machine may be gone
        print(f"==== {m.name}: could not collect diagnostics: {e}")
