"""The command-line programs: tljh-config and tljh (status, uninstall)."""
