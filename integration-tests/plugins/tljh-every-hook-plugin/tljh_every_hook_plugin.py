"""A plugin as TLJH users write them: every hook, conda packages included. Each call is recorded."""

import json
import os

from tljh.hooks import hookimpl

RECORD = "/var/log/tljh-every-hook-plugin.jsonl"


def record(hook, **arguments):
    with open(RECORD, "a") as f:
        f.write(json.dumps({"hook": hook, "arguments": arguments, "pid": os.getpid()}) + "\n")


@hookimpl
def tljh_extra_user_conda_packages():
    record("tljh_extra_user_conda_packages")
    # tqdm: conda-forge's package is PyPI's tqdm. csvtk: a program, only on bioconda.
    return ["tqdm", "csvtk"]


@hookimpl
def tljh_extra_user_conda_channels():
    record("tljh_extra_user_conda_channels")
    return ["conda-forge", "bioconda"]


@hookimpl
def tljh_extra_user_pip_packages():
    record("tljh_extra_user_pip_packages")
    return ["six==1.16.0"]


@hookimpl
def tljh_extra_hub_pip_packages():
    record("tljh_extra_hub_pip_packages")
    return ["tomli-w==1.0.0"]


@hookimpl
def tljh_extra_apt_packages():
    record("tljh_extra_apt_packages")
    return ["tree"]


@hookimpl
def tljh_custom_jupyterhub_config(c):
    record("tljh_custom_jupyterhub_config")
    c.JupyterHub.template_vars = {"announcement": "tljh-every-hook-plugin was here"}


@hookimpl
def tljh_config_post_install(config):
    record("tljh_config_post_install")
    config.setdefault("services", {}).setdefault("cull", {}).setdefault("timeout", 3601)


@hookimpl
def tljh_post_install():
    record("tljh_post_install")


@hookimpl
def tljh_new_user_create(username):
    record("tljh_new_user_create", username=username)
