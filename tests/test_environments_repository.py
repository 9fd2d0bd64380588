"""Environments from a git repository, built with the real git and uv (issue 14): what is read, the commit a
build is pinned to, refusals that leave the last good build serving.

Repositories are local git repositories made here; on a server git and uv run as tljh-builder in sandboxed
units (integration tests), here unsandboxed as the test's user, through the same code.
"""

import json
import os
import subprocess
import sys

import pytest
from environments_testing import build, prefix, small, uv_cache  # noqa: F401

from tljh.environments import builder as builder_module
from tljh.environments import checks, commands as commands_module, repository, spec as specs_module, store
from tljh.settings import schema
from tljh.settings.errors import ConfigError


def git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def commit(repo, files, message="change", remove=()):
    """Write ``files`` ({path: text}) into the repository (an executable bit for postBuild) and commit."""
    for path, text in files.items():
        full = os.path.join(repo, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        if os.path.basename(path) == "postBuild":
            os.chmod(full, 0o755)
    for path in remove:
        git(repo, "rm", "-q", "-r", path)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "course"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, {"requirements.txt": "idna\n", "README.md": "a course\n"})
    return path


def course(repo, **entry):
    return {"environments": {"course": {"repository": str(repo), **entry}}}


def test_requirements_and_post_build_from_binder_directory(build, repo):
    # binder/ wins over the root: the root's requirements.txt (idna) is not what is built.
    head = commit(repo, {
        "binder/requirements.txt": "-r more.txt\n",
        "binder/more.txt": "packaging\n",
        "binder/runtime.txt": "python-3.%s\n" % __import__("sys").version_info[1],
        "binder/postBuild": "#!/bin/sh\nset -e\necho made-by-postbuild > \"$NB_PYTHON_PREFIX/postbuild.txt\"\n"
                            "python -c 'import packaging' && echo packaging-importable\n",
    })
    outcome = build(small(course(repo), "course"))
    assert outcome.state == "built", outcome.message
    text = "\n".join(outcome.lines)
    assert f"course: commit {head}" in text and "packaging-importable" in text
    current = store.current("course")
    pins = builder_module.pins(current.lock())
    assert "packaging" in pins and "idna" not in pins
    with open(os.path.join(current.path, "postbuild.txt")) as f:
        assert f.read() == "made-by-postbuild\n"
    origin = current.record["spec"]["repository"]
    assert origin["commit"] == head and origin["post_build"] is True
    assert current.record["spec"]["requirements"] == ["binder/requirements.txt", "binder/more.txt"]
    assert not os.path.exists(repository.checkout_path("course"))  # the checkout is not kept
    # Same commit, same config: nothing to do; the state seen without a fetch agrees.
    assert build(small(course(repo), "course")).state == "up to date"
    assert builder_module.state_of(small(course(repo), "course"))[0] == "up to date"
    # A config change is seen without a fetch; a new commit only by the next build.
    assert builder_module.state_of(small(course(repo, allow_apt=["less"]), "course"))[0] == "needs a build"
    newer = commit(repo, {"binder/more.txt": "packaging\nidna\n"})
    again = build(small(course(repo), "course"))
    assert again.state == "built" and store.current("course").record["spec"]["repository"]["commit"] == newer


def test_ref_selects_a_branch_a_tag_or_a_commit(build, repo):
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    git(repo, "checkout", "-q", "-b", "other")
    other = commit(repo, {"requirements.txt": "packaging\n"})
    git(repo, "checkout", "-q", "main")
    for ref, wanted in (("other", other), ("v1", first), (first, first), (None, first)):
        outcome = build(small(course(repo, **({"ref": ref} if ref else {})), "course"))
        assert outcome.state == "built", outcome.message
        assert store.current("course").record["spec"]["repository"]["commit"] == wanted


def test_refusals_leave_the_last_good_build_serving(build, repo, tmp_path):
    assert build(small(course(repo), "course")).state == "built"
    serving = store.current("course").build

    def refused(spec, *words):
        outcome = build(spec)
        assert outcome.state == "failed", outcome.lines
        for word in words:
            assert word in outcome.message, outcome.message
        assert f"build {serving} keeps serving" in outcome.message
        assert store.current("course").build == serving
        assert builder_module.last_failure("course").startswith(outcome.message.splitlines()[0])
        assert not os.path.exists(store.staging_path("course"))
        assert not os.path.exists(repository.checkout_path("course"))

    refused(small(course(tmp_path / "nowhere"), "course"), "cannot fetch")
    refused(small(course(repo, ref="no-such-branch"), "course"), "has no branch, tag or commit 'no-such-branch'")
    commit(repo, {"Dockerfile": "FROM debian\n", "Pipfile": "[packages]\n"})
    refused(small(course(repo), "course"), "a Dockerfile (no Docker here)", "Pipfile",
            "allow_unsupported")
    commit(repo, {"postBuild": "#!/bin/sh\necho about to fail\nexit 3\n"}, remove=["Dockerfile", "Pipfile"])
    refused(small(course(repo), "course"), "postBuild", "exit status 3", "about to fail")
    commit(repo, {"postBuild": "#!/bin/sh\ntrue\n", "requirements.txt": "-r /etc/passwd\n"})
    refused(small(course(repo), "course"), "points outside the repository")
    os.symlink("/etc/passwd", repo / "apt.txt")
    commit(repo, {"requirements.txt": "idna\n"})
    refused(small(course(repo), "course"), "apt.txt points outside the repository")


def test_allow_unsupported_reads_the_rest_and_names_what_is_not_built(repo):
    commit(repo, {"Dockerfile": "FROM debian\n", "apt.txt": "less\n# a comment\ncowsay\n"})
    # What is read (installing OS packages with apt needs a server: the integration tests).
    spec = repository.read(
        small(course(repo, allow_unsupported=True, allow_apt=["less"]), "course"), str(repo), "0" * 40
    )
    assert spec.apt == ("less",)
    assert spec.unsupported == ("a Dockerfile (no Docker here)", "apt.txt package cowsay (not in environments.course.allow_apt)")
    with pytest.raises(repository.RepositoryError) as e:
        repository.read(small(course(repo, allow_apt=["less", "cowsay"]), "course"), str(repo), "0" * 40)
    assert "a Dockerfile" in str(e.value) and "cowsay" not in str(e.value)


def test_both_binder_directories_are_refused(repo):
    commit(repo, {"binder/requirements.txt": "idna\n", ".binder/requirements.txt": "idna\n"})
    with pytest.raises(repository.RepositoryError, match="both binder/ and .binder/"):
        repository.read(small(course(repo), "course"), str(repo), "0" * 40)


def test_tljh_config_checks_the_repository_and_ref(prefix, repo, tmp_path):
    checks.check_repository("course", {"repository": str(repo), "ref": "main"}, {}, course(repo, ref="main"))
    with pytest.raises(ConfigError) as e:
        checks.check_repository("course", {"repository": str(repo), "ref": "nope"}, {}, course(repo, ref="nope"))
    assert str(e.value) == f"environments.course.repository: {repo} has no branch or tag 'nope'"
    with pytest.raises(ConfigError) as e:
        missing = tmp_path / "missing"
        checks.check_repository("course", {"repository": str(missing)}, {}, course(missing))
    assert str(e.value).startswith(f"environments.course.repository: cannot reach {missing}: ")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="default environment"):
        checks.check_repository("default", {"repository": str(repo)}, {}, {"environments": {"default": {"repository": str(repo)}}})


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the repository another owner needs root")
def test_a_repository_on_this_server_owned_by_someone_else(build, repo, monkeypatch):
    # On a server the builder reads a repository that root or a teacher made: git's ownership check in the
    # fetch's second program (upload-pack) refused it ("Could not read from remote repository"). Here the
    # test's root reads a repository owned by nobody, which that check treats the same way.
    monkeypatch.delenv("SUDO_UID", raising=False)  # git would take the sudo caller as the owner to compare
    head = git(repo, "rev-parse", "HEAD")
    subprocess.run(["chown", "-R", "65534:65534", str(repo)], check=True)
    for url in (str(repo), f"file://{repo}"):
        checks.check_repository("course", {"repository": url}, {}, {"environments": {"course": {"repository": url}}})
    outcome = build(small(course(repo), "course"))
    assert outcome.state == "built", outcome.message
    assert store.current("course").record["spec"]["repository"]["commit"] == head


def test_schema_refuses_what_the_repository_provides():
    def errors(config):
        return [str(p) for p in schema.errors_only(schema.validate_config(config))]

    ok = {"environments": {"course": {"repository": "https://git.example.org/course.git", "ref": "v1.0"}}}
    assert errors(ok) == []
    for key, value, words in (
        ("python", "3.11", "takes python from the repository's runtime.txt"),
        ("requirements", "/srv/r.txt", "takes requirements from the repository's requirements.txt"),
        ("ref", "--upload-pack=x", "a branch, a tag or a full commit id"),
        ("repository", "-oProxyCommand=x", "a git URL"),
    ):
        bad = json.loads(json.dumps(ok))
        bad["environments"]["course"][key] = value
        found = errors(bad)
        assert len(found) == 1 and words in found[0], found


def test_with_a_binder_directory_the_roots_files_are_not_read(repo):
    commit(repo, {"Dockerfile": "FROM debian\n", "binder/requirements.txt": "packaging\n"})
    spec = repository.read(small(course(repo), "course"), str(repo), "0" * 40)
    assert spec.unsupported == ()
    assert [os.path.relpath(p, repo) for p, _ in spec.requirements_files] == ["binder/requirements.txt"]
    commit(repo, {"binder/Dockerfile": "FROM debian\n"})
    with pytest.raises(repository.RepositoryError, match="a Dockerfile"):
        repository.read(small(course(repo), "course"), str(repo), "0" * 40)


ENVIRONMENT_YML = """\
name: course
channels:
  - conda-forge
dependencies:
  - python=3.%d
  - pip
  - conda-forge::tqdm=4
  - csvtk
  - pip:
      - -r requirements.txt
      - packaging
"""


def test_environment_yml_pip_section_and_exact_conda_names(build, repo):
    # tqdm is a PyPI project on conda-forge (the installer's exact map); csvtk is a program with no PyPI
    # equivalent: listed, and the flag decides. requirements.txt next to environment.yml is read only through
    # the pip section's -r (repo2docker's precedence), and the root's (idna) not at all.
    commit(repo, {
        "binder/environment.yml": ENVIRONMENT_YML % sys.version_info[1],
        "binder/requirements.txt": "typing-extensions\n",
    })
    refused = build(small(course(repo), "course"))
    assert refused.state == "failed"
    assert "conda package 'csvtk' (no exact PyPI equivalent)" in refused.message
    assert "allow_unsupported" in refused.message and "tqdm" not in refused.message
    outcome = build(small(course(repo, allow_unsupported=True), "course"))
    assert outcome.state == "built", outcome.message
    assert "warning: course: not built from the repository: conda package 'csvtk' (no exact PyPI equivalent)" in outcome.lines
    current = store.current("course")
    pins = builder_module.pins(current.lock())
    assert {"tqdm", "packaging", "typing-extensions"} <= set(pins) and "idna" not in pins
    assert pins["tqdm"].startswith("4.")
    spec = current.record["spec"]
    assert spec["requirements"] == ["binder/environment.yml", "binder/requirements.txt"]
    assert spec["repository"]["unsupported"] == ["conda package 'csvtk' (no exact PyPI equivalent)"]
    assert current.python == "3.%d" % sys.version_info[1]


def read_yml(repo, text, **entry):
    commit(repo, {"environment.yml": text})
    return repository.read(small(course(repo, allow_unsupported=True, **entry), "course"), str(repo), "0" * 40)


def test_environment_yml_what_translates(repo, monkeypatch):
    from tljh.system import pythons

    monkeypatch.setattr(pythons, "installed", lambda: {"3.12": "/usr/bin/python3.12"})  # the Python it asks for
    spec = read_yml(repo, "dependencies: [python==3.12.4, 'tqdm>=4.60,<5', matplotlib-base=3.9, pyyaml,"
                          " bioconda::numpy, 'numpy 1.26', python-dateutil, r-ggplot2, {pip: [idna]}]\n"
                          "variables: {A: b}\n")
    assert spec.python == "3.12"
    ((path, text),) = spec.requirements_files
    assert path == os.path.join(repo, "environment.yml")
    assert text.splitlines()[1:] == ["tqdm>=4.60,<5", "matplotlib==3.9.*", "PyYAML", "idna"]
    assert spec.unsupported == (
        "conda package 'bioconda::numpy' (a conda channel or version spec with no PyPI equivalent)",
        "conda package 'numpy 1.26' (a conda channel or version spec with no PyPI equivalent)",
        "conda package 'python-dateutil' (no exact PyPI equivalent)",
        "conda package 'r-ggplot2' (no exact PyPI equivalent)",
        "environment.yml variables",
    )
    # requirements.txt and runtime.txt are not read next to environment.yml (repo2docker's precedence).
    commit(repo, {"requirements.txt": "idna\n", "runtime.txt": "python-3.11\n"})
    spec = read_yml(repo, "dependencies: [python, pip]\n")
    assert spec.python is None and spec.unsupported == ()
    assert [text for _, text in spec.requirements_files] == ["# from environment.yml\n"]
    assert read_yml(repo, "dependencies: ['python>=3.9']\n").unsupported == (
        "environment.yml 'python>=3.9' (only python=3.X)",
    )


@pytest.mark.parametrize("text, words", [
    ("dependencies: [a\n", "environment.yml is not valid YAML"),
    ("- numpy\n", "environment.yml must be a mapping"),
    ("dependencies: numpy\n", "dependencies must be a list"),
    ("dependencies: [{pip: idna}]\n", "the pip section must be a list"),
    ("dependencies: [{conda: [idna]}]\n", "is neither a conda package nor the pip section"),
    ("dependencies: [{pip: ['-r /etc/passwd']}]\n", "points outside the repository"),
])
def test_environment_yml_refusals(repo, text, words):
    with pytest.raises(repository.RepositoryError, match=words) as e:
        read_yml(repo, text)
    assert "\n" not in str(e.value)


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "course-tools"
version = "1.0"
dependencies = ["packaging"]
"""


def test_the_repository_itself_is_installed(build, repo):
    # A package at the root (no binder/): installed like `pip install .`, with its dependencies and the root's
    # requirements.txt. Its name and version stay the same from commit to commit: the new code must be built.
    commit(repo, {"pyproject.toml": PYPROJECT, "course_tools/__init__.py": "ANSWER = 1\n"})
    outcome = build(small(course(repo), "course"))
    assert outcome.state == "built", outcome.message
    current = store.current("course")
    pins = builder_module.pins(current.lock())
    assert {"packaging", "idna"} <= set(pins)
    assert f"course-tools @ file://{repository.checkout_path('course')}\n" in current.lock()
    assert "course-tools" in builder_module.locked_names(current.lock())
    assert builder_module.by_hand(current.path, current.lock()) == {}  # locked, not installed by hand
    assert current.record["spec"]["repository"]["installs_itself"] is True

    def answer():
        python = os.path.join(store.current("course").path, "bin", "python")
        return subprocess.run([python, "-c", "import course_tools; print(course_tools.ANSWER)"],
                              check=True, capture_output=True, text=True, cwd="/").stdout.strip()

    assert answer() == "1"
    commit(repo, {"course_tools/__init__.py": "ANSWER = 2\n"})
    assert build(small(course(repo), "course")).state == "built"
    assert answer() == "2" and store.current("course").record["by_hand"] == []


def test_what_counts_as_the_repository_s_own_package(repo):
    def reads(files, remove=()):
        commit(repo, files, remove=remove)
        return repository.read(small(course(repo, allow_unsupported=True), "course"), str(repo), "0" * 40)

    assert reads({"setup.py": "from setuptools import setup\nsetup()\n"}).installs_itself is True
    # A pyproject.toml holding only tools' settings is not a package.
    tools_only = reads({"pyproject.toml": "[tool.black]\nline-length = 100\n"}, remove=["setup.py"])
    assert tools_only.installs_itself is False and tools_only.unsupported == ()
    assert reads({"pyproject.toml": PYPROJECT}).installs_itself is True
    # Not with environment.yml, nor with a binder directory (repo2docker's rules); a pyproject.toml in binder/
    # (repo2docker would install the root from it) is named.
    assert reads({"environment.yml": "dependencies: [pip]\n"}).installs_itself is False
    in_binder = reads({"binder/pyproject.toml": PYPROJECT}, remove=["environment.yml"])
    assert in_binder.installs_itself is False
    assert in_binder.unsupported == ("pyproject.toml in the binder directory (installing the repository's root from it)",)


def make_archive(path, files, top=None):
    """A .tar.gz or .zip of ``files`` ({name: text}), inside directory ``top`` if given."""
    import io
    import tarfile
    import zipfile

    names = {(f"{top}/{n}" if top else n): text for n, text in files.items()}
    if str(path).endswith(".zip"):
        with zipfile.ZipFile(path, "w") as z:
            for name, text in names.items():
                z.writestr(name, text)
        return
    with tarfile.open(path, "w:gz") as tar:
        for name, text in names.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            info.mode = 0o755 if name.endswith("postBuild") else 0o644
            tar.addfile(info, io.BytesIO(text.encode()))


def test_an_archive_of_a_repository(build, tmp_path, prefix):
    # A forge's download holds one directory: the files are read from inside it. The archive's sha256 plays
    # the commit's part: same content, up to date; new content, a new build.
    archive = tmp_path / "course-main.tar.gz"
    make_archive(archive, {"binder/requirements.txt": "packaging\n", "binder/postBuild": "#!/bin/sh\necho from-the-archive\n"},
                 top="course-main")
    config = {"environments": {"course": {"repository": str(archive)}}}
    outcome = build(small(config, "course"))
    assert outcome.state == "built", outcome.message
    assert "from-the-archive" in "\n".join(outcome.lines)
    current = store.current("course")
    digest = "sha256:" + __import__("hashlib").sha256(archive.read_bytes()).hexdigest()
    assert current.record["spec"]["repository"]["commit"] == digest
    assert current.record["spec"]["requirements"] == ["binder/requirements.txt"]
    assert "packaging" in builder_module.pins(current.lock())
    assert build(small(config, "course")).state == "up to date"
    show = "\n".join(commands_module.show_lines(config, "course"))
    assert f"# archive: {archive} = {digest} (with postBuild)" in show, show
    # A zip without a top directory; a member naming ../ stays inside the checkout.
    make_archive(tmp_path / "course.zip", {"requirements.txt": "idna\n", "../outside.txt": "x"})
    zipped = {"environments": {"course": {"repository": str(tmp_path / "course.zip")}}}
    assert build(small(zipped, "course")).state == "built"
    assert "idna" in builder_module.pins(store.current("course").lock())
    assert not (tmp_path / "outside.txt").exists() and not (prefix / "envs" / "outside.txt").exists()


def test_archive_refusals(build, tmp_path, prefix):
    archive = tmp_path / "course.tar.gz"
    make_archive(archive, {"requirements.txt": "idna\n"})
    with_ref = small({"environments": {"course": {"repository": str(archive), "ref": "main"}}}, "course")
    outcome = build(with_ref)
    assert outcome.state == "failed" and "is an archive: it has no branch or tag" in outcome.message
    with pytest.raises(ConfigError, match="is an archive: it has no branch or tag"):
        checks.check_repository("course", {"repository": str(archive), "ref": "main"}, {},
                                {"environments": {"course": {"repository": str(archive), "ref": "main"}}})
    missing = str(tmp_path / "missing.zip")
    with pytest.raises(ConfigError, match=f"cannot read the archive {missing}"):
        checks.check_repository("course", {"repository": missing}, {}, {"environments": {"course": {"repository": missing}}})
    (tmp_path / "broken.tar.gz").write_text("not an archive")
    broken = small({"environments": {"course": {"repository": str(tmp_path / "broken.tar.gz")}}}, "course")
    outcome = build(broken)
    assert outcome.state == "failed" and outcome.message.startswith(f"cannot unpack {tmp_path / 'broken.tar.gz'}: ")
    assert not os.path.exists(repository.checkout_path("course"))


def test_start_wraps_the_server_command(build, repo, prefix):
    from tljh.environments import serving
    from tljh.hub import session_installs
    from tljh.system import paths

    commit(repo, {"start": '#!/bin/sh\nexport COURSE_STARTED=yes\nexec "$@"\n'})
    outcome = build(small(course(repo), "course"))
    assert outcome.state == "built", outcome.message
    current = store.current("course")
    assert current.record["spec"]["repository"]["start"] is True
    script = os.path.join(current.path, builder_module.START_SCRIPT)
    assert os.stat(script).st_mode & 0o777 == 0o755
    ran = subprocess.run([script, "sh", "-c", "echo $COURSE_STARTED"], capture_output=True, text=True, check=True)
    assert ran.stdout == "yes\n"
    show = "\n".join(commands_module.show_lines(course(repo), "course"))
    assert "(with start)" in show, show

    course_bin = os.path.join(paths.environment_prefix("course"), "bin")
    user_bin = os.path.join(paths.USER_ENV_PREFIX, "bin")
    env = serving.server_environment("course")
    cmd = env.command([os.path.join(user_bin, "jupyterhub-singleuser"), "--debug"])
    assert cmd == [os.path.join(course_bin, "tljh-repository-start"), os.path.join(course_bin, "jupyterhub-singleuser"), "--debug"]
    # The session layer still finds the environment the server runs from.
    assert session_installs.server_prefix(cmd) == paths.environment_prefix("course")
    # A spawner keeps its command between starts: one wrapper, and none in an environment without start.
    assert env.command(cmd) == cmd
    os.makedirs(user_bin)
    open(os.path.join(user_bin, "python"), "w").close()
    assert serving.server_environment("default").command(cmd) == [os.path.join(user_bin, "jupyterhub-singleuser"), "--debug"]


def test_a_build_stopped_by_its_limits_says_why_and_the_last_good_build_keeps_serving(build, repo):
    from tljh.environments.limits import BuildLimits
    from tljh.system import sandbox

    assert build(small(course(repo), "course")).state == "built"
    serving = store.current("course").build
    commit(repo, {"postBuild": "#!/bin/sh\necho computing the course data\nsleep 120\n"})

    def outcome_of(builder):
        outcome = builder.build(small(course(repo), "course"))
        assert outcome.state == "failed"
        assert store.current("course").build == serving and f"build {serving} keeps serving" in outcome.message
        assert not os.path.exists(store.staging_path("course"))
        show = "\n".join(commands_module.show_lines(course(repo), "course"))
        assert f"# LAST BUILD FAILED: {outcome.message.splitlines()[0]}" in show
        return outcome

    # Time, for real: the whole build's (here it runs out during uv or the postBuild, whichever is reached).
    lines = []
    timed = outcome_of(builder_module.Builder(out=lines.append, limits=BuildLimits(seconds=3)))
    assert timed.message.startswith("building course timed out after 3 s (raise builds.time_limit"), timed.message

    # Memory: what the sandbox reports when systemd or the kernel stopped the postBuild (only a real unit has
    # a memory limit: the integration tests).
    def out_of_memory(unit, writable, readable=(), env=None, limits=None):
        box = sandbox.Unsandboxed(unit, writable, readable, env, limits=limits)
        if unit.startswith("tljh-env-postbuild-"):
            def run(argv, on_line=None, cwd="/"):
                raise sandbox.LimitExceeded("memory", "ran out of memory (limit 200M)", ["computing the course data"])
            box.run = run
        return box

    builder = builder_module.Builder(out=lines.append, make_sandbox=out_of_memory, limits=BuildLimits(memory=200 << 20))
    memory = outcome_of(builder)
    assert memory.message.startswith(
        "building course ran out of memory (limit 200M) (raise builds.memory_limit if it needs more); its last "
        "output:\ncomputing the course data"
    ), memory.message


def test_a_python_the_system_does_not_have_is_refused_before_anything_is_installed(build, repo, monkeypatch):
    """runtime.txt (or environment.yml's python) names a Python that is not installed: the build is refused with
    the versions this system has, before any OS package is installed (a user's build could not install one: the
    hub's /usr is read-only), for an admin's build and a user's build alike; the last good build serves."""
    from tljh.environments import user_builds
    from tljh.system import apt, pythons

    assert build(small(course(repo, allow_apt=["less"]), "course")).state == "built"
    serving = store.current("course").build
    apt_calls = []
    for name in ("install", "update", "candidates", "package_names"):
        monkeypatch.setattr(apt, name, lambda *a, _name=name, **k: apt_calls.append(_name))
    have = ", ".join(pythons.installed())
    assert have and "3.4" not in pythons.installed()

    def refused(spec, asked_by):
        outcome = build(spec)
        assert outcome.state == "failed", outcome.lines
        first = outcome.message.splitlines()[0]
        assert first == (f"{asked_by} asks for Python 3.4, which this system does not have: it has Python {have} "
                         "(an administrator can add python3.4 from the OS archive, if it provides it)"), first
        assert apt_calls == [] and not any("apt" in line for line in outcome.lines), outcome.lines
        return outcome

    commit(repo, {"runtime.txt": "python-3.4\n", "apt.txt": "less\n"})
    outcome = refused(small(course(repo, allow_apt=["less"]), "course"), "runtime.txt")
    assert f"(course: build {serving} keeps serving)" in outcome.message
    assert store.current("course").build == serving
    commit(repo, {"binder/environment.yml": "dependencies: [python=3.4, {pip: [idna]}]\n"}, remove=["runtime.txt"])
    refused(small(course(repo, allow_apt=["less"]), "course"), os.path.join("binder", "environment.yml"))
    assert store.current("course").build == serving

    # A user's build (the hub's Builder: confined sandbox, no OS packages) of the same commit.
    head = git(repo, "rev-parse", "HEAD")
    spec = user_builds.spec_for(str(repo), head, ("pip", "six"))
    outcome = refused(spec, os.path.join("binder", "environment.yml"))
    assert f"({spec.name}: nothing was built)" in outcome.message
    assert store.current(spec.name) is None


def test_a_repository_build_serves_before_its_bytecode_is_compiled(prefix, repo, monkeypatch):
    """The builder compiles a repository build's bytecode after the switch, in the background (as any build's):
    the build is reported current, and serves, before the compile starts."""
    from tljh.environments import bytecode
    from tljh.system import paths, sandbox

    started = []

    def make(unit, writable, readable=(), env=None, **options):
        box = sandbox.sandbox(unit, writable, readable, env, **options)
        if unit.startswith("tljh-env-bytecode-"):
            box.start = lambda argv, cwd="/": started.append(list(argv)) or True  # not run in the background here
        return box

    lines = []
    builder = builder_module.Builder(out=lines.append, make_sandbox=make)
    outcome = builder.build(small(course(repo), "course"))
    assert outcome.state == "built", outcome.message
    current = store.current("course")
    assert started == [bytecode.command(paths.environment_prefix("course"), current.build)]
    assert not bytecode.compiled(current.path, current.build)
    current_at = next(i for i, line in enumerate(lines) if line.startswith(f"course: build {current.build} is current"))
    assert lines[current_at + 1].startswith("course: compiling bytecode in the background"), lines
    # It serves without its bytecode (imports compile in memory), and the compile, run now, completes it.
    python = os.path.join(current.path, "bin", "python")
    subprocess.run([python, "-c", "import idna"], check=True, cwd="/")
    subprocess.run(started[0], check=True)
    assert bytecode.compiled(current.path, current.build)
