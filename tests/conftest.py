"""Shared fixtures. ``backend`` runs a test once per backend; a backend that is not installed
fails the test (it is part of the product, not an optional extra to skip)."""

from __future__ import annotations

import pytest

from emberharmony_core.ops import BACKEND_NAMES as _ALL

BACKEND_NAMES = list(_ALL)  # ["numpy", "torch", "mlx"]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """A backend object from ``get_backend(name)`` for each name in ``BACKEND_NAMES``."""
    from emberharmony_core.ops import BackendUnavailableError, get_backend

    try:
        return get_backend(request.param)
    except BackendUnavailableError as exc:
        pytest.fail(f"backend {request.param!r} must be installed for the test suite: {exc}")
