"""A real browser for integration tests: Debian's Chromium driven by Playwright (the Python package).

Playwright's own browser download cannot work offline, so it drives /usr/bin/chromium (apt package
``chromium``, installed on the host by test.sh). Headless, as root: --no-sandbox; the network flags keep
Chromium from calling home (those calls fail here, many at a time).
"""

import contextlib
import os
import tempfile

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = os.environ.get("TLJH_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "artifacts"))


@contextlib.contextmanager
def chromium(viewport=(1280, 860)):
    """A fresh browser context (own profile directory, no cookies); yields a Playwright Page."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tljh-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def screenshot(page, name):
    """Save a full-page PNG under the artifacts directory; returns its path."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path, full_page=True)
    return path


def run_in_new_notebook(page, code, kernel=None, timeout=120_000):
    """On JupyterLab's launcher: open a new notebook (of the kernel whose card reads ``kernel``, else the first
    one), type ``code`` into its cell, run it; return the cell's output text."""
    cards = page.locator(".jp-LauncherCard[data-category='Notebook']")
    (cards.filter(has_text=kernel) if kernel else cards.first).click()
    editor = page.locator(".jp-Notebook .jp-CodeCell .cm-content").first
    # A notebook that has just appeared may still be loading: keys typed before its editor has focus are lost
    # (seen once: the cell ran empty and no output ever came). Type until the cell holds the code, as a person
    # would, then run it once.
    for _ in range(10):
        editor.click()
        if code in editor.inner_text():
            break
        page.keyboard.press("Control+A")
        page.keyboard.type(code)
        page.wait_for_timeout(500)
    assert code in editor.inner_text(), editor.inner_text()
    page.keyboard.press("Shift+Enter")
    return page.wait_for_selector(".jp-OutputArea-output", timeout=timeout).inner_text()
