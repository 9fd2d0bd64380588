"""config.yaml: the schema, value parsing, file I/O, effective settings, editing and reload."""
