"""Issue 12 (environments): several environments on a fresh server, as an admin and users meet them.

One machine, installed with the real bootstrap; the tests run in order as one admin's afternoon: declare an
environment, build it, use it from a server, update it under a running server, kill a build, add R. Each
test leaves the machine in a state the next ones expect (environments built, no server running).
"""

import asyncio
import contextlib
import io
import re
import tarfile
import time

import pytest
from browser import chromium, run_in_new_notebook, screenshot
from hubclient import HubClient, HubError
from installed import installed_machine

# Names no other test module uses: every test machine on a host shares one cgroup2 directory per unit name
# (/work/notes/finding-machines-share-unified-cgroup.md), and a unit of the same name in another machine keeps a
# stopped server's name taken here ("already loaded").
ADMIN = "envadmin"
USER = "envbob"
ADMIN_PASSWORD = "admin-password-1"
SNIPPET = "/opt/tljh/config/jupyterhub_config.d/test-environment.py"
# The environment a kernel stands on. Kernels run in their server's session layer (session packages, on by
# default: sys.prefix is the layer), which lists the environment's site-packages last on sys.path.
ENVIRONMENT_OF_KERNEL = "import sys; [p for p in sys.path if p.endswith('site-packages')][-1].split('/lib/')[0]"
LAYER = f"/opt/tljh/sessions/jupyter-{ADMIN}"


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"{ADMIN}:{ADMIN_PASSWORD}") as m:
        yield m


def run(coro):
    return asyncio.run(coro)


def config_digest(hub):
    return hub.run("sha256sum /opt/tljh/config/config.yaml").stdout.split()[0]


def serve_environment(hub, name):
    """Servers start in ``name`` (what a profile's user_environment does; profiles are tested elsewhere)."""
    if name == "default":
        hub.run(f"rm -f {SNIPPET}")
    else:
        hub.run(f"echo 'c.UserCreatingSpawner.user_environment = \"{name}\"' > {SNIPPET}")
    hub.run("tljh-config reload hub")


async def admin_client(hub):
    client = HubClient(hub.url())
    await client.__aenter__()
    await client.login(ADMIN, ADMIN_PASSWORD)
    client.hub = hub
    return client


async def start(client, timeout=180, user_options=None):
    """Start the user's server; if it does not come up, fail with what its unit and the hub said."""
    try:
        return await client.start_server(timeout=timeout, user_options=user_options)
    except HubError:
        unit = client.hub.run(
            f"systemctl show -p LoadState,ActiveState,SubState,Result jupyter-{client.username}; "
            f"ps -o pid,user,args -u jupyter-{client.username}; "
            f"journalctl -u jupyter-{client.username} --no-pager | tail -25", check=False
        ).stdout
        hub_log = client.hub.run(
            "journalctl -u jupyterhub --no-pager | grep -v 'GET /hub/api/users/' | tail -25", check=False
        ).stdout
        raise HubError(f"server of {client.username} did not start.\nunit:\n{unit}\nhub:\n{hub_log}") from None


def test_a_second_environment_with_pandas(hub):
    before = hub.run("tljh env list").stdout
    assert "default" in before and "up to date" in before
    result = hub.run("tljh-config add-item environments.data.packages pandas")
    assert "added pandas" in result.stdout
    hub.run("tljh-config set environments.data.description 'Pandas for the statistics course'")
    build = hub.run("tljh env build", timeout=900)
    assert "default: up to date" in build.stdout
    assert "data: build" in build.stdout and "is current" in build.stdout
    assert "data: compiling bytecode in the background" in build.stdout
    assert "run `sudo tljh-config reload` so servers started from now on offer" in build.stdout
    hub.run("tljh-config reload hub")
    assert "tljh-config reload" not in hub.run("tljh env build").stdout
    listing = hub.run("tljh env list").stdout
    assert [l.split()[:2] for l in listing.splitlines()[1:3]] == [["default", "up"], ["data", "up"]]
    lock = hub.run("tljh env show data").stdout
    assert "\npandas==" in lock and "\njupyterhub==" in lock and "\nipykernel==" in lock
    # The output of show is itself a requirements file.
    hub.run("tljh env show data > /tmp/data.txt && /opt/tljh/hub/bin/uv pip compile -q --system-certs /tmp/data.txt >/dev/null")


BYTECODE_UNITS = "systemctl list-units --state=active,activating --plain --no-legend 'tljh-env-bytecode-data:*'"
SITE = "/opt/tljh/envs/data/lib/python3.*/site-packages"


def wait_for_bytecode(hub, name, timeout=900):
    """Until the background compile has marked the current build of ``name`` compiled (polled in the machine:
    a `tljh env list` every few seconds would take CPU from the compile it waits for)."""
    prefix = f"/opt/tljh/envs/{name}"
    build = f"python3 -c \"import json; print(json.load(open('{prefix}/tljh-environment.json'))['build'])\""
    hub.run(f'b=$({build}); until grep -qx "$b" {prefix}/tljh-bytecode.txt 2>/dev/null; do sleep 1; done',
            timeout=timeout)
    assert f"{name}: bytecode not compiled" not in hub.run("tljh env list").stdout


def test_bytecode_is_compiled_after_the_switch_and_a_killed_compile_is_redone(hub):
    """The build served before its bytecode existed (the previous test); the compile then runs as the builder
    and leaves bytecode users cannot write. Killed mid-way it breaks nothing, and the next `tljh env build`
    compiles what is missing."""
    wait_for_bytecode(hub, "data")
    pyc = hub.run(f"ls {SITE}/pandas/__pycache__/__init__.*.pyc").stdout.strip()
    assert hub.run(f"stat -c '%U %a' {pyc}").stdout.split() == ["tljh-builder", "644"]
    refused = hub.run(f"touch $(dirname {pyc})/by-nobody", user="nobody", cwd="/", check=False)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    # The installer compiled default's before it went on (no note for default in the listing).
    assert "default: bytecode not compiled" not in hub.run("tljh env list").stdout

    # pandas' .pyc files gone (1,500 files to compile again: long enough to be killed in the middle).
    hub.run(f"rm /opt/tljh/envs/data/tljh-bytecode.txt && find {SITE}/pandas -name '*.pyc' -delete")
    again = hub.run("tljh env build data").stdout
    assert "data: up to date" in again and "compiling bytecode in the background" in again, again
    hub.run("systemctl kill -s KILL 'tljh-env-bytecode-data:*'", check=False)
    deadline = time.monotonic() + 60
    while hub.run(BYTECODE_UNITS, check=False).stdout.strip():
        assert time.monotonic() < deadline, "the killed compile's unit is still active"
        time.sleep(0.5)
    # Killed: no marker, whatever it wrote is whole, and a user imports everything as before.
    assert "data: bytecode not compiled" in hub.run("tljh env list").stdout
    assert hub.run("/opt/tljh/envs/data/bin/python -c 'import pandas; print(6*7)'", user="nobody", cwd="/").stdout.strip() == "42"
    rerun = hub.run("tljh env build data").stdout
    assert "data: up to date" in rerun and "compiling bytecode in the background" in rerun, rerun
    wait_for_bytecode(hub, "data")
    assert hub.run(f"ls {SITE}/pandas/__pycache__/__init__.*.pyc", check=False).returncode == 0
    assert not hub.run(f"find {SITE} -name '*.pyc.*'").stdout.strip()  # no temporaries left


def test_every_server_offers_every_environment_as_a_kernel(hub):
    async def scenario():
        admin = await admin_client(hub)
        try:
            await start(admin)
            own = await admin.open_kernel()
            assert await own.execute(ENVIRONMENT_OF_KERNEL) == "'/opt/tljh/user'"
            assert await own.execute("import sys; sys.prefix") == repr(LAYER)
            await own.close()
            other = await admin.open_kernel(await admin.start_kernel("data"))
            assert await other.execute("import pandas; " + ENVIRONMENT_OF_KERNEL) == "'/opt/tljh/envs/data'"
            # The other environment's kernel has a session layer of its own, over that environment.
            assert await other.execute("import sys; sys.prefix") == repr(f"{LAYER}/envs/opt-tljh-envs-data")
            await other.close()
            specs = await admin.api("GET", f"user/{ADMIN}/api/kernelspecs")
            assert {"python3", "default", "data"} <= set(specs["kernelspecs"])
            assert specs["kernelspecs"]["data"]["spec"]["display_name"].startswith("data (Python 3.")
        finally:
            await admin.stop_server()
            await admin.__aexit__(None, None, None)

    run(scenario())


def test_a_server_of_the_data_environment(hub):
    serve_environment(hub, "data")

    async def scenario():
        admin = await admin_client(hub)
        try:
            await start(admin)
            kernel = await admin.open_kernel()
            assert await kernel.execute("import pandas; " + ENVIRONMENT_OF_KERNEL) == "'/opt/tljh/envs/data'"
            assert await kernel.execute("import sys; sys.prefix") == repr(LAYER)
            assert await kernel.execute("import shutil; shutil.which('jupyterhub-singleuser')") == (
                "'/opt/tljh/envs/data/bin/jupyterhub-singleuser'"
            )
            # Session packages work in a server pinned to another environment: uv is in every environment
            # (`%uv` runs `python -m uv`), and the layer under /opt/tljh/sessions is writable from the unit.
            installed = await kernel.execute("%uv pip install pyjokes==0.8.3", timeout=300)
            imported = await kernel.execute("import pyjokes; pyjokes.__file__")
            await kernel.close()
            return installed, imported
        finally:
            await admin.stop_server()
            await admin.__aexit__(None, None, None)

    try:
        installed, imported = run(scenario())
    finally:
        serve_environment(hub, "default")
    assert "+ pyjokes==0.8.3" in re.sub(r"\x1b\[[0-9;]*m", "", installed), installed
    assert imported.startswith(f"'{LAYER}/lib/python3."), imported
    assert hub.run("/opt/tljh/envs/data/bin/python -c 'import pyjokes'", check=False).returncode != 0


PROFILES = """
profiles:
  - display_name: Python
    description: The shared environment.
    default: true
  - display_name: Data
    description: Pandas for the statistics course.
    spawner_override: {user_environment: data}
  - display_name: Later
    description: Declared, not built yet.
    kubespawner_override: {user_environment: later}
"""

WRITE_ENVIRONMENTS = (
    "import os, sys\n"
    "env = [p for p in sys.path if p.endswith('site-packages')][-1].split('/lib/')[0]\n"
    "for d in ('/opt/tljh/user/lib', '/opt/tljh/envs/data/lib', env):\n"
    "    try:\n"
    "        open(os.path.join(d, 'written-by-a-user'), 'w')\n"
    "        print('WROTE', d)\n"
    "    except OSError as e:\n"
    "        print('refused', d, e.errno)\n"
)


def test_a_profile_chooses_the_environment_and_users_cannot_write_it(hub):
    """A profile's user_environment is the server's environment (under its kernel's session layer), for a user
    who is not an admin; an environment that is not built yet is refused with what to do, and nothing starts."""
    hub.run("tljh-config set environments.later.description 'Declared, not built yet'")
    hub.run("cat >> /opt/tljh/config/config.yaml", input=PROFILES)
    hub.run("tljh-config reload hub")

    async def scenario():
        admin = await admin_client(hub)
        await admin.create_users(USER)
        await admin.__aexit__(None, None, None)
        bob = HubClient(hub.url())
        await bob.__aenter__()
        await bob.login(USER, "bob-password-1")
        bob.hub = hub
        prefixes = {}
        try:
            for profile in ("data", "python"):
                await start(bob, user_options={"profile": profile})
                kernel = await bob.open_kernel()
                prefixes[profile] = await kernel.execute(ENVIRONMENT_OF_KERNEL)
                written = await kernel.execute(WRITE_ENVIRONMENTS + "print(os.getuid())")
                await kernel.close()
                await bob.stop_server()
                assert "WROTE" not in written, written
                assert written.count("refused") == 3, written
                assert written.split()[-1] == hub.run(f"id -u jupyter-{USER}").stdout.strip()
            # The REST API says why, with the status of "not yet".
            async with bob.session.post(bob.url(f"hub/api/users/{USER}/server"), json={"profile": "later"},
                                        headers=bob._auth()) as r:
                api = r.status, await r.text()
            # So does the spawn page, as a person picks the profile in the form.
            async with bob.session.get(bob.url("hub/spawn")) as r:
                assert r.status == 200 and 'id="profile-item-later"' in await r.text()
            async with bob.session.post(bob.url("hub/spawn"), data={"profile": "later", "_xsrf": bob._xsrf()},
                                        allow_redirects=False) as r:
                page = r.status, await r.text()
            model = await bob.api("GET", f"hub/api/users/{USER}")
            return prefixes, api, page, model
        finally:
            await bob.__aexit__(None, None, None)

    try:
        prefixes, api, page, model = run(scenario())
    finally:
        hub.run("tljh-config unset profiles && tljh-config unset environments.later && tljh-config reload hub")
    assert prefixes == {"data": "'/opt/tljh/envs/data'", "python": "'/opt/tljh/user'"}
    assert api[0] == 503 and "The environment 'later' is not built yet" in api[1], api
    assert "sudo tljh env build later" in api[1]
    assert page[0] == 503 and "The environment &#39;later&#39; is not built yet" in page[1], page[0]
    assert not model["servers"], "a refused start must not leave a server behind"


BROWSER_USER = "envdana"
BROWSER_PASSWORD = "dana-password-1"
DATA_PROFILE = PROFILES.split("  - display_name: Later")[0]  # Python and Data
# Run in the server's own kernel ("Python 3 (ipykernel)"), which runs from the server's environment. sys.prefix
# is the session layer over it (session packages); the layer lists the environment's site-packages last on
# sys.path, and pandas (in data only) imports from there.
PREFIX_CELL = (
    "import sys, pandas; "
    "print(sys.prefix, [p for p in sys.path if p.endswith('site-packages')][-1], pandas.__file__)"
)


def test_a_person_picks_the_data_profile_in_a_browser_and_the_kernel_runs_in_data(hub):
    """Chromium, as a person: log in, pick the profile whose user_environment is data (not the default), wait
    for JupyterLab, run a cell in a new notebook of the server's own kernel, read where it runs from."""
    hub.run("cat >> /opt/tljh/config/config.yaml", input=DATA_PROFILE)
    hub.run("tljh-config reload hub")

    async def create_user():
        admin = await admin_client(hub)
        try:
            await admin.create_users(BROWSER_USER)
        finally:
            await admin.__aexit__(None, None, None)

    async def stop_server():
        # Through the hub, and until the unit is gone: a running server keeps every environment's build
        # pinned, which later tests expect to be collected once their own servers stop.
        dana = HubClient(hub.url())
        await dana.__aenter__()
        try:
            await dana.login(BROWSER_USER, BROWSER_PASSWORD)
            await dana.stop_server()
        finally:
            await dana.__aexit__(None, None, None)

    run(create_user())
    try:
        with chromium() as page:
            page.goto(hub.url("/hub/login"))
            page.fill("#username_input", BROWSER_USER)
            page.fill("#password_input", BROWSER_PASSWORD)
            page.click("#login_submit")
            page.wait_for_selector("#profile-item-data")
            page.click("#profile-item-data")
            screenshot(page, "environments-picker.png")
            page.click("#spawn_form button[type=submit]")
            page.wait_for_url(f"**/user/{BROWSER_USER}/lab**", timeout=180_000)
            page.wait_for_selector(".jp-Launcher", timeout=180_000)
            # Every environment's kernel is offered; the server's own is "Python 3 (ipykernel)".
            printed = run_in_new_notebook(page, PREFIX_CELL, kernel="Python 3 (ipykernel)").split()
            screenshot(page, "environments-lab.png")
    finally:
        with contextlib.suppress(HubError):  # also after a failure above; whether it stopped is checked below
            run(stop_server())
        hub.run("tljh-config unset profiles && tljh-config reload hub")
    assert hub.run(f"systemctl is-active jupyter-{BROWSER_USER}", check=False).stdout.strip() != "active"
    prefix, site, pandas = printed
    assert prefix == f"/opt/tljh/sessions/jupyter-{BROWSER_USER}", printed
    assert site.startswith("/opt/tljh/envs/data/lib/python3.") and site.endswith("/site-packages"), printed
    assert pandas == f"{site}/pandas/__init__.py", printed


def test_users_cannot_change_an_environment(hub):
    hub.run("useradd -m envcarol")
    for path in ("/opt/tljh/envs/data/lib", "/opt/tljh/user/lib", "/opt/tljh/envs/data"):
        result = hub.run(f"touch {path}/x", user="envcarol", check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr


def test_bad_input_is_refused_and_config_yaml_is_unchanged(hub):
    digest = config_digest(hub)
    for command, expected in [
        ("tljh-config add-item environments.data.packages no-such-package-tljh", "no package no-such-package-tljh"),
        ("tljh-config set environments.data.python 3.7", "Python 3.7 is not available here: this system has"),
        ("tljh-config add-item environments.data.apt no-such-os-package-tljh", "no-such-os-package-tljh"),
        ("tljh-config set environments.Data.packages six", "environment name"),
    ]:
        result = hub.run(command, check=False)
        assert result.returncode != 0, command
        assert expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert config_digest(hub) == digest
    assert "data" in hub.run("tljh env build data").stdout


def test_updating_an_environment_under_a_running_server(hub):
    hub.run("tljh-config add-item environments.default.packages cowsay==6.0")
    hub.run("tljh env build default", timeout=600)

    async def scenario():
        admin = await admin_client(hub)
        try:
            await start(admin)
            kernel = await admin.open_kernel()
            assert await kernel.execute("import cowsay; cowsay.__version__") == "'6.0'"
            # The admin changes the environment while the kernel runs.
            hub.run("tljh-config remove-item environments.default.packages cowsay==6.0")
            hub.run("tljh-config add-item environments.default.packages cowsay==6.1")
            assert "is current" in hub.run("tljh env build default", timeout=600).stdout
            assert hub.run("/opt/tljh/user/bin/python -c 'import cowsay; print(cowsay.__version__)'").stdout.strip() == "6.1"
            # The running kernel keeps what it imported; new imports of unchanged packages work.
            assert await kernel.execute("import cowsay; cowsay.__version__") == "'6.0'"
            assert await kernel.execute("import json, idna; idna.__name__") == "'idna'"
            # The whole server keeps its build until it stops: a new kernel there still sees 6.0.
            second = await admin.open_kernel()
            assert await second.execute("import cowsay; cowsay.__version__") == "'6.0'"
            await second.close()
            await kernel.close()
            assert hub.run("ls /opt/tljh/envs/.retired").stdout.split()  # kept while the server runs
            await admin.stop_server()
            await start(admin)
            kernel = await admin.open_kernel()
            assert await kernel.execute("import cowsay; cowsay.__version__") == "'6.1'"
            await kernel.close()
        finally:
            await admin.stop_server()
            await admin.__aexit__(None, None, None)

    run(scenario())
    deadline = time.monotonic() + 30
    while hub.run("ls /opt/tljh/envs/.retired").stdout.split() and time.monotonic() < deadline:
        time.sleep(1)  # the hub deletes a build no server uses any more after the server stops
    assert hub.run("ls /opt/tljh/envs/.retired").stdout.split() == []


def test_an_admins_sudo_pip_install_reaches_everyone_and_rebuilds_keep_it(hub):
    """TLJH's contract: an admin's `sudo -E pip install X` (in a terminal, with the user environment on PATH)
    goes into /opt/tljh/user for everyone, and rebuilds of the environment keep it. Run as the admin's Unix
    account outside a server unit, as test_install does: inside a server unit sudo is refused on main
    (NoNewPrivileges, implied by systemdspawner's disable_user_sudo and PrivateDevices), which is the
    spawner's to change, not the environments'."""
    path = "PATH=/opt/tljh/user/bin:/usr/local/bin:/usr/bin:/bin"
    result = hub.run(f"env {path} sudo -E pip install --quiet pyfiglet", user=f"jupyter-{ADMIN}", check=False)
    assert result.returncode == 0, result.stderr
    hub.run("/opt/tljh/user/bin/python -c 'import pyfiglet'")
    assert "default: installed by hand (kept by rebuilds): pyfiglet" in hub.run("tljh env list").stdout
    hub.run("tljh env build default --force", timeout=600)
    hub.run("/opt/tljh/user/bin/python -c 'import pyfiglet'")
    assert "pyfiglet==" in hub.run("tljh env show default").stdout


def test_removing_an_environment_under_a_running_server(hub):
    async def scenario():
        admin = await admin_client(hub)
        try:
            await start(admin)
            kernel = await admin.open_kernel(await admin.start_kernel("data"))
            assert await kernel.execute("import pandas; 6*7") == "42"
            result = hub.run("tljh env remove data")
            assert "servers started with it keep it until they stop" in result.stdout
            listing = hub.run("tljh env list").stdout
            assert not [line for line in listing.splitlines() if line.split()[:1] == ["data"]], listing
            # The build stays, for this server, until it stops.
            assert "earlier builds kept while running servers use them: data." in listing, listing
            assert await kernel.execute("import pandas.plotting; 6*7") == "42"
            await kernel.close()
            again = await admin.open_kernel(await admin.start_kernel("data"))  # still offered until restart
            assert await again.execute(ENVIRONMENT_OF_KERNEL) == "'/opt/tljh/envs/data'"
            await again.close()
        finally:
            await admin.stop_server()
            await admin.__aexit__(None, None, None)

    run(scenario())
    assert "data" not in hub.run("ls /opt/tljh/envs").stdout


def test_a_killed_build_leaves_the_previous_one_serving_and_a_rerun_completes(hub):
    hub.run("tljh-config add-item environments.data.packages idna")
    hub.run("tljh env build data", timeout=900)
    previous = hub.run("python3 -c \"import json; print(json.load(open('/opt/tljh/envs/data/tljh-environment.json'))['build'])\"").stdout.strip()
    hub.run("tljh-config add-item environments.data.packages scipy")
    hub.run("systemd-run --unit=killed-build --collect tljh env build data")
    deadline = time.monotonic() + 300
    building = "systemctl list-units --state=active --plain --no-legend 'tljh-env-build-data:*'"
    while not hub.run(building, check=False).stdout.strip():
        assert time.monotonic() < deadline, "the build never started installing"
        time.sleep(0.2)
    hub.run("systemctl kill -s KILL killed-build")
    # The previous build serves meanwhile.
    assert hub.run("/opt/tljh/envs/data/bin/python -c 'import idna; print(1)'").stdout.strip() == "1"
    assert previous in hub.run("cat /opt/tljh/envs/data/tljh-environment.json").stdout
    rerun = hub.run("tljh env build data", timeout=900)
    assert "is current" in rerun.stdout
    hub.run("/opt/tljh/envs/data/bin/python -c 'import scipy'")
    assert "data" not in hub.run("ls /opt/tljh/envs/.builder").stdout.split()


def test_an_r_environment(hub):
    hub.run("tljh-config set environments.stats.r true")
    hub.run("tljh-config set environments.stats.description 'R for the statistics course'")
    hub.run("tljh env build stats", timeout=1200)
    serve_environment(hub, "stats")

    async def scenario():
        admin = await admin_client(hub)
        try:
            await start(admin)
            kernel = await admin.open_kernel(await admin.start_kernel("ir"))
            assert await kernel.execute("1+1", timeout=120) == "[1] 2"  # R's first answer is slow on a busy host
            await kernel.close()
        finally:
            await admin.stop_server()
            await admin.__aexit__(None, None, None)

    try:
        run(scenario())
    finally:
        serve_environment(hub, "default")


EVIL_SETUP = """
import os, sys
report = []
for path in ("/opt/tljh/hub/pwned", "/etc/pwned", "/opt/tljh/user/pwned", "/opt/tljh/envs/data/pwned"):
    try:
        open(path, "w").write("x")
        report.append("WROTE " + path)
    except OSError as e:
        report.append("refused %s: %s" % (path, e.strerror))
for path in ("/opt/tljh/config/config.yaml", "/opt/tljh/state/jupyterhub_cookie_secret"):
    try:
        open(path).read()
        report.append("READ " + path)
    except OSError as e:
        report.append("refused %s: %s" % (path, e.strerror))
sys.exit("EVIL uid=%d: %s" % (os.getuid(), "; ".join(report)))
"""


def tar_of(files):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return data.getvalue()


def test_a_build_runs_without_root_and_writes_only_its_own_directory(hub):
    """A package's build code (an sdist's setup.py) tries to write the hub, /etc and the served environments,
    and to read the config and the hub's state: as the builder user, in the sandbox, all of it fails."""
    hub.copy_tar(tar_of({"setup.py": EVIL_SETUP}), "/srv/evil")
    hub.run("chmod -R a+rX /srv/evil")
    # tljh-config already refuses it: its packages do not resolve (resolving ran its setup.py, sandboxed).
    assert hub.run("tljh-config add-item environments.evil.packages /srv/evil", check=False).returncode != 0
    # Written into config.yaml by hand, then built: the build fails with what the setup.py saw.
    hub.run(
        "/opt/tljh/hub/bin/python -c \"from ruamel.yaml import YAML; y = YAML(); p = '/opt/tljh/config/config.yaml'; "
        "d = y.load(open(p)); d.setdefault('environments', {})['evil'] = {'packages': ['/srv/evil']}; "
        "y.dump(d, open(p, 'w'))\""
    )
    try:
        build = hub.run("tljh env build evil", check=False, timeout=600)
        output = build.stdout + build.stderr
        assert build.returncode != 0
        builder = hub.run("id -u tljh-builder").stdout.strip()
        assert f"EVIL uid={builder}:" in output, output
        assert "WROTE" not in output and "READ" not in output, output
        for path in ("/opt/tljh/hub/pwned", "/etc/pwned", "/opt/tljh/user/pwned", "/opt/tljh/envs/data/pwned"):
            assert hub.run(f"test -e {path}", check=False).returncode != 0
    finally:
        hub.run("tljh-config unset environments.evil")
