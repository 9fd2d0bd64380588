"""The documentation builds without a warning, and its reference matches the code.

- The site builds with ``sphinx -W`` (any warning, broken cross-reference or missing generated page fails).
- Every config key and its current default (from tljh.schema), every tljh-config and tljh verb and flag
  (from their argparse parsers), every bootstrap and installer flag, every path of tljh.system.paths and every
  unit the installer writes appear in the built reference.
- The reference is generated, not copied: changing a default in the schema changes the page.
- Every `tljh-config` command the pages tell admins to run is accepted by the real tljh-config.

Nothing here is skipped: without Sphinx installed these tests fail (docs/requirements.txt).
"""

import argparse
import html
import os
from html.parser import HTMLParser
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import sphinx  # noqa: F401 - fail loudly, not skip, when the docs dependencies are missing
import myst_parser  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import config_reference  # noqa: E402
import doc_commands as doc_commands_module  # noqa: E402
import tljh_reference  # noqa: E402

from tljh.install import installer  # noqa: E402
from tljh.settings import schema  # noqa: E402
from tljh.system import paths  # noqa: E402


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Build the site once (HTML), failing on any warning. Returns {docname: visible text}."""
    out = tmp_path_factory.mktemp("docs-html")
    env = {k: v for k, v in os.environ.items() if k not in tljh_reference.MACHINE_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, f"docs build failed:\n{result.stdout}\n{result.stderr}"
    assert result.stderr.strip() == "", f"the docs build printed warnings:\n{result.stderr}"
    pages = {}
    for page in out.rglob("*.html"):
        docname = page.relative_to(out).with_suffix("").as_posix()
        pages[docname] = visible_text(page.read_text())
        pages[docname + ".rows"] = table_rows(page.read_text())
    return pages


class _Tables(HTMLParser):
    """Rows of every table of a page, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(page_html):
    parser = _Tables()
    parser.feed(page_html)
    return parser.rows


def visible_text(page_html):
    body = page_html.split('<article role="main"', 1)[-1]
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    text = re.sub(r"<[^>]+>", "", body)
    return " ".join(html.unescape(text).split())


def test_docs_build_has_every_section(built):
    for docname in [
        "index",
        "tutorial/install",
        "tutorial/first-login",
        "tutorial/add-users",
        "howto/authentication",
        "howto/users-admins",
        "howto/resource-limits",
        "howto/profiles",
        "howto/zero-to-jupyterhub",
        "howto/idle-culler",
        "howto/install-packages",
        "howto/share-data",
        "howto/base-url",
        "howto/https",
        "howto/upgrade",
        "howto/plugins",
        "howto/uninstall",
        "howto/backup-restore",
        "howto/bulk-users",
        "howto/status",
        "howto/move-to-kubernetes",
        "howto/test-machine",
        "reference/hooks",
        "troubleshooting/index",
        "explanation/environments",
        "explanation/architecture",
        "explanation/security",
        "explanation/performance",
        "reference/configuration",
        "reference/tljh-config",
        "reference/tljh",
        "reference/install-flags",
        "reference/files",
    ]:
        assert docname in built, f"{docname} was not built"


def schema_rows():
    """(key, default as the reference prints it) for every key of the schema."""
    rows = []

    def walk(node, prefix):
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            if sub.get("type") == "object" and "properties" in sub and not sub.get("x-tljh-authenticator-traits"):
                walk(sub, key + ".")
            elif sub.get("x-tljh-authenticator-traits"):
                for trait, tnode in sub.get("properties", {}).items():
                    rows.append((f"{key}.{trait}", tnode))
            else:
                rows.append((key, sub))

    walk(schema.get_schema(), "")
    return rows


def default_renderings(default):
    """Ways a reference may print a schema default: JSON, YAML-ish words, Python's str."""
    import json

    shown = {json.dumps(default), str(default)}
    if default is None:
        shown |= {"none", "null", "None"}
    if isinstance(default, bool):
        shown |= {"true" if default else "false"}
    if default == "":
        shown |= {'""', "''", "(empty)"}
    return shown


def markdown_row(markdown, key):
    """Cells of the Markdown table row whose first cell is `key`."""
    for line in markdown.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells and cells[0] == key:
            return cells
    return None


def test_every_config_key_and_default_is_in_the_reference(built):
    page = built["reference/configuration"]
    keys = schema.all_keys()
    assert len(keys) > 30
    for key in keys:
        if "<" in key:  # auth.<Class>.<trait>, users.extra_user_groups.<group>
            key = key.split(".<", 1)[0]
        assert key in page, f"config key {key} is missing from the configuration reference"
    rows = built["reference/configuration.rows"]
    header = next(r for r in rows if "Default" in r)
    for key, node in schema_rows():
        if "default" not in node:
            continue
        if isinstance(node.get("additionalProperties"), dict):
            continue  # a mapping (users.extra_user_groups.<group>): its key is checked above
        shown = [row for row in rows if row and row[0] == key]
        assert len(shown) == 1, f"{key}: expected one row in the configuration reference, found {len(shown)}"
        cell = shown[0][header.index("Default")]
        assert cell in default_renderings(node["default"]), (
            f"{key}: the reference shows the default {cell!r}, the schema says {node['default']!r}"
        )


def test_reference_is_generated_from_the_schema(monkeypatch):
    """Changing a default in the schema changes the page: the reference cannot be a stale copy."""
    before = tljh_reference.render("configuration")
    assert markdown_row(before, "services.cull.timeout")[2] in default_renderings(600)
    assert markdown_row(before, "http.port")[2] in default_renderings(80)
    original = schema._build_schema

    def changed():
        s = original()
        s["properties"]["services"]["properties"]["cull"]["properties"]["timeout"]["default"] = 4321
        s["properties"]["http"]["properties"]["port"]["default"] = 8765
        return s

    monkeypatch.setattr(schema, "_build_schema", changed)
    after = tljh_reference.render("configuration")
    assert markdown_row(after, "services.cull.timeout")[2] in default_renderings(4321)
    assert markdown_row(after, "http.port")[2] in default_renderings(8765)


def parser_flags(parser):
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        flags.extend(action.option_strings)
        if not action.option_strings and action.help != argparse.SUPPRESS:
            flags.append(action.metavar or action.dest)
    return flags


@pytest.mark.parametrize("prog", ["tljh-config", "tljh"])
def test_every_cli_verb_and_flag_is_in_the_reference(built, prog):
    page = built[f"reference/{prog}"]
    parser = tljh_reference.cli_parser(prog)
    verbs = tljh_reference.subcommands(parser)
    assert verbs, f"{prog} has no verbs"
    for flag in parser_flags(parser):
        assert flag in page, f"{prog} option {flag} missing from the reference"
    verbs = verbs + [
        (f"{name} {inner}", inner_help, inner_sub)
        for name, _help, sub in verbs
        for inner, inner_help, inner_sub in tljh_reference.subcommands(sub)
    ]
    for name, _help, sub in verbs:
        assert f"{prog} {name}" in page, f"verb {name} missing from the {prog} reference"
        usage = " ".join(sub.format_usage().split()).replace("usage: ", "")
        assert usage in page, f"usage of {prog} {name} missing or stale: {usage}"
        for flag in parser_flags(sub):
            assert flag in page, f"{prog} {name}: {flag} missing from the reference"


def test_tljh_config_verbs_of_the_contract():
    verbs = [name for name, _, _ in tljh_reference.subcommands(tljh_reference.cli_parser("tljh-config"))]
    for verb in ["show", "set", "unset", "add-item", "remove-item", "reload"]:
        assert verb in verbs


def test_every_bootstrap_and_installer_flag_is_in_the_reference(built):
    page = built["reference/install-flags"]
    bootstrap = tljh_reference.load_bootstrap()
    flags = re.findall(r"(?<![\w-])(--[a-z][a-z-]*|TLJH_[A-Z_]+)", bootstrap.USAGE)
    for flag in ["--admin", "--plugin", "--version", "--user-requirements-txt-url", "--show-progress-page",
                 "TLJH_BOOTSTRAP_PIP_SPEC", "TLJH_BOOTSTRAP_DEV"]:
        assert flag in flags, f"bootstrap's USAGE does not mention {flag}"
    for flag in flags:
        assert flag in page, f"bootstrap flag {flag} missing from the reference"
    for flag in parser_flags(tljh_reference.installer_parser()):
        assert flag in page, f"installer flag {flag} missing from the reference"
    for name, _func in installer.STEPS:
        assert name in page, f"installer step {name!r} missing from the reference"


def test_every_path_and_unit_is_in_the_reference(built):
    page = built["reference/files"]
    for name, value in vars(paths).items():
        if name.isupper() and isinstance(value, (str, int)):
            assert str(value) in page, f"tljh.system.paths.{name} = {value} missing from the files reference"
    for unit in (paths.HUB_UNIT, paths.PROXY_UNIT, paths.PROXY_ADMIN_UNIT, paths.BACKUP_UNIT, paths.BACKUP_TIMER):
        assert unit in page
        # the unit file's own lines are shown as they are installed (a timer has neither)
        template = (REPO / "tljh" / "systemd-units" / unit).read_text()
        key = "ListenStream=" if unit.endswith(".socket") else "ExecStart="
        for line in [line for line in template.splitlines() if line.startswith(key)]:
            line = line.replace("{install_prefix}", "/opt/tljh").replace("{proxy_admin_socket}", paths.PROXY_ADMIN_SOCKET)
            assert line.split("{")[0] in page
    assert paths.SUDOERS_FILE in page


# ------------------------------------------------------------------------------- commands in the pages


def doc_commands(prefix):
    """Every command line starting with `prefix` inside a fenced code block of the hand-written pages."""
    return doc_commands_module.commands(prefix=prefix)


def _concrete(command):
    return doc_commands_module.concrete(command)


def test_docs_have_tljh_config_commands():
    assert len(doc_commands("sudo tljh-config")) > 40


def pages_with_commands():
    return sorted({where.rsplit(":", 1)[0] for where, _ in doc_commands("sudo tljh-config")})


@pytest.mark.parametrize("page", pages_with_commands())
def test_documented_tljh_config_commands_are_accepted(tmp_path, monkeypatch, page):
    """Run a page's tljh-config commands, in order, with the real tljh-config on a scratch config file.

    Every set/unset/add-item/remove-item must succeed (exit 0); reload and show are checked by the parser
    (reload needs a running hub). Placeholders like <client-id> get sample values.
    """
    from tljh import config

    config_file = tmp_path / "config.yaml"
    config_file.write_text("")
    monkeypatch.setenv("TLJH_CONFIG_SKIP_ROOT_CHECK", "1")
    # What this system offers (Python versions, OS packages, PyPI) is not what the docs' reader's has: the
    # environments' system checks are tested in test_environments_*.
    monkeypatch.setattr("tljh.cli.tljh_config._system_check", lambda key: None)
    parser = tljh_reference.cli_parser("tljh-config")
    refused = []
    for where, command in doc_commands("sudo tljh-config"):
        if where.rsplit(":", 1)[0] != page:
            continue
        args = shlex.split(_concrete(command))[2:]
        assert "<" not in " ".join(args), f"{where}: placeholder without a sample value in {command!r}"
        parsed = parser.parse_args(args)
        if parsed.action in ("reload", "show"):
            continue
        code = config.main(["--config-path", str(config_file), *args])
        if code != 0:
            refused.append(f"{where}: `{command}` (exit {code})")
    assert not refused, "tljh-config refused commands the docs tell admins to run:\n" + "\n".join(refused)


def test_documented_bootstrap_flags_exist():
    bootstrap = tljh_reference.load_bootstrap()
    installer_flags = parser_flags(tljh_reference.installer_parser())
    documented = [(where, command) for prefix in ("curl -L", "sudo TLJH_BOOTSTRAP_PIP_SPEC", "git clone",
                                                  "sudo python3 bootstrap/bootstrap.py", "cd tljh")
                  for where, command in doc_commands(prefix) if "bootstrap" in command]
    assert len(documented) >= 5
    for where, command in documented:
        for flag in re.findall(r"\s(--[a-z-]+)", command):
            assert flag in bootstrap.USAGE or flag in installer_flags, f"{where}: unknown flag {flag}"


def test_documented_settings_reach_real_traits():
    """What the how-tos promise (limits, extra groups, default app, culler, base URL, admins) is set on
    traits that the hub's classes really have: a misspelled trait would be ignored by JupyterHub with only
    a log warning, and the page would describe a feature that does nothing."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from traitlets.config import Config

    from tljh.hub import configurer
    from tljh.hub.spawner import UserCreatingSpawner

    config = {
        "base_url": "/jhub/",
        "users": {"admin": ["carol"], "allowed": ["bob"], "banned": ["mallory"],
                  "extra_user_groups": {"physics": ["alice", "bob"]}},
        "limits": {"memory": "2G", "cpu": 1},
        "user_environment": {"default_app": "classic"},
        "services": {"cull": {"timeout": 3600, "max_age": 28800, "users": True}},
    }
    c = Config()
    configurer.apply_config(config, c)
    classes = {cls.__name__: cls for cls in UserCreatingSpawner.__mro__ if hasattr(cls, "class_traits")}
    classes.update({"JupyterHub": JupyterHub, "Authenticator": Authenticator})
    unknown = []
    for section, values in c.items():
        if section not in classes:
            continue
        traits = classes[section].class_traits(config=True)
        unknown += [f"c.{section}.{name}" for name in values if name not in traits]
    assert not unknown, f"config.yaml keys are applied to traits that do not exist: {unknown}"
    groups = c.UserCreatingSpawner.get("user_groups") or c.UserCreatingSpawner.get("extra_user_groups")
    assert groups == {"physics": ["alice", "bob"]}


def test_every_plugin_hook_is_in_the_reference(built):
    from tljh import hooks

    page = built["reference/hooks"]
    names = [name for name, func in vars(hooks).items() if callable(func) and hasattr(func, "tljh_spec")]
    assert len(names) >= 9
    for name in names:
        assert name in page, f"hook {name} missing from the plugin hooks reference"


def test_reference_pages_are_only_markers():
    """The committed reference pages hold a marker and a comment, never a pasted copy of generated text."""
    stubs = [p for p in (DOCS / "reference").glob("*.md") if p.name != "index.md"]
    assert len(stubs) >= 6
    for stub in stubs:
        lines = [line for line in stub.read_text().splitlines() if line.strip()]
        assert all(line.startswith("%") for line in lines), f"{stub.name} holds text besides its marker"
        assert tljh_reference.MARKER.search(stub.read_text()), f"{stub.name} has no '% tljh-generated:' marker"


# ------------------------------------------------------------------------------- configuration reference


def test_reference_lists_every_key_with_default():
    ref = config_reference.render_reference()
    for key in schema.all_keys():
        assert f"`{key}`" in ref, key
    assert "| `limits.memory` | memory size | `none` |" in ref
    assert "| `services.cull.timeout` | seconds | `600` |" in ref
    assert "| `base_url` | string | `/` |" in ref
    assert "a bare number such as `4096` means megabytes" in ref
    assert "traefik_api" in ref


def test_reference_matches_schema_descriptions():
    """Drift check: every description in the schema appears in the rendered reference."""
    ref = config_reference.render_reference()

    def walk(node):
        for sub in node.get("properties", {}).values():
            if "description" in sub:
                yield sub["description"]
            yield from walk(sub)

    for desc in walk(schema.get_schema()):
        assert desc.replace("|", "\\|") in ref
