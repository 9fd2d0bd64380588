"""The pip and uv of a session layer, and the IPython extension that sends ``%pip`` to them.

Copied by the hub into each session layer's site-packages as ``tljh_session.py`` (see
:mod:`tljh.hub.session_installs`), so a running session never depends on the hub's files. Standard library
only: it runs as ``<layer>/bin/python -I -S tljh_session.py pip|uv ARGS`` from the layer's ``bin/pip`` and
``bin/uv`` scripts, as the user (or as root under ``sudo -E``), and kernels import it as an extension.

What it adds to pip and uv, nothing more:
- as root, ``pip``/``uv`` are the server environment's own (TLJH: ``sudo -E pip install X`` installs for
  everyone);
- ``pip install --user`` installs into the layer (pip refuses ``--user`` inside a virtual environment);
- ``--allow-server-change`` lifts the pins on the running server's packages (``protected.txt``), which pip
  (through the layer's ``pip.conf``) and uv (through ``UV_CONSTRAINT``) otherwise keep; when a command fails on
  one of those pins, one line says why they are there and how to pass them;
- uv's caches and tools stay in the layer, not in the home directory.
"""

import json
import os
import shlex
import subprocess
import sys
import threading

ALLOW_FLAG = "--allow-server-change"
INFO_FILE = "tljh-session.json"


def load_ipython_extension(ip):
    """``%pip`` runs the layer's pip, so a notebook gets the same notes and flag as a terminal."""

    def pip(line):
        ip.system(shlex.quote(os.path.join(sys.prefix, "bin", "pip")) + " " + line)
        print("Note: you may need to restart the kernel to use updated packages.")

    pip.__doc__ = "Run pip in this server's session layer: packages last until the server stops."
    ip.register_magic_function(pip, "line", "pip")


def main(argv):
    tool, args = argv[1], argv[2:]
    # Run with -S, so sys.prefix is not the layer: it is four levels above lib/pythonX.Y/site-packages/<this>.
    layer = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    with open(os.path.join(layer, INFO_FILE)) as f:
        info = json.load(f)
    env = dict(os.environ)
    if os.geteuid() == 0:
        os.execve(info[tool], [info[tool], *args], env)
    allow = ALLOW_FLAG in args
    args = [a for a in args if a != ALLOW_FLAG]
    if tool == "pip":
        if "--user" in args:
            args = [a for a in args if a != "--user"]
            print("note: installing into this server's session packages (pip --user is session-only here)",
                  file=sys.stderr)
        if allow:
            env["PIP_CONSTRAINT"] = os.devnull  # an environment variable beats the layer's pip.conf
        cmd = [os.path.join(layer, "bin", "python"), "-m", "pip", *args]
    else:
        env["VIRTUAL_ENV"] = layer
        for name, sub in (("UV_CACHE_DIR", "cache/uv"), ("UV_TOOL_DIR", "uv/tools"),
                          ("UV_TOOL_BIN_DIR", "bin"), ("UV_PYTHON_INSTALL_DIR", "uv/python")):
            env.setdefault(name, os.path.join(layer, sub))
        env.setdefault("UV_SYSTEM_CERTS", "1")
        if not allow:
            env["UV_CONSTRAINT"] = " ".join(filter(None, [env.get("UV_CONSTRAINT"), info["constraints"]]))
        cmd = [info["uv"], *args]
    if allow or not info["pins"]:
        os.execve(cmd[0], cmd, env)
    sys.exit(run_watching_pins(cmd, env, info["pins"], tool))


def run_watching_pins(cmd, env, pins, tool):
    """Run cmd with its output passed through; explain a failure caused by the pins. Returns the exit code."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hits = []

    def relay(src, dst):
        for line in src:
            dst.write(line)
            dst.flush()
            text = line.decode(errors="replace").lower().replace("_", "-")
            # pip: "The user requested (constraint) jupyter-server==2.21.1"; uv: "Because you require
            # jupyter-server==1.24.0 and jupyter-server==2.21.1, ..."
            if ("constraint" in text or "because" in text) and any(pin in text for pin in pins):
                hits.append(text)

    threads = [threading.Thread(target=relay, args=(proc.stdout, sys.stdout.buffer)),
               threading.Thread(target=relay, args=(proc.stderr, sys.stderr.buffer))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    code = proc.wait()
    if code and hits:
        print(f"\nThis server runs {', '.join(pins)}; its session keeps them, because packages made for other "
              f"versions would not work with the running server. To install anyway, add {ALLOW_FLAG} to the "
              f"{tool} command.", file=sys.stderr)
    return code


if __name__ == "__main__":
    main(sys.argv)
