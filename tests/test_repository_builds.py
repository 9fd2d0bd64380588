"""Users' builds from a repository (issue 14, the picker's "Other: build from a repository"): who may build from
where, the commit a request resolves to, one build per commit shared by everyone who asks, and its log on the
spawn page. Builds here are fakes, except one real build (git + uv, unsandboxed as in the other environments
tests); the integration test builds through the hub in a machine.
"""

import asyncio
import json
import os
import re
import subprocess
import threading
import types

import pytest
from environments_testing import prefix, uv_cache  # noqa: F401
from tornado import web

from tljh.environments import store, user_builds
from tljh.environments.builder import Outcome
from tljh.hub import profiles
from tljh.hub import repository_builds as hub_builds
from tljh.hub.spawner import UserCreatingSpawner
from tljh.settings import builds, schema
from tljh.settings.environments import REF_PATTERN
from tljh.system import paths
from tljh.system.sandbox import Result, Unsandboxed

HOSTS = ["git.example.org", "127.0.0.1:9418"]


# ---------------------------------------------------------------------------------------------- who may build

@pytest.mark.parametrize("url,problem", [
    ("https://git.example.org/course/stats", None),
    ("HTTPS://Git.Example.org/course/stats.git", None),
    ("git://git.example.org:9419/course", None),  # a host without a port allows any port
    ("git://127.0.0.1:9418/course.git", None),
    ("git://127.0.0.1/course.git", "127.0.0.1 is not a host you may build from"),  # the port is part of that entry
    ("https://github.com/owner/project", "github.com is not a host you may build from; allowed: 127.0.0.1:9418, git.example.org"),
    ("https://user:secret@git.example.org/x", "expected the URL of a public git repository"),
    ("ssh://git.example.org/x", "expected the URL of a public git repository"),
    ("file:///srv/git/x", "expected the URL of a public git repository"),
    ("/srv/git/course", "expected the URL of a public git repository"),
    ("https://git.example.org/x y", "expected the URL of a public git repository"),
    ("https://git.example.org.evil.com/x", "git.example.org.evil.com is not a host"),
])
def test_a_user_builds_only_from_allowed_hosts(url, problem):
    said = builds.user_repository_problem(url, HOSTS)
    assert (said is None) if problem is None else said.startswith(problem), said


def test_with_no_allowed_hosts_only_admins_build():
    said = builds.user_repository_problem("https://git.example.org/x", [])
    assert said == "users cannot build from repositories on this hub (an admin enables it with builds.allowed_hosts)"


@pytest.mark.parametrize("url", ["https://git.example.org/a/b", "git://127.0.0.1:9418/c.git",
                                 "http://git.example.org:8080/x", "https://git.example.org"])
def test_the_pickers_regex_takes_what_the_hub_takes(url):
    assert re.fullmatch(builds.url_regex(HOSTS), url)
    assert builds.user_repository_problem(url, HOSTS) is None


@pytest.mark.parametrize("url", ["https://github.com/a/b", "git://127.0.0.1/c.git", "https://git.example.org.x.com/a",
                                 "https://git.example.org/a b"])
def test_the_pickers_regex_refuses_what_the_hub_refuses(url):
    assert not re.fullmatch(builds.url_regex(HOSTS), url)


@pytest.mark.parametrize("ref", ["main", "v1.0", "feature/x", "0123abc", "_x", "-x", "a b", "--upload-pack=x", "x;y"])
def test_the_browsers_ref_pattern_is_the_configs(ref):
    assert bool(re.fullmatch(builds.BROWSER_REF_PATTERN, ref)) == bool(re.match(REF_PATTERN, ref))


def test_allowed_hosts_add_the_repository_profile_after_the_hub_wide_default():
    config = schema.effective_config({"builds": {"allowed_hosts": ["git.example.org"]}})
    default, build = config["profiles"]
    assert (default["slug"], default["default"], default["spawner_override"]) == ("default", True, {})
    assert (build["slug"], build["default"]) == (builds.REPOSITORY_PROFILE, False)
    unlisted = build["profile_options"]["repository"]["unlisted_choice"]
    assert unlisted["display_name_in_choices"] == "Other: build from a repository"
    assert unlisted["spawner_override"] == {"repository": "{value}"}
    assert schema.effective_config({})["profiles"] == []


def test_the_admins_profiles_come_first_and_one_that_offers_repositories_replaces_the_generated_one():
    mine = [{"display_name": "Python"}, {"display_name": "Data", "spawner_override": {"mem_limit": "2G"}}]
    config = schema.effective_config({"profiles": mine, "builds": {"allowed_hosts": ["git.example.org"]}})
    assert [p["slug"] for p in config["profiles"]] == ["python", "data", builds.REPOSITORY_PROFILE]
    own = mine + [{"display_name": "Course repos", "profile_options": {"repo": {"unlisted_choice": {
        "enabled": True, "spawner_override": {"repository": "https://git.example.org/course/{value}"}}}}}]
    config = schema.effective_config({"profiles": own, "builds": {"allowed_hosts": ["git.example.org"]}})
    assert [p["slug"] for p in config["profiles"]] == ["python", "data", "course-repos"]
    assert schema.errors_only(schema.validate_config({"profiles": own})) == []


def choose(user_options, hosts=HOSTS, profile_list=None):
    config = schema.effective_config({"profiles": profile_list or [], "builds": {"allowed_hosts": hosts or ["x.org"]}})
    return profiles.choose(config["profiles"], user_options, set(), False, repository_hosts=hosts)


def test_a_typed_repository_and_ref_become_the_overrides():
    chosen = choose({"profile": builds.REPOSITORY_PROFILE, "repository": "unlisted-choice",
                     "repository--unlisted-choice": "https://git.example.org/course", "ref": "unlisted-choice",
                     "ref--unlisted-choice": "v2"})
    assert chosen.overrides == {"repository": "https://git.example.org/course", "repository_ref": "v2"}
    # The REST API's short form: a typed value alone; the ref's default choice is the default branch.
    chosen = choose({"profile": builds.REPOSITORY_PROFILE, "repository--unlisted-choice": "git://127.0.0.1:9418/c.git"})
    assert chosen.overrides == {"repository": "git://127.0.0.1:9418/c.git"}


@pytest.mark.parametrize("typed,hosts,said", [
    ("https://github.com/owner/project", HOSTS,
     "Repository: 'https://github.com/owner/project' is not accepted (the URL of a git repository on 127.0.0.1:9418, "
     "git.example.org)"),
    ("", HOSTS, "Repository: '' is not accepted (the URL of a git repository on "),
])
def test_a_repository_the_user_may_not_build_is_refused_before_anything_starts(typed, hosts, said):
    with pytest.raises(web.HTTPError) as e:
        choose({"profile": builds.REPOSITORY_PROFILE, "repository": "unlisted-choice",
                "repository--unlisted-choice": typed}, hosts=hosts)
    assert e.value.status_code == 400 and said in e.value.log_message.replace("%%", "%"), e.value.log_message


OPEN_PROFILE = [{"display_name": "Any repository", "profile_options": {"repo": {"unlisted_choice": {
    "enabled": True, "spawner_override": {"repository": "{value}"}}}}}]


@pytest.mark.parametrize("typed,hosts,said", [
    ("https://github.com/owner/project", HOSTS, "github.com is not a host you may build from; allowed: "),
    ("https://git.example.org/x", [], "users cannot build from repositories on this hub"),
    ("/srv/git/course.git", HOSTS, "expected the URL of a public git repository"),
])
def test_the_hub_checks_the_host_also_where_a_profile_has_no_regex(typed, hosts, said):
    with pytest.raises(web.HTTPError) as e:
        choose({"profile": "any-repository", "repo--unlisted-choice": typed}, hosts=hosts, profile_list=OPEN_PROFILE)
    assert said in e.value.log_message, e.value.log_message


def test_a_bad_ref_is_refused():
    with pytest.raises(web.HTTPError) as e:
        choose({"profile": builds.REPOSITORY_PROFILE, "repository--unlisted-choice": "https://git.example.org/x",
                "ref--unlisted-choice": "--upload-pack=touch"})
    assert "Branch, tag or commit: '--upload-pack=touch' is not accepted" in e.value.log_message


def test_a_repository_the_admin_wrote_in_a_profile_is_not_held_to_the_users_hosts():
    fixed = [{"display_name": "Course", "spawner_override": {"repository": "/srv/git/course.git"}}]
    chosen = choose({"profile": "course"}, hosts=HOSTS, profile_list=fixed)
    assert chosen.overrides == {"repository": "/srv/git/course.git"}


# ---------------------------------------------------------------------------------------------- the commit

def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "course"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "requirements.txt").write_text("six\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def box():
    return Unsandboxed("test-lookup", [])


def test_the_commit_of_the_default_branch_a_branch_and_a_tag(repo):
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "-m", "release", "v1")
    git(repo, "checkout", "-q", "-b", "next")
    (repo / "README.md").write_text("next\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "next")
    second = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    assert user_builds.resolve(str(repo), None, box()) == first
    assert user_builds.resolve(str(repo), "next", box()) == second
    assert user_builds.resolve(str(repo), "v1", box()) == first  # the annotated tag's commit, not the tag object
    assert user_builds.resolve(str(repo), "a" * 40, box()) == "a" * 40  # checked by the build's fetch
    with pytest.raises(user_builds.repository.RepositoryError, match="has no branch or tag 'nope'"):
        user_builds.resolve(str(repo), "nope", box())


def test_an_unreachable_or_private_repository_is_said_in_words(tmp_path):
    with pytest.raises(user_builds.repository.RepositoryError, match=r"^cannot reach .*/missing: "):
        user_builds.resolve(str(tmp_path / "missing"), None, box())
    login = types.SimpleNamespace(run=lambda argv: Result(128, [
        "fatal: could not read Username for 'https://git.example.org': terminal prompts disabled"]))
    with pytest.raises(user_builds.repository.RepositoryError) as e:
        user_builds.resolve("https://git.example.org/private", None, login)
    assert str(e.value) == ("https://git.example.org/private cannot be read without a login, or does not exist: "
                            "only public repositories can be built")


def test_a_build_is_named_by_repository_and_commit_and_no_admin_name_can_take_it():
    a = user_builds.build_name("https://Git.example.org/x/", "a" * 40)
    assert a == user_builds.build_name("https://git.example.org/x", "a" * 40)
    assert a != user_builds.build_name("https://git.example.org/x", "b" * 40)
    assert user_builds.is_build_name(a) and len(a) > 32
    assert schema.errors_only(schema.validate_config({"environments": {a: {"packages": []}}}))


# ---------------------------------------------------------------------------------------------- one build per commit

URL = "https://git.example.org/course"
HEAD = "c" * 40


class Lookups:
    def __init__(self, refs=None, fail=None):
        self.refs = refs or {"HEAD": HEAD, "refs/heads/main": HEAD}
        self.fail = fail
        self.count = 0

    def __call__(self):
        return self

    def run(self, argv):
        self.count += 1
        if self.fail:
            return Result(128, [self.fail])
        return Result(0, [f"{sha}\t{name}" for name, sha in self.refs.items()])


class FakeBuilder:
    """Builds by writing a complete build record where the real builder would; counts builds; can be held."""

    builds = 0
    fail = None

    def __init__(self, out, make_sandbox=None):
        self.out = out

    def build(self, spec):
        FakeBuilder.builds += 1
        self.out(f"{spec.name}: fetching {spec.repository} @ {spec.ref}")
        FakeBuilder.gate.wait(5)
        if FakeBuilder.fail:
            return Outcome(spec.name, "failed", f"{FakeBuilder.fail}\n({spec.name}: nothing was built)")
        os.makedirs(os.path.join(spec.prefix, "bin"))
        os.symlink("/usr/bin/python3", os.path.join(spec.prefix, "bin", "python"))
        summary = {"repository": {**spec.repository_summary(), "declared_fingerprint": spec.fingerprint("")}}
        with open(os.path.join(spec.prefix, store.RECORD_FILE), "w") as f:
            json.dump({"name": spec.name, "build": "b1", "spec": summary}, f)
        self.out(f"{spec.name}: build b1 is current (0.1 s)")
        self.out("disk budget: removed the build of https://git.example.org/someone-else at 0123456789ab")
        return Outcome(spec.name, "built", "b1")


@pytest.fixture
def fake_builder(prefix):
    FakeBuilder.builds, FakeBuilder.fail = 0, None
    FakeBuilder.gate = threading.Event()
    FakeBuilder.gate.set()
    return FakeBuilder


@pytest.mark.asyncio
async def test_two_people_asking_for_one_commit_share_one_build_and_its_log(fake_builder):
    fake_builder.gate.clear()  # the build waits until both have asked
    hub = hub_builds.RepositoryBuilds(make_builder=FakeBuilder, lookup_sandbox=Lookups(), packages=("pip",))
    alice, bob = hub_builds.BuildLog(), hub_builds.BuildLog()
    first = asyncio.ensure_future(hub.environment_for(URL, None, "alice", alice))
    while not hub.building():
        await asyncio.sleep(0.01)
    second = asyncio.ensure_future(hub.environment_for(URL + "/", None, "bob", bob))
    await asyncio.sleep(0.1)
    fake_builder.gate.set()
    names = await asyncio.wait_for(asyncio.gather(first, second), 5)
    name = user_builds.build_name(URL, HEAD)
    assert names == [name, name] and fake_builder.builds == 1
    assert f"fetching {URL} @ {HEAD}" in alice.lines and f"fetching {URL} @ {HEAD}" in bob.lines
    assert "Someone else asked for this commit a moment ago: following their build" in bob.lines
    assert all(name not in line for line in alice.lines + bob.lines)  # the long name is not shown
    assert not any("someone-else" in line for line in alice.lines + bob.lines)  # nor other people's builds
    record = user_builds.usage(name)
    assert (record["builds"], record["first_user"], record["url"], record["commit"]) == (1, "alice", URL, HEAD)
    # Later: the commit is built, so it starts at once; still one build.
    carol = hub_builds.BuildLog()
    assert await hub.environment_for(URL, "main", "carol", carol) == name
    assert fake_builder.builds == 1 and user_builds.usage(name)["builds"] == 1
    assert carol.lines[-1] == "This commit is built already: starting your server in it"
    assert oct(os.stat(user_builds.usage_path(name)).st_mode & 0o777) == "0o600"
    assert "[built] b1" in open(user_builds.log_path(name)).read()


@pytest.mark.asyncio
async def test_a_failed_build_says_why_on_the_page_and_the_next_request_builds_again(fake_builder):
    fake_builder.fail = "postBuild of the repository failed (exit status 4):\nthe data server is down"
    hub = hub_builds.RepositoryBuilds(make_builder=FakeBuilder, lookup_sandbox=Lookups(), packages=("pip",))
    with pytest.raises(web.HTTPError) as e:
        await hub.environment_for(URL, None, "alice", hub_builds.BuildLog())
    message = e.value.jupyterhub_message
    assert message.startswith(f"The build of {URL} at {HEAD[:12]} failed: postBuild of the repository failed")
    assert "the data server is down" in message and "(nothing was built)" in message
    assert not os.path.exists(paths.environment_prefix(user_builds.build_name(URL, HEAD)))
    fake_builder.fail = None
    await hub.environment_for(URL, None, "alice", hub_builds.BuildLog())
    assert fake_builder.builds == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("lookups,ref,said", [
    (Lookups(), "nope", f"{URL} has no branch or tag 'nope'"),
    (Lookups(fail="fatal: unable to access 'x': Could not resolve host: git.example.org"), None,
     f"cannot reach {URL}: unable to access 'x': Could not resolve host: git.example.org"),
])
async def test_a_lookup_that_fails_builds_nothing(fake_builder, lookups, ref, said):
    hub = hub_builds.RepositoryBuilds(make_builder=FakeBuilder, lookup_sandbox=lookups, packages=("pip",))
    with pytest.raises(web.HTTPError) as e:
        await hub.environment_for(URL, ref, "alice", hub_builds.BuildLog())
    assert (e.value.status_code, e.value.jupyterhub_message) == (400, said)
    assert fake_builder.builds == 0


@pytest.mark.asyncio
async def test_a_real_build_from_a_repository(prefix, repo):
    hub = hub_builds.RepositoryBuilds(lookup_sandbox=box, packages=("pip", "six"))
    log = hub_builds.BuildLog()
    name = await asyncio.wait_for(hub.environment_for(str(repo), None, "alice", log), 300)
    python = os.path.join(paths.environment_prefix(name), "bin", "python")
    subprocess.run([python, "-c", "import six"], check=True)
    assert any(line.startswith("commit ") for line in log.lines), log.lines
    assert user_builds.usage(name)["builds"] == 1
    again = hub_builds.BuildLog()
    assert await hub.environment_for(str(repo), "main", "bob", again) == name
    assert user_builds.usage(name)["builds"] == 1


def test_the_builders_words_for_an_admin_are_said_for_users():
    name = user_builds.build_name(URL, HEAD)
    line = (f"{name}: build failed: the repository asks for what is not supported here: a Dockerfile (no Docker "
            f"here); apt.txt package libgdal-dev (not in environments.{name}.allow_apt) (set "
            f"environments.{name}.allow_unsupported true to build the rest; see docs/howto/repository-environments)")
    assert hub_builds.readable(line, name) == (
        "build failed: the repository asks for what is not supported here: a Dockerfile (no Docker here); apt.txt "
        "package libgdal-dev (OS packages are not installed for users' builds) (an admin can set "
        "builds.allow_unsupported true to build the rest; see docs/howto/repository-environments)")
    path = f"Using Python 3.11.2 environment at: /opt/tljh/envs/.builder/{name}"
    assert hub_builds.readable(path, name) == path
    unit = f"{name}: compiling bytecode in the background (...: systemctl status 'tljh-env-bytecode-{name}:*')"
    assert hub_builds.readable(unit, name) == unit[len(name) + 2:]


# ---------------------------------------------------------------------------------------------- the spawn page

class Builds:
    """A RepositoryBuilds stand-in whose build the test lets finish."""

    def __init__(self):
        self.release = asyncio.Event()

    async def environment_for(self, url, ref, user, log, allow_unsupported=False):
        log.add(f"Looking up {url}")
        await self.release.wait()
        log.add("build b1 is current")
        return "repo-" + "a" * 40


@pytest.mark.asyncio
async def test_the_spawn_page_shows_the_build_log_then_the_turn(monkeypatch, tmp_path):
    monkeypatch.setattr(UserCreatingSpawner, "_start_queue", None)
    builds_ = Builds()
    monkeypatch.setattr(UserCreatingSpawner, "_repository_builds", builds_)
    user = types.SimpleNamespace(name="alice", id=1, admin=False, url="/user/alice/")
    s = UserCreatingSpawner(user=user, repository=URL, servers_dir="/nonexistent/a", server_links_dir="/nonexistent/b")
    s._spawn_pending = True
    events = []

    async def page():
        async for event in s.progress():
            events.append(event)

    reading = asyncio.ensure_future(page())
    hook = asyncio.ensure_future(s.run_pre_spawn_hook())
    await asyncio.sleep(0.2)
    assert [e["message"] for e in events] == [f"Looking up {URL}"]
    builds_.release.set()
    await asyncio.wait_for(hook, 2)
    await asyncio.wait_for(reading, 2)
    assert [e.get("tljh_phase") for e in events] == ["building", "building", "starting"]
    assert events[1]["message"] == "build b1 is current"
    assert s.user_environment == "repo-" + "a" * 40
    s.start_queue.release(s)


# ---------------------------------------------------------------------------------------------- the build's sandbox

def test_a_users_build_writes_only_its_own_directories_with_a_cache_of_its_own(prefix, monkeypatch):
    """Its packages' build backends are the user's code: not the shared uv cache, not another build's staging."""
    name = user_builds.build_name(URL, HEAD)
    own = [store.staging_path(name), store.work_path(name), user_builds.repository.checkout_path(name)]
    monkeypatch.setattr(user_builds.sandbox, "_systemd_root", lambda: True)
    monkeypatch.setattr(user_builds.sandbox, "owner_ids", lambda: (os.getuid(), os.getgid()))
    make = user_builds.confined(name)
    box = make("tljh-env-build-x", [paths.BUILDER_DIR], env={"UV_CACHE_DIR": paths.ENVIRONMENTS_UV_CACHE_DIR})
    assert isinstance(box, user_builds.ConfinedSandbox) and box.writable == own
    assert box.env["UV_CACHE_DIR"] == os.path.join(store.work_path(name), "uv-cache")
    assert box.env["GIT_CONFIG_KEY_0"] == "http.followRedirects" and box.env["GIT_CONFIG_VALUE_0"] == "false"
    cmd = box.command(["uv", "venv", own[0]])
    assert f"--property=ReadWritePaths={' '.join('-' + p for p in own)}" in cmd
    assert not any(paths.BUILDER_DIR + " " in c or c.endswith(paths.BUILDER_DIR) for c in cmd if "ReadWrite" in c)
    # A directory is made (for the builder) just before a command that names it; the others are left alone.
    ran = []
    monkeypatch.setattr(user_builds.sandbox, "_stream", lambda cmd, env, on_line, cwd=None: ran.append(cmd) or Result(0))
    os.makedirs(paths.BUILDER_DIR)
    box.run(["uv", "venv", own[0]])
    assert os.path.isdir(own[0]) and not os.path.exists(own[1]) and not os.path.exists(own[2])
    box.run(["uv", "pip", "compile", "requirements.in"], cwd=own[1])
    assert os.path.isdir(own[1])
    # postBuild's sandbox is its build and checkout already: unchanged.
    post = make("tljh-env-postbuild-x", [own[0], own[2]], env={"PATH": "/usr/bin"})
    assert type(post) is user_builds.sandbox.Sandbox and post.writable == [own[0], own[2]]


def test_tljh_config_installs_git_when_users_may_build(monkeypatch):
    from tljh.cli import tljh_config

    installed = []
    monkeypatch.setattr(user_builds.repository, "ensure_git", lambda out: installed.append(True))
    check = tljh_config._system_check("builds.allowed_hosts")
    check({}, {"builds": {"allowed_hosts": []}})
    assert installed == []
    check({}, {"builds": {"allowed_hosts": ["github.com"]}})
    assert installed == [True]
    assert tljh_config._system_check("builds.allow_unsupported") is None


@pytest.mark.asyncio
async def test_a_server_stopping_in_a_users_build_marks_its_last_use(prefix, monkeypatch):
    from systemdspawner import SystemdSpawner

    async def stopped(self, now=False):
        return None

    monkeypatch.setattr(SystemdSpawner, "stop", stopped)
    monkeypatch.setattr("tljh.hub.spawner.session_installs.remove_layer", lambda unit: None)
    name = user_builds.build_name(URL, HEAD)
    user_builds.record_use(name, "alice", url=URL, commit=HEAD, built=True)
    os.utime(user_builds.usage_path(name), (1, 1))
    user = types.SimpleNamespace(name="bob", id=2, admin=False, url="/user/bob/")
    s = UserCreatingSpawner(user=user, user_environment=name, servers_dir="/nonexistent/a",
                            server_links_dir="/nonexistent/b")
    await s.stop()
    record = user_builds.usage(name)
    assert record["last_user"] == "bob" and record["builds"] == 1
    assert os.stat(user_builds.usage_path(name)).st_mtime > 1000
