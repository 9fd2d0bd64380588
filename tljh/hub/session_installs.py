"""Per-session package installs: what a user installs with pip in a server lasts until the server stops.

At each start (when ``session_installs`` is on) the hub writes a *session layer* for the server: a virtual
environment made by hand in ``SESSIONS_DIR/<unit>``, on disk, owned by the user, whose site-packages puts the
server environment's packages after its own (one ``.pth`` line). Kernels (through kernelspecs found first on
``JUPYTER_PATH``) and shells (``PATH``) run the layer's python, pip and uv; the server process does not, so
nothing a user installs can break the running server. The unit removes the layer when it stops
(``ExecStopPost``, also after a kill), the next start replaces a leftover, and systemd-tmpfiles empties
``SESSIONS_DIR`` at boot (after a power loss). Design and measurements: docs/explanation/environments.md.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from tljh.system import paths, venvs

# The running server's own packages: the layer keeps them at the environment's versions (pip.conf and
# UV_CONSTRAINT), unless the user passes session_tool.ALLOW_FLAG.
PROTECTED = ("jupyter-server", "jupyterhub")
TOOL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_tool.py")
TOOL_MODULE = "tljh_session"  # its name inside a layer: the kernels' IPython extension and the pip/uv program
PYTHON_NAMES = ("python", "python3")
# systemd-tmpfiles-setup (--boot --remove, before any unit of ours) empties SESSIONS_DIR: layers left by a
# power loss do not survive a boot.
TMPFILES_RULE = (
    "# Written by the TLJH installer: per-session package layers do not survive a reboot.\n"
    f"D {paths.SESSIONS_DIR} 0711 root root -\n"
)  # argv[0] values jupyter_client replaces by the server's interpreter


@dataclass(frozen=True)
class Environment:
    """What a layer needs to know about the environment it sits on (read once per start)."""

    prefix: str
    python_dir: str  # "python3.11": the layer's lib/<python_dir>/site-packages mirrors the environment's
    pyvenv_cfg: str  # the environment's interpreter lines, copied into the layer's pyvenv.cfg
    pins: dict[str, str]  # {name: version} of PROTECTED as installed

    @classmethod
    def read(cls, prefix: str) -> Environment:
        site = venvs.site_packages(prefix)
        if len(site) != 1:
            raise RuntimeError(f"{prefix} is not a virtual environment with one site-packages directory")
        with open(os.path.join(prefix, "pyvenv.cfg")) as f:
            cfg = "".join(line for line in f if line.split("=")[0].strip() in ("home", "implementation",
                                                                               "version_info", "version"))
        return cls(prefix, os.path.basename(os.path.dirname(site[0])), cfg, venvs.dist_versions(prefix, PROTECTED))

    @property
    def site_packages(self) -> str:
        return os.path.join(self.prefix, "lib", self.python_dir, "site-packages")


@dataclass(frozen=True)
class Kernel:
    """A Python kernelspec the server offers, and the environment its interpreter belongs to."""

    name: str
    spec_dir: str
    spec: dict = field(hash=False)
    prefix: str


def python_kernels(server_prefix: str, jupyter_path: list[str]) -> list[Kernel]:
    """The kernels a layer must take over: the environment's stock ``python3`` (argv ``python``, which
    jupyter_client would run with the *server's* interpreter), and each kernelspec on ``jupyter_path`` whose
    argv[0] is the python of a virtual environment (the other environments a server offers)."""
    kernels = {}
    for spec_file in sorted(glob.glob(os.path.join(server_prefix, "share", "jupyter", "kernels", "*", "kernel.json"))):
        spec = _read_spec(spec_file)
        if spec and spec["argv"][0] in PYTHON_NAMES:
            kernels[_name(spec_file)] = Kernel(_name(spec_file), os.path.dirname(spec_file), spec, server_prefix)
    for directory in jupyter_path:
        for spec_file in sorted(glob.glob(os.path.join(directory, "kernels", "*", "kernel.json"))):
            spec = _read_spec(spec_file)
            exe = spec["argv"][0] if spec else ""
            prefix = os.path.dirname(os.path.dirname(exe))
            if os.path.isabs(exe) and os.path.exists(os.path.join(prefix, "pyvenv.cfg")):
                kernels.setdefault(_name(spec_file), Kernel(_name(spec_file), os.path.dirname(spec_file), spec, prefix))
    return list(kernels.values())


def _name(spec_file):
    return os.path.basename(os.path.dirname(spec_file))


def _read_spec(spec_file):
    try:
        with open(spec_file) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec.get("argv"), list) and spec["argv"] else None


class SessionLayer:
    """One server's session layer: its files (pure, from what was read at start) and its life on disk."""

    def __init__(self, path: str, environment: Environment, kernels=(), others=(), uv: str | None = None):
        self.path = path
        self.environment = environment
        self.kernels = list(kernels)
        # Layers over the other environments whose kernels the server offers, by prefix.
        self.others = {e.prefix: e for e in others if e.prefix != environment.prefix}
        self.uv = uv or venvs.uv_binary()

    @classmethod
    def for_server(cls, unit_name: str, prefix: str, jupyter_path: list[str]) -> SessionLayer:
        kernels = python_kernels(prefix, jupyter_path)
        others = [Environment.read(p) for p in sorted({k.prefix for k in kernels} - {prefix})]
        return cls(os.path.join(paths.SESSIONS_DIR, unit_name), Environment.read(prefix), kernels, others)

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.path, "bin")

    @property
    def kernels_dir(self) -> str:
        return os.path.join(self.path, "share", "jupyter")

    def layer_of(self, prefix: str) -> str:
        """Where the layer over ``prefix`` lives: the top for the server's environment, else under envs/."""
        if prefix == self.environment.prefix:
            return self.path
        return os.path.join(self.path, "envs", prefix.strip("/").replace("/", "-"))

    def contents(self) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
        """({relative path: (text, mode)}, {relative path: symlink target}) of the whole layer."""
        files, links = {}, {}
        with open(TOOL_SOURCE) as f:
            tool = f.read()
        for env in (self.environment, *self.others.values()):
            top = self.layer_of(env.prefix)
            rel = os.path.relpath(top, self.path)
            f, l = venv_contents(top, env, tool, self.uv)
            files.update({os.path.normpath(os.path.join(rel, k)): v for k, v in f.items()})
            links.update({os.path.normpath(os.path.join(rel, k)): v for k, v in l.items()})
        for kernel in self.kernels:
            top = self.layer_of(kernel.prefix)
            spec = dict(kernel.spec, argv=[os.path.join(top, "bin", "python"), *kernel.spec["argv"][1:]])
            if top != self.path:
                # `!pip` in this kernel is its own layer's pip (jupyter_client substitutes ${PATH}).
                spec["env"] = dict(spec.get("env") or {}, PATH=os.path.join(top, "bin") + ":${PATH}")
            rel = os.path.join("share", "jupyter", "kernels", kernel.name)
            files[os.path.join(rel, "kernel.json")] = (json.dumps(spec, indent=1) + "\n", 0o644)
            for entry in sorted(os.listdir(kernel.spec_dir)):
                if entry != "kernel.json":
                    links[os.path.join(rel, entry)] = os.path.join(kernel.spec_dir, entry)
        return files, links

    def create(self, uid: int, gid: int) -> None:
        """Write the layer, replacing any leftover, so that the user owns it and could touch none of it
        before it was complete: built in a root-only directory beside it, then renamed into place."""
        _ensure_sessions_dir(os.path.dirname(self.path))
        files, links = self.contents()
        tmp = tempfile.mkdtemp(prefix=".new-", dir=os.path.dirname(self.path))
        try:
            for rel, (text, mode) in files.items():
                _write_new(os.path.join(tmp, rel), text, mode)
            for rel, target in links.items():
                os.makedirs(os.path.dirname(os.path.join(tmp, rel)), mode=0o700, exist_ok=True)
                os.symlink(target, os.path.join(tmp, rel))
            os.makedirs(os.path.join(tmp, "cache"), mode=0o700)
            for root, dirs, names in os.walk(tmp):
                for name in dirs + names:
                    os.lchown(os.path.join(root, name), uid, gid)
            os.chmod(tmp, 0o700)
            os.chown(tmp, uid, gid)
            self.remove()
            os.rename(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)  # does not follow symlinks (fd-based on Linux)

    def unit_properties(self) -> dict[str, str]:
        # "+": as root; runs after a stop, a kill or a crash alike. (No ReadWritePaths= of the layer itself:
        # that makes it a mount point, and rm then fails with EBUSY. Under ProtectSystem=, allow SESSIONS_DIR.)
        return {"ExecStopPost": f"+/bin/rm -rf {self.path}"}

    def jupyter_path(self, existing: str = "") -> str:
        """JUPYTER_PATH with the layer's kernelspecs first (they shadow the environments' of the same name)."""
        return ":".join(p for p in [self.kernels_dir, *existing.split(":")] if p)


def venv_contents(top: str, env: Environment, tool: str, uv: str):
    """The files of one layered venv at ``top`` over ``env`` (see SessionLayer.contents)."""
    site = os.path.join("lib", env.python_dir, "site-packages")
    version = env.python_dir[len("python"):]
    python = os.path.join(top, "bin", "python")
    tool_path = os.path.join(top, site, TOOL_MODULE + ".py")
    run_tool = f'#!/bin/sh\nexec {python} -I -S {tool_path} %s "$@"\n'
    protected = os.path.join(top, "protected.txt")
    env_uv = os.path.join(env.prefix, "bin", "uv")
    files = {
        "pyvenv.cfg": (env.pyvenv_cfg + "include-system-site-packages = false\n", 0o644),
        # addsitedir, not a bare path, so the environment's own .pth files are processed as well.
        os.path.join(site, "_tljh_environment.pth"): (f"import site; site.addsitedir({env.site_packages!r})\n", 0o644),
        os.path.join(site, TOOL_MODULE + ".py"): (tool, 0o644),
        "tljh-session.json": (json.dumps({
            "pip": os.path.join(env.prefix, "bin", "pip"),
            "uv": env_uv if os.path.exists(env_uv) else uv,
            "constraints": protected,
            "pins": [f"{name}=={v}" for name, v in sorted(env.pins.items())],
        }, indent=1) + "\n", 0o644),
        "protected.txt": ("".join(f"{name}=={v}\n" for name, v in sorted(env.pins.items())), 0o644),
        # pip's site configuration (sys.prefix/pip.conf): read by every pip started from this layer.
        "pip.conf": (f"[global]\ncache-dir = {os.path.join(top, 'cache', 'pip')}\ndisable-pip-version-check = true\n"
                     f"[install]\nconstraint = {protected}\n", 0o644),
        # IPython reads sys.prefix/etc/ipython: keep the environment's settings, add the %pip extension.
        os.path.join("etc", "ipython", "ipython_kernel_config.py"): (
            f"load_subconfig({os.path.join(env.prefix, 'etc', 'ipython', 'ipython_kernel_config.py')!r})\n"
            f"c.InteractiveShellApp.extensions.append({TOOL_MODULE!r})\n", 0o644),
    }
    for name in ("pip", "pip3", "pip" + version):
        files[os.path.join("bin", name)] = (run_tool % "pip", 0o755)
    files[os.path.join("bin", "uv")] = (run_tool % "uv", 0o755)
    links = {os.path.join("bin", name): os.path.join(env.prefix, "bin", "python")
             for name in ("python", "python3", "python" + version)}
    return files, links


def _ensure_sessions_dir(path):
    """The directory of all layers: root's, 0711 (users reach their own layer, cannot list or add)."""
    os.makedirs(path, mode=0o711, exist_ok=True)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != 0:
        raise RuntimeError(f"{path} must be a directory owned by root")
    if st.st_mode & 0o7777 != 0o711:
        os.chmod(path, 0o711)


def _write_new(path, text, mode):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)  # the mode as given, whatever the hub's umask
        f.write(text)


def remove_layer(unit_name: str) -> None:
    """Remove the layer of a server that no longer runs (blocking: call it in a thread).

    The unit's ExecStopPost does this as the unit stops; this covers a stop where it could not run (seen on
    cgroup-v1 machines: "Failed at step CGROUP spawning /bin/rm")."""
    shutil.rmtree(os.path.join(paths.SESSIONS_DIR, unit_name), ignore_errors=True)


def server_prefix(cmd: list[str]) -> str:
    """The environment a server runs from: the venv whose bin/ holds its command (jupyterhub-singleuser)."""
    prefix = os.path.dirname(os.path.dirname(cmd[0])) if cmd and os.path.isabs(cmd[0]) else ""
    return prefix if os.path.exists(os.path.join(prefix, "pyvenv.cfg")) else paths.USER_ENV_PREFIX


def open_layer(unit_name: str, prefix: str, jupyter_path: str, uid: int, gid: int) -> SessionLayer:
    """Read the environment, write the layer (blocking: call it in a thread)."""
    offered = [p for p in jupyter_path.split(":") if p and not p.startswith(paths.SESSIONS_DIR + "/")]
    layer = SessionLayer.for_server(unit_name, prefix, offered)
    layer.create(uid, gid)
    return layer


def configure_spawner(spawner, layer: SessionLayer | None) -> None:
    """Point the server's shells and kernels at ``layer`` (None: at none), undoing what an earlier start of
    the same spawner added: the spawner object lives on between starts, and its settings with it."""
    previous = getattr(spawner, "_tljh_session_layer", None)
    paths_ = list(spawner.extra_paths)
    env = dict(spawner.environment)
    props = dict(spawner.unit_extra_properties)
    jupyter_path = env.get("JUPYTER_PATH", "")
    if previous is not None:
        paths_ = [p for p in paths_ if p != previous.bin_dir]
        jupyter_path = ":".join(p for p in jupyter_path.split(":") if p and p != previous.kernels_dir)
        for key, value in previous.unit_properties().items():
            if props.get(key) == value:
                del props[key]
    if layer is not None:
        paths_ = [layer.bin_dir, *paths_]
        jupyter_path = layer.jupyter_path(jupyter_path)
        props.update(layer.unit_properties())
    if jupyter_path:
        env["JUPYTER_PATH"] = jupyter_path
    else:
        env.pop("JUPYTER_PATH", None)
    spawner.extra_paths, spawner.environment, spawner.unit_extra_properties = paths_, env, props
    spawner._tljh_session_layer = layer
