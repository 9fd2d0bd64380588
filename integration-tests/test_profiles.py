"""Issue 12, profiles: the picker, user_options through the REST API, limits per profile, groups, named servers.

One installed machine for the module: every test starts and stops its own servers and leaves profiles as the
module configured them, so they do not disturb each other. People are real hub users logging in through the
login form; security checks run as the user who must be refused.
"""

import asyncio
import re
import textwrap

import pytest
from browser import chromium, run_in_new_notebook, screenshot
from hubclient import HubClient
from installed import installed_machine

PASSWORD = "profiles-test-password"
PROFILES = textwrap.dedent(
    """
    profiles:
      - display_name: Python
        description: JupyterLab with the shared environment.
        default: true
      - display_name: Data science
        description: Pick the memory you need.
        spawner_override:
          user_environment: default
          environment: {COURSE: stats101}
        profile_options:
          memory:
            display_name: Memory
            choices:
              small: {display_name: 400 MB, description: Most notebooks., spawner_override: {mem_limit: 400M}}
              large: {display_name: 800 MB, description: Large data frames., spawner_override: {mem_limit: 800M}}
            unlisted_choice:
              enabled: true
              display_name: Memory in hundreds of MB (3 to 9)
              display_name_in_choices: Another size
              validation_regex: "^[3-9]$"
              validation_message: a whole number from 3 to 9
              spawner_override: {mem_limit: "{value}00M"}
      - display_name: Classic Notebook
        description: The classic interface.
        kubespawner_override: {default_url: /tree}
      - display_name: Teaching team
        description: For staff only.
        allowed_groups: [teachers]
        spawner_override: {cpu_limit: 0.5}
    """
)


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"admin:{PASSWORD}") as m:
        # Each test has its own people, so tests do not depend on the order they run in (a test may leave its
        # person's server running).
        for name in ("alice", "bob", "carol", "dan", "erin"):
            m.run(["tljh-config", "add-item", "users.allowed", name])
        for name in ("carol", "erin"):
            m.run(["tljh-config", "add-item", "users.extra_user_groups.teachers", name])
        m.run("cat >> /opt/tljh/config/config.yaml", input=PROFILES)
        m.run(["tljh-config", "set", "allow_named_servers", "true"])
        m.run(["tljh-config", "set", "named_server_limit_per_user", "2"])
        m.run(["tljh-config", "reload", "hub"])
        yield m


async def logged_in(m, name):
    client = HubClient(m.url("/"))
    await client.__aenter__()
    await client.login(name, PASSWORD)
    return client


def unit_property(m, unit, prop):
    return m.run(["systemctl", "show", "--value", "-p", prop, unit]).stdout.strip()


def picker_slugs(html):
    return re.findall(r'name="profile" id="profile-item-([^"]+)"', html)


def test_picker_shows_a_users_profiles_only(hub):
    async def scenario():
        seen = {}
        for name in ("alice", "carol", "admin"):
            client = await logged_in(hub, name)
            try:
                async with client.session.get(client.url("hub/spawn")) as r:
                    assert r.status == 200
                    seen[name] = picker_slugs(await r.text())
            finally:
                await client.__aexit__(None, None, None)
        return seen

    seen = asyncio.run(scenario())
    assert seen["alice"] == ["python", "data-science", "classic-notebook"]
    assert seen["carol"] == seen["admin"] == ["python", "data-science", "classic-notebook", "teaching-team"]


@pytest.mark.parametrize(
    "options, status, reason",
    [
        ({"profile": "gpu"}, 400, "There is no profile 'gpu'"),
        ({"profile": "teaching-team"}, 403, "only for members of teachers"),
        ({"profile": "data-science", "memory": "huge"}, 400, "'huge' is not offered; choices: small, large"),
        ({"profile": "data-science", "memory--unlisted-choice": "12"}, 400, "a whole number from 3 to 9"),
        ({"profile": "data-science", "mem": "small"}, 400, "has no option 'mem'"),
    ],
)
def test_api_refuses_bad_choices_with_the_reason(hub, options, status, reason):
    async def scenario():
        dan = await logged_in(hub, "dan")
        try:
            async with dan.session.post(dan.url("hub/api/users/dan/server"), json=options, headers=dan._auth()) as r:
                body = await r.json()
            model = await dan.api("GET", "hub/api/users/dan")
            return r.status, body, model
        finally:
            await dan.__aexit__(None, None, None)

    got, body, model = asyncio.run(scenario())
    assert got == status and reason in body["message"], body
    assert not model["servers"], "a refused choice must not leave a server behind"


def test_each_choice_sets_its_limits_and_interface(hub):
    async def start(client, options):
        await client.start_server(120, user_options=options)
        return await client.api("GET", f"hub/api/users/{client.username}")

    async def scenario():
        alice = await logged_in(hub, "alice")
        try:
            results = {}
            for label, options in [
                ("small", {"profile": "data-science", "memory": "small"}),
                ("typed", {"profile": "data-science", "memory": "unlisted-choice", "memory--unlisted-choice": "6"}),
                ("classic", {"profile": "classic-notebook"}),
            ]:
                await start(alice, options)
                # The kernel runs in alice's session layer (session packages, on by default), which stands on
                # the profile's environment: the default one's site-packages follows the layer's on sys.path.
                env = await alice.run_code(
                    "import os, sys; print(os.environ.get('COURSE'), sys.prefix, "
                    "[p for p in sys.path if p.endswith('site-packages')][-1].split('/lib/')[0])")
                async with alice.session.get(alice.url("user/alice/"), headers=alice._auth(),
                                             allow_redirects=False) as r:
                    where = r.headers.get("Location", "")
                results[label] = (unit_property(hub, "jupyter-alice", "MemoryMax"), env.strip(), where)
                await alice.stop_server()
            return results
        finally:
            await alice.__aexit__(None, None, None)

    results = asyncio.run(scenario())
    assert results["small"][:2] == (str(400 * 2**20), "stats101 /opt/tljh/sessions/jupyter-alice /opt/tljh/user")
    assert results["typed"][0] == str(600 * 2**20)
    assert results["classic"][1].startswith("None ")  # the data profile's variable does not follow alice
    assert results["classic"][2].split("?")[0].endswith("/user/alice/tree")
    assert results["small"][2].split("?")[0].endswith("/user/alice/lab")


def test_named_server_runs_beside_the_default(hub):
    async def scenario():
        alice = await logged_in(hub, "alice")
        try:
            await alice.start_server(120, user_options={"profile": "python"})
            await alice.start_server(120, name="second", user_options={"profile": "data-science", "memory": "large"})
            model = await alice.api("GET", "hub/api/users/alice")
            both = sorted(s for s, v in model["servers"].items() if v["ready"])
            limit = unit_property(hub, "jupyter-alice:second", "MemoryMax")
            await alice.stop_server(name="second")
            await alice.stop_server()
            return both, limit
        finally:
            await alice.__aexit__(None, None, None)

    both, limit = asyncio.run(scenario())
    assert both == ["", "second"]
    assert limit == str(800 * 2**20)


def test_browser_picks_a_profile_and_runs_a_cell(hub):
    with chromium() as page:
        page.goto(hub.url("/hub/login"))
        page.fill("#username_input", "erin")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.wait_for_selector("#profile-item-teaching-team")
        page.click("#profile-item-data-science")
        page.click("label[for='profile-option-data-science--memory-large']")
        screenshot(page, "profiles-picker.png")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url("**/user/erin/lab**", timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
        output = run_in_new_notebook(page, "import os; print(os.environ['COURSE'], 6 * 7)")
        assert output.strip() == "stats101 42"
        screenshot(page, "profiles-lab.png")
    assert unit_property(hub, "jupyter-erin", "MemoryMax") == str(800 * 2**20)


def test_keyboard_alone_on_a_phone_sized_screen(hub):
    """Tab to the profiles, arrows to choose, type a size, Enter: the server starts with that size."""
    with chromium(viewport=(375, 740)) as page:
        page.goto(hub.url("/hub/login"))
        page.fill("#username_input", "bob")
        page.fill("#password_input", PASSWORD)
        page.press("#password_input", "Enter")
        page.wait_for_selector("#profile-item-python")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
        for _ in range(20):
            if page.evaluate("document.activeElement.name") == "profile":
                break
            page.keyboard.press("Tab")
        # Tab lands on the preselected profile (bob's last request, else the default); arrows move between them.
        for _ in range(4):
            if page.evaluate("document.activeElement.value") == "data-science":
                break
            page.keyboard.press("ArrowDown")
        page.keyboard.press("Tab")  # into Data science's memory choices, on the preselected one
        for _ in range(3):
            if page.evaluate("document.activeElement.value") == "unlisted-choice":  # Another size
                break
            page.keyboard.press("ArrowDown")
        page.keyboard.press("Tab")  # the text field it shows
        page.keyboard.type("5")
        screenshot(page, "profiles-picker-phone.png")
        page.keyboard.press("Enter")
        page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    assert unit_property(hub, "jupyter-bob", "MemoryMax") == str(500 * 2**20)


def test_bad_profiles_are_refused_and_the_hub_keeps_serving(hub):
    """A profile with a key KubeSpawner has but this hub cannot honour: reload says which, in one line."""
    good = hub.run("cat /opt/tljh/config/config.yaml").stdout
    bad = good.replace("kubespawner_override: {default_url: /tree}", "kubespawner_override: {image: jupyter/base}")
    assert bad != good
    hub.run("cat > /opt/tljh/config/config.yaml", input=bad)
    try:
        r = hub.run(["tljh-config", "reload", "hub"], check=False)
        said = (r.stdout + r.stderr).strip()
        assert r.returncode != 0
        assert "profiles[2].kubespawner_override.image: not allowed here; allowed keys: cpu_limit, default_url, " \
               "environment, mem_limit, repository, repository_ref, session_installs, user_environment" in said, said
        assert hub.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1/hub/login"]).stdout == "200"
    finally:
        hub.run("cat > /opt/tljh/config/config.yaml", input=good)
