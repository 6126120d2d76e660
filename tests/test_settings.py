"""Settings come from the environment, every variable is documented, bad values are named."""

from __future__ import annotations

import re

import pytest

from app.settings import ENV_VARS, SettingsError, load_settings
from tests.conftest import ROOT


def test_defaults_are_the_embedded_dev_setup():
    settings = load_settings({})
    assert settings.embedded and settings.env == "dev"
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8000, ".ihanoi")


def test_values_are_converted():
    settings = load_settings({"IHANOI_PORT": "9000", "IHANOI_REDIS_CLUSTER": "true",
                              "IHANOI_MODULES": "feedback, notifications", "DATABASE_URL": "postgresql://x/y",
                              "REDIS_URL": "redis://x"})
    assert settings.port == 9000 and settings.redis_cluster is True
    assert settings.modules == ("feedback", "notifications")
    assert not settings.embedded


def test_bad_value_names_the_variable():
    with pytest.raises(SettingsError, match="IHANOI_PORT"):
        load_settings({"IHANOI_PORT": "tám nghìn"})
    with pytest.raises(SettingsError, match="IHANOI_ENV"):
        load_settings({"IHANOI_ENV": "staging"})


def test_readme_documents_every_variable():
    """The kernel's and every catalog module's variables, as `ihanoi settings` prints them from the declarations."""
    from app.cli import configuration_markdown
    from modules.catalog import load

    readme = (ROOT / "README.md").read_text()
    assert configuration_markdown() in readme
    declared = set(ENV_VARS) | {var for m in load() if m.settings for var in m.settings.env}
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    assert documented == declared | {"TEST_DATABASE_URL", "TEST_REDIS_URL"}


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1].split("\n", 1)[1]
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_package_of_the_catalog_is_installed():
    """The console script only sees packages that pyproject.toml installs (not the working folder), and the
    image only holds what the Dockerfile copies: both take every package, so a new module needs no edit."""
    import tomllib

    from modules.catalog import CATALOG

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = config["tool"]["setuptools"]["packages"]["find"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for entry in CATALOG:
        package = entry.split(":")[0].split(".")[0]
        assert package not in found.get("exclude", []) and "include" not in found
        assert (ROOT / package / "__init__.py").exists()
    assert "COPY . ." in dockerfile
