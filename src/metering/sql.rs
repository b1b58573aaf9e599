//! Thin SQL entry points for ingestion: one event, a JSON batch, and the COPY staging table.

use super::event::{EventTime, JsonView, RawEvent, Scalar};
use super::ingest::{ingest, Input, Outcome, Rejections, Status};
use crate::error::BillingError;
use crate::jsonb::{JsonbRef, PgJsonb};
use crate::spi_plans::{execute, Planning};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgMemoryContexts};

/// Records one event; returns accepted, duplicate or conflict, and raises (writing
/// nothing) when the event is invalid.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_event(
    external_subscription_id: Option<&str>,
    code: Option<&str>,
    transaction_id: Option<&str>,
    timestamp: default!(Option<TimestampWithTimeZone>, "NULL"),
    properties: default!(Option<PgJsonb>, "'{}'"),
    precise_total_amount_cents: default!(Option<AnyNumeric>, "NULL"),
) -> Result<&'static str, ErrorReport> {
    let raw = RawEvent {
        external_subscription_id: external_subscription_id.map(str::to_string),
        code: code.map(str::to_string),
        transaction_id: transaction_id.map(str::to_string),
        timestamp: timestamp.map(|t| EventTime::Micros(i64::from(t))),
        properties: properties.as_ref().map(PgJsonb::root),
        precise_total_amount_cents: precise_total_amount_cents.map(|n| n.to_string()),
    };
    let input = Input { payload: None, event: Ok(raw) };
    let outcome = ingest(std::slice::from_ref(&input), Rejections::ReportOnly).pop().expect("one outcome");
    match outcome.error {
        Some(error) => Err(error.into()),
        None => Ok(outcome.status.as_str()),
    }
}

/// The events of a JSON array batch, each kept with its element for the reject table.
fn batch_inputs(batch: JsonbRef<'_>) -> Result<Vec<Input<'_>>, BillingError> {
    if batch.scalar() != Scalar::Array {
        return Err(BillingError::invalid("events must be a JSON array")
            .hint("pass [{\"external_subscription_id\": ..., \"code\": ..., \"transaction_id\": ...}, ...]"));
    }
    Ok(batch.elements().map(|element| Input { event: RawEvent::from_json(element), payload: Some(element) }).collect())
}

/// Records a batch (a JSON array of events); one row per input event, in order. Rejected
/// events are kept in billing.rejected_events and never hold back the good ones.
#[pg_extern(volatile, parallel_unsafe)]
fn ingest_events(
    events: PgJsonb,
) -> Result<
    TableIterator<
        'static,
        (
            name!(index, i32),
            name!(transaction_id, Option<String>),
            name!(status, &'static str),
            name!(reason, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let outcomes: Vec<Outcome> = ingest(&batch_inputs(events.root())?, Rejections::Record);
    Ok(TableIterator::new(
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| (i as i32, o.transaction_id, o.status.as_str(), o.error.map(|e| e.message))),
    ))
}

const TAKE_STAGED_SQL: &str = include_str!("../../sql/ingest_take_staged.sql");

/// One row taken out of billing.event_staging, copied out of the SPI result (its
/// properties, which inputs borrow, are kept beside it).
struct StagedRow {
    position: String,
    external_subscription_id: Option<String>,
    code: Option<String>,
    transaction_id: Option<String>,
    timestamp: Option<String>,
    precise_total_amount_cents: Option<String>,
}

/// A ctid's text, `(block,offset)`, as a pair that orders like the ctid.
fn parse_ctid(text: &str) -> (u32, u32) {
    let (block, offset) = text.trim_matches(['(', ')']).split_once(',').expect("a ctid is (block,offset)");
    (block.parse().expect("a block number"), offset.parse().expect("an offset"))
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
    let mut counts = [0i64; 4];
    let mut position = "(0,0)".to_string();
    // Each staged batch is read, ingested and freed in its own memory context, so a large
    // load runs in the memory of one batch.
    let mut batch_memory = PgMemoryContexts::new("pg_billing staged batch");
    loop {
        // SAFETY: only Rust-owned values leave the context; the batch and everything read
        // from it stay inside and are freed by the reset below.
        let outcomes = unsafe {
            batch_memory.switch_to(|context| {
                let args = [batch_size.into(), position.clone().into()];
                let rows = Spi::connect(|_| {
                    execute(TAKE_STAGED_SQL, &args, Planning::ForRows(batch_size as usize), |row| {
                        let staged = StagedRow {
                            position: row.get(1).expect("every row has a ctid"),
                            external_subscription_id: row.get(2),
                            code: row.get(3),
                            transaction_id: row.get(4),
                            timestamp: row.get(5),
                            precise_total_amount_cents: row.get(7),
                        };
                        (staged, row.get::<PgJsonb>(6).map(|properties| properties.copy_into(context)))
                    })
                });
                let (rows, properties): (Vec<StagedRow>, Vec<Option<PgJsonb>>) = rows.into_iter().unzip();
                let last = rows.iter().map(|row| row.position.as_str()).max_by_key(|p| parse_ctid(p))?;
                position = last.to_string();
                let inputs: Vec<Input> =
                    rows.into_iter().zip(&properties).map(|(row, p)| row.into_input(p.as_ref())).collect();
                Some(ingest(&inputs, Rejections::Record))
            })
        };
        let Some(outcomes) = outcomes else { break };
        for outcome in outcomes {
            counts[match outcome.status {
                Status::Accepted => 0,
                Status::Duplicate => 1,
                Status::Conflict => 2,
                Status::Rejected => 3,
            }] += 1;
        }
        // SAFETY: nothing allocated in the batch context is referenced any more.
        unsafe { batch_memory.reset() };
    }
    Ok(TableIterator::once((counts[0], counts[1], counts[2], counts[3])))
}
