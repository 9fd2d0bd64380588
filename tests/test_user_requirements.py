"""--user-requirements-txt-url (issue 19): https or a local file, #sha256= checked, no option lines."""

import hashlib

import pytest

from tljh.install import installer, user_requirements
from tljh.install.user_requirements import RequirementsError, parse_source

GOOD = b"numpy>=1.26\npandas==2.2.* ; python_version >= '3.10'  # a comment\n\n# just a comment\nrequests --hash=sha256:" + b"0" * 64 + b"\n"


@pytest.mark.parametrize(
    "value, message",
    [
        ("http://example.org/requirements.txt", "http:// is not allowed"),
        ("ftp://example.org/requirements.txt", "ftp:// is not allowed"),
        ("s3://bucket/requirements.txt", "expected an https:// URL or a local file"),
        ("https://example.org/r.txt#md5=abc", "expected #sha256=<64 hex digits>"),
        ("https://example.org/r.txt#sha256=abc", "expected #sha256=<64 hex digits>"),
        ("/nonexistent/requirements.txt", "no such file: /nonexistent/requirements.txt"),
    ],
)
def test_refused_before_anything_is_installed(value, message, capsys):
    with pytest.raises(RequirementsError, match=message):
        parse_source(value)
    with pytest.raises(SystemExit) as exited:
        installer.parse_args(["--user-requirements-txt-url", value])
    assert exited.value.code == 2
    assert message.split("<")[0] in capsys.readouterr().err


def test_https_and_local_files(tmp_path):
    digest = "ab" * 32
    assert parse_source(f"https://example.org/r.txt#sha256={digest.upper()}") == user_requirements.Source(
        "https://example.org/r.txt", digest
    )
    local = tmp_path / "r.txt"
    local.write_bytes(GOOD)
    assert parse_source(str(local)).location == str(local)
    assert parse_source(f"file://{local}").location == str(local)


def test_good_file_is_fetched(tmp_path):
    source = parse_source(f"https://example.org/r.txt#sha256={hashlib.sha256(GOOD).hexdigest()}")
    target = user_requirements.fetch(source, str(tmp_path), lambda url: GOOD)
    assert open(target, "rb").read() == GOOD


@pytest.mark.parametrize(
    "content, message",
    [
        (b"numpy\n--index-url https://evil.example/simple\n", "line 2: option lines (--index-url) are not allowed"),
        (b"-e git+https://example.org/x.git#egg=x\n", "line 1: option lines (-e) are not allowed"),
        (b"-r other.txt\n", "option lines (-r)"),
        (b"  --extra-index-url=https://x\n", "option lines (--extra-index-url=https://x)"),
        (b"--find-links /tmp\n", "option lines (--find-links)"),
        (b"--trusted-host evil.example\n", "option lines (--trusted-host)"),
        (b"x @ http://evil.example/x.tar.gz\n", "only https:// package URLs"),
        (b"git+http://evil.example/x.git\n", "only https:// package URLs"),
        (b"x @ file:///root/x\n", "only https:// package URLs"),
        (b"\xff\xfe", "not a UTF-8 text file"),
    ],
)
def test_option_lines_refused(tmp_path, content, message):
    source = parse_source("https://example.org/r.txt")
    with pytest.raises(RequirementsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        user_requirements.fetch(source, str(tmp_path), lambda url: content)
    assert not (tmp_path / "requirements.txt").exists()


def test_sha256_mismatch_refused(tmp_path):
    source = parse_source(f"https://example.org/r.txt#sha256={'0' * 64}")
    with pytest.raises(RequirementsError, match="does not match its #sha256="):
        user_requirements.fetch(source, str(tmp_path), lambda url: GOOD)
