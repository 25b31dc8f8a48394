"""An offline BigQuery for the tests: bqemulator (REST + gRPC, DuckDB-backed) as a subprocess.

The emulator lives in its own virtual environment, ``.venv-bqemu/`` (it pins duckdb
1.5.x and sqlglot < 30.12, the project uses newer ones); ``scripts/setup_bqemulator.sh``
creates it. Without it these fixtures FAIL (they do not skip): BigQuery tests are part
of the suite.

``bq_emulator`` (session) starts one server on free loopback ports and kills it at the
end; ``bq_client`` (session) is a ``google.cloud.bigquery.Client`` with anonymous
credentials pointed at it, with the dataset ``DATASET`` created.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emberharmony_assets.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("BQEMU_VENV", ROOT / ".venv-bqemu"))
PROJECT = "test-project"
DATASET = "emberharmony_test"
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Emulator:
    rest_url: str
    grpc_endpoint: str
    project: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        """Everything the server has logged so far (JSON lines, one per request / event)."""
        return self.log_path.read_text(errors="replace")


def _ensure_duckdb_extensions(python: Path) -> None:
    """The emulator LOADs spatial (and avro); install them from the PyPI wheels if this HOME lacks them."""
    home = Path(os.path.expanduser("~"))
    if glob.glob(str(home / ".duckdb/extensions/v*/*/spatial.duckdb_extension")) and glob.glob(
        str(home / ".duckdb/extensions/v*/*/avro.duckdb_extension")
    ):
        return
    code = (
        "import duckdb; from duckdb_extensions import import_extension as i; c = duckdb.connect(); "
        "[i(e, con=c) for e in ('spatial', 'avro')]"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode:
        pytest.fail(
            "could not install DuckDB's spatial extension for bqemulator from its PyPI wheel; "
            f"re-run scripts/setup_bqemulator.sh\n{result.stderr[-2000:]}"
        )


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory) -> Iterator[Emulator]:
    executable = VENV / "bin" / "bqemulator"
    python = VENV / "bin" / "python"
    if not executable.exists() or not python.exists():
        pytest.fail(
            f"the BigQuery emulator is not installed ({executable} missing): "
            "run scripts/setup_bqemulator.sh (creates .venv-bqemu/ with pinned bqemulator)",
            pytrace=False,
        )
    _ensure_duckdb_extensions(python)

    rest_port, grpc_port = free_port(), free_port()
    while grpc_port == rest_port:
        grpc_port = free_port()
    log_path = tmp_path_factory.mktemp("bqemulator") / "server.log"
    log_file = open(log_path, "w")  # noqa: SIM115  # closed at the fixture's teardown
    process = subprocess.Popen(
        [
            str(executable),
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            str(rest_port),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--ephemeral",
            "--project",
            PROJECT,
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rest_url = f"http://127.0.0.1:{rest_port}"
    emulator = Emulator(rest_url, f"127.0.0.1:{grpc_port}", PROJECT, log_path, process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"bqemulator exited with code {process.returncode} during startup:\n{emulator.log()[-4000:]}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(f"{rest_url}/bigquery/v2/projects/{PROJECT}/datasets", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"bqemulator did not answer on {rest_url} within {STARTUP_TIMEOUT_S:.0f}s:\n"
                    f"{emulator.log()[-4000:]}",
                    pytrace=False,
                )
            time.sleep(0.1)
        yield emulator
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log_file.close()


def make_client(emulator: Emulator):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=emulator.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=emulator.rest_url),
    )


@pytest.fixture(scope="session")
def bq_client(bq_emulator):
    """A ``bigquery.Client`` on the emulator, with dataset ``DATASET`` created."""
    client = make_client(bq_emulator)
    client.create_dataset(f"{bq_emulator.project}.{DATASET}", exists_ok=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def bq_dataset(bq_client, bq_emulator) -> str:
    """``"project.dataset"`` of the seeded dataset."""
    return f"{bq_emulator.project}.{DATASET}"
