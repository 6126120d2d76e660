"""Fixtures of the feedback tests: two residents, a clerk of the ward and one of another ward."""

from __future__ import annotations

import pytest_asyncio

from tests.feedback.support import CLERK, OTHER_CLERK, OTHER_WARD, RESIDENT_A, RESIDENT_B, WARD, bearer, grant


@pytest_asyncio.fixture
async def people(client, conn):
    await grant(client, conn, CLERK, "staff", WARD)
    await grant(client, conn, OTHER_CLERK, "staff", OTHER_WARD)
    return {
        "a": await bearer(client, RESIDENT_A), "b": await bearer(client, RESIDENT_B),
        "clerk": await bearer(client, CLERK), "other_clerk": await bearer(client, OTHER_CLERK),
    }
