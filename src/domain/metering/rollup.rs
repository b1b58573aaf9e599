//! Day rollups of a batch's stored events: what billing.usage_rollups gains per customer,
//! subscription, metric, customer-local day and dimension set. Summing here leaves the
//! database one small upsert per batch instead of a grouping of every stored event.
//!
//! Sums stay exact whatever the values: a Decimal addition that would round (a sum needing
//! more than 28 significant digits) or overflow starts a new part instead, and the parts
//! are added in PostgreSQL numeric when the rollup is written, so a day rollup always
//! equals the exact `sum(value)` of its events.

use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// One rollup row's identity: customer, subscription, metric, local day (days since
/// 2000-01-01) and the dimension set as JSON text (`None` when the event has none).
pub type RollupKey = (i64, i64, i64, i32, Option<String>);

/// The partial aggregates of one rollup row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRollup {
    pub events_count: i64,
    pub value_sum: ExactSum,
    pub value_max: Option<Decimal>,
    /// The latest event by (timestamp, id): the tie-break the raw-event reading uses too.
    pub latest_at: i64,
    pub latest_event_id: i64,
    pub latest_value: Option<Decimal>,
}

/// A sum of decimals kept exact: one Decimal while the additions are exact, more parts
/// where one would not be (the parts' exact total is the sum).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactSum(Vec<Decimal>);

impl ExactSum {
    pub fn add(&mut self, value: Decimal) {
        if let Some(last) = self.0.last_mut() {
            if let Some(sum) = exact_sum(*last, value) {
                *last = sum;
                return;
            }
        }
        self.0.push(value);
    }

    /// The parts whose exact total is the sum (none for an empty sum).
    pub fn parts(&self) -> &[Decimal] {
        &self.0
    }
}

/// `a + b` when Decimal holds it exactly. Decimal rounds a sum it cannot hold at the larger
/// scale of the two (1000000 + 0.1234567890123456789012345678 loses digits), which shows as
/// a smaller scale; an overflow is `None` already.
fn exact_sum(a: Decimal, b: Decimal) -> Option<Decimal> {
    let sum = a.checked_add(b)?;
    (sum.scale() >= a.scale().max(b.scale())).then_some(sum)
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
    /// Adds one stored event.
    pub fn add(&mut self, event: StoredEvent) {
        let value = event.value;
        let rollup = self.0.entry(event.key).or_insert(DayRollup {
            events_count: 0,
            value_sum: ExactSum::default(),
            value_max: None,
            latest_at: event.timestamp,
            latest_event_id: event.id,
            latest_value: value,
        });
        rollup.events_count += 1;
        if let Some(v) = value {
            rollup.value_sum.add(v);
            rollup.value_max = Some(rollup.value_max.map_or(v, |max| max.max(v)));
        }
        if (event.timestamp, event.id) > (rollup.latest_at, rollup.latest_event_id) {
            rollup.latest_at = event.timestamp;
            rollup.latest_event_id = event.id;
            rollup.latest_value = value;
        }
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
        rollups.add(event(day.clone(), 1, 50, Some("2.5")));
        rollups.add(event(day.clone(), 2, 40, Some("-7")));
        rollups.add(event(other_day.clone(), 3, 60, Some("1")));
        let first = &rollups.0[&day];
        assert_eq!(
            (first.events_count, first.value_sum.parts(), first.value_max),
            (2, &[d("-4.5")][..], Some(d("2.5")))
        );
        assert_eq!((first.latest_at, first.latest_event_id, first.latest_value), (50, 1, Some(d("2.5"))));
        assert_eq!(rollups.0[&other_day].events_count, 1);
    }

    #[test]
    fn events_without_a_value_count_but_do_not_sum() {
        let mut rollups = DayRollups::default();
        let key = (1, 10, 100, 9000, Some("{\"region\": \"eu\"}".to_string()));
        rollups.add(event(key.clone(), 1, 10, None));
        rollups.add(event(key.clone(), 2, 20, None));
        let rollup = &rollups.0[&key];
        assert_eq!((rollup.events_count, rollup.value_sum.parts(), rollup.value_max), (2, &[][..], None));
        assert_eq!((rollup.latest_event_id, rollup.latest_value), (2, None));
    }

    #[test]
    fn the_latest_event_is_the_latest_timestamp_then_the_highest_id() {
        let mut rollups = DayRollups::default();
        let key = (1, 10, 100, 9000, None);
        rollups.add(event(key.clone(), 7, 30, Some("1")));
        rollups.add(event(key.clone(), 5, 30, Some("2")));
        rollups.add(event(key.clone(), 9, 20, Some("3")));
        let rollup = &rollups.0[&key];
        assert_eq!((rollup.latest_at, rollup.latest_event_id, rollup.latest_value), (30, 7, Some(d("1"))));
    }

    #[test]
    fn keys_come_out_in_order() {
        let mut rollups = DayRollups::default();
        for (sub, day) in [(12, 3), (10, 5), (12, 1), (10, 4)] {
            rollups.add(event((1, sub, 100, day, None), sub * 10 + day as i64, 0, Some("1")));
        }
        let keys: Vec<(i64, i32)> = rollups.0.keys().map(|k| (k.1, k.3)).collect();
        assert_eq!(keys, vec![(10, 4), (10, 5), (12, 1), (12, 3)]);
    }

    /// A decimal text as an integer of `scale` decimals, in i128: exact and independent of
    /// Decimal.
    fn scaled(value: &str, scale: usize) -> i128 {
        let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
        format!("{whole}{fraction:0<scale$}").parse().unwrap()
    }

    /// The exact total of decimal texts, at the largest scale among them.
    fn exact_total(values: &[&str]) -> (i128, usize) {
        let scale = values.iter().map(|v| v.split_once('.').map_or(0, |(_, f)| f.len())).max().unwrap();
        (values.iter().map(|v| scaled(v, scale)).sum(), scale)
    }

    fn total_of_parts(sum: &ExactSum, scale: usize) -> i128 {
        sum.parts().iter().map(|p| scaled(&p.to_string(), scale)).sum()
    }

    #[test]
    fn sums_that_decimal_would_round_stay_exact_in_parts() {
        let values = ["1000000", "0.1234567890123456789012345678"];
        let mut sum = ExactSum::default();
        values.iter().for_each(|v| sum.add(d(v)));
        assert_eq!(sum.parts().len(), 2);
        let (total, scale) = exact_total(&values);
        assert_eq!(total_of_parts(&sum, scale), total);
    }

    #[test]
    fn sums_beyond_the_decimal_range_stay_exact_in_parts() {
        let values = ["9999999999999999999999999999"; 8];
        let mut sum = ExactSum::default();
        values.iter().for_each(|v| sum.add(d(v)));
        assert!(sum.parts().len() > 1);
        let (total, scale) = exact_total(&values);
        assert_eq!(total, 79_999_999_999_999_999_999_999_999_992);
        assert_eq!(total_of_parts(&sum, scale), total);
    }

    #[test]
    fn exact_additions_keep_one_part() {
        let values = ["0.5", "12", "-3.25", "0.000001"];
        let mut sum = ExactSum::default();
        values.iter().for_each(|v| sum.add(d(v)));
        assert_eq!(sum.parts(), &[d("9.250001")]);
    }
}
