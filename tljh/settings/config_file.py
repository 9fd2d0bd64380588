"""Reading and writing config.yaml safely.

- Round trip with ruamel.yaml: the admin's comments, key order and quoting survive every edit.
- Writes are atomic (tljh.system.files.write_atomic): a crash leaves either the old file or the new one,
  never half of one.
- Every read-modify-write happens under an exclusive lock on ``config.yaml.lock`` next to it, taken with
  filelock as TLJH does: concurrent `tljh-config` calls, and TLJH tools that hold TLJH's lock, never lose
  an update.
- A malformed file is reported with its path, line and problem, and is never overwritten.
"""

from __future__ import annotations

import contextlib
import io
import os

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.tokens import CommentToken

from tljh.system.files import write_atomic


class ConfigFileError(Exception):
    """config.yaml cannot be read. str() is one line: '<path>: line N: <problem>'."""

    def __init__(self, path, problem, line=None):
        self.path = str(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}: line {line}" if line else self.path
        super().__init__(f"{where}: {problem}")


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    # The layout TLJH writes, so files move between the two unchanged.
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def parse_document(text: str, path="config.yaml") -> CommentedMap:
    """Parse config.yaml text into a round-trip mapping. Empty text -> empty mapping."""
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise ConfigFileError(path, problem, line) from None
    except YAMLError as e:
        raise ConfigFileError(path, " ".join(str(e).split())) from None
    if doc is None:
        doc = CommentedMap()
        comments = [line.strip()[1:] for line in text.splitlines() if line.strip().startswith("#")]
        if comments:  # a file of only comments: keep them
            doc.yaml_set_start_comment("\n".join(c[1:] if c.startswith(" ") else c for c in comments))
        return doc
    if not isinstance(doc, dict):
        raise ConfigFileError(
            path, f"the top level must be a mapping of keys (key: value), not a {type(doc).__name__}", 1
        )
    return doc


def read_text(path) -> str:
    """The file's text; '' if it does not exist yet."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as e:
        raise ConfigFileError(path, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ConfigFileError(path, e.strerror or str(e)) from None


def load_document(path) -> CommentedMap:
    """config.yaml as a round-trip mapping (comments kept); empty mapping if the file does not exist."""
    return parse_document(read_text(path), path)


def to_plain(value):
    """Round-trip YAML objects -> plain dict / list / str / int / float / bool / None."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def load_raw(path) -> dict:
    """config.yaml as a plain dict ({} if missing). Raises ConfigFileError naming file, line and problem."""
    return to_plain(load_document(path))


def _move_trailing_comment(container, old, new, slot):
    """Full-line comments after the old last entry stay after the (new) last entry."""
    entry = container.ca.items.get(old)
    token = entry[slot] if entry and len(entry) > slot else None
    if token is None or "\n" not in token.value.rstrip("\n"):
        return
    first, rest = token.value.split("\n", 1)
    token.value = first + "\n"
    moved = CommentToken("\n" + rest, token.start_mark, None)
    container.ca.items[new] = [None, None, None, None]
    container.ca.items[new][slot] = moved


def append_item(seq, item) -> None:
    """seq.append(item), keeping comments that followed the old last item after the new one."""
    seq.append(item)
    if isinstance(seq, CommentedSeq) and len(seq) > 1:
        _move_trailing_comment(seq, len(seq) - 2, len(seq) - 1, 0)


def set_key(mapping, key, value) -> None:
    """mapping[key] = value; a new last key goes before the comments that ended the mapping."""
    is_new = key not in mapping
    last = next(reversed(mapping), None) if mapping else None
    mapping[key] = value
    if is_new and last is not None and isinstance(mapping, CommentedMap):
        _move_trailing_comment(mapping, last, key, 2)


def dump_document(doc) -> str:
    if not doc and not (isinstance(doc, CommentedMap) and doc.ca.comment):
        return ""
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    return buf.getvalue()


def lock_path(path) -> str:
    """TLJH's lock file name: ``<path>.lock``."""
    return os.path.abspath(path) + ".lock"


@contextlib.contextmanager
def locked(path):
    """Hold the exclusive lock that serializes every read-modify-write of `path` (root-only lock file)."""
    # Imported here: filelock (it brings asyncio) is a fifth of what reading the config costs to import, and
    # most readers (the hub, `tljh env build`, `tljh status`) never write.
    import filelock

    lpath = lock_path(path)
    os.makedirs(os.path.dirname(lpath), mode=0o700, exist_ok=True)
    with filelock.FileLock(lpath, mode=0o600):
        yield


def update_document(path, mutate) -> tuple[str, str]:
    """Lock, read, `mutate(doc)`, write atomically. Returns (old_text, new_text).

    `mutate` changes the round-trip mapping in place, or raises to refuse: then nothing is written.
    A malformed file raises ConfigFileError before `mutate` runs, so it is never overwritten.
    Nothing is written when the text does not change.
    """
    with locked(path):
        old = read_text(path)
        doc = parse_document(old, path)
        mutate(doc)
        new = dump_document(doc)
        if new != old:
            write_atomic(path, new)
        return old, new

