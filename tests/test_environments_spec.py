"""What an environment is made of, and when it needs a new build."""

import dataclasses

import pytest
from environments_testing import prefix, uv_cache  # noqa: F401

from tljh.environments import spec as specs_module
from tljh.settings.environments import environment_names, name_problem
from tljh.system import paths


def test_default_is_always_an_environment():
    assert environment_names({}) == ["default"]
    assert environment_names({"environments": {"zeta": {}, "data": None, "default": {}}}) == ["default", "data", "zeta"]


@pytest.mark.parametrize("name", ["Data", "1data", "python3", "ir", "a" * 33, "da.ta", ""])
def test_names_that_cannot_be_environments(name):
    assert name_problem(name)


@pytest.mark.parametrize("name", ["data", "r-course", "py_311", "a" * 32])
def test_names_that_can(name):
    assert name_problem(name) is None


def test_every_environment_gets_what_a_server_needs_at_the_hubs_version(prefix):
    spec = specs_module.specs({"environments": {"data": {"packages": ["pandas"]}}})["data"]
    hub = specs_module.hub_version()
    assert f"jupyterhub=={hub}" in spec.requirements()
    assert {"pip", "ipykernel>=6.29"} <= set(spec.requirements())
    assert spec.requirements()[-1] == "pandas"


def test_plugin_packages_go_into_every_environment(prefix):
    class Hook:
        def tljh_extra_user_pip_packages(self):
            return [["nbgitpuller-extra"]]

    class PM:
        hook = Hook()

    for spec in specs_module.specs({"environments": {"data": {}}}, PM()).values():
        assert "nbgitpuller-extra" in spec.requirements()


def test_fingerprint_follows_what_is_built_and_nothing_else(prefix):
    base = specs_module.specs({"environments": {"data": {"packages": ["six"]}}})["data"]
    fp = base.fingerprint("3.11")
    assert dataclasses.replace(base, description="new words").fingerprint("3.11") == fp
    assert dataclasses.replace(base, offer_kernel=False).fingerprint("3.11") == fp
    assert dataclasses.replace(base, packages=("six", "idna")).fingerprint("3.11") != fp
    assert dataclasses.replace(base, apt=("libxml2",)).fingerprint("3.11") != fp
    assert dataclasses.replace(base, r=True).fingerprint("3.11") != fp
    assert base.fingerprint("3.12") != fp
    assert dataclasses.replace(base, server_packages=("jupyterhub==0",)).fingerprint("3.11") != fp


def test_requirements_files_and_their_includes_are_read_and_fingerprinted(prefix, tmp_path):
    (tmp_path / "base.txt").write_text("six\n")
    (tmp_path / "course.txt").write_text("-r base.txt\nidna  # comment\n")
    config = {"environments": {"data": {"requirements": str(tmp_path / "course.txt")}}}
    spec = specs_module.specs(config)["data"]
    assert [p for p, _ in spec.requirements_files] == [str(tmp_path / "course.txt"), str(tmp_path / "base.txt")]
    assert spec.top_requirement_files() == [str(tmp_path / "course.txt")]
    fp = spec.fingerprint("3.11")
    (tmp_path / "base.txt").write_text("six==1.16\n")
    assert specs_module.specs(config)["data"].fingerprint("3.11") != fp


def test_an_unreadable_requirements_file_is_an_error_naming_it(prefix, tmp_path):
    with pytest.raises(OSError) as e:
        specs_module.specs({"environments": {"data": {"requirements": str(tmp_path / "missing.txt")}}})
    assert "missing.txt" in str(e.value)


def test_bootstrap_requirements_stay_part_of_the_default_environment(prefix):
    import os

    os.makedirs(paths.ENVIRONMENT_STATE_DIR)
    with open(paths.BOOTSTRAP_REQUIREMENTS_FILE, "w") as f:
        f.write("pyfiglet\n")
    specs = specs_module.specs({"environments": {"data": {}}})
    assert specs["default"].top_requirement_files() == [paths.BOOTSTRAP_REQUIREMENTS_FILE]
    assert specs["data"].requirements_files == ()


def test_r_asks_for_r_and_its_kernel_from_the_os(prefix):
    spec = specs_module.specs({"environments": {"stats": {"r": True, "apt": ["libxml2-dev"]}}})["stats"]
    assert spec.os_packages() == ["libxml2-dev", "r-base", "r-cran-irkernel"]


@pytest.mark.parametrize(
    "environments, message",
    [
        ({"Data": {}}, "environments.Data: 'Data' is not an environment name"),
        ({"python3": {}}, "environments.python3: 'python3' is not an environment name"),
        ({"data": {"packages": ["pandas>>2"]}}, "'pandas>>2' is not a pip requirement"),
        ({"data": {"python": "3"}}, "expected a Python version such as 3.12, got '3'"),
        ({"data": {"apt": ["Bad Name"]}}, "expected a Debian package name, got 'Bad Name'"),
        ({"data": {"requirements": "relative.txt"}}, "expected an absolute path to a requirements file"),
        ({"data": {"pakages": ["six"]}}, "environments.data.pakages: unknown key (did you mean packages?)"),
    ],
)
def test_the_schema_refuses_bad_entries_in_one_line(environments, message):
    from tljh.settings import schema

    problems = [str(p) for p in schema.errors_only(schema.validate_config({"environments": environments}))]
    assert any(message in p for p in problems), problems


def test_a_valid_entry_passes_and_keys_can_be_looked_up():
    from tljh.settings import schema

    entry = {"description": "d", "packages": ["pandas>=2", "./local", "git+https://example.org/x.git"],
             "requirements": "/srv/r.txt", "apt": ["r-cran-ggplot2"], "python": "3.12", "r": True, "offer_kernel": False}
    assert schema.errors_only(schema.validate_config({"environments": {"data": entry, "default": {}}})) == []
    assert schema.lookup_key("environments.data.packages").is_list
    assert schema.effective_config({})["environments"] == {}
