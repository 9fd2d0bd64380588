"""TLJH's public module name for Unix users and groups (tljh.system.users)."""

from tljh.system.users import (  # noqa: F401 - TLJH's public names
    ADMINS_GROUP,
    USERS_GROUP,
    ensure_group,
    ensure_user,
    ensure_user_group,
    group_exists,
    remove_user_group,
    unix_username,
    user_exists,
)
