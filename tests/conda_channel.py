"""A local conda channel for tests: real .tar.bz2 conda packages, indexed by py-rattler's indexer.

Public conda channels are not reachable from the test machines, so the tests serve these instead, under the
channel names plugins use (``conda-forge``, ``bioconda``) below one channel alias.
"""

import asyncio
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

SUBDIRS = ("noarch", "linux-64", "linux-aarch64")


def conda_package(channel_dir, subdir, name, version, files, *, depends=(), build="h0_0"):
    """Write a minimal conda package (info/index.json, info/paths.json, info/files + ``files``) into
    ``channel_dir/subdir``; ``files`` maps relative paths to (text, mode). Returns its path."""
    now = int(time.time())
    index = {"name": name, "version": version, "build": build, "build_number": 0, "depends": list(depends),
             "subdir": subdir, "license": "MIT", "timestamp": now * 1000}
    if subdir == "noarch":
        index["noarch"] = "generic"
    else:
        index["platform"], index["arch"] = subdir.split("-")[0], {"64": "x86_64"}.get(subdir.split("-")[1], "aarch64")
    members = {path: (text.encode(), mode) for path, (text, mode) in files.items()}
    paths_json = {"paths_version": 1, "paths": [
        {"_path": path, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
        for path, (data, _) in members.items()]}
    members["info/index.json"] = (json.dumps(index).encode(), 0o644)
    members["info/paths.json"] = (json.dumps(paths_json).encode(), 0o644)
    members["info/files"] = ("".join(f"{p}\n" for p in files).encode(), 0o644)
    target = Path(channel_dir) / subdir / f"{name}-{version}-{build}.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:bz2") as tar:
        for path, (data, mode) in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    return target


def index(channel_dir):
    """Write repodata.json for every subdir (py-rattler's indexer; plain JSON, no shards: what any server serves)."""
    from rattler.index import index_fs

    for subdir in SUBDIRS:
        (Path(channel_dir) / subdir).mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(Path(channel_dir), write_zst=False, write_shards=False))


CSVTK_SCRIPT = "#!/bin/sh\n# stands in for bioconda's csvtk in tests\necho \"csvtk v0.30.0 ($*)\"\n"


def build_test_channels(root, subdir="linux-64"):
    """``root/bioconda`` with ``csvtk`` (a program, depends on ``libcsv``) and ``root/conda-forge`` with
    ``libcsv`` (no programs) and ``tqdm`` (never fetched: tqdm comes from PyPI). Returns ``root``."""
    root = Path(root)
    conda_package(root / "bioconda", subdir, "csvtk", "0.30.0", {"bin/csvtk": (CSVTK_SCRIPT, 0o755)},
                  depends=["libcsv >=1"])
    conda_package(root / "conda-forge", "noarch", "libcsv", "1.0", {"share/libcsv/README": ("libcsv\n", 0o644)})
    conda_package(root / "conda-forge", "noarch", "tqdm", "4.0", {"share/not-tqdm": ("not from PyPI\n", 0o644)})
    for channel in ("bioconda", "conda-forge"):
        index(root / channel)
    return root
