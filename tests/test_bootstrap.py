"""bootstrap.py's checks and argument handling (it is stdlib-only, so it is imported from its path)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).parent.parent / "bootstrap" / "bootstrap.py"


@pytest.fixture(scope="module")
def bootstrap():
    spec = importlib.util.spec_from_file_location("bootstrap", BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "distro, version",
    [("debian", "12"), ("debian", "13"), ("ubuntu", "22.04"), ("ubuntu", "24.04"), ("ubuntu", "26.04"), ("debian", "")],
)
def test_supported_os(bootstrap, distro, version):
    bootstrap.check_os({"ID": distro, "VERSION_ID": version})


OTHER_OS = "The Littlest JupyterHub currently supports Ubuntu or Debian Linux only"


@pytest.mark.parametrize(
    "info, message, tljh_line",
    [
        ({"ID": "debian", "VERSION_ID": "11", "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"},
         "unsupported version: Debian GNU/Linux 11", "The Littlest JupyterHub requires Debian 12 or higher"),
        ({"ID": "ubuntu", "VERSION_ID": "20.04"},
         "unsupported version: ubuntu 20.04", "The Littlest JupyterHub requires Ubuntu 22.04 or higher"),
        ({"ID": "fedora", "VERSION_ID": "40"},
         "unsupported operating system: fedora 40", OTHER_OS),
        ({}, "unsupported operating system: unknown", OTHER_OS),
    ],
)
def test_unsupported_os(bootstrap, info, message, tljh_line):
    with pytest.raises(bootstrap.BootstrapError, match=message) as e:
        bootstrap.check_os(info)
    assert "Supported: Debian 12 or 13, Ubuntu 22.04 or 24.04" in str(e.value)
    # TLJH's own wording (bootstrap/bootstrap.py in jupyterhub/the-littlest-jupyterhub), with our oldest releases.
    assert e.value.tljh_line == tljh_line


def test_os_release_parsing(bootstrap, tmp_path):
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n')
    assert bootstrap.read_os_release(str(f)) == {"PRETTY_NAME": "Ubuntu 24.04.1 LTS", "ID": "ubuntu", "VERSION_ID": "24.04"}


def test_split_args_keeps_installer_flags(bootstrap):
    show, version, rest = bootstrap.split_args(
        ["--admin", "alice:pw", "--show-progress-page", "--version", "2.1.0", "--plugin", "x"]
    )
    assert show is True
    assert version == "2.1.0"
    assert rest == ["--admin", "alice:pw", "--plugin", "x"]


def test_version_needs_value(bootstrap):
    with pytest.raises(bootstrap.BootstrapError, match="--version needs a value"):
        bootstrap.split_args(["--version"])


NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A directory every user can enter. pytest's tmp_path lies under a root-only directory, and so may the
    checkout (a clone in root's home): an unprivileged process reaches only what is copied here."""
    path = Path(tempfile.mkdtemp(prefix="tljh-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_refuses_non_root_before_touching_anything(shared_dir):
    """As an ordinary user, bootstrap refuses before creating anything, even where that user could write."""
    script = shared_dir / "bootstrap.py"
    shutil.copyfile(BOOTSTRAP, script)
    script.chmod(0o644)
    writable = shared_dir / "writable"
    writable.mkdir()
    if os.geteuid() == 0:
        os.chown(writable, NOBODY, NOBODY)
        # the system's python3, as `curl ... | sudo python3 -` uses (a venv's interpreter may live in root's home)
        python = shutil.which("python3", path=os.defpath) or sys.executable
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, str(script), "--admin", "a"]
    else:
        cmd = [sys.executable, str(script), "--admin", "a"]
    prefix = writable / "tljh"
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TLJH_INSTALL_PREFIX": str(prefix)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "bootstrap: error: must run as root. Run: curl -L <url>/bootstrap.py | sudo python3 - --admin <name>"
    ]
    assert not prefix.exists()


def test_python_too_old(bootstrap, monkeypatch):
    monkeypatch.setattr(bootstrap, "MIN_PYTHON", (99, 0))
    with pytest.raises(bootstrap.BootstrapError, match=r"python3 is 3\.\d+; 99\.0 or newer is required") as e:
        bootstrap.check_python()
    assert e.value.tljh_line == f"bootstrap.py must be run with at least Python 99.0, found {sys.version}"


@pytest.fixture
def as_root_on(bootstrap, monkeypatch, tmp_path):
    """main() up to its checks, as root on a server whose os-release and systemd state the test chooses."""

    def server(os_release, systemd=True):
        monkeypatch.setattr(bootstrap, "check_root", lambda: None)
        monkeypatch.setattr(bootstrap, "read_os_release", lambda: os_release)
        monkeypatch.setattr(bootstrap, "SYSTEMD_RUN_DIR", str(tmp_path if systemd else tmp_path / "absent"))
        monkeypatch.setattr(bootstrap, "INSTALL_PREFIX", str(tmp_path / "tljh"))
        monkeypatch.setattr(bootstrap, "HUB_PREFIX", str(tmp_path / "tljh" / "hub"))

    return server


@pytest.mark.parametrize(
    "os_release, systemd, stdout, stderr",
    [
        # An old release without systemd (TLJH's own test: ubuntu:20.04 in Docker): the OS line only.
        ({"ID": "ubuntu", "VERSION_ID": "20.04", "PRETTY_NAME": "Ubuntu 20.04.6 LTS"}, False,
         "The Littlest JupyterHub requires Ubuntu 22.04 or higher\n",
         "bootstrap: error: unsupported version: Ubuntu 20.04.6 LTS. Supported: Debian 12 or 13"),
        ({"ID": "debian", "VERSION_ID": "11", "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"}, True,
         "The Littlest JupyterHub requires Debian 12 or higher\n",
         "bootstrap: error: unsupported version: Debian GNU/Linux 11 (bullseye). Supported: Debian 12 or 13"),
        ({"ID": "alpine", "VERSION_ID": "3.20", "PRETTY_NAME": "Alpine Linux v3.20"}, True,
         "The Littlest JupyterHub currently supports Ubuntu or Debian Linux only\n",
         "bootstrap: error: unsupported operating system: Alpine Linux v3.20. Supported: Debian 12 or 13"),
        ({"ID": "ubuntu", "VERSION_ID": "22.04"}, False,
         "Systemd is required to run TLJH\n",
         "bootstrap: error: systemd is not running as PID 1 on this machine"),
    ],
)
def test_refusal_prints_tljh_line_then_ours(bootstrap, as_root_on, capsys, os_release, systemd, stdout, stderr):
    as_root_on(os_release, systemd=systemd)
    assert bootstrap.main(["--admin", "alice"]) == 1  # TLJH's exit status for every refusal
    out, err = capsys.readouterr()
    assert out == stdout
    assert len(err.splitlines()) == 1 and err.startswith(stderr), err


def make_tree(root, name="the-littlest-jupyterhub", package=True):
    (root / "bootstrap").mkdir(parents=True)
    (root / "bootstrap" / "bootstrap.py").write_text(BOOTSTRAP.read_text())
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "{name}"\nversion = "1"\n'
    )
    if package:
        (root / "tljh").mkdir()
        (root / "tljh" / "__init__.py").write_text("")
    return root / "bootstrap" / "bootstrap.py"


def test_source_checkout_is_this_tree(bootstrap):
    assert bootstrap.source_checkout(str(BOOTSTRAP)) == str(BOOTSTRAP.resolve().parent.parent)


def test_source_checkout_follows_symlinks(bootstrap, tmp_path):
    script = make_tree(tmp_path / "clone")
    (tmp_path / "bootstrap.py").symlink_to(script)
    assert bootstrap.source_checkout(str(tmp_path / "bootstrap.py")) == str((tmp_path / "clone").resolve())


@pytest.mark.parametrize(
    "name, package, where",
    [
        ("other-project", True, "bootstrap/bootstrap.py"),  # another project's tree
        ("the-littlest-jupyterhub", False, "bootstrap/bootstrap.py"),  # no tljh package next to it
        ("the-littlest-jupyterhub", True, "bootstrap.py"),  # a copy at the top of a tree
    ],
)
def test_source_checkout_refuses_other_trees(bootstrap, tmp_path, name, package, where):
    make_tree(tmp_path, name=name, package=package)
    if where == "bootstrap.py":
        (tmp_path / "bootstrap.py").write_text(BOOTSTRAP.read_text())
    assert bootstrap.source_checkout(str(tmp_path / where)) is None


def test_piped_from_curl_is_not_a_checkout(bootstrap, tmp_path, monkeypatch):
    # `python3 -` sets __file__ to "<stdin>": never resolved against the current directory.
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path / "bootstrap")
    (tmp_path / "bootstrap" / "<stdin>").write_text("")
    assert bootstrap.source_checkout("<stdin>") is None
    assert bootstrap.source_checkout(None) is None


@pytest.mark.parametrize(
    "environ, version, checkout, spec, from_index",
    [
        ({}, None, "/root/tljh", "/root/tljh", False),
        ({"TLJH_BOOTSTRAP_PIP_SPEC": "/srv/x"}, None, "/root/tljh", "/srv/x", False),
        ({"TLJH_BOOTSTRAP_PIP_SPEC": "/srv/x"}, "2.0.0", None, "/srv/x", False),
        ({}, "2.0.0", "/root/tljh", "the-littlest-jupyterhub==2.0.0", True),
        ({}, None, None, "the-littlest-jupyterhub", True),
    ],
)
def test_choose_installer(bootstrap, environ, version, checkout, spec, from_index):
    chosen, origin, index = bootstrap.choose_installer(environ, version, checkout)
    assert (chosen, index) == (spec, from_index)
    assert origin


def test_checkout_install_says_so(bootstrap):
    _spec, origin, _ = bootstrap.choose_installer({}, None, "/root/tljh")
    assert origin == "the clone this bootstrap.py runs from; TLJH_BOOTSTRAP_PIP_SPEC overrides"


class FakeIndex:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def __call__(self, request, timeout):
        import io
        import urllib.error

        self.asked.append(request.full_url)
        if isinstance(self.answer, int):
            raise urllib.error.HTTPError(request.full_url, self.answer, "", {}, io.BytesIO())
        if isinstance(self.answer, Exception):
            raise self.answer
        return io.BytesIO(b"")


@pytest.fixture
def index(bootstrap, monkeypatch):
    import urllib.request

    def answering(answer):
        fake = FakeIndex(answer)
        monkeypatch.setattr(urllib.request, "urlopen", fake)
        monkeypatch.setattr(bootstrap, "UV_CONFIG_FILES", ())
        return fake

    return answering


def test_unpublished_package_is_refused_in_one_line(bootstrap, index):
    fake = index(404)
    with pytest.raises(bootstrap.BootstrapError) as e:
        bootstrap.check_published({})
    assert fake.asked == ["https://pypi.org/simple/the-littlest-jupyterhub/"]
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("the-littlest-jupyterhub is not published on PyPI yet: clone the repository")
    assert "sudo python3 bootstrap/bootstrap.py" in message and "TLJH_BOOTSTRAP_PIP_SPEC" in message


@pytest.mark.parametrize("answer", [None, OSError("network unreachable")], ids=["published", "unreachable"])
def test_published_or_unknown_goes_ahead(bootstrap, index, answer):
    fake = index(answer)
    bootstrap.check_published({})
    assert fake.asked


def test_admins_own_index_is_left_to_uv(bootstrap, index):
    fake = index(404)
    bootstrap.check_published({"UV_DEFAULT_INDEX": "https://mirror.example/simple"})
    assert fake.asked == []


def test_curl_form_refuses_before_changing_anything(bootstrap, as_root_on, index, capsys, monkeypatch, tmp_path):
    as_root_on({"ID": "debian", "VERSION_ID": "12"})
    monkeypatch.delenv("TLJH_BOOTSTRAP_PIP_SPEC", raising=False)
    for name in bootstrap.UV_INDEX_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    index(404)
    assert bootstrap.main(["--admin", "alice"], script="<stdin>") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("bootstrap: error: the-littlest-jupyterhub is not published on PyPI yet")
    assert not (tmp_path / "tljh").exists()


def test_bootstrap_and_installer_agree_on_shared_names(bootstrap):
    """bootstrap.py cannot import tljh: the names both sides rely on are kept equal by this test."""
    from tljh.system import paths
    from tljh.system import venvs as user_env

    assert bootstrap.HUB_PREFIX == paths.HUB_ENV_PREFIX
    assert bootstrap.HUB_MOVED_ASIDE == user_env.moved_aside(paths.HUB_ENV_PREFIX)
    assert bootstrap.EXCLUDED == user_env.EXCLUDED
    assert bootstrap.UV_CACHE_DIR == paths.UV_CACHE_DIR
    assert bootstrap.HUB_LOCK == user_env.lock_file(paths.HUB_ENV_PREFIX)


def test_admin_passwords_go_to_the_installer_on_a_pipe(bootstrap, capsys):
    """issue 19: --admin NAME:PASSWORD was on the installer's command line (ps) for the whole install."""
    args, fd = bootstrap.hand_over_passwords(["--admin", "alice:s3:cret", "--admin=bob", "--plugin", "x", "--admin=carol:pw"])
    try:
        assert args == ["--admin", "alice", "--admin", "bob", "--plugin", "x", "--admin", "carol",
                        "--admin-password-file", f"/dev/fd/{fd}"]
        assert os.read(fd, 1000) == b"alice:s3:cret\ncarol:pw\n"
        assert os.get_inheritable(fd)
    finally:
        os.close(fd)
    assert "shows the password to every user of this server (ps)" in capsys.readouterr().err


def test_no_passwords_no_pipe(bootstrap):
    assert bootstrap.hand_over_passwords(["--admin", "alice"]) == (["--admin", "alice"], None)
    given = ["--admin", "b", "--admin-password-file", "/root/pw"]
    assert bootstrap.hand_over_passwords(given) == (given, None)


def test_passwords_on_a_pipe_next_to_a_password_file(bootstrap):
    args, fd = bootstrap.hand_over_passwords(["--admin", "a:pw", "--admin", "b", "--admin-password-file", "/root/pw"])
    os.close(fd)
    assert args == ["--admin", "a", "--admin", "b", "--admin-password-file", "/root/pw",
                    "--admin-password-file", f"/dev/fd/{fd}"]
