"""`tljh-config reload` against a real JupyterHub process (systemctl and journalctl replaced by a small fake).

The fake "restart" starts `python -m jupyterhub` with a config that applies config.yaml through
tljh.configurer, like the installed hub; the hub answers on a test port under base_url.
"""

import socket
import subprocess
import sys
import textwrap
import types

import pytest

from tljh.cli import tljh_config as cli
from tljh.settings import reload
from tljh.system import paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubUnit:
    """systemd (restart, state, journal) for one local JupyterHub process: what reload asks of tljh.system.systemd."""

    def __init__(self, tmp_path, config_path, port):
        self.dir = tmp_path
        self.log = tmp_path / "hub.log"
        self.proc = None
        self.restarts = 0
        (tmp_path / "memproxy.py").write_text(
            textwrap.dedent("""
            from jupyterhub.proxy import Proxy

            class MemProxy(Proxy):
                should_start = False
                routes = {}

                async def add_route(self, routespec, target, data):
                    self.routes[routespec] = {"routespec": routespec, "target": target, "data": data}

                async def delete_route(self, routespec):
                    self.routes.pop(routespec, None)

                async def get_all_routes(self):
                    return dict(self.routes)
        """)
        )
        (tmp_path / "jupyterhub_config.py").write_text(
            textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(tmp_path)!r})
            from tljh.hub import configurer
            from tljh.settings.config_file import load_raw

            c = get_config()
            c.JupyterHub.proxy_class = "memproxy.MemProxy"
            c.JupyterHub.hub_bind_url = "http://127.0.0.1:{port}"
            c.JupyterHub.db_url = "sqlite:///{tmp_path}/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = "{tmp_path}/cookie_secret"
            config = load_raw({str(config_path)!r})
            # a plugin that breaks the hub for one particular setting (tljh_custom_jupyterhub_config raising)
            if config.get("limits", {{}}).get("cpu") == 3:
                raise RuntimeError("plugin example refuses limits.cpu 3")
            configurer.apply_config(config, c)
            c.JupyterHub.services = []
            c.JupyterHub.load_roles = []
        """)
        )

    def restart(self, unit, check=True):
        assert unit == "jupyterhub.service"
        self.stop()
        self.restarts += 1
        with open(self.log, "a") as log:
            log.write(f"-- restart {self.restarts} --\n")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.dir / "jupyterhub_config.py")],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    def state(self, unit):
        assert unit == "jupyterhub.service"
        return "active" if self.proc and self.proc.poll() is None else "failed"

    def journal_since(self, unit, since, lines=None):
        text = self.log.read_text()
        return text.rsplit(f"-- restart {self.restarts} --\n", 1)[-1]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    config_path = tmp_path / "config.yaml"
    port = free_port()
    unit = HubUnit(tmp_path, config_path, port)
    monkeypatch.setattr(reload, "systemd", unit)
    monkeypatch.setattr(paths, "HUB_PORT", port)
    monkeypatch.setattr(reload, "LAST_GOOD_FILE", str(tmp_path / "state" / "config.last-good.yaml"))
    unit.config_path = config_path
    unit.port = port
    yield unit
    unit.stop()


def tljh_config(capsys, hub, *args):
    code = cli.main(["--config-path", str(hub.config_path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_reload_with_a_real_hub_then_failed_reload_restores_last_good(capsys, hub):
    assert tljh_config(capsys, hub, "set", "base_url", "/jhub/")[0] == 0
    assert tljh_config(capsys, hub, "set", "auth.type", "dummy")[0] == 0
    code, out, err = tljh_config(capsys, hub, "reload", "--timeout", "90")
    assert code == 0, err + hub.log.read_text()[-3000:]
    assert f"http://127.0.0.1:{hub.port}/jhub/hub/api" in out
    good = hub.config_path.read_text()
    assert open(reload.LAST_GOOD_FILE).read() == good

    # valid for the schema, but the hub will not start (a plugin raises)
    assert tljh_config(capsys, hub, "set", "limits.cpu", "3")[0] == 0
    bad = hub.config_path.read_text()
    code, out, err = tljh_config(capsys, hub, "reload", "--timeout", "90")
    assert code == 1, err
    assert "restored the last good configuration, the hub is back up" in err
    assert "RuntimeError: plugin example refuses limits.cpu 3" in err  # the cause, from the journal
    assert hub.config_path.read_text() == good
    assert (hub.config_path.parent / "config.yaml.rejected").read_text() == bad
    assert hub.proc.poll() is None  # the hub runs again
    assert reload._hub_answers(f"http://127.0.0.1:{hub.port}/jhub/hub/api")
    assert hub.restarts == 3


def test_reload_refuses_invalid_admin_name_without_restarting(capsys, hub):
    assert tljh_config(capsys, hub, "set", "auth.Authenticator.username_pattern", "^[a-z]+$")[0] == 0
    assert tljh_config(capsys, hub, "add-item", "users.admin", "Bob1")[0] == 0
    code, _, err = tljh_config(capsys, hub, "reload")
    assert code == 2
    assert err == (
        "error: users.admin: 'Bob1' is not a valid username for FirstUseAuthenticator; the hub would not start\n"
    )
    assert hub.restarts == 0
