"""What a user's server does, at its start, while it runs and when it stops, that its users get nothing from on
this hub.

A start is mostly CPU (Python imports and Jupyter Server loading its extensions), and a class that logs in at
once waits for the sum of its starts, beside the servers already running. Each flag here removes work that
every server did for nothing; each has a spawner setting that puts it back. They are command-line flags of the server, so they win over
Jupyter config files; extensions enabled the usual way (a package's ``jupyter_server_config.d`` file, or
``jupyter server extension enable``) still load. Numbers: docs/explanation/performance.md, "What a server
start costs" (benchmarks/start_cpu.py).
"""

# jupyter-lsp, a dependency of JupyterLab, searches at every start for language servers (python-lsp-server,
# pyright, ...) to offer JupyterLab's code intelligence through. An environment has none unless an admin
# installs one, and the search costs every start its CPU whether it finds one or not.
LANGUAGE_SERVER_EXTENSION = "jupyter_lsp"


def server_args(language_servers: bool, lab_extension_manager: str, resource_metrics: bool, given=()) -> list[str]:
    """The server flags for the spawner's ``language_servers``, ``lab_extension_manager`` and
    ``resource_metrics`` settings, less those whose option is in ``given`` (the admin's ``Spawner.args``):
    traitlets refuses a server whose command line gives an option like ``--LabApp.extension_manager`` twice."""
    args = []
    if not language_servers:
        args.append(f"--ServerApp.jpserver_extensions={LANGUAGE_SERVER_EXTENSION}=False")
    if lab_extension_manager:
        args.append(f"--LabApp.extension_manager={lab_extension_manager}")
    if not resource_metrics:
        # jupyter-resource-usage refreshes its Prometheus gauges every second in every server, idle or not; its
        # memory display in JupyterLab asks its own API, computed when asked, and works without them.
        args.append("--ResourceUseDisplay.enable_prometheus_metrics=False")
    taken = {_option(a) for a in given}
    return [a for a in args if _option(a) not in taken]


def _option(arg: str) -> str:
    return arg.split("=", 1)[0]


# When a server stops (Stop My Server, the idle culler, the hub stopping it), Python's finalization collects
# garbage over the whole heap several times: about half a second of CPU per stop (measured: a stop's server CPU
# 610-650 ms with, 90-110 ms without), for memory the operating system takes back anyway, while a class's starts
# wait for the CPU. Freezing the heap on the way out (gc.freeze, from an atexit handler) makes those
# collections skip it. What exit does besides (atexit handlers, logging's flush, objects freed by their
# reference counts) runs as before; only objects that nothing but a reference cycle keeps alive are no longer
# finalized at exit. The spawner's ``exit_collection`` setting says which, through this variable; the file
# below, which the installer writes where every Jupyter server reads its config, acts on it.
EXIT_COLLECTION_VARIABLE = "TLJH_SERVER_EXIT_COLLECTION"

SERVER_CONFIG_MARKER = "# Managed by The Littlest JupyterHub (tljh)"
SERVER_CONFIG = f"""\
{SERVER_CONFIG_MARKER}: its installer rewrites this file, `tljh uninstall` removes it.
#
# A user's server that stops spends about half a second of CPU in Python's final garbage collections over its
# whole heap, memory the operating system takes back anyway. The hub's spawner sets {EXIT_COLLECTION_VARIABLE}
# in every server (off unless UserCreatingSpawner.exit_collection is true); with "off" the heap is frozen on
# the way out, so those collections skip it. Servers started outside the hub (no such variable) are left as
# they are.
import os

if os.environ.get("{EXIT_COLLECTION_VARIABLE}") == "off":
    import atexit
    import gc

    atexit.register(gc.freeze)
"""


def server_environment(exit_collection: bool) -> dict:
    """Environment variables of a user's server for these settings."""
    return {EXIT_COLLECTION_VARIABLE: "on" if exit_collection else "off"}
