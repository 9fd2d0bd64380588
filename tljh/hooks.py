"""Hook specifications for plugins.

Plugins written for The Littlest JupyterHub load unchanged: same pluggy project name (``tljh``), same
entry-point group (``tljh``), same hook names and arguments. A plugin implements hooks with::

    from tljh.hooks import hookimpl

    @hookimpl
    def tljh_extra_user_pip_packages():
        return ["numpy"]
"""

import pluggy

hookspec = pluggy.HookspecMarker("tljh")
hookimpl = pluggy.HookimplMarker("tljh")


@hookspec
def tljh_extra_user_conda_packages():
    """Return a list of conda package specs for the user environment.

    The user environment is a venv, not a conda environment. A package whose conda-forge build is a PyPI
    project (a short list, e.g. ``tqdm``) is installed from PyPI into the user environment; any other package
    is installed from the channels below (plus conda-forge) into its own prefix, /opt/tljh/conda, and its
    programs are linked into the user environment's bin/. If that fails (a channel cannot be reached), the
    rest of the install completes, the installer warns, and ``tljh status`` lists the packages.
    """


@hookspec
def tljh_extra_user_conda_channels():
    """Return a list of conda channels (names such as ``bioconda``, or URLs) for the conda packages above.

    Names resolve under ``conda.channel_alias`` (https://conda.anaconda.org/ by default); conda-forge is
    always searched after them, as TLJH does.
    """


@hookspec
def tljh_extra_user_pip_packages():
    """Return a list of pip requirement strings to install into the user environment."""


@hookspec
def tljh_extra_hub_pip_packages():
    """Return a list of pip requirement strings to install into the hub environment."""


@hookspec
def tljh_extra_apt_packages():
    """Return a list of apt packages to install, before any user environment packages."""


@hookspec
def tljh_custom_jupyterhub_config(c):
    """Change JupyterHub's traitlets config ``c``; runs when the hub loads its configuration."""


@hookspec
def tljh_config_post_install(config):
    """Change the on-disk config.yaml after installation.

    ``config`` is the parsed file, modified in place; the result is validated and written back
    atomically. Do not overwrite what the admin set explicitly.
    """


@hookspec
def tljh_post_install():
    """Run arbitrary code after installation, after every other hook."""


@hookspec
def tljh_new_user_create(username):
    """Run after the Unix user ``username`` (e.g. ``jupyter-alice``) was created on first spawn."""
