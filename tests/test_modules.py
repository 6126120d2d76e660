"""The module contract and the home screen's module list."""

from __future__ import annotations

import pytest

from app.settings import load_settings
from modules import Module, Title, catalog
from tests.conftest import TEST_MODULES
from tests.fixture_module import module as fixture_module


async def test_home_screen_lists_modules_in_catalog_order(client):
    response = await client.get("/v1/modules")
    assert response.status_code == 200
    listed = response.json()["modules"]
    # a module residents never open (the staff console) is no tile on their home screen
    assert [m["name"] for m in listed] == [*(m.name for m in catalog.load() if m.home_screen), "fixture", "second"]
    assert "console" not in [m["name"] for m in listed]
    assert listed[-2:] == [
        {"name": "fixture", "title": {"vi": "Thử nghiệm", "en": "Fixture"}, "icon": "flask",
         "min_identity_level": 1, "enabled": True},
        {"name": "second", "title": {"vi": "Mô-đun thứ hai", "en": "Second module"}, "icon": "star",
         "min_identity_level": 2, "enabled": True},
    ]
    for entry, module in zip(listed, [m for m in TEST_MODULES if m.home_screen], strict=True):
        assert entry["title"] == {"vi": module.title.vi, "en": module.title.en}
    assert "max-age" in response.headers["cache-control"]


async def test_configured_order_and_disabled_module(make_client, settings):
    import msgspec

    configured = msgspec.structs.replace(settings, modules=("second",), modules_disabled=("fixture",))
    async with make_client(configured) as client:
        listed = (await client.get("/v1/modules")).json()["modules"]
        assert [(m["name"], m["enabled"]) for m in listed] == [
            ("second", True), *((m.name, True) for m in catalog.load() if m.home_screen), ("fixture", False)]
        # a disabled module's routes are not mounted
        assert (await client.get("/v1/fixture/items/1")).status_code == 404
        assert (await client.get("/v1/second/hello")).json() == {"xin_chao": "Xin chào"}


async def test_without_modules_the_list_is_empty(make_client):
    async with make_client(modules=[]) as client:
        assert (await client.get("/v1/modules")).json() == {"modules": []}


def test_the_shipped_catalog_loads():
    # Only modules with real endpoints are registered; each entry must load as a Module.
    loaded = catalog.load()
    assert all(isinstance(m, Module) for m in loaded)
    assert len(loaded) == len(catalog.CATALOG)


def test_unknown_configured_module_is_refused():
    with pytest.raises(catalog.CatalogError, match="unknown modules: weather_radar"):
        catalog.arrange(TEST_MODULES, ["weather_radar"])


def test_extra_modules_are_loaded_from_settings():
    from app.asgi import resolve_modules

    settings = load_settings({"IHANOI_EXTRA_MODULES": "tests.fixture_module:second"})
    assert [m.name for m in resolve_modules(settings)] == [*(m.name for m in catalog.load()), "second"]
    with pytest.raises(catalog.CatalogError, match="not a modules.Module"):
        catalog.load(["tests.conftest:ROOT"])
    with pytest.raises(catalog.CatalogError, match="duplicate module names"):
        catalog.load(["tests.fixture_module:second", "tests.fixture_module:second"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"routers": ()}, "has no routers"),
        ({"name": "Bad Name"}, "lower_snake"),
        ({"min_identity_level": 3}, "min_identity_level"),
        ({"migrations": "/nonexistent"}, "does not exist"),
    ],
)
def test_contract_refuses_placeholders_and_bad_fields(kwargs, message):
    from pathlib import Path

    fields = {"name": "transit", "title": Title("Giao thông", "Transit"), "icon": "bus",
              "routers": fixture_module.routers}
    fields.update(kwargs)
    if isinstance(fields.get("migrations"), str):
        fields["migrations"] = Path(fields["migrations"])
    with pytest.raises(ValueError, match=message):
        Module(**fields)
