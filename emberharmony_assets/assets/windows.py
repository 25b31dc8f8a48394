"""window_carry (the one day-to-day step, light) -> stride_windows and pca_stats (one pass per day),
pca_models, projected_windows.

Each entity's series continues from the day before through a small carry (its row count so far and its
last ``window_size - 1`` rows): ``window_carry`` of a day folds the carry of the day before with the day's
own ``window_tails`` (``emberharmony_core.carry_fold``), a pass over per-entity summaries, never over rows,
which is why it alone depends on its own previous partition. Every pass over a day's rows needs only that
day's files, the global fits and the carry of the day before, so days run in any order and at once:
``stride_windows`` / ``pca_stats`` find each day's windows by the one rule (``emberharmony_core.windowing``),
store their index (never the expanded windows) and the train windows' statistics; ``pca_models`` merges the
statistics; ``projected_windows`` reads ``features`` once more and projects every window.
"""

import hashlib
from contextlib import ExitStack

import numpy as np
from dagster import AssetDep, AssetExecutionContext, AssetSpec, DataVersion, MaterializeResult, asset, multi_asset

from emberharmony_core.carry_fold import fold_carry
from emberharmony_core.features.pca import PCAStats, window_stats_by_stride
from emberharmony_core.layout import (
    FEATURES,
    INDEX_DELTA,
    OLD_CARRY,
    PCA_MODELS,
    PCA_STATS,
    PROJECTED,
    STRIDE_WINDOWS,
    WINDOW_CARRY,
    WINDOW_TAILS,
    CarryWriter,
    StoredCarry,
    carry_digest,
    feature_batches,
    has_carry,
    load_pca_model,
    load_pca_stats,
    load_preprocessor,
    old_carry_exists,
    old_pca_stats_exist,
    pca_stats_keys,
    save_pca_model,
    save_pca_stats,
    save_windows_layout,
    stride_folder,
)
from emberharmony_core.store import repair_command
from emberharmony_core.windowing import (
    ChunkRows,
    ChunkWindows,
    Windower,
    chunk_rows,
    columns_table,
    project_windows,
    window_index,
)

from .. import checks
from ..partitions import daily_partitions, previous_partition
from ..plots import scree_plot_metadata
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, StepFigures, markdown_table, previous_partition_key, run_partitions, timed
from .features import check_feature_columns, refit_error
from .ingest import EMPTY_DAY

# A day's windows read the carry of the day before, but depend on window_carry of the day itself: that one is
# folded from the carry of the day before (so it is stale whenever that one is), and a same-day dependency keeps an
# asset backfill of a range inside the range (with the day-before mapping, Dagster's backfill planning reached the
# day after the range through it)
CARRY_OF_THE_DAY = WINDOW_CARRY


def carry_command(artifacts, last: str) -> str:
    """The command that folds the carries from the first partition through ``last`` (one light run)."""
    return repair_command(WINDOW_CARRY, daily_partitions.get_first_partition_key(), artifacts.base, last)


def previous_carry(artifacts, key: str, needed_by: str) -> "StoredCarry | None":
    """The stored carry of the partition before ``key`` (None for the first partition); missing, an error
    naming it and the command that makes it."""
    previous = previous_partition_key(key)
    if previous is None:
        return None
    if not has_carry(artifacts, previous):
        older = old_carry_exists(artifacts, previous)
        why = (
            f"the carry of {previous} is in {'/'.join(OLD_CARRY)}/, where an earlier emberharmony kept it: it is now "
            f"the window_carry asset"
            if older
            else f"the window_carry of {previous} is missing"
        )
        raise FileNotFoundError(
            f"partition {key} ({needed_by}) continues each entity's series from partition {previous}, but {why}: "
            f"materialise window_tails and window_carry up to {previous} first (window_carry folds the days in order, "
            f"from the first partition, in one light run): {carry_command(artifacts, previous)}"
        )
    return StoredCarry(artifacts, previous)


def window_size_error(artifacts, key: str, what: str) -> ValueError:
    """``what`` (a carry or tails of another window_size) at partition ``key``, and the one-run command that redoes
    them: the tails (made with the features) and the carries, for every day up to ``key``."""
    command = repair_command(
        f"{FEATURES},{WINDOW_TAILS},{WINDOW_CARRY}",
        daily_partitions.get_first_partition_key(),
        artifacts.base,
        max([key, *artifacts.frame_keys(FEATURES)]),
    )
    return ValueError(
        f"{what}: re-materialise features, window_tails and window_carry for every partition (then "
        f"stride_windows, pca_stats, pca_models, projected_windows): {command}"
    )


def windower_for(artifacts, key: str, settings: PipelineSettings, n_features: int, needed_by: str) -> Windower:
    """A ``Windower`` continuing from the previous partition's stored carry (none before the first partition)."""
    carry = previous_carry(artifacts, key, needed_by)
    if carry is not None and carry.window_size != settings.window_size:
        raise window_size_error(
            artifacts,
            key,
            f"{needed_by}, partition {key}: the window_carry of {carry.key} was "
            f"made with window_size {carry.window_size}, the settings say "
            f"{settings.window_size}",
        )
    return Windower(
        settings.window_size,
        settings.strides,
        carry,
        n_features=n_features,
        dtype=settings.dtype,
        max_gap=settings.max_gap,
        sink=False,
    )


def column_change(artifacts, before: str, after: str) -> str:
    """ ", the features of <after> add [...] / lack [...] of <before>'s" (empty when either file is missing)."""
    if not (artifacts.has_frame(FEATURES, before) and artifacts.has_frame(FEATURES, after)):
        return ""
    old, new = (artifacts.frame_schema(FEATURES, day).names for day in (before, after))
    added, gone = [c for c in new if c not in old], [c for c in old if c not in new]
    change = " and ".join([*([f"add {added}"] if added else []), *([f"lack {gone}"] if gone else [])])
    return f"; the features of {after} {change} to those of {before}" if change else ""


@asset(
    name=WINDOW_CARRY,
    deps=[WINDOW_TAILS, AssetDep(WINDOW_CARRY, partition_mapping=previous_partition)],
    group_name="windows",
    kinds={"arrow"},
    description="Per entity, its row count so far and its last window_size - 1 feature rows after the day: the "
    "carry of the day before folded with the day's window_tails. The one step that goes day after "
    "day, over per-entity summaries only.",
    **PARTITIONED,
)
def window_carry(context: AssetExecutionContext, store: ArtifactStoreResource) -> MaterializeResult:
    """Per partition, in order: the carry of the day before folded with the day's tails (a merge in entity order)."""
    artifacts = store.get()
    figures = StepFigures(context, {WINDOW_CARRY: {}})  # the run's seconds and peak RSS
    digests: list[str] = []
    with figures.timed():
        for key, _, _ in run_partitions(context):
            previous = previous_carry(artifacts, key, WINDOW_CARRY)
            day = tails_to_fold(artifacts, key, previous)
            with CarryWriter(artifacts, key, day.window_size, day.n_features, day.dtype, WINDOW_CARRY) as sink:
                fold_carry(previous, day, sink)
            figures.add(WINDOW_CARRY, {"partition": key, "entities": sink.entities})
            digests.append(carry_digest(artifacts, key, WINDOW_CARRY))
    figures.record()
    return MaterializeResult(data_version=carry_data_version(digests))


def tails_to_fold(artifacts, key: str, previous: "StoredCarry | None") -> StoredCarry:
    """Partition ``key``'s stored window_tails, made like the carry ``previous`` of the day before (same feature
    columns, same window_size); missing or unlike, an error naming the command that redoes them."""
    if not has_carry(artifacts, key, WINDOW_TAILS):
        raise FileNotFoundError(
            f"window_carry of partition {key} folds its window_tails, which are missing: materialise "
            f"features and window_tails for {key} first: "
            f"{repair_command(f'{FEATURES},{WINDOW_TAILS}', key, artifacts.base)}"
        )
    day = StoredCarry(artifacts, key, WINDOW_TAILS)
    if previous is not None and previous.n_features != day.n_features:
        raise refit_error(
            artifacts,
            key,
            f"the window_tails of partition {key} hold {day.n_features} feature "
            f"columns, the window_carry of {previous.key} {previous.n_features}"
            f"{column_change(artifacts, previous.key, key)}: the preprocessor "
            f"changed between them",
        )
    if previous is not None and previous.window_size != day.window_size:
        raise window_size_error(
            artifacts,
            key,
            f"the window_tails of partition {key} were made with "
            f"window_size {day.window_size}, the window_carry of "
            f"{previous.key} with {previous.window_size}",
        )
    return day


def carry_data_version(digests: list[str]) -> DataVersion:
    """The data version of a run's carries: a digest of their files, so a run that remakes the same carries
    gives the version they had. Dagster records a step's input provenance once, before the step's own
    materialisations, so a day's dependency on the day before (made in the same run) is judged by whether that
    day's version changed; with Dagster's default (a new version per run) every re-run over a range left its
    later days "Unsynced" (docs/ui.md says what remains)."""
    return DataVersion(hashlib.blake2b("\n".join(digests).encode(), digest_size=16).hexdigest())


@multi_asset(
    name="windows_and_stats",
    specs=[
        AssetSpec(
            STRIDE_WINDOWS,
            group_name="windows",
            kinds={"parquet"},
            deps=[FEATURES, CARRY_OF_THE_DAY],
            description="Per stride, the windows ending in the partition, stored as an index (row of features "
            "each ends on, entity, end time, split); load the windows with "
            "emberharmony_core.layout.load_stride_windows.",
        ),
        AssetSpec(
            PCA_STATS,
            deps=[STRIDE_WINDOWS],
            group_name="windows",
            kinds={"numpy"},
            description="Per stride, mergeable PCA statistics (count, mean, scatter; float64) of the "
            "partition's TRAIN windows, computed from the feature rows.",
        ),
    ],
    check_specs=[
        checks.spec(
            STRIDE_WINDOWS,
            checks.WINDOW_COUNTS,
            "Windows per stride equal what each entity's row counts imply (closed form).",
        ),
    ],
    can_subset=True,
    **PARTITIONED,
)
def windows_and_stats(
    context: AssetExecutionContext,
    source: SourceResource,
    settings: PipelineSettings,
    backend: BackendResource,
    store: ArtifactStoreResource,
):
    """Per partition, one pass over its features: the window index, the train windows' statistics."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    fitted = load_preprocessor(artifacts)
    names = list(fitted.feature_names_)
    strides, w = list(settings.strides), settings.window_size
    entity = spec.entity_column
    save_windows_layout(
        artifacts,
        {
            "window_size": w,
            "strides": strides,
            "feature_columns": names,
            "entity_column": entity,
            "timestamp_column": spec.timestamp_column,
            "dtype": settings.dtype,
            "max_gap": settings.max_gap,
        },
    )
    figures = StepFigures(
        context,
        {
            STRIDE_WINDOWS: {
                "backend": compute.name,
                "strides": str(strides),  # text: not plotted as a flat line
                "window": f"{w} rows x {len(names)} features = {w * len(names)} values",
            },
            PCA_STATS: {"backend": compute.name},
        },
    )
    selected = figures.selected
    run_counts = WindowCounts(strides)  # over the run's days
    with figures.timed():
        for key, _, _ in run_partitions(context):
            check_feature_columns(artifacts, key, fitted, made_now=False)
            stats = {s: PCAStats(w * len(names)) for s in strides}
            counts = WindowCounts(strides)
            n_rows = 0
            windower = windower_for(artifacts, key, settings, len(names), STRIDE_WINDOWS)
            with ExitStack() as files:
                index_files = (
                    {
                        s: files.enter_context(
                            artifacts.frame_writer(STRIDE_WINDOWS, key, stride_folder(s), delta=INDEX_DELTA)
                        )
                        for s in strides
                    }
                    if STRIDE_WINDOWS in selected
                    else {}
                )
                chunk: ChunkRows | None
                made: ChunkWindows | None
                for table in feature_batches(artifacts, key, settings.rows_per_chunk):
                    chunk = chunk_rows(table, names, entity, spec.timestamp_column, settings.dtype)
                    made = windower.add(chunk, compute)
                    counts.add(made)
                    for s, index_file in index_files.items():
                        index_file.write(window_index(made, s, chunk, n_rows, entity or "entity"))
                    if PCA_STATS in selected:  # each train window gathered and multiplied once for all strides
                        for s, part in window_stats_by_stride(made, strides).items():
                            stats[s] = stats[s].merge(part)
                    n_rows += table.num_rows
                    table = chunk = made = None  # not held while the next chunk is read
            run_counts.merge(counts)
            if STRIDE_WINDOWS in selected:
                figures.day_check(key, counts.check())
                figures.add(STRIDE_WINDOWS, counts.row(key, n_rows, settings.max_gap))
            if PCA_STATS in selected:
                save_pca_stats(artifacts, key, stats)
                figures.add(
                    PCA_STATS, {"partition": key, **{f"train_windows_stride_{s}": stats[s].n_samples for s in strides}}
                )
    figures.totals[STRIDE_WINDOWS].update(window_totals(figures.rows[STRIDE_WINDOWS], strides, settings.max_gap))
    yield from figures.results({STRIDE_WINDOWS: [run_counts.check()]})


class WindowCounts:
    """Windows counted chunk by chunk (``add``) or day by day (``merge``), per stride: those kept, those dropped
    for mixing splits or for spanning a gap longer than max_gap (and the gaps), and those the row counts imply and
    the windower made (the window_counts check)."""

    FIELDS = ("kept", "mixed_split_dropped", "gap_dropped", "expected", "produced")

    def __init__(self, strides):
        self.kept = dict.fromkeys(strides, 0)
        self.mixed_split_dropped = dict.fromkeys(strides, 0)
        self.gap_dropped = dict.fromkeys(strides, 0)
        self.expected = dict.fromkeys(strides, 0)
        self.produced = dict.fromkeys(strides, 0)
        self.gaps = 0

    def add(self, made: ChunkWindows) -> None:
        self.gaps += made.gaps
        for s in self.kept:
            self.kept[s] += len(made.starts[s])
            self.mixed_split_dropped[s] += made.mixed_split_dropped[s]
            self.gap_dropped[s] += made.gap_dropped[s]
            self.expected[s] += made.expected[s]
            self.produced[s] += made.candidates[s]

    def merge(self, other: "WindowCounts") -> None:
        self.gaps += other.gaps
        for field in self.FIELDS:
            mine, theirs = getattr(self, field), getattr(other, field)
            for s in mine:
                mine[s] += theirs[s]

    def check(self):
        return checks.window_counts_check(self.expected, self.produced, asset_key=STRIDE_WINDOWS)

    def row(self, key: str, n_rows: int, max_gap) -> dict:
        """The day's own stride_windows figures."""
        row = {
            "partition": key,
            "rows": n_rows,
            **{f"windows_stride_{s}": n for s, n in self.kept.items()},
            **({"empty_day": EMPTY_DAY} if not n_rows else {}),
        }
        row.update({f"mixed_split_dropped_stride_{s}": n for s, n in self.mixed_split_dropped.items() if n})
        if max_gap is not None:  # gaps longer than max_gap, and the windows spanning them
            row.update({"gaps": self.gaps, **{f"gap_dropped_stride_{s}": n for s, n in self.gap_dropped.items()}})
        return row


def window_totals(rows: list[dict], strides, max_gap) -> dict:
    """stride_windows' run figures from its days' rows: the windows per stride, and the dropped windows (and the
    gaps) over the run's partitions (a range's table shows only its first and last ones)."""
    totals = {f"windows_stride_{s}": sum(r[f"windows_stride_{s}"] for r in rows) for s in strides}
    dropped = [f"mixed_split_dropped_stride_{s}" for s in strides]
    if max_gap is not None:
        totals["max_gap"] = max_gap
        dropped += ["gaps", *(f"gap_dropped_stride_{s}" for s in strides)]
    totals.update({f"{name}_total": sum(r.get(name, 0) for r in rows) for name in dropped})
    return totals


def merged_stats(artifacts, strides) -> dict[int, tuple[PCAStats, int]]:
    """Per stride, all stored partitions' statistics merged, and how many partitions had train windows."""
    merged = {int(s): (PCAStats(), 0) for s in strides}
    for name in pca_stats_keys(artifacts):
        if not daily_partitions.has_partition_key(name):
            continue  # a file from partitions outside the current definition
        for stride, stats in load_pca_stats(artifacts, name).items():
            if stride not in merged:
                continue
            total, used = merged[stride]
            if total.n_features is not None and stats.n_features not in (None, total.n_features):
                raise ValueError(
                    f"pca_stats {name} (stride {stride}) has {stats.n_features} features, earlier partitions "
                    f"{total.n_features}: window_size or the feature columns changed since; re-materialise "
                    "features, stride_windows and pca_stats for every partition"
                )
            merged[stride] = (total.merge(stats), used + (stats.n_samples > 0))
    return merged


@asset(
    name=PCA_MODELS,
    deps=[PCA_STATS],
    group_name="windows",
    kinds={"numpy"},
    check_specs=[
        checks.spec(
            PCA_MODELS,
            checks.EXPLAINED_VARIANCE,
            "Ratios finite, in [0, 1], decreasing, summing to at most 1.",
            per_day=False,
        )
    ],
)
def pca_models(
    context: AssetExecutionContext, settings: PipelineSettings, backend: BackendResource, store: ArtifactStoreResource
) -> MaterializeResult:
    """Per stride, PCA fitted on ALL train windows, merged from per-partition statistics (exact, order-free);
    the float64 eigendecomposition runs on the backend."""
    artifacts, compute = store.get(), backend.get()
    metadata, summary, ratios, ranks, widths = {"backend": compute.name}, [], {}, {}, {}
    with timed(metadata):
        merged = merged_stats(artifacts, settings.strides)
        short = [s for s, (stats, _) in merged.items() if stats.n_samples < 2]
        if short:
            in_range = sum(daily_partitions.has_partition_key(n) for n in pca_stats_keys(artifacts))
            files = {s: in_range for s in settings.strides}
            windows = {s: int(stats.n_samples) for s, (stats, _) in merged.items()}
            with_train = {s: used for s, (_, used) in merged.items()}
            w, first = settings.window_size, min(settings.strides)
            gaps = (
                f"; or gaps longer than max_gap={settings.max_gap} break the series"
                if getattr(settings, "max_gap", None)
                else ""
            )
            if not any(files.values()):
                reason = (
                    "pca_stats has not been materialised for any partition: materialise features, "
                    "stride_windows and pca_stats (for partitions that hold train rows) first"
                )
                if old_pca_stats_exist(artifacts, settings.strides):
                    reason += (
                        " (the pca_stats/stride=S/K.npz files there are an older layout, no longer read: "
                        "re-materialise pca_stats)"
                    )
            elif windows[first] < 2:
                reason = (
                    f"a window needs window_size={w} consecutive rows of one entity, all in the train split: "
                    f"either the entities have fewer than {w} rows each in the materialised partitions (too "
                    f"few rows per entity, or window_size too large for the data: lower window_size or "
                    f"materialise more partitions), or no row falls in the train split (check the split "
                    f"fractions and the split key){gaps}"
                )
            else:
                reason = (
                    f"stride s keeps every s-th window: {windows[first]} train windows at stride {first} are "
                    f"too few for stride(s) {short}; use smaller strides or more partitions"
                )
            raise ValueError(
                f"stride(s) {short}: fewer than 2 train windows, PCA cannot be fitted. pca_stats files per stride: "
                f"{files} (of {len(daily_partitions.get_partition_keys())} partitions in the definition); "
                f"partitions with train windows per stride: {with_train}; train windows per stride: {windows}. "
                f"Likely reason: {reason}"
            )
        for stride in settings.strides:
            stats, used = merged[stride]
            assert stats.n_features is not None, "statistics of 2 or more windows know their width"
            k = min(settings.n_components, stats.n_samples, stats.n_features)
            if k < settings.n_components:
                context.log.warning(
                    f"stride {stride}: n_components {settings.n_components} is more than "
                    f"{stats.n_samples} windows x {stats.n_features} features allow; using {k}"
                )
            rank = ranks[stride] = stats.numerical_rank(settings.dtype)
            widths[stride] = int(stats.n_features)
            if k > rank:
                warning = (
                    f"stride {stride}: n_components {k} exceeds the numerical rank {rank} of the train "
                    f"windows ({stats.n_features} features, {settings.dtype}): components beyond {rank} explain "
                    f"less than eps x {stats.n_features} of the largest, which {settings.dtype} rounding does not "
                    "resolve (rank-deficient windows: e.g. sin/cos columns of consecutive hours are linearly dependent)"
                )
                context.log.warning(warning)
                metadata[f"rank_warning_stride_{stride}"] = warning
            model = stats.fit(k, backend=compute)
            save_pca_model(artifacts, stride, model)
            ratio = ratios[stride] = model.explained_variance_ratio_
            # plain numbers: the UI plots them across materialisations
            metadata[f"explained_variance_at_k_stride_{stride}"] = round(float(ratio.sum()), 6)
            metadata[f"first_component_ratio_stride_{stride}"] = round(float(ratio[0]), 6)
            metadata[f"train_windows_stride_{stride}"] = int(model.n_samples_)
            # short headers, most telling first: the UI shows the table inline at the metadata column's width
            summary.append(
                {
                    "stride": stride,
                    "explained": round(float(ratio.sum()), 4),
                    "k": int(model.n_components_),
                    "rank": rank,
                    "width": int(model.n_features_in_),
                    "windows": int(model.n_samples_),
                    "days": used,
                }
            )
            metadata[f"explained_variance_ratio_stride_{stride}"] = markdown_table(
                [
                    {"component": i + 1, "ratio": round(float(r), 5), "cumulative": round(float(c), 5)}
                    for i, (r, c) in enumerate(zip(ratio, np.cumsum(ratio), strict=True))
                ]
            )
    metadata["models"] = markdown_table(summary)
    metadata["scree_plot"] = scree_plot_metadata(ratios)
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            checks.explained_variance_check(ratios, settings.dtype, n_features_by_stride=widths, ranks_by_stride=ranks)
        ],
    )


load_model = load_pca_model  # the name tests import from here


@asset(
    name=PROJECTED,
    **PARTITIONED,
    deps=[FEATURES, STRIDE_WINDOWS, PCA_MODELS, CARRY_OF_THE_DAY],
    group_name="windows",
    kinds={"parquet"},
)
def projected_windows(
    context: AssetExecutionContext,
    source: SourceResource,
    settings: PipelineSettings,
    backend: BackendResource,
    store: ArtifactStoreResource,
) -> MaterializeResult:
    """Every window of the partition projected onto its stride's components: per stride, entity, end_time,
    split and pc_1 .. pc_k, in window order (Parquet, one file per stride and day)."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    models = {stride: load_pca_model(artifacts, stride) for stride in settings.strides}
    names = list(load_preprocessor(artifacts).feature_names_)
    entity = spec.entity_column or "entity"
    figures = StepFigures(context, {PROJECTED: {"backend": compute.name}})
    with figures.timed():
        for key, _, _ in run_partitions(context):
            windower = windower_for(artifacts, key, settings, len(names), PROJECTED)
            row, offset = {"partition": key}, 0
            with ExitStack() as files:
                outputs = {
                    s: files.enter_context(artifacts.frame_writer(PROJECTED, key, stride_folder(s))) for s in models
                }
                chunk: ChunkRows | None
                made: ChunkWindows | None
                for batch in feature_batches(artifacts, key, settings.rows_per_chunk):
                    chunk = chunk_rows(batch, names, spec.entity_column, spec.timestamp_column, settings.dtype)
                    made = windower.add(chunk, compute)
                    for s, model in models.items():
                        projected = compute.to_numpy(project_windows(made, s, model))
                        index = window_index(made, s, chunk, offset, entity).drop_columns(["row"])
                        outputs[s].write(
                            columns_table(projected, [f"pc_{i + 1}" for i in range(projected.shape[1])], index)
                        )
                        row[f"windows_stride_{s}"] = row.get(f"windows_stride_{s}", 0) + index.num_rows
                    offset += batch.num_rows
                    batch = chunk = made = projected = index = None  # not held while the next chunk is read
            figures.add(PROJECTED, row)
    figures.record()
    return MaterializeResult()
