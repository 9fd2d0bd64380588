"""Session layers: their files as data, their creation on disk, and real pip runs in one (as a user and as root).

The pip runs use a real virtual environment made with ``python -m venv`` (pip from ensurepip, offline) and
wheels built here, installed with ``--no-index``: no network. Users' runs are made as ``nobody`` (the suite
runs as root, and the layer's pip behaves differently for root, on purpose).
"""

import json
import os
import shutil
import subprocess
import tempfile
import zipfile

import pytest

from tljh.hub import session_installs
from tljh.hub.session_installs import Environment, Kernel, SessionLayer

NOBODY = 65534


def fake_env(prefix, pins={"jupyter-server": "2.21.1", "jupyterhub": "6.1.1"}):
    site = os.path.join(prefix, "lib", "python3.11", "site-packages")
    for name, version in pins.items():
        os.makedirs(os.path.join(site, f"{name.replace('-', '_')}-{version}.dist-info"))
    os.makedirs(os.path.join(prefix, "bin"))
    with open(os.path.join(prefix, "pyvenv.cfg"), "w") as f:
        f.write("home = /usr/bin\ninclude-system-site-packages = false\nversion_info = 3.11.2\nuv = 0.13\n")
    kernel = os.path.join(prefix, "share", "jupyter", "kernels", "python3")
    os.makedirs(kernel)
    with open(os.path.join(kernel, "kernel.json"), "w") as f:
        json.dump({"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "Python 3 (ipykernel)", "language": "python"}, f)
    open(os.path.join(kernel, "logo-64x64.png"), "wb").close()
    return prefix


def test_environment_facts_are_read_from_its_files(tmp_path):
    env = Environment.read(fake_env(str(tmp_path / "user")))
    assert env.python_dir == "python3.11"
    assert env.pins == {"jupyter-server": "2.21.1", "jupyterhub": "6.1.1"}
    assert "home = /usr/bin" in env.pyvenv_cfg and "include-system" not in env.pyvenv_cfg and "uv =" not in env.pyvenv_cfg


def test_layer_is_a_venv_whose_packages_come_before_the_environments(tmp_path):
    prefix = fake_env(str(tmp_path / "user"))
    env = Environment.read(prefix)
    layer = SessionLayer("/sessions/jupyter-alice", env, session_installs.python_kernels(prefix, []), uv="/hub/uv")
    files, links = layer.contents()
    assert files["pyvenv.cfg"][0].endswith("include-system-site-packages = false\n")
    assert files["lib/python3.11/site-packages/_tljh_environment.pth"][0] == (
        f"import site; site.addsitedir({prefix + '/lib/python3.11/site-packages'!r})\n")
    assert links["bin/python"] == links["bin/python3.11"] == f"{prefix}/bin/python"
    assert files["protected.txt"][0] == "jupyter-server==2.21.1\njupyterhub==6.1.1\n"
    assert "constraint = /sessions/jupyter-alice/protected.txt" in files["pip.conf"][0]
    assert "cache-dir = /sessions/jupyter-alice/cache/pip" in files["pip.conf"][0]
    assert files["bin/pip"] == (
        '#!/bin/sh\nexec /sessions/jupyter-alice/bin/python -I -S '
        '/sessions/jupyter-alice/lib/python3.11/site-packages/tljh_session.py pip "$@"\n', 0o755)
    info = json.loads(files["tljh-session.json"][0])
    assert info["pip"] == f"{prefix}/bin/pip" and info["uv"] == "/hub/uv"  # the environment has no uv
    # The stock kernelspec (argv "python" = the server's interpreter) is taken over by the layer's python.
    spec = json.loads(files["share/jupyter/kernels/python3/kernel.json"][0])
    assert spec["argv"][0] == "/sessions/jupyter-alice/bin/python" and spec["argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert links["share/jupyter/kernels/python3/logo-64x64.png"] == f"{prefix}/share/jupyter/kernels/python3/logo-64x64.png"
    assert layer.jupyter_path("/opt/tljh/envs/data/share/tljh") == (
        "/sessions/jupyter-alice/share/jupyter:/opt/tljh/envs/data/share/tljh")
    assert layer.unit_properties()["ExecStopPost"] == "+/bin/rm -rf /sessions/jupyter-alice"


def test_kernels_of_other_environments_get_a_layer_of_their_own(tmp_path):
    user = fake_env(str(tmp_path / "user"))
    data = fake_env(str(tmp_path / "envs" / "data"), pins={"jupyter-server": "2.20.0"})
    offered = tmp_path / "envs" / "data" / "share" / "tljh"
    os.makedirs(offered / "kernels" / "data")
    (offered / "kernels" / "data" / "kernel.json").write_text(json.dumps(
        {"argv": [f"{data}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "data"}))
    layer = SessionLayer.for_server("jupyter-alice", user, [str(offered)])
    files, links = layer.contents()
    sub = layer.layer_of(data)
    assert sub.startswith(layer.path + "/envs/") and sub != layer.layer_of(user) == layer.path
    rel = os.path.relpath(sub, layer.path)
    spec = json.loads(files["share/jupyter/kernels/data/kernel.json"][0])
    assert spec["argv"][0] == f"{sub}/bin/python"
    assert spec["env"]["PATH"] == f"{sub}/bin:${{PATH}}"  # `!pip` in that kernel is its layer's pip
    assert files[f"{rel}/protected.txt"][0] == "jupyter-server==2.20.0\n"
    assert links[f"{rel}/bin/python"] == f"{data}/bin/python"


def test_create_gives_the_user_a_private_layer_and_replaces_leftovers(tmp_path, monkeypatch):
    monkeypatch.setattr(session_installs.paths, "SESSIONS_DIR", str(tmp_path / "sessions"))
    prefix = fake_env(str(tmp_path / "user"))
    layer = SessionLayer.for_server("jupyter-alice", prefix, [])
    os.makedirs(layer.path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    os.symlink(outside, os.path.join(layer.path, "cache"))  # a leftover the user could have planted
    layer.create(4242, 4243)
    assert oct(os.stat(tmp_path / "sessions").st_mode & 0o777) == "0o711"
    st = os.stat(layer.path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4243, 0o700)
    for root, dirs, names in os.walk(layer.path):
        for name in dirs + names:
            assert os.lstat(os.path.join(root, name)).st_uid == 4242
    assert (outside / "keep").exists() and not os.path.islink(os.path.join(layer.path, "cache"))
    assert sorted(os.listdir(tmp_path / "sessions")) == ["jupyter-alice"]  # no temporary directory left
    layer.remove()
    assert not os.path.exists(layer.path)


# ---- real pip in a real layer


def make_wheel(directory, name, version, requires=()):
    """A pure-Python wheel of module ``name`` whose __version__ is ``version``."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = os.path.join(directory, f"{dist}-py3-none-any.whl")
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    module = name.replace("-", "_")
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{module}/__init__.py", f"__version__ = {version!r}\n")
        whl.writestr(f"{dist}.dist-info/METADATA", meta)
        whl.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture(scope="module")
def world():
    """A real venv with pip (the shared environment, root-owned) holding tinypkg 1.0 and a fake
    jupyter-server 2.0, and a wheel directory; in a directory nobody can traverse (pytest's are 0700)."""
    base = tempfile.mkdtemp(prefix="tljh-session-test-", dir="/var/tmp")
    os.chmod(base, 0o755)
    prefix = os.path.join(base, "user")
    # The system python3: the test interpreter may live where nobody cannot reach (pyenv under /root).
    subprocess.run(["/usr/bin/python3", "-m", "venv", prefix], check=True)
    wheels = os.path.join(base, "wheels")
    os.makedirs(wheels)
    for name, version in [("tinypkg", "1.0"), ("tinypkg", "0.9"), ("jupyter-server", "2.0"), ("jupyter-server", "1.0"),
                          ("needs-old-server", "1.0")]:
        make_wheel(wheels, name, version, requires=["jupyter-server<2"] if name == "needs-old-server" else ())
    subprocess.run([f"{prefix}/bin/python", "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
                    "tinypkg==1.0", "jupyter-server==2.0"], check=True)
    yield base, prefix, wheels
    shutil.rmtree(base)


@pytest.fixture
def layer(world, monkeypatch):
    base, prefix, _ = world
    monkeypatch.setattr(session_installs.paths, "SESSIONS_DIR", os.path.join(base, "sessions"))
    layer = SessionLayer.for_server("jupyter-nobody", prefix, [])
    layer.create(NOBODY, NOBODY)
    yield layer
    layer.remove()


def as_nobody(layer, *cmd, **kw):
    env = {"PATH": f"{layer.bin_dir}:/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
                          env=env, capture_output=True, text=True, **kw)


def site_files(layer):
    return sorted(os.path.relpath(os.path.join(r, n), layer.path) for r, _, ns in os.walk(layer.path) for n in ns)


def test_pip_installs_into_the_layer_and_shadows_the_environment(world, layer):
    _, prefix, wheels = world
    r = as_nobody(layer, "pip", "install", "--no-index", "--find-links", wheels, "tinypkg==0.9")
    assert r.returncode == 0, r.stderr
    assert "outside environment" in r.stdout  # pip leaves the environment's 1.0 alone
    got = as_nobody(layer, "python", "-c", "import tinypkg; print(tinypkg.__version__, tinypkg.__file__)").stdout.split()
    assert got == ["0.9", os.path.join(layer.path, "lib", layer.environment.python_dir, "site-packages/tinypkg/__init__.py")]
    shared = subprocess.run([f"{prefix}/bin/python", "-c", "import tinypkg; print(tinypkg.__version__)"],
                            capture_output=True, text=True).stdout.strip()
    assert shared == "1.0"


def test_pip_user_goes_to_the_layer(world, layer):
    _, _, wheels = world
    r = as_nobody(layer, "pip", "install", "--user", "--no-index", "--find-links", wheels, "tinypkg==0.9")
    assert r.returncode == 0, r.stderr
    assert "session" in r.stderr
    assert os.path.isdir(os.path.join(layer.path, "lib", layer.environment.python_dir, "site-packages/tinypkg"))


def test_replacing_the_servers_package_is_refused_with_a_reason_unless_allowed(world, layer):
    _, _, wheels = world
    before = site_files(layer)
    for spec in ("jupyter-server==1.0", "needs-old-server"):
        r = as_nobody(layer, "pip", "install", "--no-index", "--find-links", wheels, spec)
        assert r.returncode != 0
        assert "jupyter-server==2.0" in r.stdout + r.stderr  # pip's own explanation is passed through
        assert "--allow-server-change" in r.stderr.splitlines()[-1]
        assert site_files(layer) == before
    r = as_nobody(layer, "python", "-m", "pip", "install", "--no-index", "--find-links", wheels, "jupyter-server==1.0")
    assert r.returncode != 0 and "(constraint) jupyter-server==2.0" in r.stdout  # pip.conf: no way around by -m
    r = as_nobody(layer, "pip", "install", "--allow-server-change", "--no-index", "--find-links", wheels, "jupyter-server==1.0")
    assert r.returncode == 0, r.stderr


def test_a_failed_install_changes_nothing(world, layer):
    _, _, wheels = world
    before = site_files(layer)
    r = as_nobody(layer, "pip", "install", "--no-index", "--find-links", wheels, "no-such-package")
    assert r.returncode != 0 and "No matching distribution found for no-such-package" in r.stderr
    assert "--allow-server-change" not in r.stderr
    assert site_files(layer) == before


def test_root_pip_is_the_environments(world, layer):
    _, prefix, wheels = world
    r = subprocess.run([os.path.join(layer.bin_dir, "pip"), "--version"], capture_output=True, text=True,
                       env={"PATH": f"{layer.bin_dir}:/usr/bin:/bin"})
    assert r.returncode == 0 and f"{prefix}/lib/{layer.environment.python_dir}/site-packages/pip" in r.stdout
