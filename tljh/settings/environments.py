"""Environment names, for the checks that need them (profiles' user_environment).

The environments engineer's interface (notes: environments-design.md): a pure function of a config dict.
"""

from __future__ import annotations


def environment_names(config: dict) -> list[str]:
    """``["default", *sorted(names under environments)]``; ``default`` is /opt/tljh/user and always exists."""
    declared = config.get("environments") if isinstance(config, dict) else None
    others = sorted(n for n in (declared or {}) if n != "default") if isinstance(declared, dict) else []
    return ["default", *others]
