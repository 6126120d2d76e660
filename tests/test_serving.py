"""What a serving process does once its start-up is over."""

from __future__ import annotations

import gc
import logging
import uuid

from app.asgi import create_app_from_env
from tests.conftest import MASTER_KEY, running


async def test_a_serving_process_freezes_what_start_up_built(databases, redis_url, monkeypatch):
    """Start-up's objects are out of the cyclic collector's reach while the app serves, so that a full collection
    no longer walks all of them with the event loop stopped (the /healthz p99 of issue 15)."""
    database_url = await databases.create("serving")  # the lifespan stores a signing key: not in the shared one
    for name, value in {"IHANOI_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                        "IHANOI_MASTER_KEY": MASTER_KEY, "IHANOI_LOG_LEVEL": "WARNING",
                        "IHANOI_REDIS_PREFIX": f"test:{uuid.uuid4().hex[:8]}:"}.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the factory configures logging for its process
    try:
        app = create_app_from_env()
        assert gc.get_freeze_count() == 0
        async with running(app):
            frozen = gc.get_freeze_count()
        assert frozen > 50_000, frozen  # modules, routes, schemas, settings: all of start-up
    finally:
        gc.unfreeze()  # this test process goes on making and dropping apps
        root.handlers[:] = handlers
        root.setLevel(level)
