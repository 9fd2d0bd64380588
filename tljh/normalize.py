"""TLJH's public module name for ``generate_system_username`` (plugins use it to find a user's account)."""

import hashlib


def generate_system_username(username):
    """The Unix account TLJH gives the full name ``username`` (e.g. ``"jupyter-" + hub name``).

    TLJH's rule, kept exactly so that accounts made by TLJH are found again: a name shorter than 26
    characters is used as it is; a longer one is cut to 26 characters and suffixed with ``-`` and the first
    5 hex digits of its sha256, which keeps it under useradd's 32.
    """
    if len(username) < 26:
        return username
    return f"{username[:26]}-{hashlib.sha256(username.encode('utf-8')).hexdigest()[:5]}"
