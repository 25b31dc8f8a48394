"""The main-job command (``make demo``), end to end in a subprocess (its own data folder, partitions and
DAGSTER_HOME): the short report it prints, the named run it leaves in the instance, and the same
instance shared with docs/ui.md's ``dagster`` CLI backfill."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emberharmony_assets import main as main_module
from emberharmony_assets.summary import _Progress

ROOT = Path(__file__).resolve().parents[2]
START, DAYS, ENTITIES = "2026-01-01", 3, 4  # 4 sensors x 48 readings x 3 days = 576 rows, all in the past
NOISE = (
    "DEBUG",
    "BetaWarning",
    "PreviewWarning",
    "SupersessionWarning",
    "No dagster instance configuration file",
    "Welcome to Dagster",
    "Telemetry:",
    "__ephemeral_asset_job__",
)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_HOME"))}


def run_main(home: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "emberharmony_assets.main",
            "--home",
            str(home),
            "--entities",
            str(ENTITIES),
            "--days",
            str(DAYS),
            "--start",
            START,
            "--backend",
            "numpy",
            *extra,
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("main_home")
    done = run_main(home)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return SimpleNamespace(home=home, output=output, lines=output.splitlines())


def test_the_report_is_short_and_says_what_ran(demo_run):
    out, home = demo_run.output, demo_run.home
    assert len(demo_run.lines) <= 40, out
    assert f"demo table sensor_readings in {home / 'demo.duckdb'}: 576 rows" in out
    assert re.search(
        r"^full_refresh_job: 12 assets and 5 checks in 7 steps over 3 daily partitions "
        r"\(2026-01-01 \.\. 2026-01-03\) in one run, backend numpy$",
        out,
        re.M,
    ), out
    steps = [
        "ingest",
        "preprocessor",
        "features_and_tails",
        "window_carry",
        "windows_and_stats",
        "pca_models",
        "projected_windows",
    ]
    for i, step in enumerate(steps, 1):
        assert re.search(rf"^  \[{i}/7\] {step}\b.*: [0-9,]+ materialisations?, [0-9.]+ s$", out, re.M), out
    match = re.search(
        r"^run ([0-9a-f]{8}): succeeded in [0-9.]+ s .*job full_refresh_job, partitions 2026-01-01 \.\. "
        r"2026-01-03",
        out,
        re.M,
    )
    assert match, out
    rows = re.search(r"^rows: 576 \(train ([0-9,]+), validation ([0-9,]+), test ([0-9,]+)\)$", out, re.M)
    assert rows and sum(int(n.replace(",", "")) for n in rows.groups()) == 576, out
    assert re.search(r"^windows: stride 1 [0-9,]+, stride 3 [0-9,]+, stride 5 [0-9,]+$", out, re.M), out
    for stride in (1, 3, 5):
        assert re.search(
            rf"^  stride {stride}: 0\.[0-9]{{4}} at k = [0-9]+ of [0-9]+ features \([0-9,]+ train windows", out, re.M
        ), out
    assert "asset checks: 5 passed, 0 failed" in out
    assert f"artifacts: {home / 'artifacts'} (" in out
    assert f"Dagster instance (DAGSTER_HOME): {home / 'dagster_home'}" in out
    assert re.search(r"^open the UI: .*\bmake ui$", out, re.M), out
    assert f"DAGSTER_HOME={home / 'dagster_home'}" in out  # not the default home: the command says which
    assert f"/runs/{match.group(1)}" in out


def test_no_debug_events_warnings_or_banners_and_telemetry_left_to_the_user(demo_run):
    for noise in NOISE:
        assert noise not in demo_run.output, (noise, demo_run.output)
    config = (demo_run.home / "dagster_home" / "dagster.yaml").read_text()
    assert re.search(r"^telemetry:\n  enabled: true$", config, re.M), config  # Dagster's default, stated
    assert "telemetry.enabled: false" in demo_run.output  # one line saying where to turn it off


def test_the_run_is_in_the_instance_under_the_named_job(demo_run):
    with DagsterInstance.from_config(str(demo_run.home / "dagster_home")) as instance:
        printed = re.search(r"^run ([0-9a-f]{8}): ", demo_run.output, re.M).group(1)
        (run,) = [r for r in instance.get_runs() if r.run_id.startswith(printed)]
        assert run.tags.get("emberharmony/launched_by") == "emberharmony_assets.main"
        assert run.job_name == "full_refresh_job" and run.status == DagsterRunStatus.SUCCESS
        assert run.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-01-01"
        assert run.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-01-03"
        assert instance.get_latest_materialization_event(AssetKey("pca_models")).run_id == run.run_id


def test_the_readme_cli_backfill_writes_into_the_same_instance(demo_run):
    env = {
        **clean_env(),
        "DAGSTER_HOME": str(demo_run.home / "dagster_home"),
        "EMBERHARMONY_HOME": str(demo_run.home),
        "EMBERHARMONY_PARTITION_START": START,
        "EMBERHARMONY_PARTITION_END": "2026-01-04",
        "EMBERHARMONY_BACKEND": "numpy",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "emberharmony_assets.definitions",
            "--select",
            "raw_chunk,split_data,cyclical_features,preprocess_stats",
            "--partition-range",
            "2026-01-02...2026-01-03",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    with DagsterInstance.from_config(str(demo_run.home / "dagster_home")) as instance:
        jobs = [r.job_name for r in instance.get_runs()]
        assert "full_refresh_job" in jobs and len(jobs) >= 2, jobs
        latest = instance.get_runs(limit=1)[0]
        assert latest.status == DagsterRunStatus.SUCCESS
        assert latest.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-01-02"


def test_a_second_run_keeps_the_users_dagster_yaml_and_verbose_prints_the_event_stream(demo_run):
    config = demo_run.home / "dagster_home" / "dagster.yaml"
    config.write_text("telemetry:\n  enabled: false\n")  # the user's choice
    done = run_main(demo_run.home, "--verbose")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert config.read_text() == "telemetry:\n  enabled: false\n"
    assert f"wrote {config}" not in output and "Welcome to Dagster" not in output
    assert "DEBUG" in output and "STEP_START" in output  # Dagster's whole event stream
    assert "asset checks: 5 passed, 0 failed" in output


# the pieces, without a subprocess
def test_home_rules_and_ui_command(tmp_path, monkeypatch):
    repo = str(ROOT)
    monkeypatch.delenv("EMBERHARMONY_HOME", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(ROOT)
    args = SimpleNamespace(home=None)
    assert main_module.homes(args) == (f"{repo}/data", f"{repo}/data/dagster_home")  # what `make` exports
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main_module.homes(args) == (f"{repo}/data", str(tmp_path / "dh"))
    assert main_module.homes(SimpleNamespace(home=str(tmp_path))) == (str(tmp_path), str(tmp_path / "dagster_home"))
    assert main_module.ui_command(f"{repo}/data", f"{repo}/data/dagster_home", "2026-01-01", 90) == "make ui"
    command = main_module.ui_command(str(tmp_path), str(tmp_path / "dagster_home"), "2025-06-01", 3)
    assert command == (
        f"EMBERHARMONY_HOME={tmp_path} DAGSTER_HOME={tmp_path / 'dagster_home'} "
        "EMBERHARMONY_PARTITION_START=2025-06-01 EMBERHARMONY_PARTITION_END=2025-06-04 make ui"
    )


def test_dagster_yaml_is_written_once_and_never_rewritten(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    note = main_module.ensure_dagster_yaml(str(tmp_path))
    assert (tmp_path / ".telemetry" / "id.yaml").is_file()  # Dagster's own id, made without its banner
    assert capfd.readouterr().err == ""
    assert note and "telemetry.enabled: false" in note and str(tmp_path / "dagster.yaml") in note
    assert "enabled: true" in (tmp_path / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text("")
    assert main_module.ensure_dagster_yaml(str(tmp_path)) is None
    assert (tmp_path / "dagster.yaml").read_text() == ""


def test_run_config_is_quiet_unless_verbose():
    assert main_module.run_config()["loggers"]["console"]["config"]["log_level"] == "WARNING"
    assert main_module.run_config(True)["loggers"]["console"]["config"]["log_level"] == "DEBUG"
    assert "progress" in main_module.run_config()["loggers"]


def test_progress_prints_one_line_per_finished_step():
    def record(kind, step, duration_ms=None):
        event = SimpleNamespace(
            event_type_value=kind, step_key=step, event_specific_data=SimpleNamespace(duration_ms=duration_ms)
        )
        item = logging.LogRecord("dagster", logging.DEBUG, __file__, 0, "", (), None)
        item.dagster_event = event
        return item

    stream = io.StringIO()
    progress = _Progress({"ingest": ["raw_chunk", "split_data"], "pca_models": ["pca_models"]}, total=2, stream=stream)
    for item in [
        record("STEP_START", "ingest"),
        record("ASSET_MATERIALIZATION", "ingest"),
        record("ASSET_MATERIALIZATION", "ingest"),
        record("STEP_SUCCESS", "ingest", 1500.0),
        record("STEP_START", "pca_models"),
        record("STEP_FAILURE", "pca_models", 200.0),
    ]:
        progress.emit(item)
    assert stream.getvalue().splitlines() == [
        "  [1/2] ingest (raw_chunk, split_data): 2 materialisations, 1.5 s",
        "  [2/2] pca_models: FAILED, 0 materialisations, 0.2 s",
    ]
