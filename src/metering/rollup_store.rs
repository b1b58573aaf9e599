//! Folds one day rollup into billing.usage_rollups without a statement, with the outcome of
//! the rollup statement's `ON CONFLICT DO UPDATE` for one row: find the row of the key
//! (this backend's slot) and update it as found, or insert it speculatively; if a
//! concurrent writer changed the row or inserted the key meanwhile, start again. A single
//! event's rollup through the statement cost about as much as the event's own insert,
//! mostly in starting and ending the statement's executor.
//!
//! Batches with several rollup rows keep the set-based statement.

use super::rollup::{DayRollup, RollupKey};
use super::table_access::{equal_key, Shape, Target};
use crate::jsonb;
use crate::numeric::decimal_datum;
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::prelude::*;

/// The columns of billing.usage_rollups, by name; the path refuses any other layout.
const COLUMNS: [&str; 12] = [
    "customer_id",
    "subscription_id",
    "billable_metric_id",
    "day",
    "dims",
    "slot",
    "events_count",
    "value_sum",
    "value_max",
    "latest_at",
    "latest_event_id",
    "latest_value",
];
const EVENTS_COUNT: usize = 6;
const VALUE_SUM: usize = 7;
const VALUE_MAX: usize = 8;
const LATEST_AT: usize = 9;
const LATEST_EVENT_ID: usize = 10;
const LATEST_VALUE: usize = 11;

/// Rollup rows per key, one per writer slot: backends ingesting the same customer's usage
/// at once mostly update different rows instead of queueing on one.
const WRITER_SLOTS: i32 = 8;

/// This backend's writer slot.
pub fn writer_slot() -> i16 {
    // SAFETY: MyProcPid is set once when the backend starts.
    (unsafe { pg_sys::MyProcPid } % WRITER_SLOTS) as i16
}

const ROLLUPS: Shape = Shape {
    table: c"usage_rollups",
    columns: &COLUMNS,
    key_columns: 6,
    privileges: &[pg_sys::ACL_INSERT, pg_sys::ACL_UPDATE],
};

/// Folds `rollup` into the row of `key` in this backend's slot; `false` (nothing written)
/// where the direct path does not apply, for the caller to run the statement.
pub fn fold_one(key: &RollupKey, rollup: &DayRollup) -> bool {
    // SAFETY: called inside a transaction; every pointer comes from PostgreSQL for this
    // call, and the slots are dropped before it returns (or by the error's abort).
    unsafe {
        let Some(target) = Target::open(&ROLLUPS) else { return false };
        // Rows this transaction wrote in earlier statements must be as visible, and as
        // updatable, as a statement would find them.
        pg_sys::CommandCounterIncrement();
        let (customer_id, subscription_id, metric_id, day, dims) = key;
        let dims = dims.as_deref().map_or_else(jsonb::empty_object, jsonb::from_text);
        let slot = writer_slot().into_datum();
        let row: [Option<pg_sys::Datum>; COLUMNS.len()] = [
            Some((*customer_id).into()),
            Some((*subscription_id).into()),
            Some((*metric_id).into()),
            Some((*day).into()),
            Some(dims),
            slot,
            Some(rollup.events_count.into()),
            decimal_datum(Some(rollup.value_sum)),
            decimal_datum(rollup.value_max),
            Some(rollup.latest_at.into()),
            Some(rollup.latest_event_id.into()),
            decimal_datum(rollup.latest_value),
        ];
        let mut scan = target.key_scan();
        loop {
            let mut keys = [
                equal_key(1, pg_sys::F_INT8EQ, row[0].unwrap()),
                equal_key(2, pg_sys::F_INT8EQ, row[1].unwrap()),
                equal_key(3, pg_sys::F_INT8EQ, row[2].unwrap()),
                equal_key(4, pg_sys::F_DATE_EQ, row[3].unwrap()),
                equal_key(5, pg_sys::F_JSONB_EQ, row[4].unwrap()),
                equal_key(6, pg_sys::F_INT2EQ, row[5].unwrap()),
            ];
            let done = if scan.find(&mut keys) {
                let found = scan.found;
                pg_sys::slot_getallattrs(found);
                let stored = std::array::from_fn(|c| match *(*found).tts_isnull.add(c) {
                    true => None,
                    false => Some(*(*found).tts_values.add(c)),
                });
                let mut tid = (*found).tts_tid;
                target.update_unless_changed(&mut tid, &folded(&row, &stored))
            } else {
                target.insert_unless_key_appeared(&row)
            };
            if done {
                return true;
            }
            pgrx::check_for_interrupts!();
        }
    }
}

/// The stored row with the new partial aggregates of `row` folded in, as the rollup
/// statement's ON CONFLICT DO UPDATE folds them: counts and sums add up (raising as SQL
/// would beyond bigint), the maximum is the greater of those present, and the latest event
/// is the later by (timestamp, id).
unsafe fn folded(
    new: &[Option<pg_sys::Datum>; COLUMNS.len()],
    stored: &[Option<pg_sys::Datum>; COLUMNS.len()],
) -> [Option<pg_sys::Datum>; COLUMNS.len()] {
    let mut row = *new;
    let call = |function: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum, a, b| {
        direct_function_call_as_datum(function, &[a, b])
    };
    row[EVENTS_COUNT] = call(pg_sys::int8pl, stored[EVENTS_COUNT], row[EVENTS_COUNT]);
    row[VALUE_SUM] = call(pg_sys::numeric_add, stored[VALUE_SUM], row[VALUE_SUM]);
    row[VALUE_MAX] = match (stored[VALUE_MAX], row[VALUE_MAX]) {
        (Some(a), Some(b)) => call(pg_sys::numeric_larger, Some(a), Some(b)),
        (a, b) => a.or(b),
    };
    let latest = |r: &[Option<pg_sys::Datum>; COLUMNS.len()]| {
        (r[LATEST_AT].expect("not null").value() as i64, r[LATEST_EVENT_ID].expect("not null").value() as i64)
    };
    if latest(&row) <= latest(stored) {
        for column in [LATEST_AT, LATEST_EVENT_ID, LATEST_VALUE] {
            row[column] = stored[column];
        }
    }
    row
}
