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
    # Processes in a skipped cgroup are not read (the disk budget skips the builds' own units): here every
    # process's cgroup file has a ':' in it, and none names the unit below.
    assert namespaces.mount_roots(skip_cgroups=[":"]) == set()
    assert namespaces.mount_roots(skip_cgroups=["/tljh-env-no-such-unit:"]) == roots


def test_this_process_is_in_the_host_namespace_and_is_not_reexecuted(monkeypatch):
    def fail(*a):
        raise AssertionError("re-executed")

    monkeypatch.setattr(os, "execvp", fail)
    namespaces.reexec_in_host_mount_namespace()



def test_limits_become_the_units_memory_and_runtime_limits():
    limits = sandbox.Limits.starting_now(memory=200 * 2**20, seconds=120)
    cmd = sandbox.Sandbox("tljh-env-postbuild-c", ["/b"], limits=limits).command(["./postBuild"])
    props = dict(a.split("=", 1)[1].split("=", 1) for a in cmd if a.startswith("--property="))
    assert props["MemoryMax"] == str(200 * 2**20) and props["MemorySwapMax"] == "0"
    assert 0 < int(props["RuntimeMaxSec"]) <= 120 and props["TimeoutStopSec"] == str(sandbox.STOP_GRACE_SECONDS)
    # The unit stays loaded after a failure until run() has read its Result.
    assert "--collect" not in cmd
    plain = sandbox.Sandbox("x", ["/b"]).command(["true"])
    assert not any(a.split("=", 2)[1] in ("MemoryMax", "RuntimeMaxSec") for a in plain if a.startswith("--property="))
    assert limits.describe_memory() == "200M" and sandbox.Limits(memory=2 * 2**30).describe_memory() == "2G"


@pytest.mark.parametrize(
    "unit_result, status, limits, expected",
    [
        ("timeout", "0", {"seconds": 60}, "timed out after 60 s"),
        ("oom-kill", "0", {"memory": 2**28}, "ran out of memory (limit 256M)"),
        # cgroup v1 (no oom-kill result): the kernel's SIGKILL of the command, or of a shell's child.
        ("signal", "9", {"memory": 2**28}, "ran out of memory (limit 256M)"),
        ("exit-code", "137", {"memory": 2**28}, "ran out of memory (limit 256M)"),
        ("exit-code", "1", {"memory": 2**28, "seconds": 60}, None),
        ("signal", "9", {}, None),  # no memory limit: a kill is not called "out of memory"
    ],
)
def test_a_unit_stopped_by_its_limit_says_which(monkeypatch, unit_result, status, limits, expected):
    calls = []

    def systemctl(*args, check=True):
        calls.append(args)
        stdout = f"Result={unit_result}\nExecMainStatus={status}\n" if args[0] == "show" else ""
        return type("Done", (), {"stdout": stdout, "returncode": 0})()

    monkeypatch.setattr(sandbox.systemd, "systemctl", systemctl)
    monkeypatch.setattr(sandbox, "_stream", lambda cmd, env, on_line, cwd=None, timeout=None: sandbox.Result(1, ["last words"]))
    # The deadline starts now, not when pytest collected the parameters.
    box = sandbox.Sandbox("tljh-env-build-c", ["/b"], limits=sandbox.Limits.starting_now(**limits))
    if expected is None:
        assert box.run(["uv"]).returncode == 1
    else:
        with pytest.raises(sandbox.LimitExceeded) as e:
            box.run(["uv"])
        assert str(e.value) == expected and e.value.lines == ["last words"]
    unit = calls[0][-1]
    assert unit.startswith("tljh-env-build-c:") and calls[1] == ("reset-failed", unit)  # unloaded once read


def test_the_time_limit_stops_an_unsandboxed_command_and_is_shared_by_the_next(tmp_path):
    limits = sandbox.Limits.starting_now(seconds=1)
    box = sandbox.Unsandboxed("x", [str(tmp_path)], limits=limits)
    with pytest.raises(sandbox.LimitExceeded, match=r"^timed out after 1 s$") as e:
        box.run(["sh", "-c", "echo started; sleep 60 & wait"])
    assert e.value.lines == ["started"]
    # The build's time is used up: its next command does not start.
    with pytest.raises(sandbox.LimitExceeded):
        box.run(["touch", str(tmp_path / "ran")])
    assert not (tmp_path / "ran").exists()
    assert sandbox.Unsandboxed("x", [], limits=sandbox.Limits.starting_now(seconds=60)).run(["true"]).returncode == 0
