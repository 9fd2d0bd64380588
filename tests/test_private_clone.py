"""The suite passes from a clone that other users cannot read (root's home, mode 0700).

Tests that drop privileges (setpriv) hand files to an unprivileged process; a path inside the checkout works
from a world-readable clone and fails from root's home. This runs those test modules again from a copy of the
checkout inside a 0700 directory.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()


def privilege_dropping_modules():
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / "tests").glob("test_*.py")
        if p != HERE and "setpriv" in p.read_text()
    )


def checkout_files():
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when the suite runs as root")
def test_privilege_dropping_tests_pass_from_a_root_only_clone(tmp_path):
    modules = privilege_dropping_modules()
    assert "tests/test_bootstrap.py" in modules  # the search still finds the test that needed this
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    clone = private / "clone"
    for rel in checkout_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
        cwd=clone, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
