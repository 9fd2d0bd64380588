"""The installer stops bootstrap's progress page before the proxy takes port 80, and says so as TLJH does."""

import subprocess
import sys

from tljh.install import installer


def test_stopping_the_progress_page_prints_tljhs_line(monkeypatch, capsys):
    # Like bootstrap's progress page: a child of the process that waits for the installer, so once stopped it
    # stays a zombie (still reachable by signal 0) until that process reaps it.
    page = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setenv("TLJH_PROGRESS_PAGE_PID", str(page.pid))
        installer._stop_progress_page()
        assert capsys.readouterr().out == "Progress page server stopped successfully.\n"
        assert page.poll() is not None
    finally:
        if page.poll() is None:
            page.kill()
        page.wait()


def test_no_progress_page_no_line(monkeypatch, capsys):
    monkeypatch.delenv("TLJH_PROGRESS_PAGE_PID", raising=False)
    installer._stop_progress_page()
    assert capsys.readouterr().out == ""
