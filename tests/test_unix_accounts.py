"""The Unix-name table: one account per hub name, TLJH's names kept, refusals instead of shared accounts."""

import os
import random
import stat
import subprocess
import sys
import unicodedata

import pytest

from tljh.system import unix_accounts
from tljh.system.unix_accounts import AccountTable, NameRefused


@pytest.fixture
def table(tmp_path):
    existing = set()
    t = AccountTable(str(tmp_path / "unix-accounts.sqlite"), account_exists=existing.__contains__)
    t.existing = existing  # accounts that "exist" on this pretend server
    yield t
    t.close()


def test_table_is_root_only(table):
    assert stat.S_IMODE(os.stat(table.path).st_mode) == 0o600


@pytest.mark.parametrize(
    "hub_name, unix_name",
    [
        ("alice", "jupyter-alice"),
        ("bob@uni.example", "jupyter-bob@uni.example"),  # TLJH keeps e-mail names as they are
        ("a.b-c_d", "jupyter-a.b-c_d"),
        ("seventeen-chars-x", "jupyter-seventeen-chars-x"),  # 25 characters: the longest unchanged name
    ],
)
def test_plain_names_are_tljhs(hub_name, unix_name):
    assert unix_accounts.proposed_name(hub_name) == unix_name == unix_accounts.tljh_name(hub_name)


def test_long_names_are_shortened_like_tljh():
    name = "averyveryverylongname.with-parts"
    got = unix_accounts.proposed_name(name)
    assert got == unix_accounts.tljh_name(name)
    assert len(got) == 32 and got.startswith("jupyter-averyveryverylongn-")


def test_names_with_other_characters_get_a_hash():
    got = unix_accounts.proposed_name("josé")
    assert got == "jupyter-jos--4745b" == unix_accounts.previous_name("josé")  # the accounts made before the table
    assert unix_accounts.proposed_name("Alice") != "jupyter-alice"


def test_issue_19_collision_is_refused_not_shared(table):
    assert table.claim("josé") == "jupyter-jos--4745b"
    with pytest.raises(NameRefused) as refused:
        table.claim("jos--4745b")
    assert "too similar" in str(refused.value)
    assert "'josé'" in refused.value.detail  # the log names the owner; the page does not
    assert "josé" not in str(refused.value)
    assert table.claim("josé") == "jupyter-jos--4745b"


def test_first_claim_wins_whichever_order(table):
    assert table.claim("jos--4745b") == "jupyter-jos--4745b"
    with pytest.raises(NameRefused):
        table.claim("josé")


@pytest.mark.parametrize("suffix", [".service", ".SLICE", ".socket", ".scope", ".target", ".timer", ".mount"])
def test_unit_suffixes_refused(table, suffix):
    with pytest.raises(NameRefused) as refused:
        table.claim("foo" + suffix)
    assert suffix.lower() in str(refused.value)
    assert table.claim("foo") == "jupyter-foo"
    assert table.claim("foo.services") == "jupyter-foo.services"


def test_existing_account_not_in_table_is_refused(table):
    table.existing.add("jupyter-proxy")  # e.g. a system account, or an account made by hand
    with pytest.raises(NameRefused) as refused:
        table.claim("proxy")
    assert "tljh unix-names assign" in refused.value.detail


def test_table_persists(table, tmp_path):
    table.claim("carol")
    reopened = AccountTable(table.path, account_exists=lambda name: True)  # now every account exists
    assert reopened.claim("carol") == "jupyter-carol"
    reopened.close()


def test_racing_claims_of_one_account_give_it_once(tmp_path):
    """Two processes check "is it free?" at the same time: the database's UNIQUE constraint decides."""
    path = str(tmp_path / "t.sqlite")
    first = AccountTable(path, account_exists=lambda n: False)
    second = AccountTable(path, account_exists=lambda n: False)
    second.owner = lambda unix_name, real=second.owner: second.__dict__.pop("owner") and None  # checked too early
    assert first.claim("josé") == "jupyter-jos--4745b"
    with pytest.raises(NameRefused) as refused:
        second.claim("jos--4745b")
    assert "'josé'" in refused.value.detail
    first.close()
    second.close()


def test_opening_the_table_keeps_another_connections_lock(tmp_path):
    """Closing any descriptor of the file drops this process's POSIX locks on it: opening the table while
    another connection of the process is mid-transaction must not let a second process write under it
    (found by `tljh loadtest`: the hub and the CLI got "disk I/O error" removing people at once)."""
    path = str(tmp_path / "t.sqlite")
    writer = AccountTable(path, account_exists=lambda n: False)
    writer._db.execute("BEGIN IMMEDIATE")  # RESERVED: no other writer until it ends
    AccountTable(path, account_exists=lambda n: False).close()
    other_process = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=0, "
         "isolation_level=None); db.execute('BEGIN IMMEDIATE')", path], capture_output=True, text=True)
    writer._db.execute("ROLLBACK")
    writer.close()
    assert "database is locked" in other_process.stderr, other_process.stderr or "the other process got the lock"


def test_adopt_existing_keeps_tljh_and_previous_mappings(table):
    accounts = {"jupyter-alice", "jupyter-bob@uni.example", "jupyter-jos--4745b", "jupyter-josé",
                "jupyter-averyveryverylongn-" + unix_accounts.tljh_name("averyveryverylongname-1")[-5:], "jupyter-dave"}
    result = table.adopt_existing(["alice", "bob@uni.example", "josé", "averyveryverylongname-1"], accounts)
    assert dict(result.adopted) == {
        "alice": "jupyter-alice",
        "bob@uni.example": "jupyter-bob@uni.example",
        "josé": "jupyter-josé",  # TLJH's name (no replacement) comes first: a TLJH server made this account
        "averyveryverylongname-1": unix_accounts.tljh_name("averyveryverylongname-1"),
        "dave": "jupyter-dave",  # not in the hub database (deleted user), but only "dave" can have made it
    }
    assert table.get("josé") == "jupyter-josé"
    # jupyter-jos--4745b ends in a hash: it could be any name's; it stays unassigned and is refused
    table.existing.update(accounts)
    with pytest.raises(NameRefused):
        table.claim("jos--4745b")


def test_adopt_existing_leaves_ambiguous_accounts_to_the_admin(table):
    result = table.adopt_existing(["josé", "jos--4745b"], {"jupyter-jos--4745b"})
    assert result.adopted == []
    assert result.ambiguous == [("jupyter-jos--4745b", ["jos--4745b", "josé"])]
    table.existing.add("jupyter-jos--4745b")
    for name in ("josé", "jos--4745b"):
        with pytest.raises(NameRefused):
            table.claim(name)
    table.assign("josé", "jupyter-jos--4745b")
    assert table.claim("josé") == "jupyter-jos--4745b"
    with pytest.raises(NameRefused):
        table.assign("jos--4745b", "jupyter-jos--4745b")


def test_owned_accounts_are_the_ones_the_hub_made_or_adopted(table):
    table.adopt_existing(["alice"], {"jupyter-alice"})
    table.claim("bob")
    table.claim("carol")
    table.mark_created("carol")
    assert table.owned_accounts() == ["jupyter-alice", "jupyter-carol"]  # bob's was never created


def test_locks_and_groups_are_recorded(table):
    table.claim("bob")
    assert not table.is_locked("bob")
    table.set_locked("bob", True)
    assert table.is_locked("bob")
    table.record_group("class-a", created=True)
    table.record_group("class-a")
    table.record_group("students")
    assert table.managed_groups() == ["class-a", "students"]
    assert table.created_groups() == ["class-a"]


def test_admins_taken_out_of_config_are_demoted_once(table):
    table.set_config_admins(["alice", "bob"])
    assert not table.take_demotion("alice")
    table.set_config_admins(["bob"])
    table.set_config_admins(["bob"])  # a restart in between does not forget it
    assert table.take_demotion("alice")
    assert not table.take_demotion("alice")
    table.set_config_admins(["carol"])
    table.set_config_admins(["carol", "bob"])  # listed again before logging in: not demoted
    assert not table.take_demotion("bob")


def test_adopt_existing_is_idempotent(table):
    table.adopt_existing(["alice"], {"jupyter-alice"})
    assert table.adopt_existing(["alice"], {"jupyter-alice"}).adopted == []
    assert [e.origin for e in table.entries()] == ["adopted"]


# ------------------------------------------------------------------ fuzz

_ASCII = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCT = ".-_@+ /:,\\'\"$`;|&()[]{}<>*?!~#%^=\t\n"


def _generated_names(rng, count):
    def char(kind):
        if kind == "safe":
            return rng.choice(_ASCII + ".-_@")
        if kind == "mixed":
            return rng.choice(_ASCII + _ASCII.upper() + _PUNCT)
        return chr(rng.choice([
            rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x2000), rng.randrange(0x2000, 0x3000),
            rng.randrange(0x4E00, 0x9FFF), rng.randrange(0x1F300, 0x1FAFF), rng.randrange(1, 0x20),
            rng.randrange(0x300, 0x370), 0x200B, 0x202E, 0xFEFF, 0x130, 0x131, 0x212A,  # İ ı K (case-folding traps)
        ]))

    for _ in range(count):
        length = rng.choice([rng.randint(1, 17), rng.randint(18, 40), rng.randint(1, 200)])
        kind = rng.choice(["safe", "safe", "mixed", "unicode"])
        yield "".join(char(kind) for _ in range(length))


def _near_collisions(rng, names):
    """Names built to land on another name's account."""
    for name in rng.sample(names, 2000):
        try:
            unix = unix_accounts.proposed_name(name)
        except NameRefused:
            continue
        yield unix[len("jupyter-"):]  # the hashed account's name as a plain hub name (josé / jos--4745b)
        yield name.upper()
        yield name.swapcase()
        yield unicodedata.normalize("NFD", name)
        yield unicodedata.normalize("NFKC", name)
        yield name.replace("-", "_")
        yield name + rng.choice([".service", ".Slice", ".socket", ".", "@", "-"])
        yield name[:26] + "x"  # same first 26 characters
    # brute force: names sharing 26 characters whose 5-hex hashes collide (about 18 pairs in 6000)
    first_by_account = {}
    for i in range(6000):
        name = f"averyveryverylongname-{i}"
        account = unix_accounts.proposed_name(name)
        if account in first_by_account:
            yield first_by_account[account]
            yield name
        first_by_account.setdefault(account, name)


def test_fuzz_every_name_gets_a_valid_unique_account_or_a_refusal(tmp_path):
    rng = random.Random(19)
    names = list(_generated_names(rng, 9000))
    adversarial = list(_near_collisions(rng, names))
    everything = names + adversarial
    assert len(set(everything)) >= 10_000

    existing = {"jupyter-root", "jupyter-a", "jupyter-0"}  # accounts not made by the hub (the generator makes "a" and "0")
    t = AccountTable(str(tmp_path / "fuzz.sqlite"), account_exists=existing.__contains__)
    t._db.execute("BEGIN")  # one transaction: durability is not what this test measures (it takes 7 s without)
    given, collisions, suffixes = {}, 0, 0
    for name in everything:
        try:
            account = t.claim(name)
        except NameRefused as e:
            assert str(e) and e.detail
            if name.lower().endswith(unix_accounts.UNIT_SUFFIXES):
                suffixes += 1
            elif unix_accounts.proposed_name(name) in existing:
                assert "does not belong to a hub user" in e.detail
            else:  # the only other reason: the account is another hub name's
                assert "belongs to hub user" in e.detail
                collisions += 1
            continue
        assert unix_accounts.is_valid(account), (name, account)
        assert given.setdefault(name, account) == account
    accounts = list(given.values())
    assert len(accounts) == len(set(accounts)), "two hub names share an account"
    assert not existing & set(accounts)
    # the generators did make collisions (about 18 brute-forced hash collisions alone), refused rather than shared
    assert collisions >= 18
    assert suffixes >= 500  # about a quarter of the near-collision names end in a unit suffix
    assert len(given) > 10_000
    # the table answers the same after a restart
    t._db.execute("COMMIT")
    t.close()
    again = AccountTable(t.path, account_exists=lambda n: True)
    for name in rng.sample(sorted(given), 500):
        assert again.claim(name) == given[name]
    again.close()


def test_recording_what_is_already_recorded_leaves_the_file_as_it_is(tmp_path):
    """The hub records config.yaml's admins at every start and the installer its groups at every run: when
    nothing changed the file must not (backups, and a failed restore that must leave the server as it was)."""
    path = tmp_path / "t.sqlite"
    table = AccountTable(str(path), account_exists=lambda name: False)
    table.set_config_admins(["admin", "teacher"])
    table.record_group("jupyterhub-users", created=True)
    before = path.read_bytes()
    table.set_config_admins(["teacher", "admin"])
    table.record_group("jupyterhub-users", created=True)
    table.record_group("jupyterhub-users")
    table.close()
    table = AccountTable(str(path), account_exists=lambda name: False)
    table.close()
    assert path.read_bytes() == before
    table = AccountTable(str(path), account_exists=lambda name: False)
    table.set_config_admins(["admin"])  # teacher taken out: a change, written
    assert table.take_demotion("teacher") and not table.take_demotion("admin")
    table.close()
