"""TLJH's public module name for the installer: bootstrap runs ``python -m tljh.installer`` (tljh.install.installer)."""

import sys

from tljh.install.installer import main  # noqa: F401 - TLJH's public name

if __name__ == "__main__":
    sys.exit(main())
