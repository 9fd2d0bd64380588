"""Shell commands written in the documentation's code blocks, for tests that run them.

    from doc_commands import commands
    commands("tutorial/add-users.md", prefix="sudo tljh-config")
    -> [("tutorial/add-users.md:31", "sudo tljh-config add-item users.allowed bob"), ...]

Used by tests/test_docs.py (every tljh-config command must be accepted) and meant for integration tests that
follow a tutorial in a fresh machine. ``concrete()`` fills the pages' placeholders with sample values.
"""

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]

SAMPLES = {
    "<client-id>": "abc123",
    "<client-secret>": "s3cret",
    "<github-user-name>": "octocat",
    "<user-name>": "alice",
    "<name>": "alice",
    "<authenticator>": "dummy",
    "<org-name>": "my-org",
    "<hub-domain>": "hub.example.org",
    "<provider>": "login.example.org",
    "<ClassName>": "DummyAuthenticator",
    "<setting>": "allow_all",
    "<value>": "true",
    "<admin-name>": "alice",
    "<plugin-spec>": "tljh-course-tools",
}


def pages():
    """Hand-written pages (the reference is generated and holds no commands to run)."""
    return sorted(
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if "_build" not in p.parts and p.parent.name != "reference"
    )


def commands(page=None, prefix=""):
    """(page:line, command) for every line starting with ``prefix`` in a ```bash code block."""
    found = []
    for name in [page] if page else pages():
        fence = None
        for number, line in enumerate((DOCS / name).read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                fence = stripped[3:].strip() or "text" if fence is None else None
                continue
            if fence == "bash" and stripped.startswith(prefix) and stripped and not stripped.startswith("#"):
                found.append((f"{name}:{number}", stripped.split(" #", 1)[0].rstrip()))
    return found


def concrete(command, samples=None):
    """The command with the pages' <placeholders> replaced by sample values."""
    for placeholder, value in {**SAMPLES, **(samples or {})}.items():
        command = command.replace(placeholder, value)
    return command
