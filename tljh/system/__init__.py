"""System facts (paths, unit names, state files) and OS primitives: systemd, Unix users, files, uv venvs."""
