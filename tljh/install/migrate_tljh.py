"""Taking over a server that runs The Littlest JupyterHub (TLJH), in place.

The bootstrap command run on a TLJH server finds TLJH's traces and says what it will do, then:

- **the proxy**: TLJH's ``traefik.service`` is stopped and disabled (it holds the web ports this hub's proxy
  needs); its configuration and certificates stay in the state directory for reference. The HTTPS settings
  in config.yaml are TLJH's keys and mean the same here, so Let's Encrypt goes on with the same email and
  domains (the proxy requests its own certificates).
- **the user environment**: TLJH's is a conda installation at /opt/tljh/user. It is moved aside to
  ``paths.TLJH_OLD_USER_ENV`` (never deleted without ``tljh migrate --cleanup``), the installer builds the new
  one at the same path, and then every Python distribution of the old one is installed into it (the old
  version when it installs, else the newest), with its kernelspecs and the files under ``etc/jupyter`` and
  JupyterLab's settings that no package owns. Conda packages pip does not see (R, programs, C libraries)
  cannot be carried into a venv: the installer lists the ones someone asked for, with how to get them back,
  and ``tljh status`` keeps listing them.
- config.yaml, the hub database (upgraded by the installer's own step, with a backup), FirstUse passwords,
  homes and Unix accounts are TLJH's files at TLJH's paths: they are kept as they are.

Everything is recorded in ``paths.TLJH_MIGRATION_STATE`` only after it happened, and each step starts from
what is on disk, so a run that is interrupted converges when it is run again; a finished migration makes
later runs change nothing.
"""

import dataclasses
import datetime
import json
import os
import shutil

import subprocess

from tljh.settings.config_file import ConfigFileError
from tljh.settings.effective import load_settings
from tljh.system import env_contents, paths, systemd, venvs


@dataclasses.dataclass
class Found:
    """The traces of TLJH on this server."""

    conda_env: bool  # /opt/tljh/user is a conda installation
    old_env: bool  # an earlier run already moved it aside
    traefik_unit: bool
    traefik_active: bool
    traefik_enabled: bool
    traefik_files: list

    @property
    def anything(self):
        return self.conda_env or self.old_env or self.traefik_unit or bool(self.traefik_files)


def detect():
    unit_file = os.path.join(paths.UNIT_DIR, paths.TRAEFIK_UNIT)
    has_unit = os.path.exists(unit_file)
    return Found(
        conda_env=env_contents.is_conda(paths.USER_ENV_PREFIX),
        old_env=os.path.isdir(paths.TLJH_OLD_USER_ENV),
        traefik_unit=has_unit,
        traefik_active=has_unit and systemd.is_active(paths.TRAEFIK_UNIT),
        traefik_enabled=has_unit and systemd.is_enabled(paths.TRAEFIK_UNIT),
        traefik_files=[n for n in paths.TRAEFIK_FILES if os.path.lexists(os.path.join(paths.STATE_DIR, n))],
    )


# --- the record ---------------------------------------------------------------------------------------------


def recorded():
    """What earlier runs did (``{}`` before any)."""
    try:
        with open(paths.TLJH_MIGRATION_STATE) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def _record(**changes):
    state = recorded()
    state.update(changes)
    tmp = paths.TLJH_MIGRATION_STATE + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, paths.TLJH_MIGRATION_STATE)
    return state


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- what the installer says first ------------------------------------------------------------------------


def plan(found):
    """The lines that tell the admin what is about to happen, before anything changes."""
    lines = ["This server runs The Littlest JupyterHub (TLJH). Taking it over in place:"]
    if found.traefik_active or found.traefik_enabled:
        lines.append(f"  - stop and disable {paths.TRAEFIK_UNIT} (the hub is unreachable until the new proxy runs); "
                     f"its configuration and certificates stay in {paths.STATE_DIR}")
    if found.conda_env:
        lines.append(f"  - move the conda environment {paths.USER_ENV_PREFIX} to {paths.TLJH_OLD_USER_ENV} (kept until "
                     "`tljh migrate --cleanup`) and build a new one there with its Python packages, kernelspecs "
                     "and Jupyter configuration")
    lines.append("  - keep config.yaml, users, passwords, the hub database (upgraded, with a backup), homes and "
                 "Unix accounts as they are")
    return lines


def refusal(found):
    """Why the take-over cannot start, checked before anything changes (None: it can).

    The later steps must not fail for a reason known now: a traefik stopped and an environment moved for an
    install that then stops at config.yaml would leave the server without a hub.
    """
    if found.conda_env and found.old_env:
        return (f"{paths.USER_ENV_PREFIX} is a conda environment and {paths.TLJH_OLD_USER_ENV} exists too: move one "
                "of them elsewhere (the installer will not overwrite either) and rerun; nothing was changed")
    try:
        errors = load_settings(paths.CONFIG_FILE).errors
    except ConfigFileError as e:
        return f"{e}. Fix it by hand and rerun; nothing was changed"
    if errors:
        return (f"{paths.CONFIG_FILE} holds what this hub refuses (TLJH did not check it): "
                + "; ".join(map(str, errors))
                + ". Fix it (`sudo tljh-config unset KEY`, or edit the file) and rerun; nothing was changed")
    return None


# --- step 1: take over (before the user environment is built) ---------------------------------------------


def start():
    """Record that a migration began (once)."""
    if not recorded().get("started"):
        _record(started=_now())
    return []


def hand_over_proxy(found):
    """Stop and disable traefik; its files stay. Returns what it did (empty when nothing was left to do)."""
    done = []
    if found.traefik_active:
        # TLJH's jupyterhub.service Requires= traefik: the old hub stops with it, which is wanted here.
        try:
            systemd.stop(paths.TRAEFIK_UNIT)
        except subprocess.CalledProcessError as e:
            raise MigrationError(f"could not stop {paths.TRAEFIK_UNIT}: {(e.stderr or '').strip() or e}") from e
        done.append(f"stopped {paths.TRAEFIK_UNIT}")
    if found.traefik_enabled:
        systemd.disable(paths.TRAEFIK_UNIT)
        if systemd.is_enabled(paths.TRAEFIK_UNIT):
            raise MigrationError(f"could not disable {paths.TRAEFIK_UNIT}: run `systemctl disable {paths.TRAEFIK_UNIT}` "
                                 "and rerun")
        done.append(f"disabled {paths.TRAEFIK_UNIT}")
    if done:
        _record(traefik={"stopped_at": _now(), "kept": [os.path.join(paths.STATE_DIR, n) for n in found.traefik_files]})
    return done


def move_environment_aside(found):
    """Rename TLJH's conda environment out of the way and inventory it. Returns what it did."""
    if found.conda_env:
        if found.old_env:
            raise MigrationError(
                f"{paths.USER_ENV_PREFIX} is a conda environment and {paths.TLJH_OLD_USER_ENV} exists too: move one "
                "of them elsewhere (the installer will not overwrite either) and rerun"
            )
        os.rename(paths.USER_ENV_PREFIX, paths.TLJH_OLD_USER_ENV)
        moved = True
    else:
        moved = False
    if os.path.isdir(paths.TLJH_OLD_USER_ENV) and "conda_only" not in recorded():
        # Read from the moved directory: a run killed right after the rename records it next time.
        asked, deps = env_contents.conda_only_packages(paths.TLJH_OLD_USER_ENV)
        _record(
            started=recorded().get("started") or _now(),
            old_env=paths.TLJH_OLD_USER_ENV,
            old_python=env_contents.python_version(paths.TLJH_OLD_USER_ENV),
            conda_only=[{"name": p.name, "version": p.version} for p in asked],
            conda_dependencies=len(deps),
        )
    return [f"moved {paths.USER_ENV_PREFIX} to {paths.TLJH_OLD_USER_ENV}"] if moved else []


class MigrationError(Exception):
    """The migration cannot go on; the message says what the admin must do."""


# --- step 2: carry over (after the new user environment is built) -----------------------------------------


@dataclasses.dataclass
class Carried:
    packages: list  # requirements installed as they were
    other_versions: list  # "name (old -> new)": the old version would not install (or the new env needed another)
    not_carried: dict  # name -> why
    kernelspecs: list
    kernelspecs_not_carried: dict
    files: list


def _skip(dist, present):
    if dist.key in present:
        return "present"
    if env_contents.canonical(dist.name) in env_contents.CONDA_MACHINERY:
        return "conda machinery"
    return None


def carry_packages(old, new, install=venvs.pip_install):
    """Install into ``new`` every Python distribution of ``old`` that ``new`` lacks.

    First all at once at their old versions; if that fails, one by one, and a package whose old version does
    not install (no build for this Python) gets the newest that does. Returns (as they were, with another
    version, {name: why not}).
    """
    present = venvs.installed_packages(new)
    wanted = [d for d in env_contents.distributions(old) if not _skip(d, present)]
    if not wanted:
        return [], [], {}
    try:
        install(new, [d.requirement for d in wanted])
        return [d.requirement for d in wanted], [], {}
    except RuntimeError:
        pass
    same, other, failed = [], [], {}
    for dist in wanted:
        if dist.key in venvs.installed_packages(new):
            # Pulled in by a package carried earlier in this loop.
            same.append(dist.requirement)
            continue
        try:
            install(new, [dist.requirement])
            same.append(dist.requirement)
            continue
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else "uv failed"
        try:
            install(new, [dist.name])
            other.append(f"{dist.name} ({dist.version} -> {venvs.installed_packages(new).get(dist.key, '?')})")
        except RuntimeError:
            failed[dist.name] = reason
    return same, other, failed


def carry_over(old=None, new=None, served_at=None, install=venvs.pip_install):
    """Bring the old environment's packages, kernelspecs and configuration into the new one."""
    old = old or paths.TLJH_OLD_USER_ENV
    new = new or paths.USER_ENV_PREFIX
    same, other, failed = carry_packages(old, new, install=install)
    kernels, kernels_refused, files = env_contents.carry_configuration(
        old, new, served_at=served_at or paths.USER_ENV_PREFIX)
    return Carried(same, other, failed, kernels, kernels_refused, files)


def record_carried(carried):
    previous = recorded().get("carried") or {}

    def merged(key, value):
        old = previous.get(key) or ([] if isinstance(value, list) else {})
        if isinstance(value, list):
            return old + [v for v in value if v not in old]
        return {**old, **value}

    state = _record(
        finished=recorded().get("finished") or _now(),
        carried={
            "packages": merged("packages", carried.packages),
            "other_versions": merged("other_versions", carried.other_versions),
            "not_carried": carried.not_carried,  # what the last run could not install
            "kernelspecs": merged("kernelspecs", carried.kernelspecs),
            "kernelspecs_not_carried": carried.kernelspecs_not_carried,
            "files": merged("files", carried.files),
        },
    )
    return state


# --- what the admin reads ---------------------------------------------------------------------------------


HOW_TO_GET_BACK = (
    "To get them back: OS packages (`sudo apt install r-base`, ...) or a plugin's tljh_extra_user_conda_packages "
    "(installed from conda-forge with rattler); meanwhile their programs are still in {old}/bin. "
    "`sudo tljh migrate` shows this list again."
)


def not_carried_lines(state=None):
    """What the migration could not bring into the new environment, one line per kind (empty when all came)."""
    state = recorded() if state is None else state
    if not state or state.get("cleaned"):
        return []
    lines = []
    conda_only = state.get("conda_only") or []
    if conda_only:
        names = ", ".join(f"{p['name']} {p['version']}" for p in conda_only)
        deps = state.get("conda_dependencies") or 0
        lines.append(f"conda-only packages not carried over: {names}"
                     + (f" (and {deps} conda libraries they or Python used)" if deps else ""))
    carried = state.get("carried") or {}
    if carried.get("not_carried"):
        lines.append("Python packages that would not install: "
                     + "; ".join(f"{n} ({why})" for n, why in carried["not_carried"].items()))
    if carried.get("kernelspecs_not_carried"):
        lines.append("kernels not carried over: "
                     + "; ".join(f"{n} ({why})" for n, why in carried["kernelspecs_not_carried"].items()))
    return lines


def report(state=None):
    """The full account of the migration, for ``tljh migrate``."""
    state = recorded() if state is None else state
    if not state:
        return ["No migration from TLJH happened on this server."]
    lines = [f"Migrated from TLJH on {state.get('finished') or state.get('started')} "
             f"(old environment: Python {state.get('old_python') or '?'})."]
    carried = state.get("carried") or {}
    lines.append(f"Python packages carried over: {len(carried.get('packages', []))}"
                 + (f"; with another version: {', '.join(carried['other_versions'])}" if carried.get("other_versions") else ""))
    if carried.get("kernelspecs"):
        lines.append(f"kernels carried over: {', '.join(carried['kernelspecs'])}")
    if carried.get("files"):
        lines.append(f"configuration files carried over: {', '.join(carried['files'])}")
    if state.get("traefik"):
        lines.append(f"{paths.TRAEFIK_UNIT}: stopped and disabled; kept: {', '.join(state['traefik']['kept']) or 'nothing'}")
    lost = not_carried_lines(state)
    lines += lost
    if state.get("cleaned"):
        lines.append(f"The old environment was removed on {state['cleaned']}.")
    elif os.path.isdir(state.get("old_env") or paths.TLJH_OLD_USER_ENV):
        if lost:
            lines.append(HOW_TO_GET_BACK.format(old=state.get("old_env") or paths.TLJH_OLD_USER_ENV))
        lines.append(f"The old environment is kept at {state.get('old_env') or paths.TLJH_OLD_USER_ENV}; "
                     "`sudo tljh migrate --cleanup` removes it.")
    return lines


def status_line():
    """The line for ``tljh status`` (None when there is nothing to say). Never a failure: information."""
    lost = not_carried_lines()
    if not lost:
        return None
    return "from TLJH: " + "; ".join(lost) + f" — `sudo tljh migrate` says how to get them back"


def cleanup():
    """Remove the old environment (``tljh migrate --cleanup``). Returns what it removed."""
    state = recorded()
    old = state.get("old_env") or paths.TLJH_OLD_USER_ENV
    doomed = old + ".removing"
    if not os.path.isdir(old) and not os.path.isdir(doomed):
        return None
    if not state.get("finished"):
        raise MigrationError(f"the migration has not finished: run the installer again before removing {old}")
    # Rename first: a killed removal leaves a name nothing uses, finished by the next cleanup.
    if os.path.isdir(old):
        os.rename(old, doomed)
    shutil.rmtree(doomed)
    _record(cleaned=_now())
    return old
