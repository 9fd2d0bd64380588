"""tljh users import / list on a config file and a real hub database (the integration test logs the users in)."""

import dbm
import io
import json
import os
import sqlite3

import bcrypt
import pytest
from jupyterhub import orm

from tljh.cli import users as users_cli
from tljh.install import bulk_users
from tljh.settings import config_file
from tljh.system import paths


@pytest.fixture
def hub(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("users:\n  admin: [teacher]\n  banned: [mallory]\n")
    monkeypatch.setattr(paths, "CONFIG_FILE", str(config))
    monkeypatch.setattr(paths, "FIRSTUSE_PASSWORDS", str(state / "passwords.dbm"))
    monkeypatch.setattr(paths, "HUB_DATABASE", str(state / "jupyterhub.sqlite"))
    monkeypatch.setattr(users_cli, "unix_name", lambda name: None)
    return config


def run_import(text, tmp_path, **kw):
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    code = users_cli.import_csv(str(csv_file), reload=False, out=out, err=err, **kw)
    return code, out.getvalue(), err.getvalue()


GOOD = "name,admin,groups,password\nalice,no,stats101;lab,alice-pass-1\nbob,yes,lab,\n\n# a comment\ncarol,,,carol-pass-1\n"
BAD_LINES = [
    ("Dave,no,,", "would log in as 'dave'"),
    ("mallory,no,,", "users.banned"),
    ("erin,maybe,,", "admin must be yes or no"),
    ("frank,no,Not-A-Group,", "Unix group name"),
    ("gina,no,,short", "shorter than 7"),
    ("alice,no,,", "also on line 2"),
    ("hank,no,,,extra", "expected at most 4"),
    (",yes,,", "no name"),
]


def test_good_file_is_applied_with_a_line_each(hub, tmp_path):
    code, out, err = run_import(GOOD, tmp_path)
    assert code == 0, err
    raw = config_file.load_raw(str(hub))
    assert raw["users"]["allowed"] == ["alice", "bob", "carol"]
    assert raw["users"]["admin"] == ["teacher", "bob"]
    assert raw["users"]["extra_user_groups"] == {"stats101": ["alice"], "lab": ["alice", "bob"]}
    with dbm.open(paths.FIRSTUSE_PASSWORDS) as db:
        assert bcrypt.checkpw(b"alice-pass-1", db[b"alice"]) and bcrypt.checkpw(b"carol-pass-1", db[b"carol"])
        assert b"bob" not in db
    assert "line 2: alice: allowed, groups stats101 lab, password set" in out
    assert "line 3: bob: allowed, admin, groups lab" in out
    assert "line 6: carol: allowed, password set" in out
    assert "users.allowed was empty" in out and "imported 3 user(s)" in out


@pytest.mark.parametrize("bad, reason", BAD_LINES)
def test_one_bad_line_changes_nothing(hub, tmp_path, bad, reason):
    before = hub.read_text()
    code, out, err = run_import(GOOD + bad + "\n", tmp_path)
    assert code == 2 and out == ""
    assert reason in err and "nothing was changed" in err
    assert hub.read_text() == before and not dbm.whichdb(paths.FIRSTUSE_PASSWORDS)


def test_skip_bad_applies_the_rest_and_lists_the_bad(hub, tmp_path):
    text = GOOD + "".join(bad + "\n" for bad, _ in BAD_LINES)
    code, out, err = run_import(text, tmp_path, skip_bad=True)
    assert code == 1  # done, but not everything: scripts notice
    assert config_file.load_raw(str(hub))["users"]["allowed"] == ["alice", "bob", "carol"]
    for number, (bad, reason) in enumerate(BAD_LINES, start=7):
        assert f"line {number}: " in out and reason in out
    assert out.count("SKIPPED") == len(BAD_LINES)


def test_rerun_keeps_passwords_and_changes_nothing(hub, tmp_path):
    run_import(GOOD, tmp_path)
    with dbm.open(paths.FIRSTUSE_PASSWORDS) as db:
        stored = db[b"alice"]
    before = hub.read_text()
    code, out, _ = run_import(GOOD.replace("alice-pass-1", "another-pass"), tmp_path)
    assert code == 0 and hub.read_text() == before
    assert "alice: already allowed, password kept (already set)" in out
    with dbm.open(paths.FIRSTUSE_PASSWORDS) as db:
        assert db[b"alice"] == stored


def test_passwords_taken_back_when_config_cannot_be_written(hub, tmp_path, monkeypatch):
    def refuse(path, mutate):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config_file, "update_document", refuse)
    code, _, err = run_import(GOOD, tmp_path)
    assert code == 1 and "No space left" in err
    with dbm.open(paths.FIRSTUSE_PASSWORDS) as db:
        assert list(db.keys()) == []


def test_password_refused_for_authenticators_without_passwords(hub, tmp_path):
    hub.write_text("auth:\n  type: dummy\n")
    code, _, err = run_import("alice,no,,some-password\n", tmp_path)
    assert code == 2 and "only for FirstUseAuthenticator or NativeAuthenticator" in err


def test_native_passwords_go_to_the_hub_database(hub, tmp_path):
    hub.write_text("auth:\n  type: native\n")
    code, out, err = run_import("alice,no,,alice-pass-1\nbob,no,,\n", tmp_path)
    assert code == 0, err
    with sqlite3.connect(paths.HUB_DATABASE) as db:
        rows = dict(db.execute("SELECT username, password FROM users_info").fetchall())
        authorized = db.execute("SELECT is_authorized FROM users_info WHERE username='alice'").fetchone()[0]
    assert list(rows) == ["alice"] and bcrypt.checkpw(b"alice-pass-1", rows["alice"]) and authorized


def test_file_level_refusals(hub, tmp_path):
    code, _, err = run_import("name,admin,shoe_size\nalice,no,42\n", tmp_path)
    assert code == 2 and "unknown column 'shoe_size'" in err
    code, _, err = run_import("\n# nobody\n", tmp_path)
    assert code == 2 and "no users" in err
    (tmp_path / "latin1.csv").write_bytes("jos\xe9,no\n".encode("latin-1"))
    code = users_cli.import_csv(str(tmp_path / "latin1.csv"), reload=False, out=io.StringIO(), err=(e := io.StringIO()))
    assert code == 2 and "not UTF-8" in e.getvalue()


def test_list_shows_database_and_config(hub, tmp_path):
    hub.write_text("users:\n  admin: [teacher]\n  allowed: [alice, newbie]\n  extra_user_groups:\n    lab: [alice]\n")
    session = orm.new_session_factory(f"sqlite:///{paths.HUB_DATABASE}")()
    alice, teacher = orm.User(name="alice"), orm.User(name="teacher", admin=True)
    group = orm.Group(name="course")
    alice.groups.append(group)
    session.add_all([alice, teacher, group])
    session.commit()
    server = orm.Server()
    session.add(server)
    spawner = orm.Spawner(user=alice, name="", server=server, user_options={"profile": "small"})
    session.add(spawner)
    from datetime import datetime, timezone

    alice.last_activity = datetime.now(timezone.utc).replace(tzinfo=None)
    session.commit()
    session.close()
    out = io.StringIO()
    assert users_cli.list_users(out=out) == 0
    text = out.getvalue().splitlines()
    assert text[0].split() == ["NAME", "UNIX", "NAME", "ADMIN", "GROUPS", "LAST", "ACTIVITY", "SERVER"]
    by_name = {line.split()[0]: line.split() for line in text[1:-1]}
    assert by_name["alice"][2:] == ["no", "course,lab", "just", "now", "running", "(profile", "small)"]
    assert by_name["teacher"][2:] == ["yes", "-", "never", "stopped"]
    assert by_name["newbie"][2:] == ["no", "-", "never", "stopped"]
    assert text[-1] == "3 users, 1 with a running server"
    out = io.StringIO()
    users_cli.list_users(as_json=True, out=out)
    alice = {row["name"]: row for row in json.loads(out.getvalue())}["alice"]
    assert alice["servers"] == {"": "running"} and alice["profiles"] == {"": "small"}
