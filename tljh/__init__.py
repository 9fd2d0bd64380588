"""The Littlest JupyterHub: a single-machine JupyterHub distribution."""
