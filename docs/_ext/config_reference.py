"""The configuration reference (docs/reference/configuration.md), rendered as Markdown from the one schema.

Used by tljh_reference.py at every docs build; the schema itself is tljh/settings/schema.py.
"""

from __future__ import annotations

import json

from tljh.settings import authenticators
from tljh.settings import schema as schema_module


def _fmt_default(node: dict) -> str:
    if "default" not in node:
        return ""
    d = node["default"]
    if d is None:
        return "`none`"
    if isinstance(d, bool):
        return "`true`" if d else "`false`"
    if d == "":
        return '`""`'
    return f"`{json.dumps(d)}`" if not isinstance(d, str) else f"`{d}`"


def _fmt_type(node: dict) -> str:
    if node.get("x-tljh-memory"):
        return "memory size"
    if node.get("x-tljh-duration"):
        return "seconds"
    if "enum" in node:
        return " \\| ".join(f"`{e}`" for e in node["enum"])
    t = node.get("type", "")
    if isinstance(t, list):
        return " or ".join("none" if x == "null" else x for x in t)
    if t == "array":
        return f"list of {node.get('items', {}).get('type', 'string')}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return "mapping of lists"
    return t


def render_reference() -> str:
    """A Markdown (MyST) reference of every config.yaml key, generated from the schema."""
    schema = schema_module.get_schema()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `tljh/settings/schema.py`; every key is set with `sudo tljh-config set KEY VALUE`",
        "and applied with `sudo tljh-config reload` (hub) or `sudo tljh-config reload proxy` (http, https).",
        "",
        "Values are read the way a person means them: memory sizes `4G`, `512M` (binary units, "
        "`1G` = `1024M`; a bare number such as `4096` means megabytes); durations in seconds or "
        "`90s`, `10m`, `1h`, `1d`; booleans `true`/`false`/`yes`/`no`; lists `a,b` or `[a, b]`; "
        "`none` clears a value that may be empty.",
        "",
    ]

    def section(node, prefix, depth):
        rows = []
        subsections = []
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            if sub.get("type") == "object" and "properties" in sub and not sub.get("x-tljh-authenticator-traits"):
                subsections.append((key, sub))
            elif sub.get("x-tljh-authenticator-traits"):
                for t, tnode in sub.get("properties", {}).items():
                    rows.append((f"{key}.{t}", tnode))
            elif sub.get("type") == "object" and "properties" in sub.get("additionalProperties", {}):
                # A mapping of named sections (environments.<name>): documented as one section per key.
                subsections.append((f"{key}.{sub.get('x-tljh-placeholder', '<name>')}", {**sub["additionalProperties"],
                                    "description": sub.get("description", "")}))
            elif sub.get("type") == "object" and isinstance(sub.get("additionalProperties"), dict):
                rows.append(
                    (
                        f"{key}.<group>",
                        {**sub, "type": "array", "items": sub["additionalProperties"]["items"], "default": []},
                    )
                )
            else:
                rows.append((key, sub))
        if rows:
            lines.append("| Key | Type | Default | Description |")
            lines.append("|-----|------|---------|-------------|")
            for key, sub in rows:
                desc = sub.get("description", "").replace("|", "\\|")
                lines.append(f"| `{key}` | {_fmt_type(sub)} | {_fmt_default(sub)} | {desc} |")
            lines.append("")
        for key, sub in subsections:
            lines.append(f"{'#' * min(depth + 1, 6)} `{key}`")
            lines.append("")
            if sub.get("description"):
                lines.append(sub["description"])
                lines.append("")
            if sub.get("x-tljh-ignored"):
                lines.append(f"Ignored: {sub['x-tljh-ignored']}.")
                lines.append("")
            if sub.get("x-tljh-reload") == "proxy":
                lines.append("Applied with `sudo tljh-config reload proxy`.")
                lines.append("")
            if sub.get("x-tljh-reload") == "installer":
                lines.append(
                    "Applied by the next installer run: `sudo /opt/tljh/hub/bin/python -m tljh.installer` "
                    "(or the bootstrap command again)."
                )
                lines.append("")
            section(sub, key + ".", depth + 1)
            if key == "auth":
                lines.append(
                    "`auth.<Class>.<trait>` sets any configurable trait of an authenticator class "
                    "(`c.<Class>.<trait>` in JupyterHub); the trait must exist and the value is checked "
                    "by the trait itself. Bundled authenticators:"
                )
                lines.append("")
                lines.append("| `auth.type` short name | Class (`auth.<Class>.*`) | Documentation |")
                lines.append("|---|---|---|")
                for short, cls, url in authenticators.BUNDLED_AUTHENTICATORS:
                    lines.append(f"| `{short}` | `{cls}` | {url} |")
                lines.append("")

    section(schema, "", 1)
    lines.extend(_profile_keys(schema["properties"]["profiles"]))
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _profile_keys(node: dict) -> list[str]:
    """The keys inside one entry of `profiles` (KubeSpawner's profile_list), as rows under their paths."""
    rows = []

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            if name == "kubespawner_override":
                continue  # the same as spawner_override, said in its description
            key = f"{path}.{name}"
            if name == "spawner_override":
                rows.append((key, {"type": "mapping", "description": sub["description"]}))
                continue
            rows.append((key, sub))
            if "properties" in sub:
                walk(sub, key)
            elif isinstance(sub.get("additionalProperties"), dict):
                inner = "<option>" if name == "profile_options" else "<choice>"
                walk(sub["additionalProperties"], f"{key}.{inner}")

    walk(node["items"], "profiles[]")
    out = ["### Keys of a profile", "",
           "Each entry of `profiles` (KubeSpawner's `profile_list` format; see the how-to on profiles):", "",
           "| Key | Type | Description |", "|-----|------|-------------|"]
    kinds = {"profile_options": "mapping of options", "choices": "mapping of choices", "unlisted_choice": "mapping"}
    for key, sub in rows:
        kind = kinds.get(key.rsplit(".", 1)[-1], _fmt_type(sub))
        out.append(f"| `{key}` | {kind} | {_cell(sub.get('description', ''))} |")
    out += ["", "### Override keys", "",
            "What `spawner_override` (or `kubespawner_override`) may set, in a profile, a choice or an unlisted "
            "choice; other keys are refused with this list:", "",
            "| Key | Type | Description |", "|-----|------|-------------|"]
    for key, sub in node["items"]["properties"]["spawner_override"]["properties"].items():
        kind = "mapping of strings" if key == "environment" else _fmt_type(sub)
        out.append(f"| `{key}` | {kind} | {_cell(sub['description'])} |")
    return out + [""]
