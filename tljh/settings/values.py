"""Values the way a person means them: memory sizes, durations, booleans, lists, URL paths.

`parse_scalar(node, raw)` reads a command-line string as the type a schema leaf declares; the other functions
normalise and describe one kind of value. Pure functions of their arguments.
"""

from __future__ import annotations

import json
import math
import re

from .errors import ValueParseError

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?)?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_MEMORY_BYTES = 1024**5  # a limit above this is a typo, not a machine
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _num_str(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def normalize_memory(value) -> str | None:
    """'4g' -> '4G', '4096' / 4096 -> '4096M' (a bare number means megabytes), None -> None.

    Raises ValueParseError for anything else. Units are binary, like JupyterHub's: 1G = 1024M.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueParseError(f"expected a memory size like 4G or 512M, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), "M"
    else:
        m = _MEMORY_RE.match(str(value))
        if not m:
            raise ValueParseError(f"expected a memory size like 4G, 512M or 4096 (megabytes), got {value!r}")
        number, unit = float(m.group(1)), (m.group(2) or "M").upper()
    if not math.isfinite(number):
        raise ValueParseError(f"expected a memory size like 4G or 512M, got {value!r}")
    if number <= 0:
        raise ValueParseError("memory limit must be more than 0 (use none for no limit)")
    if number * _MEMORY_UNITS[unit] > MAX_MEMORY_BYTES:
        raise ValueParseError(f"memory limit must be at most 1024T, got {value!r}")
    return f"{_num_str(number)}{unit}"


def memory_to_bytes(value) -> int | None:
    """A memory size as config.yaml holds it -> bytes (None stays None)."""
    norm = normalize_memory(value)
    if norm is None:
        return None
    return int(float(norm[:-1]) * _MEMORY_UNITS[norm[-1]])


def describe_memory(value) -> str:
    norm = normalize_memory(value)
    if norm is None:
        return "no limit"
    nbytes = memory_to_bytes(norm)
    if nbytes >= 1024**3:
        return f"{nbytes / 1024**3:.1f} GiB"
    return f"{nbytes / 1024**2:.0f} MiB"


def parse_duration(value) -> int:
    if isinstance(value, bool):
        raise ValueParseError(f"expected seconds (or 10m, 1h), got {value!r}")
    if isinstance(value, int):
        return value
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueParseError(f"expected a whole number of seconds (or 90s, 10m, 1h, 1d), got {value!r}")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def describe_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
NONE_WORDS = {"none", "null", "~"}


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueParseError(f"expected true or false (or yes/no), got {raw!r}")


def unquote(raw: str) -> str | None:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return None


def parse_list(raw: str) -> list:
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            from ruamel.yaml import YAML

            try:
                value = YAML(typ="safe", pure=True).load(text)
            except Exception as e:  # noqa: BLE001 - any YAML problem is the admin's input
                raise ValueParseError(f"expected a list like [a, b], got {raw!r} ({e.__class__.__name__})") from None
        if not isinstance(value, list):
            raise ValueParseError(f"expected a list like [a, b], got {raw!r}")
        return value
    if text == "":
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_scalar(node: dict, raw: str):
    """Parse a command-line string into a value of the type `node` (a schema leaf) declares."""
    literal = unquote(raw)
    types = node.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    if raw.strip().lower() in NONE_WORDS and literal is None:
        if "null" in types:
            return None
        raise ValueParseError("cannot be none (use `tljh-config unset` to go back to the default)")
    if node.get("x-tljh-memory"):
        return normalize_memory(literal if literal is not None else raw)
    if node.get("x-tljh-duration"):
        return parse_duration(raw)
    if "array" in types:
        items = node.get("items", {"type": "string"})
        return [parse_scalar(items, str(v)) if not isinstance(v, (int, float, bool)) else v for v in parse_list(raw)]
    if literal is not None and "string" in types:
        return literal
    if "boolean" in types:
        return parse_bool(raw)
    if "integer" in types:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueParseError(f"expected a whole number, got {raw!r}") from None
    if "number" in types:
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueParseError(f"expected a number, got {raw!r}") from None
        return int(number) if number.is_integer() and "." not in raw else number
    return raw


def normalize_base_url(value: str) -> str:
    """A URL path prefix as JupyterHub and the proxy need it: '/jhub' or 'jhub/' -> '/jhub/'; '' or '/' -> '/'."""
    inner = value.strip("/")
    return f"/{inner}/" if inner else "/"
