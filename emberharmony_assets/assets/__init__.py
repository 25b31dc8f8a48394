"""The asset graph, one module per domain: two streaming passes (ingest, features_and_windows) and the
steps between and after them (preprocessor, pca_models, projected_windows)."""

from .ingest import ingest
from .preprocessing import preprocessor
from .windows import features_and_windows, pca_models, projected_windows

partitioned_assets = [ingest, features_and_windows, projected_windows]
all_assets = [ingest, preprocessor, features_and_windows, pca_models, projected_windows]
