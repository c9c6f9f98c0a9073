"""What the serve tests share: waiting for a job through the API."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient


def wait_done(client: TestClient, job_id: str, timeout: float = 600) -> dict:
    """Poll ``/api/jobs/<id>`` until the job is done or failed; its JSON. Fails after ``timeout`` s."""
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
