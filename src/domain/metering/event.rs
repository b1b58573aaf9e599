//! One event, from the caller's payload to a validated row: pure Rust, checked against a
//! snapshot of the catalog rows the batch refers to.

use crate::base::decimal::parse_exact;
use crate::base::error::{BillingError, ErrorKind};
use crate::base::json_view::{JsonView, Scalar};
use crate::domain::calendar::{format_timestamp, parse_timestamp};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

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

/// The longest transaction id, external subscription id or metric code an event may carry,
/// in bytes (UTF-8): an identifier, not a document. Transaction ids are in the idempotency
/// key's index, whose entries PostgreSQL caps at about 2.7 KB.
pub const MAX_IDENTIFIER_BYTES: usize = 255;
/// How deep an event's properties may nest; the properties object is the first level.
pub const MAX_PROPERTIES_DEPTH: usize = 32;
/// The largest properties object, as stored (jsonb), in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 65_536;
/// The largest set of values that split usage (the properties charge filters and pricing
/// group keys read), as JSON text: it is part of the key of the day rollups' index.
pub const MAX_DIMENSIONS_BYTES: usize = 1_024;

/// The longest value an error's detail shows, in bytes; longer ones are cut with their size.
const SHOWN_BYTES: usize = 100;

/// An offending value for an error's detail: whole when short, else its start and its size.
pub fn shown(text: &str) -> String {
    if text.len() <= SHOWN_BYTES {
        return text.to_string();
    }
    let mut end = SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

fn too_large(message: String, detail: String, hint: &str) -> BillingError {
    BillingError::new(ErrorKind::ProgramLimit, message).detail(detail).hint(hint)
}

/// An event as the caller sent it, before any check.
#[derive(Debug, Clone)]
pub struct RawEvent<J> {
    pub external_subscription_id: Option<String>,
    pub code: Option<String>,
    pub transaction_id: Option<String>,
    /// `None` means "now" (and a replay without a timestamp matches any stored one).
    pub timestamp: Option<EventTime>,
    /// `None` (or JSON null) means no properties.
    pub properties: Option<J>,
    pub precise_total_amount_cents: Option<String>,
}

const EVENT_KEYS: [&str; 6] =
    ["external_subscription_id", "code", "transaction_id", "timestamp", "properties", "precise_total_amount_cents"];

impl<J: JsonView> RawEvent<J> {
    /// Reads one element of an `ingest_events` array; its shape errors become rejections.
    pub fn from_json(element: J) -> Result<RawEvent<J>, BillingError> {
        if element.scalar() != Scalar::Object {
            return Err(BillingError::invalid("an event must be a JSON object")
                .detail(format!("got {}", shown(&element.to_text()))));
        }
        let present = EVENT_KEYS.iter().filter(|k| element.get(k).is_some()).count();
        if present < element.len() {
            let key = element.keys().into_iter().find(|k| !EVENT_KEYS.contains(&k.as_str())).unwrap_or_default();
            return Err(BillingError::invalid(format!("unknown event key \"{key}\""))
                .detail(format!("allowed: {}", EVENT_KEYS.join(", "))));
        }
        let text = |key: &str| -> Result<Option<String>, BillingError> {
            let Some(value) = element.get(key) else { return Ok(None) };
            match value.scalar() {
                Scalar::Null => Ok(None),
                Scalar::Text(s) | Scalar::Number(s) => Ok(Some(s)),
                _ => Err(BillingError::invalid(format!("{key} must be a string"))
                    .detail(format!("got {}", shown(&value.to_text())))),
            }
        };
        Ok(RawEvent {
            external_subscription_id: text("external_subscription_id")?,
            code: text("code")?,
            transaction_id: text("transaction_id")?,
            timestamp: text("timestamp")?.map(EventTime::Text),
            properties: element.get("properties"),
            precise_total_amount_cents: text("precise_total_amount_cents")?,
        })
    }

    /// The event as JSON text, for a rejection of an input that did not arrive as a JSON
    /// element (a staged row): its fields, with what was not given left out. Properties
    /// nested deeper than pg_billing accepts are kept as their JSON text (a string), so the
    /// rejection is storable whatever their depth.
    pub fn to_json_text(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        let texts = [
            ("external_subscription_id", &self.external_subscription_id),
            ("code", &self.code),
            ("transaction_id", &self.transaction_id),
            ("precise_total_amount_cents", &self.precise_total_amount_cents),
        ];
        let quoted = |text: &str| Value::String(text.to_string()).to_string();
        for (key, value) in texts {
            if let Some(value) = value {
                fields.push(format!("{}: {}", quoted(key), quoted(value)));
            }
        }
        if let Some(timestamp) = &self.timestamp {
            fields.push(format!("{}: {}", quoted("timestamp"), quoted(&timestamp.describe())));
        }
        if let Some(properties) = self.properties {
            let text = properties.to_text();
            let text = if properties.depth(MAX_PROPERTIES_DEPTH) > MAX_PROPERTIES_DEPTH { quoted(&text) } else { text };
            fields.push(format!("{}: {}", quoted("properties"), text));
        }
        format!("{{{}}}", fields.join(", "))
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
    /// Every plan version the subscription is billed on (more than one after plan changes).
    pub plan_version_ids: Vec<i64>,
    pub timezone: String,
    /// Microseconds since 2000-01-01 UTC.
    pub active_from: i64,
    pub active_until: Option<i64>,
    /// Whether the subscription's stored events are priced at once for its spend control
    /// (a wallet burned down in real time, a cap enforced at ingestion).
    pub realtime: bool,
}

#[derive(Debug, Clone)]
pub struct MetricRow {
    pub id: i64,
    pub aggregation: Aggregation,
    pub field_name: Option<String>,
}

/// The catalog rows events are checked against: at least those of the batch at hand (the
/// backend keeps them between calls).
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    pub subscriptions: HashMap<String, SubscriptionRow>,
    pub metrics: HashMap<String, MetricRow>,
    /// Property keys that split usage (charge filter keys and pricing group keys), per
    /// (plan version, metric).
    pub dimension_keys: HashMap<(i64, i64), Vec<String>>,
    /// The (plan version, metric) pairs a charge paid in advance bills.
    pub in_advance: HashSet<(i64, i64)>,
}

/// A validated event, ready to store.
#[derive(Debug, Clone)]
pub struct ValidEvent<J> {
    pub customer_id: i64,
    pub subscription_id: i64,
    pub billable_metric_id: i64,
    pub transaction_id: String,
    pub timestamp: i64,
    pub timestamp_given: bool,
    /// `None` when the event carries no properties (stored as `{}`).
    pub properties: Option<J>,
    pub value: Option<Decimal>,
    pub precise_total_amount_cents: Option<Decimal>,
    /// The values of the keys that split usage (filters, pricing groups); `None` when none apply.
    pub dims: Option<Value>,
    pub timezone: String,
    /// Whether the event is priced as it is stored: a plan of the subscription charges the
    /// metric in advance, or the subscription's spend is controlled in real time.
    pub priced_as_stored: bool,
    /// The subscription's plan version when it has had only one (no plan changes).
    pub plan_version_id: Option<i64>,
}

/// Limits that depend on the session rather than the catalog.
pub struct Clock {
    pub now: i64,
    pub future_margin: i64,
}

fn not_numeric(text: &str, what: &str) -> BillingError {
    BillingError::malformed(format!("{what} must be numeric"))
        .detail(format!("got {}", shown(text)))
        .hint("send a plain decimal such as 12 or \"0.5\"")
}

/// Digits an event value may have before and after the decimal point. Usage sums values
/// over a period (and over every period, for recurring metrics) and prices the sum with
/// 28 significant digits; with these bounds a period's units stay exact up to 10^19, ten
/// thousand events at the largest value allowed (a billion billion tokens).
const MAX_VALUE_INTEGER_DIGITS: u32 = 15;
const MAX_VALUE_DECIMALS: u32 = 9;

fn numeric(text: &str, what: &str) -> Result<Decimal, BillingError> {
    let value = parse_exact(text, what, || not_numeric(text, what)).map_err(|error| {
        if text.len() > SHOWN_BYTES {
            error.detail(format!("got {}", shown(text)))
        } else {
            error
        }
    })?;
    let limit = Decimal::from(10_i64.pow(MAX_VALUE_INTEGER_DIGITS));
    if value.normalize().scale() > MAX_VALUE_DECIMALS || value.abs() >= limit {
        return Err(BillingError::out_of_range(format!("{what} is beyond the range usage sums exactly"))
            .detail(format!("got {}", shown(text)))
            .hint(format!(
                "send at most {MAX_VALUE_INTEGER_DIGITS} digits before the decimal point and {MAX_VALUE_DECIMALS} after it \
                 (a larger unit, such as thousands of tokens, or a rounded value)"
            )));
    }
    Ok(value)
}

fn required<'a>(value: &'a Option<String>, key: &str) -> Result<&'a str, BillingError> {
    match value.as_deref() {
        Some(v) if v.len() > MAX_IDENTIFIER_BYTES => Err(too_large(
            format!("{key} is longer than {MAX_IDENTIFIER_BYTES} bytes"),
            format!("got {}", shown(v)),
            &format!("send a {key} of at most {MAX_IDENTIFIER_BYTES} bytes"),
        )),
        Some(v) if !v.is_empty() => Ok(v),
        _ => {
            Err(BillingError::invalid(format!("{key} is required")).hint(format!("give every event a non-empty {key}")))
        }
    }
}

/// Properties within the size and depth pg_billing stores (checked before anything reads them).
fn check_properties<J: JsonView>(properties: J) -> Result<(), BillingError> {
    let size = properties.stored_size();
    if size > MAX_PROPERTIES_BYTES {
        return Err(too_large(
            format!("properties are larger than {MAX_PROPERTIES_BYTES} bytes"),
            format!("got {size} bytes"),
            "send at most 64 KB of properties per event",
        ));
    }
    let depth = properties.depth(MAX_PROPERTIES_DEPTH);
    if depth > MAX_PROPERTIES_DEPTH {
        return Err(too_large(
            format!("properties nest deeper than {MAX_PROPERTIES_DEPTH} levels"),
            format!("got more than {MAX_PROPERTIES_DEPTH} levels of objects and arrays"),
            "flatten the properties (the properties object itself is the first level)",
        ));
    }
    Ok(())
}

/// Text of a scalar property (its JSON text for numbers, booleans and containers); `None`
/// when absent or null.
fn property_text<J: JsonView>(property: Option<J>) -> Option<String> {
    let property = property?;
    match property.scalar() {
        Scalar::Null => None,
        Scalar::Text(s) | Scalar::Number(s) => Some(s),
        Scalar::Bool(b) => Some(b.to_string()),
        Scalar::Array | Scalar::Object => Some(property.to_value().to_string()),
    }
}

pub fn validate<J: JsonView>(
    raw: &RawEvent<J>,
    catalog: &CatalogSnapshot,
    clock: &Clock,
) -> Result<ValidEvent<J>, BillingError> {
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
    let properties = match raw.properties.map(|p| (p, p.scalar())) {
        None | Some((_, Scalar::Null)) => None,
        Some((p, Scalar::Object)) => Some(p),
        Some((other, _)) => {
            return Err(BillingError::invalid("properties must be a JSON object")
                .detail(format!("got {}", shown(&other.to_text()))))
        }
    };
    if let Some(properties) = properties {
        check_properties(properties)?;
    }
    let property = |key: &str| properties.and_then(|p| p.get(key));
    let timestamp = match &raw.timestamp {
        None => clock.now,
        Some(EventTime::Micros(micros)) => *micros,
        Some(EventTime::Text(text)) => parse_timestamp(text).ok_or_else(|| {
            BillingError::malformed("timestamp is not a valid timestamp")
                .detail(format!("got {}", shown(text)))
                .hint("send RFC 3339 text such as 2026-03-01T12:00:00Z or Unix seconds")
        })?,
    };
    let given = || raw.timestamp.as_ref().map_or("now".to_string(), |t| shown(&t.describe()));
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
            let text = property_text(property(field)).ok_or_else(|| {
                BillingError::invalid(format!("properties.{field} is required by metric \"{code}\""))
                    .hint(format!("send the value in properties.{field}"))
            })?;
            if aggregation.numeric_field() {
                if matches!(
                    property(field).map(JsonView::scalar),
                    Some(Scalar::Bool(_) | Scalar::Array | Scalar::Object)
                ) {
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
        if let Some(operation) = property_text(property("operation_type")) {
            if operation != "add" && operation != "remove" {
                return Err(BillingError::invalid("properties.operation_type must be add or remove")
                    .detail(format!("got {}", shown(&operation)))
                    .hint("omit it to add the value"));
            }
        }
    }
    let precise_total_amount_cents =
        raw.precise_total_amount_cents.as_deref().map(|t| numeric(t, "precise_total_amount_cents")).transpose()?;
    // The keys of every plan the subscription is billed on: usage of a period is priced on
    // the plan in force when it happened, whenever the event arrives.
    let dims = subscription
        .plan_version_ids
        .iter()
        .filter_map(|version| catalog.dimension_keys.get(&(*version, metric.id)))
        .flatten()
        .filter_map(|k| Some((k.clone(), property(k)?.to_value())))
        .collect::<Map<_, _>>();
    let dims = Some(dims).filter(|dims| !dims.is_empty()).map(Value::Object);
    if let Some(dims) = &dims {
        let size = dims.to_string().len();
        if size > MAX_DIMENSIONS_BYTES {
            return Err(too_large(
                format!("the properties that split usage are larger than {MAX_DIMENSIONS_BYTES} bytes"),
                format!("got {size} bytes of {}", shown(&dims.to_string())),
                "send shorter values in the properties charge filters and pricing groups read",
            ));
        }
    }
    Ok(ValidEvent {
        customer_id: subscription.customer_id,
        subscription_id: subscription.id,
        billable_metric_id: metric.id,
        transaction_id: transaction_id.to_string(),
        timestamp,
        timestamp_given: raw.timestamp.is_some(),
        properties,
        value,
        precise_total_amount_cents,
        dims,
        timezone: subscription.timezone.clone(),
        priced_as_stored: subscription.realtime
            || subscription
                .plan_version_ids
                .iter()
                .any(|version| catalog.in_advance.contains(&(*version, metric.id))),
        plan_version_id: match subscription.plan_version_ids[..] {
            [only] => Some(only),
            _ => None,
        },
    })
}

fn same_properties<J: JsonView>(a: Option<J>, b: Option<J>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (None, None) => true,
        (Some(only), None) | (None, Some(only)) => only.is_empty(),
    }
}

/// What decides whether a replay of a key is a duplicate or a conflict: of the first event
/// of the batch with that key, or of the event stored with it.
pub struct Payload<J> {
    pub billable_metric_id: i64,
    pub timestamp: i64,
    /// `None` when there are no properties (the same as `{}`).
    pub properties: Option<J>,
    pub precise_total_amount_cents: Option<Decimal>,
}

impl<J: JsonView> ValidEvent<J> {
    pub fn payload(&self) -> Payload<J> {
        Payload {
            billable_metric_id: self.billable_metric_id,
            timestamp: self.timestamp,
            properties: self.properties,
            precise_total_amount_cents: self.precise_total_amount_cents,
        }
    }
}

/// Same idempotency key, same payload? (A replay that omits the timestamp matches any.)
pub fn same_payload<J: JsonView>(first: &Payload<J>, replay: &ValidEvent<J>) -> bool {
    first.billable_metric_id == replay.billable_metric_id
        && same_properties(first.properties, replay.properties)
        && first.precise_total_amount_cents == replay.precise_total_amount_cents
        && (!replay.timestamp_given || first.timestamp == replay.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl JsonView for &Value {
        fn scalar(self) -> Scalar {
            match self {
                Value::Null => Scalar::Null,
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Number(n) => Scalar::Number(n.to_string()),
                Value::String(s) => Scalar::Text(s.clone()),
                Value::Array(_) => Scalar::Array,
                Value::Object(_) => Scalar::Object,
            }
        }
        fn get(self, key: &str) -> Option<Self> {
            self.as_object()?.get(key)
        }
        fn len(self) -> usize {
            match self {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => 0,
            }
        }
        fn keys(self) -> Vec<String> {
            self.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
        }
        fn same(self, other: Self) -> bool {
            self == other
        }
        fn to_value(self) -> Value {
            self.clone()
        }
        fn to_text(self) -> String {
            self.to_string()
        }
        fn depth(self, _limit: usize) -> usize {
            let mut deepest = 0;
            let mut stack = vec![(self, 0)];
            while let Some((value, depth)) = stack.pop() {
                let children: Vec<&Value> = match value {
                    Value::Array(a) => a.iter().collect(),
                    Value::Object(o) => o.values().collect(),
                    _ => continue,
                };
                deepest = deepest.max(depth + 1);
                stack.extend(children.into_iter().map(|c| (c, depth + 1)));
            }
            deepest
        }
        fn stored_size(self) -> usize {
            self.to_string().len()
        }
    }

    fn catalog() -> CatalogSnapshot {
        let mut c = CatalogSnapshot::default();
        c.subscriptions.insert(
            "sub".into(),
            SubscriptionRow {
                id: 1,
                customer_id: 7,
                plan_version_ids: vec![3],
                timezone: "UTC".into(),
                active_from: 0,
                active_until: None,
                realtime: false,
            },
        );
        c.subscriptions.insert(
            "pending".into(),
            SubscriptionRow {
                id: 2,
                customer_id: 7,
                plan_version_ids: vec![3],
                timezone: "UTC".into(),
                active_from: 2_000_000_000_000,
                active_until: None,
                realtime: false,
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

    fn check(event: &Value) -> Result<ValidEvent<&Value>, (ErrorKind, String)> {
        let raw = RawEvent::from_json(event).map_err(|e| (e.kind, e.message.clone()))?;
        validate(&raw, &catalog(), &CLOCK).map_err(|e| (e.kind, e.message))
    }

    /// The error of an event that must be rejected.
    fn rejection(event: Value) -> (ErrorKind, String) {
        check(&event).map(|_| ()).unwrap_err()
    }

    #[test]
    fn accepts_a_numeric_event_and_extracts_dimensions() {
        let event = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1",
            "timestamp":"2000-01-02T00:00:00Z","properties":{"tokens":"12.5","region":"eu","model":"x"}});
        let e = check(&event).unwrap();
        assert_eq!(e.value, Some(Decimal::new(125, 1)));
        assert_eq!(e.dims, Some(json!({"region":"eu"})));
        assert_eq!(e.timestamp, 86_400_000_000);
        assert!(e.timestamp_given);
        let no_region = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1",
            "properties":{"tokens":1}});
        assert_eq!(check(&no_region).unwrap().dims, None);
    }

    #[test]
    fn dimensions_and_billing_in_advance_follow_every_plan_of_the_subscription() {
        // The subscription changed from plan version 3 (splits tokens by region) to 4
        // (splits them by model, bills calls in advance).
        let mut c = catalog();
        c.subscriptions.get_mut("sub").unwrap().plan_version_ids = vec![3, 4];
        c.dimension_keys.insert((4, 5), vec!["model".into()]);
        c.in_advance.insert((4, 6));
        let validated = |c: &CatalogSnapshot, event: Value| {
            let raw = RawEvent::from_json(&event).unwrap();
            let valid = validate(&raw, c, &CLOCK).unwrap();
            (valid.dims, valid.priced_as_stored)
        };
        let tokens = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1",
            "properties":{"tokens":1,"region":"eu","model":"x","other":"y"}});
        assert_eq!(validated(&c, tokens), (Some(json!({"region":"eu","model":"x"})), false));
        let calls = json!({"external_subscription_id":"sub","code":"calls","transaction_id":"c1"});
        assert_eq!(validated(&c, calls), (None, true));
        // Before the change, on version 3 alone: calls are billed in arrears.
        c.subscriptions.get_mut("sub").unwrap().plan_version_ids = vec![3];
        let calls = json!({"external_subscription_id":"sub","code":"calls","transaction_id":"c1"});
        assert_eq!(validated(&c, calls), (None, false));
    }

    #[test]
    fn rejections_carry_a_specific_kind() {
        let base = |patch: Value| {
            let mut e = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1","properties":{"tokens":1}});
            for (k, v) in patch.as_object().unwrap() {
                e[k] = v.clone();
            }
            rejection(e)
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
        assert_eq!(base(json!({"properties":[1]})).1, "properties must be a JSON object");
        assert_eq!(base(json!({"transaction_id":{"a":1}})).1, "transaction_id must be a string");
        assert_eq!(base(json!({"timestamp":"soon"})).0, ErrorKind::MalformedInput);
        assert_eq!(base(json!({"timestamp":"2100-01-01T00:00:00Z"})).1, "timestamp is too far in the future");
        assert_eq!(base(json!({"timestamp":"1999-12-31T23:59:59Z"})).0, ErrorKind::WrongState);
        assert_eq!(base(json!({"colour":"red"})).1, "unknown event key \"colour\"");
        assert_eq!(rejection(json!(["not", "an", "object"])).1, "an event must be a JSON object");
    }

    #[test]
    fn values_beyond_what_usage_sums_exactly_are_rejected() {
        let tokens = |v: Value| json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1","properties":{"tokens":v}});
        for accepted in ["999999999999999.999999999", "-999999999999999.999999999", "0.000000001", "1.500000000000"] {
            assert!(check(&tokens(json!(accepted))).is_ok(), "{accepted}");
        }
        for refused in ["1000000000000000", "-1000000000000000", "0.0000000001", "0.1234567890123456789012345678"] {
            let (kind, message) = rejection(tokens(json!(refused)));
            assert_eq!(kind, ErrorKind::NumericOutOfRange, "{refused}");
            assert_eq!(message, "properties.tokens is beyond the range usage sums exactly");
        }
        let cents = json!({"external_subscription_id":"sub","code":"tokens","transaction_id":"t1",
            "properties":{"tokens":1},"precise_total_amount_cents":"0.1234567891"});
        assert_eq!(rejection(cents).0, ErrorKind::NumericOutOfRange);
    }

    #[test]
    fn limits_are_rejections_of_their_own() {
        let event = |tx: &str, properties: Value| json!({"external_subscription_id":"sub","code":"tokens","transaction_id":tx,"properties":properties});
        assert!(check(&event(&"t".repeat(255), json!({"tokens": 1}))).is_ok());
        let (kind, message) = rejection(event(&"t".repeat(256), json!({"tokens": 1})));
        assert_eq!((kind, message.as_str()), (ErrorKind::ProgramLimit, "transaction_id is longer than 255 bytes"));
        assert_eq!(ErrorKind::ProgramLimit.code(), "54000");
        let nested = |levels: usize| {
            let mut value = json!(1);
            for _ in 0..levels {
                value = json!([value]);
            }
            value
        };
        // The properties object is the first level.
        assert!(check(&event("t", json!({"tokens": 1, "a": nested(31)}))).is_ok());
        assert_eq!(
            rejection(event("t", json!({"tokens": 1, "a": nested(32)}))).1,
            "properties nest deeper than 32 levels"
        );
        assert_eq!(
            rejection(event("t", json!({"tokens": 1, "blob": "b".repeat(70_000)}))).1,
            "properties are larger than 65536 bytes"
        );
        assert!(check(&event("t", json!({"tokens": 1, "region": "r".repeat(1_000)}))).is_ok());
        assert_eq!(
            rejection(event("t", json!({"tokens": 1, "region": "r".repeat(1_100)}))).1,
            "the properties that split usage are larger than 1024 bytes"
        );
        let long = "x".repeat(100_000);
        let error = validate(&RawEvent::from_json(&event(&long, json!({"tokens": 1}))).unwrap(), &catalog(), &CLOCK)
            .unwrap_err();
        assert!(error.detail.unwrap().ends_with("... (100000 bytes)"), "details cut long values short");
    }

    #[test]
    fn rebuilt_payloads_keep_too_deep_properties_as_text() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let raw = RawEvent::<&Value> {
            external_subscription_id: Some("sub".into()),
            code: None,
            transaction_id: Some("t\"1".into()),
            timestamp: Some(EventTime::Text("soon".into())),
            properties: Some(&deep),
            precise_total_amount_cents: None,
        };
        let kept: Value = serde_json::from_str(&raw.to_json_text()).unwrap();
        assert_eq!(kept["transaction_id"], json!("t\"1"));
        assert_eq!(kept["properties"], json!(deep.to_string()));
        let shallow = json!({"a": [1]});
        let raw = RawEvent { properties: Some(&shallow), ..raw };
        let kept: Value = serde_json::from_str(&raw.to_json_text()).unwrap();
        assert_eq!(kept["properties"], shallow);
    }

    #[test]
    fn count_metrics_need_no_field_and_replays_compare_payloads() {
        let first = json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t"});
        let first = check(&first).unwrap();
        assert_eq!(first.value, None);
        let replay = json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t","properties":{}});
        assert!(
            same_payload(&first.payload(), &check(&replay).unwrap()),
            "no properties and {{}} are the same payload"
        );
        let changed =
            json!({"external_subscription_id":"sub","code":"calls","transaction_id":"t","properties":{"a":1}});
        assert!(!same_payload(&first.payload(), &check(&changed).unwrap()));
    }
}
