#!/usr/bin/env bash
# Seeded fuzz of ingestion, against the running test cluster (PGHOST/PGPORT/PGUSER, with
# pg_billing installed): ~3,000 malformed and valid events through billing.ingest_events,
# billing.ingest_event and COPY into billing.event_intake, then the invariants (no crash, no
# XX000, no Rust backtrace, one status per input, every reject kept, rollups equal to the
# events). FUZZ_SEED=<n> (or --seed n) replays a run; the seed is printed either way.
# FUZZ_EVENTS and FUZZ_DB change the size and the database (dropped and created). The
# server log for the crash check is FUZZ_SERVER_LOG or $PG_CLUSTER_DIR/server.log.
set -euo pipefail
command -v python3 >/dev/null || { echo "fuzz: python3 is needed" >&2; exit 1; }
exec python3 "$(dirname "$0")/fuzz.py" "$@"
