#!/usr/bin/env bash
# Create .venv-bqemu/: the BigQuery emulator (bqemulator) in its own virtual environment.
#
# Why a separate venv: bqemulator pins sqlglot<30.12 and needs a DuckDB whose spatial
# extension is on PyPI (duckdb-extension-spatial tops out at 1.5.5), while the project
# itself runs duckdb 2.x and a newer sqlglot. tests/bigquery/conftest.py starts the
# emulator from this venv as a subprocess.
#
# Offline start: bqemulator loads DuckDB's `spatial` extension (required) and `avro`
# (best effort, but without it every start tries a download first) when it opens its catalog.
# Normally DuckDB downloads it from extensions.duckdb.org; here it comes from the PyPI
# packages duckdb-extension-{spatial,avro} / duckdb-extensions (same version as duckdb):
# `duckdb_extensions.import_extension(name)` INSTALLs the wheel's file into DuckDB's
# extension directory (~/.duckdb/extensions/v1.5.5/...), once; after that the emulator's
# own `LOAD spatial` finds it and nothing is downloaded. (The pytest fixture repeats the
# import when that file is missing, e.g. HOME changed between setup and tests.)
#
# Idempotent: re-running with everything in place only re-checks it. Needs python3 >= 3.11
# (bqemulator requires it) with the venv module; override with PYTHON=/path/to/python3.11.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BQEMU_VENV:-$ROOT/.venv-bqemu}"
PYTHON="${PYTHON:-python3}"

BQEMULATOR_VERSION=1.4.0
DUCKDB_VERSION=1.5.5        # newest DuckDB with a duckdb-extension-spatial wheel on PyPI
SQLGLOT_VERSION=30.11.0     # bqemulator 1.4.0 requires sqlglot>=30.9,<30.12
PINS=(
  "bqemulator==${BQEMULATOR_VERSION}"
  "duckdb==${DUCKDB_VERSION}"
  "duckdb-extension-spatial==${DUCKDB_VERSION}"
  "duckdb-extension-avro==${DUCKDB_VERSION}"
  "duckdb-extensions==${DUCKDB_VERSION}"
  "numpy==2.4.6"            # not declared by bqemulator, but its DuckDB result path needs it
  "sqlglot==${SQLGLOT_VERSION}"
)

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup_bqemulator.sh: bqemulator needs Python >= 3.11, got {sys.version.split()[0]}; "
             "set PYTHON=/path/to/python3.11")
PY

check() {
  "$VENV/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want = dict(p.split("==") for p in sys.argv[1:])
bad = {k: version(k) for k in want if version(k) != want[k]}
if bad:
    sys.exit(1)
import duckdb
from duckdb_extensions import import_extension
con = duckdb.connect()
for ext in ("spatial", "avro"):
    import_extension(ext, con=con)  # INSTALL from the wheel into ~/.duckdb/extensions (no download)
    con.execute(f"LOAD {ext}")
import numpy  # noqa: F401
import bqemulator.cli  # noqa: F401
PY
}

if [ -x "$VENV/bin/python" ] && check "${PINS[@]}"; then
  echo "bqemulator ${BQEMULATOR_VERSION} already set up in $VENV"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"

if ! check "${PINS[@]}"; then
  echo "setup_bqemulator.sh: $VENV was installed but the check failed (spatial extension not loadable offline?)" >&2
  "$VENV/bin/python" -c "import duckdb; from duckdb_extensions import import_extension as i; c=duckdb.connect(); [i(e, con=c) or c.execute('LOAD '+e) for e in ('spatial','avro')]; import numpy; import bqemulator.cli" >&2 || true
  exit 1
fi
echo "bqemulator ${BQEMULATOR_VERSION} ready in $VENV"
