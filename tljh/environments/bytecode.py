"""A build's bytecode (the .pyc files of its packages), compiled after the build is switched in.

Users cannot write an environment, so Python cannot cache what it compiles there: a module without a .pyc
is compiled again at every import, in every server. Builds therefore need their bytecode, but compiling it
is most of a build's time (a 10-package teaching environment: 65 s of 82, against 9 s to resolve and
install), so the builder compiles it after the switch, while the build already serves:

- A .pyc is written under a temporary name and renamed into place (importlib's atomic write, which
  compileall uses): an importer running meanwhile finds no .pyc (and compiles in memory, as before the
  compile) or a whole one, never part of one. The source files are not touched.
- A killed compile leaves whole .pyc files, temporaries (removed by the next compile) and no marker: the
  next ``tljh env build`` sees the build is not compiled and compiles what is missing.
- Only files whose .pyc is missing or stale are compiled: a build copied from the previous one (a package
  added) compiles that package's files only.

This file is run by the build's own interpreter (bytecode is per Python version), as the builder user in a
sandbox that can write only the build: it imports the standard library only.
"""

from __future__ import annotations

import compileall
import glob
import os
import re
import sys

# In the build: the id of the build whose bytecode is complete. A copy of the build (the next build starts as
# a hard-linked copy) carries the file with the earlier build's id, so it does not count as compiled.
MARKER = "tljh-bytecode.txt"
# importlib's temporary name for a .pyc being written: "<name>.pyc.<number>".
_TEMPORARY = re.compile(r"\.pyc\.\d+$")


def command(prefix: str, build: str) -> list[str]:
    """How the builder runs this file for the build ``build`` served at ``prefix``: with the build's interpreter,
    isolated (-I: no environment variables, no user site) and without the site module (-S): the .pth files of
    the build's packages, which may run code, are not read. Compiling runs no code of the packages."""
    return [os.path.join(prefix, "bin", "python"), "-I", "-S", os.path.abspath(__file__), prefix, build]


def compiled(prefix: str, build: str) -> bool:
    """True once the bytecode of build ``build``, served at ``prefix``, is complete (one small file read)."""
    try:
        with open(os.path.join(prefix, MARKER)) as f:
            return f.read().strip() == build
    except OSError:
        return False


def compile_build(prefix: str, build: str, workers: int = 0) -> None:
    """Compile what is missing in ``prefix``'s site-packages, then mark the build compiled. Files that do not
    compile (Python 2 files some packages ship) never will: they stay without bytecode, as uv leaves them."""
    sites = glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages"))
    for site in sites:
        _remove_temporaries(site)
    for site in sites:
        try:
            compileall.compile_dir(site, quiet=2, workers=workers)
        except (OSError, NotImplementedError):  # no process pool here (no /dev/shm): one process does it
            compileall.compile_dir(site, quiet=2, workers=1)
    marker = os.path.join(prefix, MARKER)
    temporary = f"{marker}.{os.getpid()}"
    with open(temporary, "w") as f:
        f.write(build + "\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, marker)  # replaced, not rewritten: a copy of this build keeps the old marker


def _remove_temporaries(site: str) -> None:
    """What a killed compile was writing: never read by Python, but it would stay in every later copy."""
    for root, dirs, names in os.walk(site):
        if os.path.basename(root) == "__pycache__":
            for name in names:
                if _TEMPORARY.search(name):
                    os.unlink(os.path.join(root, name))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bytecode.py PREFIX BUILD", file=sys.stderr)
        return 2
    compile_build(argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
