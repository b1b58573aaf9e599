//! One event, from the caller's payload to a validated row: pure Rust, checked against a
//! snapshot of the catalog rows the batch refers to.

use crate::calendar::{format_timestamp, parse_timestamp};
use crate::error::{BillingError, ErrorKind};
use crate::pricing::decimal::parse_exact;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// When an event happened, as the caller gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum EventTime {
    /// RFC 3339 text or Unix seconds as a plain decimal, still to be parsed.
    Text(String),
    /// Microseconds since 2000-01-01 UTC, from a `timestamptz` argument.
    Micros(i64),
}

impl EventTime {
    fn describe(&self) -> String {
        match self {
            EventTime::Text(text) => text.clone(),
            EventTime::Micros(micros) => format_timestamp(*micros),
        }
    }
}

/// An event as the caller sent it, before any check.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub external_subscription_id: Option<String>,
    pub code: Option<String>,
    pub transaction_id: Option<String>,
    /// `None` means "now" (and a replay without a timestamp matches any stored one).
    pub timestamp: Option<EventTime>,
    pub properties: Value,
    pub precise_total_amount_cents: Option<String>,
}

impl RawEvent {
    /// Reads one element of an `ingest_events` array; its shape errors become rejections.
    pub fn from_json(value: &Value) -> Result<RawEvent, BillingError> {
        let Value::Object(map) = value else {
            return Err(BillingError::invalid("an event must be a JSON object").detail(format!("got {value}")));
        };
        const KEYS: [&str; 6] = [
            "external_subscription_id",
            "code",
            "transaction_id",
            "timestamp",
            "properties",
            "precise_total_amount_cents",
        ];
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(BillingError::invalid(format!("unknown event key \"{key}\""))
                .detail(format!("allowed: {}", KEYS.join(", "))));
        }
        let text = |key: &str| -> Result<Option<String>, BillingError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.as_str().to_string())),
                Some(other) => {
                    Err(BillingError::invalid(format!("{key} must be a string")).detail(format!("got {other}")))
                }
            }
        };
        Ok(RawEvent {
            external_subscription_id: text("external_subscription_id")?,
            code: text("code")?,
            transaction_id: text("transaction_id")?,
            timestamp: text("timestamp")?.map(EventTime::Text),
            properties: map.get("properties").cloned().unwrap_or(Value::Null),
            precise_total_amount_cents: text("precise_total_amount_cents")?,
        })
    }

    /// The payload kept with a rejection, so nothing the caller sent is lost.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            map.insert(k.to_string(), v.clone().map_or(Value::Null, Value::String));
        };
        put("external_subscription_id", &self.external_subscription_id);
        put("code", &self.code);
        put("transaction_id", &self.transaction_id);
        put(
            "timestamp",
            &self.timestamp.as_ref().map(|t| match t {
                EventTime::Text(text) => text.clone(),
                EventTime::Micros(micros) => format_timestamp(*micros),
            }),
        );
        put("precise_total_amount_cents", &self.precise_total_amount_cents);
        map.insert("properties".to_string(), self.properties.clone());
        Value::Object(map)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Count,
    Sum,
    Max,
    UniqueCount,
    Latest,
    WeightedSum,
}

impl Aggregation {
    pub fn parse(text: &str) -> Option<Aggregation> {
        Some(match text {
            "count" => Aggregation::Count,
            "sum" => Aggregation::Sum,
            "max" => Aggregation::Max,
            "unique_count" => Aggregation::UniqueCount,
            "latest" => Aggregation::Latest,
            "weighted_sum" => Aggregation::WeightedSum,
            _ => return None,
        })
    }

    fn numeric_field(self) -> bool {
        matches!(self, Aggregation::Sum | Aggregation::Max | Aggregation::Latest | Aggregation::WeightedSum)
    }
}

#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub id: i64,
    pub customer_id: i64,
    pub plan_version_id: i64,
    pub timezone: String,
    /// Microseconds since 2000-01-01 UTC.
    pub active_from: i64,
    pub active_until: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct MetricRow {
    pub id: i64,
    pub aggregation: Aggregation,
    pub field_name: Option<String>,
}

/// The catalog rows one batch refers to, loaded once per batch.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    pub subscriptions: HashMap<String, SubscriptionRow>,
    pub metrics: HashMap<String, MetricRow>,
    /// Property keys that split usage (charge filter keys and pricing group keys), per
    /// (plan version, metric).
    pub dimension_keys: HashMap<(i64, i64), Vec<String>>,
}

/// A validated event, ready to store.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub customer_id: i64,
    pub subscription_id: i64,
    pub billable_metric_id: i64,
    pub transaction_id: String,
    pub timestamp: i64,
    pub timestamp_given: bool,
    pub properties: Value,
    pub value: Option<Decimal>,
    pub precise_total_amount_cents: Option<Decimal>,
    pub dims: Value,
    pub timezone: String,
}

/// Limits that depend on the session rather than the catalog.
pub struct Clock {
    pub now: i64,
    pub future_margin: i64,
}

fn not_numeric(text: &str, what: &str) -> BillingError {
    BillingError::malformed(format!("{what} must be numeric"))
        .detail(format!("got {text}"))
        .hint("send a plain decimal such as 12 or \"0.5\"")
}

fn numeric(text: &str, what: &str) -> Result<Decimal, BillingError> {
    parse_exact(text, what, || not_numeric(text, what))
}

fn required<'a>(value: &'a Option<String>, key: &str) -> Result<&'a str, BillingError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => {
            Err(BillingError::invalid(format!("{key} is required")).hint(format!("give every event a non-empty {key}")))
        }
    }
}

/// Text of a scalar property (its JSON text for numbers and booleans); `None` when absent or null.
pub fn property_text(properties: &Map<String, Value>, key: &str) -> Option<String> {
    match properties.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub fn validate(raw: &RawEvent, catalog: &CatalogSnapshot, clock: &Clock) -> Result<ValidEvent, BillingError> {
    let external_id = required(&raw.external_subscription_id, "external_subscription_id")?;
    let code = required(&raw.code, "code")?;
    let transaction_id = required(&raw.transaction_id, "transaction_id")?;
    let subscription = catalog.subscriptions.get(external_id).ok_or_else(|| {
        BillingError::new(ErrorKind::UnknownReference, format!("unknown subscription \"{external_id}\""))
            .hint("create it with billing.create_subscription")
    })?;
    let metric = catalog.metrics.get(code).ok_or_else(|| {
        BillingError::new(ErrorKind::UnknownReference, format!("unknown billable metric \"{code}\""))
            .hint("create it with billing.create_billable_metric")
    })?;
    let properties = match &raw.properties {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        other => return Err(BillingError::invalid("properties must be a JSON object").detail(format!("got {other}"))),
    };
    let timestamp = match &raw.timestamp {
        None => clock.now,
        Some(EventTime::Micros(micros)) => *micros,
        Some(EventTime::Text(text)) => parse_timestamp(text).ok_or_else(|| {
            BillingError::malformed("timestamp is not a valid timestamp")
                .detail(format!("got {text}"))
                .hint("send RFC 3339 text such as 2026-03-01T12:00:00Z or Unix seconds")
        })?,
    };
    let given = || raw.timestamp.as_ref().map_or("now".to_string(), EventTime::describe);
    if timestamp > clock.now + clock.future_margin {
        return Err(BillingError::invalid("timestamp is too far in the future")
            .detail(format!("got {}", given()))
            .hint("events may be at most pg_billing.event_future_margin_seconds ahead of now()"));
    }
    let active =
        timestamp >= subscription.active_from && subscription.active_until.is_none_or(|until| timestamp <= until);
    if !active {
        return Err(BillingError::new(
            ErrorKind::WrongState,
            format!("subscription \"{external_id}\" is not active at the event's timestamp"),
        )
        .detail(format!("got {}", given()))
        .hint("send events between the subscription's start and its termination"));
    }
    let value = match (&metric.field_name, metric.aggregation) {
        (Some(field), aggregation) if aggregation != Aggregation::Count => {
            let text = property_text(&properties, field).ok_or_else(|| {
                BillingError::invalid(format!("properties.{field} is required by metric \"{code}\""))
                    .hint(format!("send the value in properties.{field}"))
            })?;
            if aggregation.numeric_field() {
                if matches!(properties.get(field), Some(Value::Bool(_) | Value::Array(_) | Value::Object(_))) {
                    return Err(not_numeric(&text, &format!("properties.{field}")));
                }
                Some(numeric(&text, &format!("properties.{field}"))?)
            } else {
                None
            }
        }
        _ => None,
    };
    if metric.aggregation == Aggregation::UniqueCount {
        if let Some(operation) = property_text(&properties, "operation_type") {
            if operation != "add" && operation != "remove" {
                return Err(BillingError::invalid("properties.operation_type must be add or remove")
                    .detail(format!("got {operation}"))
                    .hint("omit it to add the value"));
            }
        }
    }
    let precise_total_amount_cents =
        raw.precise_total_amount_cents.as_deref().map(|t| numeric(t, "precise_total_amount_cents")).transpose()?;
    let dims = catalog
        .dimension_keys
        .get(&(subscription.plan_version_id, metric.id))
        .map(|keys| Value::Object(keys.iter().filter_map(|k| Some((k.clone(), properties.get(k)?.clone()))).collect()))
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(ValidEvent {
        customer_id: subscription.customer_id,
        subscription_id: subscription.id,
        billable_metric_id: metric.id,
        transaction_id: transaction_id.to_string(),
        timestamp,
        timestamp_given: raw.timestamp.is_some(),
        properties: Value::Object(properties),
        value,
        precise_total_amount_cents,
        dims,
        timezone: subscription.timezone.clone(),
    })
}

/// Same idempotency key, same payload? (A replay that omits the timestamp matches any.)
pub fn same_payload(first: &ValidEvent, replay: &ValidEvent) -> bool {
    first.billable_metric_id == replay.billable_metric_id
        && first.properties == replay.properties
        && first.precise_total_amount_cents == replay.precise_total_amount_cents
        && (!replay.timestamp_given || first.timestamp == replay.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> CatalogSnapshot {
        let mut c = CatalogSnapshot::default();
        c.subscriptions.insert(
            "sub".into(),
            SubscriptionRow {
                id: 1,
                customer_id: 7,
                plan_version_id: 3,
                timezone: "UTC".into(),
                active_from: 0,
                active_until: None,
            },
        );
        c.subscriptions.insert(
            "pending".into(),
            SubscriptionRow {
                id: 2,
                customer_id: 7,
                plan_version_id: 3,
                timezone: "UTC".into(),
                active_from: 2_000_000_000_000,
                active_until: None,
            },
        );
        c.metrics.insert(
            "tokens".into(),
            MetricRow { id: 5, aggregation: Aggregation::Sum, field_name: Some("tokens".into()) },
        );
        c.metrics.insert("calls".into(), MetricRow { id: 6, aggregation: Aggregation::Count, field_name: None });
        c.dimension_keys.insert((3, 5), vec!["region".into()]);
        c
    }

    const CLOCK: Clock = Clock { now: 1_000_000_000_000, future_margin: 3_600_000_000 };

    fn check(event: Value) -> Result<ValidEvent, (ErrorKind, String)> {
        let raw = RawEvent::from_json(&event).map_err(|e| (e.kind, e.message.clone()))?;
        validate(&raw, &catalog(), &CLOCK).map_err(|e| (e.kind, e.message))
    }

    #[test]
    fn accepts_a_numeric_event_and_extracts_dimensions() {
        let e = check(json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1",
            "timestamp":"2000-01-02T00:00:00Z","properties":{"tokens":"12.5","region":"eu","model":"x"}}))
        .unwrap();
        assert_eq!(e.value, Some(Decimal::new(125, 1)));
        assert_eq!(e.dims, json!({"region":"eu"}));
        assert_eq!(e.timestamp, 86_400_000_000);
        assert!(e.timestamp_given);
    }

    #[test]
    fn rejections_carry_a_specific_kind() {
        let base = |patch: Value| {
            let mut e = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1","properties":{"tokens":1}});
            for (k, v) in patch.as_object().unwrap() {
                e[k] = v.clone();
            }
            check(e).unwrap_err()
        };
        assert_eq!(base(json!({"external_subscription_id":"nope"})).0, ErrorKind::UnknownReference);
        assert_eq!(base(json!({"code":"nope"})).0, ErrorKind::UnknownReference);
        assert_eq!(
            base(json!({"transaction_id":""})),
            (ErrorKind::InvalidParameter, "transaction_id is required".into())
        );
        assert_eq!(base(json!({"external_subscription_id":"pending"})).0, ErrorKind::WrongState);
        assert_eq!(
            base(json!({"properties":{"tokens":"abc"}})),
            (ErrorKind::MalformedInput, "properties.tokens must be numeric".into())
        );
        assert_eq!(base(json!({"properties":{"tokens":"NaN"}})).0, ErrorKind::MalformedInput);
        assert_eq!(base(json!({"properties":{"tokens":true}})).0, ErrorKind::MalformedInput);
        assert_eq!(base(json!({"properties":{"tokens":"1e999"}})).0, ErrorKind::MalformedInput);
        assert_eq!(
            base(json!({"properties":{"tokens":"123456789012345678901234567890"}})).0,
            ErrorKind::NumericOutOfRange
        );
        assert_eq!(
            base(json!({"properties":{}})),
            (ErrorKind::InvalidParameter, "properties.tokens is required by metric \"tokens\"".into())
        );
        assert_eq!(base(json!({"timestamp":"soon"})).0, ErrorKind::MalformedInput);
        assert_eq!(base(json!({"timestamp":"2100-01-01T00:00:00Z"})).1, "timestamp is too far in the future");
        assert_eq!(base(json!({"timestamp":"1999-12-31T23:59:59Z"})).0, ErrorKind::WrongState);
        assert_eq!(base(json!({"colour":"red"})).1, "unknown event key \"colour\"");
    }

    #[test]
    fn count_metrics_need_no_field_and_replays_compare_payloads() {
        let first = check(json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t"})).unwrap();
        assert_eq!(first.value, None);
        let replay = check(json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t"})).unwrap();
        assert!(same_payload(&first, &replay));
        let changed =
            check(json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t","properties":{"a":1}}))
                .unwrap();
        assert!(!same_payload(&first, &changed));
    }
}
