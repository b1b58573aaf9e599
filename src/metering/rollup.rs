//! Day rollups of a batch's stored events: what billing.usage_rollups gains per customer,
//! subscription, metric, customer-local day and dimension set. Summing here leaves the
//! database one small upsert per batch instead of a grouping of every stored event.

use crate::error::BillingError;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// One rollup row's identity: customer, subscription, metric, local day (days since
/// 2000-01-01) and the dimension set as JSON text (`None` when the event has none).
pub type RollupKey = (i64, i64, i64, i32, Option<String>);

/// The partial aggregates of one rollup row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRollup {
    pub events_count: i64,
    pub value_sum: Decimal,
    pub value_max: Option<Decimal>,
    /// The latest event by (timestamp, id): the tie-break the raw-event reading uses too.
    pub latest_at: i64,
    pub latest_event_id: i64,
    pub latest_value: Option<Decimal>,
}

/// A stored event as its rollup sees it.
pub struct StoredEvent {
    pub key: RollupKey,
    pub id: i64,
    pub timestamp: i64,
    pub value: Option<Decimal>,
}

/// Rollups in key order, the order every writer locks them in.
#[derive(Default)]
pub struct DayRollups(pub BTreeMap<RollupKey, DayRollup>);

impl DayRollups {
    /// Adds one stored event. Fails only when a sum leaves the exact decimal range.
    pub fn add(&mut self, event: StoredEvent) -> Result<(), BillingError> {
        let value = event.value;
        let rollup = self.0.entry(event.key).or_insert(DayRollup {
            events_count: 0,
            value_sum: Decimal::ZERO,
            value_max: None,
            latest_at: event.timestamp,
            latest_event_id: event.id,
            latest_value: value,
        });
        rollup.events_count += 1;
        if let Some(v) = value {
            rollup.value_sum = rollup.value_sum.checked_add(v).ok_or_else(|| {
                BillingError::out_of_range("a day's usage sum is beyond the exact decimal range")
                    .detail(format!("adding {v} to {}", rollup.value_sum))
                    .hint("send values of a realistic magnitude, or split the usage over several metrics")
            })?;
            rollup.value_max = Some(rollup.value_max.map_or(v, |max| max.max(v)));
        }
        if (event.timestamp, event.id) > (rollup.latest_at, rollup.latest_event_id) {
            rollup.latest_at = event.timestamp;
            rollup.latest_event_id = event.id;
            rollup.latest_value = value;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn event(key: RollupKey, id: i64, timestamp: i64, value: Option<&str>) -> StoredEvent {
        StoredEvent { key, id, timestamp, value: value.map(|v| Decimal::from_str(v).unwrap()) }
    }

    fn d(v: &str) -> Decimal {
        Decimal::from_str(v).unwrap()
    }

    #[test]
    fn sums_counts_and_maxima_per_key() {
        let mut rollups = DayRollups::default();
        let day = (1, 10, 100, 9000, None);
        let other_day = (1, 10, 100, 9001, None);
        rollups.add(event(day.clone(), 1, 50, Some("2.5"))).unwrap();
        rollups.add(event(day.clone(), 2, 40, Some("-7"))).unwrap();
        rollups.add(event(other_day.clone(), 3, 60, Some("1"))).unwrap();
        let first = &rollups.0[&day];
        assert_eq!((first.events_count, first.value_sum, first.value_max), (2, d("-4.5"), Some(d("2.5"))));
        assert_eq!((first.latest_at, first.latest_event_id, first.latest_value), (50, 1, Some(d("2.5"))));
        assert_eq!(rollups.0[&other_day].events_count, 1);
    }

    #[test]
    fn events_without_a_value_count_but_do_not_sum() {
        let mut rollups = DayRollups::default();
        let key = (1, 10, 100, 9000, Some("{\"region\": \"eu\"}".to_string()));
        rollups.add(event(key.clone(), 1, 10, None)).unwrap();
        rollups.add(event(key.clone(), 2, 20, None)).unwrap();
        let rollup = &rollups.0[&key];
        assert_eq!((rollup.events_count, rollup.value_sum, rollup.value_max), (2, Decimal::ZERO, None));
        assert_eq!((rollup.latest_event_id, rollup.latest_value), (2, None));
    }

    #[test]
    fn the_latest_event_is_the_latest_timestamp_then_the_highest_id() {
        let mut rollups = DayRollups::default();
        let key = (1, 10, 100, 9000, None);
        rollups.add(event(key.clone(), 7, 30, Some("1"))).unwrap();
        rollups.add(event(key.clone(), 5, 30, Some("2"))).unwrap();
        rollups.add(event(key.clone(), 9, 20, Some("3"))).unwrap();
        let rollup = &rollups.0[&key];
        assert_eq!((rollup.latest_at, rollup.latest_event_id, rollup.latest_value), (30, 7, Some(d("1"))));
    }

    #[test]
    fn keys_come_out_in_order() {
        let mut rollups = DayRollups::default();
        for (sub, day) in [(12, 3), (10, 5), (12, 1), (10, 4)] {
            rollups.add(event((1, sub, 100, day, None), sub * 10 + day as i64, 0, Some("1"))).unwrap();
        }
        let keys: Vec<(i64, i32)> = rollups.0.keys().map(|k| (k.1, k.3)).collect();
        assert_eq!(keys, vec![(10, 4), (10, 5), (12, 1), (12, 3)]);
    }

    #[test]
    fn a_sum_beyond_the_decimal_range_is_an_error_not_a_wrap() {
        let mut rollups = DayRollups::default();
        let key = (1, 10, 100, 9000, None);
        rollups.add(event(key.clone(), 1, 0, Some("79228162514264337593543950335"))).unwrap();
        let error = rollups.add(event(key, 2, 0, Some("1"))).unwrap_err();
        assert_eq!(error.kind.code(), "22003");
    }
}
