//! Set-based ingestion, whatever the batch size: the catalog from the backend's cache (one
//! lookup each for what it lacks), the events stored by the bulk path or one INSERT, one
//! upsert of their day rollups, and one insert of the rejects.

use super::bulk_store::{self, BulkOutcome, Storage};
use super::catalog_cache::{self, CachedCatalog};
use crate::base::error::BillingError;
use crate::domain::metering::event::{
    same_payload, validate, Aggregation, Clock, MetricRow, RawEvent, SubscriptionRow, ValidEvent,
};
use crate::domain::metering::rollup::{DayRollups, ExactSum, StoredEvent};
use crate::pg::date::to_date;
use crate::pg::invalidation;
use crate::pg::jsonb::{JsonbRef, PgJsonb};
use crate::pg::numeric::from_decimal;
use crate::pg::owner;
use crate::pg::spi_plans::{execute, Planning};
use crate::pg::table_access;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::AnyNumeric;
use std::collections::{HashMap, HashSet};

const SUBSCRIPTIONS_SQL: &str = include_str!("../../../sql/ingest_subscriptions.sql");
const ONE_SUBSCRIPTION_SQL: &str = include_str!("../../../sql/ingest_subscription.sql");
const METRICS_SQL: &str = include_str!("../../../sql/ingest_metrics.sql");
const DIMENSIONS_SQL: &str = include_str!("../../../sql/ingest_dimensions.sql");

/// Stores new events from `$rows`, a row source of (customer_id, subscription_id,
/// transaction_id, billable_metric_id, timestamp, properties, value,
/// precise_total_amount_cents, dims, local_day, id); returns the id and local day of those it stored
/// (keys that already existed are skipped). The caller sends the rows in one global key
/// order, so overlapping concurrent batches wait on each other instead of deadlocking,
/// with ids it took from the id sequence in the order the events were sent. Events without
/// properties (or without usage-splitting keys) arrive as NULL and are stored as {}.
macro_rules! insert_events {
    ($rows:expr) => {
        concat!(
            "INSERT INTO billing.events AS e (id, customer_id, subscription_id, transaction_id, billable_metric_id,
                                           \"timestamp\", local_day, properties, value, precise_total_amount_cents, dims)
             OVERRIDING SYSTEM VALUE
             SELECT i.id, i.customer_id, i.subscription_id, i.transaction_id, i.billable_metric_id, i.ts,
                    i.local_day, coalesce(i.properties, '{}'), i.value,
                    i.precise_total_amount_cents, coalesce(i.dims::jsonb, '{}')
             FROM ",
            $rows,
            " AS i(customer_id, subscription_id, transaction_id, billable_metric_id, ts, properties, value,
                   precise_total_amount_cents, dims, local_day, id)
             ON CONFLICT (transaction_id, subscription_id, customer_id) DO NOTHING
             RETURNING e.id, e.local_day"
        )
    };
}
/// A batch's events as rows, one array per column.
macro_rules! event_arrays {
    () => {
        "unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[],
                $7::numeric[], $8::numeric[], $9::text[], $10::date[], $11::bigint[])"
    };
}
/// A batch's events.
const INSERT_SQL: &str = insert_events!(event_arrays!());
/// One event, one value per column (unnesting one-element arrays cost about a third of a
/// single event's statement), as plain VALUES: on Citus a statement the router sends to the
/// event's shard with a generic plan, which no INSERT ... SELECT with parameters is.
macro_rules! insert_one_event {
    () => {
        "INSERT INTO billing.events AS e (id, customer_id, subscription_id, transaction_id, billable_metric_id,
                                       \"timestamp\", local_day, properties, value, precise_total_amount_cents, dims)
         OVERRIDING SYSTEM VALUE
         VALUES ($11::bigint, $1::bigint, $2::bigint, $3::text, $4::bigint, $5::timestamptz, $10::date,
                 coalesce($6::jsonb, '{}'), $7::numeric, $8::numeric, coalesce($9::text::jsonb, '{}'))
         ON CONFLICT (transaction_id, subscription_id, customer_id) DO NOTHING
         RETURNING e.id, e.local_day"
    };
}
/// One event.
const INSERT_ONE_SQL: &str = insert_one_event!();
/// A batch's events on Citus, planned for its arrays on every call (Citus plans no INSERT ...
/// SELECT with parameters generically), in a CTE: Citus's INSERT ... SELECT ... RETURNING
/// through SPI fails its tuple count check when a key already exists, and a CTE's does not.
const INSERT_DISTRIBUTED_SQL: &str =
    concat!("WITH stored AS (", insert_events!(event_arrays!()), ") SELECT s.id, s.local_day FROM stored s");

/// Folds rollups from `$rows`, a row source of (customer_id, subscription_id,
/// billable_metric_id, day, dims, events_count, value_sum, value_max, latest_at,
/// latest_event_id, latest_value) already summed per rollup key, into billing.usage_rollups
/// under the writer slot `$12`.
/// Rows come sorted by key, so concurrent writers lock rollup rows in one order.
macro_rules! upsert_rollups {
    ($rows:literal) => {
        concat!(
            "INSERT INTO billing.usage_rollups AS r (customer_id, subscription_id, billable_metric_id, day, dims, slot,
                                                   events_count, value_sum, value_max, latest_at, latest_event_id,
                                                   latest_value)
             SELECT n.customer_id, n.subscription_id, n.billable_metric_id, n.day, coalesce(n.dims::jsonb, '{}'),
                    $12::smallint, n.events_count, n.value_sum, n.value_max,
                    n.latest_at, n.latest_event_id, n.latest_value
             FROM ",
            $rows,
            " AS n(customer_id, subscription_id, billable_metric_id, day, dims, events_count, value_sum, value_max,
                   latest_at, latest_event_id, latest_value) ",
            fold_rollup!()
        )
    };
}
/// What a rollup row already stored becomes with the one being added.
macro_rules! fold_rollup {
    () => {
        "ON CONFLICT (customer_id, subscription_id, billable_metric_id, day, dims, slot) DO UPDATE SET
                 events_count = r.events_count + excluded.events_count,
                 value_sum = r.value_sum + excluded.value_sum,
                 value_max = greatest(r.value_max, excluded.value_max),
                 latest_at = greatest(r.latest_at, excluded.latest_at),
                 latest_event_id = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                                        THEN excluded.latest_event_id ELSE r.latest_event_id END,
                 latest_value = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                                     THEN excluded.latest_value ELSE r.latest_value END"
    };
}
/// Many rollup rows, one array per column.
const ROLLUP_SQL: &str = upsert_rollups!(
    "unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::date[], $5::text[], $6::bigint[], $7::numeric[],
            $8::numeric[], $9::timestamptz[], $10::bigint[], $11::numeric[])"
);
/// One rollup row, one value per column, as plain VALUES (routed to one shard on Citus).
const ROLLUP_ONE_SQL: &str = concat!(
    "INSERT INTO billing.usage_rollups AS r (customer_id, subscription_id, billable_metric_id, day, dims, slot,
                                           events_count, value_sum, value_max, latest_at, latest_event_id, latest_value)
     VALUES ($1::bigint, $2::bigint, $3::bigint, $4::date, coalesce($5::text::jsonb, '{}'), $12::smallint, $6::bigint,
             $7::numeric, $8::numeric, $9::timestamptz, $10::bigint, $11::numeric) ",
    fold_rollup!()
);
/// One event and its day rollup in one statement (a lone event, whose rollup nothing else
/// adds to, stored in a table without triggers or rules): the event as `INSERT_ONE_SQL` stores it, then, if it was stored, its rollup as
/// `ROLLUP_ONE_SQL` folds it (count 1, its value as sum, maximum and latest), under the
/// writer slot `$12`; returns the id and local day of a stored event, no row for a key
/// already stored. One statement instead of two saves an executor's start and end.
const INSERT_ONE_AND_FOLD_SQL: &str = concat!(
    "WITH stored AS (",
    insert_one_event!(),
    ") ",
    upsert_rollups!(
        "(SELECT $1::bigint, $2::bigint, $4::bigint, s.local_day, $9::text, 1::bigint, coalesce($7::numeric, 0),
                 $7::numeric, $5::timestamptz, s.id, $7::numeric FROM stored s)"
    ),
    " RETURNING $11::bigint, r.day"
);
const EXISTING_SQL: &str = include_str!("../../../sql/ingest_existing.sql");
/// The stored payload of one key ($1-$3) that already existed, at position $4: a probe of
/// the key's index, routed to the customer's shard on Citus.
const EXISTING_ONE_SQL: &str = "SELECT $4::integer, e.billable_metric_id, e.\"timestamp\", e.properties, e.precise_total_amount_cents
     FROM billing.events e WHERE e.transaction_id = $1::text AND e.subscription_id = $2::bigint AND e.customer_id = $3::bigint";
const REJECT_SQL: &str = include_str!("../../../sql/ingest_reject.sql");
/// Bills events as they are stored (charges paid in advance, wallets burned down in real
/// time, caps enforced at ingestion): one array per column (dimensions as JSON text).
const BILL_IN_ADVANCE_SQL: &str =
    "SELECT billing._bill_in_advance($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[],
                                   $5::numeric[], $6::text[]::jsonb[], $7::bigint[], $8::numeric[])";

pub static FUTURE_MARGIN_SECONDS: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Duplicate,
    Conflict,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Conflict => "conflict",
            Status::Rejected => "rejected",
        }
    }
}

/// What happened to one input event.
pub struct Outcome {
    pub transaction_id: Option<String>,
    pub status: Status,
    pub error: Option<BillingError>,
}

/// One input: its parsed form and, for JSON batches, the element as sent, which a rejection
/// keeps (inputs that arrived as columns keep their event rebuilt as JSON).
pub struct Input<'a> {
    pub payload: Option<JsonbRef<'a>>,
    pub event: Result<RawEvent<JsonbRef<'a>>, BillingError>,
}

/// What billing.rejected_events keeps of a rejected input.
enum KeptPayload<'a> {
    Sent(JsonbRef<'a>),
    /// The event rebuilt as JSON text (see `RawEvent::to_json_text`).
    Rebuilt(String),
}

impl IntoDatum for KeptPayload<'_> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        match self {
            KeptPayload::Sent(element) => element.into_datum(),
            KeptPayload::Rebuilt(text) => Some(crate::pg::jsonb::from_text(&text)),
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

/// Whether rejected events are written to billing.rejected_events (batch paths) or only
/// reported (the single-event call raises instead).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rejections {
    Record,
    ReportOnly,
}

fn micros_to_timestamptz(micros: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(micros).expect("validated timestamps are in range")
}

/// The catalog rows a batch refers to: the backend's cached catalog, with what it lacks
/// loaded (at most one lookup each for subscriptions, metrics and dimension keys).
fn load_catalog(inputs: &[Input<'_>]) -> CachedCatalog {
    let mut cached = catalog_cache::take();
    let catalog = &mut cached.catalog;
    let mut external_ids: Vec<&str> = Vec::new();
    let mut missing_ids: Vec<String> = Vec::new();
    let mut missing_codes: Vec<String> = Vec::new();
    let (mut seen_ids, mut seen_codes) = (HashSet::new(), HashSet::new());
    for raw in inputs.iter().filter_map(|i| i.event.as_ref().ok()) {
        if let Some(id) = raw.external_subscription_id.as_deref() {
            if seen_ids.insert(id) {
                external_ids.push(id);
                if !catalog.subscriptions.contains_key(id) {
                    missing_ids.push(id.to_string());
                }
            }
        }
        if let Some(code) = raw.code.as_deref() {
            if seen_codes.insert(code) && !catalog.metrics.contains_key(code) {
                missing_codes.push(code.to_string());
            }
        }
    }
    if missing_ids.is_empty() && missing_codes.is_empty() && cached_versions_cover(&cached, &external_ids) {
        return cached;
    }
    Spi::connect(|_| {
        let catalog = &mut cached.catalog;
        if !missing_ids.is_empty() {
            let (lookup, ids) = match missing_ids.len() {
                1 => (ONE_SUBSCRIPTION_SQL, 1),
                n => (SUBSCRIPTIONS_SQL, n),
            };
            let found = execute(lookup, &[missing_ids.into()], Planning::ForRows(ids), |row| {
                let subscription = SubscriptionRow {
                    id: row.get(2).unwrap(),
                    customer_id: row.get(3).unwrap(),
                    plan_version_ids: row.get(4).unwrap(),
                    timezone: row.get(5).unwrap(),
                    // Microseconds since 2000-01-01 UTC, as events' instants are validated.
                    active_from: row.get::<TimestampWithTimeZone>(6).unwrap().into(),
                    active_until: row.get::<TimestampWithTimeZone>(7).map(i64::from),
                    realtime: row.get(8).unwrap(),
                };
                (row.get(1).unwrap(), subscription)
            });
            catalog.subscriptions.extend(found);
        }
        if !missing_codes.is_empty() {
            let code_count = missing_codes.len();
            let found = execute(METRICS_SQL, &[missing_codes.into()], Planning::ForRows(code_count), |row| {
                let aggregation: String = row.get(3).unwrap();
                let metric = MetricRow {
                    id: row.get(2).unwrap(),
                    aggregation: Aggregation::parse(&aggregation).expect("checked by the table"),
                    field_name: row.get(4),
                };
                (row.get(1).unwrap(), metric)
            });
            catalog.metrics.extend(found);
        }
        let mut plan_versions: Vec<i64> = external_ids
            .iter()
            .filter_map(|id| catalog.subscriptions.get(*id))
            .flat_map(|s| s.plan_version_ids.iter().copied())
            .filter(|v| !cached.plan_versions.contains(v))
            .collect();
        plan_versions.sort_unstable();
        plan_versions.dedup();
        if !plan_versions.is_empty() {
            let version_count = plan_versions.len();
            let rows =
                execute(DIMENSIONS_SQL, &[plan_versions.clone().into()], Planning::ForRows(version_count), |row| {
                    (
                        (row.get::<i64>(1).unwrap(), row.get::<i64>(2).unwrap()),
                        row.get::<Vec<String>>(3).unwrap_or_default(),
                        row.get::<bool>(4).unwrap_or_default(),
                    )
                });
            for (key, found, in_advance) in rows {
                catalog.dimension_keys.entry(key).or_default().extend(found);
                if in_advance {
                    catalog.in_advance.insert(key);
                }
            }
            // Only the versions just loaded: the cached ones are sorted already.
            let loaded = |(version, _): &(i64, i64)| plan_versions.binary_search(version).is_ok();
            for (_, keys) in catalog.dimension_keys.iter_mut().filter(|(key, _)| loaded(key)) {
                keys.sort_unstable();
                keys.dedup();
            }
            cached.plan_versions.extend(plan_versions);
        }
    });
    cached
}

/// Whether the dimension keys of every known subscription's plan versions are cached.
fn cached_versions_cover(cached: &CachedCatalog, external_ids: &[&str]) -> bool {
    external_ids
        .iter()
        .filter_map(|id| cached.catalog.subscriptions.get(*id))
        .all(|s| s.plan_version_ids.iter().all(|v| cached.plan_versions.contains(v)))
}

/// Which statement stores events that the direct path does not.
#[derive(Clone, Copy)]
enum Statement {
    /// One event.
    One,
    /// Several events, one array per column.
    Many,
    /// One event and its day rollup.
    OneAndItsRollup,
    /// Several events into a table Citus distributes.
    Distributed,
}

/// Whether Citus distributes billing.events (billing.distribute() ran): its statements are
/// then ones Citus can plan and route, and no batch is stored below the statement level.
fn distributed() -> bool {
    // SAFETY: looks up pg_billing's own table inside a transaction.
    invalidation::distributed_by_citus(unsafe { table_access::billing_table(bulk_store::EVENTS.table) })
}

/// Validated events to store, each with its position in the input.
struct NewEvents<'a>(Vec<(usize, ValidEvent<JsonbRef<'a>>)>);

impl<'a> NewEvents<'a> {
    /// Stores the events, their ids from `id_sequence`, and adds the new ones to `rollups`,
    /// or, for a lone event when `fold_lone_event`, folds its rollup in the statement that
    /// stores it (unless billing.events has triggers or rules, whose writes to the rollups
    /// within that statement would make its upsert fail); returns what storing each
    /// position found.
    fn insert(&self, id_sequence: pg_sys::Oid, rollups: &mut DayRollups, fold_lone_event: bool) -> Vec<Storage> {
        // Each event's dimension set as text, made once for the insert and the rollup key.
        let dims: Vec<Option<String>> = self.0.iter().map(|(_, e)| e.dims.as_ref().map(|d| d.to_string())).collect();
        let ids = bulk_store::allocate_ids(&self.0, id_sequence);
        let lone = self.0.len() == 1;
        if distributed() {
            let storage =
                self.insert_with_statement(&dims, &ids, if lone { Statement::One } else { Statement::Distributed });
            self.add_stored(&storage, &dims, &ids, rollups);
            return storage;
        }
        if fold_lone_event && lone && !table_access::has_triggers_or_rules(bulk_store::EVENTS.table) {
            return self.insert_with_statement(&dims, &ids, Statement::OneAndItsRollup);
        }
        let storage = match bulk_store::store(&self.0, &dims, &ids) {
            BulkOutcome::Stored(storage) => storage,
            BulkOutcome::NotApplicable if self.0.len() == 1 => self.insert_with_statement(&dims, &ids, Statement::One),
            BulkOutcome::NotApplicable => self.insert_with_statement(&dims, &ids, Statement::Many),
        };
        self.add_stored(&storage, &dims, &ids, rollups);
        storage
    }

    /// Adds the events stored to the rollups still to write.
    fn add_stored(&self, storage: &[Storage], dims: &[Option<String>], ids: &[i64], rollups: &mut DayRollups) {
        for (p, found) in storage.iter().enumerate() {
            let Storage::Stored { day } = *found else { continue };
            let event = &self.0[p].1;
            let key = (event.customer_id, event.subscription_id, event.billable_metric_id, day, dims[p].clone());
            rollups.add(StoredEvent { key, id: ids[p], timestamp: event.timestamp, value: event.value });
        }
    }

    /// The events' customer-local days, as the direct path computes them.
    fn local_days(&self) -> Vec<Date> {
        let mut local_days = bulk_store::LocalDays::default();
        self.0.iter().map(|(_, e)| to_date(local_days.of(e))).collect()
    }

    /// One argument of a statement over all the events: one value each (see `argument`).
    fn field<'d, T: IntoDatum + 'd>(&self, field: impl Fn(&ValidEvent<JsonbRef<'a>>) -> T) -> DatumWithOid<'d> {
        argument(self.0.iter().map(|(_, e)| field(e)).collect())
    }

    /// Stores the events through INSERT ... ON CONFLICT DO NOTHING, then compares the
    /// replays of keys that already existed with what is stored.
    fn insert_with_statement(&self, dims: &[Option<String>], ids: &[i64], statement: Statement) -> Vec<Storage> {
        let mut args = vec![
            self.field(|e| e.customer_id),
            self.field(|e| e.subscription_id),
            self.field(|e| e.transaction_id.clone()),
            self.field(|e| e.billable_metric_id),
            self.field(|e| micros_to_timestamptz(e.timestamp)),
            self.field(|e| e.properties),
            self.field(|e| e.value.map(from_decimal)),
            self.field(|e| e.precise_total_amount_cents.map(from_decimal)),
            argument(dims.to_vec()),
            argument(self.local_days()),
            argument(ids.to_vec()),
        ];
        let (statement, planning) = match statement {
            Statement::One => (INSERT_ONE_SQL, Planning::Generic),
            Statement::Many => (INSERT_SQL, Planning::Generic),
            Statement::Distributed => (INSERT_DISTRIBUTED_SQL, Planning::Custom),
            Statement::OneAndItsRollup => {
                args.push(writer_slot().into());
                (INSERT_ONE_AND_FOLD_SQL, Planning::Generic)
            }
        };
        // The ids were chosen here, so a stored row's id says which event it is.
        let position: HashMap<i64, usize> = ids.iter().enumerate().map(|(p, &id)| (id, p)).collect();
        let mut days = vec![None; self.0.len()];
        let rows = Spi::connect(|_| {
            execute(statement, &args, planning, |row| {
                (position[&row.get::<i64>(1).unwrap()], row.get::<Date>(2).unwrap())
            })
        });
        for (p, day) in rows {
            days[p] = Some(day.to_pg_epoch_days());
        }
        let existing: Vec<usize> = (0..days.len()).filter(|&p| days[p].is_none()).collect();
        let mut same = vec![false; days.len()];
        if !existing.is_empty() {
            for (p, same_payload) in self.compare_with_stored(&existing) {
                same[p] = same_payload;
            }
        }
        days.iter()
            .zip(same)
            .map(|(day, same_payload)| match *day {
                Some(day) => Storage::Stored { day },
                None => Storage::AlreadyStored { same_payload },
            })
            .collect()
    }

    /// Bills the new events priced as they are stored (billing._bill_in_advance: charges paid
    /// in advance, and the spend control of subscriptions that have it), in the order they
    /// were sent; other events cost nothing here. The day rollups gathered so far are
    /// written first: a cap enforced at ingestion reads the period's usage from them.
    fn bill_in_advance(&self, storage: &[Storage], rollups: &mut DayRollups) {
        let mut billed: Vec<&(usize, ValidEvent<JsonbRef<'a>>)> = self
            .0
            .iter()
            .zip(storage)
            .filter(|((_, e), found)| e.priced_as_stored && matches!(found, Storage::Stored { .. }))
            .map(|(event, _)| event)
            .collect();
        if billed.is_empty() {
            return;
        }
        write_rollups(rollups);
        billed.sort_unstable_by_key(|(index, _)| *index);
        let args: [DatumWithOid; 8] = [
            billed.iter().map(|(_, e)| e.customer_id).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.subscription_id).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.billable_metric_id).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| micros_to_timestamptz(e.timestamp)).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.value.map(from_decimal)).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.dims.as_ref().map(|d| d.to_string())).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.plan_version_id).collect::<Vec<_>>().into(),
            billed.iter().map(|(_, e)| e.precise_total_amount_cents.map(from_decimal)).collect::<Vec<_>>().into(),
        ];
        // As the extension's owner, as a foreign key's check runs as the table's owner: the
        // ingesting role (billing_writer) writes events, not invoices, and may not call the
        // function itself.
        owner::as_extension_owner(|| Spi::connect(|_| execute(BILL_IN_ADVANCE_SQL, &args, Planning::Generic, |_| ())));
    }

    /// For positions whose key already existed: (position, same payload as stored?).
    fn compare_with_stored(&self, positions: &[usize]) -> Vec<(usize, bool)> {
        let args = [
            argument(positions.iter().map(|&p| self.0[p].1.transaction_id.clone()).collect()),
            argument(positions.iter().map(|&p| self.0[p].1.subscription_id).collect()),
            argument(positions.iter().map(|&p| self.0[p].1.customer_id).collect()),
            argument(positions.iter().map(|&p| p as i32).collect()),
        ];
        let (statement, planning) = match positions.len() {
            1 => (EXISTING_ONE_SQL, Planning::Generic),
            _ if distributed() => (EXISTING_SQL, Planning::Custom),
            n => (EXISTING_SQL, Planning::ForRows(n)),
        };
        Spi::connect(|_| {
            execute(statement, &args, planning, |row| {
                let position = row.get::<i32>(1).unwrap() as usize;
                let properties: PgJsonb = row.get(4).expect("stored properties are never null");
                let timestamp = row.get::<TimestampWithTimeZone>(3).unwrap().into();
                let replay = &self.0[position].1;
                (
                    position,
                    bulk_store::same_as_stored_columns(row.get(2).unwrap(), timestamp, &properties, row.get(5), replay),
                )
            })
        })
    }
}

/// Rollup rows per key, one per writer slot: backends ingesting the same customer's usage
/// at once mostly update different rows instead of queueing on one.
const WRITER_SLOTS: i32 = 8;

/// `pg_billing.writer_slot`: the writer slot of this session's rollup rows, or -1 (the
/// default) for one chosen by backend pid. Tests pin it to make two sessions fold into one
/// row.
pub static WRITER_SLOT: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(-1);

/// This backend's writer slot.
fn writer_slot() -> i16 {
    match WRITER_SLOT.get() {
        // SAFETY: MyProcPid is set once when the backend starts.
        -1 => (unsafe { pg_sys::MyProcPid } % WRITER_SLOTS) as i16,
        pinned => pinned as i16,
    }
}

/// Folds the rollups into billing.usage_rollups and empties them.
pub fn write_rollups(rollups: &mut DayRollups) {
    if !rollups.0.is_empty() {
        Spi::connect(|_| upsert_rollups(rollups));
    }
    rollups.0.clear();
}

/// The exact numeric of a sum.
fn numeric_sum(sum: &ExactSum) -> AnyNumeric {
    sum.parts().iter().map(|&part| from_decimal(part)).reduce(|total, part| total + part).unwrap_or_default()
}

fn upsert_rollups(rollups: &DayRollups) {
    let keys: Vec<_> = rollups.0.keys().collect();
    let sums: Vec<_> = rollups.0.values().collect();
    let args: [DatumWithOid; 12] = [
        argument(keys.iter().map(|k| k.0).collect()),
        argument(keys.iter().map(|k| k.1).collect()),
        argument(keys.iter().map(|k| k.2).collect()),
        argument(keys.iter().map(|k| to_date(k.3)).collect()),
        argument(keys.iter().map(|k| k.4.as_deref()).collect()),
        argument(sums.iter().map(|r| r.events_count).collect()),
        argument(sums.iter().map(|r| numeric_sum(&r.value_sum)).collect()),
        argument(sums.iter().map(|r| r.value_max.map(from_decimal)).collect()),
        argument(sums.iter().map(|r| micros_to_timestamptz(r.latest_at)).collect()),
        argument(sums.iter().map(|r| r.latest_event_id).collect()),
        argument(sums.iter().map(|r| r.latest_value.map(from_decimal)).collect()),
        writer_slot().into(),
    ];
    let (statement, planning) = match keys.len() {
        1 => (ROLLUP_ONE_SQL, Planning::Generic),
        _ if distributed() => (ROLLUP_SQL, Planning::Custom),
        _ => (ROLLUP_SQL, Planning::Generic),
    };
    execute(statement, &args, planning, |_| ());
}

/// An argument of a statement that has a one-row form (one value per column) and a
/// many-row form (one array per column): the value when there is one, else the array.
fn argument<'d, T: IntoDatum + 'd>(mut values: Vec<T>) -> DatumWithOid<'d> {
    match values.len() {
        1 => values.pop().expect("one value").into(),
        _ => values.into(),
    }
}

fn record_rejections(inputs: &[Input<'_>], outcomes: &[Outcome]) {
    let rejected: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].status == Status::Rejected).collect();
    if rejected.is_empty() {
        return;
    }
    let field = |f: fn(&RawEvent<JsonbRef<'_>>) -> Option<String>| -> DatumWithOid<'_> {
        rejected.iter().map(|&i| inputs[i].event.as_ref().ok().and_then(f)).collect::<Vec<_>>().into()
    };
    let args: Vec<DatumWithOid> = vec![
        field(|r| r.external_subscription_id.clone()),
        field(|r| r.transaction_id.clone()),
        field(|r| r.code.clone()),
        rejected
            .iter()
            .map(|&i| match (&inputs[i].payload, &inputs[i].event) {
                (Some(element), _) => KeptPayload::Sent(*element),
                (None, Ok(event)) => KeptPayload::Rebuilt(event.to_json_text()),
                (None, Err(_)) => unreachable!("inputs without a payload are parsed events"),
            })
            .collect::<Vec<_>>()
            .into(),
        rejected
            .iter()
            .map(|&i| outcomes[i].error.as_ref().map(|e| e.kind.code().to_string()))
            .collect::<Vec<_>>()
            .into(),
        rejected.iter().map(|&i| outcomes[i].error.as_ref().map(|e| e.message.clone())).collect::<Vec<_>>().into(),
    ];
    Spi::connect(|_| execute(REJECT_SQL, &args, Planning::Generic, |_| ()));
}

/// The transaction id a validated input carries, borrowed from the input.
fn key_of<'a>(input: &'a Input<'_>) -> &'a str {
    input
        .event
        .as_ref()
        .ok()
        .and_then(|raw| raw.transaction_id.as_deref())
        .expect("validated events have a transaction id")
}

/// Validates, deduplicates and stores a batch, its day rollups included; one outcome per
/// input, in input order.
pub fn ingest(inputs: &[Input<'_>], rejections: Rejections) -> Vec<Outcome> {
    let mut rollups = DayRollups::default();
    let outcomes = ingest_into(inputs, rejections, &mut rollups, true);
    write_rollups(&mut rollups);
    outcomes
}

/// Validates, deduplicates and stores a batch, adding its day rollups to `rollups` for the
/// caller to write (with those of the load's other batches) before its statement ends.
pub fn ingest_keeping_rollups(inputs: &[Input<'_>], rejections: Rejections, rollups: &mut DayRollups) -> Vec<Outcome> {
    ingest_into(inputs, rejections, rollups, false)
}

/// Validates, deduplicates and stores a batch, adding its day rollups to `rollups`, except
/// a lone new event's when `fold_lone_event` (its statement folds it).
fn ingest_into(
    inputs: &[Input<'_>],
    rejections: Rejections,
    rollups: &mut DayRollups,
    fold_lone_event: bool,
) -> Vec<Outcome> {
    let mut cached = load_catalog(inputs);
    let id_sequence = cached.id_sequence();
    let catalog = &cached.catalog;
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let clock = Clock { now, future_margin: i64::from(FUTURE_MARGIN_SECONDS.get()) * 1_000_000 };
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(inputs.len());
    let mut new_events = NewEvents(Vec::with_capacity(inputs.len()));
    // Each key's first occurrence in the batch (its position in new_events), and later
    // same-payload repeats that take their status from it once it is known.
    let mut first_in_batch: HashMap<(i64, &str), usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let transaction_id = input.event.as_ref().ok().and_then(|r| r.transaction_id.clone());
        let validated = input.event.as_ref().map_err(Clone::clone).and_then(|raw| validate(raw, catalog, &clock));
        let outcome = match validated {
            Err(error) => Outcome { transaction_id, status: Status::Rejected, error: Some(error) },
            Ok(event) => match first_in_batch.get(&(event.subscription_id, key_of(input))) {
                Some(&first) if same_payload(&new_events.0[first].1.payload(), &event) => {
                    repeats.push((index, new_events.0[first].0));
                    Outcome { transaction_id, status: Status::Duplicate, error: None }
                }
                Some(_) => Outcome { transaction_id, status: Status::Conflict, error: None },
                None => {
                    first_in_batch.insert((event.subscription_id, key_of(input)), new_events.0.len());
                    new_events.0.push((index, event));
                    Outcome { transaction_id, status: Status::Accepted, error: None }
                }
            },
        };
        outcomes.push(outcome);
    }
    if !new_events.0.is_empty() {
        // Every writer stores keys in one global order, so concurrent batches that overlap
        // wait on each other instead of deadlocking. Newest transaction id first: a replay
        // usually resends events older than the rest of its batch, and under most id
        // schemes (sequences, ULIDs, UUIDv7, timestamps) older means smaller. A batch that
        // replays keys a concurrent batch is still storing then does its own work before
        // it reaches them, rather than waiting at its first one. It is also the order of
        // the idempotency key's index, whose entries for the batch then land side by side.
        new_events.0.sort_unstable_by(|(_, a), (_, b)| {
            (&b.transaction_id, a.subscription_id).cmp(&(&a.transaction_id, b.subscription_id))
        });
        let storage = new_events.insert(id_sequence, rollups, fold_lone_event);
        for (position, found) in storage.iter().enumerate() {
            if let Storage::AlreadyStored { same_payload } = *found {
                let index = new_events.0[position].0;
                outcomes[index].status = if same_payload { Status::Duplicate } else { Status::Conflict };
            }
        }
        new_events.bill_in_advance(&storage, rollups);
    }
    for (repeat, first) in repeats {
        if outcomes[first].status == Status::Conflict {
            outcomes[repeat].status = Status::Conflict;
        }
    }
    if rejections == Rejections::Record {
        record_rejections(inputs, &outcomes);
    }
    catalog_cache::keep(cached);
    outcomes
}
