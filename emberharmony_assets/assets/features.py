"""features and window_tails: one streaming pass per day, needing nothing of any other day.

``features`` applies the fitted preprocessor chunk by chunk; in the same pass ``window_tails`` keeps what
the day alone hands on to the next (per entity: its rows in the day, its last ``window_size - 1`` feature
rows, their times and splits; ``emberharmony_core.carry_fold.day_summary``). Days run in any order and at
once: the only day-to-day step is the light fold of these tails into ``window_carry`` (``windows.py``).
"""

from contextlib import ExitStack

import numpy as np
from dagster import AssetExecutionContext, AssetSpec, multi_asset

from emberharmony_core.carry_fold import day_summary
from emberharmony_core.features.preprocess.config import PreprocessError
from emberharmony_core.layout import (
    CYCLICAL,
    FEATURES,
    PCA_STATS,
    PREPROCESSOR,
    STRIDE_WINDOWS,
    WINDOW_CARRY,
    WINDOW_TAILS,
    CarryWriter,
    asset_schema,
    iter_asset_frames,
    load_preprocessor,
)
from emberharmony_core.store import repair_command, typed_columns
from emberharmony_core.windowing import chunk_rows

from .. import checks
from ..partitions import daily_partitions
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, StepFigures, previous_partition_key, run_partitions
from .ingest import EMPTY_DAY

# what a refitted preprocessor makes stale on every day, in one run over the range (then pca_models, projected_windows)
REFIT_STEPS = [FEATURES, WINDOW_TAILS, WINDOW_CARRY, STRIDE_WINDOWS, PCA_STATS]


def check_feature_columns(artifacts, key: str, fitted, made_now: bool) -> None:
    """The feature columns of partition ``key``'s stored features (when this run does not make them) and of the
    partition before it (whose rows its windows continue) must be the fitted preprocessor's: after a refit
    (e.g. a category first seen in a later day) every day's features and windows are redone, from the first
    partition on; a mismatch fails naming the day, the columns and the command that does it."""
    names = list(fitted.feature_names_)
    previous = previous_partition_key(key)
    for day in ([] if made_now else [key]) + ([previous] if previous is not None else []):
        if not artifacts.has_frame(FEATURES, day):
            continue
        stored = [c for c in artifacts.frame_schema(FEATURES, day).names if c not in fitted.passthrough_columns_]
        if stored == names:
            continue
        added, gone = [c for c in names if c not in stored], [c for c in stored if c not in names]
        change = " and ".join([*([f"adds {added}"] if added else []), *([f"no longer makes {gone}"] if gone else [])])
        whose = "" if day == key else f" (whose rows the windows of partition {key} continue)"
        raise refit_error(
            artifacts,
            key,
            f"the features of partition {day}{whose} were made with another "
            f"preprocessor: the fitted one {change or 'orders the feature columns differently'}",
        )


def refit_error(artifacts, key: str, what: str) -> PreprocessError:
    """``what`` went wrong at partition ``key`` because the preprocessor was refitted between two days: the error
    says so and gives the one-run command that redoes every day's features and windows."""
    first = daily_partitions.get_first_partition_key()
    last = max([key, *artifacts.frame_keys(FEATURES)])
    return PreprocessError(
        f"{what} (it was refitted since, e.g. on a category first seen in a later day). Every partition's features "
        f"and windows must come from one preprocessor: re-materialise {', '.join(REFIT_STEPS)} for every partition "
        f"from {first} to {last} in one run, then pca_models and projected_windows. The first: "
        f"{repair_command(','.join(REFIT_STEPS), first, artifacts.base, last)}"
    )


def transformed_chunks(fitted, frames, key: str, types=None):
    """(features table, its (n, F) matrix) per frame; a value that cannot become a finite feature fails the
    partition, naming it (nothing of the partition is kept: its files are still temporary). ``types``: the
    input's Arrow schema, for the carried columns pandas cannot type (an empty day's)."""
    for frame in frames:
        try:
            table, matrix = fitted.transform_arrow(frame)
        except PreprocessError as exc:
            raise PreprocessError(f"features, partition {key}: {exc}") from None
        yield typed_columns(table, types), matrix


def day_pass(chunks, features_file, tails, day_bad: np.ndarray, names: list[str], spec, settings) -> int:
    """One day's pass over its ``(table, matrix)`` chunks: each written to ``features_file`` (its non-finite
    values counted into ``day_bad``) when given, and handed to ``tails`` as ``ChunkRows`` when given; the day's
    row count."""
    n_rows = 0

    def day_rows():
        """The day's chunks as ``ChunkRows`` (for the tails), each written to features on the way."""
        nonlocal n_rows
        for table, matrix in chunks:
            if features_file is not None:
                features_file.write(table)
                np.add(day_bad, checks.count_bad_values(matrix), out=day_bad)
            n_rows += table.num_rows
            yield (
                chunk_rows(table, names, spec.entity_column, spec.timestamp_column, settings.dtype, features=matrix)
                if tails is not None
                else None
            )

    if tails is not None:
        day_summary(day_rows(), settings.window_size, len(names), settings.dtype, sink=tails)
    else:
        for _ in day_rows():
            pass
    return n_rows


@multi_asset(
    name="features_and_tails",
    specs=[
        AssetSpec(
            FEATURES,
            deps=[CYCLICAL, PREPROCESSOR],
            group_name="preprocessing",
            kinds={"parquet"},
            description="Every row imputed, scaled and one-hot encoded with the fitted preprocessor (all splits); "
            "entity, timestamp, split and target are carried along.",
        ),
        AssetSpec(
            WINDOW_TAILS,
            deps=[FEATURES],
            group_name="windows",
            kinds={"arrow"},
            description="The day alone: per entity its rows in the day and its last window_size - 1 feature "
            "rows (with times and splits), what the day hands on to the next (folded into "
            "window_carry).",
        ),
    ],
    check_specs=[
        checks.spec(
            FEATURES, checks.FINITE_FEATURES, "No NaN or inf in any feature column after imputation and scaling."
        ),
    ],
    can_subset=True,
    **PARTITIONED,
)
def features_and_tails(
    context: AssetExecutionContext,
    source: SourceResource,
    settings: PipelineSettings,
    backend: BackendResource,
    store: ArtifactStoreResource,
):
    """Per partition, one pass over its rows: features, and the day's tails."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    fitted = load_preprocessor(artifacts)
    names = list(fitted.feature_names_)
    w = settings.window_size
    figures = StepFigures(
        context,
        {FEATURES: {"rows": 0, "features": len(names), "backend": compute.name}, WINDOW_TAILS: {"window_size": w}},
    )
    selected = figures.selected
    bad = np.zeros(len(names), dtype=np.int64)
    with figures.timed():
        for key, _, _ in run_partitions(context):
            if FEATURES in selected:  # (features table, its feature matrix) per chunk
                chunks = transformed_chunks(
                    fitted,
                    iter_asset_frames(artifacts, CYCLICAL, key, settings.rows_per_chunk),
                    key,
                    asset_schema(artifacts, CYCLICAL, key),
                )
            else:
                check_feature_columns(artifacts, key, fitted, made_now=False)
                chunks = (
                    (batch, None) for batch in artifacts.iter_batches(FEATURES, key, rows=settings.rows_per_chunk)
                )
            day_bad = np.zeros(len(names), dtype=np.int64)
            with ExitStack() as files:
                features_file = (
                    files.enter_context(artifacts.frame_writer(FEATURES, key)) if FEATURES in selected else None
                )
                tails = (
                    files.enter_context(CarryWriter(artifacts, key, w, len(names), settings.dtype, WINDOW_TAILS))
                    if WINDOW_TAILS in selected
                    else None
                )
                n_rows = day_pass(chunks, features_file, tails, day_bad, names, spec, settings)
            if FEATURES in selected:
                empty = {"empty_day": EMPTY_DAY} if not n_rows else {}
                figures.add(FEATURES, {"partition": key, "rows": n_rows, **empty})
                figures.totals[FEATURES]["rows"] += n_rows
                bad += day_bad
                figures.day_check(key, checks.finite_features_check(day_bad, n_rows, names, asset_key=FEATURES))
            if tails is not None:  # WINDOW_TAILS in selected
                figures.add(WINDOW_TAILS, {"partition": key, "entities": tails.entities})
    total = figures.totals[FEATURES]["rows"]
    yield from figures.results({FEATURES: [checks.finite_features_check(bad, total, names, asset_key=FEATURES)]})
