"""Installing, upgrading and removing the hub: the installer steps, the hub database, uninstall."""
