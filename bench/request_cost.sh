#!/bin/sh
# Instructions per proxied request, in-process (examples/request_cost.rs) under callgrind:
# (instructions of a run with N requests - those of a run with none) / N, counted on the
# thread that runs the client, sluice's connection and the upstream (sluice's background
# threads, which tick by wall time, are left out). Deterministic within about 0.5% whatever
# else the machine runs.
#   cargo build --release --example request_cost
#   bench/request_cost.sh [N] [--flags]
set -e
n=${1:-5000}
shift || true
bin=${CARGO_TARGET_DIR:-target}/release/examples/request_cost
count() {
    dir=$(mktemp -d)
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg" \
        "$bin" "$@" >/dev/null 2>&1
    # Thread 1 is the main thread, where everything measured runs.
    grep '^summary:' "$dir"/cg-01 | cut -d' ' -f2
    rm -rf "$dir"
}
base=$(count 0 "$@")
full=$(count "$n" "$@")
echo "instructions per request: $(( (full - base) / n )) ($n requests $*)"
