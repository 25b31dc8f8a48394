"""The asset graph, one module per domain."""

from .ingest import cyclical_features, raw_chunk, split_data
from .preprocessing import features, preprocess_stats, preprocessor
from .windows import pca_models, pca_stats, projected_windows, stride_windows

partitioned_assets = [raw_chunk, split_data, cyclical_features, preprocess_stats, features, stride_windows, pca_stats,
                      projected_windows]
all_assets = [raw_chunk, split_data, cyclical_features, preprocess_stats, preprocessor, features, stride_windows,
              pca_stats, pca_models, projected_windows]
