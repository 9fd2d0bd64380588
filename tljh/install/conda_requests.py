"""Conda requests from plugins: TLJH's ``tljh_extra_user_conda_packages`` and ``tljh_extra_user_conda_channels``.

There is no conda environment here (the user environment is a venv), but a plugin's conda request must not
cost the admin the hub. Each requested package is honoured one of two ways:

- **From PyPI**, when the conda package *is* a PyPI project: only names in
  :data:`tljh.system.conda_names.PYPI_PROJECTS` (conda-forge packages built from that PyPI project's own
  release), with a version spec that translates to PEP 440. It is installed into the user environment with the
  plugins' pip packages.
- **With py-rattler**, everything else (programs such as ``csvtk``): solved against the plugin's channels (plus
  conda-forge, as TLJH does) and installed into a prefix of its own, ``paths.CONDA_PREFIX``. The programs of
  the requested packages (not of their dependencies) are linked into the user environment's ``bin/``, so they
  are on every user's PATH.

When that fails (a channel cannot be reached, a package is not in the channels), the install goes on: the
installer warns once, the packages and the reason are recorded in ``paths.CONDA_REQUESTS_STATE``, and
``tljh status`` lists them (exit status 1) until a rerun of the installer installs them.

py-rattler is ~80 MB installed and only needed while installing; the hub venv does not carry it. The rattler
part runs in a child process, ``uv run --with py-rattler -m tljh.install.conda_requests``: uv layers py-rattler
(from its cache) over the hub venv for that one process. The child also keeps a crash of py-rattler's native
code away from the installer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

from tljh.system import files, paths
from tljh.system.conda_names import conda_name, pypi_requirement

DEFAULT_CHANNEL = "conda-forge"
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org/"


@dataclasses.dataclass(frozen=True)
class Request:
    """One package spec a plugin asked for."""

    plugin: str
    spec: str

    @property
    def name(self):
        return conda_name(self.spec)


@dataclasses.dataclass
class Plan:
    """What the installer does with the plugins' conda requests."""

    pypi: list = dataclasses.field(default_factory=list)  # (Request, PEP 508 requirement)
    conda: list = dataclasses.field(default_factory=list)  # Request, installed with rattler
    channels: list = dataclasses.field(default_factory=list)  # in priority order

    @property
    def pip_requirements(self):
        return [requirement for _, requirement in self.pypi]

    def describe(self):
        if not self.pypi and not self.conda:
            return "no conda requests"
        parts = []
        if self.pypi:
            parts.append(f"from PyPI: {', '.join(r for _, r in self.pypi)}")
        if self.conda:
            parts.append(f"from conda channels {', '.join(self.channels)}: {', '.join(r.spec for r in self.conda)}")
        return "; ".join(parts)


def collect(pm):
    """(requests, channels) from every plugin's conda hooks, in plugin order, without duplicates."""
    requests, channels = [], []
    for impl in reversed(pm.hook.tljh_extra_user_conda_packages.get_hookimpls()):
        for spec in impl.function() or ():
            request = Request(impl.plugin_name, str(spec).strip())
            if request.spec not in [r.spec for r in requests]:
                requests.append(request)
    for impl in reversed(pm.hook.tljh_extra_user_conda_channels.get_hookimpls()):
        for channel in impl.function() or ():
            if channel not in channels:
                channels.append(str(channel).strip())
    return requests, channels


def plan(requests, channels):
    """Split requests into the PyPI ones and the rattler ones; the rattler channels get conda-forge last."""
    result = Plan(channels=list(channels) + ([DEFAULT_CHANNEL] if DEFAULT_CHANNEL not in channels else []))
    for request in requests:
        requirement = pypi_requirement(request.spec)
        if requirement:
            result.pypi.append((request, requirement))
        else:
            result.conda.append(request)
    return result


# --- state: what is not installed, for tljh status ---------------------------------------------------------


def record(pending, installed=()):
    """Remember what the last installer run could not install (``[{"package", "plugin", "reason"}]``)."""
    state = {"pending": list(pending), "installed": list(installed)}
    files.write_atomic(paths.CONDA_REQUESTS_STATE, json.dumps(state, indent=1))


def recorded():
    """``{"pending": [...], "installed": [...]}`` from the last installer run (empty lists before any)."""
    try:
        with open(paths.CONDA_REQUESTS_STATE) as f:
            state = json.load(f)
    except FileNotFoundError:
        state = {}
    return {"pending": state.get("pending", []), "installed": state.get("installed", [])}


def status_line():
    """(line or None, healthy) for ``tljh status``."""
    state = recorded()
    if state["pending"]:
        missing = "; ".join(f"{item['package']} (plugin {item['plugin']}: {item['reason']})" for item in state["pending"])
        return f"conda packages: NOT INSTALLED: {missing}; rerun the installer to install them", False
    if state["installed"]:
        return f"conda packages: {', '.join(state['installed'])} in {paths.CONDA_PREFIX}", True
    return None, True


def warning(items):
    """The one line the installer prints when some requested conda packages could not be installed."""
    reasons = {}
    for item in items:
        reasons.setdefault(item["reason"], []).append(f"{item['package']} (plugin {item['plugin']})")
    text = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
    return (f"warning: conda packages not installed: {text}. Everything else is installed; "
            "`tljh status` lists them until a rerun of the installer installs them.")


# --- the parent side: run the rattler child ----------------------------------------------------------------


def rattler_requirement():
    """py-rattler's requirement, as declared in this package's ``conda`` extra (one home for the version range)."""
    from importlib import metadata

    for requirement in metadata.requires("the-littlest-jupyterhub") or ():
        if requirement.startswith("py-rattler") and "extra" in requirement:
            return requirement.split(";", 1)[0].strip()
    raise RuntimeError("the-littlest-jupyterhub declares no 'conda' extra with py-rattler")


def child_command():
    """The rattler child: this interpreter (the hub venv) with py-rattler layered on by ``uv run --with``."""
    from tljh.system import venvs

    return [venvs.uv_binary(), "run", "--no-project", "--quiet", "--python", sys.executable,
            "--with", rattler_requirement(), "python", "-m", __name__]


def install(plan_, channel_alias=DEFAULT_CHANNEL_ALIAS, *, timeout=1800):
    """Converge ``paths.CONDA_PREFIX`` to ``plan_.conda`` and link the requested packages' programs.

    Returns (installed package names, not-installed items ``{"package", "plugin", "reason"}``) and records
    the latter for ``tljh status``. Never raises for a package that cannot be installed.
    """
    from tljh.system import venvs

    bin_dir = os.path.join(paths.USER_ENV_PREFIX, "bin")
    if not plan_.conda:
        # No plugin asks any more: what an earlier run installed goes.
        unlink_programs(paths.CONDA_PREFIX, bin_dir, keep=())
        if os.path.isdir(paths.CONDA_PREFIX):
            shutil.rmtree(paths.CONDA_PREFIX)
        record([])
        return [], []
    os.makedirs(paths.RATTLER_CACHE_DIR, mode=0o700, exist_ok=True)
    os.chmod(paths.RATTLER_CACHE_DIR, 0o700)
    request = {
        "specs": [r.spec for r in plan_.conda],
        "channels": plan_.channels,
        "channel_alias": channel_alias,
        "prefix": paths.CONDA_PREFIX,
        "bin_dir": bin_dir,
        "cache_dir": paths.RATTLER_CACHE_DIR,
    }
    answer, error = None, None
    try:
        child = subprocess.run(child_command(), input=json.dumps(request), capture_output=True, text=True,
                               env=venvs.uv_env(), timeout=timeout)
        lines = child.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        if answer is None:
            error = "py-rattler failed: " + ((child.stderr.strip().splitlines() or ["no output"])[-1])[:300]
    except subprocess.TimeoutExpired:
        error = f"installing took longer than {timeout} s"
    except (OSError, RuntimeError, ValueError) as e:
        error = f"py-rattler could not be started: {e}"
    plugins = {r.spec: r.plugin for r in plan_.conda}
    if answer is None:
        items = [{"package": r.spec, "plugin": r.plugin, "reason": error} for r in plan_.conda]
        record(items)
        return [], items
    items = [{"package": spec, "plugin": plugins.get(spec, "?"), "reason": reason}
             for spec, reason in answer["failed"].items()]
    record(items, answer["installed"])
    return answer["installed"], items


# --- the child side: py-rattler ----------------------------------------------------------------------------


def unlink_programs(prefix, bin_dir, keep):
    """Remove links in ``bin_dir`` into ``prefix`` except those named in ``keep``; returns the removed names."""
    removed = []
    if not os.path.isdir(bin_dir):
        return removed
    target_dir = os.path.join(prefix, "bin") + os.sep
    for name in sorted(os.listdir(bin_dir)):
        path = os.path.join(bin_dir, name)
        if os.path.islink(path) and os.readlink(path).startswith(target_dir) and name not in keep:
            os.unlink(path)
            removed.append(name)
    return removed


def link_programs(prefix, bin_dir, programs):
    """Symlink ``prefix/bin/<name>`` into ``bin_dir`` for each name; never replace a file that is not ours.

    Returns the names that could not be linked because ``bin_dir`` has its own file of that name."""
    clashes = []
    for name in programs:
        target, link = os.path.join(prefix, "bin", name), os.path.join(bin_dir, name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link) and not (os.path.islink(link) and os.readlink(link).startswith(os.path.join(prefix, "bin") + os.sep)):
            clashes.append(name)
            continue
        tmp = link + ".tljh-tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return clashes


async def _solve_and_install(request):
    import glob

    import rattler

    config = rattler.Config.from_toml('tls-root-certs = "system"')
    client = rattler.Client.from_config(config)
    alias = request["channel_alias"].rstrip("/") + "/"
    channel_config = rattler.ChannelConfig(channel_alias=alias)
    channels = [rattler.Channel(name, channel_config) for name in request["channels"]]
    prefix, cache = request["prefix"], request["cache_dir"]
    installed = [rattler.PrefixRecord.from_path(p) for p in glob.glob(os.path.join(prefix, "conda-meta", "*.json"))]
    gateway = rattler.Gateway(cache_dir=os.path.join(cache, "repodata"), client=client)
    async def solve(specs):
        return await rattler.solve(channels, specs, gateway=gateway, platforms=[rattler.Platform.current(), "noarch"],
                                   virtual_packages=rattler.VirtualPackage.detect(), locked_packages=installed)

    specs, failed = list(request["specs"]), {}
    try:
        records = await solve(specs)
    except Exception:  # rattler raises a type per failure kind; the message says which
        # One unavailable package must not cost the others: find the ones that fail alone, solve the rest.
        for spec in specs:
            try:
                await solve([spec])
            except Exception as e:
                failed[spec] = _reason(e, channels)
        specs = [s for s in specs if s not in failed]
        try:
            records = await solve(specs) if specs else []
        except Exception as e:
            failed.update({spec: _reason(e, channels) for spec in specs})
            specs, records = [], []
    if failed:
        # Keep what is installed for the requests that failed now (a channel down for an hour must not remove
        # a program that worked): install never removes a package listed in its records.
        solved = {r.name.normalized for r in records}
        records = list(records) + [r for r in installed if r.name.normalized not in solved]
    await rattler.install(records, prefix, cache_dir=os.path.join(cache, "pkgs"), installed_packages=installed,
                          show_progress=False, client=client)
    wanted = {conda_name(spec): spec for spec in request["specs"]}
    programs = {}
    for path in glob.glob(os.path.join(prefix, "conda-meta", "*.json")):
        record_ = rattler.PrefixRecord.from_path(path)
        if record_.name.normalized in wanted:
            programs[record_.name.normalized] = sorted(
                str(f)[len("bin/"):] for f in record_.files if str(f).startswith("bin/") and "/" not in str(f)[4:]
            )
    return programs, failed


def _reason(error, channels):
    """One short line: which channel failed and rattler's innermost cause."""
    text = " ".join(str(error).split())
    cause = text.rsplit("Caused by:", 1)[-1].strip()
    for channel in channels:
        if str(channel.base_url) in text and "Caused by:" in text:
            return f"channel {channel.base_url} cannot be reached: {cause}"[:300]
    return text[:300]


def child_main():
    """Run by the installer under ``uv run --with py-rattler``: JSON request on stdin, JSON answer last on stdout."""
    request = json.load(sys.stdin)
    programs, failed = asyncio.run(_solve_and_install(request))
    bin_dir, prefix = request["bin_dir"], request["prefix"]
    every = sorted({p for names in programs.values() for p in names})
    unlink_programs(prefix, bin_dir, keep=every)
    clashes = link_programs(prefix, bin_dir, every)
    installed = set(programs) - {conda_name(spec) for spec in failed}
    for name, names in programs.items():
        if not names:
            spec = next(s for s in request["specs"] if conda_name(s) == name)
            installed.discard(name)
            failed[spec] = ("it has no programs to put on PATH (a Python library from conda cannot "
                            "join the user environment: ask for its PyPI package with tljh_extra_user_pip_packages)")
        elif set(names) & set(clashes):
            spec = next(s for s in request["specs"] if conda_name(s) == name)
            installed.discard(name)
            failed[spec] = f"installed, but {', '.join(sorted(set(names) & set(clashes)))} would replace the user environment's own"
    answer = {"installed": sorted(installed), "programs": every, "failed": failed}
    print(json.dumps(answer), flush=True)
    # py-rattler 0.28 can crash while the interpreter shuts down (segfault in about 1 of 3 runs, after all
    # the work is done): leave without the shutdown.
    os._exit(0)


if __name__ == "__main__":
    child_main()
