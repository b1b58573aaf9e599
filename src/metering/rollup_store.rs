//! Folds one day rollup into billing.usage_rollups without a statement, as the rollup
//! statement's `ON CONFLICT DO UPDATE` does for each of its rows: find the row of the key
//! (this backend's slot), lock it and update it; or insert it speculatively, and start
//! again if a concurrent writer inserted the key meanwhile. A single event's rollup
//! through the statement cost about as much as the event's own insert, mostly in starting
//! and ending the statement's executor.
//!
//! Batches with several rollup rows keep the set-based statement.

use super::bulk_store::jsonb_datum;
use super::rollup::{DayRollup, RollupKey};
use super::table_access::{equal_key, Shape, Target};
use crate::numeric::from_decimal;
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::prelude::*;
use pgrx::JsonB;

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
        // lockable, as a statement would find them.
        pg_sys::CommandCounterIncrement();
        let (customer_id, subscription_id, metric_id, day, dims) = key;
        let dims =
            dims.as_deref().map_or_else(|| JsonB(serde_json::json!({})).into_datum().expect("jsonb"), jsonb_datum);
        let slot = writer_slot().into_datum();
        let numeric = |v: Option<rust_decimal::Decimal>| v.and_then(|v| from_decimal(v).into_datum());
        let mut row: [Option<pg_sys::Datum>; COLUMNS.len()] = [
            Some((*customer_id).into()),
            Some((*subscription_id).into()),
            Some((*metric_id).into()),
            Some((*day).into()),
            Some(dims),
            slot,
            Some(rollup.events_count.into()),
            numeric(Some(rollup.value_sum)),
            numeric(rollup.value_max),
            Some(rollup.latest_at.into()),
            Some(rollup.latest_event_id.into()),
            numeric(rollup.latest_value),
        ];
        let mut scan = target.key_scan();
        let locked = pg_sys::MakeSingleTupleTableSlot(target.row_type, &pg_sys::TTSOpsBufferHeapTuple);
        loop {
            let mut keys = [
                equal_key(1, pg_sys::F_INT8EQ, row[0].unwrap()),
                equal_key(2, pg_sys::F_INT8EQ, row[1].unwrap()),
                equal_key(3, pg_sys::F_INT8EQ, row[2].unwrap()),
                equal_key(4, pg_sys::F_DATE_EQ, row[3].unwrap()),
                equal_key(5, pg_sys::F_JSONB_EQ, row[4].unwrap()),
                equal_key(6, pg_sys::F_INT2EQ, row[5].unwrap()),
            ];
            if scan.find(&mut keys) {
                let mut tid = (*scan.found).tts_tid;
                if !target.lock_for_update(&mut tid, locked) {
                    continue;
                }
                pg_sys::slot_getallattrs(locked);
                let stored = |c: usize| match *(*locked).tts_isnull.add(c) {
                    true => None,
                    false => Some(*(*locked).tts_values.add(c)),
                };
                let stored: [Option<pg_sys::Datum>; COLUMNS.len()] = std::array::from_fn(stored);
                fold(&mut row, &stored);
                let updated = target.row(&row);
                target.update_locked(&mut tid, updated);
                pg_sys::ExecDropSingleTupleTableSlot(updated);
                break;
            }
            let inserted = target.row(&row);
            let done = target.insert_unless_key_appeared(inserted);
            pg_sys::ExecDropSingleTupleTableSlot(inserted);
            if done {
                break;
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(locked);
        true
    }
}

/// Folds the stored row's partial aggregates into `row` (the new ones), as the rollup
/// statement's ON CONFLICT DO UPDATE does: counts and sums add up (raising as SQL would
/// beyond bigint), the maximum is the greater of those present, and the latest event is
/// the later by (timestamp, id).
unsafe fn fold(row: &mut [Option<pg_sys::Datum>; COLUMNS.len()], stored: &[Option<pg_sys::Datum>; COLUMNS.len()]) {
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
    if latest(row) <= latest(stored) {
        for column in [LATEST_AT, LATEST_EVENT_ID, LATEST_VALUE] {
            row[column] = stored[column];
        }
    }
}
