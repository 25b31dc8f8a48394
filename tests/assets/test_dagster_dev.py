"""`dagster dev` on workspace.yaml serves the graph: a real webserver, asked over GraphQL."""

from __future__ import annotations

from pathlib import Path

from emberharmony_assets.testing import dagster_dev

ROOT = Path(__file__).resolve().parents[2]
QUERY = """{ assetNodes { assetKey { path } isPartitioned hasAssetChecks } }"""


def test_dagster_dev_loads_the_workspace_and_lists_the_assets(tmp_path):
    # dagster_dev returns once the webserver lists assets (empty while the code location loads)
    with dagster_dev(tmp_path, tmp_path / "data", workspace=ROOT / "workspace.yaml", grace=30) as server:
        nodes = server.graphql(QUERY, timeout=5)["assetNodes"]
    assert nodes, "webserver never listed assets"
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"raw_chunk", "split_data", "cyclical_features", "stride_windows", "pca_models"} <= set(by_key)
    assert by_key["stride_windows"]["isPartitioned"] and not by_key["pca_models"]["isPartitioned"]
    assert by_key["pca_models"]["hasAssetChecks"]
