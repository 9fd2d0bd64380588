"""TLJH's public module name for small helpers that plugins import (``run_subprocess``, ``get_plugin_manager``,
``parse_version``). Same names, signatures and behaviour as TLJH's; nothing inside tljh imports this face."""

import logging
import re
import subprocess

from tljh.plugins import get_plugin_manager  # noqa: F401 - TLJH's public name

_log = logging.getLogger("tljh")


def run_subprocess(cmd, *args, **kwargs):
    """Run ``cmd`` (a list), capturing its output into the ``tljh`` logger.

    Output goes to the debug log when the command succeeds and to the error log when it fails, and a failure
    raises ``subprocess.CalledProcessError`` (TLJH's contract: plugins call this from their install hooks and
    let the error stop the install).
    """
    command = " ".join(map(str, cmd))
    _log.debug("Running %s", command)
    result = subprocess.run(cmd, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    output = result.stdout.decode(errors="replace") if isinstance(result.stdout, bytes) else (result.stdout or "")
    if result.returncode != 0:
        _log.error("Ran %s with exit code %s", command, result.returncode)
        _log.error(output)
        raise subprocess.CalledProcessError(result.returncode, cmd, output=result.stdout)
    _log.debug("Ran %s with exit code 0", command)
    _log.debug(output)


def parse_version(version_string):
    """Every number in ``version_string``, as a tuple of ints (``"2.0.1.dev"`` -> ``(2, 0, 1)``); never fails."""
    return tuple(int(number) for number in re.findall(r"\d+", version_string))
