//! Stores a batch's new events the way COPY does: one probe of the idempotency key per
//! event, then the heap's multi-insert and one index insertion per event, without a
//! statement's executor around each row.
//!
//! `INSERT ... ON CONFLICT DO NOTHING` checks every key twice (before and while inserting),
//! writes one heap WAL record per row and runs a projection per row; for a 1,000-event
//! batch that was most of the batch's time. Here the probe sees committed keys and keys
//! other transactions are still storing; it waits for those to end, as the unique index
//! would. A key found is reported as already stored, with the stored row compared to the
//! replay there and then; the rest are inserted with the unique index enforcing the key as
//! usual. Probing and inserting go 100 events at a time, so the window in which a
//! concurrent batch can start storing a probed key is short. If it does, the insert raises
//! unique_violation inside the batch's subtransaction, which is rolled back, and the batch
//! is tried again with fresh probes; after three lost races the caller stores it through
//! the SQL statement, whose ON CONFLICT settles races row by row.
//!
//! The probe is a fifth of a fresh batch's time and finds nothing in a bulk load of new
//! events. So once a backend's batch found no stored key, its next batch is first inserted
//! without probes, the unique index alone guarding the keys: if a key turns out to be
//! stored, the unique_violation rolls that attempt back and the batch is stored again with
//! probes, which the backend then keeps doing until a batch finds no stored key again.
//!
//! The path is taken only where it does exactly what the SQL statement would: read
//! committed isolation (under repeatable read a key committed after the snapshot must fail
//! the transaction, as ON CONFLICT makes it); a table with the columns this version created
//! and no triggers, rules, row security or CHECK constraints; a caller who may insert into
//! it; a table not distributed by Citus; and room in the
//! transaction's cached subtransaction ids.

use super::event::{same_payload, Payload, ValidEvent};
use crate::jsonb::{JsonbRef, PgJsonb};
use crate::numeric::{from_decimal, to_decimal};
use pgrx::fcinfo::direct_function_call_as_datum;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB, PgSqlErrorCode};
use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};

/// The columns of billing.events, by name; the path refuses any other layout.
const COLUMNS: [&str; 12] = [
    "id",
    "customer_id",
    "subscription_id",
    "transaction_id",
    "billable_metric_id",
    "timestamp",
    "local_day",
    "properties",
    "value",
    "precise_total_amount_cents",
    "dims",
    "ingested_at",
];
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

/// Below this many events, opening the table and a subtransaction costs more than the
/// path saves (single events ran at 0.50-0.56 x raw INSERTs through it, 0.58-0.65 x
/// through the statement).
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

/// Subtransactions this transaction may already hold for the path to open one more: past
/// PostgreSQL's per-backend cache of 64, every snapshot would look subtransactions up on disk.
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

/// The open table and its indexes, closed (keeping the lock) when dropped.
struct Target {
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result_relation: *mut pg_sys::ResultRelInfo,
    unique_index: pg_sys::Relation,
    /// A copy of the table's row type: slots made from it do not pin the relcache entry's
    /// descriptor, which would cost a resource-owner entry per event.
    row_type: pg_sys::TupleDesc,
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: everything was opened by `Target::open` and is closed once; the table's
        // lock is kept to the end of the transaction, as the executor keeps it.
        unsafe {
            if !self.result_relation.is_null() {
                pg_sys::ExecCloseIndices(self.result_relation);
            }
            if !self.estate.is_null() {
                pg_sys::FreeExecutorState(self.estate);
            }
            pg_sys::FreeTupleDesc(self.row_type);
            pg_sys::table_close(self.relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// Whether the current user holds `mode` on a relation.
unsafe fn permitted(relation: pg_sys::Oid, mode: pg_sys::AclMode) -> bool {
    pg_sys::pg_class_aclcheck(relation, pg_sys::GetUserId(), mode) == pg_sys::AclResult::ACLCHECK_OK
}

impl Target {
    /// Opens billing.events for the path, or `None` when the path does not apply.
    unsafe fn open() -> Option<Target> {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            return None;
        }
        if !pg_sys::MyProc.is_null() {
            let cached = (*pg_sys::MyProc).subxidStatus;
            if cached.overflowed || cached.count >= MAX_CACHED_SUBTRANSACTIONS {
                return None;
            }
        }
        if pg_sys::get_extension_oid(c"citus".as_ptr(), true) != pg_sys::InvalidOid {
            return None;
        }
        let relid = events_relid();
        if relid == pg_sys::InvalidOid || !permitted(relid, pg_sys::ACL_INSERT as pg_sys::AclMode) {
            return None;
        }
        let relation = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let mut target = Target {
            relation,
            estate: std::ptr::null_mut(),
            result_relation: std::ptr::null_mut(),
            unique_index: std::ptr::null_mut(),
            row_type: pg_sys::CreateTupleDescCopy((*relation).rd_att),
        };
        let form = &*(*relation).rd_rel;
        let desc = (*relation).rd_att;
        let plain = form.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && form.relam == pg_sys::HEAP_TABLE_AM_OID
            && !form.relrowsecurity
            && (*relation).trigdesc.is_null()
            && (*relation).rd_rules.is_null()
            && ((*desc).constr.is_null() || (*(*desc).constr).num_check == 0)
            && same_columns(desc);
        if !plain {
            return None;
        }
        target.estate = pg_sys::CreateExecutorState();
        target.result_relation =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
        pg_sys::InitResultRelInfo(target.result_relation, relation, 1, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(target.result_relation, false);
        let indexes = std::slice::from_raw_parts(
            (*target.result_relation).ri_IndexRelationDescs,
            (*target.result_relation).ri_NumIndices as usize,
        );
        let unique: Vec<pg_sys::Relation> = indexes.iter().copied().filter(|&i| (*(*i).rd_index).indisunique).collect();
        match unique.as_slice() {
            [index] if (*(**index).rd_index).indnkeyatts == 3 => target.unique_index = *index,
            _ => return None,
        }
        Some(target)
    }

    /// Whether the event's idempotency key (transaction id, subscription, and its customer)
    /// is stored, after waiting for any other transaction that is storing or deleting it,
    /// and if so whether with the same payload. `scan` reads through `dirty`, a dirty
    /// snapshot, which names such a transaction.
    unsafe fn probe(
        &self,
        scan: pg_sys::IndexScanDesc,
        dirty: *const pg_sys::SnapshotData,
        found: *mut pg_sys::TupleTableSlot,
        event: &ValidEvent<JsonbRef<'_>>,
        transaction_id: pg_sys::Datum,
    ) -> Option<bool> {
        let mut keys: [pg_sys::ScanKeyData; 3] = std::mem::zeroed();
        let strategy = pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber;
        let int8eq = pg_sys::Oid::from(pg_sys::F_INT8EQ);
        pg_sys::ScanKeyInit(&mut keys[0], 1, strategy, pg_sys::Oid::from(pg_sys::F_TEXTEQ), transaction_id);
        pg_sys::ScanKeyInit(&mut keys[1], 2, strategy, int8eq, event.subscription_id.into());
        pg_sys::ScanKeyInit(&mut keys[2], 3, strategy, int8eq, event.customer_id.into());
        loop {
            pg_sys::index_rescan(scan, keys.as_mut_ptr(), 3, std::ptr::null_mut(), 0);
            if !pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, found) {
                return None;
            }
            let (xmin, xmax) = ((*dirty).xmin, (*dirty).xmax);
            let in_progress = if xmin != pg_sys::InvalidTransactionId { xmin } else { xmax };
            if in_progress == pg_sys::InvalidTransactionId {
                return Some(same_as_stored(found, event));
            }
            pg_sys::XactLockTableWait(
                in_progress,
                self.relation,
                &mut (*found).tts_tid,
                pg_sys::XLTW_Oper::XLTW_InsertIndexUnique,
            );
        }
    }
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
    same_payload(&stored_payload(metric.value() as i64, timestamp.value() as i64, &properties, precise), replay)
}

/// The payload of a stored event from its columns, for comparing a replay with it (both
/// storage paths read the stored row their own way and meet here).
pub fn stored_payload(
    billable_metric_id: i64,
    timestamp: i64,
    properties: &PgJsonb,
    precise_total_amount_cents: Option<AnyNumeric>,
) -> Payload<JsonbRef<'_>> {
    Payload {
        billable_metric_id,
        timestamp,
        properties: Some(properties.root()),
        precise_total_amount_cents: precise_total_amount_cents
            .map(|n| to_decimal(&n, "precise_total_amount_cents").expect("stored amounts were validated")),
    }
}

/// The oid of billing.events.
unsafe fn events_relid() -> pg_sys::Oid {
    let namespace = pg_sys::get_namespace_oid(c"billing".as_ptr(), false);
    pg_sys::get_relname_relid(c"events".as_ptr(), namespace)
}

/// Whether the table has exactly the columns this version of pg_billing created.
unsafe fn same_columns(desc: pg_sys::TupleDesc) -> bool {
    let attributes = (*desc).attrs.as_slice((*desc).natts as usize);
    attributes.len() == COLUMNS.len()
        && attributes.iter().zip(COLUMNS).all(|(attribute, name)| {
            !attribute.attisdropped
                && std::ffi::CStr::from_ptr(attribute.attname.data.as_ptr()).to_bytes() == name.as_bytes()
        })
}

/// The customer-local day of an instant, as PostgreSQL's time zone database says.
unsafe fn local_day(timestamp: i64, timezone: pg_sys::Datum) -> i32 {
    let local = direct_function_call_as_datum(pg_sys::timestamptz_zone, &[Some(timezone), Some(timestamp.into())])
        .expect("a valid time zone gives a timestamp");
    let day = direct_function_call_as_datum(pg_sys::timestamp_date, &[Some(local)]).expect("a date");
    day.value() as i32
}

/// The sequence billing.events' ids come from.
pub fn events_id_sequence() -> pg_sys::Oid {
    // SAFETY: catalog lookups of objects the extension created.
    unsafe { pg_sys::getIdentitySequence(events_relid(), (ID + 1) as pg_sys::AttrNumber, false) }
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

/// Stores the batch's events whose keys are not stored yet (events come in the global key
/// order the caller sorted them in, each key once, with their ids). See the module comment
/// for when it declines.
pub fn store(events: &[(usize, ValidEvent<JsonbRef<'_>>)], dims: &[Option<String>], ids: &[i64]) -> BulkOutcome {
    // SAFETY: called inside a transaction from a SQL function; every pointer below comes
    // from PostgreSQL for this call and is released before it returns or by the
    // subtransaction's abort.
    unsafe {
        if events.len() < MIN_EVENTS {
            return BulkOutcome::NotApplicable;
        }
        let Some(target) = Target::open() else { return BulkOutcome::NotApplicable };
        let transaction_ids: Vec<pg_sys::Datum> =
            events.iter().map(|(_, e)| e.transaction_id.as_str().into_datum().expect("text")).collect();
        // An attempt without probes ends at the first stored key; the probed attempts after
        // it find them. A race lost to a concurrent batch is tried again: the probe then
        // sees the keys that batch stored. Past a few lost races the SQL statement settles
        // them row by row.
        let unprobed_first = LAST_BATCH_ALL_NEW.load(Ordering::Relaxed);
        for probed in std::iter::repeat_n(false, usize::from(unprobed_first)).chain([true; ATTEMPTS]) {
            let stored = in_subtransaction(AssertUnwindSafe(|| {
                let mut storage: Vec<Storage> = Vec::with_capacity(events.len());
                for start in (0..events.len()).step_by(CHUNK) {
                    let chunk = start..events.len().min(start + CHUNK);
                    let stored_before = match probed {
                        true => target.stored_keys(&events[chunk.clone()], &transaction_ids[chunk.clone()]),
                        false => vec![None; chunk.len()],
                    };
                    let (chunk_storage, slots) = target.new_rows(
                        &events[chunk.clone()],
                        &dims[chunk.clone()],
                        &ids[chunk.clone()],
                        &transaction_ids[chunk],
                        &stored_before,
                    );
                    target.insert_rows(&slots);
                    storage.extend(chunk_storage);
                }
                storage
            }));
            let all_new = stored.as_ref().map(|s| s.iter().all(|found| matches!(found, Storage::Stored { .. })));
            LAST_BATCH_ALL_NEW.store(all_new == Some(true), Ordering::Relaxed);
            if let Some(storage) = stored {
                return BulkOutcome::Stored(storage);
            }
        }
        BulkOutcome::NotApplicable
    }
}

impl Target {
    /// Per event, whether its key is stored already (committed, stored earlier in this
    /// transaction, or stored by a transaction that committed while this one waited for
    /// it) and if so whether with the same payload.
    unsafe fn stored_keys(
        &self,
        events: &[(usize, ValidEvent<JsonbRef<'_>>)],
        transaction_ids: &[pg_sys::Datum],
    ) -> Vec<Option<bool>> {
        // In this call's memory, which also frees it if the probe raises.
        let dirty = pg_sys::palloc0(std::mem::size_of::<pg_sys::SnapshotData>()).cast::<pg_sys::SnapshotData>();
        (*dirty).snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let scan = pg_sys::index_beginscan(self.relation, self.unique_index, dirty, 3, 0);
        let found = pg_sys::MakeSingleTupleTableSlot(self.row_type, &pg_sys::TTSOpsBufferHeapTuple);
        let stored =
            events.iter().zip(transaction_ids).map(|((_, e), &tx)| self.probe(scan, dirty, found, e, tx)).collect();
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(found);
        pg_sys::pfree(dirty.cast());
        stored
    }

    /// The rows of the events not stored yet, one slot each, and what storing each event
    /// finds.
    unsafe fn new_rows(
        &self,
        events: &[(usize, ValidEvent<JsonbRef<'_>>)],
        dims: &[Option<String>],
        ids: &[i64],
        transaction_ids: &[pg_sys::Datum],
        stored_before: &[Option<bool>],
    ) -> (Vec<Storage>, Vec<*mut pg_sys::TupleTableSlot>) {
        let empty_object = JsonB(serde_json::json!({})).into_datum().expect("jsonb");
        let ingested_at = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        let mut timezones: Vec<(&str, pg_sys::Datum)> = Vec::new();
        let mut storage: Vec<Storage> = Vec::with_capacity(events.len());
        let mut slots: Vec<*mut pg_sys::TupleTableSlot> = Vec::new();
        for (position, (_, event)) in events.iter().enumerate() {
            if let Some(same_payload) = stored_before[position] {
                storage.push(Storage::AlreadyStored { same_payload });
                continue;
            }
            let timezone = match timezones.iter().find(|(name, _)| *name == event.timezone) {
                Some(&(_, datum)) => datum,
                None => {
                    let datum = event.timezone.as_str().into_datum().expect("text");
                    timezones.push((&event.timezone, datum));
                    datum
                }
            };
            let day = local_day(event.timestamp, timezone);
            storage.push(Storage::Stored { day });
            let numeric = |v: Option<rust_decimal::Decimal>| v.and_then(|v| from_decimal(v).into_datum());
            let dims_datum = match &dims[position] {
                Some(text) => {
                    let text = CString::new(text.as_str()).expect("JSON text has no NUL");
                    direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(text.as_ptr()))])
                }
                None => Some(empty_object),
            };
            let mut values: [Option<pg_sys::Datum>; COLUMNS.len()] = [None; COLUMNS.len()];
            values[ID] = Some(ids[position].into());
            values[CUSTOMER_ID] = Some(event.customer_id.into());
            values[SUBSCRIPTION_ID] = Some(event.subscription_id.into());
            values[TRANSACTION_ID] = Some(transaction_ids[position]);
            values[BILLABLE_METRIC_ID] = Some(event.billable_metric_id.into());
            values[TIMESTAMP] = Some(event.timestamp.into());
            values[LOCAL_DAY] = Some(day.into());
            values[PROPERTIES] = event.properties.map_or(Some(empty_object), |p| p.into_datum());
            values[VALUE] = numeric(event.value);
            values[PRECISE_TOTAL_AMOUNT_CENTS] = numeric(event.precise_total_amount_cents);
            values[DIMS] = dims_datum;
            values[INGESTED_AT] = Some(ingested_at);
            let slot = pg_sys::MakeSingleTupleTableSlot(self.row_type, &pg_sys::TTSOpsHeapTuple);
            for (column, value) in values.iter().enumerate() {
                *(*slot).tts_values.add(column) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*slot).tts_isnull.add(column) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            slots.push(slot);
        }
        (storage, slots)
    }
}

impl Target {
    /// Inserts the rows (heap multi-insert) and their index entries, the unique index
    /// checking the key; the slots are dropped.
    unsafe fn insert_rows(&self, slots: &[*mut pg_sys::TupleTableSlot]) {
        if slots.is_empty() {
            return;
        }
        let command = pg_sys::GetCurrentCommandId(true);
        pg_sys::heap_multi_insert(
            self.relation,
            slots.as_ptr().cast_mut(),
            slots.len() as i32,
            command,
            0,
            std::ptr::null_mut(),
        );
        for &slot in slots {
            let no_list = std::ptr::null_mut();
            pg_sys::ExecInsertIndexTuples(
                self.result_relation,
                slot,
                self.estate,
                false,
                false,
                std::ptr::null_mut(),
                no_list,
            );
            let per_tuple = (*self.estate).es_per_tuple_exprcontext;
            if !per_tuple.is_null() {
                pg_sys::MemoryContextReset((*per_tuple).ecxt_per_tuple_memory);
            }
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
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
