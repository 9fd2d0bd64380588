"""A TLJH plugin written the way TLJH's documentation describes: every hook, each call recorded."""

import json
import os
import time

from tljh.hooks import hookimpl

RECORD = "/var/log/tljh-test-plugin.jsonl"


def record(hook, **arguments):
    with open(RECORD, "a") as f:
        f.write(json.dumps({"hook": hook, "arguments": arguments, "pid": os.getpid(), "time": time.time()}) + "\n")


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
    record("tljh_custom_jupyterhub_config", c_type=type(c).__name__)
    c.JupyterHub.template_vars = {"announcement": "tljh-test-plugin was here"}


@hookimpl
def tljh_config_post_install(config):
    record("tljh_config_post_install", config_type=type(config).__name__, admins=list(config.get("users", {}).get("admin", [])))
    cull = config.setdefault("services", {}).setdefault("cull", {})
    cull.setdefault("every", 61)


@hookimpl
def tljh_post_install():
    record("tljh_post_install")


@hookimpl
def tljh_new_user_create(username):
    record("tljh_new_user_create", username=username)
