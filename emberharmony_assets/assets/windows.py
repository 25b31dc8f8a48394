"""features -> stride_windows -> pca_stats (one streaming pass), pca_models, projected_windows.

``features`` applies the fitted preprocessor chunk by chunk; in the same pass the windows of each
chunk are found by the one rule (``emberharmony_core.windowing``), their index is stored
(``stride_windows``: which row each window ends on, never the expanded windows) and the
statistics of the train windows are accumulated straight from the rows (``pca_stats``). Each
entity's series continues from the previous partition through a small carry (its row count and
last ``window_size - 1`` rows), which is why ``stride_windows`` depends on its own previous
partition. ``pca_models`` merges the statistics; ``projected_windows`` reads ``features`` once more
and projects every window.
"""

from contextlib import ExitStack

import numpy as np
import pyarrow as pa
from dagster import AssetDep, AssetExecutionContext, AssetSpec, MaterializeResult, asset, multi_asset

from emberharmony_core.features.pca import PCAModel, PCAStats
from emberharmony_core.features.preprocess.config import PreprocessError
from emberharmony_core.layout import (CARRY, asset_schema, CYCLICAL, FEATURES, INDEX_DELTA, PCA_STATS, PROJECTED, STRIDE_WINDOWS,
                                      WINDOWS_LAYOUT, CarryWriter, StoredCarry, has_carry, iter_asset_frames,
                                      load_pca_stats, pca_stats_keys, save_pca_stats, stride_folder)
from emberharmony_core.store import repair_command, typed_columns
from emberharmony_core.windowing import Windower, chunk_rows, columns_table, project_windows, window_index, \
    window_stats_by_stride

from .. import checks
from ..partitions import daily_partitions, previous_partition
from ..plots import scree_plot_metadata
from ..resources import ArtifactStoreResource, BackendResource, PipelineSettings, SourceResource
from ._common import PARTITIONED, markdown_table, observe_partitions, per_partition_metadata, previous_partition_key, \
    run_partitions, selected_names, timed
from .ingest import EMPTY_DAY
from .preprocessing import load_preprocessor

WINDOW_STEPS = [FEATURES, STRIDE_WINDOWS, PCA_STATS]


def windower_for(artifacts, key: str, settings: PipelineSettings, n_features: int, sink=False) -> Windower:
    """A ``Windower`` continuing from the previous partition's stored carry (none before the first partition),
    handing its new carry to ``sink`` (False: not made)."""
    previous = previous_partition_key(key)
    carry = None
    if previous is not None:
        if not has_carry(artifacts, previous):
            if artifacts.exists(STRIDE_WINDOWS, CARRY, previous, suffix=".npz"):
                raise FileNotFoundError(
                    f"windows of partition {key} continue each entity's series from partition {previous}, whose window "
                    f"carry is an .npz file of an earlier emberharmony (the carry is now streamed, as .arrow): "
                    f"re-materialise stride_windows from the first partition (a range backfill)")
            raise FileNotFoundError(
                f"windows of partition {key} continue each entity's series from partition {previous}, whose window "
                f"carry is missing: materialise stride_windows for {previous} first (or backfill the range from there)")
        carry = StoredCarry(artifacts, previous)
    return Windower(settings.window_size, settings.strides, carry, n_features=n_features, dtype=settings.dtype,
                    max_gap=settings.max_gap, sink=sink)


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
        first = daily_partitions.get_first_partition_key()
        last = max([key, *artifacts.frame_keys(FEATURES)])
        change = " and ".join([*([f"adds {added}"] if added else []), *([f"no longer makes {gone}"] if gone else [])])
        whose = "" if day == key else f" (whose rows the windows of partition {key} continue)"
        raise PreprocessError(
            f"the features of partition {day}{whose} were made with another preprocessor: the fitted one "
            f"{change or 'orders the feature columns differently'} (it was refitted since, e.g. on a category first "
            f"seen in a later day). Every partition's features and windows must come from one preprocessor: "
            f"re-materialise features, stride_windows and pca_stats for every partition from {first} to {last} in "
            f"one run, then pca_models and projected_windows. The first: "
            f"{repair_command(','.join(WINDOW_STEPS), first, artifacts.base, last)}")


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


@multi_asset(
    name="features_and_windows",
    specs=[
        AssetSpec(FEATURES, deps=[CYCLICAL, "preprocessor"], group_name="preprocessing", kinds={"parquet"},
                  description="Every row imputed, scaled and one-hot encoded with the fitted preprocessor (all splits); "
                              "entity, timestamp, split and target are carried along."),
        AssetSpec(STRIDE_WINDOWS, group_name="windows", kinds={"parquet"},
                  deps=[FEATURES, AssetDep(STRIDE_WINDOWS, partition_mapping=previous_partition)],
                  description="Per stride, the windows ending in the partition, stored as an index (row of features "
                              "each ends on, entity, end time, split) plus each entity's carry; load the windows "
                              "with emberharmony_core.layout.load_stride_windows."),
        AssetSpec("pca_stats", deps=[STRIDE_WINDOWS], group_name="windows", kinds={"numpy"},
                  description="Per stride, mergeable PCA statistics (count, mean, scatter; float64) of the "
                              "partition's TRAIN windows, computed from the feature rows."),
    ],
    check_specs=[
        checks.spec(FEATURES, checks.FINITE_FEATURES, "no NaN or inf in any feature column after imputation and scaling"),
        checks.spec(STRIDE_WINDOWS, checks.WINDOW_COUNTS,
                    "windows per stride equal what each entity's row counts imply (closed form)"),
    ],
    can_subset=True,
    **PARTITIONED,
)
def features_and_windows(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
                         backend: BackendResource, store: ArtifactStoreResource):
    """Per partition, one pass over its rows: features, the window index and carry, the train windows' statistics."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    selected = selected_names(context)
    fitted = load_preprocessor(artifacts)
    names = list(fitted.feature_names_)
    strides, w = list(settings.strides), settings.window_size
    entity = spec.entity_column
    artifacts.write_json({"window_size": w, "strides": strides, "feature_columns": names, "entity_column": entity,
                          "timestamp_column": spec.timestamp_column, "dtype": settings.dtype,
                          "max_gap": settings.max_gap},
                         STRIDE_WINDOWS, WINDOWS_LAYOUT)
    windowing = bool(selected & {STRIDE_WINDOWS, "pca_stats"})
    rows = {name: [] for name in WINDOW_STEPS}
    totals = {FEATURES: {"rows": 0, "features": len(names), "backend": compute.name},
              # settings as text: a number would be plotted across materialisations as a flat line
              STRIDE_WINDOWS: {"backend": compute.name, "strides": str(strides),
                               "window": f"{w} rows x {len(names)} features = {w * len(names)} values"},
              "pca_stats": {"backend": compute.name}}
    bad = np.zeros(len(names), dtype=np.int64)
    expected, produced = dict.fromkeys(strides, 0), dict.fromkeys(strides, 0)
    timing = totals[FEATURES if FEATURES in selected else STRIDE_WINDOWS if STRIDE_WINDOWS in selected else "pca_stats"]
    with timed(timing):
        for key, _, _ in run_partitions(context):
            if FEATURES in selected:  # (features table, its feature matrix) per chunk
                chunks = transformed_chunks(fitted, iter_asset_frames(artifacts, CYCLICAL, key, settings.rows_per_chunk),
                                            key, asset_schema(artifacts, CYCLICAL, key))
            else:
                chunks = ((batch, None) for batch in artifacts.iter_batches(FEATURES, key, rows=settings.rows_per_chunk))
            if windowing or FEATURES not in selected:
                check_feature_columns(artifacts, key, fitted, made_now=FEATURES in selected)
            stats = {s: PCAStats(w * len(names)) for s in strides}
            counts = {f"windows_stride_{s}": 0 for s in strides}
            dropped, gap_dropped, gaps = dict.fromkeys(strides, 0), dict.fromkeys(strides, 0), 0
            n_rows = 0
            with ExitStack() as files:
                # the new carry streams to its file as entities end (only stride_windows stores it); entered
                # first, so renamed last, after the partition's other files
                sink = files.enter_context(CarryWriter(artifacts, key, w, len(names), settings.dtype)) \
                    if STRIDE_WINDOWS in selected else False
                windower = windower_for(artifacts, key, settings, len(names), sink) if windowing else None
                features_file = files.enter_context(artifacts.frame_writer(FEATURES, key)) if FEATURES in selected else None
                index_files = {s: files.enter_context(artifacts.frame_writer(STRIDE_WINDOWS, key, stride_folder(s),
                                                                            delta=INDEX_DELTA))
                               for s in strides} if STRIDE_WINDOWS in selected else {}
                for table, matrix in chunks:
                    chunk = chunk_rows(table, names, entity, spec.timestamp_column, settings.dtype,
                                                  features=matrix) if windower else None
                    if features_file is not None:
                        features_file.write(table)
                        bad += checks.count_bad_values(matrix)
                    if windower is not None:
                        made = windower.add(chunk, compute)
                        gaps += made.gaps
                        for s in strides:
                            counts[f"windows_stride_{s}"] += len(made.starts[s])
                            dropped[s] += made.mixed_split_dropped[s]
                            gap_dropped[s] += made.gap_dropped[s]
                            expected[s] += made.expected[s]
                            produced[s] += made.candidates[s]
                            if s in index_files:
                                index_files[s].write(window_index(made, s, chunk, n_rows, entity or "entity"))
                        if "pca_stats" in selected:  # each train window gathered and multiplied once for all strides
                            for s, part in window_stats_by_stride(made, strides).items():
                                stats[s] = stats[s].merge(part)
                    n_rows += table.num_rows
                    table = matrix = chunk = made = None  # not held while the next chunk is read
                if windower is not None:
                    windower.finish()  # the rest of the carry: the last entity, and those this day did not have
            if STRIDE_WINDOWS in selected:
                row = {"partition": key, "rows": n_rows, **counts, **({"empty_day": EMPTY_DAY} if not n_rows else {})}
                row.update({f"mixed_split_dropped_stride_{s}": n for s, n in dropped.items() if n})
                if settings.max_gap is not None:  # gaps longer than max_gap, and the windows spanning them
                    row.update({"gaps": gaps, **{f"gap_dropped_stride_{s}": n for s, n in gap_dropped.items()}})
                rows[STRIDE_WINDOWS].append(row)
            if "pca_stats" in selected:
                save_pca_stats(artifacts, key, stats)
                rows["pca_stats"].append({"partition": key, **{f"train_windows_stride_{s}": stats[s].n_samples
                                                               for s in strides}})
            if FEATURES in selected:
                rows[FEATURES].append({"partition": key, "rows": n_rows})
                totals[FEATURES]["rows"] += n_rows
    for s in strides:
        totals[STRIDE_WINDOWS][f"windows_stride_{s}"] = sum(r[f"windows_stride_{s}"] for r in rows[STRIDE_WINDOWS])
    dropped_names = [f"mixed_split_dropped_stride_{s}" for s in strides]
    if settings.max_gap is not None:
        totals[STRIDE_WINDOWS]["max_gap"] = settings.max_gap
        dropped_names += ["gaps", *(f"gap_dropped_stride_{s}" for s in strides)]
    for name in dropped_names:  # over the run's partitions (a range's table shows only its first and last ones)
        totals[STRIDE_WINDOWS][f"{name}_total"] = sum(r.get(name, 0) for r in rows[STRIDE_WINDOWS])
    observed = STRIDE_WINDOWS if STRIDE_WINDOWS in selected else min(selected & set(WINDOW_STEPS), key=WINDOW_STEPS.index)
    observe_partitions(context, observed, *(rows[name] for name in WINDOW_STEPS if name in selected))
    for name in WINDOW_STEPS:
        if name not in selected:
            continue
        totals[name].update({k: timing[k] for k in ("seconds", "peak_rss_mib")})
        results = []
        if name == FEATURES:
            results.append(checks.finite_features_check(bad, totals[FEATURES]["rows"], names, asset_key=FEATURES))
        if name == STRIDE_WINDOWS:
            results.append(checks.window_counts_check(expected, produced, asset_key=STRIDE_WINDOWS))
        yield MaterializeResult(asset_key=name, metadata=per_partition_metadata(rows[name], totals[name]),
                                check_results=results)


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
                raise ValueError(f"pca_stats {name} (stride {stride}) has {stats.n_features} features, earlier partitions "
                                 f"{total.n_features}: window_size or the feature columns changed since; re-materialise "
                                 "features, stride_windows and pca_stats for every partition")
            merged[stride] = (total.merge(stats), used + (stats.n_samples > 0))
    return merged


@asset(deps=["pca_stats"], group_name="windows", kinds={"numpy"}, check_specs=[checks.spec(
    "pca_models", checks.EXPLAINED_VARIANCE, "ratios finite, in [0, 1], decreasing, summing to at most 1")])
def pca_models(context: AssetExecutionContext, settings: PipelineSettings, backend: BackendResource,
               store: ArtifactStoreResource) -> MaterializeResult:
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
            gaps = (f"; or gaps longer than max_gap={settings.max_gap} break the series"
                    if getattr(settings, "max_gap", None) else "")
            if not any(files.values()):
                reason = ("pca_stats has not been materialised for any partition: materialise features, "
                          "stride_windows and pca_stats (for partitions that hold train rows) first")
                if any(artifacts.list_names(PCA_STATS, stride_folder(s), suffix=".npz") for s in settings.strides):
                    reason += (" (the pca_stats/stride=S/K.npz files there are an older layout, no longer read: "
                               "re-materialise pca_stats)")
            elif windows[first] < 2:
                reason = (f"a window needs window_size={w} consecutive rows of one entity, all in the train split: "
                          f"either the entities have fewer than {w} rows each in the materialised partitions (too "
                          f"few rows per entity, or window_size too large for the data: lower window_size or "
                          f"materialise more partitions), or no row falls in the train split (check the split "
                          f"fractions and the split key){gaps}")
            else:
                reason = (f"stride s keeps every s-th window: {windows[first]} train windows at stride {first} are "
                          f"too few for stride(s) {short}; use smaller strides or more partitions")
            raise ValueError(
                f"stride(s) {short}: fewer than 2 train windows, PCA cannot be fitted. pca_stats files per stride: "
                f"{files} (of {len(daily_partitions.get_partition_keys())} partitions in the definition); "
                f"partitions with train windows per stride: {with_train}; train windows per stride: {windows}. "
                f"Likely reason: {reason}")
        for stride in settings.strides:
            stats, used = merged[stride]
            k = min(settings.n_components, stats.n_samples, stats.n_features)
            if k < settings.n_components:
                context.log.warning(f"stride {stride}: n_components {settings.n_components} is more than "
                                    f"{stats.n_samples} windows x {stats.n_features} features allow; using {k}")
            rank = ranks[stride] = stats.numerical_rank(settings.dtype)
            widths[stride] = int(stats.n_features)
            if k > rank:
                warning = (f"stride {stride}: n_components {k} exceeds the numerical rank {rank} of the train "
                           f"windows ({stats.n_features} features, {settings.dtype}): components beyond {rank} explain less than "
                           f"eps x {stats.n_features} of the largest, which {settings.dtype} rounding does not resolve "
                           "(rank-deficient windows: e.g. sin/cos columns of consecutive hours are linearly dependent)")
                context.log.warning(warning)
                metadata[f"rank_warning_stride_{stride}"] = warning
            model = stats.fit(k, backend=compute)
            artifacts.write_arrays(model.to_arrays(), "pca_models", stride_folder(stride))
            ratio = ratios[stride] = model.explained_variance_ratio_
            # plain numbers: the UI plots them across materialisations
            metadata[f"explained_variance_at_k_stride_{stride}"] = round(float(ratio.sum()), 6)
            metadata[f"first_component_ratio_stride_{stride}"] = round(float(ratio[0]), 6)
            metadata[f"train_windows_stride_{stride}"] = int(model.n_samples_)
            summary.append({"stride": stride, "train_windows": int(model.n_samples_), "partitions": used,
                            "features": int(model.n_features_in_), "components": int(model.n_components_),
                            "numerical_rank": rank, "explained_variance": round(float(ratio.sum()), 4)})
            metadata[f"explained_variance_ratio_stride_{stride}"] = markdown_table(
                [{"component": i + 1, "ratio": round(float(r), 5), "cumulative": round(float(c), 5)}
                 for i, (r, c) in enumerate(zip(ratio, np.cumsum(ratio)))])
    metadata["models"] = markdown_table(summary)
    metadata["scree_plot"] = scree_plot_metadata(ratios)
    return MaterializeResult(metadata=metadata, check_results=[checks.explained_variance_check(
        ratios, settings.dtype, n_features_by_stride=widths, ranks_by_stride=ranks)])


def load_model(artifacts, stride: int) -> PCAModel:
    return PCAModel.from_arrays(artifacts.read_arrays("pca_models", stride_folder(stride)))


@asset(**PARTITIONED, deps=[STRIDE_WINDOWS, pca_models], group_name="windows", kinds={"parquet"})
def projected_windows(context: AssetExecutionContext, source: SourceResource, settings: PipelineSettings,
                      backend: BackendResource, store: ArtifactStoreResource) -> MaterializeResult:
    """Every window of the partition projected onto its stride's components: per stride, entity, end_time,
    split and pc_1 .. pc_k, in window order (Parquet, one file per stride and day)."""
    artifacts, compute, spec = store.get(), backend.get(), source.spec()
    models = {stride: load_model(artifacts, stride) for stride in settings.strides}
    names = list(load_preprocessor(artifacts).feature_names_)
    entity = spec.entity_column or "entity"
    rows, totals = [], {"backend": compute.name}
    with timed(totals):
        for key, _, _ in run_partitions(context):
            windower = windower_for(artifacts, key, settings, len(names))
            row, offset = {"partition": key}, 0
            with ExitStack() as files:
                outputs = {s: files.enter_context(artifacts.frame_writer(PROJECTED, key, stride_folder(s))) for s in models}
                for batch in artifacts.iter_batches(FEATURES, key, rows=settings.rows_per_chunk):
                    chunk = chunk_rows(batch, names, spec.entity_column, spec.timestamp_column, settings.dtype)
                    made = windower.add(chunk, compute)
                    for s, model in models.items():
                        projected = compute.to_numpy(project_windows(made, s, model))
                        index = window_index(made, s, chunk, offset, entity).drop_columns(["row"])
                        outputs[s].write(columns_table(projected, [f"pc_{i + 1}" for i in range(projected.shape[1])], index))
                        row[f"windows_stride_{s}"] = row.get(f"windows_stride_{s}", 0) + index.num_rows
                    offset += batch.num_rows
                    batch = chunk = made = projected = index = None  # not held while the next chunk is read
                for s, model in models.items():  # an empty partition still gets its (empty) files, typed
                    if outputs[s].schema is None:
                        keys = artifacts.frame_schema(FEATURES, key).field(entity).type if spec.entity_column else pa.null()
                        outputs[s].write(pa.schema(
                            [(entity, keys), ("end_time", pa.timestamp("ns", tz="UTC")), ("split", pa.string()),
                             *((f"pc_{i + 1}", pa.from_numpy_dtype(np.dtype(settings.dtype)))
                               for i in range(model.n_components_))]).empty_table())
            rows.append(row)
    observe_partitions(context, PROJECTED, rows)
    return MaterializeResult(metadata=per_partition_metadata(rows, totals))
