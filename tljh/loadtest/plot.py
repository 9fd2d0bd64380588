"""The timeline picture of a load test (PNG), drawn with matplotlib from the run's JSON report.

matplotlib (with numpy, pillow, fonttools: ~40 MB) is not part of the hub environment: only admins who run a
load test need it, once. ``render`` uses it when it is importable, else runs this module in a child process
with matplotlib layered on by ``uv run --with`` (the requirement is this package's ``loadtest`` extra; uv
caches it, so later runs start in about a second).

    python -m tljh.loadtest.plot REPORT.json OUT.png
"""

from __future__ import annotations

import json
import subprocess
import sys

GiB = 2**30
COLOURS = {"hub": "#d62728", "proxy": "#9467bd", "servers": "#1f77b4", "other": "#c7c7c7"}


def matplotlib_requirement():
    """matplotlib's requirement as declared in this package's ``loadtest`` extra (one home for the range)."""
    from importlib import metadata

    for requirement in metadata.requires("the-littlest-jupyterhub") or ():
        if requirement.startswith("matplotlib") and "extra" in requirement:
            return requirement.split(";", 1)[0].strip()
    raise RuntimeError("the-littlest-jupyterhub declares no 'loadtest' extra with matplotlib")


def render(report_path, png_path, timeout=600):
    """Draw ``png_path``; returns None, or one line saying why there is no picture."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        draw(report_path, png_path)
        return None
    from tljh.system import venvs

    cmd = [venvs.uv_binary(), "run", "--no-project", "--quiet", "--python", sys.executable,
           "--with", matplotlib_requirement(), "python", "-m", __name__, report_path, png_path]
    try:
        result = subprocess.run(cmd, env=venvs.uv_env(), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not run uv to get matplotlib: {e}"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"matplotlib could not be installed or run ({last})"
    return None


def series(samples, key, field="memory"):
    return [s["t"] for s in samples], [(s[key].get(field) or 0) for s in samples]


def cpu_rates(samples, key):
    t, v = [], []
    for a, b in zip(samples, samples[1:]):
        ca, cb = a[key].get("cpu"), b[key].get("cpu")
        if ca is None or cb is None or b["t"] <= a["t"]:
            t.append(b["t"])
            v.append(0.0)
            continue
        t.append(b["t"])
        v.append(max(0.0, (cb - ca) / (b["t"] - a["t"])))
    return t, v


def draw(report_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(report_path) as f:
        report = json.load(f)
    samples, users, p = report["samples"], report["users"], report["parameters"]
    machine = report["machine"]
    fig, (ax_servers, ax_cpu, ax_mem) = plt.subplots(3, 1, figsize=(11, 10), sharex=True,
                                                     gridspec_kw={"height_ratios": [1.2, 1, 1]})
    fig.suptitle(
        f"tljh loadtest: {p['users']} users over {p['ramp']:g} s, {p['session']:g} s sessions"
        + (f", profiles {', '.join(p['profiles'])}" if p["profiles"] else "")
        + f"\n{machine['cpus']:g} CPUs, {machine['memory_total'] / GiB:.1f} GiB; {machine['uptime_before']}",
        fontsize=11,
    )
    windows = report["results"].get("windows", {})
    for ax in (ax_servers, ax_cpu, ax_mem):
        if "load" in windows:
            ax.axvspan(*windows["load"], color="#f3f3f3", zorder=0)
        ax.grid(alpha=0.3)

    t, running = series(samples, "servers", "running")
    ax_servers.plot(t, running, color=COLOURS["servers"], label="servers running")
    ax_servers.set_ylabel("servers running")
    latency = ax_servers.twinx()
    ready = [(u["ready_at"], u["phases"]["spawn"]["seconds"]) for u in users if u["ready_at"] is not None]
    if ready:
        latency.scatter(*zip(*ready), s=10, color="#ff7f0e", label="spawn latency (at ready)")
    started = [(u["ready_at"], u["start"]) for u in users if u["ready_at"] is not None and u.get("start") is not None]
    if started:
        latency.scatter(*zip(*started), s=8, marker="x", color="#2ca02c", label="own start (queue excluded)")
    failed = [u["phases"]["spawn"]["started"] for u in users if u["phases"]["spawn"]["ok"] is False]
    for x in failed:
        ax_servers.axvline(x, color="red", alpha=0.4)
    latency.set_ylabel("seconds")
    handles = ax_servers.get_legend_handles_labels()
    more = latency.get_legend_handles_labels()
    ax_servers.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)

    def stacked(ax, values_of, unit_label, scale):
        t = None
        layers = []
        for key in ("hub", "proxy", "servers"):
            t, v = values_of(key)
            layers.append([x / scale for x in v])
        t_all, total = values_of("machine")
        other = [max(0.0, m / scale - sum(layer[i] for layer in layers)) for i, m in enumerate(total)]
        ax.stackplot(t, *layers, other, labels=["hub", "proxy", "servers", "other"],
                     colors=[COLOURS[k] for k in ("hub", "proxy", "servers", "other")])
        ax.set_ylabel(unit_label)
        ax.legend(loc="upper left", fontsize=8)

    stacked(ax_cpu, lambda k: cpu_rates(samples, k), "CPU (cores)", 1)
    ax_cpu.axhline(machine["cpus"], color="black", linestyle="--", linewidth=0.8)
    stacked(ax_mem, lambda k: series(samples, k), "memory (GiB)", GiB)
    ax_mem.set_xlabel("seconds since the start of the run (shaded: the load)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    draw(sys.argv[1], sys.argv[2])
