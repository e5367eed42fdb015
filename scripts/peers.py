#!/usr/bin/env python3
"""Peer baselines for `hektor-bench search`: hnswlib, faiss-cpu (HNSW), usearch
and exact numpy, measured on the same data set and in the same run as hektor.

Owns: building each peer index, sweeping its search-time beam width (ef_search)
and printing one result per sweep point, as JSON lines (`--json`) or a table.
Does not own: hektor's own numbers, the data set (it only reads the
TEXMEX-format files described in the data set's README.md), or installing the
peers (`pip install -r scripts/requirements-bench.txt`).

Usage:
    python3 scripts/peers.py --data DIR [--json] [--pick] [--threads 1]
        [--build-threads 1] [--engines hnswlib,faiss,usearch,numpy]
        [--ef 10,16,...] [--passes 3] [--queries N]

DIR holds base.fvecs, query.fvecs, groundtruth.ivecs and
groundtruth.scores.fvecs (vectors L2-normalised, so cosine = inner product).

What is measured, per engine:
  * build: on `--build-threads` threads (default 1: single-threaded), hnswlib
    M=16 ef_construction=200 (space "ip");
    faiss IndexHNSWFlat(d, 16, METRIC_INNER_PRODUCT) efConstruction=200;
    usearch Index(metric "ip", f32, connectivity=16, expansion_add=200).
    `build_s` is the wall time of construction plus insertion, `rss_mb` the
    growth of the process's resident memory over the build (MiB). Each engine
    runs in a forked child process, so one engine's memory, thread pools or
    crash cannot touch another's numbers. Graph engines' points carry
    "build_threads" in their params.
  * search, `--threads 1` (the default): a Python loop issuing one query at a
    time with k=10, timing each call, best of `--passes` passes (the pass with
    the highest QPS) per ef_search value. `qps` = queries / wall time of that
    pass; `p50_ms`/`p99_ms` are per-query latencies in that pass. The Python
    call overhead (a few microseconds) is included for every peer alike.
  * search, `--threads N` with N > 1: all queries in one batched call using N
    threads (throughput mode); per-query latency is not observable there, so
    `p50_ms` and `p99_ms` are null and params carry "batch": true.
  * numpy: exact search, once one query at a time (engine "numpy":
    matrix-vector product + argpartition) and once batched (engine
    "numpy-batch": one matrix product per 1,024 queries, latencies null).
    BLAS threads are capped at `--threads`.
  * recall_at_10: a returned row is a hit when its cosine to the query is at
    least the query's 10th true score minus 1e-5 (ann-benchmarks' rule, which
    counts tied duplicates as hits); recall = hits / (10 * queries).

JSON lines, one per sweep point, exactly these keys:
    {"engine", "threads", "recall_at_10", "qps", "p50_ms", "p99_ms",
     "build_s", "rss_mb", "via", "params"}
With `--pick`, only the fastest point with recall >= 0.95 and the fastest with
recall >= 0.99 are printed per engine, each with an extra key "pick" (0.95 or
0.99); an engine that never reaches a target prints a note on stderr instead.
An engine whose module is missing (or whose child process dies) prints a note
on stderr and the line {"engine": NAME, "skipped": REASON}; that is not an
error. Exit status: 0 on success, 2 on bad arguments or unreadable data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENGINES = ("hnswlib", "faiss", "usearch", "numpy")
DEFAULT_EF = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)
K = 10
M = 16
EF_CONSTRUCTION = 200
TIE_TOLERANCE = 1e-5
PICK_TARGETS = (0.95, 0.99)
NUMPY_BATCH = 1024
EXIT_BAD_INPUT = 2

# Filled in by main() after the BLAS thread caps are set (they must be in the
# environment before numpy is first imported).
np = None


class DataError(Exception):
    """The data directory is missing a file or a file is malformed."""


@dataclass
class Dataset:
    base: "np.ndarray"  # (n, d) float32, C-contiguous
    queries: "np.ndarray"  # (q, d) float32
    threshold: "np.ndarray"  # (q,) float32: 10th true score minus tolerance


@dataclass
class Point:
    """One sweep point: a search configuration and what it measured."""

    engine: str
    threads: int
    recall: float
    qps: float
    p50_ms: float | None
    p99_ms: float | None
    build_s: float
    rss_mb: float
    params: dict

    def as_json(self) -> dict:
        return {
            "engine": self.engine,
            "threads": self.threads,
            "recall_at_10": round(self.recall, 4),
            "qps": round(self.qps, 1),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 4),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 4),
            "build_s": round(self.build_s, 3),
            "rss_mb": round(self.rss_mb, 1),
            "via": "in-process",
            "params": self.params,
        }


# --------------------------------------------------------------------------
# Data


def read_vecs(path: Path, dtype: str) -> "np.ndarray":
    """Reads an .fvecs/.ivecs file: rows of int32 `d` followed by `d` values."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        raise DataError(f"{path}: file is empty")
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        raise DataError(
            f"{path}: not a {dtype}vecs file (first dimension {d}, "
            f"{raw.size * 4} bytes)"
        )
    rows = raw.reshape(-1, d + 1)
    if not np.all(rows[:, 0] == d):
        raise DataError(f"{path}: rows have differing dimensions")
    body = rows[:, 1:]
    if dtype == "f":
        body = body.view("<f4")
    return np.ascontiguousarray(body)


def load_dataset(directory: Path, max_queries: int | None) -> Dataset:
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    base = read_vecs(directory / "base.fvecs", "f").astype(np.float32)
    queries = read_vecs(directory / "query.fvecs", "f").astype(np.float32)
    gt_scores = read_vecs(directory / "groundtruth.scores.fvecs", "f")
    if base.shape[1] != queries.shape[1]:
        raise DataError(
            f"base has dimension {base.shape[1]} but queries {queries.shape[1]}"
        )
    if gt_scores.shape[0] != queries.shape[0]:
        raise DataError(
            f"groundtruth.scores.fvecs has {gt_scores.shape[0]} rows for "
            f"{queries.shape[0]} queries"
        )
    if gt_scores.shape[1] < K:
        raise DataError(
            f"groundtruth.scores.fvecs has {gt_scores.shape[1]} scores per "
            f"query; recall@{K} needs at least {K}"
        )
    if base.shape[0] < K:
        raise DataError(f"base has {base.shape[0]} vectors; need at least {K}")
    # groundtruth.ivecs is not needed for the score-based rule, but a data set
    # without it is incomplete, so check it is there and consistent.
    gt_ids = read_vecs(directory / "groundtruth.ivecs", "i")
    if gt_ids.shape != gt_scores.shape:
        raise DataError(
            f"groundtruth.ivecs {gt_ids.shape} and groundtruth.scores.fvecs "
            f"{gt_scores.shape} disagree"
        )
    if max_queries is not None:
        queries = queries[:max_queries]
        gt_scores = gt_scores[:max_queries]
    threshold = (gt_scores[:, K - 1] - TIE_TOLERANCE).astype(np.float32)
    return Dataset(np.ascontiguousarray(base), np.ascontiguousarray(queries), threshold)


def recall_at_k(data: Dataset, ids: "np.ndarray") -> float:
    """ids: (q, K) base rows per query; negative entries mean 'no result'."""
    hits = 0
    for qi in range(ids.shape[0]):
        row = ids[qi]
        row = row[row >= 0][:K]
        if row.size:
            scores = data.base[row] @ data.queries[qi]
            hits += int(np.count_nonzero(scores >= data.threshold[qi]))
    return hits / (K * ids.shape[0])


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------
# Engines. Each adapter builds one index and answers queries; `ef` is None for
# exact engines.


class HnswlibEngine:
    name = "hnswlib"

    def __init__(self):
        import hnswlib

        self._mod = hnswlib
        self._index = None

    def build(self, base, threads):
        index = self._mod.Index(space="ip", dim=base.shape[1])
        index.init_index(max_elements=base.shape[0], ef_construction=EF_CONSTRUCTION, M=M)
        index.set_num_threads(threads)
        index.add_items(base, np.arange(base.shape[0]), num_threads=threads)
        self._index = index

    def params(self, ef):
        return {"ef_search": ef, "M": M, "ef_construction": EF_CONSTRUCTION}

    def prepare(self, ef, threads):
        self._index.set_ef(ef)
        self._index.set_num_threads(threads)

    def search_one(self, q):
        labels, _ = self._index.knn_query(q, k=K, num_threads=1)
        return labels[0]

    def search_batch(self, queries, threads):
        labels, _ = self._index.knn_query(queries, k=K, num_threads=threads)
        return labels


class FaissEngine:
    name = "faiss"

    def __init__(self):
        import faiss

        self._mod = faiss
        self._index = None

    def build(self, base, threads):
        faiss = self._mod
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(base)
        self._index = index

    def params(self, ef):
        return {"ef_search": ef, "M": M, "ef_construction": EF_CONSTRUCTION}

    def prepare(self, ef, threads):
        self._index.hnsw.efSearch = ef
        self._mod.omp_set_num_threads(threads)

    def search_one(self, q):
        _, labels = self._index.search(q.reshape(1, -1), K)
        return labels[0]

    def search_batch(self, queries, threads):
        _, labels = self._index.search(queries, K)
        return labels


class UsearchEngine:
    name = "usearch"

    def __init__(self):
        from usearch.index import Index

        self._cls = Index
        self._index = None

    def build(self, base, threads):
        index = self._cls(
            ndim=base.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
        )
        index.add(np.arange(base.shape[0]), base, threads=threads)
        self._index = index

    def params(self, ef):
        return {"ef_search": ef, "M": M, "ef_construction": EF_CONSTRUCTION}

    def prepare(self, ef, threads):
        self._index.expansion_search = ef

    def search_one(self, q):
        return self._index.search(q, K, threads=1).keys

    def search_batch(self, queries, threads):
        keys = np.asarray(self._index.search(queries, K, threads=threads).keys)
        return keys.astype(np.int64)


class NumpyEngine:
    """Exact search: the base matrix is the index."""

    name = "numpy"

    def __init__(self):
        self._base = None

    def build(self, base, threads):
        self._base = np.array(base, dtype=np.float32, order="C", copy=True)

    def params(self, ef):
        return {"exact": True}

    def prepare(self, ef, threads):
        pass

    def search_one(self, q):
        scores = self._base @ q
        return np.argpartition(scores, -K)[-K:]

    def search_batch(self, queries, threads):
        out = np.empty((queries.shape[0], K), dtype=np.int64)
        for start in range(0, queries.shape[0], NUMPY_BATCH):
            scores = queries[start : start + NUMPY_BATCH] @ self._base.T
            out[start : start + NUMPY_BATCH] = np.argpartition(scores, -K, axis=1)[:, -K:]
        return out


ENGINE_CLASSES = {
    "hnswlib": HnswlibEngine,
    "faiss": FaissEngine,
    "usearch": UsearchEngine,
    "numpy": NumpyEngine,
}


# --------------------------------------------------------------------------
# Measurement


def time_single(engine, data: Dataset, passes: int):
    """Best of `passes` one-query-at-a-time passes: (qps, p50, p99, ids)."""
    nq = data.queries.shape[0]
    best = None
    for _ in range(passes):
        ids = np.full((nq, K), -1, dtype=np.int64)
        lat = np.empty(nq, dtype=np.float64)
        clock = time.perf_counter
        start = clock()
        for qi in range(nq):
            t0 = clock()
            found = engine.search_one(data.queries[qi])
            lat[qi] = clock() - t0
            ids[qi, : len(found)] = found[:K]
        wall = clock() - start
        qps = nq / wall
        if best is None or qps > best[0]:
            p50, p99 = np.percentile(lat, [50, 99]) * 1e3
            best = (qps, float(p50), float(p99), ids)
    return best


def time_batch(engine, data: Dataset, passes: int, threads: int):
    """Best of `passes` batched passes: (qps, None, None, ids)."""
    nq = data.queries.shape[0]
    best = None
    for _ in range(passes):
        start = time.perf_counter()
        ids = engine.search_batch(data.queries, threads)
        wall = time.perf_counter() - start
        if best is None or nq / wall > best[0]:
            best = (nq / wall, None, None, np.asarray(ids))
    return best


def run_engine(name: str, data: Dataset, args, emit) -> None:
    """Builds and sweeps one engine, calling emit(Point) per sweep point."""
    engine = ENGINE_CLASSES[name]()  # ImportError -> caller reports a skip
    rss_before = rss_mib()
    start = time.perf_counter()
    engine.build(data.base, args.build_threads)
    build_s = time.perf_counter() - start
    rss_mb = max(0.0, rss_mib() - rss_before)

    def point(engine_name, measured, params):
        qps, p50, p99, ids = measured
        emit(
            Point(engine_name, args.threads, recall_at_k(data, ids), qps, p50, p99,
                  build_s, rss_mb, params)
        )

    if name == "numpy":
        engine.prepare(None, args.threads)
        point("numpy", time_single(engine, data, args.passes), {"exact": True})
        point("numpy-batch", time_batch(engine, data, args.passes, args.threads),
              {"exact": True, "batch": True})
        return
    for ef in args.ef:
        engine.prepare(ef, args.threads)
        params = {**engine.params(ef), "build_threads": args.build_threads}
        if args.threads == 1:
            measured = time_single(engine, data, args.passes)
        else:
            measured = time_batch(engine, data, args.passes, args.threads)
            params = {**params, "batch": True}
        point(name, measured, params)


def _child(name, data, args, conn):
    """Runs one engine in a forked child, sending Points then a final status."""
    try:
        run_engine(name, data, args, conn.send)
        conn.send(("done", None))
    except ImportError as err:
        conn.send(("skipped", f"module not installed ({err})"))
    except Exception as err:  # report any engine failure as a skip, not a crash
        conn.send(("skipped", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def measure(name: str, data: Dataset, args, on_point) -> str | None:
    """Runs one engine isolated in a child process; returns a skip reason or None."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        try:
            run_engine(name, data, args, on_point)
            return None
        except ImportError as err:
            return f"module not installed ({err})"
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, data, args, send))
    proc.start()
    send.close()
    reason = None
    try:
        while True:
            try:
                msg = recv.recv()
            except EOFError:
                proc.join()
                reason = f"child process died (exit code {proc.exitcode})"
                break
            if isinstance(msg, Point):
                on_point(msg)
                continue
            status, detail = msg
            reason = detail if status == "skipped" else None
            break
    finally:
        recv.close()
        proc.join()
    return reason


# --------------------------------------------------------------------------
# Output


TABLE_HEADER = (
    f"{'engine':<12} {'thr':>3} {'params':<22} {'recall@10':>9} {'qps':>10} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'build s':>8} {'rss MiB':>8}"
)


def table_row(p: Point, pick: float | None = None) -> str:
    if "ef_search" in p.params:
        desc = f"ef_search={p.params['ef_search']}"
    else:
        desc = "exact"
    if p.params.get("batch"):
        desc += " batch"
    if pick is not None:
        desc += f" (>= {pick})"
    def lat(v):
        return "-" if v is None else f"{v:.3f}"

    return (
        f"{p.engine:<12} {p.threads:>3} {desc:<22} {p.recall:>9.4f} {p.qps:>10.1f} "
        f"{lat(p.p50_ms):>8} {lat(p.p99_ms):>8} {p.build_s:>8.2f} {p.rss_mb:>8.1f}"
    )


def picks(points: list[Point]) -> list[tuple[float, Point | None, str]]:
    """Per engine name and target: the fastest point reaching the target."""
    out = []
    for engine in dict.fromkeys(p.engine for p in points):
        mine = [p for p in points if p.engine == engine]
        for target in PICK_TARGETS:
            ok = [p for p in mine if p.recall >= target]
            out.append((target, max(ok, key=lambda p: p.qps) if ok else None, engine))
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Peer ANN baselines (hnswlib, faiss, usearch, numpy) for hektor-bench search."
    )
    parser.add_argument("--data", required=True, type=Path,
                        help="directory with base.fvecs, query.fvecs, groundtruth.ivecs, "
                             "groundtruth.scores.fvecs")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one per point")
    parser.add_argument("--pick", action="store_true",
                        help="print only the fastest point per engine at recall >= 0.95 and >= 0.99")
    parser.add_argument("--threads", type=int, default=1,
                        help="search threads (1: one query at a time; N>1: batched)")
    parser.add_argument("--build-threads", type=int, default=1,
                        help="threads building each graph index (1: single-threaded)")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated subset of {','.join(ENGINES)}")
    parser.add_argument("--ef", default=",".join(map(str, DEFAULT_EF)),
                        help="comma-separated ef_search values to sweep")
    parser.add_argument("--passes", type=int, default=3, help="passes per point (best is kept)")
    parser.add_argument("--queries", type=int, default=None,
                        help="use only the first N queries")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        parser.error(f"--engines: unknown {unknown}; choose from {','.join(ENGINES)}")
    args.engines = list(dict.fromkeys(engines))
    try:
        args.ef = [int(v) for v in args.ef.split(",") if v.strip()]
    except ValueError:
        parser.error("--ef: expected comma-separated integers")
    if not args.ef or min(args.ef) < 1:
        parser.error("--ef: values must be positive integers")
    if args.threads < 1:
        parser.error("--threads: must be at least 1")
    if args.build_threads < 1:
        parser.error("--build-threads: must be at least 1")
    if args.passes < 1:
        parser.error("--passes: must be at least 1")
    if args.queries is not None and args.queries < 1:
        parser.error("--queries: must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Cap BLAS/OpenMP pools before numpy (or any peer) loads them.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    global np
    import numpy

    np = numpy
    try:
        data = load_dataset(args.data, args.queries)
    except (DataError, OSError, ValueError) as err:
        print(f"peers.py: bad data: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def say(obj):
        print(json.dumps(obj), flush=True)

    if not args.json:
        n, d = data.base.shape
        print(f"# {args.data}: {n} x {d} base, {data.queries.shape[0]} queries, "
              f"k={K}, threads={args.threads}, best of {args.passes}")
        print(TABLE_HEADER, flush=True)

    for name in args.engines:
        points: list[Point] = []

        def on_point(p: Point):
            points.append(p)
            if args.pick:
                return
            if args.json:
                say(p.as_json())
            else:
                print(table_row(p), flush=True)

        reason = measure(name, data, args, on_point)
        if reason is not None:
            print(f"peers.py: skipping {name}: {reason}", file=sys.stderr, flush=True)
            if args.json:
                say({"engine": name, "skipped": reason})
            else:
                print(f"{name:<12} skipped: {reason}", flush=True)
            continue
        if args.pick:
            for target, p, engine in picks(points):
                if p is None:
                    print(f"peers.py: {engine}: no point reached recall {target}",
                          file=sys.stderr, flush=True)
                elif args.json:
                    say({**p.as_json(), "pick": target})
                else:
                    print(table_row(p, target), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
