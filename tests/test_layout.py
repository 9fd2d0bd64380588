"""The package layout holds: imports go down the layers, never up, and there are no import cycles.

Layers, bottom to top (docs/explanation/architecture.md, "Code layout"):
plugin hooks < system < settings < environments < proxy | hub < install < cli < TLJH's public faces.
proxy and hub are side by side: neither imports the other. Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tljh"

# TLJH's public module names: thin re-exports that nothing inside tljh may import.
FACES = {"config", "configurer", "user", "installer", "systemd", "user_creating_spawner", "utils", "normalize", "conda", "apt"}
LAYERS = {
    "hooks": 0,
    "plugins": 0.5,
    "system": 1,
    "settings": 2,
    "environments": 2.5,
    "proxy": 3,
    "hub": 3,
    "install": 4,
    "cli": 5,
    "loadtest": 5,  # the `tljh loadtest` verb: a client of the installed hub, beside the CLI
    "jupyterhub_config": 6,
    **{face: 7 for face in FACES},
}
SIDE_BY_SIDE = {"proxy", "hub"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name, source, known, is_package=False):
    """The tljh modules `name` imports (at any depth of its code)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    # "from tljh.proxy import edge" names the module, not the package
    return {t for t in found if not (t in packages(known) and any(o.startswith(t + ".") for o in found))}


def packages(known):
    return {k.rpartition(".")[0] for k in known if "." in k}


def layer(name):
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {
        name: imported(name, path.read_text(), known, path.name == "__init__.py") for name, path in known.items()
    }


def test_every_module_has_a_layer(graph):
    unplaced = [name for name in graph if name != "tljh" and layer(name) is None]
    assert not unplaced, f"modules outside the layers of tests/test_layout.py: {unplaced}"


def test_imports_go_down(graph):
    upward = []
    for name, targets in graph.items():
        for target in targets:
            if target == "tljh" or layer(target) is None:
                continue
            if layer(target) > layer(name):
                upward.append(f"{name} imports {target}")
            elif {target.split(".")[1], name.split(".")[1]} == SIDE_BY_SIDE:
                upward.append(f"{name} imports {target}: proxy and hub are side by side")
    assert not upward, upward


def test_no_import_cycles(graph):
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_layering_check_sees_every_kind_of_import():
    """A function-level relative import and an absolute one are both found, and placed in their layer."""
    known = {"tljh.system": 1, "tljh.system.files": 1, "tljh.cli": 1, "tljh.cli.status": 1, "tljh.settings.schema": 1}
    source = "import os\ndef f():\n    from ..cli import status\n    import tljh.settings.schema\n"
    found = imported("tljh.system.files", source, known)
    assert found == {"tljh.cli.status", "tljh.settings.schema"}
    assert layer("tljh.cli.status") > layer("tljh.system.files")
