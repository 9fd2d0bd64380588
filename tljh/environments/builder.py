"""Building an environment: resolve its spec to a lock, install the lock into a copy of the current build,
switch the finished build in. The previous build serves until the switch; a failed or killed build leaves it
serving, and the next run redoes what is missing.

uv runs as the unprivileged builder user in a sandbox (tljh.system.sandbox); root only installs OS packages,
writes the build's record and renames directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata

from ..system import apt, env_contents, files, paths, pythons, sandbox, venvs
from . import budget, bytecode, repository, store
from .limits import BuildLimits, configured as configured_limits
from .spec import EnvironmentSpec, R_PACKAGES, hub_version
from .units import UNIT_KINDS, stop_units, unit  # noqa: F401 (UNIT_KINDS: part of the builder's interface)

KERNELS_SUBDIR = os.path.join("share", "tljh")  # <prefix>/share/tljh/kernels/<name>/kernel.json
# A repository's `start`, in the build: servers of the environment run their command through it.
START_SCRIPT = os.path.join("bin", "tljh-repository-start")
_INCLUDE = re.compile(r"^\s*(-r|--requirement|-c|--constraint)[\s=]+(\S+)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
_PIN_URL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s+@\s")


class BuildError(Exception):
    """The build failed; the message says why (uv's or apt's own words) and what still serves."""


@dataclass
class Outcome:
    name: str
    state: str  # "up to date", "built", "failed"
    message: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def pins(lock_text: str) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines of a requirements file."""
    found = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[venvs.canonical(match.group(1))] = match.group(2)
    return found


def locked_names(lock_text: str) -> set[str]:
    """Canonical names a lock installs: its pins and its ``name @ url`` lines (a repository's own package)."""
    urls = (_PIN_URL.match(line.strip()) for line in lock_text.splitlines())
    return set(pins(lock_text)) | {venvs.canonical(m.group(1)) for m in urls if m}


def python_for(spec: EnvironmentSpec) -> tuple[str, str, str | None]:
    """(interpreter, its X.Y version, apt package to install first or None). Raises PythonNotAvailable."""
    interpreter, package = pythons.interpreter(spec.python)
    return interpreter, spec.python or pythons.version_of(interpreter) or "", package


def state_of(spec: EnvironmentSpec) -> tuple[str, store.Build | None]:
    """("up to date" | "needs a build" | "not built", current build) — cheap: no subprocess, no network."""
    current = store.current(spec.name)
    if current is None:
        legacy = os.path.exists(os.path.join(spec.prefix, "pyvenv.cfg"))
        return ("needs a build" if legacy else "not built"), None
    if spec.repository and spec.commit is None:
        # What the repository asks for is known only after a fetch (tljh env build): compare the config entry.
        built_from = (current.record.get("spec") or {}).get("repository") or {}
        same = built_from.get("declared_fingerprint") == spec.fingerprint("")
        return ("up to date" if same and current.works() else "needs a build"), current
    try:
        _, version, _ = python_for(spec) if spec.python else (None, pythons.system_version(), None)
    except pythons.PythonNotAvailable:
        return "needs a build", current
    if current.fingerprint == spec.fingerprint(version) and current.works():
        return "up to date", current
    return "needs a build", current


def by_hand(build_path: str, lock_text: str) -> dict[str, str]:
    """Packages installed into a build after it was built (``sudo -E pip install``), as {name: requirement}:
    those the lock does not hold and no other installed package needs (what an admin asked for; what they
    pulled in follows). Requirements are plain names (the installed version is a preference), or
    ``name @ url`` for a package installed from a path or repository that still exists."""
    locked = locked_names(lock_text)
    installed = venvs.requirements_of(build_path)
    needed = set()
    for dist in venvs.distributions(build_path):
        for requirement in dist.requires or []:
            needed.add(venvs.canonical(re.split(r"[\s;\[<>=!~(@]", requirement.strip(), 1)[0]))
    carried = {}
    for name, requirement in installed.items():
        if name in locked or name in needed or name in venvs.EXCLUDED:
            continue
        carried[name] = requirement if " @ " in requirement else requirement.split("==", 1)[0]
    return carried


class Builder:
    """Builds environments; prints progress through ``out``. A build is reported done once it serves; its
    bytecode is compiled after that, in the background, unless ``wait_for_bytecode`` (the installer: the
    first servers after an install start from compiled packages, as before)."""

    def __init__(self, out=print, make_sandbox=sandbox.sandbox, wait_for_bytecode=False,
                 limits: BuildLimits | None = None, declared=None):
        """``limits``: config.yaml's ``builds`` section (read from config.yaml if not given); ``declared``:
        the environments config.yaml declares, whose current builds the disk budget never removes (likewise)."""
        self.out = out
        self.make_sandbox = make_sandbox
        self.wait_for_bytecode = wait_for_bytecode
        self.limits = limits if limits is not None else configured_limits()
        self.declared = declared
        # The limits of the sandboxed commands of the build under way (they share its time limit).
        self._limits = self.limits.for_one_build()

    # -- public --------------------------------------------------------------------------------

    def build(self, spec: EnvironmentSpec, *, force=False, from_lock: str | None = None) -> Outcome:
        started = time.monotonic()
        self._limits = self.limits.for_one_build()
        if not spec.repository:
            with store.environments_lock():
                try:
                    return self._build_if_needed(spec, force, from_lock, started)
                except KeyboardInterrupt:  # SIGINT, or SIGTERM through commands.main: stop the sandboxed uv too
                    stop_units(spec.name)
                    raise
        if from_lock:
            return self._failed(spec, f"{spec.name} comes from a repository: --from-lock does not apply", started)
        if spec.name == "default":
            return self._failed(spec, "the default environment (/opt/tljh/user) cannot come from a repository", started)
        with store.environments_lock():
            store.prepare_directories()
            try:
                if not repository.archive_path(spec):
                    repository.ensure_git(out=self.out)
                spec = repository.fetch(spec, self._fetch_sandbox(spec), out=self.out)
                for item in spec.unsupported:  # allow_unsupported is true, or fetch would have refused
                    self.out(f"warning: {spec.name}: not built from the repository: {item}")
                return self._build_if_needed(spec, force, None, started)
            except (repository.RepositoryError, apt.AptError) as e:
                return self._failed(spec, str(e), started)
            except sandbox.LimitExceeded as e:  # while fetching
                return self._failed(spec, self._limit_message(spec, e), started)
            except KeyboardInterrupt:  # before the checkout is removed: git or a postBuild may be writing there
                stop_units(spec.name)
                raise
            finally:
                shutil.rmtree(repository.checkout_path(spec.name), ignore_errors=True)

    def _build_if_needed(self, spec, force, from_lock, started) -> Outcome:
        name = spec.name
        try:
            interpreter, version, python_package = python_for(spec)
        except pythons.PythonNotAvailable as e:
            return self._failed(spec, str(e), started)
        fingerprint = spec.fingerprint(version)
        store.prepare_directories()
        store.adopt_legacy(name)
        leftover = os.path.lexists(store.staging_path(name)) or os.path.lexists(store.work_path(name))
        wanted = not (force or from_lock)
        if not leftover and wanted and _serves(store.current(name), fingerprint):
            # The no-change path (every installer rerun, every `tljh env build`): no systemctl, no subprocess,
            # unless the build's bytecode is still missing.
            self._bytecode(spec)
            return Outcome(name, "up to date", seconds=time.monotonic() - started)
        # A killed run (SIGKILL skips the KeyboardInterrupt path) may have left its sandboxed uv or postBuild
        # writing in the staging directory recover() tidies, and the current build's bytecode may be compiling
        # while the build is about to be copied: stopped first, or removals and copies race with their writes.
        stop_units(name)
        note = store.recover(name, fingerprint)
        if note:
            self.out(f"{name}: {note}")
        current = store.current(name)
        if wanted and _serves(current, fingerprint):  # recover() switched in what a killed run had finished
            self._bytecode(spec)
            return Outcome(name, "up to date", seconds=time.monotonic() - started)
        try:
            try:
                outcome = self._build(spec, interpreter, version, python_package, fingerprint, current, from_lock)
            except sandbox.LimitExceeded as e:
                raise BuildError(self._limit_message(spec, e)) from None
        except (BuildError, apt.AptError) as e:
            shutil.rmtree(store.staging_path(name), ignore_errors=True)
            shutil.rmtree(store.work_path(name), ignore_errors=True)
            self._bytecode(spec)  # the build that keeps serving: its compile was stopped above
            return self._failed(spec, str(e), started)
        outcome.seconds = time.monotonic() - started
        self._clear_failure(name)
        self.out(f"{name}: build {outcome.message} is current ({outcome.seconds:.1f} s)")
        self._bytecode(spec)
        _, kept = store.collect()
        waiting = [k for k in kept if k.startswith(name + ".")]
        if waiting:
            self.out(f"{name}: {len(waiting)} earlier build(s) kept until the servers using them stop")
        declared = self._declared()
        if declared is not None:
            budget.enforce(self.limits.disk_budget, declared, keep=[name], out=self.out)
        return outcome

    def check_resolves(self, spec: EnvironmentSpec) -> None:
        """Raise BuildError (uv's reason) unless the spec's packages resolve. Changes nothing that serves."""
        interpreter, version, package = python_for(spec)
        store.prepare_directories()
        work = store.work_path(spec.name) + "-check"
        self._fresh_dir(work)
        self._limits = self.limits.for_one_build()
        box = self._sandbox(spec, unit("check", spec.name))
        try:
            # A Python still to be installed from the archive: resolve for its version with the system's.
            target = pythons.SYSTEM_PYTHON if package else interpreter
            result = self._compile(
                spec, box, target, os.path.join(work, "lock.txt"), [], {}, python_version=version if package else None
            )
        except sandbox.LimitExceeded as e:
            raise BuildError(self._limit_message(spec, e)) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if result.returncode != 0:
            raise BuildError(_resolve_message(spec.name, result))

    # -- steps ---------------------------------------------------------------------------------

    def _build(self, spec, interpreter, version, python_package, fingerprint, current, from_lock) -> Outcome:
        name = spec.name
        warnings = []
        os_packages = [p for p in spec.os_packages() if p not in R_PACKAGES]
        if python_package:
            os_packages.append(python_package)
        if os_packages:
            apt.install(os_packages, out=self.out)
        if spec.r:
            apt.install(R_PACKAGES, no_recommends=True, out=self.out)

        box = self._sandbox(spec)
        work, staging = store.work_path(name), store.staging_path(name)
        self._fresh_dir(work)
        lock_file = os.path.join(work, "lock.txt")
        # What an admin installed by hand is read from the build's files: it need not run (after an OS upgrade
        # removed its Python, it does not); it is copied only if it runs with the Python asked for now.
        carried = by_hand(current.path, current.lock()) if current else {}
        preferences = venvs.requirements_of(current.path) if current else {}
        runs = current is not None and current.works()
        source = current.path if runs and pythons.version_of(os.path.join(current.path, "bin", "python")) == version else None
        new_venv = current is not None and source is None  # another Python, or the build no longer runs
        if spec.post_build or spec.installs_itself:
            # postBuild may write files in place: in a hard-linked copy, into the serving build. The repository's
            # own package keeps its name and version from commit to commit: a copy would look up to date.
            source = None
        if current is not None and not runs:
            self.out(f"{name}: rebuilt for this system's Python, keeping {len(carried)} packages installed by hand")

        if from_lock:
            with open(from_lock) as f:
                text = f.read()
            wanted = f"jupyterhub=={hub_version()}"
            if pins(text).get("jupyterhub") != hub_version():
                raise BuildError(f"{from_lock} must pin {wanted} (the hub's version) for servers to work")
            self._write(lock_file, text)
            dropped = []
        else:
            carried, dropped = self._resolve(spec, box, interpreter, version, lock_file, carried, preferences)
            warnings += [f"{name}: dropped {r} (installed by hand earlier; it no longer resolves)" for r in dropped]
        lock_text = files.read_bytes(lock_file).decode()
        self._report_changes(name, current.lock() if current else "", lock_text)

        self._stage(box, spec, interpreter, version, source, staging)
        # No --compile-bytecode: the bytecode is compiled once the build serves (see _bytecode).
        result = box.run(
            [venvs.uv_binary(), "pip", "sync", "--python", os.path.join(staging, "bin", "python"), lock_file],
            on_line=self._uv_line,
        )
        if result.returncode != 0:
            raise BuildError(f"installing the environment {name} failed:\n{result.tail()}")
        if spec.post_build:
            self._post_build(spec, staging)

        lost = []
        if new_venv:
            # A new venv (another Python): what the old build held beyond packages comes over too, and what
            # cannot is named; the old build is then kept instead of deleted (see below).
            kernels, refused, copied = env_contents.carry_configuration(current.path, staging, served_at=spec.prefix)
            if kernels or copied:
                self.out(f"{name}: copied {len(kernels)} kernelspecs and {len(copied)} configuration files")
            lost = [*dropped, *gone_by_hand(current.path, lock_text)]
            lost += [f"kernel {k} ({why})" for k, why in refused.items()]

        build_id = store.new_build_id()
        self._write_kernelspec(staging, spec, version)
        if spec.start_text:
            if not _no_links(staging, START_SCRIPT):
                raise BuildError(f"the build has a symbolic link on the way to {START_SCRIPT}: refused")
            self._write(os.path.join(staging, START_SCRIPT), spec.start_text, mode=0o755)
        self._write(os.path.join(staging, store.LOCK_FILE), lock_text)
        record = {
            "name": name,
            "build": build_id,
            "fingerprint": fingerprint,
            "python": version,
            "hub_version": hub_version(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "spec": spec.summary(),
            "by_hand": sorted(carried.values()),
            "tljh_version": _tljh_version(),
        }
        os.chmod(staging, 0o755)
        venvs.close_lock(staging)  # uv made it 0666 as the builder: served, any user could write it
        files.write_json(os.path.join(staging, store.RECORD_FILE), record, mode=0o644)  # last: now complete
        previous = store.switch_in(name)
        shutil.rmtree(work, ignore_errors=True)
        if lost and previous:
            kept = venvs.kept_path(spec.prefix)
            os.rename(previous, kept)  # out of .retired: never collected
            warnings.append(f"{name}: not carried over to the new Python: {'; '.join(lost)}. The previous build is "
                            f"kept at {kept}: install them again by hand, then delete it.")
        for w in warnings:
            self.out("warning: " + w)
        return Outcome(name, "built", build_id, warnings=warnings)

    def _resolve(self, spec, box, interpreter, version, lock_file, carried, preferences):
        """Write the lock for spec + carried packages; return (carried kept, carried dropped)."""
        kept = dict(carried)
        extra = f", keeping {len(kept)} installed by hand: {', '.join(sorted(kept))}" if kept else ""
        self.out(f"{spec.name}: resolving with Python {version}{extra}")
        result = self._compile(spec, box, interpreter, lock_file, list(kept.values()), preferences)
        if result.returncode == 0:
            return kept, []
        if not kept:
            raise BuildError(_resolve_message(spec.name, result))
        # The config's packages must resolve; packages installed by hand that no longer do are dropped.
        alone = self._compile(spec, box, interpreter, lock_file, [], preferences)
        if alone.returncode != 0:
            raise BuildError(_resolve_message(spec.name, alone))
        dropped = []
        for name, requirement in sorted(carried.items()):
            if self._compile(spec, box, interpreter, lock_file, [requirement], preferences).returncode != 0:
                dropped.append(requirement)
                del kept[name]
        final = self._compile(spec, box, interpreter, lock_file, list(kept.values()), preferences)
        if final.returncode != 0:
            raise BuildError(_resolve_message(spec.name, final))
        return kept, dropped

    def _compile(self, spec, box, interpreter, lock_file, carried, preferences, python_version=None):
        work = os.path.dirname(lock_file)
        requirements_in = os.path.join(work, "requirements.in")
        overrides = os.path.join(work, "overrides.txt")
        self._write(requirements_in, "".join(r + "\n" for r in [*spec.requirements(), *carried]))
        self._write(overrides, "".join(f'{n}; sys_platform == "never"\n' for n in venvs.EXCLUDED))
        # uv prefers the versions pinned in an existing output file: what is installed now moves only if needed.
        self._write(lock_file, "".join(r + "\n" for r in preferences.values() if "==" in r), writable=True)
        args = [venvs.uv_binary(), "pip", "compile", "--quiet", "--python", interpreter, "--overrides", overrides,
                "--custom-compile-command", f"tljh env build {spec.name}", "--output-file", "lock.txt",
                "requirements.in"]
        args += [os.path.basename(p) for p in self._copy_requirement_files(spec, work)]
        if python_version:
            args += ["--python-version", python_version]
        # Run in the work directory: the lock's "# via" lines then name requirements.in, not a scratch path.
        return box.run(args, cwd=work)

    def _copy_requirement_files(self, spec, work) -> list[str]:
        """Copies of the spec's requirements files in the build's work directory, their -r/-c lines pointing
        at the copies: the builder reads them there (it may not read the originals, e.g. in /root)."""
        copies = {path: os.path.join(work, f"requirements-{i}.txt") for i, (path, _) in enumerate(spec.requirements_files)}
        for path, text in spec.requirements_files:
            self._write(copies[path], rewrite_includes(path, text, copies))
        return [copies[p] for p in spec.top_requirement_files()]

    def _stage(self, box, spec, interpreter, version, source, staging):
        if os.path.lexists(staging):
            shutil.rmtree(staging)
        if source:
            self.out(f"{spec.name}: installing into a copy of the current build")
            clone(source, staging)
            _make_relocatable(staging)
        else:
            self.out(f"{spec.name}: creating a new environment with Python {version}")
            result = box.run([venvs.uv_binary(), "venv", "--quiet", "--relocatable", "--python", interpreter, staging])
            if result.returncode != 0:
                raise BuildError(f"creating the environment {spec.name} failed:\n{result.tail()}")

    def _post_build(self, spec, staging):
        """The repository's postBuild, as the builder in a sandbox that can write only the new build and the
        checkout (not the uv cache, not other builds), with the new build's programs first on PATH."""
        self.out(f"{spec.name}: running postBuild")
        os.chmod(spec.post_build, 0o755)  # repo2docker runs it whether or not git kept its executable bit
        box = self._post_build_sandbox(spec, staging)
        result = box.run([spec.post_build], on_line=lambda line: self.out("    " + line), cwd=spec.checkout)
        if result.returncode != 0:
            raise BuildError(
                f"postBuild of {spec.repository} failed (exit status {result.returncode}):\n{result.tail()}"
            )
        _no_shared_writes(staging)

    def _write_kernelspec(self, staging, spec, version):
        relative = os.path.join(KERNELS_SUBDIR, "kernels", spec.name)
        if not _no_links(staging, relative):
            # Root writes here: a link left by a postBuild could point it anywhere.
            raise BuildError(f"the build has a symbolic link on the way to {relative}: refused")
        directory = os.path.join(staging, relative)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        bin_dir = os.path.join(spec.prefix, "bin")
        kernel = {
            "argv": [os.path.join(bin_dir, "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"{spec.name} (Python {version})",
            "language": "python",
            # `!pip` and other commands in a kernel of another environment use that environment's programs.
            "env": {"PATH": bin_dir + ":${PATH}"},
            "metadata": {"debugger": True, "tljh_environment": spec.name},
        }
        self._write(os.path.join(directory, "kernel.json"), json.dumps(kernel, indent=1) + "\n", mode=0o644)
        logos = os.path.join(staging, "share", "jupyter", "kernels", "python3")
        for logo in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
            # Root copies these into a file every user can read: never through a link.
            relative = os.path.join("share", "jupyter", "kernels", "python3", logo)
            if os.path.exists(os.path.join(logos, logo)) and _no_links(staging, relative):
                shutil.copyfile(os.path.join(logos, logo), os.path.join(directory, logo))

    def _bytecode(self, spec):
        """Compile the bytecode of the build serving ``spec`` if it is not complete: in the background (unless
        wait_for_bytecode), as the builder, at a CPU and I/O priority below the servers' so they do not wait
        for it. A compile that is already running (started by an earlier command) is left to finish."""
        current = store.current(spec.name)
        if current is None or bytecode.compiled(current.path, current.build) or not current.works():
            return
        box = self._bytecode_sandbox(spec)
        command = bytecode.command(spec.prefix, current.build)
        if self.wait_for_bytecode:
            box.stop()  # one started in the background earlier: this one does the rest, and waits
            self.out(f"{spec.name}: compiling bytecode")
            result = box.run(command, on_line=lambda line: self.out("    " + line))
            if result.returncode != 0:
                # The build serves, only imports are slower: a warning, and the next build or rerun retries.
                self.out(f"warning: {spec.name}: compiling its bytecode failed (status {result.returncode})")
        elif box.running():
            self.out(f"{spec.name}: its bytecode is still being compiled in the background")
        elif box.start(command):
            self.out(f"{spec.name}: compiling bytecode in the background (first imports are slower until it "
                     f"finishes: systemctl status '{box.unit}:*')")
        else:
            self.out(f"warning: {spec.name}: could not start compiling its bytecode; `tljh env build` retries")

    # -- helpers -------------------------------------------------------------------------------

    def _bytecode_sandbox(self, spec):
        # Writes only the serving build (the stable path, as it is when the compile starts: a build switched in
        # later is not this compile's). Reads the program from wherever tljh is installed, even a home.
        # Below servers, never starved: at Nice=19 and the idle I/O class a compile on a busy test host got 3 %
        # of a core (4 CPU seconds in 2 minutes); Nice=10 still leaves servers about nine tenths of the CPU.
        low = {"Nice": "10", "CPUSchedulingPolicy": "batch", "IOSchedulingClass": "best-effort",
               "IOSchedulingPriority": "7"}
        return self.make_sandbox(unit("bytecode", spec.name), [spec.prefix], readable=[bytecode.__file__],
                                 properties=low)

    def _sandbox(self, spec, unit_name=None):
        # One writable directory for the cache and the builds: hard links do not cross mount points, and each
        # writable path is its own mount in the sandbox.
        env = {"UV_CACHE_DIR": paths.ENVIRONMENTS_UV_CACHE_DIR, "UV_SYSTEM_CERTS": "1", "UV_NO_PROGRESS": "1"}
        return self.make_sandbox(
            unit_name or unit("build", spec.name), [paths.BUILDER_DIR], env=env, limits=self._limits
        )

    def _fetch_sandbox(self, spec):
        env = repository.sandbox_env()
        return self.make_sandbox(
            unit("fetch", spec.name), [paths.BUILDER_DIR], readable=repository.readable_paths(spec), env=env,
            limits=self._limits,
        )

    def _post_build_sandbox(self, spec, staging=None):
        staging = staging or store.staging_path(spec.name)
        bin_dir = os.path.join(staging, "bin")
        env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": staging,
            "NB_PYTHON_PREFIX": staging,  # repo2docker's name for the environment a postBuild adds to
            "PIP_NO_CACHE_DIR": "1",
        }
        checkout = spec.checkout or repository.checkout_path(spec.name)
        return self.make_sandbox(unit("postbuild", spec.name), [staging, checkout], env=env, limits=self._limits)

    def _limit_message(self, spec, e: sandbox.LimitExceeded) -> str:
        """'building X timed out after N s' / 'ran out of memory (limit X)', the setting to change, and the
        last lines the stopped command printed."""
        key = "builds.time_limit" if e.kind == "time" else "builds.memory_limit"
        lines = [line for line in e.lines if line.strip()][-8:]
        tail = ("; its last output:\n" + "\n".join(lines)) if lines else ""
        return f"building {spec.name} {e} (raise {key} if it needs more){tail}"

    def _declared(self) -> list[str] | None:
        """The environments config.yaml declares; None (and the budget is not applied) if it cannot be read:
        every other build would look removable."""
        if self.declared is not None:
            return list(self.declared)
        from ..settings.config_file import ConfigFileError, load_raw
        from ..settings.environments import environment_names

        try:
            return environment_names(load_raw(paths.CONFIG_FILE) or {})
        except ConfigFileError as e:
            self.out(f"disk budget: not applied: {e}")
            return None

    def _fresh_dir(self, path):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o755)
        if os.geteuid() == 0:
            os.chown(path, *sandbox.owner_ids())

    def _write(self, path, text, mode=0o644, writable=False):
        files.write_atomic(path, text, mode=mode)
        if writable and os.geteuid() == 0:
            os.chown(path, *sandbox.owner_ids())

    def _uv_line(self, line):
        # uv's summary lines; its per-package "+ x==1" lines are summed up by _report_changes already.
        line = line.strip()
        if line and not line.startswith(("+ ", "- ", "~ ")):
            self.out("    " + line)

    def _report_changes(self, name, old, new):
        before, after = pins(old), pins(new)
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
        parts = [f"+{n} {after[n]}" for n in added] + [f"-{n}" for n in removed]
        parts += [f"{n} {before[n]} -> {after[n]}" for n in changed]
        shown = ", ".join(parts[:8]) + (f", and {len(parts) - 8} more" if len(parts) > 8 else "")
        self.out(f"{name}: {len(after)} packages" + (f"; changes: {shown}" if parts else "; no version changes"))

    def _failed(self, spec, message, started) -> Outcome:
        current = store.current(spec.name)
        serving = f"build {current.build} keeps serving" if current else "nothing was built"
        text = f"{message}\n({spec.name}: {serving})"
        os.makedirs(paths.ENVIRONMENT_STATE_DIR, mode=0o700, exist_ok=True)
        files.write_atomic(failure_file(spec.name), text + "\n")
        return Outcome(spec.name, "failed", text, time.monotonic() - started)

    def _clear_failure(self, name):
        try:
            os.unlink(failure_file(name))
        except FileNotFoundError:
            pass


def _serves(current: store.Build | None, fingerprint: str) -> bool:
    """The current build is what the spec asks for now, and it runs."""
    return current is not None and current.fingerprint == fingerprint and current.works()


def gone_by_hand(build_path: str, lock_text: str) -> list[str]:
    """Packages of a build that nothing can reinstall: installed from a path that no longer exists."""
    locked, reinstallable = locked_names(lock_text), venvs.requirements_of(build_path)
    return [f"{n}=={v} (installed from a path that no longer exists)"
            for n, v in venvs.installed_packages(build_path).items() if n not in reinstallable and n not in locked]


def _no_links(base: str, relative: str) -> bool:
    """No component of ``relative`` under ``base`` (that exists) is a symbolic link."""
    path = base
    for part in relative.split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return False
    return True


def _no_shared_writes(path: str) -> None:
    """Nothing a postBuild left in a build may be writable by group or others: users share the build."""
    for root, dirs, names in os.walk(path):
        for entry in [root, *(os.path.join(root, n) for n in names)]:
            st = os.lstat(entry)
            if not os.path.islink(entry) and st.st_mode & 0o7022:
                os.chmod(entry, st.st_mode & ~0o7022 & 0o7777)


def clone(source: str, target: str) -> None:
    """A copy of the build at ``source`` made of hard links (only what a build changes is written again),
    whose directories belong to the builder, so it can add and remove files; files keep their owner and
    are only ever replaced, never written in place (uv and pip unlink before they write)."""
    subprocess.run(["cp", "-al", source, target], check=True, capture_output=True)
    os.unlink(os.path.join(target, store.RECORD_FILE))
    uid, gid = sandbox.owner_ids()
    for root, dirs, _ in os.walk(target):
        for d in [root, *(os.path.join(root, d) for d in dirs)]:
            st = os.lstat(d)
            if (st.st_uid, st.st_gid) != (uid, gid) and not os.path.islink(d):
                os.chown(d, uid, gid)


def rewrite_includes(path: str, text: str, copies: dict[str, str]) -> str:
    """``text`` of the requirements file ``path`` with each -r/-c target replaced by its copy."""
    out = []
    for line in text.splitlines():
        match = _INCLUDE.match(line)
        if match:
            target = os.path.abspath(os.path.join(os.path.dirname(path), match.group(2)))
            # Copies sit side by side; uv reads an include relative to the including file.
            line = f"{match.group(1)} {os.path.basename(copies[target]) if target in copies else target}"
        out.append(line)
    return "\n".join(out) + "\n"


def failure_file(name) -> str:
    return os.path.join(paths.ENVIRONMENT_STATE_DIR, f"{name}.failed")


def last_failure(name) -> str | None:
    text = files.read_bytes(failure_file(name)).decode().strip()
    return text or None


def _resolve_message(name, result) -> str:
    """uv's explanation, which names the package that does not exist or does not resolve."""
    lines = [l.strip() for l in result.lines if l.strip() and not l.startswith("warning")]
    explanation = [l for l in lines if not l.startswith("Resolved")] or lines
    return f"the packages of environment {name} do not resolve:\n" + "\n".join(explanation[-12:])


def _make_relocatable(prefix):
    """Mark a venv relocatable (uv writes scripts that find their interpreter relative to themselves).
    pyvenv.cfg is replaced, not edited: in a hardlinked copy it is shared with the serving build."""
    cfg = os.path.join(prefix, "pyvenv.cfg")
    text = files.read_bytes(cfg).decode()
    if re.search(r"^relocatable\s*=\s*true", text, re.M):
        return
    files.write_atomic(cfg, text.rstrip("\n") + "\nrelocatable = true\n", mode=0o644)


def _tljh_version() -> str:
    try:
        return metadata.version("the-littlest-jupyterhub")
    except metadata.PackageNotFoundError:
        return ""
