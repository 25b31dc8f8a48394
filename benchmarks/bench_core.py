"""Benchmark: stride windows + PCA, the seed's way against scikit-learn and ours, in one run.

    python -m benchmarks.bench_core [--benchmark-size 2000000] [--benchmark-iterations 1]
        [--backends numpy torch mlx] [--features 16] [--window 5] [--strides 1 3 5]
        [--components 32] [--chunk-rows 250000] [--skip-seed] [--skip-sklearn]        (make bench ARGS="...")

Methods, all on the same synthetic correlated float32 rows, each for every stride:

seed      the seed's approach: per 10,000-row batch, a Python loop builds the windows
          (with the seed's state buffer), then IncrementalPCA.partial_fit and transform
          on that batch (projecting early batches with an immature model, as the seed does).
sklearn   scikit-learn IncrementalPCA on vectorised windows (fit with batch_size 10,000,
          then transform in a second pass).
ours      per --chunk-rows chunk (a partition, read with the previous chunk's last window-1
          rows), PCAStats.from_stride_windows (every stride's statistics from one cache-blocked
          pass over the stride-1 windows), stats merged across chunks, fit, then a second pass
          projecting every window of every chunk for every stride (iter_project_stride_windows:
          blocks of a few thousand windows, each brought to NumPy as a writer would take it;
          like the seed's per-batch transform). Once per backend.

Each method runs in a fresh spawned process (so its peak RSS is its own): the table gives the
best wall time over the iterations, input rows per second, speed-up over the seed, peak RSS and
the part of it above the process's RSS after loading the data. The check column compares each
method's fitted components with scikit-learn PCA (float64, svd_solver="covariance_eigh") on all
windows: the largest principal angle between the k-dimensional subspaces, the smallest
per-component |cos|, and the largest relative error of explained_variance_ratio_.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

SEED_BATCH_ROWS = 10_000
IPCA_BATCH_ROWS = 10_000


# data
def synthetic_rows(n_rows: int, n_features: int, seed: int = 0) -> np.ndarray:
    """(n_rows, n_features) float32: AR(1) in time (phi 0.9 .. 0.2), mixed across features, offset mean."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_rows, n_features)).astype(np.float32)
    phis = np.linspace(0.9, 0.2, n_features)
    scales = np.geomspace(4.0, 0.25, n_features)
    for j, phi in enumerate(phis):  # column by column keeps the float64 temporaries small
        latent[:, j] = lfilter([scales[j]], [1.0, -phi], latent[:, j])
    mixing, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    offset = rng.uniform(-2.0, 2.0, n_features)
    return (latent @ mixing.astype(np.float32).T + offset.astype(np.float32)).astype(np.float32)


def row_chunks(n_rows: int, chunk_rows: int):
    for start in range(0, n_rows, chunk_rows):
        yield start, min(start + chunk_rows, n_rows)


# methods (run inside a worker process)
def _seed(data, args):
    """The seed's processor: state buffer + Python-loop windows + partial_fit/transform per batch."""
    from sklearn.decomposition import IncrementalPCA

    w, k = args.window, args.components
    models = {s: IncrementalPCA(n_components=k) for s in args.strides}
    state_buffer = None
    sink = 0.0
    for start, stop in row_chunks(len(data), SEED_BATCH_ROWS):
        batch = data[start:stop]
        if state_buffer is not None:
            batch = np.vstack([state_buffer, batch])
        for s in args.strides:
            windows = [batch[i : i + w] for i in range(0, len(batch) - w + 1, s)]
            if not windows:
                continue
            windows_array = np.array(windows).reshape(len(windows), -1)
            if len(windows_array) < k:
                continue
            models[s].partial_fit(windows_array)
            sink += float(models[s].transform(windows_array)[0, 0])
        state_buffer = batch[-(w - 1) :] if w > 1 else None
    return {s: models[s] for s in args.strides}


def _sklearn(data, args):
    from sklearn.decomposition import IncrementalPCA

    from emberharmony_core.features.windows import stride_windows

    models = {}
    for s in args.strides:
        windows = stride_windows(data, args.window, s, "numpy")
        model = IncrementalPCA(n_components=args.components, batch_size=IPCA_BATCH_ROWS).fit(windows)
        for lo in range(0, len(windows), args.chunk_rows):
            model.transform(windows[lo : lo + args.chunk_rows])
        models[s] = model
    return models


def _ours(data, args, backend_name):
    from emberharmony_core.features.pca import PCAStats, iter_project_stride_windows
    from emberharmony_core.ops import get_backend

    backend = get_backend(backend_name)
    x = backend.asarray(data)  # convert once at the edge
    w = args.window
    totals = {s: PCAStats() for s in args.strides}
    for start, stop in row_chunks(len(data), args.chunk_rows):  # pass 1: per-partition statistics, merged
        first = max(0, start - (w - 1))  # the previous chunk's last w - 1 rows, then this chunk's
        parts = PCAStats.from_stride_windows(x[first:stop], w, args.strides, first_row=first)
        totals = {s: totals[s].merge(parts[s]) for s in args.strides}
    models = {s: totals[s].fit(args.components) for s in args.strides}
    for start, stop in row_chunks(len(data), args.chunk_rows):  # pass 2: project every window, block by block
        first = max(0, start - (w - 1))
        for _, _, projected in iter_project_stride_windows(x[first:stop], w, models, first_row=first):
            backend.to_numpy(projected)  # a writer would append this block to the partition's output
    backend.synchronize()
    return models


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """This process's own peak RSS. Linux: VmHWM (ru_maxrss would carry the parent's RSS across fork+exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _worker(method: str, backend_name: str | None, data_path: str, args) -> dict:
    """Run one method ``args.benchmark_iterations`` times in this (fresh) process."""
    data = np.load(data_path)
    if backend_name is not None:  # import the backend's library before the baseline
        from emberharmony_core.ops import get_backend

        get_backend(backend_name)
    import sklearn.decomposition  # noqa: F401

    baseline = _rss_bytes()
    times: list[float] = []
    models: dict | None = None
    for _ in range(args.benchmark_iterations):
        start = time.perf_counter()
        if method == "seed":
            models = _seed(data, args)
        elif method == "sklearn":
            models = _sklearn(data, args)
        else:
            models = _ours(data, args, backend_name)
        times.append(time.perf_counter() - start)
    assert models is not None  # parse_args checks --benchmark-iterations >= 1
    return {
        "seconds": min(times),
        "peak_rss": peak_rss_bytes(),
        "baseline_rss": baseline,
        "components": {s: np.asarray(m.components_, dtype=np.float64) for s, m in models.items()},
        "ratio": {s: np.asarray(m.explained_variance_ratio_, dtype=np.float64) for s, m in models.items()},
    }


# checks against scikit-learn PCA
def _reference(data, args) -> dict:
    from sklearn.decomposition import PCA

    from emberharmony_core.features.windows import stride_windows

    refs = {}
    for s in args.strides:
        windows = np.asarray(stride_windows(data, args.window, s, "numpy"), dtype=np.float64)
        model = PCA(n_components=args.components, svd_solver="covariance_eigh").fit(windows)
        refs[s] = (model.components_, model.explained_variance_ratio_)
        del windows
    return refs


def _agreement(result: dict, refs: dict) -> tuple[float, float, float]:
    """(max principal angle in degrees, min per-component |cos|, max relative ratio error) over strides."""
    from scipy.linalg import subspace_angles

    angle, cos, ratio = 0.0, 1.0, 0.0
    for s, (ref_components, ref_ratio) in refs.items():
        ours = result["components"][s]
        angle = max(angle, float(np.degrees(subspace_angles(ours.T, ref_components.T).max())))
        norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(ref_components, axis=1)
        cos = min(cos, float((np.abs(np.sum(ours * ref_components, axis=1)) / norms).min()))
        ratio = max(ratio, float(np.max(np.abs(result["ratio"][s] / ref_ratio - 1.0))))
    return angle, cos, ratio


def _parse(argv=None):
    from emberharmony_core.ops import available_backends

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark-size", type=int, default=2_000_000, help="input rows (default 2,000,000)")
    parser.add_argument(
        "--benchmark-iterations", type=int, default=1, help="runs per method; the best is reported (default 1)"
    )
    parser.add_argument(
        "--backends", nargs="+", default=list(available_backends()), help="backends for ours (default: all installed)"
    )
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument(
        "--chunk-rows", type=int, default=250_000, help="rows per simulated partition for ours (default 250,000)"
    )
    parser.add_argument("--skip-seed", action="store_true", help="do not time the seed's approach")
    parser.add_argument("--skip-sklearn", action="store_true", help="do not time scikit-learn IncrementalPCA")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS/torch threads per worker (default: the libraries' own)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with scikit-learn PCA")
    args = parser.parse_args(argv)
    for name in ("benchmark_size", "benchmark_iterations", "features", "window", "components", "chunk_rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.strides) < 1:
        parser.error(f"--strides must all be >= 1, got {args.strides}")
    d = args.window * args.features
    if args.components > d:
        parser.error(f"--components {args.components} is more than window*features = {d}")
    unknown = sorted(set(args.backends) - set(available_backends()))
    if unknown:
        parser.error(f"backend(s) {unknown} not installed; available: {', '.join(available_backends())}")
    return args


# Complexity: argument parsing, runs and report in order; one linear script.
def main(argv=None) -> int:  # noqa: C901
    from benchmarks import bench_core as this  # workers must find the functions by their module name, not __main__

    args = _parse(argv)
    if args.threads:  # read by OpenBLAS / MKL / OpenMP when the spawned workers start
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    n, w = args.benchmark_size, args.window
    n_windows = sum(0 if n < w else (n - w) // s + 1 for s in args.strides)
    print(
        f"emberharmony bench: {n:,} rows x {args.features} float32 features, window {w}, strides {args.strides} "
        f"({n_windows:,} windows of {w * args.features}), {args.components} components, "
        f"{args.benchmark_iterations} iteration(s), {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}"
        + (f", {args.threads} thread(s)" if args.threads else ""),
        flush=True,
    )
    data = synthetic_rows(n, args.features)
    runs = ([("seed", None)] if not args.skip_seed else []) + ([("sklearn", None)] if not args.skip_sklearn else [])
    runs += [("ours", name) for name in args.backends]
    results = {}
    with tempfile.TemporaryDirectory(prefix="emberharmony-bench-") as tmp:
        path = os.path.join(tmp, "rows.npy")
        np.save(path, data)
        for method, backend_name in runs:
            label = method if backend_name is None else f"{method} [{backend_name}]"
            print(f"  running {label} ...", flush=True)
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                results[(method, backend_name)] = pool.submit(this._worker, method, backend_name, path, args).result()
    refs = None if args.no_check else _reference(data, args)

    seed_seconds = results.get(("seed", None), {}).get("seconds")
    labels = {
        "seed": "seed: loop windows + IPCA partial_fit/transform per 10k",
        "sklearn": f"sklearn IncrementalPCA (batch {IPCA_BATCH_ROWS:,}) on vectorised windows",
        "ours": f"ours: PCAStats per {args.chunk_rows:,}-row chunk, merge, fit, project",
    }
    header = f"{'method':<58} {'backend':<7} {'seconds':>8} {'rows/s':>11} {'x seed':>7} {'peak RSS':>9} {'extra':>8}"
    if refs is not None:
        header += f"  {'max angle':>9} {'min |cos|':>10} {'ratio err':>9}"
    print()
    print(header)
    print("-" * len(header))
    for (method, backend_name), r in results.items():
        speedup = f"{seed_seconds / r['seconds']:.1f}" if seed_seconds else "-"
        line = (
            f"{labels[method]:<58} {backend_name or 'numpy':<7} {r['seconds']:>8.3f} {n / r['seconds']:>11,.0f} "
            f"{speedup:>7} {r['peak_rss'] / 2**20:>7.0f}MB {(r['peak_rss'] - r['baseline_rss']) / 2**20:>6.0f}MB"
        )
        if refs is not None:
            angle, cos, ratio = _agreement(r, refs)
            line += f"  {angle:>8.4f}° {cos:>10.7f} {ratio:>9.1e}"
        print(line)
    print()
    print(
        "seconds: best of the iterations; rows/s: input rows / seconds; peak RSS: the method's process "
        "(interpreter, libraries and the input rows included); extra: peak above the RSS after loading."
    )
    if refs is not None:
        print(
            "check: against scikit-learn PCA (float64, covariance_eigh) on all windows, worst stride: largest "
            "principal angle between the fitted subspaces, smallest per-component |cos|, largest relative error of "
            "explained_variance_ratio_."
        )
    sk = results.get(("sklearn", None), {}).get("seconds")
    for (method, backend_name), r in results.items():
        if method == "ours" and (seed_seconds or sk):
            parts = []
            if seed_seconds:
                parts.append(f"{seed_seconds / r['seconds']:.0f}x the seed")
            if sk:
                parts.append(f"{sk / r['seconds']:.1f}x sklearn IncrementalPCA")
            print(f"ours [{backend_name}]: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
