//! Stores a batch of new events the way COPY does, without a statement's executor around
//! each row: one probe of the idempotency key per event, then the executor's constraint
//! check, the heap's multi-insert and the index insertions, through `table_access`.
//!
//! For a batch, `INSERT ... ON CONFLICT DO NOTHING` checks every key twice (before and
//! while inserting), writes one heap WAL record per row and runs a projection per row; for
//! a 1,000-event batch that was most of the batch's time. Here the probe sees committed
//! keys and keys other transactions are still storing; it waits for those to end, as the
//! unique index would. A key found is reported as already stored, with the stored row
//! compared to the replay there and then; the rest are inserted with the unique index
//! enforcing the key as usual. Probing and inserting go 100 events at a time, so the window
//! in which a concurrent batch can start storing a probed key is short. If it does, the
//! insert raises unique_violation inside the batch's subtransaction, which is rolled back,
//! and the batch is tried again with fresh probes; after three lost races the caller stores
//! it through the SQL statement, whose ON CONFLICT settles races row by row. Each attempt
//! builds its rows in a memory context of its own, freed when it ends.
//!
//! The probe is a fifth of a fresh batch's time and finds nothing in a bulk load of new
//! events. So once a backend's batch found no stored key, its next batch is first inserted
//! without probes, the unique index alone guarding the keys: if a key turns out to be
//! stored, the unique_violation rolls that attempt back and the batch is stored again with
//! probes, which the backend then keeps doing until a batch finds no stored key again.
//!
//! Single events and batches of fewer than 16 go through the SQL statement: a direct
//! single-event path (speculative insertion, rollups updated in place) measured faster,
//! but could not be shown equivalent to the statement in every state a DBA can put the
//! tables in, so it was removed.
//!
//! The batch path also needs room in the transaction's cached subtransaction ids, and
//! applies where `table_access` says a table may be written directly.

use crate::domain::calendar;
use crate::domain::metering::event::{same_payload, Payload, ValidEvent};
use crate::pg::jsonb::{self, JsonbRef, PgJsonb};
use crate::pg::numeric::{decimal_datum, to_decimal};
use crate::pg::table_access::{self, equal_key, Column, Default, KeyScan, Shape, Target};
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgMemoryContexts, PgSqlErrorCode};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};

/// The columns of billing.events as this version creates them; the path refuses any other
/// shape.
const COLUMNS: [Column; 12] = [
    column("id", pg_sys::INT8OID, true, Default::IdentityAlways),
    column("customer_id", pg_sys::INT8OID, true, Default::None),
    column("subscription_id", pg_sys::INT8OID, true, Default::None),
    Column {
        name: "transaction_id",
        type_oid: pg_sys::TEXTOID,
        not_null: true,
        collation: pg_sys::C_COLLATION_OID,
        default: Default::None,
    },
    column("billable_metric_id", pg_sys::INT8OID, true, Default::None),
    column("timestamp", pg_sys::TIMESTAMPTZOID, true, Default::None),
    column("local_day", pg_sys::DATEOID, true, Default::None),
    column("properties", pg_sys::JSONBOID, true, Default::None),
    column("value", pg_sys::NUMERICOID, false, Default::None),
    column("precise_total_amount_cents", pg_sys::NUMERICOID, false, Default::None),
    column("dims", pg_sys::JSONBOID, true, Default::None),
    column("ingested_at", pg_sys::TIMESTAMPTZOID, true, Default::Now),
];

/// A column of a type without collation.
const fn column(name: &'static str, type_oid: pg_sys::Oid, not_null: bool, default: Default) -> Column {
    Column { name, type_oid, not_null, collation: pg_sys::InvalidOid, default }
}

const ID: usize = 0;
const CUSTOMER_ID: usize = 1;
const SUBSCRIPTION_ID: usize = 2;
const TRANSACTION_ID: usize = 3;
const BILLABLE_METRIC_ID: usize = 4;
const TIMESTAMP: usize = 5;
const LOCAL_DAY: usize = 6;
const PROPERTIES: usize = 7;
const VALUE: usize = 8;
const PRECISE_TOTAL_AMOUNT_CENTS: usize = 9;
const DIMS: usize = 10;
const INGESTED_AT: usize = 11;

/// From one event up to this many, the batch path's subtransaction costs more than it saves;
/// such batches go through the SQL statement.
const MIN_EVENTS: usize = 16;

/// Tries at storing a batch before leaving lost races to the SQL statement.
const ATTEMPTS: usize = 3;

/// Events probed and inserted together. A concurrent batch can only win a race for a key
/// between its probe and its insertion, so short chunks keep lost races rare while the
/// heap still takes rows many at a time.
const CHUNK: usize = 100;

/// Whether this backend's last stored batch found none of its keys stored, so that the next
/// one is first tried without probes (see the module comment).
static LAST_BATCH_ALL_NEW: AtomicBool = AtomicBool::new(false);

/// Subtransactions a transaction may already hold for the batch path to open one more.
const MAX_CACHED_SUBTRANSACTIONS: u8 = 48;

/// What storing one event found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Storage {
    /// Stored now, under this customer-local day (days since 2000-01-01).
    Stored { day: i32 },
    /// The key was stored before; whether with the same payload (duplicate) or not (conflict).
    AlreadyStored { same_payload: bool },
}

/// What `store` did with a batch.
pub enum BulkOutcome {
    /// One storage per event.
    Stored(Vec<Storage>),
    /// Nothing was written; store the batch through the SQL statement.
    NotApplicable,
}

/// Whether the event stored in `slot` (a row of billing.events) has the payload of `replay`.
unsafe fn same_as_stored(slot: *mut pg_sys::TupleTableSlot, replay: &ValidEvent<JsonbRef<'_>>) -> bool {
    pg_sys::slot_getsomeattrs(slot, (PRECISE_TOTAL_AMOUNT_CENTS + 1) as i32);
    let column = |c: usize| (*(*slot).tts_values.add(c), *(*slot).tts_isnull.add(c));
    let (metric, _) = column(BILLABLE_METRIC_ID);
    let (timestamp, _) = column(TIMESTAMP);
    let (properties, _) = column(PROPERTIES);
    let (precise, precise_null) = column(PRECISE_TOTAL_AMOUNT_CENTS);
    // Read in place, or detoasted into this call's memory.
    let properties = PgJsonb::from_datum(properties, false).expect("stored properties are never null");
    let precise = AnyNumeric::from_datum(precise, precise_null);
    same_as_stored_columns(metric.value() as i64, timestamp.value() as i64, &properties, precise, replay)
}

/// Whether a replay has the payload of a stored event, read from its columns (both storage
/// paths read the stored row their own way and meet here). A stored amount that no
/// validated event can carry (changed by hand to NaN or beyond the exact range) is a
/// different payload: the replay is a conflict.
pub fn same_as_stored_columns(
    billable_metric_id: i64,
    timestamp: i64,
    properties: &PgJsonb,
    precise_total_amount_cents: Option<AnyNumeric>,
    replay: &ValidEvent<JsonbRef<'_>>,
) -> bool {
    let precise_total_amount_cents = match precise_total_amount_cents {
        None => None,
        Some(amount) => match to_decimal(&amount, "precise_total_amount_cents") {
            Ok(amount) => Some(amount),
            Err(_) => return false,
        },
    };
    let stored =
        Payload { billable_metric_id, timestamp, properties: Some(properties.root()), precise_total_amount_cents };
    same_payload(&stored, replay)
}

/// Customer-local days of instants, as PostgreSQL's time zone database says (UTC, the most
/// common zone, without asking it: `timestamptz_zone` looks the zone up by name). Both
/// storage paths take an event's `local_day` from here.
#[derive(Default)]
pub struct LocalDays {
    /// Time zone names as text datums, made once per zone.
    timezones: Vec<(String, pg_sys::Datum)>,
}

impl LocalDays {
    /// The day (since 2000-01-01) of an event in its customer's time zone.
    pub fn of(&mut self, event: &ValidEvent<JsonbRef<'_>>) -> i32 {
        if event.timezone == "UTC" {
            return calendar::utc_day(event.timestamp);
        }
        let timezone = match self.timezones.iter().find(|(name, _)| *name == event.timezone) {
            Some(&(_, datum)) => datum,
            None => {
                let datum = text_datum(&event.timezone);
                self.timezones.push((event.timezone.clone(), datum));
                datum
            }
        };
        // SAFETY: a time zone that PostgreSQL accepted when the customer was created, and
        // an instant within its timestamp range (validated).
        unsafe {
            let local = direct_function_call_as_datum(
                pg_sys::timestamptz_zone,
                &[Some(timezone), Some(event.timestamp.into())],
            )
            .expect("a valid time zone gives a timestamp");
            let day = direct_function_call_as_datum(pg_sys::timestamp_date, &[Some(local)]).expect("a date");
            day.value() as i32
        }
    }
}

/// The sequence billing.events' ids come from.
pub fn events_id_sequence() -> pg_sys::Oid {
    // SAFETY: catalog lookups of objects the extension created.
    unsafe {
        pg_sys::getIdentitySequence(table_access::billing_table(EVENTS.table), (ID + 1) as pg_sys::AttrNumber, false)
    }
}

/// Ids for the events from billing.events' id sequence (`sequence`), taken in the order the events were
/// sent (their input index), whatever order they are stored in: for events at the same
/// instant, id order is ingestion order. Keys found already stored leave gaps.
pub fn allocate_ids(events: &[(usize, ValidEvent<JsonbRef<'_>>)], sequence: pg_sys::Oid) -> Vec<i64> {
    // SAFETY: nextval on the sequence, as an INSERT's identity default would call it.
    unsafe {
        let mut sent_order: Vec<usize> = (0..events.len()).collect();
        sent_order.sort_unstable_by_key(|&position| events[position].0);
        let mut ids = vec![0; events.len()];
        for position in sent_order {
            ids[position] = pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[sequence.into_datum()])
                .expect("nextval gives a value");
        }
        ids
    }
}

/// billing.events as the direct path writes it: the statement it replaces inserts, reads
/// stored keys (ON CONFLICT) and returns columns of the rows it stored, so the caller needs
/// INSERT and SELECT.
pub const EVENTS: Shape = Shape {
    table: c"events",
    columns: &COLUMNS,
    key: &[TRANSACTION_ID, SUBSCRIPTION_ID, CUSTOMER_ID],
    privileges: &[(pg_sys::ACL_INSERT, "INSERT"), (pg_sys::ACL_SELECT, "SELECT")],
};

/// Stores the batch's events whose keys are not stored yet (events come in the global key
/// order the caller sorted them in, each key once, with their ids). See the module comment
/// for when it declines.
pub fn store(events: &[(usize, ValidEvent<JsonbRef<'_>>)], dims: &[Option<String>], ids: &[i64]) -> BulkOutcome {
    // SAFETY: called inside a transaction from a SQL function; every pointer below comes
    // from PostgreSQL for this call and is released before it returns or by the
    // subtransaction's abort.
    unsafe {
        if events.len() < MIN_EVENTS || !room_for_a_subtransaction() {
            return BulkOutcome::NotApplicable;
        }
        let Ok(target) = Target::open(&EVENTS) else { return BulkOutcome::NotApplicable };
        let transaction_ids: Vec<pg_sys::Datum> = events.iter().map(|(_, e)| text_datum(&e.transaction_id)).collect();
        // An attempt without probes ends at the first stored key; the probed attempts after
        // it find them. A race lost to a concurrent batch is tried again: the probe then
        // sees the keys that batch stored. Past a few lost races the SQL statement settles
        // them row by row.
        let unprobed_first = LAST_BATCH_ALL_NEW.load(Ordering::Relaxed);
        for probed in std::iter::repeat_n(false, usize::from(unprobed_first)).chain([true; ATTEMPTS]) {
            // Each attempt's rows are built in a context of their own, freed after it.
            let mut attempt_memory = PgMemoryContexts::new("pg_billing batch attempt");
            let stored = attempt_memory.switch_to(|_| {
                in_subtransaction(AssertUnwindSafe(|| attempt(&target, events, dims, ids, &transaction_ids, probed)))
            });
            drop(attempt_memory);
            let all_new = stored.as_ref().map(|s| s.iter().all(|found| matches!(found, Storage::Stored { .. })));
            LAST_BATCH_ALL_NEW.store(all_new == Some(true), Ordering::Relaxed);
            if let Some(storage) = stored {
                return BulkOutcome::Stored(storage);
            }
        }
        BulkOutcome::NotApplicable
    }
}

/// One attempt at storing the batch, `CHUNK` events at a time: with `probed`, each chunk's
/// stored keys are found first and the rest inserted; without, every event is inserted
/// and the unique index alone guards the keys (a stored one raises unique_violation).
unsafe fn attempt(
    target: &Target,
    events: &[(usize, ValidEvent<JsonbRef<'_>>)],
    dims: &[Option<String>],
    ids: &[i64],
    transaction_ids: &[pg_sys::Datum],
    probed: bool,
) -> Vec<Storage> {
    let mut rows = EventRows::new();
    let mut storage: Vec<Storage> = Vec::with_capacity(events.len());
    for start in (0..events.len()).step_by(CHUNK) {
        let chunk = start..events.len().min(start + CHUNK);
        let stored_before = match probed {
            true => stored_keys(target, &events[chunk.clone()], &transaction_ids[chunk.clone()]),
            false => vec![None; chunk.len()],
        };
        let mut slots = Vec::with_capacity(chunk.len());
        for p in chunk {
            storage.push(match stored_before[p - start] {
                Some(same_payload) => Storage::AlreadyStored { same_payload },
                None => {
                    let (values, day) = rows.row(&events[p].1, &dims[p], ids[p], transaction_ids[p]);
                    slots.push(target.row(&values));
                    Storage::Stored { day }
                }
            });
        }
        target.insert_rows(&slots);
    }
    storage
}

fn text_datum(text: &str) -> pg_sys::Datum {
    text.into_datum().expect("text")
}

/// Whether a transaction that may hold this many subtransactions already may open one more:
/// past PostgreSQL's per-backend cache of 64, every snapshot would look them up on disk.
unsafe fn room_for_a_subtransaction() -> bool {
    if pg_sys::MyProc.is_null() {
        return true;
    }
    let cached = (*pg_sys::MyProc).subxidStatus;
    !cached.overflowed && cached.count < MAX_CACHED_SUBTRANSACTIONS
}

/// Whether the event's idempotency key (transaction id, subscription, and its customer)
/// is stored (see `KeyScan::find`), and if so whether with the same payload.
unsafe fn probe(scan: &mut KeyScan, event: &ValidEvent<JsonbRef<'_>>, transaction_id: pg_sys::Datum) -> Option<bool> {
    let mut keys = [
        equal_key(1, pg_sys::F_TEXTEQ, transaction_id),
        equal_key(2, pg_sys::F_INT8EQ, event.subscription_id.into()),
        equal_key(3, pg_sys::F_INT8EQ, event.customer_id.into()),
    ];
    scan.find(&mut keys).then(|| same_as_stored(scan.found, event))
}

/// Per event, whether its key is stored already (committed, stored earlier in this
/// transaction, or stored by a transaction that committed while this one waited for it)
/// and if so whether with the same payload.
unsafe fn stored_keys(
    target: &Target,
    events: &[(usize, ValidEvent<JsonbRef<'_>>)],
    transaction_ids: &[pg_sys::Datum],
) -> Vec<Option<bool>> {
    let mut scan = target.key_scan();
    events.iter().zip(transaction_ids).map(|((_, e), &tx)| probe(&mut scan, e, tx)).collect()
}

/// Builds rows of billing.events for new events.
struct EventRows {
    ingested_at: pg_sys::Datum,
    local_days: LocalDays,
}

impl EventRows {
    fn new() -> Self {
        EventRows {
            // SAFETY: inside a transaction.
            ingested_at: pg_sys::Datum::from(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }),
            local_days: LocalDays::default(),
        }
    }

    /// The values of the event's row and its customer-local day.
    unsafe fn row(
        &mut self,
        event: &ValidEvent<JsonbRef<'_>>,
        dims: &Option<String>,
        id: i64,
        transaction_id: pg_sys::Datum,
    ) -> ([Option<pg_sys::Datum>; COLUMNS.len()], i32) {
        let day = self.local_days.of(event);
        let mut values: [Option<pg_sys::Datum>; COLUMNS.len()] = [None; COLUMNS.len()];
        values[ID] = Some(id.into());
        values[CUSTOMER_ID] = Some(event.customer_id.into());
        values[SUBSCRIPTION_ID] = Some(event.subscription_id.into());
        values[TRANSACTION_ID] = Some(transaction_id);
        values[BILLABLE_METRIC_ID] = Some(event.billable_metric_id.into());
        values[TIMESTAMP] = Some(event.timestamp.into());
        values[LOCAL_DAY] = Some(day.into());
        values[PROPERTIES] = event.properties.map_or(Some(jsonb::empty_object()), |p| p.into_datum());
        values[VALUE] = decimal_datum(event.value);
        values[PRECISE_TOTAL_AMOUNT_CENTS] = decimal_datum(event.precise_total_amount_cents);
        values[DIMS] = Some(dims.as_deref().map_or_else(jsonb::empty_object, jsonb::from_text));
        values[INGESTED_AT] = Some(self.ingested_at);
        (values, day)
    }
}

/// Runs `work` in a subtransaction; `None`, with everything it wrote rolled back, when it
/// raised unique_violation. Other errors roll back and propagate.
unsafe fn in_subtransaction<R>(work: impl FnOnce() -> R + std::panic::UnwindSafe) -> Option<R> {
    let context = pg_sys::CurrentMemoryContext;
    let owner = pg_sys::CurrentResourceOwner;
    pg_sys::BeginInternalSubTransaction(std::ptr::null());
    pg_sys::MemoryContextSwitchTo(context);
    let restore = move || {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    PgTryBuilder::new(move || {
        let result = work();
        pg_sys::ReleaseCurrentSubTransaction();
        restore();
        Some(result)
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, move |_| {
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        restore();
        None
    })
    .catch_others(move |error: CaughtError| {
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        restore();
        error.rethrow()
    })
    .execute()
}
