"""Asset checks, evaluated inside the materialising asset on exactly the partitions it wrote.

Each function returns an ``AssetCheckResult``; the assets declare the matching
``AssetCheckSpec`` so the UI lists the checks beside them.
"""

from __future__ import annotations

import math

import numpy as np
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from emberharmony_core.features.pca import numerical_rank, rank_tolerance
from emberharmony_core.names import SPLIT_NAMES

SPLIT_FRACTIONS = "split_fractions_near_configured"
FINITE_FEATURES = "no_missing_or_infinite_features"
CYCLICAL_RANGE = "cyclical_features_finite_in_unit_range"
WINDOW_COUNTS = "window_counts_match_rows"
EXPLAINED_VARIANCE = "explained_variance_sane"

# below this many distinct split keys, sampling noise swamps any fraction test
MIN_KEYS_FOR_FRACTIONS = 20


# checks that guard correctness: when one fails, Dagster does not run what depends on the asset
BLOCKING = {FINITE_FEATURES, WINDOW_COUNTS, EXPLAINED_VARIANCE}


# what a check's history shows after a run over several days
PER_DAY_NOTE = (
    " Each day has its own result; the one without a day is the whole run's, which decides whether "
    "what depends on the asset runs."
)
ONCE_NOTE = (
    " It runs once per run, on the models: in a run over several days Dagster also lists one execution "
    "per day, which reads Skipped."
)


def spec(asset: str, name: str, description: str, per_day: bool = True) -> AssetCheckSpec:
    """``per_day``: the asset is partitioned and its step records each day's own result (``record_day_checks``)."""
    return AssetCheckSpec(
        name=name,
        asset=asset,
        description=description + (PER_DAY_NOTE if per_day else ONCE_NOTE),
        blocking=name in BLOCKING,
    )


def split_fractions_check(sample, fractions, names=SPLIT_NAMES, asset_key: str | None = None) -> AssetCheckResult:
    """Share of distinct split keys per split within 4 binomial standard deviations (+1 point) of the configured
    fraction; ``sample``: a ``SplitKeySample`` of the keys seen (every key up to its capacity, a uniform sample
    beyond)."""
    n, key_splits = len(sample.splits), sample.splits
    counted = {"distinct_keys": sample.distinct}
    if sample.sampled:
        counted.update({"sampled_keys": n, "note": f"shares from a uniform hash sample of {n:,} keys"})
    if n < MIN_KEYS_FOR_FRACTIONS:
        return AssetCheckResult(
            check_name=SPLIT_FRACTIONS,
            asset_key=asset_key,
            passed=True,
            metadata={**counted, "note": f"fewer than {MIN_KEYS_FOR_FRACTIONS} distinct split keys; not tested"},
        )
    observed, problems = {}, []
    for name, fraction in zip(names, fractions, strict=True):
        share = float(np.mean(key_splits == name))
        tolerance = 4 * math.sqrt(fraction * (1 - fraction) / n) + 0.01
        observed[name] = round(share, 4)
        if abs(share - fraction) > tolerance:
            problems.append(f"{name}: {share:.3f} vs configured {fraction} (tolerance {tolerance:.3f})")
    return AssetCheckResult(
        check_name=SPLIT_FRACTIONS,
        asset_key=asset_key,
        passed=not problems,
        severity=AssetCheckSeverity.WARN,
        metadata={
            **counted,
            **{f"share_{k}": v for k, v in observed.items()},
            "problems": "; ".join(problems) or "none",
        },
    )


def count_bad_values(matrix: np.ndarray, bound: float | None = None) -> np.ndarray:
    """Per column, how many values are NaN or inf (or exceed ``bound`` in absolute value)."""
    bad = ~np.isfinite(matrix)
    if bound is not None:
        bad |= np.abs(np.nan_to_num(matrix)) > bound
    return bad.sum(axis=0)


def finite_features_check(
    bad_counts: np.ndarray,
    rows: int,
    columns: list[str],
    check_name: str = FINITE_FEATURES,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
    asset_key: str | None = None,
) -> AssetCheckResult:
    """Passes when no feature column holds a bad value; names the offending columns and counts."""
    offenders = {columns[i]: int(c) for i, c in enumerate(bad_counts) if c}
    return AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=not offenders,
        severity=severity,
        metadata={
            "columns_checked": len(columns),
            "rows_checked": int(rows),
            "bad_values_by_column": str(offenders) if offenders else "none",
        },
    )


def window_counts_check(
    expected: dict[int, int], produced: dict[int, int], asset_key: str | None = None
) -> AssetCheckResult:
    """Windows made (before dropping mixed-split ones) equal what the partition's row counts imply, per stride."""
    mismatched = {s: (expected[s], produced.get(s)) for s in expected if expected[s] != produced.get(s)}
    return AssetCheckResult(
        check_name=WINDOW_COUNTS,
        asset_key=asset_key,
        passed=not mismatched,
        metadata={
            **{f"expected_stride_{s}": int(v) for s, v in expected.items()},
            **{f"produced_stride_{s}": int(v) for s, v in produced.items()},
            "mismatched": str(mismatched) if mismatched else "none",
        },
    )


def explained_variance_check(
    ratios_by_stride: dict[int, np.ndarray],
    dtype: str = "float32",
    *,
    n_features_by_stride: dict[int, int] | None = None,
    ranks_by_stride: dict[int, int] | None = None,
) -> AssetCheckResult:
    """Ratios finite, in [0, 1], non-increasing, summing to at most 1, first one positive: each up to rounding.

    Rounding is judged relative to ``dtype``'s epsilon (the windows' dtype: float32 windows are float32
    products even though the statistics are float64): ``tolerance = eps(dtype) * d``, with ``d`` the window
    width from ``n_features_by_stride`` (default: the number of ratios). Ratios in ``[-tolerance, 0)`` are
    rounding of zero eigenvalues and count as 0; the sum may exceed 1 by ``tolerance`` (clipped negative
    eigenvalues do that when ``n_components`` is above the numerical rank of rank-deficient windows, e.g.
    sin/cos columns of consecutive hours). Metadata: per stride the total ratio, the tolerance and the
    numerical rank (``ranks_by_stride`` when given, e.g. ``PCAStats.numerical_rank(dtype)``; else counted
    from the ratios, which only sees the first ``len(ratios)`` components).
    """
    problems: list[str] = []
    metadata: dict[str, str | float | int] = {"dtype": str(dtype)}
    for stride, ratio in ratios_by_stride.items():
        ratio = np.asarray(ratio, dtype=np.float64).reshape(-1)
        d = int((n_features_by_stride or {}).get(stride, ratio.size))
        tol = rank_tolerance(dtype, d)
        metadata[f"tolerance_stride_{stride}"] = float(f"{tol:.3g}")
        if ratio.size == 0:
            problems.append(f"stride {stride}: no explained-variance ratios")
            continue
        if not np.all(np.isfinite(ratio)):
            problems.append(f"stride {stride}: non-finite ratio")
            continue
        total = float(ratio.sum())
        metadata[f"total_ratio_stride_{stride}"] = round(total, 8)
        rank = (
            ranks_by_stride[stride]
            if ranks_by_stride and stride in ranks_by_stride
            else numerical_rank(ratio, d, dtype)
        )
        metadata[f"numerical_rank_stride_{stride}"] = int(rank)
        if ratio.size > rank:
            metadata[f"components_beyond_rank_stride_{stride}"] = int(ratio.size - rank)
        if ratio.min() < -tol or ratio.max() > 1 + tol:
            problems.append(
                f"stride {stride}: ratio outside [0, 1] beyond tolerance {tol:.2g} "
                f"(min {ratio.min():.3g}, max {ratio.max():.9g})"
            )
        clipped = np.clip(ratio, 0.0, None)
        rises = np.diff(clipped)
        if np.any(rises > tol):
            at = int(np.argmax(rises))
            problems.append(
                f"stride {stride}: ratios not in decreasing order (component {at + 2} is "
                f"{rises[at]:.3g} above component {at + 1})"
            )
        if clipped.sum() > 1 + tol:
            problems.append(f"stride {stride}: ratios sum to {clipped.sum():.9f} > 1 + {tol:.2g}")
        if clipped[0] <= 0:
            problems.append(f"stride {stride}: first component explains nothing")
    metadata["problems"] = "; ".join(problems) or "none"
    return AssetCheckResult(check_name=EXPLAINED_VARIANCE, passed=not problems, metadata=metadata)
