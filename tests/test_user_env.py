"""Reading a venv's packages from its files (it may not run any more) and rebuilding it with them."""

import json
import os

import pytest

from tljh.system import venvs as user_env


def add_dist(prefix, name, version, direct_url=None, python="python3.11"):
    info = os.path.join(prefix, "lib", python, "site-packages", f"{name.replace('-', '_')}-{version}.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url:
        with open(os.path.join(info, "direct_url.json"), "w") as f:
            json.dump(direct_url, f)


@pytest.fixture
def old_venv(tmp_path):
    prefix = str(tmp_path / "user")
    plugin_dir = tmp_path / "my-plugin"
    plugin_dir.mkdir()
    add_dist(prefix, "Jupyter_Server", "2.14.0")
    add_dist(prefix, "pyfiglet", "1.0.2")
    add_dist(prefix, "my-plugin", "0.1", {"url": f"file://{plugin_dir}", "dir_info": {}})
    add_dist(prefix, "gone-plugin", "0.1", {"url": f"file://{tmp_path}/deleted", "dir_info": {}})
    add_dist(prefix, "gitpkg", "1.0", {"url": "https://example.org/r.git", "vcs_info": {"vcs": "git", "commit_id": "abc"}})
    # The interpreter is a dangling link, as after an OS upgrade removed the Python it pointed to.
    os.makedirs(os.path.join(prefix, "bin"))
    os.symlink("/usr/bin/python3.0-removed", os.path.join(prefix, "bin", "python"))
    return prefix, plugin_dir


def test_packages_are_read_without_running_the_interpreter(old_venv):
    prefix, _ = old_venv
    assert not user_env.venv_works(prefix)
    packages = user_env.installed_packages(prefix)
    assert packages["jupyter-server"] == "2.14.0" and packages["pyfiglet"] == "1.0.2"


def test_requirements_reinstall_the_same_things(old_venv):
    prefix, plugin_dir = old_venv
    assert user_env.requirements_of(prefix) == {
        "gitpkg": "gitpkg @ git+https://example.org/r.git@abc",
        "jupyter-server": "Jupyter_Server==2.14.0",
        "my-plugin": f"my-plugin @ file://{plugin_dir}",
        "pyfiglet": "pyfiglet==1.0.2",
    }  # gone-plugin's directory no longer exists: nothing to reinstall it from


def fake_uv(monkeypatch, fail=()):
    installs = []

    def create_venv(prefix):
        os.makedirs(os.path.join(prefix, "lib", "python3.13", "site-packages"))
        add_dist(prefix, "jupyter-server", "2.15.0", python="python3.13")  # the new installer's own version wins

    def pip_install(prefix, requirements, **kw):
        if any(r in fail for r in requirements):
            raise RuntimeError("uv pip install failed")
        installs.append(list(requirements))

    monkeypatch.setattr(user_env, "create_venv", create_venv)
    monkeypatch.setattr(user_env, "pip_install", pip_install)
    return installs


def test_rebuild_moves_aside_restores_then_deletes(old_venv, monkeypatch):
    prefix, plugin_dir = old_venv
    installs = fake_uv(monkeypatch)
    result = user_env.rebuild_from(prefix)
    assert installs == [["gitpkg @ git+https://example.org/r.git@abc", f"my-plugin @ file://{plugin_dir}", "pyfiglet==1.0.2"]]
    assert result.restored == installs[0]
    # A plugin installed from a directory that is gone cannot be reinstalled: said, and the old venv is kept.
    assert result.failed == ["gone-plugin==0.1 (installed from a path that no longer exists)"]
    assert not os.path.exists(user_env.moved_aside(prefix)) and os.path.isdir(result.kept)


def test_rebuild_deletes_the_old_venv_when_everything_came_over(old_venv, monkeypatch):
    prefix, _ = old_venv
    fake_uv(monkeypatch)
    import shutil

    shutil.rmtree(os.path.join(prefix, "lib", "python3.11", "site-packages", "gone_plugin-0.1.dist-info"))
    result = user_env.rebuild_from(prefix)
    assert result.failed == [] and result.kept is None
    assert not os.path.exists(user_env.moved_aside(prefix))


def test_one_unavailable_package_does_not_cost_the_others(old_venv, monkeypatch):
    prefix, plugin_dir = old_venv
    fake_uv(monkeypatch, fail={"gitpkg @ git+https://example.org/r.git@abc"})
    result = user_env.rebuild_from(prefix)
    assert "gitpkg @ git+https://example.org/r.git@abc" in result.failed
    assert result.restored == [f"my-plugin @ file://{plugin_dir}", "pyfiglet==1.0.2"]
    # Something did not come over: the old environment is kept (not deleted), under a name of its own.
    assert result.kept and os.path.isdir(result.kept) and not os.path.exists(user_env.moved_aside(prefix))


def test_interrupted_rebuild_resumes_from_the_moved_venv(old_venv, monkeypatch):
    prefix, _ = old_venv
    os.rename(prefix, user_env.moved_aside(prefix))
    os.makedirs(prefix)  # a half-made new venv, as left by a kill during the rebuild
    installs = fake_uv(monkeypatch)
    result = user_env.rebuild_from(prefix, create=False)
    assert "pyfiglet==1.0.2" in result.restored and installs
    assert not os.path.exists(user_env.moved_aside(prefix))


def tiny_wheel(directory):
    """A one-module wheel, built by hand (no build backend, no network)."""
    import base64
    import hashlib
    import zipfile

    files = {"tinymod.py": b"VALUE = 1\n",
             "tinymod-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinymod\nVersion: 1.0\n",
             "tinymod-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in files.items()) + "tinymod-1.0.dist-info/RECORD,,\n"
    path = os.path.join(directory, "tinymod-1.0-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("tinymod-1.0.dist-info/RECORD", record)
    return path


def test_uv_leaves_no_world_writable_lock_in_the_environment(tmp_path, monkeypatch):
    """uv creates <venv>/.lock with mode 0666 (on purpose, ignoring umask): in a shared environment that lets
    every user write a file in it. pip_install leaves it 0644."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "cache"))
    prefix = str(tmp_path / "env")
    user_env.create_venv(prefix)
    user_env.pip_install(prefix, [tiny_wheel(str(tmp_path))])
    assert "tinymod" in user_env.installed_packages(prefix)
    assert oct(os.stat(user_env.lock_file(prefix)).st_mode & 0o777) == "0o644"
    world_writable = [os.path.join(d, n) for d, dirs, names in os.walk(prefix) for n in dirs + names
                      if not os.path.islink(os.path.join(d, n)) and os.stat(os.path.join(d, n)).st_mode & 0o002]
    assert world_writable == []
