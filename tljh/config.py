"""TLJH's public module name for `tljh-config` and its settings (the console script is ``tljh.config:main``).

A thin face: the command is tljh.cli.tljh_config, the paths are tljh.system.paths. TLJH plugins import the
path constants and the editing functions from here.
"""

import sys

from tljh.cli.tljh_config import (  # noqa: F401 - TLJH's public names
    ReloadError,
    add_config_value,
    main,
    reload_component,
    remove_config_value,
    set_config_value,
    show_config,
    unset_config_value,
)
from tljh.settings.errors import ConfigError as Refused  # noqa: F401 - this module's earlier name for it
from tljh.system.paths import (  # noqa: F401 - TLJH's public names
    CONFIG_DIR,
    CONFIG_FILE,
    HUB_ENV_PREFIX,
    INSTALL_PREFIX,
    STATE_DIR,
    USER_ENV_PREFIX,
)

if __name__ == "__main__":
    sys.exit(main())
