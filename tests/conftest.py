"""Shared fixtures. ``backend`` runs a test once per backend; a backend that is not installed
fails the test (it is part of the product, not an optional extra to skip)."""

from __future__ import annotations

import pytest

from emberharmony_core.ops import BACKEND_NAMES as _ALL

BACKEND_NAMES = list(_ALL)  # ["numpy", "torch", "mlx"]


def pytest_collection_modifyitems(items) -> None:
    """Every test under tests/bigquery/ is marked ``bigquery`` (they share the emulator): ``-m 'not bigquery'``."""
    for item in items:
        if item.nodeid.startswith("tests/bigquery/"):
            item.add_marker(pytest.mark.bigquery)


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """A backend object from ``get_backend(name)`` for each name in ``BACKEND_NAMES``."""
    from emberharmony_core.ops import BackendUnavailableError, get_backend

    try:
        return get_backend(request.param)
    except BackendUnavailableError as exc:
        pytest.fail(f"backend {request.param!r} must be installed for the test suite: {exc}")


def materialized_metadata(result, asset: str) -> dict:
    """Metadata of the first materialisation of ``asset`` in a run result (by asset key: several assets share
    a multi-asset node)."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return materialization.metadata
    raise KeyError(f"no materialisation of {asset!r} in run {result.run_id}")


def artifact_files(folder) -> list[str]:
    """The artifacts under ``folder`` (relative paths), leaving out the store's hidden lock files (``.writers*``,
    ``.locks/``): what "nothing was written" is about."""
    from pathlib import Path

    root = Path(folder)
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def failure_text(error: BaseException | None) -> str:
    """The error and every error it was raised from (Dagster wraps asset and resource failures)."""
    texts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(texts)
