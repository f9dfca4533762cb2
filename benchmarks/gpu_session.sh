#!/usr/bin/env bash
# The one prepared call for a lent GPU machine (see the developers' guide): install without a
# registry, then the whole test suite, `backprop-gpu selftest --bench` and the GPU benchmarks,
# each under its own time limit, everything written to $OUT (the device tool brings it back) and
# a short table printed last. About 12 minutes at most on one H200; never touches the card's settings.
#   usage (on the device machine, from the repository root):  bash benchmarks/gpu_session.sh
#   DRY=1 bash benchmarks/gpu_session.sh   prints the commands instead of running them
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
[ -n "${DRY:-}" ] || mkdir -p "$OUT"
run() {  # name, seconds, command...: the command's output in $OUT/<name>.txt, its status in the table
    local name=$1 limit=$2; shift 2
    if [ -n "${DRY:-}" ]; then echo "timeout $limit $*"; return; fi
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    printf '%-10s rc %-4s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$OUT/$name.txt")" >> "$OUT/summary.txt"
}
[ -n "${DRY:-}" ] || : > "$OUT/summary.txt"
run install 120 pip install --no-deps --no-build-isolation -e .
run gpu 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
run selftest 60 backprop-gpu selftest --out "$OUT/selftest-check"
run suite 330 python -m pytest -q -p no:cacheprovider -n 8 --junitxml="$OUT/suite.xml"
run bench 300 backprop-gpu selftest --bench --out "$OUT"
run benchgpu 120 python -m pytest benchmarks/bench_mlp.py benchmarks/bench_optim.py benchmarks/bench_cnn.py \
    --benchmark-only --benchmark-max-time=1 --benchmark-min-rounds=10 --benchmark-json="$OUT/bench-gpu.json"
[ -n "${DRY:-}" ] || cat "$OUT/summary.txt"
