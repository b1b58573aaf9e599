#!/usr/bin/env python3
"""Seeded fuzz tier of pg_billing's ingestion (Python 3.11, standard library only).

Sends a mix of malformed and valid events (3,000 by default) through billing.ingest_events
(JSON batches), billing.ingest_event (one statement per event: an error is that event's
reject) and COPY into billing.event_intake, in one session and in the order generated, then
checks:

  crash       the server still answers and its log has no crashed backend since the start
  xx000       no statement ended with SQLSTATE XX000 (an internal error)
  backtrace   no error text (nor a kept reason) holds a Rust backtrace or panic location
  statuses    exactly one status per input (every batch row once, every COPY counted)
  balance     accepted + duplicate + conflict + rejected = inputs, and billing.events holds
              exactly the accepted events
  kept        every reject of a batch or COPY is in billing.rejected_events
  expected    events generated valid with a fresh key are accepted, exact replays are
              duplicates, changed replays conflicts, and events generated invalid rejected
  rollups     for every rollup key (customer, subscription, metric, local day, dims) the
              count, sum and max of billing.events equal those over slots in
              billing.usage_rollups

Connection: PGHOST/PGPORT/PGUSER of a running cluster where pg_billing is installed; the
database FUZZ_DB (default pg_billing_fuzz) is dropped and created. The seed is FUZZ_SEED or
--seed (random otherwise) and is printed, with the command to reproduce a failed run.
The server log, for the crash check, is FUZZ_SERVER_LOG or $PG_CLUSTER_DIR/server.log.
"""

import argparse
import bisect
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PSQL = os.environ.get("PSQL", "psql")
COLUMNS = ["external_subscription_id", "code", "transaction_id", "timestamp", "properties",
           "precise_total_amount_cents"]

BACKTRACE = re.compile(
    r"stack backtrace|rust_begin_unwind|std::panicking|core::panicking|/rustc/|"
    r"panicked at|\{\{closure\}\}|\.rs:\d+(:\d+)?|^\s*\d+: [\w:<>]+::", re.M)


class Raw(str):
    """JSON text to put as is (numbers JSON allows but Python does not spell)."""


class Deep:
    """A value nested `depth` containers deep, written without recursion."""

    def __init__(self, depth, kind, leaf):
        self.depth, self.kind, self.leaf = depth, kind, leaf


def enc(value):
    """JSON text of a generated value (unicode kept as is)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Deep):
        if value.kind == "array":
            return "[" * value.depth + enc(value.leaf) + "]" * value.depth
        return '{"a": ' * value.depth + enc(value.leaf) + "}" * value.depth
    if isinstance(value, dict):
        return "{" + ", ".join(json.dumps(k, ensure_ascii=False) + ": " + enc(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(enc(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


class Generator:
    """Inputs: (event, expectation), the event a dict of the six fields (or, for batches
    only, any JSON value), the expectation accept, duplicate, conflict, reject or any."""

    def __init__(self, rng):
        self.rng = rng
        self.counter = 0
        self.good = []  # earlier valid events with a fresh key, for replays
        self.in_segment = {}  # key -> payload of its first occurrence in the current segment

    def key(self):
        self.counter += 1
        return f"k{self.counter}-{self.rng.randrange(10**9)}"

    def timestamp(self):
        r = self.rng
        day = r.randint(2, 80)
        seconds = (day * 86400 + r.randrange(86400)) + 1767225600 - 86400  # 2026-01-01 + day - 1
        if r.random() < 0.5:
            return seconds if r.random() < 0.5 else str(seconds)
        import datetime
        t = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + r.choice(["Z", "+00:00", ".123456Z", "+02:00"])

    def amount(self):
        """A value ingestion accepts: at most 15 digits before the point and 9 after it."""
        r = self.rng
        return r.choice([
            r.randint(0, 1000), str(r.randint(0, 10**6)), "0.5", 1000000, "1000000",
            "0.123456789", Raw("0.123456789"), "999999999999999.999999999", Raw("999999999999999.999999999"),
            "-999999999999999.999999999", "99999999999999.9", "-1", "-0", "0.000000001", "1.500000000000",
            Raw("1.50"), Raw("2e0") if r.random() < 0.01 else 7,
        ])

    def valid(self):
        r = self.rng
        sub = r.choice(["sub", "sub-paris"])
        code = r.choice(["tokens", "tokens", "calls", "peak"])
        event = {"external_subscription_id": sub, "code": code, "transaction_id": self.key(),
                 "timestamp": self.timestamp()}
        props = {}
        if code == "tokens":
            props["tokens"] = self.amount()
            if r.random() < 0.7:
                props["project"] = r.choice(["chat", "search", "é😀", "", 42, True, None, ["a", 1], {"x": 1}])
        elif code == "peak":
            props["level"] = self.amount()
        if "9" * 15 in str(props.get("tokens", props.get("level", ""))) and r.random() < 0.5:
            # Values at the top of the accepted range on one day: their day rollup grows large.
            event["timestamp"] = "2026-02-14T12:00:00Z"
        if r.random() < 0.3:
            props["model"] = r.choice(["small", "large", "ünï\u200bcode", "\\u0000", "\u0001\u007f", "\t\n\r\\"])
        if props or r.random() < 0.5:
            event["properties"] = props
        if r.random() < 0.1:
            event["precise_total_amount_cents"] = r.choice(["12.5", "0", "1234567890.123456789"])
        if r.random() < 0.05:
            del event["timestamp"]  # now(): fine, the subscriptions are active
        if r.random() < 0.05:
            event["transaction_id"] = r.choice(["τ-" + self.key(), "x" * 200 + self.key(), "🙂" + self.key()])
        return event

    # Spellings a decimal reader may or may not take: no expectation.
    LENIENT = {" 1", "1 ", "+1", "1.", ".5"}

    def huge_number(self):
        r = self.rng
        return r.choice([
            Raw("1e400"), Raw("1E-400"), Raw("1" * 400), "1" * 400, Raw("-" + "9" * 29), "1e5", "1E3", "0x10",
            "NaN", "nan", "Infinity", "-Infinity", "inf", " 1", "1 ", "+1", "1.", ".5", "1,5", "١٢", "", "--1",
            Raw("123456789012345678901234567890"), Raw("0." + "1" * 60), "1" * 100000,
            # Beyond what period sums keep exact: 16 digits before the point or 10 after it.
            "9999999999999999999999999999", Raw("9999999999999999999999999999"), "1000000000000000",
            "0.1234567890123456789012345678", Raw("0.1234567891"), "-9999999999999999999999999999",
            "999999999999999999999999999.9", "0.000000000000000000000000001",
        ])

    def invalid(self, path):
        """A copy of a valid event with one thing wrong, and whether it must be rejected."""
        r = self.rng
        event = self.valid()
        kind = r.randrange(22)
        if kind == 0:
            event["properties"] = {"tokens": 1, "deep": Deep(r.choice([40, 127, 129, 200, 1000, 5000]),
                                                             r.choice(["array", "object"]), 1)}
            event["code"] = "tokens"
        elif kind == 1:
            event["properties"] = Deep(r.choice([33, 129, 3000]), "object", {"tokens": 1})
        elif kind == 2:
            event["transaction_id"] = "t" * r.choice([256, 300, 4000, 100_000])
        elif kind == 3:
            event["external_subscription_id"] = "s" * r.choice([256, 100_000])
        elif kind == 4:
            event["code"] = "c" * r.choice([256, 100_000])
        elif kind == 5:
            event["code"] = "tokens"
            event["properties"] = {"tokens": 1, "project": "p" * r.choice([2_000, 100_000])}
        elif kind == 6:
            event["properties"] = {"tokens": 1, "blob": "b" * 70_000}
        elif kind == 7:
            event["code"] = "tokens"
            event["properties"] = {"tokens": self.huge_number()}
            if event["properties"]["tokens"] in self.LENIENT:
                return event, "any"
        elif kind == 8:
            event["code"] = r.choice(["tokens", "peak"])
            event["properties"] = {"tokens": r.choice([True, [1], {"v": 1}, None]),
                                   "level": r.choice([False, [], {}])}
        elif kind == 9:
            event["properties"] = r.choice([[1, 2], "props", 12, True, Deep(150, "array", 0)])
        elif kind == 10:
            event["external_subscription_id"] = r.choice(["nope", "SUB", "sub ", "ѕub"])
        elif kind == 11:
            event["code"] = r.choice(["nope", "TOKENS", "tokens\u0001"])
        elif kind == 12:
            event["timestamp"] = r.choice([
                "soon", "", "2026-02-30T00:00:00Z", "0001-01-01T00:00:00Z", "294277-01-01T00:00:00Z",
                "infinity", "-infinity", "9999999999999", "1e10", Raw("1e10"), "-1", Raw("99999999999999999999"),
                "2025-12-31T23:59:59Z", "2030-01-01T00:00:00Z", "1767225600.5e3", "NaN"])
        elif kind == 13:
            event["transaction_id"] = r.choice(["", None])
        elif kind == 14:
            del event[r.choice(["external_subscription_id", "code", "transaction_id"])]
        elif kind == 15:
            event["precise_total_amount_cents"] = self.huge_number()
            if path == "single" or event["precise_total_amount_cents"] in self.LENIENT:
                return event, "any"  # cast to numeric by the caller: 1e5 is 100000 there
        elif kind == 16:
            event["code"] = "tokens"
            event["properties"] = {}
        elif kind == 17:
            event["precise_total_amount_cents"] = r.choice(["abc", "NaN", "1e3", "1" * 40])
            if path == "single":
                return event, "any"
        elif kind == 18:
            event["code"] = "tokens"
            depth = r.choice([20, 31, 32, 40])
            event["properties"] = {"tokens": 1, "project": Deep(depth, "array", "x")}
            return event, "accept" if depth < 32 else "reject"  # the properties object is a level
        elif kind == 19:
            event["code"] = "peak"
            event["properties"] = {"level": "9" * 29}
        elif kind == 20:
            event["timestamp"] = r.choice(["2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "yesterday"])
            if path == "single" and event["timestamp"] == "yesterday":
                return event, "any"  # the caller's cast to timestamptz reads yesterday
        else:
            event["properties"] = {"tokens": 1, "k" * 300: "v", "": "", "\u00e9": [None]}
            event["code"] = "calls"
            return event, "accept"
        return event, "reject"

    def batch_only(self):
        """Shapes only a JSON batch can carry: non-objects, unknown keys, wrong types."""
        r = self.rng
        kind = r.randrange(7)
        if kind == 0:
            return Deep(r.choice([129, 130, 2000]), "array", 1), "reject"
        if kind == 1:
            return r.choice([None, 1, "event", [], [{}], True]), "reject"
        event = self.valid()
        if kind == 2:
            event[r.choice(["colour", "Code", "properties ", "timestamp\u0001"])] = 1
        elif kind == 3:
            event["transaction_id"] = r.choice([{"a": 1}, [1], True, Deep(200, "array", 1)])
        elif kind == 4:
            event["external_subscription_id"] = r.choice([["sub"], {"id": "sub"}, False])
        elif kind == 5:
            event["timestamp"] = r.choice([{"t": 1}, [2026], True, Deep(129, "object", 1)])
        else:
            return {}, "reject"
        return event, "reject"

    def replay(self):
        r = self.rng
        original = r.choice(self.good)
        event = dict(original)
        if r.random() < 0.5:
            return event, "duplicate"
        props = dict(event.get("properties") or {})
        props["changed"] = r.randrange(10**6)
        event["properties"] = props
        return event, "conflict"

    def burst(self):
        """Eight values at the top of the accepted range for one subscription's day, in one
        statement: their day rollup's sum is exact."""
        events = []
        for _ in range(8):
            event = {"external_subscription_id": "sub", "code": "tokens", "transaction_id": self.key(),
                     "timestamp": "2026-02-15T12:00:00Z", "properties": {"tokens": "999999999999999.999999999"}}
            self.good.append(event)
            events.append((event, "accept"))
        return events

    def start_segment(self):
        self.in_segment = {}

    def next(self, path):
        event, expectation = self.draw(path)
        if path != "single" and isinstance(event, dict) and isinstance(event.get("transaction_id"), str):
            key = (enc(event.get("external_subscription_id")), event["transaction_id"])
            first = self.in_segment.setdefault(key, enc(event))
            # Within one batch or load the first occurrence of a key wins: a later exact
            # replay of the stored event after a changed one in the same segment conflicts.
            if expectation == "duplicate" and first != enc(event):
                expectation = "conflict"
        return event, expectation

    def draw(self, path):
        r = self.rng
        x = r.random()
        if self.good and x < 0.15:
            return self.replay()
        if x < 0.55:
            event = self.valid()
            self.good.append(event)
            return event, "accept"
        if path == "batch" and x < 0.62:
            return self.batch_only()
        return self.invalid(path)


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def dollar(text, rng):
    while True:
        tag = f"$f{rng.randrange(10**8)}$"
        if tag not in text:
            return tag + text + tag


def field_text(value):
    """A field as the text a column or text argument gets (None stays NULL)."""
    if value is None:
        return None
    if isinstance(value, str):  # Raw included: its text
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return enc(value)


def single_call(event):
    def text(key):
        value = field_text(event.get(key))
        return "NULL" if value is None else sql_literal(value)

    ts = event.get("timestamp")
    if ts is None:
        timestamp = "NULL"
    elif isinstance(ts, int) and not isinstance(ts, bool) or isinstance(ts, str) and re.fullmatch(r"-?\d+", ts):
        timestamp = f"to_timestamp({ts})"
    else:
        timestamp = sql_literal(field_text(ts)) + "::timestamptz"
    properties = "NULL" if "properties" in event and event["properties"] is None else (
        sql_literal(enc(event["properties"])) + "::jsonb" if "properties" in event else "'{}'::jsonb")
    amount = text("precise_total_amount_cents")
    amount = "NULL" if amount == "NULL" else amount + "::numeric"
    return (f"SELECT 'R', billing.ingest_event({text('external_subscription_id')}, {text('code')}, "
            f"{text('transaction_id')}, {timestamp}, {properties}, {amount});")


def copy_field(value):
    if value is None:
        return r"\N"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_row(event):
    cells = []
    for column in COLUMNS:
        value = event.get(column)
        cells.append(copy_field(enc(value) if column == "properties" and column in event and value is not None
                                else field_text(value) if column != "properties" else None))
    return "\t".join(cells)


def psql(db, *args, stdin=None, check=True):
    env = dict(os.environ, PGCLIENTENCODING="UTF8", PGOPTIONS="-c client_min_messages=warning")
    result = subprocess.run([PSQL, "-X", "-q", "-d", db, *args], input=stdin, capture_output=True,
                            text=True, encoding="utf-8", errors="replace", env=env)
    if check and result.returncode != 0:
        sys.exit(f"psql failed: {result.stderr}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=int(os.environ["FUZZ_SEED"]) if os.environ.get("FUZZ_SEED") else None)
    parser.add_argument("--events", type=int, default=int(os.environ.get("FUZZ_EVENTS", "3000")))
    parser.add_argument("--db", default=os.environ.get("FUZZ_DB", "pg_billing_fuzz"))
    parser.add_argument("--keep", action="store_true", help="keep the generated SQL script")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"fuzz: seed {seed}, {args.events} events, database {args.db}", flush=True)
    rng = random.Random(seed)

    log_path = os.environ.get("FUZZ_SERVER_LOG") or (
        os.path.join(os.environ["PG_CLUSTER_DIR"], "server.log") if os.environ.get("PG_CLUSTER_DIR") else None)
    log_start = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else None

    psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{args.db}"', "-c", f'CREATE DATABASE "{args.db}"')
    psql(args.db, "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-f", os.path.join(HERE, "fixture.sql"))

    # The inputs, in segments of one path each, run in order in one session.
    gen = Generator(rng)
    segments = []  # (path, [(event, expectation)])
    total = 0
    while total < args.events:
        path = rng.choices(["batch", "single", "copy"], weights=[40, 25, 35])[0]
        size = min(args.events - total, {"batch": rng.randint(1, 150), "single": rng.randint(1, 40),
                                         "copy": rng.randint(1, 300)}[path])
        gen.start_segment()
        inputs = [gen.next(path) for _ in range(size)]
        if path != "single" and rng.random() < 0.1:
            at = rng.randint(0, len(inputs))
            inputs[at:at] = gen.burst()
            size += 8
        segments.append((path, inputs))
        total += size

    script = ["\\set ON_ERROR_STOP 0", "\\pset format unaligned", "\\pset tuples_only on",
              "\\set SHOW_CONTEXT never"]
    starts = []  # the script line each segment starts at (1-based), to place psql's errors
    for number, (path, inputs) in enumerate(segments):
        starts.append(len(script) + 1)
        script.append(f"\\echo @@begin {number}")
        if path == "batch":
            script.append("SELECT 'S', index, status FROM billing.ingest_events("
                          + dollar("[" + ", ".join(enc(e) for e, _ in inputs) + "]", rng) + "::jsonb);")
            script.append(f"\\echo @@end {number} :SQLSTATE")
        elif path == "single":
            for position, (event, _) in enumerate(inputs):
                script.append(single_call(event))
                script.append(f"\\echo @@single {number} {position} :SQLSTATE")
            script.append(f"\\echo @@end {number} 00000")
        else:
            # An empty load first, so that a COPY that fails cannot leave the counts of an
            # earlier one in billing.last_intake() (psql's SQLSTATE after COPY FROM STDIN may
            # miss its failure).
            script.append("INSERT INTO billing.event_intake SELECT * FROM billing.event_intake WHERE false;")
            script.append("COPY billing.event_intake (external_subscription_id, code, transaction_id, "
                          "\"timestamp\", properties, precise_total_amount_cents) FROM STDIN;")
            script.extend(copy_row(e) for e, _ in inputs)
            script.append("\\.")
            script.append(f"\\echo @@end {number} :SQLSTATE")
            script.append("SELECT 'L', * FROM billing.last_intake();")
        script.append("SELECT 'K', count(*) FROM billing.rejected_events;")

    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="pg_billing_fuzz_", delete=False,
                                     encoding="utf-8") as f:
        f.write("\n".join(script) + "\n")
        script_path = f.name
    run = psql(args.db, "-f", script_path, check=False)
    if not args.keep:
        os.unlink(script_path)
    else:
        print(f"fuzz: script kept in {script_path}")

    failures = {}

    def fail(check, message):
        failures.setdefault(check, []).append(message)

    # Parse the session's output, segment by segment.
    statuses = {}  # (segment, position) -> status
    copy_counts = {}  # segment -> (accepted, duplicates, conflicts, rejected)
    ended = {}  # segment -> sqlstate
    kept = {}  # segment -> rejected_events count after it
    current, rows = None, []
    for line in run.stdout.splitlines():
        parts = line.split()
        if line.startswith("@@begin"):
            current, rows = int(parts[1]), []
        elif line.startswith("@@end"):
            ended[current] = parts[2]
            if segments[current][0] == "batch" and parts[2] == "00000":
                for row in rows:
                    _, index, status = row.split("|")
                    if (current, int(index)) in statuses:
                        fail("statuses", f"segment {current}: index {index} reported twice")
                    statuses[(current, int(index))] = status
        elif line.startswith("@@single"):
            segment, position, sqlstate = int(parts[1]), int(parts[2]), parts[3]
            status = rows[-1].split("|", 1)[1] if sqlstate == "00000" and rows else "rejected"
            statuses[(segment, position)] = status
            if sqlstate == "XX000":
                fail("xx000", f"segment {segment} single {position}: XX000")
            rows = []
        elif line.startswith("S|") or line.startswith("R|"):
            rows.append(line)
        elif line.startswith("L|"):
            copy_counts[current] = tuple(int(x) for x in line.split("|")[1:])
        elif line.startswith("K|"):
            kept[current] = int(line.split("|")[1])

    errors_text = run.stderr
    segment_errors = {}  # segment -> first error message psql reported in it
    for match in re.finditer(r"^psql:[^\n]*?:(\d+): ERROR:  (.*)$", errors_text, re.M):
        number = bisect.bisect_right(starts, int(match.group(1))) - 1
        segment_errors.setdefault(number, match.group(2)[:200])
    for match in BACKTRACE.finditer(errors_text):
        start = max(0, match.start() - 200)
        fail("backtrace", "error text holds a backtrace: " + errors_text[start:match.end() + 100].replace("\n", " | "))
        break
    for line in errors_text.splitlines():
        if "XX000" in line or "internal error" in line:
            fail("xx000", line[:300])

    totals = {"accepted": 0, "duplicate": 0, "conflict": 0, "rejected": 0}
    expected_misses = []
    previous_kept = 0
    for number, (path, inputs) in enumerate(segments):
        sqlstate = ended.get(number)
        if sqlstate is None:
            fail("statuses", f"segment {number} ({path}) did not run to its end")
            continue
        if path != "single" and number in segment_errors:
            fail("statuses", f"segment {number} ({path}, {len(inputs)} events) failed as a whole: "
                             f"SQLSTATE {sqlstate}: {segment_errors[number]}")
            if sqlstate == "00000":
                continue  # psql's SQLSTATE can miss a failed COPY FROM STDIN
        elif sqlstate != "00000":
            fail("statuses", f"segment {number} ({path}, {len(inputs)} events) failed as a whole: SQLSTATE {sqlstate}")
            if sqlstate == "XX000":
                fail("xx000", f"segment {number} ({path}): XX000")
        rejects_here = 0
        if path in ("batch", "single"):
            for position, (event, expectation) in enumerate(inputs):
                status = statuses.get((number, position))
                if status is None:
                    if sqlstate == "00000":
                        fail("statuses", f"segment {number} ({path}) input {position}: no status")
                    continue
                totals[status] += 1
                rejects_here += status == "rejected"
                want = {"accept": "accepted", "duplicate": "duplicate", "conflict": "conflict",
                        "reject": "rejected"}.get(expectation)
                if want and status != want:
                    expected_misses.append(f"segment {number} ({path}) input {position}: {status}, expected "
                                           f"{want}: {enc(event)[:300]}")
            if path == "batch" and sqlstate == "00000":
                got = sum(1 for (s, _) in statuses if s == number)
                if got != len(inputs):
                    fail("statuses", f"segment {number} (batch): {got} statuses for {len(inputs)} inputs")
        elif sqlstate == "00000":
            counts = copy_counts.get(number)
            if counts is None:
                fail("statuses", f"segment {number} (copy): no counts")
            else:
                accepted, duplicates, conflicts, rejected = counts
                if sum(counts) != len(inputs):
                    fail("statuses", f"segment {number} (copy): counts {counts} for {len(inputs)} rows")
                wanted = {"accept": "accepted", "reject": "rejected", "duplicate": "duplicate", "conflict": "conflict"}
                loose = sum(1 for _, e in inputs if e == "any")
                for status, count in zip(["accepted", "duplicate", "conflict", "rejected"], counts):
                    totals[status] += count
                    definite = sum(1 for _, e in inputs if wanted.get(e) == status)
                    if not definite <= count <= definite + loose:
                        expected_misses.append(f"segment {number} (copy): {count} {status}, expected {definite} "
                                               f"(+ up to {loose} of no expectation)")
                rejects_here = rejected
        if path != "single" and number in kept:
            if kept[number] - previous_kept != rejects_here and sqlstate == "00000":
                fail("kept", f"segment {number} ({path}): {rejects_here} rejects, "
                             f"{kept[number] - previous_kept} rows added to billing.rejected_events")
        if number in kept:
            previous_kept = kept[number]

    inputs_count = sum(len(i) for _, i in segments)
    counted = sum(totals.values())
    if counted != inputs_count:
        fail("balance", f"accepted {totals['accepted']} + duplicate {totals['duplicate']} + conflict "
                        f"{totals['conflict']} + rejected {totals['rejected']} = {counted}, inputs {inputs_count}")
    if expected_misses:
        # A replay of an event whose own segment failed cannot be a duplicate: only report
        # expectation misses when every segment ran.
        for miss in expected_misses[:20]:
            fail("expected", miss)
        if len(expected_misses) > 20:
            fail("expected", f"... and {len(expected_misses) - 20} more")

    up = psql(args.db, "-At", "-c", "SELECT 1", check=False)
    if up.returncode != 0 or up.stdout.strip() != "1":
        fail("crash", f"the server does not answer: {up.stderr.strip()}")
    else:
        check = psql(args.db, "-At", "-F", "|", "-c", """
            SELECT (SELECT count(*) FROM billing.events),
                   (SELECT count(*) FROM billing.rejected_events),
                   (SELECT count(*) FROM billing.rejected_events WHERE sqlstate = 'XX000' OR sqlstate !~ '^[0-9A-Z]{5}$'),
                   (SELECT string_agg(reason, ' | ') FROM billing.rejected_events
                     WHERE reason ~ '(stack backtrace|panicked at|/rustc/|\\.rs:[0-9]+)')""")
        stored, rejected_rows, bad_sqlstates, backtrace_reasons = check.stdout.strip().split("|")
        if int(stored) != totals["accepted"]:
            fail("balance", f"billing.events holds {stored} events, {totals['accepted']} were accepted")
        if int(rejected_rows) != previous_kept:
            fail("kept", f"billing.rejected_events holds {rejected_rows} rows at the end, {previous_kept} counted")
        if int(bad_sqlstates):
            fail("xx000", f"{bad_sqlstates} rejects kept with SQLSTATE XX000 or a malformed one")
        if backtrace_reasons:
            fail("backtrace", "kept reasons hold a backtrace: " + backtrace_reasons[:300])
        rollups = psql(args.db, "-At", "-F", "|", "-c", """
            WITH e AS (SELECT customer_id, subscription_id, billable_metric_id, local_day AS day, dims,
                              count(*) AS n, coalesce(sum(value), 0) AS s, max(value) AS m
                       FROM billing.events GROUP BY 1, 2, 3, 4, 5),
                 r AS (SELECT customer_id, subscription_id, billable_metric_id, day, dims,
                              sum(events_count) AS n, coalesce(sum(value_sum), 0) AS s, max(value_max) AS m
                       FROM billing.usage_rollups GROUP BY 1, 2, 3, 4, 5)
            SELECT customer_id, subscription_id, billable_metric_id, day, dims, e.n, r.n, e.s, r.s, e.m, r.m
            FROM e FULL JOIN r USING (customer_id, subscription_id, billable_metric_id, day, dims)
            WHERE e.n IS DISTINCT FROM r.n OR e.s IS DISTINCT FROM r.s OR e.m IS DISTINCT FROM r.m
            ORDER BY 1, 2, 3, 4, 5::text""", check=False)
        if rollups.returncode != 0:
            fail("rollups", rollups.stderr.strip())
        for line in rollups.stdout.splitlines():
            f = line.split("|")
            digits = len(f[7].lstrip("-").replace(".", "").strip("0"))
            note = (f" (only the sum differs; the exact sum has {digits} significant digits: decimal "
                    "rounding of the sum or of a partial sum)" if f[5] == f[6] and f[9] == f[10] else "")
            fail("rollups", f"key {' '.join(f[:5])} events/rollups: count {f[5]}/{f[6]}, sum {f[7]}/{f[8]}, "
                            f"max {f[9]}/{f[10]}{note}")
    if log_path is None:
        print("fuzz: no server log given (FUZZ_SERVER_LOG or PG_CLUSTER_DIR): crash check by connection only")
    elif log_start is not None:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            log.seek(log_start)
            text = log.read()
        for pattern in ("terminated by signal", "was terminated", "PANIC:", "server process .* exited"):
            for match in re.finditer(pattern, text):
                fail("crash", "server log: " + text[max(0, match.start() - 100):match.end() + 100].replace("\n", " "))
                break

    print(f"fuzz: {inputs_count} inputs in {len(segments)} statement groups "
          f"({sum(len(i) for p, i in segments if p == 'batch')} in batches, "
          f"{sum(len(i) for p, i in segments if p == 'single')} single calls, "
          f"{sum(len(i) for p, i in segments if p == 'copy')} COPY rows): "
          f"{totals['accepted']} accepted, {totals['duplicate']} duplicate, {totals['conflict']} conflict, "
          f"{totals['rejected']} rejected")
    for check in ["crash", "xx000", "backtrace", "statuses", "balance", "kept", "expected", "rollups"]:
        problems = failures.get(check, [])
        print(f"fuzz: {check:9} {'FAILED' if problems else 'passed'}"
              + (f" ({len(problems)} problems)" if len(problems) > 1 else ""))
        for problem in problems[:10]:
            print(f"         {problem}")
        if len(problems) > 10:
            print(f"         ... {len(problems) - 10} more")
    if failures:
        size = "" if args.events == 3000 else f" FUZZ_EVENTS={args.events}"
        print(f"fuzz: FAILED (seed {seed}); reproduce with FUZZ_SEED={seed}{size} tests/fuzz/fuzz.sh")
        return 1
    print(f"fuzz: passed (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
