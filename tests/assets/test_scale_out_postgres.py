"""The scale-out recipe on the instance a production user has: a day's pass per run, several at once, on Postgres.

``emberharmony_assets.scale_out`` runs a range as waves (``emberharmony_assets.jobs.WAVES``): per-day passes
(``ingest_job``, ``features_job``, ``windows_job``, ``projection_job``) as one run per day submitted through the
webserver's GraphQL API, the global fits and the carry fold as one run each on the same instance. Here it runs on
what production runs: Dagster's Postgres storage (``dagster-postgres``) on a real PostgreSQL server this test
starts from Debian's ``postgresql`` package (``initdb`` / ``pg_ctl`` in a temporary folder, as an unprivileged
user when the tests run as root, 127.0.0.1 on a free port, password authentication over TCP; stopped at the end),
the ``QueuedRunCoordinator`` with a tag concurrency limit of 2 per value of ``emberharmony/pass`` (the tag every
run of a per-day pass carries), the ``DefaultRunLauncher``, and a real ``dagster dev`` (webserver and daemon: the
daemon launches each run as its own process). Nothing stands in for Dagster or PostgreSQL. The storage names its driver
(``scheme: postgresql+psycopg2``): SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which
dagster-postgres does not install ("No module named 'psycopg'" otherwise).

The reference is ``full_refresh_job`` over the same range as one run on its own instance. Asserted: every wave
succeeded; each per-day wave made one run per day, each with its pass tag; ``windows_job`` runs of different days
were executing at the same time (the run records' own start and end times, as Postgres stored them), and never
more than 2 runs of one pass were in progress (launch to end, as the queue counts); every artifact file is
byte-identical to the reference and ``pca_models``' arrays are equal. The per-wave times and each per-day wave's
overlap are printed.

Where the PostgreSQL server binaries are missing, the test fails under CI (``.ci/run`` installs them) and is
skipped with the reason elsewhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from emberharmony_assets.jobs import PASS_TAG, WAVES
from emberharmony_assets.partitions import daily_partitions
from emberharmony_assets.scale_out import queue_yaml
from emberharmony_assets.testing import dagster_dev, free_port
from emberharmony_core.demo import DemoConfig, write_demo_table
from tests.assets.test_concurrent_backfills import (
    DAYS,
    assert_same_artifacts,
    graph_resources,
    most_at_once,
    run_errors,
    run_job,
)

ROOT = Path(__file__).resolve().parents[2]
# 368,640 rows a day: a windows run then executes for 2-3 s here (18,432 rows: ~1 s, mostly Dagster's own cost),
# longer than the gap between two runs launched on successive dequeue ticks (the daemon may dequeue while
# ``dagster job backfill`` is still queueing the wave: measured 1.6 s apart, and no overlap, on 18,432-row days)
DEMO = DemoConfig(entities=256, days=4, cadence_minutes=1, start="2026-01-01")
AT_ONCE = 2  # the tag concurrency limit per pass
WAVE_S = 150  # the longest one wave may take before the test gives up on it
PER_DAY = [job for job, kind in WAVES if kind == "days"]

DAGSTER_YAML = """\
telemetry:
  enabled: false
storage:
  postgres:
    postgres_db:
      hostname: 127.0.0.1
      port: {port}
      username: {user}
      password: "{password}"
      db_name: {db}
      # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3); dagster-postgres installs psycopg2(-binary)
      scheme: postgresql+psycopg2
{queue}run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher
freshness:
  enabled: false
"""


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: from PATH, else Debian's
    ``/usr/lib/postgresql/<version>/bin`` (the newest); None when neither has them."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [
        Path(p) for p in sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
    ]
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


@contextmanager
def postgres_server():  # noqa: C901
    """A PostgreSQL server of its own in a temporary folder: yields ``(port, user, password, db)``; stopped
    (``pg_ctl stop -m fast``) and its folder removed at the end, whatever happened. initdb and postgres refuse to
    run as root: as root, the server runs as the ``postgres`` system user (else ``nobody``)."""
    binaries = postgres_binaries()
    if binaries is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) found neither on PATH nor under "
            "/usr/lib/postgresql/*/bin: install Debian's postgresql package (apt-get install -y postgresql; "
            ".ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    as_user = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        as_user = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    folder = Path(tempfile.mkdtemp(prefix="emberharmony-pg-"))  # under /tmp: reachable by that user
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data, log, password, user = folder / "data", folder / "server.log", secrets.token_hex(8), "dagster"

    def pg(*args, check=True):
        done = subprocess.run(
            [str(binaries / args[0]), *args[1:]], cwd=folder, capture_output=True, text=True, timeout=120, **as_user
        )
        if check and done.returncode:
            server_log = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}{server_log}")
        return done

    try:
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        # a superuser with a password over TCP (as production has), trust only on the folder's own unix socket
        pg(
            "initdb",
            "-D",
            str(data),
            "-U",
            user,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        for attempt in range(3):  # a free port taken by someone else before the server binds it: another
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
                "-c max_connections=200 -c fsync=off"
            )  # fsync: durability only, nothing a test needs
            if (
                pg(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    check=attempt == 2,
                ).returncode
                == 0
            ):
                break
        import psycopg2  # installed with dagster-postgres (the dev extra)

        connection = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE dagster")
        connection.close()
        yield port, user, password, "dagster"
    finally:
        if (data / "postmaster.pid").exists():  # started, or half-started (a start that timed out)
            pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def launched_at(instance: DagsterInstance, run_id: str) -> float:
    """When the daemon took the run off the queue (RUN_STARTING): from then on the queue counts it in progress."""
    return instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)[0].timestamp


def overlap_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least two of the intervals held."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running, since, total = 0, None, 0.0
    for t, step in edges:
        running += step
        if running >= 2 and since is None:
            since = t
        elif running < 2 and since is not None:
            total, since = total + t - since, None
    return total


def test_scale_out_on_postgres_runs_days_of_each_pass_at_once_and_equals_one_run(tmp_path, monkeypatch):
    import dagster_postgres  # the dev extra: a missing one is a failure, not a skip

    single_data, multi_data = tmp_path / "single", tmp_path / "multi"
    home, reference_home = tmp_path / "dagster_home", tmp_path / "reference_home"
    for folder in (single_data, multi_data, home, reference_home):
        folder.mkdir()
    assert write_demo_table(multi_data / "demo.duckdb", DEMO) == DEMO.rows

    # the reference: the whole graph over the range, one run, its own instance
    started = time.monotonic()
    with DagsterInstance.local_temp(str(reference_home)) as reference_instance:
        run_job(
            "full_refresh_job",
            graph_resources(multi_data / "demo.duckdb", single_data / "artifacts"),
            reference_instance,
        )
    single_s = time.monotonic() - started

    with postgres_server() as (port, user, password, db):
        (home / "dagster.yaml").write_text(
            DAGSTER_YAML.format(port=port, user=user, password=password, db=db, queue=queue_yaml(AT_ONCE))
        )
        end = f"{daily_partitions.end:%Y-%m-%d}" if daily_partitions.end else ""
        # the environment the CLI (scale_out's submissions), the daemon and its runs see
        for name, value in {
            "DAGSTER_HOME": str(home),
            "EMBERHARMONY_HOME": str(multi_data),
            "EMBERHARMONY_SOURCE": "duckdb",
            "EMBERHARMONY_BACKEND": "numpy",
            "EMBERHARMONY_PARTITION_START": f"{daily_partitions.start:%Y-%m-%d}",
            "EMBERHARMONY_PARTITION_END": end,
        }.items():
            monkeypatch.setenv(name, value)
        instance = DagsterInstance.from_config(str(home))  # creates Dagster's tables, before any other process
        try:
            assert isinstance(instance.run_storage, dagster_postgres.PostgresRunStorage)
            assert isinstance(instance.event_log_storage, dagster_postgres.PostgresEventLogStorage)
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.get_run_records() == []
            lines = []  # what scale_out logs, wave by wave
            # webserver and daemon on this Postgres instance, with the environment just set
            with dagster_dev(
                home, env=os.environ, workspace=ROOT / "workspace.yaml", log=tmp_path / "dagster_dev.log", grace=20
            ) as server:
                from emberharmony_assets.scale_out import scale_out

                started = time.monotonic()
                try:
                    runs = scale_out(
                        DAYS[0],
                        DAYS[-1],
                        url=server.url,
                        instance=instance,
                        timeout=WAVE_S,
                        log=lines.append,
                    )
                except (RuntimeError, TimeoutError) as error:
                    failed = [
                        r.dagster_run
                        for r in instance.get_run_records()
                        if r.dagster_run.status == DagsterRunStatus.FAILURE
                    ]
                    raise AssertionError(
                        f"{error}\n"
                        + "\n".join(run_errors(instance, run) for run in failed)
                        + f"\ndaemon alive: {server.process.poll() is None}\n{server.log_tail(4000)}"
                    ) from error
                multi_s = time.monotonic() - started
            check_runs(instance, runs, lines, single_s, multi_s)
        finally:
            instance.dispose()

    assert_same_artifacts(single_data / "artifacts", multi_data / "artifacts", len(DAYS))


def check_runs(instance: DagsterInstance, runs: dict, lines: list[str], single_s: float, multi_s: float) -> None:
    """Every wave's runs: one per day with the pass tag, days of a pass at once, never more than the limit."""
    assert list(runs) == [job for job, _ in WAVES]
    records = instance.get_run_records()
    assert len(records) == sum(len(v) for v in runs.values()) == len(PER_DAY) * len(DAYS) + len(WAVES) - len(PER_DAY)
    assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records)
    report, overlaps = [], {}
    for job, kind in WAVES:
        wave = runs[job]
        assert {r.dagster_run.job_name for r in wave} == {job}
        if kind != "days":
            assert len(wave) == 1
            continue
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in wave) == DAYS  # one run per day
        assert {r.dagster_run.tags.get(PASS_TAG) for r in wave} == {job.removesuffix("_job")}
        executing = [(r.start_time, r.end_time) for r in wave]
        in_progress = [(launched_at(instance, r.dagster_run.run_id), r.end_time) for r in wave]
        # as the queue counts them (launched to the end): never more than the tag limit
        assert most_at_once(in_progress) <= AT_ONCE, (job, in_progress)
        overlaps[job] = most_at_once(executing)
        first = min(t for t, _ in in_progress)
        created = sorted(r.create_timestamp.timestamp() for r in wave)
        report.append(
            f"{job}: queued over {created[-1] - created[0]:.2f} s; {overlaps[job]} at once, "
            f"{overlap_seconds(executing):.1f} s with 2+ executing; "
            "launched / started-ended, s: "
            + ", ".join(
                f"{r.dagster_run.tags['dagster/partition'][5:]} {t - first:.1f} / "
                f"{r.start_time - first:.1f}-{r.end_time - first:.1f}"
                for (t, _), r in sorted(zip(in_progress, wave, strict=False), key=lambda p: p[0][0])
            )
        )
    print(
        f"\n{len(DAYS)} days x {DEMO.rows // DEMO.days:,} rows, PostgreSQL storage. ONE RUN (full_refresh_job) "
        f"{single_s:.1f} s. SCALE-OUT {multi_s:.1f} s, per wave (submit to last run finished): "
        + "; ".join(lines)
        + "\n"
        + "\n".join(report)
    )
    # days of a pass really executed at the same time, in separate runs (which pass depends on the queue's ticks
    # and each pass's length: the windows pass, once the heaviest, now takes about a second a day here)
    assert max(overlaps.values()) >= 2, report
