"""Builds on disk: switching in atomically, recovering what a killed run left, keeping pinned builds."""

import errno
import os

import pytest
from environments_testing import fake_build, prefix, uv_cache  # noqa: F401

from tljh.environments import store
from tljh.system import paths


def staged(name, build, **kw):
    store.prepare_directories()
    return fake_build(store.staging_path(name), name, build, **kw)


def test_first_build_is_renamed_into_place(prefix):
    staged("data", "20260101T000000-aaaa")
    assert store.switch_in("data") is None
    assert store.current("data").build == "20260101T000000-aaaa"
    assert not os.path.exists(store.staging_path("data"))


def test_a_new_build_is_exchanged_with_the_current_one_which_is_retired(prefix):
    staged("data", "20260101T000000-aaaa")
    store.switch_in("data")
    inode = os.stat(paths.environment_prefix("data")).st_ino
    staged("data", "20260102T000000-bbbb")
    retired = store.switch_in("data")
    assert store.current("data").build == "20260102T000000-bbbb"
    assert os.path.basename(retired) == "data.20260101T000000-aaaa"
    assert os.stat(retired).st_ino == inode  # the very directory servers had mounted
    assert store.retired() == ["data.20260101T000000-aaaa"]


def test_default_is_served_from_the_tljh_path(prefix):
    staged("default", "20260101T000000-aaaa")
    store.switch_in("default")
    assert store.current("default").path == str(prefix / "user")
    assert os.path.isdir(prefix / "user") and not os.path.islink(prefix / "user")


def test_an_incomplete_build_is_never_switched_in(prefix):
    store.prepare_directories()
    os.makedirs(os.path.join(store.staging_path("data"), "bin"))
    with pytest.raises(RuntimeError):
        store.switch_in("data")


def test_without_rename_exchange_two_renames_do_the_switch(prefix, monkeypatch):
    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "not supported")

    monkeypatch.setattr(store, "_exchange", no_exchange)
    staged("data", "20260101T000000-aaaa")
    store.switch_in("data")
    staged("data", "20260102T000000-bbbb")
    store.switch_in("data")
    assert store.current("data").build == "20260102T000000-bbbb"
    assert store.retired() == ["data.20260101T000000-aaaa"]


def test_recover_removes_an_unfinished_build(prefix):
    store.prepare_directories()
    os.makedirs(os.path.join(store.staging_path("data"), "lib"))
    assert "unfinished" in store.recover("data", "fp")
    assert not os.path.exists(store.staging_path("data"))


def test_recover_switches_in_a_finished_build_that_is_still_wanted(prefix):
    staged("data", "20260101T000000-aaaa", fingerprint="old")
    store.switch_in("data")
    staged("data", "20260102T000000-bbbb", fingerprint="new")
    assert "switched in" in store.recover("data", "new")
    assert store.current("data").build == "20260102T000000-bbbb"


def test_recover_drops_a_finished_build_no_longer_wanted(prefix):
    staged("data", "20260101T000000-aaaa", fingerprint="old")
    store.switch_in("data")
    staged("data", "20260102T000000-bbbb", fingerprint="other")
    assert "no longer wanted" in store.recover("data", "new")
    assert store.current("data").build == "20260101T000000-aaaa"


def test_recover_retires_the_old_build_an_exchange_left_in_staging(prefix):
    staged("data", "20260102T000000-bbbb")
    store.switch_in("data")
    staged("data", "20260101T000000-aaaa")  # what the exchange put there before the retire rename
    assert store.recover("data", "fp") is None
    assert store.retired() == ["data.20260101T000000-aaaa"]


def test_recover_a_copy_of_the_current_build_is_dropped(prefix):
    staged("data", "20260102T000000-bbbb")
    store.switch_in("data")
    staged("data", "20260102T000000-bbbb")  # a clone killed before its record was removed
    store.recover("data", "new")
    assert not os.path.exists(store.staging_path("data"))
    assert store.current("data").build == "20260102T000000-bbbb"


def test_recover_puts_back_the_newest_build_if_the_stable_path_is_missing(prefix):
    staged("data", "20260101T000000-aaaa")
    store.switch_in("data")
    staged("data", "20260102T000000-bbbb")
    store.switch_in("data")
    os.rename(paths.environment_prefix("data"), os.path.join(paths.RETIRED_DIR, "data.20260102T000000-bbbb"))
    assert "restored" in store.recover("data", "fp")
    assert store.current("data").build == "20260102T000000-bbbb"


def test_collect_keeps_builds_a_server_has_mounted(prefix, monkeypatch):
    for build in ("20260101T000000-aaaa", "20260102T000000-bbbb", "20260103T000000-cccc"):
        staged("data", build)
        store.switch_in("data")
    # As /proc/<pid>/mountinfo shows a bind of a retired build (relative to its filesystem's root).
    monkeypatch.setattr(store.namespaces, "mount_roots", lambda: {"/", "/opt/tljh/envs/.retired/data.20260101T000000-aaaa"})
    removed, kept = store.collect()
    assert kept == ["data.20260101T000000-aaaa"]
    assert removed == ["data.20260102T000000-bbbb"]
    assert store.retired() == ["data.20260101T000000-aaaa"]


def test_retire_takes_an_environment_out_of_service(prefix):
    staged("data", "20260101T000000-aaaa")
    store.switch_in("data")
    store.retire("data")
    assert store.current("data") is None and store.built_names() == []
    assert store.retired() == ["data.20260101T000000-aaaa"]


def test_a_venv_from_before_environments_is_adopted(prefix):
    os.makedirs(prefix / "user" / "bin")
    (prefix / "user" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    store.adopt_legacy("default")
    assert store.current("default").build == store.LEGACY_BUILD
    assert store.current("default").fingerprint is None


def test_build_ids_sort_by_time():
    assert store.LEGACY_BUILD < store.new_build_id()


def test_the_lock_serialises_and_can_be_tried(prefix):
    with store.environments_lock() as held:
        assert held
        import subprocess, sys

        code = (
            "import fcntl,sys; f=open(sys.argv[1],'a')\n"
            "try:\n fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\n"
            "except BlockingIOError: print('busy')"
        )
        out = subprocess.run([sys.executable, "-c", code, paths.ENVIRONMENTS_LOCK], capture_output=True, text=True)
        assert out.stdout.strip() == "busy"


def test_a_hard_link_copy_of_the_current_build_is_put_back_after_a_rebuild(prefix):
    """What a restore keeps to take a rebuild back: the copy outlives the rebuild and the collection that follows."""
    staged("data", "20260101T000000-aaaa", lock="six==1.16.0\n")
    store.switch_in("data")
    copy = str(prefix / "envs" / ".data.held")
    assert store.copy_current("data", copy)
    staged("data", "20260102T000000-bbbb", lock="six==1.17.0\n")
    store.switch_in("data")
    store.collect()  # the rebuild's own clean-up removes the replaced build from .retired
    store.reinstate("data", copy)
    assert store.current("data").build == "20260101T000000-aaaa"
    assert store.current("data").lock() == "six==1.16.0\n"
    assert not os.path.exists(copy) and store.retired() == ["data.20260102T000000-bbbb"]
    assert store.built_names() == ["data"]


def test_reinstating_nothing_takes_a_new_environment_out_of_service(prefix):
    assert not store.copy_current("data", str(prefix / "envs" / ".data.held"))
    staged("data", "20260101T000000-aaaa")
    store.switch_in("data")
    store.reinstate("data", None)
    assert store.current("data") is None and store.retired() == ["data.20260101T000000-aaaa"]
