"""A build's bytecode, compiled after the switch (tljh/environments/bytecode.py): on a tree of generated modules
with this interpreter, run as the builder runs it (``python -I bytecode.py PREFIX BUILD``). With real builds:
test_environments_builder.py."""

import dataclasses
import importlib.util
import marshal
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from environments_testing import fake_build, prefix, small, uv_cache  # noqa: F401

from tljh.environments import builder as builder_module
from tljh.environments import bytecode, store
from tljh.system import paths, pythons, sandbox

TAG = sys.implementation.cache_tag  # cpython-311


def site_of(prefix):
    return os.path.join(prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")


def make_tree(prefix, modules=3, package="pkg"):
    """``modules`` small modules in a package of the build's site-packages, as uv leaves them (no bytecode)."""
    directory = os.path.join(site_of(prefix), package)
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, "__init__.py"), "w").close()
    for i in range(modules):
        with open(os.path.join(directory, f"m{i}.py"), "w") as f:
            f.write(f"VALUE = {i}\n" + "".join(f"def f{j}(x):\n    return x * {j}\n" for j in range(40)))
    return directory


def pyc_of(source):
    return importlib.util.cache_from_source(source)


def valid_pyc(source):
    """The .pyc of ``source`` exists, is whole, and is the one Python would use (its header matches)."""
    with open(pyc_of(source), "rb") as f:
        data = f.read()
    st = os.stat(source)
    header_ok = data[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(data[8:12], "little") == int(st.st_mtime)
    marshal.loads(data[16:])  # raises on a truncated file
    return header_ok


def run_script(prefix, build):
    return subprocess.run([sys.executable, *bytecode.command(prefix, build)[1:]], capture_output=True, text=True)


def test_a_compile_writes_every_pyc_then_marks_the_build(tmp_path):
    prefix = str(tmp_path / "data")
    package = make_tree(prefix)
    assert not bytecode.compiled(prefix, "b1")
    result = run_script(prefix, "b1")
    assert result.returncode == 0, result.stderr
    for name in ("__init__.py", "m0.py", "m2.py"):
        assert valid_pyc(os.path.join(package, name))
    assert bytecode.compiled(prefix, "b1") and not bytecode.compiled(prefix, "b2")
    assert os.stat(os.path.join(prefix, bytecode.MARKER)).st_mode & 0o777 == 0o644


def test_the_compile_runs_no_code_of_the_packages(tmp_path):
    """A package's .pth file with an import line runs at every start of the environment's Python, but not
    in the compile (it runs as the builder, but a compile of a build should not depend on its packages)."""
    prefix = str(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", prefix], check=True)
    make_tree(prefix)
    ran = tmp_path / "pth-ran"
    with open(os.path.join(site_of(prefix), "evil.pth"), "w") as f:
        f.write(f"import os; open({str(ran)!r}, 'w')\n")
    result = subprocess.run(bytecode.command(prefix, "b1"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert bytecode.compiled(prefix, "b1") and not ran.exists()
    subprocess.run([os.path.join(prefix, "bin", "python"), "-c", "pass"], check=True)
    assert ran.exists()  # the probe works: a plain start of that Python runs the .pth line


def test_only_what_is_missing_is_compiled_and_a_copy_keeps_its_own_marker(tmp_path):
    """The next build is a hard-linked copy: its .pyc files of unchanged packages are the same files, and
    compiling the copy never writes into the build it was copied from (pyc and marker are replaced, not
    rewritten)."""
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    package = make_tree(old)
    bytecode.compile_build(old, "b1")
    before = os.stat(pyc_of(os.path.join(package, "m0.py"))).st_ino
    subprocess.run(["cp", "-al", old, new], check=True)
    assert not bytecode.compiled(new, "b2")  # the copy carries b1's marker
    added = make_tree(new, package="added")
    bytecode.compile_build(new, "b2")
    assert bytecode.compiled(new, "b2") and bytecode.compiled(old, "b1")
    assert os.stat(pyc_of(os.path.join(new, os.path.relpath(package, old), "m0.py"))).st_ino == before
    assert valid_pyc(os.path.join(added, "m1.py"))
    assert not os.path.exists(os.path.join(site_of(old), "added"))


def test_what_a_killed_compile_leaves_is_tidied_and_completed(tmp_path):
    prefix = str(tmp_path / "data")
    package = make_tree(prefix)
    cache = os.path.join(package, "__pycache__")
    os.makedirs(cache)
    temporary = os.path.join(cache, f"m1.{TAG}.pyc.140233")  # importlib's name for a .pyc being written
    with open(temporary, "wb") as f:
        f.write(importlib.util.MAGIC_NUMBER)  # cut short
    bytecode.compile_build(prefix, "b1")
    assert not os.path.exists(temporary)
    assert valid_pyc(os.path.join(package, "m1.py")) and bytecode.compiled(prefix, "b1")


def test_killing_a_compile_midway_leaves_a_tree_that_imports_and_a_rerun_finishes(tmp_path):
    """SIGKILL while it writes: every .pyc present is whole, the package imports, no marker; the rerun
    completes it."""
    prefix = str(tmp_path / "data")
    package = make_tree(prefix, modules=1500)
    # Its own process group: compileall's worker processes are killed with it.
    proc = subprocess.Popen([sys.executable, *bytecode.command(prefix, "b1")[1:]], start_new_session=True)
    cache = os.path.join(package, "__pycache__")
    deadline = time.monotonic() + 60
    while not (os.path.isdir(cache) and os.listdir(cache)) and proc.poll() is None:
        assert time.monotonic() < deadline, "the compile wrote nothing"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = [n for n in os.listdir(cache) if n.endswith(".pyc")]
    for name in written:
        assert valid_pyc(os.path.join(package, name.split(".")[0] + ".py"))
    if len(written) < 1501:  # killed before the end, as intended
        assert not bytecode.compiled(prefix, "b1")
    check = subprocess.run([sys.executable, "-c", "import pkg.m1499, pkg.m3; print(pkg.m3.VALUE)"],
                           cwd=site_of(prefix), capture_output=True, text=True)
    assert check.stdout.strip() == "3", check.stderr
    assert run_script(prefix, "b1").returncode == 0
    assert bytecode.compiled(prefix, "b1")
    assert all(valid_pyc(os.path.join(package, f"m{i}.py")) for i in range(1500))
    shutil.rmtree(prefix)


# ---- the builder's side: when it compiles, and which sandboxed commands it stops (recorded, no uv)


class RecordedSandbox:
    """Stands in for tljh.system.sandbox.Sandbox: records what the builder asks of it."""

    def __init__(self, log, unit, writable, readable=(), env=None, properties=None):
        self.log, self.unit, self.writable, self.properties = log, unit, list(writable), dict(properties or {})
        self.busy = False

    def run(self, argv, on_line=None, cwd="/"):
        self.log.append(("run", self.unit, list(argv)))
        from tljh.system.sandbox import Result

        return Result(0)

    def start(self, argv, cwd="/"):
        self.log.append(("start", self.unit, list(argv)))
        return True

    def running(self):
        return self.log_running

    def stop(self):
        self.log.append(("stop", [self.unit]))


@pytest.fixture
def recorded(prefix, monkeypatch):
    """(builder, log): a Builder whose sandboxes record; ``log_running`` says whether a compile runs."""
    log = []
    state = {"running": False}

    def make(unit, writable, readable=(), env=None, properties=None):
        box = RecordedSandbox(log, unit, writable, readable, env, properties)
        box.log_running = state["running"]
        return box

    monkeypatch.setattr(sandbox, "stop", lambda units: log.append(("stop", list(units))))
    lines = []
    b = builder_module.Builder(out=lines.append, make_sandbox=make)
    b.lines, b.state = lines, state
    return b, log


def served(spec, build_id="b1", compiled=True):
    """A current build of ``spec`` that is up to date (its fingerprint, a Python that runs)."""
    path = fake_build(spec.prefix, spec.name, build_id, fingerprint=spec.fingerprint(pythons.system_version()))
    os.symlink(pythons.SYSTEM_PYTHON, os.path.join(path, "bin", "python"))
    if compiled:
        with open(os.path.join(path, bytecode.MARKER), "w") as f:
            f.write(build_id + "\n")
    return path


CONFIG = {"environments": {"data": {"packages": ["idna"]}}}


def test_no_change_with_its_bytecode_compiled_stops_and_starts_nothing(recorded):
    builder, log = recorded
    spec = small(CONFIG, "data")
    served(spec)
    assert builder.build(spec).state == "up to date"
    assert log == [] and builder.lines == []


def test_no_change_with_its_bytecode_missing_starts_the_compile_once(recorded):
    builder, log = recorded
    spec = small(CONFIG, "data")
    served(spec, compiled=False)  # its compile was killed, or never ran
    assert builder.build(spec).state == "up to date"
    prefix = paths.environment_prefix("data")
    assert log == [("start", "tljh-env-bytecode-data", bytecode.command(prefix, "b1"))]
    assert "compiling bytecode in the background" in builder.lines[0]
    # While that compile runs, another `tljh env build` leaves it be.
    log.clear(), builder.lines.clear()
    builder.state["running"] = True
    assert builder.build(spec).state == "up to date"
    assert log == [] and builder.lines == ["data: its bytecode is still being compiled in the background"]


def test_the_compile_runs_at_low_priority_writing_only_the_served_build(recorded):
    builder, _ = recorded
    box = builder._bytecode_sandbox(small(CONFIG, "data"))
    assert box.writable == [paths.environment_prefix("data")]
    assert box.properties == {"Nice": "10", "CPUSchedulingPolicy": "batch", "IOSchedulingClass": "best-effort",
                              "IOSchedulingPriority": "7"}


def test_a_build_stops_the_environments_sandboxed_commands_once_then_compiles_the_new_build(recorded, monkeypatch):
    builder, log = recorded
    spec = small(CONFIG, "data", packages=("idna", "packaging"))
    served(small(CONFIG, "data"))

    def build(self, spec, *args):
        served_build = served(dataclasses.replace(spec, name="data-new"), "b2", compiled=False)
        os.rename(served_build, store.staging_path("data"))
        store.switch_in("data")
        return builder_module.Outcome("data", "built", "b2")

    monkeypatch.setattr(builder_module.Builder, "_build", build)
    assert builder.build(spec).state == "built"
    units = ["tljh-env-fetch-data", "tljh-env-build-data", "tljh-env-postbuild-data", "tljh-env-bytecode-data"]
    prefix = paths.environment_prefix("data")
    assert log == [
        ("stop", units),
        ("start", "tljh-env-bytecode-data", bytecode.command(prefix, "b2")),
    ]
    assert builder.lines[0].startswith("data: build b2 is current")


def test_an_interrupted_build_stops_them_on_its_way_out(recorded, monkeypatch):
    builder, log = recorded
    served(small(CONFIG, "data"))

    def build(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder_module.Builder, "_build", build)
    with pytest.raises(KeyboardInterrupt):
        builder.build(small(CONFIG, "data", packages=("six",)))
    assert [entry[0] for entry in log] == ["stop", "stop"]  # before building, and on the way out


def test_the_installer_waits_for_the_compile(recorded):
    builder, log = recorded
    builder.wait_for_bytecode = True
    spec = small(CONFIG, "data")
    served(spec, compiled=False)
    builder.build(spec)
    assert [entry[:2] for entry in log] == [("stop", ["tljh-env-bytecode-data"]), ("run", "tljh-env-bytecode-data")]
    assert builder.lines == ["data: compiling bytecode"]
