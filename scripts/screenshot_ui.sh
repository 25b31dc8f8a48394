#!/usr/bin/env bash
# Manual UI check (not part of `make test`): start `dagster dev` on the main job's instance and save headless-Chromium
# screenshots of the asset graph, a partition of stride_windows and pca_models (its scree plot), then stop the server.
#
#   make demo                                # once: data/demo.duckdb, the artifacts and a run in data/dagster_home
#   sudo apt-get install -y chromium         # Debian's Chromium (not installed by the project)
#   bash scripts/screenshot_ui.sh [OUT_DIR]  # default OUT_DIR: data/screenshots
#
# Look at the PNGs: the graph shows three groups (ingest, preprocessing, windows); the stride_windows partition page
# shows the materialisation's metadata labelled as the run's totals ("scope: run totals over 90 partitions ...") with
# the day's own observation below it; pca_models lists the plotted figures and the scree plot. Checked here once:
# the screenshots come out, but Dagster's first-visit "Join the Dagster community" dialog covers the page centre
# (a headless --screenshot cannot dismiss it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/screenshots}
PORT=${PORT:-3123}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "chromium not found: sudo apt-get install -y chromium" >&2; exit 1; }
export EMBERHARMONY_HOME=${EMBERHARMONY_HOME:-$PWD/data} DAGSTER_HOME=${DAGSTER_HOME:-$PWD/data/dagster_home}
mkdir -p "$OUT"
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$PORT" > "$OUT/dagster_dev.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do  # until the code location has loaded its assets
  if curl -s -H 'Content-Type: application/json' -d '{"query":"{ assetNodes { id } }"}' \
       "http://127.0.0.1:$PORT/graphql" | grep -q '"id"'; then break; fi
  sleep 1
done
shot() {  # shot NAME PATH: a 1600x1000 screenshot of http://127.0.0.1:$PORT/PATH after the page has rendered
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=1600,1000 \
    --virtual-time-budget=15000 --screenshot="$OUT/$1.png" "http://127.0.0.1:$PORT/$2" > /dev/null 2>&1
  echo "$OUT/$1.png"
}
shot asset_graph "asset-groups"
shot stride_windows_partition "assets/stride_windows?view=partitions&partition=2026-03-15"
shot pca_models "assets/pca_models"
