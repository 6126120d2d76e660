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
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    assert documented == set(ENV_VARS) | {"TEST_DATABASE_URL", "TEST_REDIS_URL"}


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```", 2)[1].split("\n", 1)[1]
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_package_of_the_catalog_is_installed():
    """The console script only sees packages that pyproject.toml installs (not the working folder)."""
    import tomllib

    from modules.catalog import CATALOG

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for entry in CATALOG:
        package = entry.split(":")[0].split(".")[0]
        assert f"{package}*" in included, f"{package} is in the catalog but not installed by pyproject.toml"
        assert f"COPY {package} ./{package}" in (ROOT / "Dockerfile").read_text()
