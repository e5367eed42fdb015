"""Load the sample shipped in the repository (3,000 Debian package descriptions embedded
with all-MiniLM-L6-v2, 384 dimensions: samples/debian-minilm-384-sample) into a collection
and search it with the sample's queries, as ``hektor serve --demo`` does in Rust.

    pip install ./clients/python numpy        # numpy is optional, only faster
    cargo run --release -- serve &            # or any hektor node
    python clients/python/examples/sample_search.py --url http://127.0.0.1:7070

It prints the nearest packages for a few queries and recall@10 over all 100 queries
against the sample's exact ground truth (``--min-recall`` makes a lower one an error).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any, List, Tuple

from hektor_client import Client, HektorError

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "debian-minilm-384-sample"


def read_vecs(path: Path, typecode: str) -> Tuple[Any, int]:
    """An .fvecs ("f") or .ivecs ("i") file: each row is an int32 dimension, then that
    many float32 or int32 values. A numpy 2-D array when numpy is there, else a list of
    lists."""
    raw = path.read_bytes()
    (dim,) = struct.unpack_from("<i", raw, 0)
    try:
        import numpy as np
    except ImportError:
        values = array(typecode, raw)  # little-endian machines, as the files are
        rows = [values[i + 1 : i + 1 + dim].tolist() for i in range(0, len(values), dim + 1)]
        return rows, dim
    table = np.frombuffer(raw, dtype="<i4").reshape(-1, dim + 1)[:, 1:]
    return np.ascontiguousarray(table).view("<f4" if typecode == "f" else "<i4"), dim


def lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("HEKTOR_URL", "http://127.0.0.1:7070"))
    parser.add_argument("--api-key", default=os.environ.get("HEKTOR_API_KEY"))
    parser.add_argument("--collection", default="sample")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="directory with base.fvecs, base.ids, ...")
    parser.add_argument("--show", type=int, default=3, help="queries whose hits are printed")
    parser.add_argument("--min-recall", type=float, default=0.0, help="exit 1 when recall@10 is lower")
    parser.add_argument("--drop", action="store_true", help="drop the collection at the end")
    args = parser.parse_args()

    base, dim = read_vecs(args.sample / "base.fvecs", "f")
    queries, _ = read_vecs(args.sample / "query.fvecs", "f")
    truth, _ = read_vecs(args.sample / "groundtruth.ivecs", "i")
    ids = lines(args.sample / "base.ids")[: len(base)]
    texts = lines(args.sample / "base.txt")
    query_texts = lines(args.sample / "query.txt")

    with Client(args.url, args.api_key, timeout=120) as hk:
        created = hk.create_collection(args.collection, dim, distance="cosine", partitions=4)
        print(f"collection `{args.collection}`: {'created' if created.created else 'already there'}")
        started = time.monotonic()
        written = hk.upsert_many(
            args.collection,
            ids,
            base,
            payloads=[{"package": p, "text": texts[i] if i < len(texts) else ""} for i, p in enumerate(ids)],
            batch_size=500,
        )
        print(f"upserted {written.written} vectors in {written.batches} batches, {time.monotonic() - started:.1f} s")

        found = 0
        for q in range(len(queries)):
            # The write token: this search sees every vector just written.
            result = hk.search(args.collection, queries[q], k=10, consistency=written)
            wanted = {ids[int(i)] for i in list(truth[q])[:10]}
            found += len(wanted & set(result.ids))
            if q < args.show:
                print(f"\nquery {q}: {query_texts[q][:90]!r}")
                for hit in result.hits[:5]:
                    text = (hit.payload or {}).get("text", "")
                    print(f"  {hit.score:.3f}  {hit.id:<28} {text[:60]}")
        recall = found / (10 * len(queries))
        print(f"\nrecall@10 over {len(queries)} queries: {recall:.3f}")
        if args.drop:
            hk.drop_collection(args.collection)
        if recall < args.min_recall:
            print(f"recall {recall:.3f} is below --min-recall {args.min_recall}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HektorError as err:
        print(f"hektor refused: {err}", file=sys.stderr)
        sys.exit(2)
