"""`ihanoi token`: its stdout is the answer alone, whatever else the command prints on the way."""

from __future__ import annotations

import json
import subprocess

import jwt
import pytest

from tests.conftest import IHANOI, ROOT, process_env

pytestmark = pytest.mark.e2e


def test_token_json_on_the_embedded_default_prints_only_json_on_stdout(embedded_data_dir):
    """The embedded servers' start and stop lines (and anything a child prints) go to stderr."""
    result = subprocess.run([*IHANOI, "--data-dir", str(embedded_data_dir), "token", "--personal-id",
                             "001085012345", "--level", "1", "--json"],
                            cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert answer["token_type"].lower() == "bearer" and answer["refresh_token"]
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["level"] == 1
    assert "embedded PostgreSQL and Redis ready" in result.stderr and "embedded services stopped" in result.stderr


def test_token_json_with_roles_on_given_services_prints_only_json(database_url, redis_url, tmp_path):
    """The command benchmarks/schemathesis_run.sh runs: roles granted first, then the answer alone on stdout."""
    result = subprocess.run([*IHANOI, "token", "--personal-id", "001099077777", "--role", "admin", "--role",
                             "staff:phuong-hoan-kiem", "--level", "2", "--json"],
                            cwd=ROOT, env=process_env(DATABASE_URL=database_url, REDIS_URL=redis_url,
                                                      IHANOI_REDIS_PREFIX=f"cli-{tmp_path.name}:",
                                                      IHANOI_DATA_DIR=str(tmp_path / "data")),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert {"admin", "staff:phuong-hoan-kiem"} <= set(claims["roles"]) and claims["level"] == 2
