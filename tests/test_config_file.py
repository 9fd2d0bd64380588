"""config.yaml on disk: round trip with comments, malformed files, atomic writes under a lock."""

import os
import stat
import threading
import time

import pytest

from tljh.settings import config_file
from tljh.system import files
from tljh.settings.config_file import ConfigFileError


def test_missing_and_empty_file_are_empty_config(tmp_path):
    assert config_file.load_raw(tmp_path / "nope.yaml") == {}
    (tmp_path / "empty.yaml").write_text("")
    assert config_file.load_raw(tmp_path / "empty.yaml") == {}
    (tmp_path / "comments.yaml").write_text("# nothing yet\n")
    assert config_file.load_raw(tmp_path / "comments.yaml") == {}


def test_load_returns_plain_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("users:\n  admin: [a, b]\nlimits:\n  cpu: 1.5\nhttps:\n  enabled: true\n")
    c = config_file.load_raw(p)
    assert c == {"users": {"admin": ["a", "b"]}, "limits": {"cpu": 1.5}, "https": {"enabled": True}}
    assert type(c) is dict and type(c["users"]["admin"]) is list


@pytest.mark.parametrize(
    "text,line,problem",
    [
        ("users:\n  admin: [a, b\nlimits: {}\n", 3, ""),
        ("users:\n  admin:\n- a\n bad: x\n", 3, "expected <block end>"),
        ("a: 1\na: 2\n", 2, "duplicate key"),
        ("key: 'unterminated\n", 2, ""),
        ("- just\n- a list\n", 1, "top level must be a mapping"),
        ("users:\n\tadmin: []\n", 2, ""),
    ],
)
def test_malformed_yaml_names_file_line_problem(tmp_path, text, line, problem):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    with pytest.raises(ConfigFileError) as e:
        config_file.load_raw(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line {line}: "), msg
    assert problem in msg
    assert "\n" not in msg


def test_update_document_never_overwrites_malformed_file(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_bytes(b"users: [\n")
    called = []
    with pytest.raises(ConfigFileError):
        config_file.update_document(p, called.append)
    assert called == []
    assert p.read_bytes() == b"users: [\n"


def test_refusal_inside_mutate_writes_nothing(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("# keep me\nlimits:\n  cpu: 2\n")
    before = p.read_bytes()

    def mutate(doc):
        doc["limits"]["cpu"] = 4
        raise ValueError("refused")

    with pytest.raises(ValueError):
        config_file.update_document(p, mutate)
    assert p.read_bytes() == before


def test_round_trip_keeps_comments_order_and_quotes(tmp_path):
    p = tmp_path / "config.yaml"
    text = (
        "# Hub for the physics course\n"
        "users:\n"
        "  admin:\n"
        "    - alice  # the teacher\n"
        "    - 'bob'\n"
        "# limits below\n"
        "limits:\n"
        "  memory: 2G  # per student\n"
        "base_url: /\n"
    )
    p.write_text(text)

    def mutate(doc):
        config_file.append_item(doc["users"]["admin"], "carol")
        config_file.set_key(doc["limits"], "cpu", 1)

    config_file.update_document(p, mutate)
    out = p.read_text()
    assert out == (
        "# Hub for the physics course\n"
        "users:\n"
        "  admin:\n"
        "    - alice  # the teacher\n"
        "    - 'bob'\n"
        "    - carol\n"
        "# limits below\n"
        "limits:\n"
        "  memory: 2G  # per student\n"
        "  cpu: 1\n"
        "base_url: /\n"
    )


def test_comment_only_file_keeps_comments(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("# Managed with tljh-config\n# second line\n")
    config_file.update_document(p, lambda doc: config_file.set_key(doc, "base_url", "/x/"))
    assert p.read_text() == "# Managed with tljh-config\n# second line\nbase_url: /x/\n"


def test_atomic_write_mode_and_no_temp_files(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("a: 1\n")
    os.chmod(p, 0o644)
    files.write_atomic(p, "b: 2\n")
    assert p.read_text() == "b: 2\n"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_atomic_write_check_refuses_before_replacing(tmp_path):
    """The sudoers drop-in is checked (visudo) as the complete temporary file, before it replaces the old one."""
    p = tmp_path / "jupyterhub-admins"
    p.write_text("old\n")
    seen = []

    def refuse(tmp):
        seen.append(open(tmp).read())
        raise ValueError("rejected")

    with pytest.raises(ValueError):
        files.write_atomic(p, "new\n", mode=0o440, check=refuse)
    assert seen == ["new\n"]
    assert p.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["jupyterhub-admins"]
    files.write_atomic(p, "new\n", mode=0o440, check=lambda tmp: None)
    assert p.read_text() == "new\n" and stat.S_IMODE(os.stat(p).st_mode) == 0o440


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    p = tmp_path / "config.yaml"
    p.write_text("a: 1\n")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        files.write_atomic(p, "b: 2\n")
    assert p.read_text() == "a: 1\n"
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_unchanged_text_is_not_rewritten(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("a: 1\n")
    inode = os.stat(p).st_ino
    config_file.update_document(p, lambda doc: None)
    assert os.stat(p).st_ino == inode


def test_lock_is_exclusive(tmp_path):
    p = tmp_path / "config.yaml"
    events = []

    def hold():
        with config_file.locked(p):
            events.append("a-in")
            time.sleep(0.3)
            events.append("a-out")

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.1)
    # flock locks belong to the open file description: a second open() in this process waits too
    with config_file.locked(p):
        events.append("b-in")
    t.join()
    assert events == ["a-in", "a-out", "b-in"]
    assert os.path.exists(config_file.lock_path(p))


def test_lock_is_tljhs(tmp_path):
    """A TLJH tool holding TLJH's lock (filelock on config.yaml.lock) makes tljh-config's edits wait."""
    import filelock

    p = tmp_path / "config.yaml"
    p.write_text("a: 1\n")
    assert config_file.lock_path(p) == str(p) + ".lock"
    events = []

    def tljh_tool():
        with filelock.FileLock(str(p) + ".lock"):
            events.append("tljh-in")
            time.sleep(0.3)
            events.append("tljh-out")

    t = threading.Thread(target=tljh_tool)
    t.start()
    time.sleep(0.1)
    config_file.update_document(p, lambda doc: events.append("edit"))
    t.join()
    assert events == ["tljh-in", "tljh-out", "edit"]
