"""What a user's server does, at its start and while it runs, that its users get nothing from on this hub.

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
