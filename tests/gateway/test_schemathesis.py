"""Property-based run of schemathesis against /openapi.json of a real server with the example
app: no 500, every response matches the documented schema, bad input is rejected. Bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import QUICKSTART, TOKENS, start_server

ST = Path(sys.executable).parent / "st"

# positive_data_acceptance is left out on purpose: a schema-valid call can be refused by design
# (an Idempotency-Key reused with another body → 422, a parked call → 424).
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "missing_required_header",
        "ignored_auth",
    ]
)


@pytest.mark.skipif(not ST.exists(), reason="schemathesis is not installed (pip install '.[dev]')")
@pytest.mark.timeout(120)
def test_schemathesis_against_the_example_app(tmp_path: Path) -> None:
    server = start_server(tmp_path, app=QUICKSTART, args=["--no-access-log"])
    try:
        run = subprocess.run(
            [
                str(ST),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKENS['alice']}",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--seed",
                "20261127",
                "--generation-database",
                "none",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=110,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        # Nothing the fuzzer sent made the server log an error.
        assert '"level":"error"' not in server.log.read_text()
    finally:
        server.stop()
