"""Issue 14 (environments from a repository, without Docker) on a fresh server, as an admin meets it.

GitHub is not reachable here: the machine serves a git repository itself (`git daemon` on 127.0.0.1, the
git:// protocol every git speaks). Packages come from PyPI. The tests run in order on one machine: build from
the repository, use it from a server, refusals that leave the last good build serving, a hostile postBuild.
"""

import asyncio
import html
import io
import json
import re
import tarfile
import types

import aiohttp
import pytest
from browser import chromium, screenshot
from hubclient import HubClient, HubError
from installed import installed_machine

ADMIN_PASSWORD = "admin-password-1"
WORK = "/root/course"  # the course's working copy; pushed to the served bare repository
URL = "git://127.0.0.1/course.git"


def git_in(work):
    return f"git -C {work} -c user.name=Teacher -c user.email=teacher@example.org"


GIT = git_in(WORK)

POST_BUILD = """#!/bin/sh
set -e
# What a course's postBuild does: data files next to the environment, a check that its packages import.
echo "built by uid $(id -u) from $(pwd)" > "$NB_PYTHON_PREFIX/share/course-data.txt"
python -c 'import cowsay; print("postBuild sees cowsay", cowsay.__version__)'
"""

# repo2docker's start: runs before the server, whose command it is given.
START = """#!/bin/bash
export COURSE_STARTED_BY="start as $(id -un)"
exec "$@"
"""

# The environment a kernel stands on: kernels run in their server's session layer (session packages, on by
# default: sys.prefix is the layer), which lists the environment's site-packages last on sys.path.
ENVIRONMENT_OF_KERNEL = "import sys; [p for p in sys.path if p.endswith('site-packages')][-1].split('/lib/')[0]"

# Where a hostile postBuild tries to write: the hub, the shared environments (and the serving build of its own),
# a student's home and session layer, the builder's package cache, the system.
HOSTILE_TARGETS = (
    "/opt/tljh/hub/pwned", "/opt/tljh/user/pwned", "/opt/tljh/envs/course/pwned", "/home/jupyter-repostudent/pwned",
    "/opt/tljh/sessions/pwned", "/opt/tljh/sessions/jupyter-repostudent/pwned", "/opt/tljh/envs/.builder/uv-cache/pwned",
    "/etc/pwned",
)
HOSTILE_POST_BUILD = """#!/bin/sh
for path in """ + " ".join(HOSTILE_TARGETS) + """; do
    if echo x > "$path" 2>/dev/null; then echo "WROTE $path"; else echo "refused $path"; fi
done
for path in /opt/tljh/config/config.yaml /opt/tljh/state/jupyterhub_cookie_secret /home/jupyter-repostudent/secret.txt; do
    if cat "$path" >/dev/null 2>&1; then echo "READ $path"; else echo "refused $path"; fi
done
if sudo -n true 2>/dev/null; then echo "ROOT via sudo"; else echo "refused sudo"; fi
exit 1
"""


def tar_of(files):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            info.mode = 0o755 if name.endswith("postBuild") else 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return data.getvalue()


def push(hub, files, remove=(), message="course update", work=WORK, remote=True):
    """Commit ``files`` (and removals) in the working copy and push them to the served repository (only
    commit if not ``remote``)."""
    git = git_in(work)
    if files:
        hub.copy_tar(tar_of(files), work)
    for path in remove:
        hub.run(f"{git} rm -q -r {path}")
    hub.run(f"{git} add -A && {git} commit -q -m '{message}'" + (f" && {git} push -q origin HEAD:main" if remote else ""))
    return hub.run(f"{git} rev-parse HEAD").stdout.strip()


def serve_git(hub, unit="test-git-daemon"):
    hub.run(
        f"systemd-run --unit={unit} --collect git daemon --reuseaddr --listen=127.0.0.1 "
        "--base-path=/srv/git --export-all /srv/git"
    )
    hub.run(f"for i in $(seq 50); do git ls-remote {URL} >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1")


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"admin:{ADMIN_PASSWORD}") as m:
        # The test's own git (the server's is installed by the first repository build, as tljh needs it).
        m.run("apt-get update -qq && apt-get install -y -qq git >/dev/null", timeout=600)
        m.run(f"git init -q --bare -b main /srv/git/course.git && git init -q -b main {WORK}")
        m.run(f"{GIT} remote add origin /srv/git/course.git")
        m.python = m.run("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
        serve_git(m)
        yield m


def run(coro):
    return asyncio.run(coro)


def config_digest(hub):
    return hub.run("sha256sum /opt/tljh/config/config.yaml").stdout.split()[0]


def current_build(hub, name="course"):
    return hub.run(
        f"python3 -c \"import json; print(json.load(open('/opt/tljh/envs/{name}/tljh-environment.json'))['build'])\""
    ).stdout.strip()


def wait_for_bytecode(hub, name, timeout=900):
    """Until the compile that ``name``'s build started in the background has ended; it marked the build compiled."""
    running = f"systemctl list-units --state=active,activating --plain --no-legend 'tljh-env-bytecode-{name}:*'"
    hub.run(f"while [ -n \"$({running})\" ]; do sleep 1; done", timeout=timeout)
    assert hub.run(f"cat /opt/tljh/envs/{name}/tljh-bytecode.txt").stdout.strip() == current_build(hub, name)


async def start(client, timeout=240, user_options=None):
    try:
        return await client.start_server(timeout=timeout, user_options=user_options)
    except HubError:
        log = client.hub.run(f"journalctl -u jupyter-{client.username} -u jupyterhub --no-pager | tail -40", check=False)
        raise HubError(f"server of {client.username} did not start:\n{log.stdout}") from None


def test_an_environment_from_a_repository(hub):
    head = push(hub, {
        "binder/requirements.txt": "cowsay==6.1\n",
        "binder/runtime.txt": f"python-{hub.python}\n",
        "binder/postBuild": POST_BUILD,
        "binder/start": START,
        "requirements.txt": "this-root-file-is-ignored-because-binder-exists\n",
        "README.md": "The statistics course\n",
    })
    hub.run(f"tljh-config set environments.course.repository {URL}")
    hub.run("tljh-config set environments.course.ref main")
    hub.run("tljh-config set environments.course.description 'The course, from its repository'")
    build = hub.run("tljh env build course", timeout=900)
    assert f"course: commit {head}" in build.stdout
    assert "postBuild sees cowsay 6.1" in build.stdout
    assert "course: build" in build.stdout and "is current" in build.stdout
    # It serves before its bytecode exists: that is compiled next, in the background (then marked compiled).
    assert "course: compiling bytecode in the background" in build.stdout, build.stdout
    wait_for_bytecode(hub, "course")
    # postBuild ran as the builder (not root) in the checkout.
    builder = hub.run("id -u tljh-builder").stdout.strip()
    data = hub.run("cat /opt/tljh/envs/course/share/course-data.txt").stdout
    assert data.startswith(f"built by uid {builder} from /opt/tljh/envs/.builder/course.src"), data
    show = hub.run("tljh env show course").stdout
    assert f"# repository: {URL} @ main = commit {head} (with postBuild, start)" in show
    assert "\ncowsay==6.1" in show
    assert "course: up to date" in hub.run("tljh env build course").stdout  # same commit: nothing to do
    listing = hub.run("tljh env list").stdout
    assert any(l.split()[:3] == ["course", "up", "to"] for l in listing.splitlines()), listing
    # Nothing of the build is writable by users, and the checkout is gone.
    assert hub.run("find /opt/tljh/envs/course -perm /022 ! -type l | head -3").stdout == ""
    assert hub.run("ls /opt/tljh/envs/.builder").stdout.split() == ["uv-cache"]


PROFILES = """
profiles:
  - display_name: Python
    description: The shared environment.
    default: true
  - display_name: Course
    description: The statistics course, built from its repository.
    spawner_override: {user_environment: course}
"""


def test_a_user_picks_it_in_a_profile(hub):
    hub.run("cat >> /opt/tljh/config/config.yaml", input=PROFILES)
    hub.run("tljh-config reload hub")

    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.create_users("repostudent")
        async with HubClient(hub.url()) as student:
            student.hub = hub
            await student.login("repostudent", "student-password-1")
            async with student.session.get(student.url("hub/spawn")) as r:
                assert r.status == 200 and "built from its repository" in await r.text()
            try:
                await start(student, user_options={"profile": "course"})
                kernel = await student.open_kernel()
                # The kernel runs in the student's session layer, which stands on the environment (its
                # site-packages last on sys.path).
                assert await kernel.execute("import cowsay; " + ENVIRONMENT_OF_KERNEL) == "'/opt/tljh/envs/course'"
                assert await kernel.execute("open('/opt/tljh/envs/course/share/course-data.txt').read()[:12]") == (
                    "'built by uid'"
                )
                # The repository's start ran the server (the kernel inherits the server's environment).
                assert await kernel.execute("import os; os.environ.get('COURSE_STARTED_BY')") == (
                    "'start as jupyter-repostudent'"
                )
                # A file the last test's hostile postBuild must not be able to read.
                await kernel.execute("open('/home/jupyter-repostudent/secret.txt', 'w').write('student only')")
                await kernel.close()
            finally:
                await student.stop_server()

    run(scenario())


def test_tljh_config_refuses_an_unreachable_repository_or_unknown_ref(hub):
    digest = config_digest(hub)
    for command, expected in [
        ("tljh-config set environments.course.repository git://127.0.0.1:1/nowhere.git", "cannot reach git://127.0.0.1:1/nowhere.git"),
        ("tljh-config set environments.course.ref no-such-branch", "has no branch or tag 'no-such-branch'"),
        ("tljh-config set environments.course.python 3.11", "takes python from the repository's runtime.txt"),
        ("tljh-config set environments.course.ref -- --upload-pack=touch", "a branch, a tag or a full commit id"),
        ("tljh-config set environments.default.repository " + URL, "cannot come from a repository"),
    ]:
        result = hub.run(command, check=False)
        assert result.returncode != 0, command
        assert expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert config_digest(hub) == digest


def test_failed_builds_leave_the_last_good_build_serving(hub):
    serving = current_build(hub)

    def refused(*words):
        result = hub.run("tljh env build course", check=False, timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        for word in words:
            assert word in output, output
        assert f"build {serving} keeps serving" in output
        assert current_build(hub) == serving
        hub.run("/opt/tljh/envs/course/bin/python -c 'import cowsay'")
        assert "last build failed" in hub.run("tljh env list").stdout
        assert hub.run("ls /opt/tljh/envs/.builder").stdout.split() == ["uv-cache"]

    # Something the repository asks for that is not supported here (in binder/: with binder/ present the root's
    # files are not read, as repo2docker does).
    push(hub, {"binder/Dockerfile": "FROM debian:12\n"})
    refused("a Dockerfile (no Docker here)", "allow_unsupported")
    # A Python this system does not have: refused with the ones it has, before anything is installed (apt.txt's
    # package, allowed, is not installed either).
    hub.run("tljh-config set environments.course.allow_apt '[sl]'")
    packages = hub.run("sha256sum /var/lib/dpkg/status").stdout
    push(hub, {"binder/runtime.txt": "python-3.4\n", "binder/apt.txt": "sl\n"}, remove=["binder/Dockerfile"])
    refused(f"binder/runtime.txt asks for Python 3.4, which this system does not have: it has Python {hub.python}")
    assert hub.run("sha256sum /var/lib/dpkg/status").stdout == packages
    hub.run("tljh-config unset environments.course.allow_apt")
    push(hub, {"binder/runtime.txt": f"python-{hub.python}\n"}, remove=["binder/apt.txt"])
    # A postBuild that fails: its output is in the message.
    push(hub, {"binder/postBuild": "#!/bin/sh\necho the data server is down\nexit 4\n"})
    refused("postBuild of git://127.0.0.1/course.git failed (exit status 4)", "the data server is down")
    # The branch disappears.
    hub.run(f"git -C /srv/git/course.git branch -q -m main gone")
    refused("has no branch, tag or commit 'main'")
    hub.run(f"git -C /srv/git/course.git branch -q -m gone main")
    # The server does not answer.
    hub.run("systemctl stop test-git-daemon")
    refused("cannot fetch git://127.0.0.1/course.git")
    serve_git(hub, unit="test-git-daemon-again")
    # Fixed: the next build succeeds and clears the failure.
    head = push(hub, {"binder/postBuild": POST_BUILD})
    build = hub.run("tljh env build course", timeout=900)
    assert f"course: commit {head}" in build.stdout and "is current" in build.stdout
    assert current_build(hub) != serving
    assert "last build failed" not in hub.run("tljh env list").stdout


def test_a_hostile_post_build_cannot_write_outside_its_build_or_read_others_files(hub):
    serving = current_build(hub)
    push(hub, {"binder/postBuild": HOSTILE_POST_BUILD})
    result = hub.run("tljh env build course", check=False, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "postBuild of" in output, output
    assert "refused /opt/tljh/hub/pwned" in output and "refused sudo" in output, output
    assert "WROTE" not in output and "READ " not in output and "ROOT" not in output, output
    for path in HOSTILE_TARGETS:
        assert hub.run(f"test -e {path}", check=False).returncode != 0, path
    assert current_build(hub) == serving


def test_a_repository_given_as_a_path_on_the_server(hub):
    """A git repository on the server's disk, made and owned by root (a teacher's checkout): tljh-config's check
    and the build read it as the builder. They were refused: git's ownership check in the second program of a
    fetch (upload-pack) does not see the `-c safe.directory` given to the first one."""
    path = "/srv/course"
    hub.run(f"git init -q -b main {path}")
    head = push(hub, {"requirements.txt": "cowsay==6.1\n"}, work=path, message="local course", remote=False)
    hub.run(f"tljh-config set environments.local.repository {path}")
    build = hub.run("tljh env build local", timeout=900)
    assert f"local: commit {head}" in build.stdout and "is current" in build.stdout, build.stdout
    hub.run("/opt/tljh/envs/local/bin/python -c 'import cowsay'")
    assert f"# repository: {path} @ HEAD = commit {head}" in hub.run("tljh env show local").stdout
    assert "local: up to date" in hub.run("tljh env build local").stdout
    # The builder only reads it: its files and history are as root left them.
    assert hub.run(f"git -C {path} status --porcelain && find {path} ! -user root | head -3").stdout == ""


# A postBuild that needs memory (bytes written, so the pages are really used).
ALLOCATE = """#!/bin/sh
echo loading the data
python3 -c "data = b'x' * ({mb} * 2**20); print('allocated', len(data) >> 20, 'MB')"
"""


def test_a_build_past_its_time_or_memory_limit_fails_and_says_so(hub):
    """builds.time_limit / builds.memory_limit: a postBuild that sleeps past the first or allocates past the
    second is stopped by systemd; the build says which, plainly, and the last good build keeps serving."""
    path, serving = "/srv/course", current_build(hub, "local")
    # The serving build's bytecode, compiled in the background, done: below, no process of the builder's is left.
    wait_for_bytecode(hub, "local")

    def stopped(post_build, *words):
        push(hub, {"postBuild": post_build}, work=path, remote=False)
        result = hub.run("tljh env build local", check=False, timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        for word in words:
            assert word in output, output
        assert f"(local: build {serving} keeps serving)" in output, output
        assert current_build(hub, "local") == serving
        hub.run("/opt/tljh/envs/local/bin/python -c 'import cowsay'")
        show = hub.run("tljh env show local").stdout
        assert f"# LAST BUILD FAILED: {words[0]}" in show, show
        # Nothing of the stopped build is left running or on disk.
        assert hub.run("pgrep -u tljh-builder -a", check=False).stdout == ""
        assert hub.run("ls /opt/tljh/envs/.builder").stdout.split() == ["uv-cache"]

    hub.run("tljh-config set builds.time_limit 90")
    stopped("#!/bin/sh\necho waiting for the data server\nsleep 600\n",
            "building local timed out after 90 s (raise builds.time_limit")
    hub.run("tljh-config unset builds.time_limit")
    hub.run("tljh-config set builds.memory_limit 500M")
    stopped(ALLOCATE.format(mb=2000), "building local ran out of memory (limit 500M) (raise builds.memory_limit",
            "loading the data")
    hub.run("tljh-config unset builds.memory_limit")
    # Within the limits the same kind of build succeeds (the default limit is 4G).
    push(hub, {"postBuild": ALLOCATE.format(mb=600)}, work=path, remote=False)
    build = hub.run("tljh env build local", timeout=900)
    assert "    allocated 600 MB" in build.stdout and "is current" in build.stdout, build.stdout
    assert "LAST BUILD FAILED" not in hub.run("tljh env show local").stdout


def test_the_disk_budget_removes_builds_nobody_uses(hub):
    """builds.disk_budget: past it, the next build removes builds nobody uses (here `local`, taken out of
    config.yaml) and says what it freed; declared environments' builds stay."""
    hub.run("tljh-config unset environments.local")
    # Last used two hours ago (a build used in the last ten minutes is never removed: its server may be starting).
    hub.run("touch -d '2 hours ago' /opt/tljh/envs/local/tljh-environment.json")
    hub.run("tljh-config set builds.disk_budget 1M")
    push(hub, {"binder/postBuild": POST_BUILD})
    build = hub.run("tljh env build course", timeout=900)
    removed = [line for line in build.stdout.splitlines() if line.startswith("disk budget: removed environment local")]
    assert len(removed) == 1 and " MB freed; builds now use " in removed[0], build.stdout
    assert "disk budget: builds use" in build.stdout and "in use or declared" in build.stdout, build.stdout
    assert hub.run("test -e /opt/tljh/envs/local", check=False).returncode != 0
    assert hub.run("ls /opt/tljh/envs/.retired").stdout.split() == []
    hub.run("/opt/tljh/envs/course/bin/python -c 'import cowsay' && /opt/tljh/user/bin/python -c 'import jupyterlab'")
    hub.run("tljh-config unset builds.disk_budget")


ENVIRONMENT_YML = """\
channels: [conda-forge]
dependencies:
  - python={python}
  - pip
  - tqdm=4
  - csvtk
  - pip:
      - -r requirements.txt
"""


def test_an_environment_yml_builds_what_maps_to_pypi_and_lists_the_rest(hub):
    """environment.yml: its pip section, a conda name that is exactly a PyPI project (tqdm) and one that is not
    (csvtk, a program): the build fails naming csvtk, or, with allow_unsupported, builds the rest and lists it."""
    work, url = "/root/conda-course", "git://127.0.0.1/conda-course.git"
    hub.run(f"git init -q --bare -b main /srv/git/conda-course.git && git init -q -b main {work}")
    hub.run(f"{git_in(work)} remote add origin /srv/git/conda-course.git")
    head = push(hub, {
        "environment.yml": ENVIRONMENT_YML.format(python=hub.python),
        "requirements.txt": "cowsay==6.1\n",
    }, work=work)
    hub.run(f"tljh-config set environments.conda.repository {url}")
    result = hub.run("tljh env build conda", check=False, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "conda package 'csvtk' (no exact PyPI equivalent)" in output and "allow_unsupported" in output, output
    assert "tqdm" not in output.split("not supported here:", 1)[1], output
    assert hub.run("test -e /opt/tljh/envs/conda", check=False).returncode != 0  # nothing half-built

    hub.run("tljh-config set environments.conda.allow_unsupported true")
    build = hub.run("tljh env build conda", timeout=900)
    assert f"conda: commit {head}" in build.stdout
    assert "warning: conda: not built from the repository: conda package 'csvtk' (no exact PyPI equivalent)" in (
        build.stdout + build.stderr
    )
    hub.run("/opt/tljh/envs/conda/bin/python -c 'import tqdm, cowsay'")
    assert hub.run("/opt/tljh/envs/conda/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip() == hub.python
    show = hub.run("tljh env show conda").stdout
    assert "# not built from the repository: conda package 'csvtk' (no exact PyPI equivalent)" in show, show
    assert "# requirements: environment.yml requirements.txt" in show, show
    assert "\ntqdm==4." in show and "\ncowsay==6.1" in show, show
    # The next commit makes the repository a package (pyproject.toml in the root, no environment.yml): it is
    # built as the builder and installed with the root's requirements.txt.
    head = push(hub, {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
                          '[project]\nname = "course-tools"\nversion = "1.0"\ndependencies = ["tqdm"]\n',
        "course_tools/__init__.py": "ANSWER = 42\n",
    }, remove=["environment.yml"], work=work)
    build = hub.run("tljh env build conda", timeout=900)
    assert f"conda: commit {head}" in build.stdout and "not built from the repository" not in build.stdout
    assert hub.run("cd / && /opt/tljh/envs/conda/bin/python -c 'import course_tools, cowsay, tqdm; "
                   "print(course_tools.ANSWER)'").stdout.strip() == "42"
    assert "# the repository itself is installed" in hub.run("tljh env show conda").stdout
    # The same files as an archive on the server (a forge's download: one top directory), unpacked by the builder.
    hub.run(f"{git_in(work)} archive --format=tar.gz --prefix=conda-course-main/ -o /srv/conda-course.tar.gz HEAD")
    hub.run("tljh-config set environments.conda.repository /srv/conda-course.tar.gz")
    build = hub.run("tljh env build conda", timeout=900)
    digest = hub.run("sha256sum /srv/conda-course.tar.gz").stdout.split()[0]
    assert f"conda: archive sha256:{digest}" in build.stdout, build.stdout
    assert hub.run("cd / && /opt/tljh/envs/conda/bin/python -c 'import course_tools; print(course_tools.ANSWER)'").stdout.strip() == "42"
    assert f"# archive: /srv/conda-course.tar.gz = sha256:{digest}" in hub.run("tljh env show conda").stdout
    assert "up to date" in hub.run("tljh env build conda").stdout


# ---------------------------------------------------------------------------------------------- users build their own

USER_REPO = "git://127.0.0.1/userproject.git"
PICK = "build-from-a-repository"  # the picker's profile for users' builds (tljh.settings.builds.REPOSITORY_PROFILE)
USER_POST_BUILD = "#!/bin/sh\necho 'postBuild of the user project says hello'\n"
USAGE_DIR = "/opt/tljh/state/environments/repository-builds"


def form_fields(url, ref=None):
    """The picker's form fields for "Other: build from a repository" (KubeSpawner's names, as browsers post them)."""
    prefix = f"profile-option-{PICK}--"
    fields = {"profile": PICK, prefix + "repository": "unlisted-choice", prefix + "repository--unlisted-choice": url}
    fields.update({prefix + "ref": "unlisted-choice", prefix + "ref--unlisted-choice": ref} if ref else
                  {prefix + "ref": "default"})
    return fields


async def post_picker(client, fields):
    """POST the picker as a browser does; returns (status, Location or the page's error message)."""
    async with client.session.get(client.url("hub/spawn")) as r:
        page = await r.text()
        assert r.status == 200 and "Other: build from a repository" in page, page[:500]
    data = {**fields, "_xsrf": client._xsrf() or ""}
    async with client.session.post(client.url("hub/spawn"), data=data, allow_redirects=False) as r:
        body = await r.text()
        if r.status == 302:
            return 302, r.headers["Location"]
        error = re.search(r'class="spawn-error-msg[^"]*"[^>]*>(.*?)</', body, re.S)
        return r.status, html.unescape(error.group(1).strip() if error else body[:500])


async def follow_progress(client, timeout=900):
    """The spawn page's event stream, until the server is ready or the spawn failed: the events."""
    events = []
    url = client.url(f"hub/api/users/{client.username}/server/progress")
    async with client.session.get(url, headers={**client._auth(), "Accept": "text/event-stream"},
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        assert r.status == 200, await r.text()
        async for raw in r.content:
            line = raw.decode(errors="replace").strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    return events
    return events


def push_branch(hub, work, branch, files):
    """Commit ``files`` on ``branch`` (made from main) and push that branch only; main stays as it was."""
    git = git_in(work)
    hub.run(f"{git} checkout -q -B {branch} main")
    hub.copy_tar(tar_of(files), work)
    hub.run(f"{git} add -A && {git} commit -q -m {branch} && {git} push -q origin HEAD:refs/heads/{branch}")
    head = hub.run(f"{git} rev-parse HEAD").stdout.strip()
    hub.run(f"{git} checkout -q main")
    return head


def usage_records(hub):
    """{build name: usage record} of users' builds, as the hub wrote them."""
    names = hub.run(f"ls {USAGE_DIR} 2>/dev/null | sed -n 's/\\.json$//p'", check=False).stdout.split()
    return {n: json.loads(hub.run(f"cat {USAGE_DIR}/{n}.json").stdout) for n in names}


@pytest.fixture(scope="module")
def user_project(hub):
    work = "/root/userproject"
    hub.run(f"git init -q --bare -b main /srv/git/userproject.git && git init -q -b main {work}")
    hub.run(f"{git_in(work)} remote add origin /srv/git/userproject.git")
    head = push(hub, {"requirements.txt": "cowsay==6.1\n", "postBuild": USER_POST_BUILD}, work=work)
    hub.run("tljh-config add-item builds.allowed_hosts 127.0.0.1")
    hub.run("tljh-config reload hub")

    async def users():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.create_users("repobuilder1", "repobuilder2", "repobuilder3")

    run(users())
    return types.SimpleNamespace(work=work, head=head)


def test_a_user_builds_a_repository_from_the_picker_and_watches_the_log(hub, user_project):
    async def scenario():
        async with HubClient(hub.url()) as student:
            student.hub = hub
            await student.login("repobuilder1", "student-password-1")
            status, where = await post_picker(student, form_fields(USER_REPO))
            assert status == 302 and "/hub/spawn-pending/repobuilder1" in where, where
            events = await follow_progress(student)
            messages = [e.get("message", "") for e in events]
            assert events[-1].get("ready"), messages
            building = [e["message"] for e in events if e.get("tljh_phase") == "building"]
            # The build's own log, live on the page: the lookup, the commit, uv, the repository's postBuild.
            assert f"Commit {user_project.head}" in building, building
            assert any("postBuild of the user project says hello" in m for m in building), building
            assert any(m.startswith("build ") and "is current" in m for m in building), building
            # The server starts once the build serves; its bytecode follows in the background.
            assert any(m.startswith("compiling bytecode in the background") for m in building), building
            try:
                kernel = await student.open_kernel()
                env = await kernel.execute("import cowsay; " + ENVIRONMENT_OF_KERNEL)
                await kernel.close()
            finally:
                await student.stop_server()
            return env

    env = run(scenario())
    (name, record), = usage_records(hub).items()
    assert env == f"'/opt/tljh/envs/{name}'"
    assert (record["url"], record["commit"], record["builds"], record["first_user"]) == (
        USER_REPO, user_project.head, 1, "repobuilder1")
    # Built as the builder, never root; nothing in it writable by users; the usage record root-only.
    assert hub.run(f"stat -c %U /opt/tljh/envs/{name}/bin").stdout.strip() == "tljh-builder"
    assert hub.run(f"find /opt/tljh/envs/{name} -perm /022 ! -type l | head -3").stdout == ""
    assert hub.run(f"stat -c %a {USAGE_DIR}/{name}.json").stdout.strip() == "600"


def test_a_second_user_asking_for_the_same_commit_starts_without_a_build(hub, user_project):
    (name, before), = usage_records(hub).items()
    build_id = current_build(hub, name)
    wait_for_bytecode(hub, name)  # the first user's build compiled its bytecode in the background, from the hub

    async def scenario():
        async with HubClient(hub.url()) as student:
            student.hub = hub
            await student.login("repobuilder2", "student-password-2")
            # Through the REST API, as scripts and load tests do, with the branch named.
            options = {"profile": PICK, "repository--unlisted-choice": USER_REPO, "ref--unlisted-choice": "main"}
            async with student.session.post(student.url("hub/api/users/repobuilder2/server"), json=options,
                                            headers=student._auth()) as r:
                assert r.status in (201, 202), await r.text()
                # 201: ready within the hub's slow_spawn_timeout; the progress stream then has only "ready".
                pending = r.status == 202
            events = await follow_progress(student)
            try:
                env = await student.run_code("import cowsay; " + ENVIRONMENT_OF_KERNEL)
            finally:
                await student.stop_server()
            return events, env, pending

    events, env, pending = run(scenario())
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("ready"), messages
    if pending:
        assert "This commit is built already: starting your server in it" in messages, messages
        assert not any("postBuild" in m for m in messages), messages
    assert env == f"'/opt/tljh/envs/{name}'"
    (same, after), = usage_records(hub).items()
    # The builder's record: one build (the hub counts each run of the builder), the same build id as before.
    assert same == name and after["builds"] == 1 and after["last_user"] == "repobuilder2"
    assert current_build(hub, name) == build_id


def test_a_repository_on_a_host_not_allowed_is_refused_with_the_reason(hub, user_project):
    async def scenario():
        async with HubClient(hub.url()) as student:
            await student.login("repobuilder2", "student-password-2")
            status, said = await post_picker(student, form_fields("git://localhost/userproject.git"))
            assert status == 400, said
            assert "is not accepted (the URL of a git repository on 127.0.0.1)" in said, said
            with pytest.raises(HubError) as e:
                await student.api("POST", "hub/api/users/repobuilder2/server",
                                  json={"profile": PICK, "repository--unlisted-choice": "git://10.0.0.1/x.git"})
            assert "400" in str(e.value) and "is not accepted" in str(e.value), e.value

    run(scenario())
    assert len(usage_records(hub)) == 1  # nothing was looked up or built


def test_bad_repositories_end_with_the_reason_and_another_profile_still_starts(hub, user_project):
    # A commit whose postBuild fails, on a branch of its own.
    push_branch(hub, user_project.work, "broken", {"postBuild": "#!/bin/sh\necho 'broken on purpose'\nexit 3\n"})
    push_branch(hub, user_project.work, "oldpython", {"runtime.txt": "python-3.4\n"})

    async def failure(student, fields):
        status, where = await post_picker(student, fields)
        if status != 302:
            return where  # refused within the form's first second
        events = await follow_progress(student)
        assert events[-1].get("failed"), events
        return events[-1]["message"]

    async def scenario():
        async with HubClient(hub.url()) as student:
            student.hub = hub
            await student.login("repobuilder1", "student-password-1")
            said = await failure(student, form_fields(USER_REPO, ref="broken"))
            assert "The build of git://127.0.0.1/userproject.git at" in said and "broken on purpose" in said, said
            assert "exit status 3" in said, said
            said = await failure(student, form_fields(USER_REPO, ref="oldpython"))
            assert f"runtime.txt asks for Python 3.4, which this system does not have: it has Python {hub.python}" in said, said
            said = await failure(student, form_fields(USER_REPO, ref="no-such-branch"))
            assert "git://127.0.0.1/userproject.git has no branch or tag 'no-such-branch'" in said, said
            said = await failure(student, form_fields("git://127.0.0.1/not-there.git"))
            assert "cannot be read without a login, or does not exist" in said, said
            # The same person picks another profile: it starts (the module's "Python", or the hub-wide "Default").
            other = "python" if "display_name: Python" in hub.run("cat /opt/tljh/config/config.yaml").stdout else "default"
            await start(student, user_options={"profile": other})
            assert await student.run_code("1+1") == "2"
            await student.stop_server()

    run(scenario())
    assert len(usage_records(hub)) == 1  # the failed build left no build behind
    assert hub.run("ls /opt/tljh/envs | grep -c '^repo-'", check=False).stdout.strip() == "1"


def test_a_browser_shows_the_build_log_live_and_lands_in_jupyterlab(hub, user_project):
    """Chromium: pick "Other: build from a repository", type the URL and a branch with a new commit (so it is
    built), press Start: the spawn page's event log shows the build's lines while it builds, then JupyterLab."""
    head = push_branch(hub, user_project.work, "browser", {"README.md": "built in a browser\n"})
    with chromium() as page:
        page.goto(hub.url("/hub/login"))
        page.fill("#username_input", "repobuilder3")
        page.fill("#password_input", "student-password-3")
        page.click("#login_submit")
        page.wait_for_selector(f"#profile-item-{PICK}")
        page.click(f"#profile-item-{PICK}")
        page.fill(f"#profile-option-{PICK}--repository--unlisted-choice", USER_REPO)
        page.click(f"label[for='profile-option-{PICK}--ref-unlisted']")
        page.fill(f"#profile-option-{PICK}--ref--unlisted-choice", "browser")
        screenshot(page, "repository-picker.png")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url("**/hub/spawn-pending/repobuilder3**", timeout=60_000)
        # Live: the commit's lines are on the page before the server is there.
        page.wait_for_selector(f"#progress-log .progress-log-event:has-text('Commit {head}')", state="attached",
                               timeout=120_000)
        page.wait_for_selector("#progress-log .progress-log-event:has-text('postBuild of the user project says hello')",
                               state="attached", timeout=600_000)
        page.click("#progress-details summary")
        screenshot(page, "repository-build-log.png")
        page.wait_for_url("**/user/repobuilder3/lab**", timeout=600_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
    records = usage_records(hub)
    assert [r["first_user"] for r in records.values()].count("repobuilder3") == 1, records
