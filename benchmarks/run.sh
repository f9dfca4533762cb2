#!/usr/bin/env bash
# Regenerate every CPU result in benchmarks/results/ and the tables of benchmarks/README.md
# (about 5 minutes on 2 cores). Run from anywhere; needs pip install -e ".[bench,dist]".
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest benchmarks/ --benchmark-only --benchmark-max-time=3 --benchmark-min-rounds=15 \
    --benchmark-json=benchmarks/results/cpu-2core.json
python benchmarks/interleaved.py --pairs 20 --json benchmarks/results/cpu-2core-interleaved-broad.json
python benchmarks/bench_memory.py --json benchmarks/results/cpu-2core-memory.json
python benchmarks/bench_startup.py --runs 5
python benchmarks/report.py --write
