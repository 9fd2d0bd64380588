"""The Caddy proxies: admin API client, JSON builders, the JupyterHub proxy class, the edge, certificates."""
