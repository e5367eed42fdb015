#!/usr/bin/env bash
# The GPU device check, for a machine WITHOUT Rust (the lead runs it on the device
# machine, carrying .gpu/): first `bash scripts/gpu-prepare.sh` here, then on the device
#   bash scripts/gpu-check.sh
# It prints the GPU (nvidia-smi), runs the batch tests of hektor-indexers built with
# feature `gpu` (GPU results == CPU results, for batch searches and for hot builds'
# candidate lists round after round; they FAIL without a usable GPU unless
# HEKTOR_GPU_OPTIONAL=1), then a short throughput run printing JSON lines
# {"backend","batch","queries_per_s",...} for CPU and GPU batches of 1, 100 and 1000.
# Exit status: that of the tests (the timing run only when they passed). ~1-3 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
if [ ! -x "$G/batch-test" ]; then
    echo "gpu-check: $G/batch-test is missing: run scripts/gpu-prepare.sh first (on a machine with Rust)" >&2
    exit 2
fi

echo "== GPU"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader \
        || echo "nvidia-smi failed"
else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine?)"
fi

# cuBLAS and NVRTC are loaded at run time: make sure the loader can find them.
extra=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
         /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64; do
    [ -d "$d" ] && extra="$extra:$d"
done
for lib in libcublas.so libnvrtc.so; do
    if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
        f=$(timeout 20 find / -xdev \( -name "$lib.*" -o -name "$lib" \) -print -quit 2>/dev/null)
        [ -n "$f" ] && extra="$extra:$(dirname "$f")"
    fi
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
for lib in libcuda.so libcublas.so libnvrtc.so; do
    found=$(ldconfig -p 2>/dev/null | grep -m1 "$lib" | sed 's/.*=> //')
    [ -z "$found" ] && found=$(IFS=:; for d in $LD_LIBRARY_PATH; do ls "$d/$lib"* 2>/dev/null | head -1; done | head -1)
    echo "$lib: ${found:-NOT FOUND}"
done

export HEKTOR_SAMPLE="$G/sample"
if [ -f "$G/cut20k/base.fvecs" ]; then
    export HEKTOR_GPU_DATA="$G/cut20k"
else
    export HEKTOR_GPU_DATA="$G/sample"
fi
echo "== tests (data: $HEKTOR_GPU_DATA)"
timeout 150 "$G/batch-test" --nocapture --test-threads=1
rc=$?
if [ $rc -ne 0 ]; then
    if [ $rc -eq 126 ] || [ $rc -eq 127 ]; then
        echo "gpu-check: the test binary did not start (this machine: $(ldd --version 2>&1 | head -1); the binary needs the glibc of the machine that built it)" >&2
    fi
    echo "gpu-check: tests FAILED (exit $rc)" >&2
    exit $rc
fi

echo "== throughput (JSON lines)"
HEKTOR_BENCH_MS=${HEKTOR_BENCH_MS:-700} timeout 120 "$G/batch-test" --ignored --nocapture \
    --exact batch_throughput
