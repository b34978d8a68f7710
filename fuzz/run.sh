#!/usr/bin/env bash
# Run the property-based fuzz targets (tests/it/fuzz.rs) for a bounded time.
#
#   fuzz/run.sh [SECONDS]        # default 300
#
# Each round runs every property once with a fresh random seed: the pure ones with
# PROPTEST_CASES cases (default 20000), the HTTP handler with FUZZ_HANDLER_CASES request
# sequences (default 5000). Rounds repeat until SECONDS have passed (a round that has
# started finishes). Every run is bounded by `timeout` (FUZZ_TIMEOUT seconds, default 900):
# one killed by it counts as a hang. Prints the cases, executions (cases plus shrinking)
# and time per property and in total; exits non-zero if a property failed or hung. The
# seed of each run is printed, so a failure reproduces with
#   PROPTEST_RNG_SEED=<seed> PROPTEST_CASES=<cases> cargo test --profile fuzz --test it <property> -- --exact
#
# Environment: PROPTEST_CASES, FUZZ_HANDLER_CASES, FUZZ_TIMEOUT, FUZZ_PROFILE (cargo
# profile, default `fuzz`: optimised with overflow checks; `test` for a debug build),

set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-${FUZZ_SECONDS:-300}}
cases=${PROPTEST_CASES:-20000}
handler_cases=${FUZZ_HANDLER_CASES:-5000}
limit=${FUZZ_TIMEOUT:-900}
profile=${FUZZ_PROFILE:-fuzz}
logs=target/fuzz-logs
mkdir -p "$logs"

properties=(
  fuzz::request_paths_become_targets_or_bad_requests
  fuzz::any_target_text_resolves_or_is_a_bad_request
  fuzz::attribute_validation_never_panics_and_rejects_with_bad_request
  fuzz::timestamps_parse_or_not_and_normalising_is_idempotent
  fuzz::configuration_text_is_accepted_or_refused_naming_a_key
  fuzz::the_http_handler_answers_every_request_with_a_onem2m_result
)

echo "building the test binary (profile $profile; not counted)"
cargo test --profile "$profile" --test it --no-run 2>&1 | tail -n 2

start=$(date +%s)
round=0
failures=0
total_cases=0
total_executions=0
declare -A property_cases property_executions property_seconds
while :; do
  elapsed=$(( $(date +%s) - start ))
  if (( round > 0 && elapsed >= budget )); then
    break
  fi
  round=$((round + 1))
  for property in "${properties[@]}"; do
    n=$cases
    [[ $property == *http_handler* ]] && n=$handler_cases
    seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
    log="$logs/${property#fuzz::}.round$round.log"
    status=0
    PROPTEST_CASES=$n PROPTEST_RNG_SEED=$seed timeout --kill-after=10 "$limit" \
      cargo test --profile "$profile" --test it "$property" -- --exact --nocapture >"$log" 2>&1 || status=$?
    line=$(grep -E '^fuzz .*: (passed|FAILED): ' "$log" | tail -n 1 || true)
    if [[ -n $line ]]; then
      echo "round $round seed $seed: $line"
      if [[ $line =~ :\ ([0-9]+)\ cases,\ ([0-9]+)\ executions\ in\ ([0-9.]+)\ s ]]; then
        done_cases=${BASH_REMATCH[1]}
        [[ $line == *FAILED* ]] && done_cases=0
        total_cases=$((total_cases + done_cases))
        total_executions=$((total_executions + BASH_REMATCH[2]))
        name=${property#fuzz::}
        property_cases[$name]=$(( ${property_cases[$name]:-0} + done_cases ))
        property_executions[$name]=$(( ${property_executions[$name]:-0} + BASH_REMATCH[2] ))
        property_seconds[$name]=$(awk -v a="${property_seconds[$name]:-0}" -v b="${BASH_REMATCH[3]}" 'BEGIN { printf "%.1f", a + b }')
      fi
    fi
    if (( status == 124 || status == 137 )); then
      echo "round $round seed $seed: $property did not finish within ${limit}s (hang?) - log: $log"
      failures=$((failures + 1))
    elif (( status != 0 )); then
      echo "round $round seed $seed: $property FAILED - log: $log"
      grep -v -E 'panicked at src/|^note: ' "$log" | grep -A 40 -E 'Test failed|minimal failing input' | head -n 60 || true
      failures=$((failures + 1))
    fi
  done
done

seconds=$(( $(date +%s) - start ))
echo
echo "per property (cases passed / executions / seconds):"
for property in "${properties[@]}"; do
  name=${property#fuzz::}
  printf '  %-66s %9s %10s %8s\n' "$name" "${property_cases[$name]:-0}" "${property_executions[$name]:-0}" "${property_seconds[$name]:-0}"
done
echo "fuzz: $round rounds, $total_cases cases, $total_executions executions in ${seconds} s, $failures failures"
(( failures == 0 ))
