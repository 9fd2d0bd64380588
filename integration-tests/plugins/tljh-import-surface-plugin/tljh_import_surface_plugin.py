"""A plugin written the way published TLJH plugins are: it imports, in their own spellings, every name of
TLJH that tests/test_plugin_import_surface.py lists (from reading those plugins) and uses them in its hooks.
Each use is recorded, so the integration test can check that the hooks ran and what they did."""

import json
import os

import tljh.utils
from tljh import systemd, utils
from tljh.config import CONFIG_DIR, CONFIG_FILE, HUB_ENV_PREFIX, INSTALL_PREFIX, STATE_DIR, USER_ENV_PREFIX
from tljh.conda import ensure_pip_packages, fix_permissions, get_conda_package_versions
from tljh.configurer import CONFIG_FILE as CONFIGURER_CONFIG_FILE
from tljh.configurer import apply_config, load_config
from tljh.hooks import hookimpl
from tljh.normalize import generate_system_username
from tljh.systemd import check_service_active
from tljh.user import ensure_group, ensure_user_group
from tljh.user_creating_spawner import UserCreatingSpawner
from tljh.utils import get_plugin_manager, run_subprocess

RECORD = "/var/log/tljh-import-surface-plugin.jsonl"
GROUP = "surface-plugin"
UNIT = "tljh-surface-plugin.service"


def record(event, **details):
    with open(RECORD, "a") as f:
        f.write(json.dumps({"event": event, **details}) + "\n")


@hookimpl
def tljh_extra_apt_packages():
    return []


@hookimpl
def tljh_post_install():
    # tljh-shared-directory, tljh-opendatacube, tljh-new-user, tljh-jetpack: a group for everyone.
    ensure_group(GROUP)
    # tljh-voila-gallery: a unit of the plugin's own, installed and started with TLJH's systemd names.
    systemd.install_unit(UNIT, "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
                               "[Install]\nWantedBy=multi-user.target\n")
    systemd.reload_daemon()
    systemd.restart_service(UNIT)
    systemd.enable_service(UNIT)
    # tljh-jetpack: run programs with TLJH's helper, install into the user environment, fix permissions.
    utils.run_subprocess([os.path.join(USER_ENV_PREFIX, "bin", "python"), "-c", "print(1)"])
    tljh.utils.run_subprocess(["true"])
    ensure_pip_packages(USER_ENV_PREFIX, ["pyfiglet==1.0.2"])
    own_dir = os.path.join(STATE_DIR, "surface-plugin")
    os.makedirs(own_dir, exist_ok=True)
    fix_permissions(own_dir)
    config = load_config()
    record(
        "tljh_post_install",
        unit_active=check_service_active(UNIT),
        config_file=CONFIG_FILE == CONFIGURER_CONFIG_FILE == os.path.join(CONFIG_DIR, "config.yaml"),
        prefixes=[INSTALL_PREFIX, HUB_ENV_PREFIX, USER_ENV_PREFIX],
        base_url=config["base_url"],
        python=get_conda_package_versions(USER_ENV_PREFIX).get("python"),
        plugins=sorted(name for name, _ in get_plugin_manager().list_name_plugin()),
        run_subprocess=callable(run_subprocess),
    )


@hookimpl
def tljh_new_user_create(username):
    # tljh-docker-rights: put every new account in a group.
    ensure_user_group(username, GROUP)
    record("tljh_new_user_create", username=username)


@hookimpl
def tljh_custom_jupyterhub_config(c):
    # tljh-repo2docker and tljh-plasma read TLJH's config and re-apply it; tljh-repo2user-dir finds accounts.
    apply_config(load_config(), c)
    record("tljh_custom_jupyterhub_config", spawner=UserCreatingSpawner.__name__,
           account=generate_system_username("jupyter-alice"))
