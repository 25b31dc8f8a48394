"""The short summary the main job prints: rows, windows per stride, explained variance, checks."""

from __future__ import annotations


def _totals(result) -> dict[str, dict]:
    """Metadata of each asset's materialisation (the run's totals), keyed by asset name."""
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out.setdefault(materialization.asset_key.to_user_string(),
                       {k: getattr(v, "value", v) for k, v in materialization.metadata.items()})
    return out


def print_summary(result, seconds: float) -> int:
    """Print the summary; return the process exit code (0 when the run and every check passed)."""
    totals = _totals(result)
    rows = totals.get("raw_chunk", {}).get("rows", 0)
    print(f"\nrun {result.run_id[:8]}: {'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s"
          + (f" ({rows / seconds:,.0f} rows/s end to end)" if rows and seconds else ""))
    print(f"rows: {rows:,}   peak RSS: {max((t.get('peak_rss_mib', 0) for t in totals.values()), default=0)} MiB")
    split = totals.get("split_data", {})
    if split:
        print("split rows: " + ", ".join(f"{s} {split.get(f'{s}_rows', 0):,}" for s in ("train", "validation", "test")))
    windows = totals.get("stride_windows", {})
    for key, value in windows.items():
        stride = key.removeprefix("windows_stride_")
        if stride.isdigit():
            print(f"windows, stride {stride}: {value:,}")
    models = totals.get("pca_models", {}).get("models")
    if models:
        print("pca_models:\n" + str(models))
    failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    checks = result.get_asset_check_evaluations()
    print(f"asset checks: {len(checks) - len(failed_checks)} passed, {len(failed_checks)} failed")
    for evaluation in failed_checks:
        print(f"  FAILED {evaluation.asset_key.to_user_string()}:{evaluation.check_name} {evaluation.metadata}")
    if not result.success:
        for event in result.all_events:
            if event.is_failure and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    print(f"  {event.step_key}: {error.message.strip()}")
    return 0 if result.success and not failed_checks else 1
