"""A TLJH conda user environment laid out in a directory, for unit tests (no conda needed).

What TLJH's environment holds that matters to a migration: conda records with their files and the history of
what was asked for, Python distributions installed by conda (their recorded build directory is gone) and by
pip, a program from a conda package, kernelspecs and Jupyter configuration written by an admin.
"""

import json
import os

PYTHON = "python3.12"


def _write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def add_dist(prefix, name, version, installer="pip", direct_url=None, extra_files=()):
    """A dist-info with METADATA, INSTALLER and a RECORD owning ``extra_files`` (relative to the prefix)."""
    sp = os.path.join(prefix, "lib", PYTHON, "site-packages")
    info = os.path.join(sp, f"{name.replace('-', '_')}-{version}.dist-info")
    _write(os.path.join(info, "METADATA"), f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    _write(os.path.join(info, "INSTALLER"), installer + "\n")
    if direct_url:
        _write(os.path.join(info, "direct_url.json"), json.dumps(direct_url))
    record = [f"{os.path.basename(info)}/METADATA,,", f"{os.path.basename(info)}/INSTALLER,,"]
    for rel in extra_files:
        _write(os.path.join(prefix, rel), "{}")
        record.append(os.path.relpath(os.path.join(prefix, rel), sp) + ",,")
    _write(os.path.join(info, "RECORD"), "\n".join(record) + "\n")
    return [os.path.relpath(os.path.join(info, n), prefix) for n in ("METADATA", "INSTALLER", "RECORD")]


def add_conda_record(prefix, name, version, files=()):
    for rel in files:
        if not os.path.exists(os.path.join(prefix, rel)):
            _write(os.path.join(prefix, rel), "#!/bin/sh\necho hello\n")
    _write(os.path.join(prefix, "conda-meta", f"{name}-{version}-0.json"),
           json.dumps({"name": name, "version": version, "files": list(files), "requested_spec": ""}))


def make_conda_env(prefix, served_at="/opt/tljh/user"):
    """TLJH's user environment in miniature. Returns what a migration should find."""
    add_conda_record(prefix, "python", "3.12.4", [f"bin/{PYTHON}", f"lib/{PYTHON}/os.py"])
    add_conda_record(prefix, "conda", "24.7.1", ["bin/conda"])
    add_conda_record(prefix, "libzlib", "1.3.1", ["lib/libz.so.1"])
    add_conda_record(prefix, "hello-tool", "2.12", ["bin/hello"])
    add_conda_record(prefix, "r-base", "4.4.1", ["bin/R", "lib/R/bin/exec/R"])
    # numpy came from conda: a dist-info whose recorded build directory does not exist on this server.
    files = add_dist(prefix, "numpy", "2.0.1", installer="conda",
                     direct_url={"url": "file:///home/conda/feedstock_root/build_artifacts/numpy_1", "dir_info": {}})
    add_conda_record(prefix, "numpy", "2.0.1", files)
    add_dist(prefix, "jupyterhub", "5.2.1", extra_files=["etc/jupyter/jupyter_server_config.d/jupyterhub.json"])
    add_dist(prefix, "pyfiglet", "1.0.2")
    add_dist(prefix, "tqdm", "4.66.4")
    _write(os.path.join(prefix, "conda-meta", "history"),
           "==> 2024-05-01 10:00:00 <==\n# cmd: constructor\n# update specs: ['python 3.12.*', 'conda 24.7.1', 'pip']\n"
           "==> 2024-05-02 10:00:00 <==\n# cmd: mamba install r-base hello-tool numpy libzlib\n"
           "# update specs: [\"r-base\", \"hello-tool\", \"numpy\", \"libzlib\"]\n"
           "==> 2024-05-03 10:00:00 <==\n# cmd: mamba remove libzlib\n# remove specs: [\"libzlib\"]\n")
    kernels = os.path.join(prefix, "share", "jupyter", "kernels")
    _write(os.path.join(kernels, "course", "kernel.json"), json.dumps(
        {"argv": [f"{served_at}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Course (Python)", "language": "python", "env": {"COURSE": "stats101"}}))
    _write(os.path.join(kernels, "course", "logo-64x64.png"), "png")
    _write(os.path.join(kernels, "ir", "kernel.json"), json.dumps(
        {"argv": [f"{served_at}/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
         "display_name": "R", "language": "R"}))
    _write(os.path.join(prefix, "etc", "jupyter", "jupyter_server_config.py"), "c.ServerApp.terminals_enabled = True\n")
    _write(os.path.join(prefix, "share", "jupyter", "lab", "settings", "overrides.json"), '{"theme": "dark"}')
