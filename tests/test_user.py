import pytest

from tljh.system.users import unix_username


@pytest.mark.parametrize(
    "hub_name, unix_name",
    [
        ("alice", "jupyter-alice"),
        ("a.b_c-d", "jupyter-a.b_c-d"),
        # TLJH's rule for long names: first 26 characters + '-' + 5 hex digits of sha256("jupyter-" + name).
        ("averyveryverylongusername", "jupyter-averyveryverylongu-86cf3"),
    ],
)
def test_unix_username(hub_name, unix_name):
    assert unix_username(hub_name) == unix_name


def test_long_names_stay_unique_and_short():
    a = unix_username("x" * 40 + "1")
    b = unix_username("x" * 40 + "2")
    assert a != b
    assert len(a) <= 32 and len(b) <= 32


def test_invalid_characters_are_replaced_and_hashed():
    a = unix_username("alice@example.org")
    b = unix_username("alice#example.org")
    assert a.startswith("jupyter-alice-example.org-")
    assert a != b
    assert len(a) <= 32
