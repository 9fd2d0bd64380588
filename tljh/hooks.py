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
    """Return a list of conda packages for the user environment.

    There is no conda here: the installer stops with an error naming the plugin if any are returned.
    """


@hookspec
def tljh_extra_user_conda_channels():
    """Return a list of conda channels for the user environment (refused like conda packages)."""


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
