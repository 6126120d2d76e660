"""`ihanoi seed` for health: facilities and the demo resident's record, once, read by the resident's consent."""

from __future__ import annotations

import subprocess

from health import demo
from tests.conftest import IHANOI, ROOT, process_env
from tests.health.support import bearer, facility, fhir_get


async def test_the_demo_record_is_seeded_once_through_the_fhir_transaction(client, conn, settings):
    lines: list[str] = []
    first = await demo.seed(conn, lines.append, settings=settings)
    assert first["facilities"] in (0, len(demo.FACILITIES)) and first["resources"] in (0, 12)
    again = await demo.seed(conn, lines.append, settings=settings)
    assert again == {"facilities": 0, "resources": 0}
    assert "001085012345" not in " ".join(lines)
    # the demo resident shares with a facility, which then finds all of it
    code, his = await facility(client, conn)
    resident = await bearer(client, demo.DEMO_PERSONAL_ID)
    response = await client.post("/v1/health/consents", json={"facility": code, "expires_at": "2099-01-01T00:00:00Z"},
                                 headers=resident)
    assert response.status_code == 400  # longer than a consent may last
    response = await client.post("/v1/health/consents", json={"facility": code, "expires_at": "2027-01-01T00:00:00Z"},
                                 headers=resident)
    assert response.status_code == 201, response.text
    found = await fhir_get(client, his, "Patient",
                           identifier=f"https://ihanoi.hanoi.gov.vn/fhir/sid/bhyt|{demo.DEMO_BHYT}")
    patient_id = found["entry"][0]["resource"]["id"]
    everything = await fhir_get(client, his, f"Patient/{patient_id}/$everything")
    kinds = [e["resource"]["resourceType"] for e in everything["entry"]]
    assert kinds[0] == "Patient" and len(kinds) == 12
    report = next(e["resource"] for e in everything["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert all(r["reference"].startswith("Observation/") for r in report["result"])


def test_facilities_are_added_and_listed_from_the_command_line(database_url, redis_url, tmp_path):
    # DATABASE_URL and REDIS_URL (IHANOI_DATABASE_URL is no setting): the run's servers, not an embedded
    # PostgreSQL started three times under tmp_path
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_DATA_DIR=str(tmp_path),
                      IHANOI_REDIS_PREFIX=f"test:{tmp_path.name[-12:]}:")
    code = f"pk-{tmp_path.name[-8:].lower().replace('_', '-')}"
    added = subprocess.run([*IHANOI, "health", "add-facility", "--code", code, "--name", "Phòng khám Thử",
                            "--kind", "clinic", "--bhyt-code", "01977"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([*IHANOI, "health", "facilities"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert f"{code}\t01977\tclinic\tPhòng khám Thử" in listed.stdout
    again = subprocess.run([*IHANOI, "health", "add-facility", "--code", code, "--name", "x", "--kind", "clinic",
                            "--bhyt-code", "01977"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "exists already" in again.stderr + again.stdout
    checked = subprocess.run([*IHANOI, "health", "verify-log"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0 and "0 broken" in checked.stdout
