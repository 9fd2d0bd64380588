"""Profiles: the schema and checks of config.yaml's `profiles`, choosing from user_options, the picker page.

The hub side is exercised without a hub: users and spawners are small stand-ins with the attributes JupyterHub
gives them (integration-tests/test_profiles.py runs the real thing).
"""

import copy
import logging
import re
import types

import pytest
from tornado import web
from traitlets.config import Config

from tljh.hub import configurer, profiles
from tljh.hub.spawner import UserCreatingSpawner
from tljh.settings import schema
from tljh.settings import profiles as settings_profiles

CONFIG_PROFILES = [
    {"display_name": "Python", "description": "JupyterLab with the course packages.", "default": True},
    {
        "display_name": "Data science",
        "description": "pandas and friends.",
        "spawner_override": {"user_environment": "default", "environment": {"COURSE": "stats", "KEEP": "x"}},
        "profile_options": {
            "memory": {
                "display_name": "Memory",
                "choices": {
                    "small": {"display_name": "1 GB", "spawner_override": {"mem_limit": "1G"}},
                    "large": {
                        "display_name": "4 GB",
                        "description": "Large data frames.",
                        "default": True,
                        "spawner_override": {"mem_limit": "4G", "environment": {"SIZE": "large", "KEEP": None}},
                    },
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Memory in GB (1-8)",
                    "validation_regex": "^[1-8]$",
                    "validation_message": "a whole number from 1 to 8",
                    "spawner_override": {"mem_limit": "{value}G"},
                },
            },
            "cpu": {
                "display_name": "CPU",
                "choices": {"one": {"display_name": "1 core", "spawner_override": {"cpu_limit": 1}}},
            },
        },
    },
    {"display_name": "Classic Notebook", "kubespawner_override": {"default_url": "/tree"}},
    {"display_name": "Staff only", "allowed_groups": ["teachers"], "spawner_override": {"cpu_limit": 2}},
]


def effective():
    return schema.effective_config({"profiles": CONFIG_PROFILES})["profiles"]


def problems(profile_list, **extra):
    return [str(p) for p in schema.errors_only(schema.validate_config({"profiles": profile_list, **extra}))]


def choose(user_options, groups=(), admin=False):
    return profiles.choose(effective(), user_options, set(groups), admin)


# ------------------------------------------------------------------------------------------- config


def test_valid_profiles_have_no_problems_and_kubespawner_dict_form_is_accepted():
    assert problems(CONFIG_PROFILES) == []
    as_dict = {p["display_name"]: p for p in CONFIG_PROFILES}
    assert problems(as_dict) == []
    assert [p["slug"] for p in schema.effective_config({"profiles": as_dict})["profiles"]] == [
        p["slug"] for p in effective()
    ]


def test_effective_profiles_make_kubespawner_defaults_explicit():
    ps = effective()
    assert [p["slug"] for p in ps] == ["python", "data-science", "classic-notebook", "staff-only"]
    assert [p["default"] for p in ps] == [True, False, False, False]
    assert ps[2]["spawner_override"] == {"default_url": "/tree"} and "kubespawner_override" not in ps[2]
    options = ps[1]["profile_options"]
    assert options["memory"]["choices"]["large"]["default"] and not options["memory"]["choices"]["small"]["default"]
    assert options["cpu"]["choices"]["one"]["default"]  # the first choice when none is marked
    assert options["cpu"]["unlisted_choice"] == {"enabled": False, "display_name_in_choices": "Other...",
                                                 "spawner_override": {}}
    assert settings_profiles.effective_profiles(ps) == ps  # idempotent
    no_default = settings_profiles.effective_profiles([{"display_name": "A"}, {"display_name": "B"}])
    assert [p["default"] for p in no_default] == [True, False]


def test_slugs_are_made_as_kubespawner_makes_them():
    assert settings_profiles.slugify("Python 3 (Data science) — Ünïcode") == "python-3-data-science-unicode"


@pytest.mark.parametrize(
    "profile_list, expected",
    [
        ([{"description": "x"}], "profiles[0]: 'display_name' is a required property"),
        ([{"display_name": "A", "spawner_override": {"image": "jupyter/base"}}],
         "profiles[0].spawner_override.image: not allowed here; allowed keys: cpu_limit, default_url, environment, "
         "mem_limit, repository, repository_ref, session_installs, user_environment"),
        ([{"display_name": "A", "kubespawner_override": {"node_selector": {}}}],
         "profiles[0].kubespawner_override.node_selector: not allowed here; allowed keys:"),
        ([{"display_name": "A"}, {"display_name": "a"}], "profiles[1]: slug 'a' is also profiles[0]'s; slugs must be unique"),
        ([{"display_name": "A", "default": True}, {"display_name": "B", "default": True}],
         "profiles: profiles[0], profiles[1] are all default; one at most"),
        ([{"display_name": "A", "profile_options": {"m": {"choices": {"x": {"default": True}, "y": {"default": True}}}}}],
         "profiles[0].profile_options.m: choices x, y are all default; one at most"),
        ([{"display_name": "A", "profile_options": {"m": {"display_name": "M"}}}],
         "profiles[0].profile_options.m: has no choices: give choices or enable unlisted_choice"),
        ([{"display_name": "A", "spawner_override": {"user_environment": "r"}}],
         "profiles[0].spawner_override.user_environment: no environment 'r'; environments: default"),
        ([{"display_name": "A", "spawner_override": {"mem_limit": 4096}}],
         "profiles[0].spawner_override.mem_limit: a bare number is bytes here (as in KubeSpawner): write 4096M"),
        ([{"display_name": "A", "spawner_override": {"mem_limit": "4 gigs"}}],
         "profiles[0].spawner_override.mem_limit: expected a memory size like 512M or 2G"),
        ([{"display_name": "A", "spawner_override": {"cpu_limit": 0}}],
         "profiles[0].spawner_override.cpu_limit: expected a number of cores above 0, got 0"),
        ([{"display_name": "A", "spawner_override": {"default_url": "lab"}}],
         "profiles[0].spawner_override.default_url: expected a URL path starting with /, got 'lab'"),
        ([{"display_name": "A", "spawner_override": {"environment": {"JUPYTERHUB_API_TOKEN": "x"}}}],
         "profiles[0].spawner_override.environment: 'JUPYTERHUB_API_TOKEN' is not an environment variable name you"),
        ([{"display_name": "A", "spawner_override": {}, "kubespawner_override": {}}],
         "profiles[0]: give spawner_override or kubespawner_override, not both"),
        ([{"display_name": "A", "slug": "a--b"}], "profiles[0].slug: expected a name of letters, digits"),
        ([{"display_name": "!!!"}], "profiles[0]: cannot make a slug from display_name '!!!': give it a slug"),
        ([{"display_name": "A", "profile_options": {"m": {"unlisted_choice": {"enabled": True,
                                                                             "validation_regex": "(["}}}}],
         "profiles[0].profile_options.m.unlisted_choice.validation_regex: not a regular expression"),
        ([{"display_name": "A", "profile_options": {"m": {"choices": {"x": {"spawner_override": {"mem_limit": "1X"}}}}}}],
         "profiles[0].profile_options.m.choices.x.spawner_override.mem_limit: expected a memory size"),
        ([{"display_name": "A", "allowed_groups": "teachers"}], "profiles[0].allowed_groups: expected"),
    ],
)
def test_bad_profiles_are_refused_with_one_line_naming_the_fix(profile_list, expected):
    found = problems(profile_list)
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


def test_unlisted_override_values_are_checked_once_typed_text_is_in():
    typed = {"enabled": True, "spawner_override": {"mem_limit": "{value}G", "user_environment": "{value}"}}
    assert problems([{"display_name": "A", "profile_options": {"m": {"unlisted_choice": typed}}}]) == []


def test_named_server_keys():
    c = Config()
    configurer.apply_config({"allow_named_servers": True, "named_server_limit_per_user": 3}, c)
    assert c.JupyterHub.allow_named_servers is True and c.JupyterHub.named_server_limit_per_user == 3
    assert problems([], named_server_limit_per_user=-1) == [
        "named_server_limit_per_user: must be at least 0, got -1"]


def test_configurer_hands_effective_profiles_to_the_spawner():
    c = Config()
    configurer.apply_config({"profiles": CONFIG_PROFILES}, c)
    assert c.UserCreatingSpawner.profiles == effective()
    c = Config()
    configurer.apply_config({}, c)
    assert c.UserCreatingSpawner.profiles == [] and c.JupyterHub.allow_named_servers is False


def test_an_unknown_override_key_is_skipped_by_the_hub_not_fatal(caplog):
    c = Config()
    with caplog.at_level(logging.WARNING):
        configurer.apply_config({"profiles": [{"display_name": "A", "kubespawner_override": {"image": "x"}}]}, c)
    assert c.UserCreatingSpawner.profiles[0]["spawner_override"] == {}
    assert "not allowed here" in caplog.text


def test_override_registry_matches_the_schema():
    assert set(profiles.APPLIERS) == set(settings_profiles.override_schemas())


# ------------------------------------------------------------------------------------------- choosing


def test_no_profile_means_the_default_profile_with_default_choices():
    assert choose({}).profile["slug"] == "python"
    chosen = choose({"profile": "data-science"})
    # profile first, then each option in order; environment merged, None removes
    assert chosen.overrides == {"user_environment": "default", "environment": {"COURSE": "stats", "SIZE": "large",
                                                                               "KEEP": None},
                                "mem_limit": "4G", "cpu_limit": 1}


def test_typed_value_is_checked_whole_then_substituted():
    chosen = choose({"profile": "data-science", "memory": "unlisted-choice", "memory--unlisted-choice": " 3 "})
    assert chosen.overrides["mem_limit"] == "3G"
    # fancy-profiles posts its own marker value with the text
    assert choose({"profile": "data-science", "memory": "unlisted_choice",
                   "memory--unlisted-choice": "5"}).overrides["mem_limit"] == "5G"


@pytest.mark.parametrize(
    "user_options, status, reason",
    [
        ({"profile": "gpu"}, 400, "There is no profile 'gpu'; yours: python, data-science, classic-notebook"),
        ({"profile": "staff-only"}, 403, "Profile 'staff-only' is only for members of teachers"),
        ({"profile": "data-science", "memory": "huge"}, 400, "Memory: 'huge' is not offered; choices: small, large"),
        ({"profile": "data-science", "memory--unlisted-choice": "12"}, 400,
         "Memory: '12' is not accepted (a whole number from 1 to 8)"),
        ({"profile": "data-science", "memory--unlisted-choice": "1\n"}, 200, ""),
        ({"profile": "data-science", "memory": "unlisted-choice"}, 400, "Memory: '' is not accepted"),
        ({"profile": "data-science", "cpu": "unlisted-choice"}, 400, "CPU: this option takes one of: one"),
        ({"profile": "data-science", "mem": "small"}, 400,
         "Profile 'data-science' has no option 'mem'; its options: memory, cpu"),
        ({"profile": "python", "memory": "small"}, 400, "Profile 'python' has no option 'memory'; its options: none"),
        ({"profile": ["python"]}, 400, "user_options must map names to strings"),
    ],
)
def test_refusals_say_why_with_the_right_status(user_options, status, reason):
    if status == 200:
        choose(user_options)
        return
    with pytest.raises(web.HTTPError) as e:
        choose(user_options)
    assert e.value.status_code == status
    assert (e.value.log_message % ()).startswith(reason), e.value.log_message


def test_a_typed_value_cannot_smuggle_a_bad_override():
    ps = settings_profiles.effective_profiles([{"display_name": "A", "profile_options": {"m": {
        "unlisted_choice": {"enabled": True, "spawner_override": {"mem_limit": "{value}"}}}}}])
    with pytest.raises(web.HTTPError) as e:
        profiles.choose(ps, {"profile": "a", "m--unlisted-choice": "all of it"}, set(), False)
    assert "expected a memory size" in e.value.log_message


def test_groups_and_admins():
    assert choose({"profile": "staff-only"}, groups=["teachers"]).overrides == {"cpu_limit": 2}
    assert choose({"profile": "staff-only"}, admin=True).profile["slug"] == "staff-only"
    only_teachers = settings_profiles.effective_profiles([{"display_name": "S", "allowed_groups": ["teachers"]}])
    with pytest.raises(web.HTTPError) as e:
        profiles.choose(only_teachers, {}, set(), False)
    assert e.value.status_code == 403 and "No profile is open to you" in e.value.log_message
    user = types.SimpleNamespace(name="carol", groups=[types.SimpleNamespace(name="lab")])
    assert profiles.groups_of(user, {"teachers": ["carol"], "other": ["dan"]}) == {"lab", "teachers"}


# ------------------------------------------------------------------------------------------- applying


def spawner(**kw):
    s = types.SimpleNamespace(mem_limit=None, cpu_limit=None, default_url="/lab", environment={"A": "1"},
                              user_environment="default", session_installs=True, repository="", repository_ref="")
    s.__dict__.update(kw)
    return s


def test_apply_sets_values_and_starts_from_the_configured_ones_each_time():
    s = spawner()
    profiles.apply(s, {"mem_limit": "4G", "cpu_limit": 1, "environment": {"B": 2, "C": True, "A": None}})
    assert (s.mem_limit, s.cpu_limit, s.environment) == (4 * 2**30, 1.0, {"B": "2", "C": "true"})
    profiles.apply(s, {"default_url": "/tree", "user_environment": "data", "session_installs": False})
    assert (s.mem_limit, s.cpu_limit, s.environment) == (None, None, {"A": "1"})
    assert (s.default_url, s.user_environment, s.session_installs) == ("/tree", "data", False)
    profiles.apply(s, {})
    assert s.session_installs is True


class FakeUser:
    def __init__(self, name, admin=False, groups=()):
        self.name, self.admin, self.id = name, admin, 1
        self.groups = [types.SimpleNamespace(name=g) for g in groups]


def real_spawner(user, **config):
    c = Config()
    configurer.apply_config({"profiles": CONFIG_PROFILES, "users": {"extra_user_groups": {"teachers": ["carol"]}}}, c)
    for k, v in config.items():
        c.UserCreatingSpawner[k] = v
    return UserCreatingSpawner(config=c, user=user)


@pytest.mark.asyncio
async def test_spawner_hooks_default_to_the_picker_only_with_profiles():
    alice = FakeUser("alice")
    s = real_spawner(alice)
    assert s.options_form is profiles.options_form
    html = s.options_form(s)
    assert re.findall(r'name="profile" id="profile-item-([^"]+)"', html) == ["python", "data-science",
                                                                           "classic-notebook"]
    carol_form = s.options_form(real_spawner(FakeUser("carol")))
    assert "profile-item-staff-only" in carol_form  # via users.extra_user_groups
    form = {"profile": ["data-science"], "profile-option-data-science--memory": ["small"],
            "profile-option-classic-notebook--x": ["ignored: another profile's field"]}
    assert s.run_options_from_form(form) == {"profile": "data-science", "memory": "small"}
    with pytest.raises(web.HTTPError) as e:
        s.run_options_from_form({"profile": ["staff-only"]})
    assert e.value.status_code == 403
    await s._run_apply_user_options({"profile": "data-science", "memory": "small"})
    assert s.mem_limit == 2**30 and s.environment["COURSE"] == "stats" and s.cpu_limit == 1.0

    plain = UserCreatingSpawner(config=Config(), user=alice)
    assert plain.options_form == "" and plain.run_options_from_form({"a": ["b"]}) == {"a": ["b"]}


# ------------------------------------------------------------------------------------------- the picker


def test_picker_preselects_default_or_last_choice_and_escapes():
    mine = profiles.visible(effective(), set(), False)
    html = profiles.render_picker(mine, {})
    assert re.search(r'id="profile-item-python" value="python"\s+checked', html)
    assert re.search(r'id="profile-option-data-science--memory-large" value="large"\s+checked', html)
    html = profiles.render_picker(mine, {"profile": "data-science", "memory--unlisted-choice": "5", "cpu": "gone"})
    assert re.search(r'id="profile-item-data-science" value="data-science"\s+checked', html)
    assert re.search(r'value="unlisted-choice"\s+checked', html) and 'value="5"' in html
    assert re.search(r'id="profile-option-data-science--cpu-one" value="one"\s+checked', html)
    evil = settings_profiles.effective_profiles([{"display_name": "<script>x</script>", "slug": "x"},
                                                 {"display_name": "B"}])
    assert "<script>x</script>" not in profiles.render_picker(evil, {})


def test_picker_field_names_are_what_options_from_form_reads():
    html = profiles.render_picker(profiles.visible(effective(), set(), True), {})
    names = set(re.findall(r'name="([^"]+)"', html))
    assert names == {"profile", "profile-option-data-science--memory", "profile-option-data-science--cpu",
                     "profile-option-data-science--memory--unlisted-choice"}


def test_one_profile_without_options_starts_at_once():
    one = settings_profiles.effective_profiles([{"display_name": "Only"}])
    assert not profiles.needs_picker(one)
    assert profiles.needs_picker(effective())


def test_picker_has_no_urls_of_its_own_so_any_base_url_works():
    html = profiles.render_picker(profiles.visible(effective(), set(), True), {})
    assert not re.search(r"(href|src|action)=|/hub/", html)
