"""The effective settings: config.yaml read once into the values every part of the hub uses.

``load_settings()`` is the one way to read config.yaml for use: every default filled in, every value in its
one normalised form (``base_url`` starts and ends with "/"), and the values derived from them (the hub's
URLs, the public URL). The installer, the hub's configuration, `tljh status`, reload and the proxy read
these; none of them normalises or derives a setting itself. A derived value that is missing here is added
here, as a property.
"""

from __future__ import annotations

import functools

from tljh.system import paths

from . import config_file, schema


class Settings:
    """Validated, normalised, defaults-filled settings of one config.yaml, with derived values."""

    def __init__(self, raw: dict):
        self.raw = raw
        # Every key, defaults filled in; values normalised. A fresh plain dict: callers may keep it.
        self.config = schema.effective_config(raw)

    @functools.cached_property
    def problems(self) -> list:
        """Every problem of the file (schema.Problem); errors and warnings."""
        return schema.validate_config(self.raw)

    @property
    def errors(self) -> list:
        return schema.errors_only(self.problems)

    @property
    def base_url(self) -> str:
        """The URL prefix of everything the hub serves: "/" or "/<path>/"."""
        return self.config["base_url"]

    @property
    def hub_url(self) -> str:
        """Where the hub process listens (only the proxy and local tools talk to it)."""
        return f"http://{paths.HUB_HOST}:{paths.HUB_PORT}"

    @property
    def hub_api_url(self) -> str:
        """The hub's REST API, straight to the hub process."""
        return f"{self.hub_url}{self.base_url}hub/api"

    @property
    def edge_hub_api_url(self) -> str:
        """The hub's REST API through the edge proxy's HTTP port on this machine."""
        return f"http://127.0.0.1:{self.config['http']['port']}{self.base_url}hub/api"

    def public_url(self, host: str) -> str:
        """The URL people open: the first Let's Encrypt domain (with HTTPS) or ``host``, port when not default."""
        if self.config["https"]["enabled"]:
            domains = self.config["https"]["letsencrypt"]["domains"]
            port = self.config["https"]["port"]
            return f"https://{domains[0] if domains else host}{'' if port == 443 else f':{port}'}{self.base_url}"
        port = self.config["http"]["port"]
        return f"http://{host}{'' if port == 80 else f':{port}'}{self.base_url}"


def effective_settings(raw: dict | None) -> Settings:
    """Settings of a raw configuration (as parsed from config.yaml)."""
    return Settings(config_file.to_plain(raw or {}))


def load_settings(path=paths.CONFIG_FILE) -> Settings:
    """Settings of config.yaml. Raises ConfigFileError (file, line, problem) when the YAML is malformed."""
    return effective_settings(config_file.load_raw(path))
