"""Zero to JupyterHub chart values checked against tests/data/z2jh-value-rules.yaml (the chart's value paths,
types and defaults for what `tljh export z2jh` writes; see that file's header). Used by tests/test_z2jh.py and
integration-tests/test_operations.py."""

import copy
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML

CHART_RULES = Path(__file__).parent / "data" / "z2jh-value-rules.yaml"


def helm_merge(defaults, overrides):
    """Helm's values merge: maps merge recursively, anything else replaces, null removes the key."""
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_chart():
    """(validator, defaults) from the rules file."""
    rules = YAML(typ="safe").load(CHART_RULES.read_text())
    return jsonschema.Draft7Validator(rules["schema"]), rules["defaults"]


def chart_errors(chart, values):
    """Schema errors of ``values`` merged over the chart's defaults, plus Kubernetes' rule that a memory
    guarantee (request) may not exceed its limit (the chart's 1G default guarantee would break a smaller limit)."""
    from tljh.settings.values import memory_to_bytes

    validator, defaults = chart
    merged = helm_merge(defaults, values)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)]
    memory = merged.get("singleuser", {}).get("memory", {})
    if memory.get("limit") and memory.get("guarantee"):
        if memory_to_bytes(str(memory["guarantee"])) > memory_to_bytes(str(memory["limit"])):
            errors.append(f"singleuser.memory: guarantee {memory['guarantee']} above limit {memory['limit']}")
    return errors
