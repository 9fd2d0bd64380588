"""What the hub process loads: the configurer (config.yaml -> traitlets), the spawner, the start preflight."""
