"""Feature functions: split, cyclical datetime features, stride windows, PCA, preprocessing, and
scikit-learn interop (``StreamingPCA``; importing it needs scikit-learn).

Names resolve lazily so that importing one feature module does not import the others.
"""

from importlib import import_module

_EXPORTS = {
    "assign_split": "split",
    "split_bucket": "split",
    "validate_fractions": "split",
    "split_thresholds": "split",
    "split_sql_expression": "split",
    "farm_fingerprint": "split",
    "cyclical_matrix": "cyclical",
    "cyclical_features": "cyclical",
    "CYCLICAL_SUFFIXES": "cyclical",
    "stride_windows": "windows",
    "PCAStats": "pca",
    "PCAModel": "pca",
    "project_stride_windows": "pca",
    "iter_project_stride_windows": "pca",
    "StreamingPCA": "sklearn_api",
    "PreprocessConfig": "preprocess",
    "PreprocessStats": "preprocess",
    "FittedPreprocessor": "preprocess",
    "compute_partition_stats": "preprocess",
    "merge_stats": "preprocess",
    "fit_preprocessor": "preprocess",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
