"""What the UI's "Unsynced" badge says, through Dagster's own stale-status resolver (the one its GraphQL API
and the asset pages use): nothing after a clean run over a range, or after running that range again, and
exactly the direct dependents of a day that was remade (real DuckDB file, real Dagster instance).

``CachingStaleStatusResolver`` is Dagster's internal API (checked against the Dagster pinned in pyproject).
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from emberharmony_assets.definitions import defs
from emberharmony_assets.jobs import PARTITION_ASSETS
from emberharmony_assets.testing import materialize_days

from .conftest import PARTITIONS, make_resources

DAYS = PARTITIONS[:4]


def not_fresh(instance) -> dict[tuple[str, str | None], list[str]]:
    """(asset, partition) -> stale causes, over every materialised asset partition."""
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, lambda: graph, LoadingContextForTest(instance))
    out = {}
    for key in graph.materializable_asset_keys:
        partitions = sorted(instance.get_materialized_partitions(key)) if graph.get(key).is_partitioned else [None]
        for partition in partitions:
            if resolver.get_status(key, partition) != StaleStatus.FRESH:
                out[(key.to_user_string(), partition)] = [
                    f"{c.reason}: {c.dependency.asset_key.to_user_string()}[{c.dependency.partition_key}]"
                    if c.dependency
                    else c.reason
                    for c in resolver.get_stale_causes(key, partition)
                ]
    return out


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        yield instance


def test_a_clean_range_run_and_its_rerun_leave_nothing_unsynced(instance, demo_database, tmp_path):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    assert materialize_days(DAYS[0], DAYS[-1], resources=resources, instance=instance).success
    assert not_fresh(instance) == {}
    # the same range again: same files, nothing unsynced
    assert materialize_days(DAYS[0], DAYS[-1], resources=resources, instance=instance).success
    assert not_fresh(instance) == {}
    for day in DAYS:  # then day by day, as the daily schedule's job does (the global fits stay as they are)
        assert materialize_days(day, day, resources=resources, instance=instance, selection=PARTITION_ASSETS).success
    # each day's projections were made from that day's previous windows: exactly they say so (Dagster does not
    # judge an unpartitioned asset, pca_models, by its partitioned parents' new materialisations)
    assert set(not_fresh(instance)) == {("projected_windows", day) for day in DAYS}
    assert materialize_days(
        DAYS[0], DAYS[-1], resources=resources, instance=instance, selection=["pca_models", "projected_windows"]
    ).success
    assert not_fresh(instance) == {}


def test_remaking_one_day_marks_exactly_its_direct_dependents(instance, demo_database, tmp_path):
    resources = make_resources(demo_database, str(tmp_path / "artifacts"))
    # twice: a carry made by a range's FIRST run has no record of the day before to compare with (Dagster
    # records none when the asset has never been materialised), so the self-dependency is judged from the
    # second run on (docs/ui.md)
    assert materialize_days(DAYS[0], DAYS[-1], resources=resources, instance=instance).success
    assert materialize_days(DAYS[0], DAYS[-1], resources=resources, instance=instance).success
    assert materialize_days(
        DAYS[1], DAYS[1], resources=resources, instance=instance, selection=["features", "window_tails"]
    ).success
    stale = not_fresh(instance)
    # the assets that read that day's features or tails (pca_stats is made with stride_windows, from it)
    assert set(stale) == {("window_carry", DAYS[1]), ("stride_windows", DAYS[1]), ("projected_windows", DAYS[1])}, stale
    assert any("features" in cause for cause in stale[("stride_windows", DAYS[1])])
    # remaking that day's carry makes the next day's carry (which folds it) unsynced, and nothing before
    assert materialize_days(
        DAYS[1], DAYS[1], resources=resources, instance=instance, selection=["window_carry"]
    ).success
    stale = not_fresh(instance)
    assert ("window_carry", DAYS[2]) in stale and ("window_carry", DAYS[1]) not in stale, stale
    assert all(partition >= DAYS[1] for _, partition in stale), stale
    # the days after it, each in its own run and in order (the daily job's way): each one in sync once remade
    for day in DAYS[2:]:
        assert materialize_days(day, day, resources=resources, instance=instance, selection=["window_carry"]).success
        assert ("window_carry", day) not in not_fresh(instance)
    assert not any(asset == "window_carry" for asset, _ in not_fresh(instance))
