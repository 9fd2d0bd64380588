"""Issue 17: TLJH's habits work here. One machine, scenario in order.

A plugin using every TLJH hook, conda ones included (tqdm from conda-forge, csvtk from bioconda), is installed
while its conda channels are down: the install completes, warns once, `tljh status` lists csvtk. The channels
come up (a local channel built by tests/conda_channel.py, served inside the machine under the alias set in
config.yaml); a rerun installs csvtk. Every hook took effect; csvtk runs in a user's terminal. Then the
scripted login (GET the form, POST with _xsrf from the cookie) right after `reload` under /custom-base/ and
back under /. Last, nothing in any environment is writable by an ordinary user.
"""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from hubclient import HubClient
from machine import Machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import conda_channel  # noqa: E402

PLUGIN = "/srv/tljh-src/integration-tests/plugins/tljh-every-hook-plugin"
RECORD = "/var/log/tljh-every-hook-plugin.jsonl"
CHANNEL_DIR = "/srv/conda-channels"
CHANNEL_PORT = 8765
ADMIN, PASSWORD = "dana", "dana-password-1"
WARNING = "warning: conda packages not installed"


@pytest.fixture(scope="module")
def machine(os_name, tmp_path_factory):
    channels = conda_channel.build_test_channels(tmp_path_factory.mktemp("conda-channels"))
    with Machine.boot(os_name) as m:
        m.copy_checkout()
        m.copy_in(channels, CHANNEL_DIR)
        # What an admin behind a mirror does before installing: conda channel names resolve under this alias.
        m.run("install -d -m 0700 /opt/tljh/config && printf 'conda:\\n  channel_alias: http://127.0.0.1:%d/\\n'"
              f" > /opt/tljh/config/config.yaml" % CHANNEL_PORT)
        yield m


def install(machine):
    result = machine.install_tljh("--admin", f"{ADMIN}:{PASSWORD}", "--plugin", PLUGIN, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def hooks_called(machine):
    text = machine.run(f"cat {RECORD}", check=False).stdout
    return [json.loads(line)["hook"] for line in text.splitlines() if line.strip()]


def test_install_completes_when_the_conda_channels_cannot_be_reached(machine):
    result = install(machine)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1, result.stdout + result.stderr
    assert "csvtk (plugin every_hook_plugin)" in warnings[0]
    assert f"http://127.0.0.1:{CHANNEL_PORT}/" in warnings[0] and "cannot be reached" in warnings[0]
    assert "tqdm" not in warnings[0]  # from PyPI, no channel needed
    status = machine.run("tljh status", check=False)
    assert status.returncode != 0, status.stdout
    assert "csvtk" in status.stdout and "NOT INSTALLED" in status.stdout, status.stdout


def test_rerun_installs_the_conda_program_once_the_channels_answer(machine):
    machine.run(f"systemd-run --unit=conda-channels -p WorkingDirectory={CHANNEL_DIR} "
                f"python3 -m http.server {CHANNEL_PORT} --bind 127.0.0.1")
    machine.run(f"for i in $(seq 50); do curl -sf http://127.0.0.1:{CHANNEL_PORT}/bioconda/noarch/repodata.json"
                " >/dev/null && exit 0; sleep 0.2; done; exit 1")
    result = install(machine)
    assert WARNING not in result.stdout + result.stderr
    status = machine.run("tljh status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "conda packages: csvtk" in status.stdout
    assert machine.run("readlink /opt/tljh/user/bin/csvtk").stdout.strip() == "/opt/tljh/conda/bin/csvtk"


def test_every_hook_took_effect(machine):
    called = set(hooks_called(machine))
    assert called >= {
        "tljh_extra_user_conda_packages", "tljh_extra_user_conda_channels", "tljh_extra_user_pip_packages",
        "tljh_extra_hub_pip_packages", "tljh_extra_apt_packages", "tljh_custom_jupyterhub_config",
        "tljh_config_post_install", "tljh_post_install",
    }, called
    user_python = "/opt/tljh/user/bin/python"
    assert machine.run(f"{user_python} -c 'import six; print(six.__version__)'").stdout.strip() == "1.16.0"
    # tqdm is PyPI's project, in the user environment itself (not in the conda prefix).
    where = machine.run(f"{user_python} -c 'import tqdm; print(tqdm.__file__)'").stdout.strip()
    assert where.startswith("/opt/tljh/user/lib/"), where
    assert machine.run("/opt/tljh/hub/bin/python -c 'import tomli_w'").returncode == 0
    assert machine.run("command -v tree").returncode == 0
    assert "timeout: 3601" in machine.run("cat /opt/tljh/config/config.yaml").stdout
    page = machine.run("curl -s http://127.0.0.1/hub/login").stdout
    assert "tljh-every-hook-plugin was here" in page


def test_conda_program_runs_in_a_users_terminal(machine):
    async def scenario():
        async with HubClient(machine.url()) as dana:
            await dana.login(ADMIN, PASSWORD)
            await dana.start_server()
            output = await dana.run_in_terminal("csvtk version; python -c 'import tqdm; print(\"tqdm\", tqdm.__version__)'")
            await dana.stop_server()
            return output

    output = asyncio.run(scenario())
    assert "csvtk v0.30.0 (version)" in output, output
    assert "tqdm 4." in output, output
    text = machine.run(f"cat {RECORD}").stdout
    created = [json.loads(line)["arguments"] for line in text.splitlines() if "tljh_new_user_create" in line]
    assert created == [{"username": f"jupyter-{ADMIN}"}]


def login_spawn_kernel(machine, base_url):
    """The scripted login inside the machine (over ::1, then 127.0.0.1), then a person's login, spawn and 1+1
    through the public port from outside."""
    script = machine.run(f"python3 /srv/tljh-src/integration-tests/scripted_login.py {base_url} {ADMIN} {PASSWORD}",
                         check=False)
    assert script.returncode == 0, script.stdout + script.stderr
    assert script.stdout.split()[:2] == ["200", "302"], script.stdout

    async def scenario():
        async with HubClient(machine.url(base_url)) as dana:
            await dana.login(ADMIN, PASSWORD)
            await dana.check_one_plus_one()

    asyncio.run(scenario())


def test_scripted_login_spawn_and_kernel_under_a_custom_base_url_right_after_reload(machine):
    machine.run("tljh-config set base_url /custom-base && tljh-config reload")
    login_spawn_kernel(machine, "/custom-base/")


def test_scripted_login_spawn_and_kernel_back_under_root_right_after_reload(machine):
    machine.run("tljh-config unset base_url && tljh-config reload")
    login_spawn_kernel(machine, "/")


def test_nothing_in_any_environment_is_writable_by_an_ordinary_user(machine):
    environments = machine.run(
        "ls -d /opt/tljh/hub /opt/tljh/user /opt/tljh/conda /opt/tljh/envs/* 2>/dev/null", check=False
    ).stdout.split()
    assert {"/opt/tljh/hub", "/opt/tljh/user", "/opt/tljh/conda"} <= set(environments), environments
    # As a hub user (one that exists since the spawn) and as nobody: find's -writable asks the kernel (access(2)).
    for user in (f"jupyter-{ADMIN}", "nobody"):
        found = machine.run(["find", *environments, "-writable"], user=user, check=False, cwd="/")
        assert found.stdout == "", f"writable by {user}:\n{found.stdout[:3000]}"
        assert found.returncode == 0, found.stderr[:2000]  # every path was visited
    # uv's and rattler's caches hold world-writable lock files: nobody but root may reach them.
    assert machine.run("stat -c %a /var/cache/tljh/uv /var/cache/tljh/rattler").stdout.split() == ["700", "700"]
