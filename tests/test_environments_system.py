"""The OS primitives environments use: interpreters, apt's answers, the build sandbox, mount namespaces."""

import os

import pytest

from tljh.system import apt, namespaces, paths, pythons, sandbox


def test_version_is_read_from_the_interpreters_link(tmp_path):
    (tmp_path / "python3.12").touch(mode=0o755)
    os.symlink(tmp_path / "python3.12", tmp_path / "python3")
    assert pythons.version_of(str(tmp_path / "python3")) == "3.12"
    assert pythons.version_of(str(tmp_path / "missing")) is None


def test_installed_interpreters_are_listed_by_version(tmp_path):
    for name in ("python3.9", "python3.11", "python3.11-config", "python3.10"):
        (tmp_path / name).touch(mode=0o755)
    assert list(pythons.installed(str(tmp_path))) == ["3.9", "3.10", "3.11"]


def test_a_version_from_the_archive_is_installed_with_apt(monkeypatch):
    monkeypatch.setattr(pythons, "installed", lambda: {"3.11": "/usr/bin/python3.11"})
    monkeypatch.setattr(pythons, "archive_versions", lambda: ["3.11", "3.12"])
    assert pythons.interpreter("3.11") == ("/usr/bin/python3.11", None)
    assert pythons.interpreter("3.12") == ("/usr/bin/python3.12", "python3.12")
    assert pythons.interpreter(None) == ("/usr/bin/python3", None)


def test_an_unavailable_version_is_refused_naming_the_available_ones(monkeypatch):
    monkeypatch.setattr(pythons, "installed", lambda: {"3.11": "/usr/bin/python3.11"})
    monkeypatch.setattr(pythons, "archive_versions", lambda: ["3.11"])
    monkeypatch.setattr(apt, "lists_present", lambda: True)
    with pytest.raises(pythons.PythonNotAvailable) as e:
        pythons.interpreter("3.7")
    assert str(e.value) == (
        "Python 3.7 is not available here: this system has 3.11 and its package archive provides 3.11"
    )


def test_apt_policy_is_read_per_package(monkeypatch):
    policy = (
        "python3.12:\n  Installed: (none)\n  Candidate: 3.12.3-1\n  Version table:\n"
        "python3.7:\n  Installed: (none)\n  Candidate: (none)\n"
    )

    class Done:
        stdout = policy

    monkeypatch.setattr(apt, "_run", lambda cmd, check=True: Done())
    assert apt.candidates(["python3.12", "python3.7", "python3.99"]) == {
        "python3.12": "3.12.3-1",
        "python3.7": None,
        "python3.99": None,
    }


def test_the_sandbox_runs_as_the_builder_and_writes_only_where_told():
    box = sandbox.Sandbox("tljh-env-build-data", ["/opt/tljh/envs/.builder"], env={"UV_CACHE_DIR": "/c"})
    cmd = box.command(["uv", "pip", "sync"], cwd="/w")
    assert cmd[:2] == ["systemd-run", "--quiet"]
    # A unit per command: systemd may keep a finished unit's name taken for a long time.
    units = {c for c in cmd if c.startswith("--unit=tljh-env-build-data:")}
    assert len(units) == 1 and units != {c for c in box.command(["true"]) if c.startswith("--unit=")}
    props = dict(a.split("=", 1)[1].split("=", 1) for a in cmd if a.startswith("--property="))
    assert props["User"] == paths.BUILDER_USER and props["ProtectSystem"] == "strict"
    assert props["ReadWritePaths"] == "/opt/tljh/envs/.builder" and props["WorkingDirectory"] == "/w"
    assert props["NoNewPrivileges"] == "yes" and props["ProtectHome"] == "tmpfs"
    assert paths.CONFIG_DIR in props["InaccessiblePaths"] and paths.STATE_DIR in props["InaccessiblePaths"]
    assert "--setenv=UV_CACHE_DIR=/c" in cmd
    assert cmd[-4:] == ["--", "uv", "pip", "sync"]


def test_a_background_command_has_no_wait_and_its_extra_properties(monkeypatch):
    box = sandbox.Sandbox("tljh-env-bytecode-data", ["/opt/tljh/envs/data"], properties={"Nice": "19"})
    cmd = box.command(["python", "-I", "x.py"], wait=False)
    assert "--wait" not in cmd and "--pipe" not in cmd and "--collect" in cmd
    props = dict(a.split("=", 1)[1].split("=", 1) for a in cmd if a.startswith("--property="))
    assert props["Nice"] == "19" and props["User"] == paths.BUILDER_USER
    assert props["ReadWritePaths"] == "/opt/tljh/envs/data"


def test_stopping_several_sandboxes_is_one_stop_and_one_reset(monkeypatch):
    calls = []
    monkeypatch.setattr(sandbox.systemd, "systemctl", lambda *args, check=True: calls.append(args))
    monkeypatch.setattr(sandbox, "_systemd_root", lambda: True)
    sandbox.stop(["tljh-env-build-data", "tljh-env-postbuild-data"])
    assert calls == [
        ("stop", "tljh-env-build-data:*", "tljh-env-postbuild-data:*"),
        ("reset-failed", "tljh-env-build-data:*", "tljh-env-postbuild-data:*"),
    ]
    calls.clear()
    monkeypatch.setattr(sandbox, "_systemd_root", lambda: False)  # nothing ran in a unit: nothing to stop
    sandbox.stop(["tljh-env-build-data"])
    sandbox.Unsandboxed("tljh-env-build-data", ["/x"]).stop()
    assert calls == []


def test_unsandboxed_commands_stream_their_lines(tmp_path):
    seen = []
    result = sandbox.Unsandboxed("x", [str(tmp_path)]).run(["sh", "-c", "echo one; echo two >&2; exit 3"], seen.append)
    assert result.returncode == 3 and seen == ["one", "two"] and result.tail() == "one\ntwo"


def test_mount_roots_are_read_from_every_namespace():
    roots = namespaces.mount_roots()
    assert "/" in roots
    assert namespaces._unescape("/a\\040b") == "/a b"


def test_this_process_is_in_the_host_namespace_and_is_not_reexecuted(monkeypatch):
    def fail(*a):
        raise AssertionError("re-executed")

    monkeypatch.setattr(os, "execvp", fail)
    namespaces.reexec_in_host_mount_namespace()

