"""`dagster dev` on workspace.yaml serves the graph: a real webserver, asked over GraphQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import default_signals, free_port

ROOT = Path(__file__).resolve().parents[2]
QUERY = """{ assetNodes { assetKey { path } isPartitioned hasAssetChecks } }"""


def test_dagster_dev_loads_the_workspace_and_lists_the_assets(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "EMBERHARMONY_HOME": str(tmp_path / "data")}
    dagster = Path(sys.executable).parent / "dagster"
    process = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=default_signals,
    )
    try:
        deadline, nodes, last_error = time.monotonic() + 120, None, None
        while time.monotonic() < deadline and nodes is None:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps({"query": QUERY}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    payload = json.loads(response.read())
                nodes = payload["data"]["assetNodes"] or None  # empty while the code location loads
            except Exception as error:  # server still starting
                last_error = error
            if nodes is None:
                time.sleep(1)
        assert nodes, f"webserver never listed assets: {last_error}"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"raw_chunk", "split_data", "cyclical_features", "stride_windows", "pca_models"} <= set(by_key)
        assert by_key["stride_windows"]["isPartitioned"] and not by_key["pca_models"]["isPartitioned"]
        assert by_key["pca_models"]["hasAssetChecks"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # never leave a webserver behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
