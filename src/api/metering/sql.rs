//! Thin SQL entry points for ingestion: one event and a JSON batch (the COPY paths are in
//! `copy_paths`).

use super::bulk_store;
use super::ingest::{ingest, Input, Outcome, Rejections};
use crate::base::error::BillingError;
use crate::base::json_view::{JsonView, Scalar};
use crate::domain::metering::event::{EventTime, RawEvent};
use crate::pg::jsonb::{JsonbRef, PgJsonb};
use crate::pg::table_access;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::AnyNumeric;

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

/// Whether ingestion writes each table with a direct path in this session, and if not why
/// (the first reason found).
#[pg_extern(volatile, parallel_unsafe)]
fn direct_write_status(
) -> TableIterator<'static, (name!(table_name, &'static str), name!(direct, bool), name!(reason, Option<String>))> {
    let reason = table_access::refusal(&bulk_store::EVENTS);
    TableIterator::once(("billing.events", reason.is_none(), reason))
}
