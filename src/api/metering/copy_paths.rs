//! The COPY paths. Rows COPY writes to the billing.event_staging table wait there until
//! billing.ingest_staged() takes them; rows COPY sends to the billing.event_intake table are
//! validated, deduplicated and stored while the COPY runs, written once, never staged.
//!
//! The intake's row trigger takes each row before it is stored (it returns no row, so the
//! table stays empty), collects it in memory of its own and ingests every `INTAKE_BATCH` of
//! them; its statement triggers start a load and ingest what is left when the COPY ends, in
//! the COPY's own statement and transaction. A COPY that fails leaves nothing behind, as any
//! failed statement. A table rather than a view: its triggers can fire always (whatever the
//! session's replication role) through ALTER TABLE, which views refuse.

use super::ingest::{ingest_keeping_rollups, write_rollups, Input, Outcome, Rejections, Status};
use crate::base::error::{BillingError, ErrorKind};
use crate::domain::metering::event::{EventTime, RawEvent};
use crate::domain::metering::rollup::DayRollups;
use crate::pg::error_report::raise;
use crate::pg::jsonb::PgJsonb;
use crate::pg::spi_plans::{execute, Planning};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{heap_getattr_raw, PgMemoryContexts};
use std::cell::{Cell, RefCell};

const TAKE_STAGED_SQL: &str = include_str!("../../../sql/ingest_take_staged.sql");

/// Rows the intake collects before ingesting them together: a batch costs one rollup upsert
/// per subscription and day it touches, so larger ones cost less per event, and the load
/// holds the memory of one batch whatever its size.
const INTAKE_BATCH: usize = 10_000;

/// The columns of an event as COPY brings it to either target (the timestamp as text, in
/// either accepted format, so that a bad one is a reject rather than a failed COPY).
struct StagedRow {
    external_subscription_id: Option<String>,
    code: Option<String>,
    transaction_id: Option<String>,
    timestamp: Option<String>,
    precise_total_amount_cents: Option<String>,
}

impl StagedRow {
    /// The row as an input with its properties; a rejection keeps the event rebuilt from
    /// the columns.
    fn into_input<'a>(self, properties: Option<&'a PgJsonb>) -> Input<'a> {
        let event = RawEvent {
            external_subscription_id: self.external_subscription_id,
            code: self.code,
            transaction_id: self.transaction_id,
            timestamp: self.timestamp.map(EventTime::Text),
            properties: properties.map(PgJsonb::root),
            precise_total_amount_cents: self.precise_total_amount_cents,
        };
        Input { payload: None, event: Ok(event) }
    }
}

/// What a load did with its events.
#[derive(Default, Clone, Copy)]
struct Counts {
    accepted: i64,
    duplicates: i64,
    conflicts: i64,
    rejected: i64,
}

impl Counts {
    fn add(&mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            *match outcome.status {
                Status::Accepted => &mut self.accepted,
                Status::Duplicate => &mut self.duplicates,
                Status::Conflict => &mut self.conflicts,
                Status::Rejected => &mut self.rejected,
            } += 1;
        }
    }

    /// The counts as the SQL functions return them (their row type is spelt out in each
    /// signature: the SQL generator reads it there).
    fn into_row(self) -> (i64, i64, i64, i64) {
        (self.accepted, self.duplicates, self.conflicts, self.rejected)
    }
}

/// Rows waiting to be ingested together, their properties copied into the batch's own
/// memory, which each ingestion frees; and the day rollups of the load's stored events.
/// A load writes its rollups once, at its end (one upsert per subscription and day rather
/// than one per batch), or when they grow past `MAX_KEPT_ROLLUPS`.
struct StagedBatch {
    memory: PgMemoryContexts,
    rows: Vec<(StagedRow, Option<PgJsonb>)>,
    rollups: DayRollups,
}

/// Rollup rows a load keeps before writing them (a backfill over many days and
/// subscriptions would otherwise hold one per subscription and day in memory).
const MAX_KEPT_ROLLUPS: usize = 50_000;

impl StagedBatch {
    /// A batch whose memory is a child of the current memory context.
    fn new() -> StagedBatch {
        StagedBatch {
            memory: PgMemoryContexts::new("pg_billing staged batch"),
            rows: Vec::new(),
            rollups: DayRollups::default(),
        }
    }

    fn push(&mut self, row: StagedRow, properties: Option<PgJsonb>) {
        let properties = properties.map(|p| p.copy_into(&self.memory));
        self.rows.push((row, properties));
    }

    /// Ingests the rows (rejects kept in billing.rejected_events), adds what happened to
    /// `counts` and empties the batch.
    fn ingest_into(&mut self, counts: &mut Counts) {
        if self.rows.is_empty() {
            return;
        }
        let (rows, properties): (Vec<StagedRow>, Vec<Option<PgJsonb>>) =
            std::mem::take(&mut self.rows).into_iter().unzip();
        // SAFETY: only the counts leave the context; the properties, the inputs borrowing
        // them and everything ingestion allocates stay in it and are freed by the reset.
        unsafe {
            self.memory.switch_to(|_| {
                let inputs: Vec<Input> =
                    rows.into_iter().zip(&properties).map(|(row, p)| row.into_input(p.as_ref())).collect();
                counts.add(&ingest_keeping_rollups(&inputs, Rejections::Record, &mut self.rollups));
            });
            self.memory.reset();
        }
        if self.rollups.0.len() >= MAX_KEPT_ROLLUPS {
            write_rollups(&mut self.rollups);
        }
    }

    /// Ingests the rows left and writes the load's rollups.
    fn finish(&mut self, counts: &mut Counts) {
        self.ingest_into(counts);
        write_rollups(&mut self.rollups);
    }

    /// Forgets what a failed load left (its statement rolled back whatever it wrote).
    fn clear(&mut self) {
        self.rows.clear();
        self.rollups.0.clear();
        // SAFETY: the rows that pointed into the memory are gone.
        unsafe { self.memory.reset() };
    }
}

/// A ctid's text, `(block,offset)`, as a pair that orders like the ctid.
fn parse_ctid(text: &str) -> (u32, u32) {
    let (block, offset) = text.trim_matches(['(', ')']).split_once(',').expect("a ctid is (block,offset)");
    (block.parse().expect("a block number"), offset.parse().expect("an offset"))
}

/// Moves everything in billing.event_staging (filled by COPY) through validation and
/// deduplication, `batch_size` rows at a time; returns the counts.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_staged(
    batch_size: default!(i32, 10000),
) -> Result<
    TableIterator<'static, (name!(accepted, i64), name!(duplicates, i64), name!(conflicts, i64), name!(rejected, i64))>,
    ErrorReport,
> {
    if batch_size < 1 {
        return Err(BillingError::invalid("batch_size must be at least 1").detail(format!("got {batch_size}")).into());
    }
    let mut counts = Counts::default();
    let mut batch = StagedBatch::new();
    let mut position = "(0,0)".to_string();
    loop {
        let args = [batch_size.into(), position.clone().into()];
        let positions: Vec<String> = Spi::connect(|_| {
            execute(TAKE_STAGED_SQL, &args, Planning::ForRows(batch_size as usize), |row| {
                let staged = StagedRow {
                    external_subscription_id: row.get(2),
                    code: row.get(3),
                    transaction_id: row.get(4),
                    timestamp: row.get(5),
                    precise_total_amount_cents: row.get(7),
                };
                batch.push(staged, row.get(6));
                row.get(1).expect("every row has a ctid")
            })
        });
        let Some(last) = positions.into_iter().max_by_key(|p| parse_ctid(p)) else { break };
        position = last;
        batch.ingest_into(&mut counts);
    }
    batch.finish(&mut counts);
    Ok(TableIterator::once(counts.into_row()))
}

/// The backend's loads into billing.event_intake: the rows of the load in progress not
/// ingested yet and the counts of those that were. Kept from one load to the next, with
/// its memory (a child of TopMemoryContext, so that it outlives the COPY's contexts).
struct Intake {
    batch: StagedBatch,
    counts: Counts,
    /// Between a load's start and end triggers.
    loading: bool,
}

thread_local! {
    static INTAKE: RefCell<Option<Intake>> = const { RefCell::new(None) };
    static LAST_INTAKE: Cell<Option<Counts>> = const { Cell::new(None) };
}

/// The intake's triggers, which must all fire for every row and statement: without the row
/// trigger rows would be stored in the intake table rather than ingested, without the end
/// trigger the last batch would not be ingested.
const INTAKE_TRIGGERS: [&str; 3] = ["intake_start", "intake_row", "intake_end"];

/// Whether every intake trigger on the view fires whatever the session's replication role.
fn intake_triggers_always_enabled(trigger: &PgTrigger<'_>) -> bool {
    // SAFETY: the relation and its trigger descriptor are the ones PostgreSQL is firing
    // this trigger for.
    let triggers = unsafe {
        let descriptor = (*trigger.trigger_data().tg_relation).trigdesc;
        std::slice::from_raw_parts((*descriptor).triggers, (*descriptor).numtriggers as usize)
    };
    INTAKE_TRIGGERS.iter().all(|name| {
        triggers.iter().any(|t| {
            // SAFETY: trigger names are NUL-terminated strings owned by the descriptor.
            let trigger_name = unsafe { std::ffi::CStr::from_ptr(t.tgname) };
            trigger_name.to_bytes() == name.as_bytes()
                && t.tgenabled == pg_sys::TRIGGER_FIRES_ALWAYS as std::ffi::c_char
        })
    })
}

/// A row or the end of a load reached the intake without its start.
fn start_trigger_missing() -> BillingError {
    BillingError::new(ErrorKind::WrongState, "billing.event_intake's start trigger did not run")
        .hint("CREATE EXTENSION pg_billing makes intake_start, intake_row and intake_end, firing always")
}

/// Statement trigger before a COPY or INSERT into billing.event_intake: starts the load.
#[pg_trigger]
fn _intake_start<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    if !intake_triggers_always_enabled(trigger) {
        raise(
            BillingError::new(ErrorKind::WrongState, "billing.event_intake's triggers are not all in place")
                .hint("CREATE EXTENSION pg_billing makes intake_start, intake_row and intake_end, firing always"),
        );
    }
    INTAKE.with_borrow_mut(|intake| {
        let intake = intake.get_or_insert_with(|| Intake {
            // SAFETY: only the backend's intake memory is created in TopMemoryContext.
            batch: unsafe { PgMemoryContexts::TopMemoryContext.switch_to(|_| StagedBatch::new()) },
            counts: Counts::default(),
            loading: false,
        });
        intake.batch.clear();
        intake.counts = Counts::default();
        intake.loading = true;
    });
    Ok(None)
}

/// Row trigger before a row is stored in billing.event_intake: takes the row (returning no
/// row, so that nothing is stored there) and ingests the rows taken once there are
/// `INTAKE_BATCH` of them.
#[pg_trigger]
fn _intake_row<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let data = trigger.trigger_data();
    // SAFETY: the row and the descriptor PostgreSQL passed for this insert into the intake,
    // whose columns are text except for properties (jsonb); values are copied out below.
    let (staged, properties) = unsafe {
        let (tuple, descriptor) = (data.tg_trigtuple, (*data.tg_relation).rd_att);
        let column =
            |number: usize| heap_getattr_raw(tuple, number.try_into().expect("columns count from 1"), descriptor);
        let text = |number: usize| column(number).and_then(|datum| String::from_datum(datum, false));
        let staged = StagedRow {
            external_subscription_id: text(1),
            code: text(2),
            transaction_id: text(3),
            timestamp: text(4),
            precise_total_amount_cents: text(6),
        };
        (staged, column(5).and_then(|datum| PgJsonb::from_datum(datum, false)))
    };
    INTAKE.with_borrow_mut(|intake| {
        let Some(intake) = intake.as_mut().filter(|intake| intake.loading) else { raise(start_trigger_missing()) };
        intake.batch.push(staged, properties);
        if intake.batch.rows.len() >= INTAKE_BATCH {
            intake.batch.ingest_into(&mut intake.counts);
        }
    });
    Ok(None)
}

/// Statement trigger after a COPY or INSERT into billing.event_intake: ingests the rows
/// left, keeps the load's counts for billing.last_intake() and reports them (COPY's own
/// count is of rows stored in the table: none).
#[pg_trigger]
fn _intake_end<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    INTAKE.with_borrow_mut(|intake| {
        let Some(intake) = intake.as_mut().filter(|intake| intake.loading) else { raise(start_trigger_missing()) };
        intake.batch.finish(&mut intake.counts);
        intake.loading = false;
        LAST_INTAKE.set(Some(intake.counts));
        let Counts { accepted, duplicates, conflicts, rejected } = intake.counts;
        pgrx::notice!(
            "billing.event_intake: {accepted} accepted, {duplicates} duplicates, {conflicts} conflicts, {rejected} rejected"
        );
    });
    Ok(None)
}

/// What the session's last COPY (or INSERT) into billing.event_intake did with its events.
#[pg_extern(volatile, parallel_unsafe)]
fn last_intake(
) -> TableIterator<'static, (name!(accepted, i64), name!(duplicates, i64), name!(conflicts, i64), name!(rejected, i64))>
{
    TableIterator::new(LAST_INTAKE.get().map(Counts::into_row))
}
