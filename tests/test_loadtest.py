"""`tljh loadtest`'s pieces: the simulated person against a fake hub (the real one is in integration-tests),
the numbers, the checks before a run, the timeline picture."""

import json
import time
import uuid

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tljh.loadtest import kernel_protocol, plot, report, run
from tljh.loadtest import sampler as sampler_module
from tljh.loadtest.client import PHASES, Profile, SimulatedUser
from tljh.loadtest.sampler import Sampler, ServerCpu
from tljh.system.cgroups import MachineUsage, Usage

MiB = 2**20


# ---- a fake hub: the requests and redirects a browser sees, nothing else


def fake_hub(*, profiles=False, fail_spawn=False, idle_first=False, accept_v1=True):
    seen = {"spawn_form": None, "api_options": None, "executions": 0, "stopped": [], "kernel_protocol": None}
    app = web.Application()

    def user(request):
        return request.cookies.get("hub-user")

    async def login_page(request):
        response = web.Response(text="<form>login</form>", content_type="text/html")
        response.set_cookie("_xsrf", "hubxsrf", path="/hub/")
        return response

    async def login(request):
        form = await request.post()
        if form.get("_xsrf") != "hubxsrf":
            raise web.HTTPForbidden(text="xsrf")
        if form["username"] == "refused":
            return web.Response(status=403, content_type="text/html",
                                text='<p class="login_error">Invalid username or password.</p>')
        response = web.HTTPFound("/hub/")
        response.set_cookie("hub-user", form["username"], path="/hub/")
        raise response

    async def home(request):
        raise web.HTTPFound("/hub/spawn")

    async def spawn_page(request):
        if profiles:
            return web.Response(text='<form><input name="profile" value="a"></form>', content_type="text/html")
        raise web.HTTPFound(f"/hub/spawn-pending/{user(request)}")

    async def spawn_post(request):
        form = await request.post()
        seen["spawn_form"] = dict(form)
        if form.get("profile") == "nope":
            return web.Response(text='<p class="spawn-error-msg">No such profile: nope</p>', content_type="text/html")
        raise web.HTTPFound(f"/hub/spawn-pending/{user(request)}")

    async def pending(request):
        return web.Response(text="pending", content_type="text/html")

    async def api_spawn(request):
        if request.headers.get("X-XSRFToken") != "hubxsrf":
            raise web.HTTPForbidden()
        seen["api_options"] = await request.json()
        return web.Response(status=202)

    async def progress(request):
        assert request.query["_xsrf"] == "hubxsrf"
        name = request.match_info["name"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = [{"progress": 0, "message": "Server requested"},
                  {"progress": 10, "message": "Waiting", "tljh_phase": "queued"},
                  {"progress": 30, "message": "Starting", "tljh_phase": "starting", "tljh_waited": 1.5}]
        events.append({"failed": True, "message": "Spawn failed: it broke"} if fail_spawn else
                      {"progress": 100, "ready": True, "message": "ready", "url": f"/user/{name}/lab"})
        for event in events:
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        return response

    async def lab(request):
        name = request.match_info["name"]
        if request.cookies.get("server-user") != name:
            raise web.HTTPFound(f"/user/{name}/oauth_callback")
        response = web.Response(text="<html>JupyterLab</html>", content_type="text/html")
        response.set_cookie("_xsrf", "serverxsrf", path=f"/user/{name}/")
        return response

    async def oauth_callback(request):
        name = request.match_info["name"]
        response = web.HTTPFound(f"/user/{name}/lab")
        response.set_cookie("server-user", name, path=f"/user/{name}/")
        raise response

    async def sessions(request):
        if request.headers.get("X-XSRFToken") != "serverxsrf":
            raise web.HTTPForbidden(text="xsrf")
        return web.json_response({"kernel": {"id": "k1"}}, status=201)

    async def channels(request):
        ws = web.WebSocketResponse(protocols=(kernel_protocol.V1,) if accept_v1 else ())
        await ws.prepare(request)
        v1 = ws.ws_protocol == kernel_protocol.V1
        seen["kernel_protocol"] = ws.ws_protocol

        async def send(msg_type, content, channel="shell", parent=None):
            out = {"channel": channel, "header": {"msg_type": msg_type, "msg_id": uuid.uuid4().hex},
                   "parent_header": parent, "metadata": {}, "content": content, "buffers": []}
            await (ws.send_bytes(kernel_protocol.encode_v1(out)) if v1 else
                   ws.send_str(kernel_protocol.encode_json(out)))

        async for frame in ws:
            if frame.type != (WSMsgType.BINARY if v1 else WSMsgType.TEXT):
                break
            msg = kernel_protocol.decode_v1(frame.data) if v1 else kernel_protocol.decode_json(frame.data)
            parent = msg["header"]
            kind = parent["msg_type"]
            if kind == "kernel_info_request":
                await send("kernel_info_reply", {"status": "ok"}, parent=parent)
            elif kind == "execute_request":
                seen["executions"] += 1
                await send("stream", {"name": "stdout", "text": "someone else's"}, "iopub", {"msg_id": "other"})
                ok = ("execute_reply", {"status": "ok" if "boom" not in msg["content"]["code"] else "error",
                                        "ename": "E", "evalue": "boom"}, "shell", parent)
                idle = ("status", {"execution_state": "idle"}, "iopub", parent)
                for args in ([idle, ok] if idle_first else [ok, idle]):
                    await send(*args)
        return ws

    async def stop(request):
        seen["stopped"].append(request.match_info["name"])
        return web.Response(status=202)

    async def model(request):
        return web.json_response({"name": request.match_info["name"], "servers": {}, "pending": None})

    app.router.add_get("/hub/login", login_page)
    app.router.add_post("/hub/login", login)
    app.router.add_get("/hub/", home)
    app.router.add_get("/hub/spawn", spawn_page)
    app.router.add_post("/hub/spawn", spawn_post)
    app.router.add_get("/hub/spawn-pending/{name}", pending)
    app.router.add_post("/hub/api/users/{name}/server", api_spawn)
    app.router.add_delete("/hub/api/users/{name}/server", stop)
    app.router.add_get("/hub/api/users/{name}/server/progress", progress)
    app.router.add_get("/hub/api/users/{name}", model)
    app.router.add_get("/user/{name}/lab", lab)
    app.router.add_get("/user/{name}/oauth_callback", oauth_callback)
    app.router.add_post("/user/{name}/api/sessions", sessions)
    app.router.add_get("/user/{name}/api/kernels/{kid}/channels", channels)
    return app, seen


async def visit(app, name="alice", **kwargs):
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        t0 = time.monotonic()
        person = SimulatedUser(str(server.make_url("/")), name, "pw", clock=lambda: time.monotonic() - t0,
                               session=kwargs.pop("session", 0.3), think=kwargs.pop("think", 0.05), **kwargs)
        marks = []
        person.on_mark = marks.append
        result = await person.visit()
        return result, marks
    finally:
        await server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("idle_first", [False, True])
async def test_a_visit_goes_through_every_phase(idle_first):
    app, seen = fake_hub(idle_first=idle_first)
    result, marks = await visit(app)
    assert {p: result.phases[p].ok for p in PHASES} == dict.fromkeys(PHASES, True)
    assert marks == ["spawn", "ready", "kernel"]
    assert result.queued == 1.5  # from the hub's "starting" event, not guessed
    assert result.start == max(0.0, result.phases["spawn"].seconds - 1.5)
    assert len(result.executions) == seen["executions"] >= 2
    assert seen["stopped"] == ["alice"]
    assert [m for _, m in result.progress][:2] == ["Server requested", "Waiting"]
    assert result.kernel_protocol == seen["kernel_protocol"] == kernel_protocol.V1  # binary frames, as JupyterLab


@pytest.mark.asyncio
async def test_a_server_without_v1_gets_json_frames_and_the_result_says_so():
    app, seen = fake_hub(accept_v1=False)
    result, _ = await visit(app)
    assert {p: result.phases[p].ok for p in PHASES} == dict.fromkeys(PHASES, True)
    assert seen["kernel_protocol"] is None and seen["executions"] >= 2
    assert result.kernel_protocol == kernel_protocol.JSON


@pytest.mark.asyncio
async def test_without_a_kernel_the_person_keeps_jupyterlab_open_for_the_session_then_stops():
    app, seen = fake_hub()
    result, marks = await visit(app, kernel=False, session=0.4)
    assert {p: result.phases[p].ok for p in PHASES} == {"login": True, "spawn": True, "kernel": None, "code": None,
                                                        "stop": True}
    assert marks == ["spawn", "ready"]
    assert seen["executions"] == 0
    assert seen["stopped"] == ["alice"]
    assert result.phases["stop"].started - result.ready_at >= 0.4  # the session was spent with the server up


@pytest.mark.asyncio
async def test_profile_is_picked_through_the_form():
    app, seen = fake_hub(profiles=True)
    result, _ = await visit(app, profile=Profile.parse("data:memory=large"))
    assert result.phases["spawn"].ok
    assert seen["spawn_form"] == {"profile": "data", "profile-option-data--memory": "large", "_xsrf": "hubxsrf"}


@pytest.mark.asyncio
async def test_profile_through_the_rest_api():
    app, seen = fake_hub()
    result, _ = await visit(app, profile=Profile.parse("data:memory=large"), via="api")
    assert result.phases["code"].ok
    assert seen["api_options"] == {"profile": "data", "memory": "large"}


@pytest.mark.asyncio
async def test_a_refused_profile_is_the_picker_message():
    app, _ = fake_hub(profiles=True)
    result, _ = await visit(app, profile=Profile("nope"))
    assert result.phases["spawn"].ok is False
    assert "No such profile: nope" in result.phases["spawn"].error
    assert result.phases["kernel"].ok is None  # not reached
    assert result.phases["stop"].ok  # the person still presses stop


@pytest.mark.asyncio
async def test_profile_asked_but_no_picker():
    app, _ = fake_hub(profiles=False)
    result, _ = await visit(app, profile=Profile("data"))
    assert "no profile picker was shown" in result.phases["spawn"].error


@pytest.mark.asyncio
async def test_the_hub_giving_up_is_a_failed_spawn_without_retry():
    app, seen = fake_hub(fail_spawn=True)
    result, _ = await visit(app)
    assert result.phases["spawn"].ok is False
    assert result.phases["spawn"].error == "the hub gave up: Spawn failed: it broke"
    assert result.ready_at is None and seen["executions"] == 0


@pytest.mark.asyncio
async def test_refused_login_shows_the_pages_message():
    app, _ = fake_hub()
    result, _ = await visit(app, name="refused")
    assert result.phases["login"].error == "login refused (403): Invalid username or password."
    assert result.phases["spawn"].ok is None and result.phases["stop"].ok is None


@pytest.mark.asyncio
async def test_failing_code_fails_the_code_phase():
    app, _ = fake_hub()
    result, _ = await visit(app, code="boom")
    assert result.phases["code"].ok is False and "E: boom" in result.phases["code"].error


@pytest.mark.parametrize("text", ["", ":a=b", "a:b", "a:b=", "a:=c"])
def test_bad_profile_choices_are_refused(text):
    with pytest.raises(ValueError):
        Profile.parse(text)


# ---- numbers


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 95) == 95
    assert report.percentile([3.0], 95) == 3.0
    assert report.percentile([], 50) is None


def person(name, ok=True, spawn=2.0, queued=0.5, ready=10.0, login_at=0.0, protocol=kernel_protocol.V1):
    phases = {p: {"ok": True, "started": login_at, "seconds": 1.0, "error": None} for p in PHASES}
    phases["spawn"]["seconds"] = spawn
    if not ok:
        phases["spawn"] = {"ok": False, "started": 1.0, "seconds": None, "error": "the hub gave up: x"}
        phases["kernel"] = phases["code"] = {"ok": None, "started": None, "seconds": None, "error": None}
    return {"name": name, "phases": phases, "queued": queued if ok else None, "start": spawn - queued if ok else None,
            "ready_at": ready if ok else None, "executions": [0.01, 0.02] if ok else [],
            "kernel_protocol": protocol if ok else None}


def test_phase_summary_counts_and_errors():
    users = [person("a", spawn=2.0), person("b", spawn=4.0, queued=3.0), person("c", ok=False)]
    summary = report.phase_summary(users)
    assert (summary["spawn"]["ok"], summary["spawn"]["attempted"], summary["spawn"]["failed"]) == (2, 3, 1)
    assert summary["spawn"]["errors"] == {"the hub gave up: x": 1}
    assert summary["kernel"]["attempted"] == 2
    assert summary["queued"]["max"] == 3.0 and summary["start"]["max"] == 1.5
    assert summary["execute"]["count"] == 4


def test_all_running_needs_every_server():
    users = [person("a", ready=30.0, login_at=2.0), person("b", ready=50.0, login_at=5.0)]
    assert report.all_running(users) == 48.0
    assert report.all_running(users + [person("c", ok=False)]) is None


def sample(t, running, memory, cpu):
    return {"t": t, "hub": {"memory": 100 * MiB, "cpu": cpu, "rss": 120 * MiB, "files": 40 + 10 * running},
            "proxy": {"memory": 20 * MiB, "cpu": cpu / 10},
            "servers": {"running": running, "memory": memory, "cpu": cpu * 2},
            "machine": {"memory": 500 * MiB + memory, "cpu": cpu * 4, "memory_total": 4096 * MiB},
            "generator": {"cpu": 0.0, "rss": 50 * MiB}}


def test_rates_and_resources():
    samples = [sample(0, 0, 0, 0.0), sample(1, 1, 100 * MiB, 0.5), sample(2, 2, 250 * MiB, 1.5)]
    assert report.rates(samples, "hub") == [(1, 0.5), (2, 1.0)]
    load = report.resources(samples, (1, 2))
    assert load["hub"]["cpu_peak"] == 1.0 and load["hub"]["rss_peak"] == 120 * MiB
    assert load["machine"]["memory_peak"] == 750 * MiB
    assert load["hub"]["files_peak"] == 60
    per = report.per_server_memory(samples, {"jupyter-a.service": 120 * MiB, "jupyter-b.service": 130 * MiB})
    assert (per["median"], per["max"], per["running"], per["memory"]) == (120 * MiB, 130 * MiB, 2, 250 * MiB)


def test_work_until_all_running_splits_the_machines_cpu_into_starts_and_the_rest():
    users = [person("a", ready=6.0, login_at=1.0), person("b", ready=11.0, login_at=2.0)]
    # machine CPU grows 1.6 CPU-s per second of run time (sample(): 4 x cpu), on 2 CPUs: 80 % busy
    samples = [sample(t, 1, 0, 0.4 * t) for t in range(0, 13)]
    work = report.work_until_all_running(users, samples, 2.0, 3.0)
    assert work["seconds"] == 10.0
    assert work["machine_cpu"] == pytest.approx(16.0)
    assert work["busy"] == pytest.approx(0.8)
    assert work["hub_cpu"] == pytest.approx(4.0)
    assert (work["starts_cpu"], work["other_cpu"]) == (6.0, pytest.approx(10.0))
    # between samples: linear
    assert report.work_until_all_running([person("a", ready=5.5, login_at=0.5)], samples, 2.0, 3.0)["machine_cpu"] \
        == pytest.approx(8.0)
    # no answer without every server, or samples that do not cover the window
    assert report.work_until_all_running(users + [person("c", ok=False)], samples, 2.0, 3.0) is None
    assert report.work_until_all_running(users, samples[:5], 2.0, 3.0) is None
    assert report.work_until_all_running(users, samples, 2.0, None)["other_cpu"] is None


def full_report(users, samples):
    return {
        "parameters": {"users": len(users), "ramp": 10.0, "session": 20.0, "profiles": ["a", "b"], "via": "form",
                       "url": "http://127.0.0.1/"},
        "machine": {"cpus": 2.0, "memory_total": 4096 * MiB, "uptime_before": "12:00:00 load average: 0.1 0.2 0.3"},
        "results": {
            "single": {"spawns": 3, "spawn_median": 1.5, "cpu_per_start": 1.2, "cpu_server": 0.9,
                       "cpu_hub_proxy": 0.3, "cpu_per_kernel": 0.4},
            "phases": report.phase_summary(users), "all_running": report.all_running(users), "cpu_floor": 1.2,
            "kernel_protocols": report.kernel_protocols(users),
            "idle": report.resources(samples, (0, 0)), "load": report.resources(samples, (0, 2)),
            "per_server_memory": report.per_server_memory(samples, {"u": 128 * MiB}),
            "hub_log": {"errors": 1, "first_errors": ["[E 12:00 JupyterHub] boom"], "max_stall": 1.5},
            "hub_metrics": {"event_loop_over_1s": 2.0}, "hub_files_limit": 1024, "windows": {"idle": [0, 0], "load": [0, 2]},
            "work_until_all_running": report.work_until_all_running([person("a", ready=2.0)], samples, 2.0, 1.2),
        },
        "users": users, "samples": samples,
    }


def test_text_report_says_what_matters():
    users = [person("a"), person("b", ok=False)]
    samples = [sample(0, 0, 0, 0.0), sample(1, 1, 128 * MiB, 0.5), sample(2, 1, 128 * MiB, 1.0)]
    lines = "\n".join(report.text(full_report(users, samples)))
    assert "spawn        1/2" in lines
    assert "spawn failed for 1: the hub gave up: x" in lines
    assert "CPU per start 1.20 s" in lines
    assert "hub + proxy idle 120 MiB" in lines
    assert "median 128 MiB" in lines
    assert "1 error lines in its log" in lines and "[E 12:00 JupyterHub] boom" in lines
    assert "load average: 0.1 0.2 0.3" in lines
    assert "open files peak 50 of its limit 1024" in lines
    assert "meanwhile the machine used 4 CPU-s, 100 % of its 2 CPUs: the 2 starts 1" in lines
    assert "kernel websocket: v1.kernel.websocket.jupyter.org binary frames (as JupyterLab 4) for 1\n" in lines


def test_the_report_says_which_kernels_fell_back_to_json():
    users = [person("a"), person("b", protocol=kernel_protocol.JSON), person("c", protocol=kernel_protocol.JSON),
             person("d", ok=False)]
    assert report.kernel_protocols(users) == {kernel_protocol.V1: 1, kernel_protocol.JSON: 2}
    samples = [sample(0, 0, 0, 0.0), sample(1, 1, 128 * MiB, 0.5), sample(2, 1, 128 * MiB, 1.0)]
    lines = report.text(full_report(users, samples))
    assert ("kernel websocket: JSON text frames for 2 (the server did not accept v1.kernel.websocket.jupyter.org); "
            "v1.kernel.websocket.jupyter.org binary frames (as JupyterLab 4) for 1") in lines


def test_timeline_png_is_drawn(tmp_path):
    users = [person("a"), person("b", ok=False)]
    samples = [sample(t, min(t, 3), t * 50 * MiB, t * 0.5) for t in range(6)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(full_report(users, samples)))
    assert plot.render(str(path), str(tmp_path / "t.png")) is None
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_it_is_layered_on_with_uv(tmp_path, monkeypatch):
    import builtins
    import subprocess

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    ran = []
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(plot.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or
                        subprocess.CompletedProcess(cmd, 1, "", "error: no network\n"))
    problem = plot.render("r.json", "t.png")
    assert ran and ran[0][1:3] == ["run", "--no-project"]
    assert ran[0][ran[0].index("--with") + 1].startswith("matplotlib")
    assert ran[0][-3:] == ["tljh.loadtest.plot", "r.json", "t.png"]
    assert problem == "matplotlib could not be installed or run (error: no network)"


# ---- before a run; after a run


def test_real_users_are_refused_unless_allowed():
    users = [{"name": "admin", "admin": True}, {"name": "loadtest-1"}, {"name": "bob"}, {"name": "carol"}]
    with pytest.raises(run.Refused, match=r"2 real users \(bob, carol\)"):
        run.check_population(users, {"admin"}, "loadtest-")
    run.check_population(users[:2], {"admin"}, "loadtest-")


def test_event_loop_stalls_from_the_hubs_metrics():
    text = "\n".join([
        "# TYPE jupyterhub_event_loop_interval_seconds histogram",
        'jupyterhub_event_loop_interval_seconds_bucket{le="0.5"} 90.0',
        'jupyterhub_event_loop_interval_seconds_bucket{le="1.0"} 97.0',
        'jupyterhub_event_loop_interval_seconds_bucket{le="+Inf"} 100.0',
        "jupyterhub_event_loop_interval_seconds_count 100.0",
    ])
    assert run.event_loop_over(text) == 3.0
    assert run.event_loop_over("") is None


def test_hub_log_counts_errors_and_stalls(monkeypatch):
    log = "\n".join([
        "[I 2026-12-01 10:00:00.000 JupyterHub log:192] 200 GET /hub/api/ 3ms",
        "[W 2026-12-01 10:00:01.000 JupyterHub metrics:500] Event loop was unresponsive for at least 1.81s!",
        "[E 2026-12-01 10:00:02.000 JupyterHub user:1000] Unhandled error starting loadtest-1's server",
        "[W 2026-12-01 10:00:03.000 JupyterHub metrics:500] Event loop was unresponsive for at least 4.50s!",
    ])
    monkeypatch.setattr(run.systemd, "journal_since", lambda unit, since: log)
    result = run.hub_log(0)
    assert (result["errors"], result["stalls"], result["max_stall"]) == (1, 2, 4.5)


class FakeCgroups:
    def __init__(self):
        self.servers = {"jupyter-a.service": Usage(100 * MiB, 1.0)}

    def unit_usage(self, unit):
        return Usage(50 * MiB, 2.0)

    def units(self, pattern):
        return {u: u for u in self.servers}

    def usage(self, path):
        return self.servers[path]

    def machine(self):
        return MachineUsage(800 * MiB, 10.0, 4096 * MiB)


def test_sampler_keeps_servers_cpu_across_restarts_and_peaks(monkeypatch):
    monkeypatch.setattr("tljh.loadtest.sampler.main_pid", lambda unit: None)
    cg = FakeCgroups()
    sampler = Sampler(cgroups=cg, hub_unit="hub", proxy_units=("edge", "router"), server_units="jupyter-*")
    first = sampler.sample(0.0)
    assert first["proxy"] == {"memory": 100 * MiB, "cpu": 4.0}
    assert first["servers"] == {"running": 1, "memory": 100 * MiB, "cpu": 1.0}
    cg.servers["jupyter-a.service"] = Usage(60 * MiB, 0.5)  # stopped and started again: a new cgroup
    assert sampler.sample(1.0)["servers"]["cpu"] == 1.5
    assert sampler.server_peaks == {"jupyter-a.service": 100 * MiB}


def test_open_files_and_their_limit_from_proc(tmp_path):
    (tmp_path / "7" / "fd").mkdir(parents=True)
    for n in range(3):
        (tmp_path / "7" / "fd" / str(n)).touch()
    (tmp_path / "7" / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max processes             95698                95698                processes\n"
        "Max open files            1024                 524288               files\n")
    assert sampler_module.open_files(7, proc=str(tmp_path)) == 3
    assert sampler_module.open_files_limit(7, proc=str(tmp_path)) == 1024
    assert sampler_module.open_files(8, proc=str(tmp_path)) is None
    assert sampler_module.open_files_limit(8, proc=str(tmp_path)) is None


def test_server_cpu_banks_a_restarted_unit():
    cpu = ServerCpu()
    assert cpu.update({"a": 1.0, "b": 2.0}) == 3.0
    assert cpu.update({"a": 0.2}) == 3.2
    assert cpu.update({"a": None}) == 3.2


@pytest.mark.parametrize("argv, message", [
    (["--users", "0"], "--users must be at least 1"),
    (["--profile", "x:y"], "bad profile choice"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    import argparse

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    assert run.main(parser.parse_args(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.asyncio
async def test_cleanup_waits_for_stopping_servers_and_never_loses_the_report(monkeypatch, capsys):
    attempts = {"stopping": 0, "broken": 0}

    async def delete_user(request):
        name = request.match_info["name"]
        attempts[name] = attempts.get(name, 0) + 1
        if name == "stopping" and attempts[name] < 3:
            return web.json_response({"status": 400, "message": "stopping's server is in the process of stopping, "
                                      "please wait."}, status=400)
        if name == "broken":
            return web.json_response({"status": 500, "message": "boom"}, status=500)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_delete("/hub/api/users/{name}", delete_user)
    removed = []

    async def remove_account(hub_name):
        removed.append(hub_name)

    monkeypatch.setattr(run.accounts, "remove", remove_account)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with run.HubAdmin(str(server.make_url("/")), "token") as hub:
            hub.retry_pause = 0
            await run.remove_people(hub, ["stopping", "broken", "gone"])
    finally:
        await server.close()
    assert attempts == {"stopping": 3, "broken": 1, "gone": 1}
    assert sorted(removed) == ["gone", "stopping"]
    err = capsys.readouterr().err
    assert "1 simulated people were not removed (first: broken: " in err and "500" in err

