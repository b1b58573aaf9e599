//! Set-based ingestion: one catalog read, one insert-and-rollup statement, one classification
//! read and one reject insert per batch, whatever its size.

use super::event::{same_payload, validate, Aggregation, CatalogSnapshot, Clock, MetricRow, RawEvent, SubscriptionRow, ValidEvent};
use crate::error::BillingError;
use crate::numeric::from_decimal;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

const CATALOG_SQL: &str = include_str!("../../sql/ingest_catalog.sql");
const INSERT_SQL: &str = include_str!("../../sql/ingest_insert.sql");
const EXISTING_SQL: &str = include_str!("../../sql/ingest_existing.sql");
const REJECT_SQL: &str = include_str!("../../sql/ingest_reject.sql");

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

/// One input: the payload as sent (kept with a rejection) and its parsed form.
pub struct Input {
    pub payload: Value,
    pub event: Result<RawEvent, BillingError>,
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

fn load_catalog(inputs: &[Input]) -> CatalogSnapshot {
    let mut external_ids: Vec<String> = Vec::new();
    let mut codes: Vec<String> = Vec::new();
    let (mut seen_ids, mut seen_codes) = (HashSet::new(), HashSet::new());
    for raw in inputs.iter().filter_map(|i| i.event.as_ref().ok()) {
        if let Some(id) = &raw.external_subscription_id {
            if seen_ids.insert(id.as_str()) {
                external_ids.push(id.clone());
            }
        }
        if let Some(code) = &raw.code {
            if seen_codes.insert(code.as_str()) {
                codes.push(code.clone());
            }
        }
    }
    let mut catalog = CatalogSnapshot::default();
    Spi::connect(|client| {
        let args: [DatumWithOid; 2] = [external_ids.into(), codes.into()];
        for row in client.select(CATALOG_SQL, None, &args).expect("catalog query") {
            let kind: String = row.get(1).unwrap().unwrap();
            let id: i64 = row.get(3).unwrap().unwrap();
            match kind.as_str() {
                "s" => {
                    catalog.subscriptions.insert(
                        row.get(2).unwrap().unwrap(),
                        SubscriptionRow {
                            id,
                            customer_id: row.get(4).unwrap().unwrap(),
                            plan_version_id: row.get(5).unwrap().unwrap(),
                            timezone: row.get(6).unwrap().unwrap(),
                            active_from: row.get(7).unwrap(),
                            active_until: row.get(8).unwrap(),
                        },
                    );
                }
                "m" => {
                    let aggregation: String = row.get(9).unwrap().unwrap();
                    catalog.metrics.insert(
                        row.get(2).unwrap().unwrap(),
                        MetricRow {
                            id,
                            aggregation: Aggregation::parse(&aggregation).expect("checked by the table"),
                            field_name: row.get(10).unwrap(),
                        },
                    );
                }
                _ => {
                    let keys: Vec<String> = row.get::<Vec<String>>(11).unwrap().unwrap_or_default();
                    catalog.dimension_keys.insert((row.get(5).unwrap().unwrap(), id), keys);
                }
            }
        }
    });
    catalog
}

/// Column arrays of the events to store, in the parameter order of ingest_insert.sql.
struct Columns {
    customer_id: Vec<i64>,
    subscription_id: Vec<i64>,
    transaction_id: Vec<String>,
    billable_metric_id: Vec<i64>,
    timestamp: Vec<TimestampWithTimeZone>,
    properties: Vec<JsonB>,
    value: Vec<Option<AnyNumeric>>,
    precise: Vec<Option<AnyNumeric>>,
    dims: Vec<JsonB>,
    timezone: Vec<String>,
    timestamp_given: Vec<bool>,
    index: Vec<i32>,
}

impl Columns {
    fn new(capacity: usize) -> Columns {
        Columns {
            customer_id: Vec::with_capacity(capacity),
            subscription_id: Vec::with_capacity(capacity),
            transaction_id: Vec::with_capacity(capacity),
            billable_metric_id: Vec::with_capacity(capacity),
            timestamp: Vec::with_capacity(capacity),
            properties: Vec::with_capacity(capacity),
            value: Vec::with_capacity(capacity),
            precise: Vec::with_capacity(capacity),
            dims: Vec::with_capacity(capacity),
            timezone: Vec::with_capacity(capacity),
            timestamp_given: Vec::with_capacity(capacity),
            index: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, index: usize, event: ValidEvent) {
        self.customer_id.push(event.customer_id);
        self.subscription_id.push(event.subscription_id);
        self.transaction_id.push(event.transaction_id);
        self.billable_metric_id.push(event.billable_metric_id);
        self.timestamp.push(micros_to_timestamptz(event.timestamp));
        self.properties.push(JsonB(event.properties));
        self.value.push(event.value.map(from_decimal));
        self.precise.push(event.precise_total_amount_cents.map(from_decimal));
        self.dims.push(JsonB(event.dims));
        self.timezone.push(event.timezone);
        self.timestamp_given.push(event.timestamp_given);
        self.index.push(index as i32);
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// Stores the rows; returns which positions (in these columns) were new.
    fn insert(&self) -> Vec<bool> {
        let args: Vec<DatumWithOid> = vec![
            self.customer_id.clone().into(),
            self.subscription_id.clone().into(),
            self.transaction_id.clone().into(),
            self.billable_metric_id.clone().into(),
            self.timestamp.clone().into(),
            self.properties.iter().map(|j| JsonB(j.0.clone())).collect::<Vec<_>>().into(),
            self.value.clone().into(),
            self.precise.clone().into(),
            self.dims.iter().map(|j| JsonB(j.0.clone())).collect::<Vec<_>>().into(),
            self.timezone.clone().into(),
        ];
        let stored: HashSet<(i64, String)> = Spi::connect_mut(|client| {
            client
                .update(INSERT_SQL, None, &args)
                .expect("event insert")
                .map(|row| (row.get::<i64>(1).unwrap().unwrap(), row.get::<String>(2).unwrap().unwrap()))
                .collect()
        });
        (0..self.len())
            .map(|i| stored.contains(&(self.subscription_id[i], self.transaction_id[i].clone())))
            .collect()
    }

    /// For rows whose key already existed: (input index, same payload?).
    fn classify_existing(&self, positions: &[usize]) -> Vec<(usize, bool)> {
        let args: Vec<DatumWithOid> = vec![
            positions.iter().map(|&i| self.customer_id[i]).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.subscription_id[i]).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.transaction_id[i].clone()).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.billable_metric_id[i]).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.timestamp[i]).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| JsonB(self.properties[i].0.clone())).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.precise[i].clone()).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.timestamp_given[i]).collect::<Vec<_>>().into(),
            positions.iter().map(|&i| self.index[i]).collect::<Vec<_>>().into(),
        ];
        Spi::connect(|client| {
            client
                .select(EXISTING_SQL, None, &args)
                .expect("existing events query")
                .map(|row| (row.get::<i32>(1).unwrap().unwrap() as usize, row.get::<bool>(2).unwrap().unwrap_or(false)))
                .collect()
        })
    }
}

fn record_rejections(inputs: &[Input], outcomes: &[Outcome]) {
    let rejected: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].status == Status::Rejected).collect();
    if rejected.is_empty() {
        return;
    }
    let field = |i: usize, f: fn(&RawEvent) -> &Option<String>| -> Option<String> {
        inputs[i].event.as_ref().ok().and_then(|raw| f(raw).clone())
    };
    let args: Vec<DatumWithOid> = vec![
        rejected.iter().map(|&i| field(i, |r| &r.external_subscription_id)).collect::<Vec<_>>().into(),
        rejected.iter().map(|&i| field(i, |r| &r.transaction_id)).collect::<Vec<_>>().into(),
        rejected.iter().map(|&i| field(i, |r| &r.code)).collect::<Vec<_>>().into(),
        rejected.iter().map(|&i| JsonB(inputs[i].payload.clone())).collect::<Vec<_>>().into(),
        rejected.iter().map(|&i| outcomes[i].error.as_ref().map(|e| e.kind.code().to_string())).collect::<Vec<_>>().into(),
        rejected.iter().map(|&i| outcomes[i].error.as_ref().map(|e| e.message.clone())).collect::<Vec<_>>().into(),
    ];
    Spi::connect_mut(|client| client.update(REJECT_SQL, None, &args).map(|_| ())).expect("reject insert");
}

/// Validates, deduplicates and stores a batch; one outcome per input, in input order.
pub fn ingest(inputs: &[Input], rejections: Rejections) -> Vec<Outcome> {
    let catalog = load_catalog(inputs);
    let now = i64::from(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() });
    let clock = Clock { now, future_margin: i64::from(FUTURE_MARGIN_SECONDS.get()) * 1_000_000 };
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(inputs.len());
    let mut columns = Columns::new(inputs.len());
    // The first occurrence of a key in the batch, and later same-payload repeats that take
    // their status from it once it is known.
    let mut first_in_batch: HashMap<(i64, String), (usize, ValidEvent)> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let transaction_id = input.event.as_ref().ok().and_then(|r| r.transaction_id.clone());
        let validated = input.event.clone().and_then(|raw| validate(&raw, &catalog, &clock));
        let outcome = match validated {
            Err(error) => Outcome { transaction_id, status: Status::Rejected, error: Some(error) },
            Ok(event) => {
                let key = (event.subscription_id, event.transaction_id.clone());
                match first_in_batch.get(&key) {
                    Some((first_index, first)) if same_payload(first, &event) => {
                        repeats.push((index, *first_index));
                        Outcome { transaction_id, status: Status::Duplicate, error: None }
                    }
                    Some(_) => Outcome { transaction_id, status: Status::Conflict, error: None },
                    None => {
                        first_in_batch.insert(key, (index, event.clone()));
                        columns.push(index, event);
                        Outcome { transaction_id, status: Status::Accepted, error: None }
                    }
                }
            }
        };
        outcomes.push(outcome);
    }
    if columns.len() > 0 {
        let stored = columns.insert();
        let existing: Vec<usize> = (0..columns.len()).filter(|&i| !stored[i]).collect();
        if !existing.is_empty() {
            for (index, same) in columns.classify_existing(&existing) {
                outcomes[index].status = if same { Status::Duplicate } else { Status::Conflict };
            }
        }
    }
    for (repeat, first) in repeats {
        if outcomes[first].status == Status::Conflict {
            outcomes[repeat].status = Status::Conflict;
        }
    }
    if rejections == Rejections::Record {
        record_rejections(inputs, &outcomes);
    }
    outcomes
}
