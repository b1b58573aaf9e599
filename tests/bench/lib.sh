# Helpers of the benchmarks (tests/bench/run, tests/bench/citus), sourced after scripts/env.sh.

# tps: the transactions per second pgbench printed (on stdin).
tps() { grep -Eo 'tps = [0-9.]+' | head -1 | awk '{print $3}'; }

# ratio A B: A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# load_hot_subscription DATABASE LABEL EVENTS [PORT]: a subscription LABEL with EVENTS events
# in the open period (tests/bench/hot_subscription.sql).
load_hot_subscription() {
  psql -X -q -At -v ON_ERROR_STOP=1 ${4:+-p "$4"} -d "$1" -v label="$2" -v events="$3" \
    -f "$ROOT/tests/bench/hot_subscription.sql" >/dev/null
}
