"""The installer's --admin and --admin-password-file (issue 19: passwords off the command line, names checked)."""

import io
import os

import pytest

from tljh.install import installer
from tljh.system import paths


def test_password_file_root_only(tmp_path, capsys):
    secret = tmp_path / "admins"
    secret.write_text("alice:s3cret-1\n\nbob:pw:with:colons\n")
    os.chmod(secret, 0o600)
    args = installer.parse_args(["--admin", "alice", "--admin", "bob", "--admin-password-file", str(secret)])
    assert args.admin_names == ["alice", "bob"]
    assert args.admin_passwords == {"alice": "s3cret-1", "bob": "pw:with:colons"}
    assert capsys.readouterr().err == ""  # no warning: nothing secret on the command line


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others_refused(tmp_path, capsys, mode):
    secret = tmp_path / "admins"
    secret.write_text("alice:s3cret\n")
    os.chmod(secret, mode)
    with pytest.raises(SystemExit) as exited:
        installer.parse_args(["--admin", "alice", "--admin-password-file", str(secret)])
    assert exited.value.code == 2
    assert "must be owned by root and readable only by root" in capsys.readouterr().err


def test_password_from_stdin_and_from_a_pipe():
    assert installer.admin_credentials(["alice"], ["-"], stdin=io.StringIO("alice:pw\n")) == (["alice"], {"alice": "pw"})
    r, w = os.pipe()
    os.write(w, b"alice:from-a-pipe\n")
    os.close(w)
    try:
        assert installer.admin_credentials(["alice"], [f"/dev/fd/{r}"])[1] == {"alice": "from-a-pipe"}
    finally:
        os.close(r)


@pytest.mark.parametrize(
    "content, message",
    [("carol:pw\n", "'carol' is not given with --admin"), ("alice\n", "line 1: expected NAME:PASSWORD"),
     ("alice:\n", "line 1: expected NAME:PASSWORD")],
)
def test_password_file_lines_checked(content, message):
    with pytest.raises(ValueError, match=message):
        installer.admin_credentials(["alice"], ["-"], stdin=io.StringIO(content))


def test_old_form_still_works_with_a_warning(capsys):
    args = installer.parse_args(["--admin", "alice:pw"])
    assert (args.admin_names, args.admin_passwords) == (["alice"], {"alice": "pw"})
    assert "shows the password to every user of this server (ps)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, message",
    [("a b", "'a b' is not a valid username"), ("x/y", "'x/y' is not a valid username"),
     ("lab.service", "ends in the systemd unit suffix .service")],
)
def test_admin_names_checked_as_the_hub_will_before_any_step(tmp_path, monkeypatch, capsys, name, message):
    """issue 19: `--admin "a b"` wrote a config the hub then crash-looped on."""
    monkeypatch.setattr(paths, "CONFIG_FILE", str(tmp_path / "config.yaml"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(installer, "STEPS", [("must not run", lambda ctx: pytest.fail("a step ran"))])
    assert installer.main(["--admin", name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "config.yaml").exists()
