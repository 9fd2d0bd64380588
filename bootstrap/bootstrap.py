"""Install or upgrade The Littlest JupyterHub on this server.

Run from a clone of this project's repository (it installs that clone):

    sudo python3 bootstrap/bootstrap.py --admin alice:PASSWORD

or, once releases are published on PyPI, piped from curl (it installs the latest release):

    curl -L <url>/bootstrap.py | sudo python3 - --admin alice:PASSWORD

It checks the server, makes the hub venv at /opt/tljh/hub, installs the installer package into it and
hands over to ``tljh.installer`` with the remaining flags. Rerunning it upgrades in place.

Refusals print TLJH's own first line on standard output where TLJH's bootstrap prints one (scripts and
docs quote those lines), and this project's one-line explanation on standard error; the exit status is 1.

Only the standard library is used, and the syntax stays parseable by old Pythons so that an unsupported
server gets a clear message instead of a SyntaxError.
"""

import os
import re
import shutil
import subprocess
import sys

DIST_NAME = "the-littlest-jupyterhub"
MIN_PYTHON = (3, 10)
MIN_MEMORY_MB = 768
MIN_FREE_DISK_GB = 2.0
MIN_FREE_DISK_UPGRADE_GB = 0.5
# The oldest release of each supported distribution, as its os-release VERSION_ID spells it.
SUPPORTED = {"debian": "12", "ubuntu": "22.04"}
SUPPORTED_TEXT = "Debian 12 or 13, Ubuntu 22.04 or 24.04 (or newer releases of both)"

INSTALL_PREFIX = os.environ.get("TLJH_INSTALL_PREFIX", "/opt/tljh")
HUB_PREFIX = os.path.join(INSTALL_PREFIX, "hub")
HUB_PYTHON = os.path.join(HUB_PREFIX, "bin", "python")
HUB_MOVED_ASIDE = HUB_PREFIX + ".previous"  # same as tljh.system.venvs.moved_aside(HUB_PREFIX)
# The documented test for "booted with systemd" (sd_booted(3)); TLJH looks for the systemctl program instead,
# which a container can have without running systemd.
SYSTEMD_RUN_DIR = "/run/systemd/system"

USAGE = """\
usage: sudo python3 bootstrap/bootstrap.py [options]            (in a clone of the repository)
       curl -L <url>/bootstrap.py | sudo python3 - [options]    (a release published on PyPI)

Install The Littlest JupyterHub, or upgrade it in place when it is already installed. Run from a clone,
it installs that clone; piped from curl, it installs the latest release from PyPI.

options:
  --admin NAME[:PASSWORD]      make NAME a hub admin (repeatable); PASSWORD sets their first-use password
  --plugin SPEC                install a plugin from a pip spec (repeatable)
  --user-requirements-txt-url URL
                               install this requirements.txt into the user environment
  --version VERSION            install this release from PyPI (instead of the latest, or of the clone)
  --show-progress-page         serve a progress page on port 80 while installing
  -h, --help                   show this help

environment:
  TLJH_BOOTSTRAP_PIP_SPEC      what to install as the installer instead (a checkout path, wheel or git URL)
  TLJH_BOOTSTRAP_DEV=yes       install it editable (development)
"""


class BootstrapError(Exception):
    """A refusal: the message is this project's one-line explanation (printed on standard error).

    ``tljh_line`` is the line TLJH's bootstrap prints on standard output in the same situation, printed
    first so that scripts and docs written against TLJH keep matching.
    """

    def __init__(self, message, tljh_line=None):
        Exception.__init__(self, message)
        self.tljh_line = tljh_line


# --- checks: run before anything is changed -------------------------------------------------------


def read_os_release(path="/etc/os-release"):
    info = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    key, value = line.rstrip("\n").split("=", 1)
                    info[key] = value.strip().strip('"')
    except OSError:
        pass
    return info


def parse_version(text):
    parts = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def check_os(info):
    distro = info.get("ID", "")
    version_text = info.get("VERSION_ID", "")
    name = info.get("PRETTY_NAME") or "{} {}".format(distro, version_text).strip() or "unknown"
    if distro not in SUPPORTED:
        raise BootstrapError(
            "unsupported operating system: {}. Supported: {}.".format(name, SUPPORTED_TEXT),
            tljh_line="The Littlest JupyterHub currently supports Ubuntu or Debian Linux only",
        )
    if not version_text and distro == "debian":
        return  # testing/unstable carry no VERSION_ID; they are newer than any release
    if parse_version(version_text) < parse_version(SUPPORTED[distro]):
        raise BootstrapError(
            "unsupported version: {}. Supported: {}. Upgrade the OS or start from a newer image.".format(
                name, SUPPORTED_TEXT
            ),
            tljh_line="The Littlest JupyterHub requires {} {} or higher".format(distro.capitalize(), SUPPORTED[distro]),
        )


def check_root():
    if os.geteuid() != 0:
        raise BootstrapError(
            "must run as root. Run: curl -L <url>/bootstrap.py | sudo python3 - --admin <name>"
        )


def check_systemd():
    if not os.path.isdir(SYSTEMD_RUN_DIR):
        raise BootstrapError(
            "systemd is not running as PID 1 on this machine (a container without systemd?). "
            "Install on a server or VM booted with systemd.",
            tljh_line="Systemd is required to run TLJH",
        )


def check_python():
    if sys.version_info[:2] < MIN_PYTHON:
        raise BootstrapError(
            "python3 is {}.{}; {}.{} or newer is required. Supported: {}.".format(
                sys.version_info[0], sys.version_info[1], MIN_PYTHON[0], MIN_PYTHON[1], SUPPORTED_TEXT
            ),
            tljh_line="bootstrap.py must be run with at least Python {}.{}, found {}".format(
                MIN_PYTHON[0], MIN_PYTHON[1], sys.version
            ),
        )


def memory_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def check_resources(upgrading):
    total = memory_mb()
    if total and total < MIN_MEMORY_MB:
        raise BootstrapError(
            "this server has {} MB of memory; at least {} MB is needed (1 GB servers work).".format(
                total, MIN_MEMORY_MB
            )
        )
    existing = INSTALL_PREFIX
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free_gb = shutil.disk_usage(existing).free / 1024 ** 3
    needed = MIN_FREE_DISK_UPGRADE_GB if upgrading else MIN_FREE_DISK_GB
    if free_gb < needed:
        raise BootstrapError(
            "only {:.1f} GB free on the disk holding {}; {:.1f} GB is needed. Free some space or grow the disk.".format(
                free_gb, INSTALL_PREFIX, needed
            )
        )


# --- what to install ----------------------------------------------------------------------------------

INDEX_URL = "https://pypi.org/simple"
# uv's own index settings: when the admin set any of them, uv (not this script) knows where it will look.
UV_INDEX_SETTINGS = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                     "UV_CONFIG_FILE")
UV_CONFIG_FILES = ("/etc/uv/uv.toml", "~/.config/uv/uv.toml")


def source_checkout(script):
    """The source tree of this project that ``script`` (this bootstrap.py) sits in, or None.

    A tree counts when bootstrap.py is its ``bootstrap/bootstrap.py``, its pyproject.toml names this project
    and its ``tljh`` package is there: a bootstrap.py copied elsewhere, or piped from curl (``<stdin>``),
    does not install whatever directory happens to surround it.
    """
    if not script or not os.path.isfile(script):
        return None
    script = os.path.realpath(script)
    here = os.path.dirname(script)
    if os.path.basename(script) != "bootstrap.py" or os.path.basename(here) != "bootstrap":
        return None
    root = os.path.dirname(here)
    if not os.path.isfile(os.path.join(root, "tljh", "__init__.py")):
        return None
    try:
        with open(os.path.join(root, "pyproject.toml")) as f:
            pyproject = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", pyproject, re.M | re.S)
    name = project and re.search(r"""^name\s*=\s*["']([^"']+)["']""", project.group(1), re.M)
    if not name or name.group(1) != DIST_NAME:
        return None
    return root


def choose_installer(environ, version, checkout):
    """(pip spec, where it comes from, whether it comes from the package index)."""
    spec = environ.get("TLJH_BOOTSTRAP_PIP_SPEC")
    if spec:
        return spec, "TLJH_BOOTSTRAP_PIP_SPEC", False
    if version:
        return "{}=={}".format(DIST_NAME, version), "release {} from PyPI".format(version), True
    if checkout:
        return checkout, "the clone this bootstrap.py runs from; TLJH_BOOTSTRAP_PIP_SPEC overrides", False
    return DIST_NAME, "the latest release on PyPI", True


def check_published(environ, timeout=20):
    """Refuse, before changing anything, to ask PyPI for a project it does not have.

    Only a definite "no such project" refuses: a network problem, or an index the admin configured for uv,
    is left to uv, which reports it in its own words.
    """
    import urllib.error
    import urllib.request

    if any(environ.get(name) for name in UV_INDEX_SETTINGS):
        return
    if any(os.path.exists(os.path.expanduser(path)) for path in UV_CONFIG_FILES):
        return
    url = "{}/{}/".format(INDEX_URL, DIST_NAME)
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise BootstrapError(
                "{} is not published on PyPI yet: clone the repository and run "
                "`sudo python3 bootstrap/bootstrap.py --admin NAME:PASSWORD` in the clone, "
                "or set TLJH_BOOTSTRAP_PIP_SPEC to a checkout path, wheel or git URL.".format(DIST_NAME)
            )
    except (OSError, ValueError):
        pass


# --- actions ----------------------------------------------------------------------------------------


def say(message):
    print(message, flush=True)


def run(cmd, what, env=None):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, universal_newlines=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise BootstrapError("{} failed ({}):\n{}".format(what, " ".join(cmd), tail))
    return result.stdout


def missing_apt_packages(packages):
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Status}", package],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
        )
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def ensure_apt_packages(pip_spec):
    wanted = ["python3-venv", "sudo", "ca-certificates"]
    if pip_spec.startswith("git+"):
        wanted.append("git")
    missing = missing_apt_packages(wanted)
    if not missing:
        return
    say("Installing apt packages: {}".format(" ".join(missing)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Finish a package install that a killed or powered-off earlier run left half done (apt refuses otherwise).
    run(["dpkg", "--configure", "-a"], "dpkg --configure -a", env=env)
    run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, "apt-get install", env=env)


def hub_venv_works():
    """The hub venv runs, with the system python3's version (an OS upgrade may have replaced it)."""
    # pip is the last thing `python3 -m venv` writes: without it, a run was killed while making the venv.
    if not (os.path.exists(HUB_PYTHON) and os.path.exists(os.path.join(HUB_PREFIX, "bin", "pip"))):
        return False
    probe = "import sys; print(sys.version_info[:2])"
    try:
        mine = subprocess.run([HUB_PYTHON, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return mine.returncode == 0 and mine.stdout.decode().strip() == str(tuple(sys.version_info[:2]))


def ensure_hub_venv():
    if hub_venv_works():
        return False
    if os.path.exists(HUB_PREFIX):
        say("The hub environment does not run with this system's Python any more: rebuilding it.")
        # The installer reinstalls the old venv's other packages (plugins) from there, then deletes it
        # (tljh.system.venvs.rebuild_from). If an earlier rebuild was interrupted, the original is already there.
        if not os.path.exists(HUB_MOVED_ASIDE):
            os.rename(HUB_PREFIX, HUB_MOVED_ASIDE)
    os.makedirs(INSTALL_PREFIX, exist_ok=True)
    os.chmod(INSTALL_PREFIX, 0o755)
    run([sys.executable, "-m", "venv", "--clear", HUB_PREFIX], "creating the hub venv")
    return True


UV_CACHE_DIR = "/var/cache/tljh/uv"
HUB_LOCK = os.path.join(HUB_PREFIX, ".lock")

# Kept out of the hub env like tljh.system.venvs.EXCLUDED (see there why): a second off every hub start.
EXCLUDED = ["rfc3987-syntax"]


def install_installer(pip_spec, editable):
    import tempfile

    pip = os.path.join(HUB_PREFIX, "bin", "pip")
    run([pip, "install", "--quiet", "--upgrade", "uv>=0.13,<0.14"], "installing uv")
    uv = os.path.join(HUB_PREFIX, "bin", "uv")
    overrides = tempfile.NamedTemporaryFile("w", suffix=".txt")
    overrides.write("".join('{}; sys_platform == "never"\n'.format(name) for name in EXCLUDED))
    overrides.flush()
    cmd = [uv, "pip", "install", "--python", HUB_PYTHON, "--compile-bytecode", "--reinstall-package", DIST_NAME]
    cmd += ["--overrides", overrides.name]
    cmd += ["--editable", pip_spec] if editable else [pip_spec]
    env = dict(os.environ)
    # Trust the system CA store like apt and curl do (servers behind TLS-inspecting proxies).
    env.setdefault("UV_SYSTEM_CERTS", "1")
    env.setdefault("UV_CACHE_DIR", UV_CACHE_DIR)
    env.pop("VIRTUAL_ENV", None)
    if env["UV_CACHE_DIR"] == UV_CACHE_DIR:
        # uv makes its lock files world-writable (0666); in a root-only cache nobody else can reach them.
        os.makedirs(UV_CACHE_DIR, mode=0o700, exist_ok=True)
        os.chmod(UV_CACHE_DIR, 0o700)
    try:
        run(cmd, "installing {}".format(pip_spec), env=env)
    finally:
        overrides.close()
    # A hub env made before the exclusion still holds them.
    run([uv, "pip", "uninstall", "--python", HUB_PYTHON] + EXCLUDED, "removing excluded packages", env=env)
    # uv leaves <venv>/.lock mode 0666 (whoever runs uv next may lock it); it keeps the mode of an existing
    # lock, so one chmod keeps every user from writing into the hub environment (tljh.system.venvs does the same).
    if os.path.exists(HUB_LOCK):
        os.chmod(HUB_LOCK, 0o644)


# --- progress page ----------------------------------------------------------------------------------

PROGRESS_FILE = "/run/tljh-progress.json"

# Runs in a child process so the installer can stop it (by PID) just before Caddy takes port 80.
# It shows step names and states only: no log lines, no secrets.
PROGRESS_SERVER = r'''
import html, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

progress_file = sys.argv[1]

class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with open(progress_file) as f:
                steps = json.load(f).get("steps", [])
        except (OSError, ValueError):
            steps = []
        marks = {"done": "&#10003;", "running": "&#8230;", "failed": "&#10007;", "pending": ""}
        rows = "".join(
            "<li class='%s'>%s %s%s</li>" % (
                html.escape(s["state"]), marks.get(s["state"], ""), html.escape(s["name"]),
                " (%.1f s)" % s["seconds"] if s.get("seconds") is not None else "")
            for s in steps)
        body = ("<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
                "<title>Installing JupyterHub</title><style>body{font-family:sans-serif;max-width:40em;margin:3em auto}"
                ".done{color:#2a7}.running{font-weight:bold}.failed{color:#c33}.pending{color:#888}</style></head>"
                "<body><h1>Installing JupyterHub&hellip;</h1><p>This page refreshes itself; the hub replaces it "
                "when it is ready.</p><ol>%s</ol></body></html>" % rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("", 80), Page).serve_forever()
'''


def write_progress(steps):
    import json

    tmp = PROGRESS_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"steps": steps}, f)
    os.replace(tmp, PROGRESS_FILE)


def start_progress_page():
    write_progress([{"name": "Preparing the hub environment", "state": "running", "seconds": None}])
    return subprocess.Popen([sys.executable, "-c", PROGRESS_SERVER, PROGRESS_FILE])


# --- main ---------------------------------------------------------------------------------------------


def split_args(argv):
    """Take bootstrap's own flags out; everything else goes to the installer."""
    show_progress = False
    version = None
    rest = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            say(USAGE)
            sys.exit(0)
        elif arg == "--show-progress-page":
            show_progress = True
        elif arg == "--version":
            if i + 1 >= len(argv):
                raise BootstrapError("--version needs a value, e.g. --version 2.0.0")
            version = argv[i + 1]
            i += 1
        elif arg.startswith("--version="):
            version = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return show_progress, version, rest


def refuse(error):
    if error.tljh_line:
        print(error.tljh_line, flush=True)
    print("bootstrap: error: {}".format(error), file=sys.stderr, flush=True)
    return 1


def main(argv, script=None):
    try:
        show_progress, version, installer_args = split_args(argv)
        # Root first (TLJH has no such check; a non-root run needs only that one line), then TLJH's order,
        # so that e.g. an old release in a container without systemd gets TLJH's first line (the OS's).
        check_root()
        check_os(read_os_release())
        check_python()
        check_systemd()
        upgrading = os.path.isdir(HUB_PREFIX)
        check_resources(upgrading)
        pip_spec, origin, from_index = choose_installer(os.environ, version, source_checkout(script))
        if from_index:
            check_published(os.environ)
    except BootstrapError as e:
        return refuse(e)

    editable = os.environ.get("TLJH_BOOTSTRAP_DEV", "no") == "yes"

    progress = None
    try:
        if show_progress:
            progress = start_progress_page()
        say("Upgrading The Littlest JupyterHub in place..." if upgrading else "Installing The Littlest JupyterHub...")
        ensure_apt_packages(pip_spec)
        if ensure_hub_venv():
            say("Created the hub environment at {}".format(HUB_PREFIX))
        say("Installing the installer from {} ({}){}".format(pip_spec, origin, ", editable" if editable else ""))
        install_installer(pip_spec, editable)
    except BootstrapError as e:
        if progress:
            progress.terminate()
        return refuse(e)

    installer_args, password_fd = hand_over_passwords(installer_args)
    cmd = [HUB_PYTHON, "-m", "tljh.installer"] + installer_args
    if not progress:
        os.execv(HUB_PYTHON, cmd)
    env = dict(os.environ, TLJH_PROGRESS_FILE=PROGRESS_FILE, TLJH_PROGRESS_PAGE_PID=str(progress.pid))
    try:
        return subprocess.call(cmd, env=env, pass_fds=() if password_fd is None else (password_fd,))
    finally:
        if progress.poll() is None:
            progress.terminate()
            progress.wait()


def hand_over_passwords(installer_args):
    """--admin NAME:PASSWORD -> --admin NAME, the passwords on a pipe (--admin-password-file /dev/fd/N): the
    installer's command line, which every user of the server sees (ps) for the whole install, holds none.
    Returns (installer args, the pipe's read end or None)."""
    args, secrets, i = [], [], 0
    while i < len(installer_args):
        arg = installer_args[i]
        if arg == "--admin" and i + 1 < len(installer_args):
            value, i = installer_args[i + 1], i + 2
        elif arg.startswith("--admin="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            args.append(arg)
            i += 1
            continue
        name, sep, password = value.partition(":")
        args += ["--admin", name]
        if sep:
            secrets.append("{}:{}\n".format(name, password))
    if not secrets:
        return installer_args, None
    print("bootstrap: warning: --admin NAME:PASSWORD shows the password to every user of this server (ps) while "
          "bootstrap runs; use --admin NAME --admin-password-file FILE", file=sys.stderr, flush=True)
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(secrets).encode("utf-8"))
    os.close(write_end)
    os.set_inheritable(read_end, True)
    return args + ["--admin-password-file", "/dev/fd/{}".format(read_end)], read_end


if __name__ == "__main__":
    # Piped from curl, __file__ is "<stdin>": not a checkout.
    sys.exit(main(sys.argv[1:], script=globals().get("__file__")))
