"""The asset graph, one module per domain: two streaming passes (ingest, features_and_windows) and the
steps between and after them (preprocessor, pca_models, projected_windows); with the BigQuery write-back
configured in the environment, ``export_assets`` (bigquery_features, bigquery_projected_windows) too."""

from .export import export_assets, export_enabled_from_env
from .ingest import ingest
from .preprocessing import preprocessor
from .windows import features_and_windows, pca_models, projected_windows

# the write-back assets join the default graph only when configured (EMBERHARMONY_SOURCE=bigquery and
# EMBERHARMONY_BQ_EXPORT_DATASET): the DuckDB default graph, its jobs and benchmark stay as they are
_export = export_assets if export_enabled_from_env() else []

partitioned_assets = [ingest, features_and_windows, projected_windows, *_export]
all_assets = [ingest, preprocessor, features_and_windows, pca_models, projected_windows, *_export]
