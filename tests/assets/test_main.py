"""The README's main-job command, end to end in a subprocess (its own partitions and DAGSTER_HOME)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_main_job_makes_demo_data_materialises_everything_and_prints_the_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_HOME"))}
    done = subprocess.run([sys.executable, "-m", "emberharmony_assets.main", "--home", str(tmp_path),
                           "--entities", "24", "--days", "3", "--backend", "numpy"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "demo table sensor_readings" in output and "3,456 rows" in output  # 24 sensors x 48 readings x 3 days
    assert "succeeded" in output
    for stride in (1, 3, 5):
        assert f"windows, stride {stride}:" in output
    assert "asset checks: 5 passed, 0 failed" in output
    assert (tmp_path / "dagster_home").is_dir() and (tmp_path / "artifacts" / "pca_models").is_dir()
