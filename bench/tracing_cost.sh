#!/bin/sh
# Cost of tracing per proxied request, in-process (examples/request_cost.rs), release build:
#   cargo build --release --example request_cost
#   bench/tracing_cost.sh [N] [ROUNDS]
# Per round, three runs of N requests: tracing off, on with sample 0 (context kept and
# propagated, nothing sampled), on with sample 1 and OTLP export to an in-process sink.
# Each prints the CPU time per request of the serving thread and of the exporter thread
# (schedstat, so other processes' load moves it far less than wall time); then, under
# callgrind, the serving thread's instructions per request (deterministic) for off and on.
set -e
n=${1:-200000}
rounds=${2:-3}
bin=${CARGO_TARGET_DIR:-target}/release/examples/request_cost
for r in $(seq "$rounds"); do
    echo "round $r"
    printf '  off:             '; "$bin" "$n" 2>&1 | sed 's/.*CPU per request: //'
    printf '  sample 0:        '; "$bin" "$n" --trace-sample 0 2>&1 | sed 's/.*CPU per request: //'
    printf '  sample 1 + OTLP: '; "$bin" "$n" --trace-sample 1 --otlp 2>&1 | sed 's/.*CPU per request: //'
done
if command -v valgrind >/dev/null 2>&1; then
    here=$(dirname "$0")
    echo "callgrind (serving thread only; the exporter thread is not counted):"
    printf '  off:             '; "$here/request_cost.sh" 5000
    printf '  sample 1 + OTLP: '; "$here/request_cost.sh" 5000 --trace-sample 1 --otlp
fi
