"""Shared by every unit test."""

import pytest


@pytest.fixture(autouse=True)
def no_firewall_changes(monkeypatch):
    """Unit tests never run nft: this host's firewall is not theirs. Code that would (the spawner's polls, the
    installer's and status's probes) finds nft missing; tests of the rules themselves replace it again."""
    from tljh.system import port_rules

    def nft(*args, input=None):
        raise port_rules.Unsupported("nft is not installed (unit tests never run it)")

    original = port_rules.nft
    monkeypatch.setattr(port_rules, "nft", nft)
    return original
