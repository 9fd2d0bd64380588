"""From what the simulated people and the sampler recorded to numbers: per-phase counts and latencies, time
until every server ran beside the CPU floor, memory and CPU over time, memory per running server."""

from __future__ import annotations

import math

from .client import PHASES
from .kernel_protocol import JSON, V1

MiB = 2**20


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def latency(values):
    values = [v for v in values if v is not None]
    return {"count": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values) if values else None}


def phase_summary(users):
    """{phase: {ok, attempted, failed, p50, p95, max, errors: {message: count}}} plus the spawn's two parts."""
    summary = {}
    for name in PHASES:
        phases = [u["phases"][name] for u in users]
        attempted = [p for p in phases if p["ok"] is not None]
        ok = [p for p in attempted if p["ok"]]
        errors = {}
        for p in attempted:
            if not p["ok"]:
                errors[p["error"]] = errors.get(p["error"], 0) + 1
        summary[name] = {"ok": len(ok), "attempted": len(attempted), "failed": len(attempted) - len(ok),
                         **latency([p["seconds"] for p in ok]), "errors": errors}
    summary["queued"] = latency([u["queued"] for u in users if u["phases"]["spawn"]["ok"]])
    summary["start"] = latency([u["start"] for u in users if u["phases"]["spawn"]["ok"]])
    summary["execute"] = latency([x for u in users for x in u["executions"]])
    return summary


def kernel_protocols(users):
    """{format: people} of the kernel websockets opened: kernel_protocol.V1 or JSON (the server refused v1)."""
    counts = {}
    for u in users:
        if u.get("kernel_protocol"):
            counts[u["kernel_protocol"]] = counts.get(u["kernel_protocol"], 0) + 1
    return counts


def rates(samples, key):
    """[(t, cores)] for a cumulative CPU series ``samples[i][key]["cpu"]``."""
    out = []
    for a, b in zip(samples, samples[1:]):
        ca, cb = a[key]["cpu"], b[key]["cpu"]
        if ca is None or cb is None or b["t"] <= a["t"]:
            continue
        out.append((b["t"], max(0.0, (cb - ca) / (b["t"] - a["t"]))))
    return out


def resources(samples, window=None):
    """Peak and mean of memory and CPU per component over ``samples`` (optionally only t within window)."""
    if window:
        samples = [s for s in samples if window[0] <= s["t"] <= window[1]]
    out = {}
    for key in ("hub", "proxy", "servers", "machine", "generator"):
        mem_key = "rss" if key == "generator" else "memory"
        memory = [s[key][mem_key] for s in samples if s[key].get(mem_key) is not None]
        cpu = [c for _, c in rates(samples, key)]
        out[key] = {"memory_peak": max(memory) if memory else None,
                    "cpu_peak": max(cpu) if cpu else None,
                    "cpu_mean": sum(cpu) / len(cpu) if cpu else None}
    rss = [s["hub"]["rss"] for s in samples if s["hub"].get("rss")]
    out["hub"]["rss_peak"] = max(rss) if rss else None
    files = [s["hub"]["files"] for s in samples if s["hub"].get("files")]
    out["hub"]["files_peak"] = max(files) if files else None
    return out


def per_server_memory(samples, peaks):
    """Memory per running server (with its kernel): the median of each server's highest working set, and
    all servers' total at the sample with the most running."""
    values = sorted(peaks.values())
    busy = [s for s in samples if s["servers"]["running"] and s["servers"]["memory"] is not None]
    if not values or not busy:
        return None
    peak = max(busy, key=lambda s: (s["servers"]["running"], s["servers"]["memory"]))
    return {"servers": len(values), "median": percentile(values, 50), "p95": percentile(values, 95),
            "max": values[-1], "t": peak["t"], "running": peak["servers"]["running"],
            "memory": peak["servers"]["memory"],
            "hub_proxy": _add(peak["hub"].get("memory"), peak["proxy"].get("memory")),
            "machine": peak["machine"].get("memory")}


def load_window(users):
    """(run time of the first login, of the last server served), or None if some server never ran."""
    starts = [u["phases"]["login"]["started"] for u in users if u["phases"]["login"]["started"] is not None]
    ready = [u["ready_at"] for u in users]
    if not starts or any(r is None for r in ready):
        return None
    return min(starts), max(ready)


def all_running(users):
    """Seconds from the first login to the moment the last server was served (None if some never ran)."""
    window = load_window(users)
    return None if window is None else window[1] - window[0]


def _cumulative_at(samples, key, t):
    """A cumulative CPU series ``samples[i][key]["cpu"]`` at run time ``t``, linear between samples."""
    points = [(s["t"], s[key]["cpu"]) for s in samples if s[key].get("cpu") is not None]
    if not points or not points[0][0] <= t <= points[-1][0]:
        return None
    for (ta, ca), (tb, cb) in zip(points, points[1:]):
        if ta <= t <= tb:
            return ca if tb == ta else ca + (cb - ca) * (t - ta) / (tb - ta)
    return points[-1][1]


def work_until_all_running(users, samples, cpus, cpu_per_start):
    """What the machine did from the first login until the last server was served: its CPU time in that
    window against what the window's cores could give (how busy it was), split into the starts (N x CPU per
    start of the single-user visits, the CPU floor's work) and everything else done meanwhile: kernels, code
    and stops of the people already in, the hub's other requests, the system's share. None without samples
    covering the window.

    The floor counts only the starts; this says whether the rest of the time was spent working (the other
    work) or waiting (an idle machine)."""
    window = load_window(users)
    if window is None:
        return None
    begin, end = window
    used = {}
    for key in ("machine", "hub", "proxy", "servers"):
        a, b = _cumulative_at(samples, key, begin), _cumulative_at(samples, key, end)
        used[key] = None if a is None or b is None else max(0.0, b - a)
    if used["machine"] is None or end <= begin:
        return None
    start_cpu = len(users) * cpu_per_start if cpu_per_start else None
    return {
        "seconds": end - begin,
        "machine_cpu": used["machine"],
        "busy": used["machine"] / (cpus * (end - begin)),
        "hub_cpu": used["hub"], "proxy_cpu": used["proxy"], "servers_cpu": used["servers"],
        "starts_cpu": start_cpu,
        "other_cpu": None if start_cpu is None else max(0.0, used["machine"] - start_cpu),
    }


def mib(value):
    return "-" if value is None else f"{value / MiB:.0f} MiB"


def sec(value):
    return "-" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.1f}")


def cores(value):
    return "-" if value is None else f"{value:.2f}"


def text(report):
    """The report as the lines `tljh loadtest` prints."""
    p, r = report["parameters"], report["results"]
    lines = [
        f"tljh loadtest: {p['users']} users, ramp {p['ramp']:g} s, sessions {p['session']:g} s"
        f"{'' if p.get('kernel', True) else ' (JupyterLab open, no kernel)'}, "
        f"profiles: {', '.join(p['profiles']) or 'none'} (via {p['via']}); hub {p['url']}",
        f"machine: {report['machine']['cpus']:g} CPUs, {report['machine']['memory_total'] / 2**30:.1f} GiB; "
        f"uptime at start: {report['machine']['uptime_before']}",
    ]
    solo = r.get("single")
    if solo:
        lines.append(
            f"single user, {solo['spawns']} spawns in this run: spawn median {sec(solo['spawn_median'])} s; "
            f"CPU per start {sec(solo['cpu_per_start'])} s (server {sec(solo['cpu_server'])}, "
            f"hub + proxy {sec(solo['cpu_hub_proxy'])}), per kernel start {sec(solo['cpu_per_kernel'])} s"
        )
    lines.append(f"{'phase':<10}{'ok':>9}  {'p50 s':>7}{'p95 s':>7}{'max s':>7}")
    for name in PHASES:
        s = r["phases"][name]
        lines.append(f"{name:<10}{s['ok']:>4}/{p['users']:<4}  {sec(s['p50']):>7}{sec(s['p95']):>7}{sec(s['max']):>7}")
        if name == "spawn":
            for part, label in (("queued", "  queued"), ("start", "  start")):
                q = r["phases"][part]
                if q["count"]:
                    lines.append(f"{label:<10}{'':>9}  {sec(q['p50']):>7}{sec(q['p95']):>7}{sec(q['max']):>7}")
        if name == "code":
            x = r["phases"]["execute"]
            lines.append(f"{'  each run':<10}{x['count']:>9}  {sec(x['p50']):>7}{sec(x['p95']):>7}{sec(x['max']):>7}")
    protocols = r.get("kernel_protocols") or {}
    if protocols:
        lines.append("kernel websocket: " + "; ".join(
            f"{V1} binary frames (as JupyterLab 4) for {count}" if protocol == V1 else
            f"JSON text frames for {count} (the server did not accept {V1})" if protocol == JSON else
            f"{protocol} for {count}"
            for protocol, count in sorted(protocols.items())))
    for name in PHASES:
        for message, count in r["phases"][name]["errors"].items():
            lines.append(f"  {name} failed for {count}: {message}")
    floor = r.get("cpu_floor")
    lines.append(
        f"all servers running: {sec(r['all_running'])} s after the first login"
        + (f"; CPU floor for {p['users']} starts on {report['machine']['cpus']:g} CPUs: {sec(floor)} s "
           f"(ratio {r['all_running'] / floor:.2f})" if floor and r["all_running"] else "")
    )
    work = r.get("work_until_all_running")
    if work:
        lines.append(
            f"  meanwhile the machine used {work['machine_cpu']:.0f} CPU-s, {100 * work['busy']:.0f} % of its "
            f"{report['machine']['cpus']:g} CPUs"
            + (f": the {p['users']} starts {work['starts_cpu']:.0f} (the floor's), everything else "
               f"{work['other_cpu']:.0f} ({work['other_cpu'] / p['users']:.2f} per person: kernels, code and stops "
               f"of people already in, the hub's other requests, the system)" if work.get("starts_cpu") else "")
        )
    idle, load = r["idle"], r["load"]
    per = r.get("per_server_memory")
    lines.append(
        f"memory: hub {mib(idle['hub']['memory_peak'])} idle, {mib(load['hub']['memory_peak'])} peak "
        f"(process RSS {mib(load['hub']['rss_peak'])}); proxy {mib(idle['proxy']['memory_peak'])} idle, "
        f"{mib(load['proxy']['memory_peak'])} peak; hub + proxy idle {mib(_add(idle['hub']['memory_peak'], idle['proxy']['memory_peak']))}"
    )
    if per:
        lines.append(
            f"per server (with its kernel, at its peak): median {mib(per['median'])}, p95 {mib(per['p95'])}; "
            f"all servers {mib(per['memory'])} with {per['running']} running (hub + proxy then "
            f"{mib(per.get('hub_proxy'))}); "
            f"machine peak {mib(load['machine']['memory_peak'])} of {mib(report['machine']['memory_total'])}"
        )
    lines.append(
        "CPU (cores, peak/mean): " + "; ".join(
            f"{k} {cores(load[k]['cpu_peak'])}/{cores(load[k]['cpu_mean'])}"
            for k in ("hub", "proxy", "servers", "machine", "generator"))
    )
    hub = r.get("hub_log", {})
    metrics = r.get("hub_metrics", {})
    files, limit = load["hub"].get("files_peak"), r.get("hub_files_limit")
    lines.append(
        f"hub: {hub.get('errors', '?')} error lines in its log"
        + (f"; open files peak {files}" + (f" of its limit {limit}" if limit else "") if files else "")
        + (f", event loop stalled up to {sec(hub['max_stall'])} s" if hub.get("max_stall") else "")
        + (f"; event-loop intervals > 1 s: {metrics['event_loop_over_1s']}" if "event_loop_over_1s" in metrics else "")
    )
    for line in hub.get("first_errors", [])[:5]:
        lines.append(f"  {line[:200]}")
    return lines


def _add(a, b):
    return None if a is None or b is None else a + b
