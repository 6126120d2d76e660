"""`ihanoi token`: its stdout is the answer alone, whatever else the command prints on the way."""

from __future__ import annotations

import json
import subprocess

import jwt
import pytest

from tests.conftest import IHANOI, ROOT, process_env

pytestmark = pytest.mark.e2e


def test_token_json_on_the_embedded_default_prints_only_json_on_stdout(tmp_path):
    """The embedded servers' start and stop lines (and anything a child prints) go to stderr."""
    result = subprocess.run([*IHANOI, "--data-dir", str(tmp_path / "data"), "token", "--personal-id",
                             "001085012345", "--level", "1", "--json"],
                            cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert answer["token_type"].lower() == "bearer" and answer["refresh_token"]
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["level"] == 1
    assert "embedded PostgreSQL and Redis ready" in result.stderr and "embedded services stopped" in result.stderr
