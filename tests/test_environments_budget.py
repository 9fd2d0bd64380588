"""The disk budget of builds: unused builds removed least recently used first, what is in use or declared kept,
sizes of distinct files (builds share files with the uv cache through hard links)."""

import json
import os
import time

from environments_testing import fake_build, prefix, uv_cache  # noqa: F401

from tljh.environments import budget, store
from tljh.system import paths, sandbox

MB = 2**20


def built(name, megabytes=1, last_used=None, repository=None):
    """A current build of ``name`` holding ``megabytes`` of data; a user's repository build gets the hub's usage
    record, last used ``last_used`` (epoch seconds)."""
    store.prepare_directories()
    path = fake_build(paths.environment_prefix(name), name, "20260101T000000-aaaa")
    with open(os.path.join(path, "data.bin"), "wb") as f:
        f.write(os.urandom(megabytes * MB))
    if repository:
        record = os.path.join(path, store.RECORD_FILE)
        with open(record) as f:
            content = json.load(f)
        content["spec"] = {"repository": {"url": repository, "commit": "c0ffee" * 6 + "abcd"}}
        with open(record, "w") as f:
            json.dump(content, f)
    old = time.time() - 86400
    os.utime(os.path.join(path, store.RECORD_FILE), (old, old))
    if last_used is not None:
        os.makedirs(paths.REPOSITORY_BUILDS_STATE_DIR, exist_ok=True)
        usage = budget.usage_record(name)
        with open(usage, "w") as f:
            json.dump({"url": repository, "last_used": last_used}, f)
        os.utime(usage, (last_used, last_used))
    return path


def user_build(letter):
    return "repo-" + letter * 40


def test_unused_builds_go_least_recently_used_first_until_under_budget(prefix, monkeypatch):
    now = time.time()
    built("default")
    built("data")  # declared
    oldest = user_build("a")
    built(oldest, last_used=now - 5 * 86400, repository="https://git.example.org/a.git")
    built(user_build("b"), last_used=now - 3 * 86400, repository="https://git.example.org/b.git")
    built(user_build("c"), last_used=now - 2 * 86400, repository="https://git.example.org/c.git")
    built("dropped")  # no longer in config.yaml; built a day ago, never used by a user's record
    built(user_build("d"), last_used=now - 10 * 86400)  # oldest of all, but a running server has it mounted
    built(user_build("e"), last_used=now - 60)  # chosen a minute ago: its server may be starting
    built(user_build("f"), last_used=now - 7 * 86400)  # the build just made (keep)
    mounted = str(prefix / "envs" / user_build("d"))
    monkeypatch.setattr(budget.namespaces, "mount_roots",
                        lambda skip_cgroups=(): {"/", mounted, "/x/envs/.retired/data.1"} if skip_cgroups else {"/"})
    with open(os.path.join(paths.ENVIRONMENT_STATE_DIR, oldest + ".failed"), "w") as f:
        f.write("an old failure\n")

    stopped = []
    monkeypatch.setattr(sandbox, "stop", lambda units: stopped.append(list(units)))

    total = budget.used()
    lines = []
    removed = budget.enforce(total - int(1.5 * MB), ["default", "data"], keep=[user_build("f")], out=lines.append)

    assert removed == [oldest, user_build("b")]
    # What may still run for a removed build (its bytecode compile in the background) is stopped first.
    assert [units[-1] for units in stopped] == [f"tljh-env-bytecode-{oldest}", f"tljh-env-bytecode-{user_build('b')}"]
    assert [n for n in store.built_names() if n.startswith("repo-")] == [user_build(x) for x in "cdef"]
    assert store.current("data") and store.current("default") and store.current("dropped")
    assert lines[0].startswith(f"disk budget: removed the build of https://git.example.org/a.git at c0ffeec0ffee ({oldest})")
    assert "MB freed; builds now use" in lines[0] and len(lines) == 2
    assert float(lines[0].split(": ")[2].split(" MB freed")[0]) >= 1.0
    # The hub's usage record and the failure of a removed build go with it; nothing is left in .retired.
    assert not os.path.exists(budget.usage_record(oldest))
    assert not os.path.exists(os.path.join(paths.ENVIRONMENT_STATE_DIR, oldest + ".failed"))
    assert store.retired() == []
    assert budget.used() <= total - int(1.5 * MB)


def test_nothing_is_removed_under_the_budget_or_without_one(prefix):
    built(user_build("a"), last_used=time.time() - 86400)
    total = budget.used()
    assert budget.enforce(None, [], out=print) == []
    assert budget.enforce(total, [], out=print) == []
    assert store.current(user_build("a"))


def test_over_budget_with_nothing_removable_says_so(prefix, monkeypatch):
    monkeypatch.setattr(budget.namespaces, "mount_roots", lambda **skip: {"/"})
    built("data", megabytes=2)
    lines = []
    assert budget.enforce(MB, ["data"], out=lines.append) == []
    assert len(lines) == 1 and "more than builds.disk_budget (1.0 MB)" in lines[0] and "in use or declared" in lines[0]


def test_files_shared_with_the_cache_count_once_and_are_not_freed(prefix, monkeypatch):
    monkeypatch.setattr(budget.namespaces, "mount_roots", lambda **skip: {"/"})
    path = built(user_build("a"), megabytes=1, last_used=time.time() - 86400)
    # uv installed this 2 MB file as a hard link to its cache: removing the build does not free it.
    cached = os.path.join(paths.ENVIRONMENTS_UV_CACHE_DIR, "wheel-file")
    with open(cached, "wb") as f:
        f.write(os.urandom(2 * MB))
    os.link(cached, os.path.join(path, "module.so"))
    alone = budget.distinct_size([paths.ENVIRONMENTS_UV_CACHE_DIR])
    assert budget.used() < alone + budget.distinct_size([path])  # counted once, not twice
    freed = budget.freed_by_removing(path)
    assert MB <= freed < 2 * MB
    lines = []
    assert budget.enforce(budget.used() - 1, [], out=lines.append) == [user_build("a")]
    assert os.path.exists(cached)


def test_a_build_applies_the_budget_after_switching_in(prefix, monkeypatch):
    from environments_testing import small

    from tljh.environments import builder as builder_module
    from tljh.environments.limits import BuildLimits

    monkeypatch.setattr(budget.namespaces, "mount_roots", lambda **skip: {"/"})
    built(user_build("a"), last_used=time.time() - 86400, repository="https://git.example.org/a.git")
    lines = []
    builder = builder_module.Builder(out=lines.append, limits=BuildLimits(disk_budget=1), declared=["default", "data"],
                                     wait_for_bytecode=True)
    outcome = builder.build(small({"environments": {"data": {}}}, "data"))
    assert outcome.state == "built", outcome.message
    assert store.current("data") and not store.current(user_build("a"))
    removed = [line for line in lines if line.startswith("disk budget: removed the build of https://git.example.org/a.git")]
    assert len(removed) == 1, lines
    # What is left is the build just made, which the budget never removes: said in one line.
    assert lines[-1].startswith("disk budget: builds use ") and "in use or declared" in lines[-1]
