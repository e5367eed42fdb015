#!/usr/bin/env bash
# Prepare the GPU device check (scripts/gpu-check.sh) on a machine WITH Rust: build the
# batch test binary of hektor-indexers with feature `gpu`, and copy it, stripped, into
# the git-ignored folder .gpu/ with the data it needs:
#   .gpu/batch-test       the test binary (tests/batch.rs, feature gpu)
#   .gpu/sample/          samples/debian-minilm-384-sample (base.fvecs, query.fvecs, ...)
#   .gpu/cut20k/          the first 20,000 rows of the full data set's base.fvecs plus its
#                         query.fvecs, when the full set is present (else absent)
# Everything stays well under the device tool's 64 MiB carry limit (checked at the end).
# It does not run anything on a GPU and needs no CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu
ROWS=${HEKTOR_GPU_CUT_ROWS:-20000}
FULL=${HEKTOR_DATA:-/work/shared/data/debian-minilm-384}
LIMIT=$((64 * 1024 * 1024))

echo "building tests/batch.rs with --features gpu (release)..." >&2
json=$(cargo test --release -p hektor-indexers --features gpu --test batch --no-run \
    --message-format=json 2>/dev/null)
bin=$(printf '%s\n' "$json" | grep '"name":"batch"' | grep -o '"executable":"[^"]*"' \
    | tail -1 | sed 's/"executable":"\(.*\)"/\1/')
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "gpu-prepare: could not find the built test binary (run the cargo command above by hand to see why)" >&2
    exit 1
fi

rm -rf "$OUT"
mkdir -p "$OUT/sample"
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$bin" "$OUT/batch-test"
else
    cp "$bin" "$OUT/batch-test"
fi
chmod +x "$OUT/batch-test"
cp samples/debian-minilm-384-sample/{base.fvecs,query.fvecs,README.md} "$OUT/sample/"

if [ -f "$FULL/base.fvecs" ] && [ -f "$FULL/query.fvecs" ]; then
    mkdir -p "$OUT/cut20k"
    # .fvecs rows are fixed size: a little-endian i32 dimension, then dim f32.
    dim=$(od -An -t d4 -N4 "$FULL/base.fvecs" | tr -d ' ')
    row_bytes=$((4 + 4 * dim))
    head -c $((ROWS * row_bytes)) "$FULL/base.fvecs" >"$OUT/cut20k/base.fvecs"
    cp "$FULL/query.fvecs" "$OUT/cut20k/query.fvecs"
    got=$(($(stat -c %s "$OUT/cut20k/base.fvecs") / row_bytes))
    echo "cut20k: $got base rows × $dim from $FULL, $(($(stat -c %s "$FULL/query.fvecs") / row_bytes)) queries" >&2
else
    echo "no full data set at $FULL: the GPU check will use the 3,000-row sample" >&2
fi

total=$(du -sb "$OUT" | cut -f1)
echo "prepared $OUT: $((total / 1024 / 1024)) MiB" >&2
ls -la "$OUT" "$OUT"/* >&2
if [ "$total" -gt "$LIMIT" ]; then
    echo "gpu-prepare: $OUT is over the 64 MiB carry limit" >&2
    exit 1
fi
