"""The names of TLJH that published TLJH plugins import exist here, with TLJH's signatures, synchronous where
TLJH's are.

PLUGINS lists, for each public plugin read (its repository, and the commit or date read), the names it
imports from ``tljh``. Read in 2026-12 from: the plugins' own source (their ``from tljh... import`` lines and
the calls they make on imported modules). TLJH_ONLY lists names of TLJH's own modules that issue 20 names
(tljh.apt, tljh.conda's installers) though no plugin read imports them: kept for plugins not read.

integration-tests/plugins/tljh-import-surface-plugin imports every name listed here and uses them in its
hooks; test_the_integration_plugin_imports_every_listed_name keeps the two in step, and
integration-tests/test_migrate_tljh.py installs it and checks its hooks ran.
"""

import ast
import asyncio
import importlib
import inspect
from pathlib import Path

import pytest

PLUGINS = {
    # repository (commit read): {module: [names]}; "module:attr" means the plugin imports the module and calls attr.
    "kafonek/tljh-shared-directory (8f82b43)": {"tljh.hooks": ["hookimpl"], "tljh.user": ["ensure_group"]},
    "AMA-Labs/tljh-opendatacube (261edd8)": {"tljh.hooks": ["hookimpl"], "tljh.user": ["ensure_group"]},
    "burstable-ai/tljh-new-user (646ada9)": {"tljh.hooks": ["hookimpl"], "tljh.user": ["ensure_group"]},
    "namin/tljh-docker-rights (a87ebda)": {"tljh.hooks": ["hookimpl"], "tljh.user": ["ensure_user_group"]},
    "aboutaaron/tljh-jetpack (b84aad8)": {
        "tljh.hooks": ["hookimpl"], "tljh.user": ["ensure_group"], "tljh.conda": ["fix_permissions"],
        "tljh.config": ["USER_ENV_PREFIX"], "tljh.utils": ["run_subprocess"],
    },
    "voila-dashboards/tljh-voila-gallery (431b9ec)": {
        "tljh.hooks": ["hookimpl"],
        "tljh.systemd": ["install_unit", "reload_daemon", "restart_service", "enable_service"],
    },
    "plasmabio/plasma tljh-plasma (51f2a84; 7c35493 for check_service_active)": {
        "tljh.hooks": ["hookimpl"], "tljh.configurer": ["CONFIG_FILE", "load_config"],
        "tljh.systemd": ["check_service_active"],
    },
    "plasmabio/tljh-repo2docker (7330e8c and its history)": {
        "tljh.hooks": ["hookimpl"], "tljh.configurer": ["apply_config", "load_config", "CONFIG_FILE"],
        "tljh.config": ["CONFIG_DIR", "INSTALL_PREFIX", "USER_ENV_PREFIX"], "tljh.utils": ["get_plugin_manager"],
        "tljh.user_creating_spawner": ["UserCreatingSpawner"],
    },
    "LTluttmann/tljh-repo2user-dir (01410d2)": {
        "tljh.hooks": ["hookimpl"], "tljh.utils": ["get_plugin_manager"],
        "tljh.normalize": ["generate_system_username"],
    },
    "yuvipanda/tljh-pangeo, yuvipanda/tljh-conda-store, sinzlab/tljh-db, prabhakk-mw/tljh-matlab": {
        "tljh.hooks": ["hookimpl"],
    },
}
TLJH_ONLY = {
    "tljh.apt": ["install_packages", "add_source", "trust_gpg_key"],
    "tljh.conda": ["ensure_pip_packages", "ensure_pip_requirements", "ensure_conda_packages", "get_conda_package_versions"],
    "tljh.user": ["ensure_user", "remove_user", "remove_group", "remove_user_group"],
    "tljh.systemd": ["uninstall_unit", "start_service", "stop_service", "disable_service", "check_service_enabled"],
    "tljh.utils": ["parse_version"],
    "tljh.config": ["CONFIG_FILE", "HUB_ENV_PREFIX", "STATE_DIR"],
}
# TLJH's parameter names (from TLJH's source), for the functions plugins call with keywords or positionally.
SIGNATURES = {
    "tljh.user.ensure_group": ["groupname"],
    "tljh.user.ensure_user": ["username"],
    "tljh.user.ensure_user_group": ["username", "groupname"],
    "tljh.user.remove_user_group": ["username", "groupname"],
    "tljh.systemd.install_unit": ["name", "unit", "path"],
    "tljh.systemd.reload_daemon": [],
    "tljh.systemd.restart_service": ["name"],
    "tljh.systemd.enable_service": ["name"],
    "tljh.systemd.check_service_active": ["name"],
    "tljh.conda.fix_permissions": ["prefix"],
    "tljh.conda.ensure_pip_packages": ["prefix", "packages", "upgrade"],
    "tljh.conda.ensure_pip_requirements": ["prefix", "requirements_path", "upgrade"],
    "tljh.conda.ensure_conda_packages": ["prefix", "packages", "channels", "force_reinstall"],
    "tljh.utils.run_subprocess": ["cmd", "args", "kwargs"],
    "tljh.normalize.generate_system_username": ["username"],
    "tljh.apt.install_packages": ["packages"],
    "tljh.apt.add_source": ["name", "source_url", "section"],
    "tljh.configurer.load_config": ["config_file"],
}


def all_names():
    names = set()
    for modules in [*PLUGINS.values(), TLJH_ONLY]:
        for module, attrs in modules.items():
            names.update((module, attr) for attr in attrs)
    return sorted(names)


@pytest.mark.parametrize("module,name", all_names())
def test_name_exists_and_is_synchronous(module, name):
    value = getattr(importlib.import_module(module), name)
    if callable(value) and not inspect.isclass(value):
        assert not asyncio.iscoroutinefunction(value), f"{module}.{name} is async here; TLJH's is not"


@pytest.mark.parametrize("qualified,parameters", sorted(SIGNATURES.items()))
def test_signature_is_tljhs(qualified, parameters):
    module, _, name = qualified.rpartition(".")
    assert list(inspect.signature(getattr(importlib.import_module(module), name)).parameters) == parameters


def test_generate_system_username_is_tljhs_rule():
    from tljh.normalize import generate_system_username

    assert generate_system_username("jupyter-alice") == "jupyter-alice"
    # Not shortened and not altered below 26 characters, '@' included: TLJH made this account.
    assert generate_system_username("jupyter-bob@uni.example") == "jupyter-bob@uni.example"
    # Longer: cut to 26 and suffixed with 5 hex digits of sha256 (values computed with TLJH's function).
    assert generate_system_username("jupyter-" + "a" * 30) == "jupyter-aaaaaaaaaaaaaaaaaa-5a149"
    assert generate_system_username("jupyter-averyveryverylongname@university.example") == "jupyter-averyveryverylongn-04a07"


def test_run_subprocess_raises_like_tljhs(caplog):
    import subprocess

    from tljh.utils import parse_version, run_subprocess

    run_subprocess(["true"])
    with pytest.raises(subprocess.CalledProcessError):
        run_subprocess(["sh", "-c", "echo broken; exit 3"])
    assert "broken" in caplog.text
    assert parse_version("2.0.1.dev") == (2, 0, 1)


def test_sync_user_faces_work_inside_a_running_event_loop(monkeypatch):
    """tljh.user's functions are sync; a plugin may call them from the hub's loop (a spawner hook)."""
    from tljh import user
    from tljh.system import users

    calls = []

    async def ensure_user_group(username, group):
        calls.append((username, group))
        return True

    monkeypatch.setattr(users, "ensure_user_group", ensure_user_group)

    async def in_the_loop():
        user.ensure_user_group("jupyter-alice", "docker")

    asyncio.run(in_the_loop())
    user.ensure_user_group("jupyter-bob", "docker")
    assert calls == [("jupyter-alice", "docker"), ("jupyter-bob", "docker")]


def test_the_integration_plugin_imports_every_listed_name():
    source = Path(__file__).resolve().parents[1] / "integration-tests/plugins/tljh-import-surface-plugin/tljh_import_surface_plugin.py"
    tree = ast.parse(source.read_text())
    imported = set()
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported.add((node.module, alias.name))
                modules.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
    used_attrs = {(f"tljh.{n.value.id}", n.attr) for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    used_attrs |= {("tljh.utils", n.attr) for n in ast.walk(tree)
                   if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "tljh.utils"}
    missing = [(m, n) for modules_ in PLUGINS.values() for m, names in modules_.items() for n in names
               if (m, n) not in imported and (m, n) not in used_attrs]
    assert not missing, f"the integration plugin does not use: {missing}"
