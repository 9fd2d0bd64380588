"""Loading plugins: every installed package that registers the ``tljh`` entry point."""

import pluggy

from . import hooks


def get_plugin_manager():
    pm = pluggy.PluginManager("tljh")
    pm.add_hookspecs(hooks)
    pm.load_setuptools_entrypoints("tljh")
    return pm


def collect_list(results):
    """Flatten hook results (one list per plugin) into one list, keeping order, dropping repeats."""
    seen = []
    for result in results:
        for item in result or []:
            if item not in seen:
                seen.append(item)
    return seen
