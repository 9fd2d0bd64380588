"""Applying config.yaml: restart the hub or reload the edge proxy, never leaving a dead hub behind.

``reload_hub`` refuses what the hub would not start with (the ``preflight`` it is given: the hub's own
check, tljh.hub.preflight.check), restarts jupyterhub.service and waits until the hub answers; if it does not,
the last configuration the hub started with is put back and the hub restarted with it. ``reload_proxy`` gives
the configuration to the ``edge`` it is given (tljh.proxy.edge, or a stand-in in tests): it applies it to the
running edge proxy, which keeps its previous configuration when Caddy refuses the new one.
"""

from __future__ import annotations

import os
import time

from tljh.system import files, systemd
from tljh.system.paths import CONFIG_FILE, HUB_UNIT, LAST_GOOD_FILE

from .config_file import ConfigFileError, locked, parse_document, read_text, to_plain
from .effective import effective_settings, load_settings
from .errors import ConfigError, warn

DEFAULT_TIMEOUT = 60
# How a failed reload left the hub (tljh-config's exit codes).
RELOAD_FAILED = 1  # the last good configuration is back and serving
HUB_DOWN = 3  # and the hub could not be brought back


class ReloadError(Exception):
    """A reload failed. ``code``: RELOAD_FAILED or HUB_DOWN; ``details``: extra lines (journal excerpt)."""

    def __init__(self, message, code=RELOAD_FAILED, details=()):
        super().__init__(message)
        self.code = code
        self.details = list(details)


def record_last_good(config_path=CONFIG_FILE, last_good=None):
    """Remember config_path as the configuration the hub started fine with (root-only copy)."""
    files.write_atomic(last_good or LAST_GOOD_FILE, read_text(config_path), mode=0o600)


def relevant_journal_lines(lines, limit=8) -> list[str]:
    """The lines of a failed start that explain it: errors and the end of a traceback, else the last lines."""
    keys = ("Traceback", "Error", "error", "[E ", "[C ", "CRITICAL", "Exception", "failed", "Failed")
    picked = [line for line in lines if any(k in line for k in keys)]
    return (picked or lines)[-limit:]


def _hub_answers(url: str) -> bool:
    import requests  # imported when a reload needs it: it costs every tljh-config run ~0.1 s otherwise

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait_for_hub(url, timeout) -> str | None:
    """None when the hub answers within `timeout`; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _hub_answers(url):
            return None
        if systemd.state(HUB_UNIT) == "failed":
            return f"{HUB_UNIT} failed"
        time.sleep(0.5)
    return f"no answer from {url} within {timeout:g} s"


def _restart_and_wait(settings, timeout):
    since = time.time()
    p = systemd.restart(HUB_UNIT, check=False)
    if p.returncode != 0:
        why = " ".join((p.stderr or p.stdout or "").split()) or f"systemctl exited {p.returncode}"
        return since, f"systemctl restart {HUB_UNIT} failed: {why}"
    return since, _wait_for_hub(settings.hub_api_url, timeout)


def _proxy_note(settings, last_good):
    """A reminder when http/https changed since the last good configuration (the hub does not apply them)."""
    try:
        before = load_settings(last_good).config if os.path.exists(last_good) else None
    except ConfigFileError:
        return ""
    if before and any(before[k] != settings.config[k] for k in ("http", "https")):
        return "\nhttp/https settings changed: run `sudo tljh-config reload proxy` to apply them"
    return ""


def reload_hub(config_path=CONFIG_FILE, timeout=DEFAULT_TIMEOUT, *, preflight, last_good=None):
    """Check with ``preflight(raw_config)``, restart the hub, wait until it answers; on failure restore the
    last good config. Returns a message; raises ConfigError (refused, nothing changed) or ReloadError.

    Two reloads at once run one after the other (a lock next to the last good copy).
    """
    last_good = last_good or LAST_GOOD_FILE
    with locked(last_good):
        return _reload_hub(str(config_path), timeout, last_good, preflight)


def _reload_hub(config_path, timeout, last_good, preflight):
    try:
        text = read_text(config_path)
        raw = to_plain(parse_document(text, config_path))
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None
    preflight(raw)
    settings = effective_settings(raw)
    since, failure = _restart_and_wait(settings, timeout)
    if failure is None:
        note = _proxy_note(settings, last_good)
        files.write_atomic(last_good, text, mode=0o600)
        return f"hub reloaded: answering at {settings.hub_api_url}" + note

    journal = systemd.journal_since(HUB_UNIT, since, lines=300).splitlines()
    details = [f"  {line}" for line in relevant_journal_lines(journal)]
    if not os.path.exists(last_good):
        raise ReloadError(
            f"the hub did not start with this configuration ({failure}) and there is no last good "
            "configuration to go back to",
            HUB_DOWN,
            details,
        )
    rejected = config_path + ".rejected"
    good_text = read_text(last_good)
    with locked(config_path):
        if read_text(config_path) == text:
            files.write_atomic(rejected, text)
            files.write_atomic(config_path, good_text)
    good = load_settings(last_good)
    _, failure_again = _restart_and_wait(good, timeout)
    if failure_again is None:
        raise ReloadError(
            f"the hub did not start with this configuration ({failure}); restored the last good "
            f"configuration, the hub is back up; your rejected file is in {rejected}",
            RELOAD_FAILED,
            details,
        )
    raise ReloadError(
        f"the hub did not start ({failure}) and not with the last good configuration either ({failure_again})",
        HUB_DOWN,
        details,
    )


def reload_proxy(config_path=CONFIG_FILE, timeout=DEFAULT_TIMEOUT, *, edge, warn=warn):
    """Apply config.yaml to the running edge proxy through ``edge``; returns a message.

    ``edge`` provides ``https_preflight(config) -> [problem]``, ``reload_proxy(settings)`` (raises
    ``edge.ProxyReloadError``) and ``missing_certificates(config, since, timeout) -> [line]``.
    Problems that do not stop the reload (what could keep the CA from issuing) go to ``warn``.
    """
    try:
        settings = load_settings(config_path)
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None
    if settings.errors:
        raise ConfigError(str(settings.errors[0]))
    # What would keep the CA from issuing is said now, not found later in Caddy's log.
    for problem in edge.https_preflight(settings.config):
        warn(problem)
    started = time.time()
    try:
        edge.reload_proxy(settings)
    except edge.ProxyReloadError as e:
        raise ReloadError(f"proxy reload failed, the previous proxy configuration keeps serving: {e}") from None
    # The proxy is reloaded either way; a certificate the CA did not issue is said, with its reason.
    missing = edge.missing_certificates(settings.config, since=started, timeout=timeout)
    for line in missing:
        warn(line)
    return "proxy reloaded" + ("; HTTPS certificates still missing (see above), HTTP keeps serving" if missing else "")
