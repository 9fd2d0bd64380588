"""Refusals about configuration (one line for the admin, and nothing changed), and warnings."""

import difflib
import sys


class ConfigError(Exception):
    """A refusal: the message is one line meant for the admin; nothing was changed."""


class UnknownKeyError(ConfigError):
    """A key the schema does not know (a typo, or a key left by another tool)."""


class ValueParseError(ConfigError):
    """A value that cannot be read as what its key holds."""


def did_you_mean(word: str, candidates) -> str:
    """' (did you mean X?)' or ''."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f" (did you mean {matches[0]}?)" if matches else ""


def warn(message):
    """Tell the admin about a problem that does not stop what they asked for: one line on stderr."""
    print(f"warning: {message}", file=sys.stderr)
