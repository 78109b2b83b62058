#!/bin/sh
# Instructions per proxied request, in-process (examples/request_cost.rs) under callgrind:
# (instructions of a run with N requests - those of a run with none) / N. Deterministic
# within about 0.5% whatever else the machine runs. Usage: bench/request_cost.sh [N] [--flags]
#   cargo build --release --example request_cost
set -e
n=${1:-5000}
shift || true
bin=${CARGO_TARGET_DIR:-target}/release/examples/request_cost
count() {
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" >/dev/null 2>&1
    grep '^summary:' "$out" | cut -d' ' -f2
    rm -f "$out"
}
base=$(count 0 "$@")
full=$(count "$n" "$@")
echo "instructions per request: $(( (full - base) / n )) ($n requests $*)"
