#!/usr/bin/env bash
#
# bench/run.sh - the benchmark driver: our CSE against the reference CSE (acmecse, PyPI), on
# loopback only. See BENCHMARKS.md for the scenarios and the last full run.
#
#   bash bench/run.sh           full run (< 15 min): builds our release binaries, installs the
#                               reference into a throw-away venv, runs every scenario against
#                               both (interleaved), writes BENCHMARKS.md, bench/results/*.json
#                               and bench/results/throughput.png
#   bash bench/run.sh --quick   the same with 2 s per load run (< 2-3 min), for development
#   bash bench/run.sh --smoke   our side only, debug build, ~10-20 s, no reference, no report;
#                               exits 1 when a scenario errors (CI)
#
# Other flags: --no-build (use the existing binaries), --keep (keep the work directory),
# --only notifications (that scenario alone, no report; for development).
# Environment: BENCH_VENV=<dir> reuses a venv for the reference (default: a throw-away one
# under target/bench.*), BENCH_ACMECSE_VERSION (default 2026.5.3).
#
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi
command -v python3 >/dev/null 2>&1 || { echo "bench: python3 is required" >&2; exit 1; }
exec python3 bench/run.py "$@"
