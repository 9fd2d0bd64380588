"""Would the hub start with this configuration? Checked before `tljh-config reload` restarts it.

Beyond the schema: the configuration is applied to a traitlets Config as the hub will, the authenticator
is instantiated with it (its cross-validators run) and the admin and allowed user names are checked
against it. Anything that would stop the hub is refused with one line.
"""

from tljh.settings import authenticators, schema
from tljh.system import unix_accounts
from tljh.settings.errors import ConfigError

from .configurer import apply_config


def check(config: dict):
    """Raise ConfigError (one line) if the hub would not start with the raw configuration `config`."""
    from traitlets import TraitError
    from traitlets.config import Config

    problems = schema.errors_only(schema.validate_config(config))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}")
    effective = schema.effective_config(config)
    c = Config()
    try:
        apply_config(effective, c)
        cls = authenticators.resolve_authenticator(effective["auth"]["type"])
    except Exception as e:  # noqa: BLE001 - anything here would also break the hub
        raise ConfigError(f"the hub would not start: {e.__class__.__name__}: {e}") from None
    # Instantiate the authenticator with this configuration, as the hub will: a trait error here (a
    # cross-validator refusing a combination of values) would stop the hub. Other exceptions come from
    # needing the running hub (its database...) and say nothing about the configuration.
    try:
        authenticator = cls(config=c)
    except TraitError as e:
        first = " ".join(str(e).split())[:300]
        raise ConfigError(f"the hub would not start: {cls.__name__}: {first}") from None
    except Exception:  # noqa: BLE001
        return
    # JupyterHub refuses to start when an admin or allowed user name is not valid for the authenticator.
    for key in ("admin", "allowed"):
        for name in effective["users"][key]:
            try:
                valid = authenticator.validate_username(authenticator.normalize_username(name))
            except Exception:  # noqa: BLE001
                valid = True  # needs the running hub; let it decide
            if not valid:
                raise ConfigError(
                    f"users.{key}: {name!r} is not a valid username for {cls.__name__}; the hub would not start"
                )
            try:
                unix_accounts.proposed_name(authenticator.normalize_username(name))
            except unix_accounts.NameRefused as e:
                raise ConfigError(f"users.{key}: {name!r} could never log in: {e.detail}") from None


def username_checker(config: dict):
    """A function ``name -> problem or None`` judging hub user names as this configuration's authenticator will.

    A name the authenticator changes (JupyterHub lowercases by default) is a problem too: the admin should write
    the name people will have."""
    from traitlets.config import Config

    effective = schema.effective_config(config)
    c = Config()
    apply_config(effective, c)
    cls = authenticators.resolve_authenticator(effective["auth"]["type"])
    try:
        authenticator = cls(config=c)
    except Exception:  # noqa: BLE001 - needs the running hub: judge names by the base class's rules
        from jupyterhub.auth import Authenticator

        authenticator = Authenticator(config=c)

    def problem(name):
        try:
            normalized = authenticator.normalize_username(name)
            valid = authenticator.validate_username(normalized)
        except Exception as e:  # noqa: BLE001
            return f"{name!r} is not a valid user name for {cls.__name__}: {e}"
        if normalized != name:
            return f"{name!r} would log in as {normalized!r}: write it that way"
        if not valid:
            return f"{name!r} is not a valid user name for {cls.__name__}"
        try:
            unix_accounts.proposed_name(normalized)
        except unix_accounts.NameRefused as e:
            return f"{name!r} could never log in: {e.detail}"
        return None

    return problem
