"""Building environments with the real uv (from PyPI, small packages): switch, carry, refuse, recover.

On a server the builder's uv runs as tljh-builder in a sandboxed systemd unit (integration tests); here it runs
unsandboxed as the test's user, through the same code.
"""

import glob
import json
import os
import subprocess
import time

import pytest
from environments_testing import build, prefix, small, uv_cache  # noqa: F401

from tljh.environments import builder as builder_module
from tljh.environments import bytecode, checks, spec as specs_module, store
from tljh.settings.errors import ConfigError
from tljh.system import paths


def site_packages(path):
    return glob.glob(os.path.join(path, "lib", "python3*", "site-packages"))[0]


def test_build_then_nothing_to_do(build):
    config = {"environments": {"data": {"packages": ["idna"]}}}
    first = build(small(config, "data"))
    assert first.state == "built", first.message
    current = store.current("data")
    assert builder_module.pins(current.lock()).keys() == {"idna", "pip", "six"}
    assert current.python and current.works()
    kernel = json.load(open(os.path.join(current.path, "share/tljh/kernels/data/kernel.json")))
    assert kernel["argv"][0] == os.path.join(paths.environment_prefix("data"), "bin", "python")
    assert os.path.exists(os.path.join(site_packages(current.path), "idna", "__pycache__"))  # bytecode compiled
    assert bytecode.compiled(current.path, current.build)
    # uv makes its lock 0666 for whoever runs uv next: in a served environment only root may write it
    assert os.stat(os.path.join(current.path, ".lock")).st_mode & 0o022 == 0
    again = build(small(config, "data"))
    assert again.state == "up to date" and again.lines == []
    assert store.current("data").build == current.build


def test_a_change_installs_into_a_copy_and_keeps_what_an_admin_installed_by_hand(build):
    config = {"environments": {"data": {"packages": ["idna"]}}}
    build(small(config, "data"))
    before = store.current("data")
    idna_pyc = glob.glob(os.path.join(site_packages(before.path), "idna", "__pycache__", "core.*.pyc"))[0]
    idna_pyc_inode = os.stat(idna_pyc).st_ino
    subprocess.run([os.path.join(before.path, "bin", "python"), "-m", "pip", "install", "-q", "--no-deps", "cowsay"], check=True)
    assert builder_module.by_hand(before.path, before.lock()) == {"cowsay": "cowsay"}
    settings = site_packages(before.path) + "/../../../share/jupyter/lab/settings"
    os.makedirs(settings)
    open(os.path.join(settings, "overrides.json"), "w").write("{}")

    outcome = build(small(config, "data", packages=("idna", "packaging")))
    assert outcome.state == "built", outcome.message
    after = store.current("data")
    assert "installing into a copy of the current build" in "\n".join(outcome.lines)
    assert builder_module.pins(after.lock()).keys() == {"idna", "pip", "six", "packaging", "cowsay"}
    assert after.record["by_hand"] == ["cowsay"]
    assert os.path.exists(os.path.join(after.path, "share/jupyter/lab/settings/overrides.json"))
    # The copy's bytecode of unchanged packages is the previous build's (hard links); only new files compile.
    assert os.stat(idna_pyc.replace(before.path, after.path)).st_ino == idna_pyc_inode
    assert bytecode.compiled(after.path, after.build)
    assert glob.glob(os.path.join(site_packages(after.path), "packaging", "__pycache__", "*.pyc"))
    # The serving build was swapped, not changed: the old one (retired, then collected) never got packaging.
    assert not os.path.exists(os.path.join(before.path, "tljh-environment.json")) or store.current("data").build != before.build


def test_a_build_serves_before_its_bytecode_is_compiled_in_the_background(prefix):
    """As `tljh env build` does it: reported current once switched in; the compile follows, then marks it."""
    lines = []
    outcome = builder_module.Builder(out=lines.append).build(small({"environments": {"data": {}}}, "data"))
    assert outcome.state == "built", outcome.message
    current = store.current("data")
    assert current.build == outcome.message  # serving when build() returned
    assert any("compiling bytecode in the background" in line for line in lines), lines
    deadline = time.monotonic() + 300
    while not bytecode.compiled(current.path, current.build):
        assert time.monotonic() < deadline, "the background compile never finished"
        time.sleep(0.2)
    assert glob.glob(os.path.join(site_packages(current.path), "__pycache__", "six.*.pyc"))


def test_a_package_that_does_not_exist_fails_naming_it_and_the_old_build_serves(build):
    config = {"environments": {"data": {"packages": ["idna"]}}}
    build(small(config, "data"))
    serving = store.current("data").build
    outcome = build(small(config, "data", packages=("no-such-package-tljh-test",)))
    assert outcome.state == "failed"
    assert "no-such-package-tljh-test" in outcome.message and f"build {serving} keeps serving" in outcome.message
    assert store.current("data").build == serving
    assert builder_module.last_failure("data").startswith(outcome.message.splitlines()[0])
    assert not os.path.exists(store.staging_path("data"))
    assert build(small(config, "data")).state == "up to date"


def test_a_killed_build_is_redone_by_the_next_run(build, monkeypatch):
    config = {"environments": {"data": {"packages": ["idna"]}}}
    build(small(config, "data"))
    serving = store.current("data").build
    # What a build killed while installing leaves: a half-made copy and its scratch files.
    os.makedirs(os.path.join(store.staging_path("data"), "lib"))
    os.makedirs(store.work_path("data"))
    stopped = []
    monkeypatch.setattr(builder_module.sandbox, "stop", lambda units: stopped.append(list(units)))
    outcome = build(small(config, "data", packages=("idna", "packaging")))
    # The killed run's sandboxed commands are stopped once, all of them, before its directories are tidied.
    assert stopped == [[f"tljh-env-{kind}-data" for kind in builder_module.UNIT_KINDS]]
    assert outcome.state == "built"
    assert "removed an unfinished build of an earlier run" in outcome.lines[0]
    assert store.current("data").build != serving
    assert not os.path.exists(store.work_path("data"))


def test_a_requirements_file_with_includes_in_a_private_directory(build, tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "base.txt").write_text("idna\n")
    (private / "course.txt").write_text("-r base.txt\n")
    config = {"environments": {"data": {"requirements": str(private / "course.txt")}}}
    outcome = build(small(config, "data"))
    assert outcome.state == "built", outcome.message
    assert "idna" in builder_module.pins(store.current("data").lock())


def test_check_refuses_a_package_that_does_not_exist_in_one_line(prefix, monkeypatch):
    monkeypatch.setattr(specs_module, "SERVER_PACKAGES", ("pip",))
    monkeypatch.setattr(specs_module, "server_packages", lambda pm=None: ("pip",))
    with pytest.raises(ConfigError) as e:
        checks.check_change({}, {"environments": {"data": {"packages": ["no-such-package-tljh-test"]}}})
    message = str(e.value)
    assert message == "environments.data: no package no-such-package-tljh-test on the package index (check its name)"
    assert "\n" not in message
    checks.check_change({}, {"environments": {"data": {"packages": ["idna"]}}})  # resolves: no error


def test_pins_and_includes():
    lock = "# header\nSix==1.17.0\n    # via x\nfoo @ file:///x\nzope.interface==7.0 ; python_version > '3'\n"
    assert builder_module.pins(lock) == {"six": "1.17.0", "zope-interface": "7.0"}
    copies = {"/a/base.txt": "/w/requirements-1.txt"}
    text = builder_module.rewrite_includes("/a/course.txt", "-r base.txt\n--constraint=/etc/c.txt\nidna\n", copies)
    assert text == "-r requirements-1.txt\n--constraint /etc/c.txt\nidna\n"


def test_uv_reasons_in_one_line():
    conflict = (
        "error: No solution found when resolving dependencies:\n"
        "cause: Because you require six==1.0 and six==2.0, we can conclude that your requirements are unsatisfiable."
    )
    assert checks.one_line(conflict).startswith("Because you require six==1.0 and six==2.0")


def test_a_build_from_a_lock_installs_exactly_it(build, tmp_path):
    """Moving an environment: `tljh env show` on one server, `tljh env build NAME --from-lock` on another."""
    config = {"environments": {"data": {"packages": ["idna"]}}}
    hub = specs_module.hub_version()
    lock = tmp_path / "lock.txt"
    lock.write_text(f"idna==3.7\npip==24.0\nsix==1.16.0\njupyterhub=={hub}\n")
    spec = small(config, "data")
    # The lock must carry the hub's jupyterhub, or servers of this environment would not talk to this hub.
    bad = tmp_path / "bad.txt"
    bad.write_text("idna==3.7\njupyterhub==1.0\n")
    refused = build(spec, from_lock=str(bad))
    assert refused.state == "failed" and f"must pin jupyterhub=={hub}" in refused.message
    outcome = build(spec, from_lock=str(lock))
    assert outcome.state == "built", outcome.message
    assert builder_module.pins(store.current("data").lock())["idna"] == "3.7"
    installed = builder_module.venvs.installed_packages(store.current("data").path)
    assert installed["idna"] == "3.7" and installed["six"] == "1.16.0"


def test_a_build_whose_python_is_gone_comes_back_with_its_kernels_and_settings(build, tmp_path):
    """After an OS upgrade removed the build's Python: a new venv, with the kernelspecs and unowned settings of
    the old one; a package nothing can reinstall (its directory is gone) is named, and the old build is kept."""
    config = {"environments": {"data": {"packages": ["idna"]}}}
    build(small(config, "data"))
    old = store.current("data")
    extra = os.path.join(old.path, "share", "jupyter", "kernels", "extra")
    os.makedirs(extra)
    with open(os.path.join(extra, "kernel.json"), "w") as f:
        json.dump({"argv": ["/bin/true", "{connection_file}"], "display_name": "Extra", "language": "x"}, f)
    settings = os.path.join(old.path, "share", "jupyter", "lab", "settings")
    os.makedirs(settings)
    open(os.path.join(settings, "overrides.json"), "w").write("{}")
    info = os.path.join(site_packages(old.path), "gone_plugin-0.1.dist-info")
    os.makedirs(info)
    open(os.path.join(info, "METADATA"), "w").write("Metadata-Version: 2.1\nName: gone-plugin\nVersion: 0.1\n")
    json.dump({"url": f"file://{tmp_path}/deleted", "dir_info": {}}, open(os.path.join(info, "direct_url.json"), "w"))
    bin_dir = os.path.join(old.path, "bin")
    for name in os.listdir(bin_dir):
        if name.startswith("python") and os.path.islink(os.path.join(bin_dir, name)):
            os.unlink(os.path.join(bin_dir, name))
            os.symlink("/usr/bin/python3.0-removed-by-os-upgrade", os.path.join(bin_dir, name))
    assert not old.works()

    outcome = build(small(config, "data"))
    assert outcome.state == "built", outcome.message
    new = store.current("data")
    assert new.works() and new.build != old.build
    text = "\n".join(outcome.lines)
    assert "data: rebuilt for this system's Python" in text
    assert "data: copied 1 kernelspecs and 1 configuration files" in text
    assert os.path.exists(os.path.join(new.path, "share", "jupyter", "kernels", "extra", "kernel.json"))
    assert os.path.exists(os.path.join(new.path, "share", "jupyter", "lab", "settings", "overrides.json"))
    kept = [d for d in os.listdir(paths.ENVIRONMENTS_DIR) if d.startswith("data.before-")]
    assert len(kept) == 1, os.listdir(paths.ENVIRONMENTS_DIR)
    warning = [w for w in outcome.warnings if "not carried over" in w]
    assert warning and "gone-plugin==0.1 (installed from a path that no longer exists)" in warning[0]
    assert os.path.join(paths.ENVIRONMENTS_DIR, kept[0]) in warning[0]
    assert store.built_names() == ["data"]  # the kept build is not an environment
    assert store.collect()[0] == []  # nor a retired build to delete
