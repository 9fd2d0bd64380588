"""``tljh env list|show|build|remove``: the admin's view of the environments, and the installer's build step."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from ..settings.environments import DEFAULT, environment_names
from ..settings.errors import ConfigError
from ..system import paths, venvs
from . import bytecode, limits, store
from .builder import Builder, by_hand, last_failure, state_of, stop_units
from .spec import specs
from .user_builds import is_build_name


def build(config: dict, pm=None, names=None, *, force=False, from_lock=None, out=print, wait_for_bytecode=False) -> list:
    """Build the environments of ``names`` (all declared ones if None) that changed; return their Outcomes.
    ``wait_for_bytecode``: return once the builds' bytecode is compiled too (see Builder)."""
    declared = specs(config, pm)
    builder = Builder(out=out, wait_for_bytecode=wait_for_bytecode, limits=limits.from_config(config),
                      declared=list(declared))
    outcomes = []
    for name in names or list(declared):
        outcome = builder.build(declared[name], force=force, from_lock=from_lock)
        if outcome.state == "up to date":
            out(f"{name}: up to date")
        elif outcome.state == "failed":
            out(f"{name}: build failed: {outcome.message}")
        outcomes.append(outcome)
    return outcomes


def reload_hint(config: dict) -> str | None:
    """What to run so the hub offers what config.yaml now declares, if its environments changed since the
    hub last started (the kernels every server lists and the profiles' choices come from the hub's config)."""
    from ..settings.config_file import load_raw

    if not os.path.exists(paths.LAST_GOOD_FILE):
        return None
    running = (load_raw(paths.LAST_GOOD_FILE) or {}).get("environments") or {}
    if running == (config.get("environments") or {}):
        return None
    return "run `sudo tljh-config reload` so servers started from now on offer the environments as built"


@dataclass
class StatusEntry:
    name: str
    text: str
    problem: str | None = None
    fix: str | None = None
    packages: int = 0


def status_entries(config: dict) -> list[StatusEntry]:
    """One entry per environment for `tljh status`: state, build, Python, the server packages that matter to
    users; a problem when it has no build, its last build failed or its Python does not run."""
    from ..plugins import get_plugin_manager

    entries = []
    for name, spec in specs(config, get_plugin_manager()).items():
        state, current = state_of(spec)
        entry = StatusEntry(name, f"{name}: {state}")
        if current is None:
            entry.problem, entry.fix = f"environment {name} is not built", f"sudo tljh env build {name}"
        else:
            packages = venvs.installed_packages(current.path)
            shown = ", ".join(f"{n} {packages[n]}" for n in ("jupyterlab", "notebook", "jupyterhub") if n in packages)
            entry.packages = len(packages)
            entry.text += f" (build {current.build}), Python {current.python or '?'}, {len(packages)} packages ({shown})"
            if not current.works():
                entry.problem = f"environment {name}'s Python does not run (an OS upgrade?)"
                entry.fix = "rerun the install command: it rebuilds the environments with their packages"
        failure = last_failure(name)
        if failure:
            entry.text += f"; LAST BUILD FAILED: {failure.splitlines()[0]}"
            entry.problem = f"the last build of environment {name} failed: {failure.splitlines()[0]}"
            entry.fix = f"sudo tljh env build {name} (after fixing what its message says: sudo tljh env list)"
        entries.append(entry)
    return entries


def list_lines(config: dict, pm=None) -> list[str]:
    declared = specs(config, pm)
    rows = [("NAME", "STATE", "PYTHON", "BUILD", "DESCRIPTION")]
    notes = []
    for name, spec in declared.items():
        state, current = state_of(spec)
        failure = last_failure(name)
        if failure:
            state += " (last build failed)"
            notes.append(f"last build of {name} failed: {failure.splitlines()[0]}")
        if current:
            hand = by_hand(current.path, current.lock())
            if hand:
                notes.append(f"{name}: installed by hand (kept by rebuilds): {', '.join(sorted(hand))}")
            if not bytecode.compiled(current.path, current.build):
                notes.append(f"{name}: bytecode not compiled yet (imports are slower until it is; "
                             f"`sudo tljh env build {name}` compiles it if no compile is running)")
        rows.append((name, state, current.python if current else "-", current.build if current else "-",
                     spec.description))
    users = [name for name in store.built_names() if is_build_name(name)]
    for name in store.built_names():
        if name not in declared and not is_build_name(name):
            notes.append(f"{name}: built but not in config.yaml; remove it with: sudo tljh env remove {name}")
    if users:
        notes.append(f"{len(users)} environments users built from repositories (builds.allowed_hosts): "
                     f"sudo tljh env show repo-<hex> for one; their usage in {paths.REPOSITORY_BUILDS_STATE_DIR}")
    waiting = store.retired()
    if waiting:
        notes.append(f"earlier builds kept while running servers use them: {', '.join(waiting)}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    return [l.rstrip() for l in lines] + notes


def show_lines(config: dict, name: str, pm=None) -> list[str]:
    spec = specs(config, pm).get(name)
    current = store.current(name)
    failure = last_failure(name)
    if current is None:
        why = f" (its last build failed: {' '.join(failure.split())})" if failure else ""
        raise LookupError(f"environment {name} has no build yet{why}: sudo tljh env build {name}")
    state = state_of(spec)[0] if spec else "a user's build" if is_build_name(name) else "not in config.yaml"
    record = current.record
    summary = record.get("spec", {})
    lines = [
        f"# environment {name}: {state}",
        f"# build {current.build}: Python {current.python}, jupyterhub {record.get('hub_version')}, "
        f"built {record.get('built_at')}",
    ]
    if summary.get("description"):
        lines.append(f"# description: {summary['description']}")
    for key in ("packages", "requirements", "apt"):
        if summary.get(key):
            lines.append(f"# {key}: {' '.join(summary[key])}")
    origin = summary.get("repository")
    if origin:
        source = (f"archive: {origin['url']} = {origin['commit']}" if origin["commit"].startswith("sha256:") else
                  f"repository: {origin['url']} @ {origin.get('ref') or 'HEAD'} = commit {origin['commit']}")
        scripts = [s for s, key in (("postBuild", "post_build"), ("start", "start")) if origin.get(key)]
        lines.append(f"# {source}" + (f" (with {', '.join(scripts)})" if scripts else ""))
        if origin.get("installs_itself"):
            lines.append("# the repository itself is installed (its setup.py / pyproject.toml)")
        for item in origin.get("unsupported") or []:
            lines.append(f"# not built from the repository: {item}")
    if summary.get("r"):
        lines.append("# r: R and IRkernel from the OS archive")
    if failure:
        # The reason (timed out, out of memory, a failing postBuild) and that this build still serves.
        lines += ["# LAST BUILD FAILED: " + line for line in failure.splitlines()]
    hand = by_hand(current.path, current.lock())
    if hand:
        lines.append(f"# installed by hand since this build (not in the lock below): {', '.join(sorted(hand))}")
    lines.append(f"# lock ({os.path.join(current.path, store.LOCK_FILE)}):")
    return lines + current.lock().rstrip("\n").splitlines()


def remove(name: str, config_path=paths.CONFIG_FILE, out=print) -> None:
    """Take ``name`` out of config.yaml (refused while a profile uses it) and out of service."""
    from ..settings import editing
    from ..settings.config_file import load_raw

    if name == DEFAULT:
        raise ValueError("the default environment (/opt/tljh/user) cannot be removed")
    raw = load_raw(config_path) or {}
    if name in (raw.get("environments") or {}):
        editing.unset_config_value(config_path, f"environments.{name}")
        out(f"removed environments.{name} from {config_path}")
    with store.environments_lock():
        store.prepare_directories()
        stop_units(name)  # its bytecode may still be compiling: the retired build needs none
        retired = store.retire(name)
        _, kept = store.collect()
    if retired is None:
        out(f"{name}: there was no build to remove")
    elif os.path.basename(retired) in kept:
        out(f"{name}: removed; servers started with it keep it until they stop")
    else:
        out(f"{name}: removed")


def collect_unused() -> None:
    """Delete retired builds no server uses any more (after a server stops); skip if a build is running."""
    with store.environments_lock(wait=False) as locked:
        if locked:
            store.collect()


def main(args, config_path=paths.CONFIG_FILE) -> int:
    """The ``tljh env`` verbs (argparse in tljh/cli/tljh.py)."""
    from ..plugins import get_plugin_manager
    from ..settings.effective import load_settings

    signal.signal(signal.SIGTERM, _interrupt)  # a killed build stops its sandboxed unit on the way out
    config = load_settings(config_path).config
    pm = get_plugin_manager()
    names = environment_names(config)
    name = getattr(args, "name", None)
    if name and args.env_verb != "remove" and name not in names and not (args.env_verb == "show" and is_build_name(name)):
        print(f"tljh env: no environment {name!r} in config.yaml (declared: {', '.join(names)})", file=sys.stderr)
        return 2
    try:
        if args.env_verb == "list":
            print("\n".join(list_lines(config, pm)))
        elif args.env_verb == "show":
            print("\n".join(show_lines(config, name, pm)))
        elif args.env_verb == "build":
            outcomes = build(config, pm, [name] if name else None, force=args.force, from_lock=args.from_lock,
                             out=lambda line: print(line, flush=True))
            hint = reload_hint(config)
            if hint:
                print(hint)
            return 1 if any(o.state == "failed" for o in outcomes) else 0
        elif args.env_verb == "remove":
            remove(name, config_path)
    except (LookupError, ValueError, ConfigError) as e:
        print(f"tljh env: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
