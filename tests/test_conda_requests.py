"""Conda requests from plugins: which go to PyPI, and the py-rattler child against a real local channel."""

import http.server
import json
import os
import subprocess
import sys
import threading

import pluggy
import pytest
from conda_channel import build_test_channels

from tljh import hooks
from tljh.hooks import hookimpl
from tljh.install import conda_requests as cr
from tljh.system import conda_names


@pytest.mark.parametrize(
    "spec, requirement",
    [
        ("tqdm", "tqdm"),
        ("TQDM", "tqdm"),
        ("tqdm>=4.60", "tqdm>=4.60"),
        ("tqdm >=4.60,<5", "tqdm>=4.60,<5"),
        ("tqdm==4.66.1", "tqdm==4.66.1"),
        ("tqdm=4.66", "tqdm==4.66.*"),
        ("tqdm=4.66.*", "tqdm==4.66.*"),
        ("conda-forge::tqdm", "tqdm"),
        ("matplotlib-base>=3.8", "matplotlib>=3.8"),
        ("pyyaml", "PyYAML"),
        # a particular conda build, another channel's package, or a name not on the list: not PyPI's
        ("tqdm=4.66=pyhd8ed1ab_0", None),
        ("bioconda::tqdm", None),
        ("tqdm[version='>=4']", None),
        ("tqdm >=4|<3", None),
        ("csvtk", None),
        ("matplotlib", None),
    ],
)
def test_only_listed_plain_specs_become_pypi_requirements(spec, requirement):
    assert conda_names.pypi_requirement(spec) == requirement


def test_list_names_are_lowercase_conda_names():
    assert all(name == name.lower() for name in conda_names.PYPI_PROJECTS)


def manager(*plugins):
    pm = pluggy.PluginManager("tljh")
    pm.add_hookspecs(hooks)
    for plugin in plugins:
        pm.register(plugin)
    return pm


class Bio:
    @hookimpl
    def tljh_extra_user_conda_packages(self):
        return ["tqdm", "csvtk"]

    @hookimpl
    def tljh_extra_user_conda_channels(self):
        return ["bioconda"]


class Other:
    @hookimpl
    def tljh_extra_user_conda_packages(self):
        return ["csvtk", "samtools>=1.19"]


def test_plan_splits_requests_and_appends_conda_forge():
    requests, channels = cr.collect(manager(Bio(), Other()))
    plan = cr.plan(requests, channels)
    assert plan.pip_requirements == ["tqdm"]
    assert [r.spec for r in plan.conda] == ["csvtk", "samtools>=1.19"]  # csvtk once
    assert plan.channels == ["bioconda", "conda-forge"]
    assert "from PyPI: tqdm" in plan.describe() and "bioconda, conda-forge" in plan.describe()


def test_no_requests():
    plan = cr.plan(*cr.collect(manager()))
    assert (plan.pypi, plan.conda) == ([], [])
    assert plan.describe() == "no conda requests"


def test_warning_names_packages_plugins_and_reason():
    line = cr.warning([
        {"package": "csvtk", "plugin": "bio", "reason": "channel http://x/bioconda/ cannot be reached: refused"},
        {"package": "samtools", "plugin": "bio", "reason": "channel http://x/bioconda/ cannot be reached: refused"},
    ])
    assert line.startswith("warning: conda packages not installed: csvtk (plugin bio), samtools (plugin bio): "
                           "channel http://x/bioconda/ cannot be reached: refused.")
    assert "\n" not in line


def test_rattler_requirement_comes_from_the_conda_extra():
    assert cr.rattler_requirement().startswith("py-rattler")


# --- the child, with py-rattler (from the test venv) against a real channel over HTTP ----------------------


@pytest.fixture(scope="module")
def channel_url(tmp_path_factory):
    root = build_test_channels(tmp_path_factory.mktemp("channels"))
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **kw)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("TLJH_INSTALL_PREFIX", str(tmp_path))
    (tmp_path / "user" / "bin").mkdir(parents=True)
    return tmp_path


def child(prefix, specs, alias):
    request = {"specs": specs, "channels": ["bioconda", "conda-forge"], "channel_alias": alias,
               "prefix": str(prefix / "conda"), "bin_dir": str(prefix / "user" / "bin"),
               "cache_dir": str(prefix / "cache")}
    result = subprocess.run([sys.executable, "-m", "tljh.install.conda_requests"], input=json.dumps(request),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_child_installs_the_program_and_links_it(prefix, channel_url):
    answer = child(prefix, ["csvtk"], channel_url)
    assert answer == {"installed": ["csvtk"], "programs": ["csvtk"], "failed": {}}
    link = prefix / "user" / "bin" / "csvtk"
    assert os.readlink(link) == str(prefix / "conda" / "bin" / "csvtk")
    assert subprocess.run([str(link), "version"], capture_output=True, text=True).stdout == "csvtk v0.30.0 (version)\n"
    # its dependency is installed too, but only what was asked for is linked
    assert (prefix / "conda" / "share" / "libcsv" / "README").exists()
    assert os.listdir(prefix / "user" / "bin") == ["csvtk"]
    # a rerun changes nothing
    assert child(prefix, ["csvtk"], channel_url) == answer


def test_one_missing_package_does_not_cost_the_others(prefix, channel_url):
    answer = child(prefix, ["csvtk", "no-such-package"], channel_url)
    assert answer["installed"] == ["csvtk"]
    assert list(answer["failed"]) == ["no-such-package"]
    assert "no-such-package" in answer["failed"]["no-such-package"]


def test_package_without_programs_is_reported(prefix, channel_url):
    answer = child(prefix, ["libcsv"], channel_url)
    assert answer["installed"] == []
    assert "no programs" in answer["failed"]["libcsv"]


def test_unreachable_channel_keeps_what_is_installed(prefix, channel_url):
    child(prefix, ["csvtk"], channel_url)
    answer = child(prefix, ["csvtk"], "http://127.0.0.1:9/")  # nothing listens on port 9
    assert answer["installed"] == []
    assert answer["failed"]["csvtk"].startswith("channel http://127.0.0.1:9/")
    assert "cannot be reached" in answer["failed"]["csvtk"]
    assert (prefix / "user" / "bin" / "csvtk").exists()  # still there: a channel down must not remove it


def test_never_replaces_a_program_the_user_environment_has(prefix, channel_url):
    own = prefix / "user" / "bin" / "csvtk"
    own.write_text("#!/bin/sh\necho mine\n")
    answer = child(prefix, ["csvtk"], channel_url)
    assert answer["installed"] == []
    assert "would replace" in answer["failed"]["csvtk"]
    assert own.read_text() == "#!/bin/sh\necho mine\n"


def test_install_records_pending_and_removes_what_no_plugin_asks_for(prefix, channel_url, monkeypatch):
    from tljh.system import paths

    monkeypatch.setattr(paths, "CONDA_PREFIX", str(prefix / "conda"))
    monkeypatch.setattr(paths, "USER_ENV_PREFIX", str(prefix / "user"))
    monkeypatch.setattr(paths, "STATE_DIR", str(prefix / "state"))
    monkeypatch.setattr(paths, "CONDA_REQUESTS_STATE", str(prefix / "state" / "conda.json"))
    monkeypatch.setattr(paths, "RATTLER_CACHE_DIR", str(prefix / "cache"))
    # the test venv has py-rattler: run the child with it instead of through `uv run --with`
    monkeypatch.setattr(cr, "child_command", lambda: [sys.executable, "-m", "tljh.install.conda_requests"])
    plan = cr.plan(*cr.collect(manager(Bio())))

    installed, missing = cr.install(plan, "http://127.0.0.1:9/")
    assert (installed, [m["package"] for m in missing]) == ([], ["csvtk"])
    assert cr.status_line() == (
        f"conda packages: NOT INSTALLED: csvtk (plugin {missing[0]['plugin']}: {missing[0]['reason']}); "
        "rerun the installer to install them", False)
    assert oct(os.stat(paths.CONDA_REQUESTS_STATE).st_mode & 0o777) == "0o600"

    installed, missing = cr.install(plan, channel_url)
    assert (installed, missing) == (["csvtk"], [])
    assert cr.status_line() == (f"conda packages: csvtk in {prefix / 'conda'}", True)

    installed, missing = cr.install(cr.plan([], []), channel_url)
    assert (installed, missing) == ([], [])
    assert not (prefix / "conda").exists() and os.listdir(prefix / "user" / "bin") == []
    assert cr.status_line() == (None, True)
