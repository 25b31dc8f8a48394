"""What the main job prints: one line per step as the run goes, then a short report.

The figures (rows, splits, windows, explained variance) are read from the artifacts the run wrote
(Parquet footers, the split column, the models' ``.npz``), not from Dagster metadata, so they are
the run's totals whatever each materialisation's metadata holds; the checks come from the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from emberharmony_core.features.pca import PCAModel
from emberharmony_core.layout import PCA_MODELS, RAW, SPLIT, STRIDE_WINDOWS, load_pca_model, stride_folder
from emberharmony_core.names import SPLIT_NAMES

UI_URL = "http://127.0.0.1:3000"  # dagster dev's default address
SPLITS = SPLIT_NAMES


# ---------------------------------------------------------------------------------------------
# progress: a Dagster logger that prints step starts / ends (Dagster logs them at DEBUG, which the
# console logger does not show by default)
class _Progress(logging.Handler):
    """One line per finished step: ``[2/5] preprocessor (preprocessor): 1 materialisation, 0.3 s``.
    On a terminal the step's line shows while it runs, then is completed in place."""

    def __init__(self, assets_by_step: dict[str, list[str]], total: int, stream=None):
        super().__init__(level=logging.DEBUG)
        self.assets_by_step, self.total = assets_by_step, total
        self.stream = stream or sys.stdout
        self.done, self.open_line = 0, False
        self.started: dict[str, float] = {}  # step: perf_counter() when it started
        self.materialisations: dict[str, int] = {}

    def _prefix(self, step: str) -> str:
        assets = self.assets_by_step.get(step, [])
        named = "" if assets == [step] or not assets else f" ({', '.join(assets)})"
        return f"  [{min(self.done + 1, self.total)}/{self.total}] {step}{named}"

    def _write(self, text: str, end: str = "\n") -> None:
        if self.open_line:
            text = "\r\x1b[K" + text
        self.stream.write(text + end)
        self.stream.flush()
        self.open_line = end == ""

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_event", None)
        if event is None or not event.step_key:
            return
        kind, step = event.event_type_value, event.step_key
        if kind == "STEP_START":
            self.started[step] = time.perf_counter()
            if getattr(self.stream, "isatty", lambda: False)():
                self._write(self._prefix(step) + " ...", end="")
        elif kind == "ASSET_MATERIALIZATION":
            self.materialisations[step] = self.materialisations.get(step, 0) + 1
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            data = event.event_specific_data
            duration = getattr(data, "duration_ms", None)
            seconds = (
                duration / 1000
                if duration is not None
                else time.perf_counter() - self.started.get(step, time.perf_counter())
            )
            n = self.materialisations.get(step, 0)
            status = {"STEP_SUCCESS": "", "STEP_FAILURE": "FAILED, ", "STEP_SKIPPED": "skipped, "}[kind]
            self._write(f"{self._prefix(step)}: {status}{n:,} materialisation{'s' if n != 1 else ''}, {seconds:.1f} s")
            self.done += 1


def progress_logger(assets):
    """A Dagster ``LoggerDefinition`` (``loggers: {progress: {}}`` in run config) printing one line per step of
    a run over ``assets``. One handler per definition: Dagster initialises a run's loggers more than once."""
    from dagster import AssetsDefinition, logger

    assets_by_step = {
        a.node_def.name: [spec.key.to_user_string() for spec in a.specs]
        for a in assets
        if isinstance(a, AssetsDefinition) and a.is_executable
    }
    handlers = {}

    @logger(description="one line per step as the run goes (emberharmony's main job)")
    def progress(init_context):
        job = init_context.job_def
        total = len(job.nodes) if job is not None else len(assets_by_step)
        handler = handlers.setdefault(init_context.run_id, _Progress(assets_by_step, total))
        log = logging.Logger("emberharmony.progress", level=logging.DEBUG)
        log.addHandler(handler)
        return log

    return progress


def run_header(job, assets, keys: Sequence[str], backend: str) -> str:
    """``full_refresh_job: 10 assets and 5 checks in 5 steps over 90 daily partitions (a .. b), one run``."""
    n_assets = sum(len(a.keys) for a in assets if getattr(a, "is_executable", False))
    n_checks = sum(len(a.check_keys) for a in assets if getattr(a, "is_executable", False))
    return (
        f"{job.name}: {n_assets} assets and {n_checks} checks in {len(job.nodes)} steps over {len(keys)} daily "
        f"partitions ({keys[0]} .. {keys[-1]}) in one run, backend {backend}"
    )


# ---------------------------------------------------------------------------------------------
# the report
def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def folder_bytes(path: str) -> int:
    """Bytes of every file under ``path`` (files that vanish while walking are skipped)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


def stored_figures(store, keys: list[str], strides: list[int]) -> dict:
    """Rows, split counts, windows per stride and the fitted models, read from the artifacts of ``keys``."""
    import pyarrow.compute as pc

    figures: dict = {}
    try:
        figures["rows"] = sum(store.frame_rows(RAW, key) for key in keys)
    except Exception as exc:  # noqa: BLE001 - the report says what it could not read
        figures["rows_error"] = str(exc)
    try:
        split = dict.fromkeys(SPLITS, 0)
        for key in keys:
            for batch in store.iter_batches(SPLIT, key, columns=["split"]):
                for item in pc.value_counts(batch.column(0)).to_pylist():
                    split[str(item["values"])] = split.get(str(item["values"]), 0) + item["counts"]
        figures["split"] = split
    except Exception as exc:  # noqa: BLE001
        figures["split_error"] = str(exc)
    try:
        figures["windows"] = {
            s: sum(store.frame_rows(STRIDE_WINDOWS, key, stride_folder(s)) for key in keys) for s in strides
        }
    except Exception as exc:  # noqa: BLE001
        figures["windows_error"] = str(exc)
    models: dict[int, PCAModel | Exception] = {}
    for stride in strides:
        try:
            models[stride] = load_pca_model(store, stride)
        except Exception as exc:  # noqa: BLE001
            models[stride] = exc
    figures["models"] = models
    return figures


def _variance_line(stride: int, model) -> str:
    if isinstance(model, Exception):
        return f"  stride {stride}: no model ({model})"
    ratio = np.asarray(model.explained_variance_ratio_, dtype=np.float64)
    first = ", ".join(f"{r:.3f}" for r in ratio[:3])
    return (
        f"  stride {stride}: {ratio.sum():.4f} at k = {int(model.n_components_)} of {int(model.n_features_in_)} "
        f"features ({int(model.n_samples_):,} train windows; first components {first})"
    )


def report_lines(
    result,
    seconds: float,
    *,
    keys: list[str],
    store,
    artifacts: str,
    strides: list[int],
    dagster_home: str,
    ui: str = "make ui",
    expected_checks: int | None = None,
) -> list[str]:
    """The report after the run (see ``print_summary``)."""
    materialised = {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    figures = stored_figures(store, keys, strides)
    rows = figures.get("rows", 0)
    lines = [
        f"\nrun {result.run_id[:8]}: {'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s"
        + (f" ({rows / seconds:,.0f} rows/s end to end)" if result.success and rows and seconds else "")
        + f"; job {result.dagster_run.job_name}, partitions {keys[0]} .. {keys[-1]}"
        + f"; peak RSS {_peak_rss_mib():,.0f} MiB"
    ]

    def stale(asset: str) -> str:
        return "" if asset in materialised else " (not materialised by this run: stored figures)"

    if "rows" in figures:
        split = figures.get("split")
        split_text = (" (" + ", ".join(f"{s} {split.get(s, 0):,}" for s in SPLITS) + ")") if split else ""
        lines.append(f"rows: {rows:,}{split_text}{stale(SPLIT)}")
    else:
        lines.append(f"rows: unknown ({figures['rows_error']})")
    if "windows" in figures:
        lines.append(
            "windows: " + ", ".join(f"stride {s} {n:,}" for s, n in figures["windows"].items()) + stale(STRIDE_WINDOWS)
        )
    else:
        lines.append(f"windows: unknown ({figures['windows_error']})")
    lines.append("explained variance per stride (PCA fitted on all train windows)" + stale(PCA_MODELS) + ":")
    lines += [_variance_line(s, m) for s, m in figures["models"].items()]

    # the step's own result per check (no partition), and each day's own (record_day_checks)
    evaluations = [e for e in result.get_asset_check_evaluations() if getattr(e, "partition", None) is None]
    days = [e for e in result.get_asset_check_evaluations() if getattr(e, "partition", None) is not None]
    failed = [e for e in evaluations if not e.passed]
    failed_days = sorted({f"{e.check_name} {e.partition}" for e in days if not e.passed})
    missing = (expected_checks - len(evaluations)) if expected_checks is not None else 0
    lines.append(
        f"asset checks: {len(evaluations) - len(failed)} passed, {len(failed)} failed"
        + (f", {missing} not evaluated" if missing > 0 else "")
        + (
            f" ({len(days)} per-day results, {len(failed_days)} failed"
            + (": " + ", ".join(failed_days[:5]) + (" ..." if len(failed_days) > 5 else "") if failed_days else "")
            + ")"
            if days
            else ""
        )
    )
    for evaluation in failed:
        severity = getattr(getattr(evaluation, "severity", None), "value", "")
        detail = getattr(evaluation, "description", None) or ", ".join(
            f"{k}={getattr(v, 'value', v)}" for k, v in list(evaluation.metadata.items())[:4]
        )
        lines.append(
            f"  FAILED {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            + (f" [{severity}]" if severity else "")
            + f": {str(detail)[:300]}"
        )
    if not result.success:
        for event in result.all_events:
            if event.is_failure and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                while error is not None and getattr(error, "cause", None) is not None:
                    error = error.cause  # Dagster's wrapper first, the asset's own error last
                if error is not None:
                    lines.append(f"  {event.step_key or 'run'} failed: {error.message.strip()}")
    size = f" ({folder_bytes(artifacts) / 2**20:,.1f} MiB)" if os.path.isdir(artifacts) else ""
    lines.append(f"artifacts: {artifacts}{size}")
    lines.append(f"Dagster instance (DAGSTER_HOME): {dagster_home}")
    lines.append(f"open the UI: {ui}")
    lines.append(f"  then {UI_URL}/runs/{result.run_id} (this run; Assets for per-partition metadata, checks, plots)")
    return lines


def print_summary(result, seconds: float, **kwargs) -> int:
    """Print the report; return the process exit code (0 when the run and every check passed)."""
    print("\n".join(report_lines(result, seconds, **kwargs)), flush=True)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    return 0 if result.success and not failed else 1
