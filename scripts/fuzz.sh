#!/usr/bin/env bash
# Fuzz hektor's decoders with AFL++ (cargo-afl), one target at a time.
#
# Owns: installing the fuzzing tools, building fuzz/ with `cargo afl build --release`,
# running afl-fuzz on each target, and the per-target summary. The harnesses themselves
# are fuzz/src/; what they cover and the last recorded run are in docs/fuzzing.md.
# Not part of CI (the full run takes about an hour on two cores); run it by hand.
#
# Usage:
#   bash scripts/fuzz.sh [options] [TARGET...]
#
#   TARGET           record, http_bodies, plan_catalog (default: all three, one after
#                    the other, never in parallel)
#   -e, --execs N    stop each target after N executions (default 10000000; afl-fuzz -E)
#   -t, --time S     stop each target after S seconds instead (afl-fuzz -V)
#   --resume         continue fuzz/out/<target> instead of starting from fuzz/corpus
#   --build-only     install and build, do not fuzz
#   --no-build       skip the build (use what fuzz/target/release holds)
#   --cmin           after fuzzing, minimise each target's queue with afl-cmin into
#                    fuzz/out/<target>.cmin
#   --keep N         with --cmin: also pick from the minimised queue the N files (of at
#                    most 16 KiB) that add the most edges to fuzz/corpus/<target>
#                    (greedy set cover over afl-showmap traces) into
#                    fuzz/out/<target>.keep, named q000, q001, ... in the order picked;
#                    copy them to fuzz/corpus/<target> to commit them (the committed
#                    corpus stays small: afl-cmin alone keeps thousands of files)
#   --bundled        use the AFL++ that cargo-afl builds (`cargo afl config --build`)
#                    instead of Debian's afl++ package
#
# Environment: NICE (default 10), the niceness afl-fuzz runs at; AFL_* variables pass
# through to afl-fuzz.
#
# Dictionaries: fuzz/dict/json.dict and fuzz/dict/<target>.dict, when present (-x).
#
# Output: fuzz/out/<target>/default/{fuzzer_stats,crashes,hangs,queue} (gitignored).
# Prints, per target, execs_done, execs_per_sec, crashes and hangs from fuzzer_stats;
# exits 1 if any target saved a crash, 2 on a usage or setup error.
#
# Toolchain notes (what this script found on Debian 12 with stable Rust):
# - Debian's afl++ package (4.04c) ships afl-fuzz and the runtime
#   /usr/lib/afl/afl-compiler-rt.o, but not LLVM plugins for rustc's LLVM, so the targets
#   are instrumented by rustc's own SanitizerCoverage (trace-pc-guard + trace-compares),
#   which is what cargo-afl does without plugins on stable Rust anyway.
# - `cargo install cargo-afl` builds its own bundled AFL++ (4.40c at cargo-afl 0.18) as
#   it installs, and links that runtime into the targets. Mixing a 4.40c runtime with
#   Debian's 4.04c afl-fuzz is not supported by AFL++ (not tried here), so by default this
#   script links Debian's runtime (it points cargo-afl's runtime path at
#   /usr/lib/afl/afl-compiler-rt.o, keeping the bundled one as afl-compiler-rt.o.bundled)
#   and runs Debian's afl-fuzz.
#   --bundled restores the bundled runtime and runs cargo-afl's afl-fuzz.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(record http_bodies plan_catalog)

execs=10000000
seconds=""
resume=0
build=1
fuzz=1
cmin=0
keep=0
flavour=debian
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -e|--execs) execs="$2"; seconds=""; shift 2 ;;
        -t|--time) seconds="$2"; execs=""; shift 2 ;;
        --resume) resume=1; shift ;;
        --build-only) fuzz=0; shift ;;
        --no-build) build=0; shift ;;
        --cmin) cmin=1; shift ;;
        --keep) keep="$2"; shift 2 ;;
        --bundled) flavour=bundled; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown target $t" >&2; exit 2; }
done

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# --- tools ----------------------------------------------------------------------------
if [[ $flavour == debian ]] && ! command -v afl-fuzz >/dev/null; then
    echo "== installing Debian's afl++"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++
fi
if ! cargo afl --version >/dev/null 2>&1; then
    echo "== installing cargo-afl"
    cargo install --locked cargo-afl
fi

# Where cargo-afl links its runtime from: $XDG_DATA_HOME/afl.rs/rustc-<ver>-<hash>/
# afl.rs-<cargo-afl version>/ (see cargo-afl-common's data_dir).
rustc_tag="rustc-$(rustc -vV | sed -n 's/^release: //p')"
commit="$(rustc -vV | sed -n 's/^commit-hash: //p')"
[[ -n $commit && $commit != unknown ]] && rustc_tag="$rustc_tag-${commit:0:7}"
cargo_afl_version="$(cargo afl --version | awk '{print $2}')"
afl_rs_dir="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/$rustc_tag/afl.rs-$cargo_afl_version"
runtime="$afl_rs_dir/afl-llvm/afl-compiler-rt.o"

if [[ $flavour == debian ]]; then
    mkdir -p "$(dirname "$runtime")"
    if [[ -f $runtime && ! -L $runtime ]]; then
        mv "$runtime" "$runtime.bundled"
    fi
    ln -sfn /usr/lib/afl/afl-compiler-rt.o "$runtime"
    AFL_FUZZ=afl-fuzz
    AFL_CMIN=afl-cmin
    AFL_SHOWMAP=afl-showmap
else
    if [[ -L $runtime ]]; then
        rm "$runtime"
        [[ -f $runtime.bundled ]] && mv "$runtime.bundled" "$runtime"
    fi
    [[ -f $runtime ]] || cargo afl config --build --force
    AFL_FUZZ="$afl_rs_dir/afl/bin/afl-fuzz"
    AFL_CMIN="$afl_rs_dir/afl/bin/afl-cmin"
    AFL_SHOWMAP="$afl_rs_dir/afl/bin/afl-showmap"
fi
afl_version="$( ("$AFL_FUZZ" -h 2>&1 || true) | grep -o "afl-fuzz++[0-9.a-z]*" | head -1 | sed "s/afl-fuzz++//")"
echo "== AFL++ $afl_version ($flavour), runtime $(readlink -f "$runtime")"

# --- build ----------------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
    echo "== cargo afl build --release (fuzz/)"
    (cd "$FUZZ" && nice -n "${NICE:-10}" cargo afl build --release)
fi
[[ $fuzz -eq 1 ]] || exit 0

# keep_files TARGET QUEUE DEST: the $keep files of QUEUE adding the most edges to the
# committed corpus of TARGET, into DEST.
keep_files() {
    local t="$1" queue="$2" dest="$3" maps="$FUZZ/out/$1.maps"
    rm -rf "$maps" "$dest"
    mkdir -p "$maps"
    AFL_QUIET=1 nice -n "${NICE:-10}" "$AFL_SHOWMAP" -i "$queue" -o "$maps/queue" \
        -t 1000 -- "$FUZZ/target/release/$t" >/dev/null 2>&1
    AFL_QUIET=1 nice -n "${NICE:-10}" "$AFL_SHOWMAP" -i "$FUZZ/corpus/$t" -o "$maps/corpus" \
        -t 1000 -- "$FUZZ/target/release/$t" >/dev/null 2>&1
    python3 - "$maps" "$queue" "$dest" "$keep" <<'PY'
import os, sys
maps, queue, dest, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def edges(path):
    with open(path) as f:
        return {line.split(":")[0] for line in f if ":" in line}
def traces(kind):
    d = os.path.join(maps, kind)
    return {name: edges(os.path.join(d, name)) for name in os.listdir(d)} if os.path.isdir(d) else {}
got = set().union(*traces("corpus").values())
start = len(got)
cands = {k: v for k, v in traces("queue").items()
         if os.path.getsize(os.path.join(queue, k)) <= 16384}
picked = []
while len(picked) < n and cands:
    size = lambda k: os.path.getsize(os.path.join(queue, k))
    best = max(cands, key=lambda k: (len(cands[k] - got), -size(k)))
    gain = cands.pop(best) - got
    if not gain:
        break
    got |= gain
    picked.append(best)
os.makedirs(dest, exist_ok=True)
for i, name in enumerate(picked):
    with open(os.path.join(queue, name), "rb") as src, open(os.path.join(dest, "q%03d" % i), "wb") as out:
        out.write(src.read())
print(f"   kept {len(picked)} files: the corpus' {start} edges -> {len(got)}, in {dest}")
PY
}

# --- fuzz -----------------------------------------------------------------------------
# AFL_SKIP_CPUFREQ: no CPU governor to set in a container. AFL_I_DONT_CARE_...: afl-fuzz
# refuses to start while core_pattern pipes cores to a program (as it does here).
# AFL_NO_AFFINITY: do not pin to a core others are compiling on. AFL_NO_UI: log lines.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY="${AFL_NO_AFFINITY:-1}"
mkdir -p "$FUZZ/out"
failed=0
summary=()
for t in "${targets[@]}"; do
    out="$FUZZ/out/$t"
    if [[ $resume -eq 1 && -d $out/default ]]; then
        input=-
    else
        rm -rf "$out"
        input="$FUZZ/corpus/$t"
    fi
    limit=(-E "$execs")
    [[ -n $seconds ]] && limit=(-V "$seconds")
    dicts=()
    for d in "$FUZZ/dict/json.dict" "$FUZZ/dict/$t.dict"; do
        [[ -f $d ]] && dicts+=(-x "$d")
    done
    echo "== fuzzing $t (${limit[*]}), output in $out"
    started=$(date +%s)
    nice -n "${NICE:-10}" "$AFL_FUZZ" -i "$input" -o "$out" "${limit[@]}" "${dicts[@]}" -t 1000 \
        -- "$FUZZ/target/release/$t" >"$FUZZ/out/$t.log" 2>&1 || {
        echo "afl-fuzz for $t exited with an error; the end of $FUZZ/out/$t.log:" >&2
        tail -n 30 "$FUZZ/out/$t.log" >&2
        failed=2
    }
    stats="$out/default/fuzzer_stats"
    stat() { sed -n "s/^$1 *: *//p" "$stats" 2>/dev/null | head -1; }
    crashes="$(stat saved_crashes)"; crashes="${crashes:-$(stat unique_crashes)}"
    hangs="$(stat saved_hangs)"; hangs="${hangs:-$(stat unique_hangs)}"
    execs_done="$(stat execs_done)"
    run_time="$(stat run_time)"
    [[ -n $run_time ]] || run_time=$(( $(date +%s) - started ))
    rate="?"
    [[ -n $execs_done && ${run_time:-0} -gt 0 ]] && rate=$(( execs_done / run_time ))
    summary+=("$(printf '%-13s execs_done=%-10s execs_per_sec=%-6s crashes=%-3s hangs=%-3s corpus=%s' \
        "$t" "${execs_done:-?}" "$rate" "${crashes:-?}" "${hangs:-?}" "$(stat corpus_count)")")
    if [[ ${crashes:-0} != 0 ]]; then
        failed=1
        echo "!! $t: crashes saved in $out/default/crashes" >&2
    fi
    if [[ $cmin -eq 1 && -d $out/default/queue ]]; then
        rm -rf "$out.cmin"
        nice -n "${NICE:-10}" "$AFL_CMIN" -i "$out/default/queue" -o "$out.cmin" \
            -t 1000 -- "$FUZZ/target/release/$t" >"$FUZZ/out/$t.cmin.log" 2>&1 \
            && echo "   minimised queue: $(ls "$out.cmin" | wc -l) files in $out.cmin" \
            || echo "   afl-cmin failed, see $FUZZ/out/$t.cmin.log" >&2
        if [[ $keep -gt 0 && -d $out.cmin ]]; then
            keep_files "$t" "$out.cmin" "$out.keep"
        fi
    fi
done

echo "== summary (AFL++ $afl_version, $(date -u +%Y-%m-%d))"
printf '%s\n' "${summary[@]}"
exit "$failed"
