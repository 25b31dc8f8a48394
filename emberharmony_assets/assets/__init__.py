"""The asset graph, one module per domain: the streaming passes over a day's rows (ingest, features_and_tails,
windows_and_stats, projected_windows), each needing only that day, the light day-to-day fold (window_carry) and
the global fits (preprocessor, pca_models); with the BigQuery write-back
configured in the environment, ``export_assets`` (bigquery_features, bigquery_projected_windows) too."""

from .export import export_assets, export_enabled_from_env
from .features import features_and_tails
from .ingest import ingest
from .preprocessing import preprocessor
from .windows import pca_models, projected_windows, window_carry, windows_and_stats

# the write-back assets join the default graph only when configured (EMBERHARMONY_SOURCE=bigquery and
# EMBERHARMONY_BQ_EXPORT_DATASET): the DuckDB default graph, its jobs and benchmark stay as they are
_export = export_assets if export_enabled_from_env() else []

partitioned_assets = [ingest, features_and_tails, window_carry, windows_and_stats, projected_windows, *_export]
all_assets = [
    ingest,
    preprocessor,
    features_and_tails,
    window_carry,
    windows_and_stats,
    pca_models,
    projected_windows,
    *_export,
]
