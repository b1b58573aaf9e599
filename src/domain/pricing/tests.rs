//! Amounts worked out by hand from the pricing rules, validation messages, and properties.

use super::{Price, Usage};
use crate::base::error::ErrorKind;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn price(json: &str) -> Price {
    Price::from_json_text(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn amount(p: &Price, units: &str) -> Decimal {
    p.amount(Usage::Units(&d(units)), 2).unwrap()
}

fn amount_of_events(p: &Price, events: &[&str]) -> Decimal {
    let values: Vec<Decimal> = events.iter().map(|e| d(e)).collect();
    p.amount(Usage::Events(&values), 2).unwrap()
}

fn error(json: &str) -> (ErrorKind, String) {
    let e = Price::from_json_text(json).expect_err(json);
    (e.kind, e.message)
}

const INTEGER_TIERS: &str = r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
    {"from_value":0,"to_value":10,"per_unit_amount":"10","flat_amount":"2"},
    {"from_value":11,"to_value":20,"per_unit_amount":"5","flat_amount":"3"},
    {"from_value":21,"to_value":null,"per_unit_amount":"5","flat_amount":"3"}]}}"#;

const ADJACENT_TIERS: &str = r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
    {"from_value":0,"to_value":0.1,"per_unit_amount":"10","flat_amount":"0"},
    {"from_value":0.1,"to_value":1,"per_unit_amount":"5","flat_amount":"1"},
    {"from_value":1,"to_value":null,"per_unit_amount":"2","flat_amount":"0"}]}}"#;

const VOLUME_TIERS: &str = r#"{"charge_model":"volume","properties":{"volume_ranges":[
    {"from_value":0,"to_value":100,"per_unit_amount":"2","flat_amount":"10"},
    {"from_value":101,"to_value":200,"per_unit_amount":"1","flat_amount":"0"},
    {"from_value":201,"to_value":null,"per_unit_amount":"0.5","flat_amount":"50"}]}}"#;

#[test]
fn standard_multiplies_units_by_amount() {
    let p = price(r#"{"charge_model":"standard","properties":{"amount":"0.002"}}"#);
    assert_eq!(amount(&p, "0"), d("0"));
    assert_eq!(amount(&p, "1000"), d("2"));
    assert_eq!(amount(&p, "1234.5"), d("2.469"));
    // Negative usage (a sum metric that went down) is clamped to a zero fee.
    assert_eq!(amount(&p, "-500"), d("0"));
}

#[test]
fn graduated_integer_style_tiers() {
    let p = price(INTEGER_TIERS);
    assert_eq!(amount(&p, "0"), d("2")); // first tier's flat fee even at 0 units
    assert_eq!(amount(&p, "1"), d("12"));
    assert_eq!(amount(&p, "10"), d("102")); // exactly on to_value stays in tier 1
    assert_eq!(amount(&p, "11"), d("110")); // 102 + 1 × 5 + 3
    assert_eq!(amount(&p, "10.5"), d("107.5")); // 102 + 0.5 × 5 + 3
    assert_eq!(amount(&p, "20"), d("155")); // 102 + 10 × 5 + 3
    assert_eq!(amount(&p, "21"), d("163")); // 155 + 1 × 5 + 3
    assert_eq!(amount(&p, "100"), d("558")); // 155 + 80 × 5 + 3
}

#[test]
fn graduated_adjacent_style_tiers() {
    let p = price(ADJACENT_TIERS);
    assert_eq!(amount(&p, "0"), d("0"));
    assert_eq!(amount(&p, "0.05"), d("0.5"));
    assert_eq!(amount(&p, "0.1"), d("1"));
    assert_eq!(amount(&p, "0.5"), d("4")); // 1 + 0.4 × 5 + 1
    assert_eq!(amount(&p, "1"), d("6.5")); // 1 + 0.9 × 5 + 1
    assert_eq!(amount(&p, "3"), d("10.5")); // 6.5 + 2 × 2
}

#[test]
fn graduated_starting_at_one() {
    let p = price(
        r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
        {"from_value":1,"to_value":10,"per_unit_amount":"1","flat_amount":"0"},
        {"from_value":11,"to_value":null,"per_unit_amount":"2","flat_amount":"0"}]}}"#,
    );
    assert_eq!(amount(&p, "10"), d("10"));
    assert_eq!(amount(&p, "15"), d("20"));
}

#[test]
fn graduated_details_list_each_reached_tier() {
    let p = price(INTEGER_TIERS);
    let details = p.details(Usage::Units(&d("11")), 2).unwrap();
    let tiers = details["graduated_ranges"].as_array().unwrap();
    assert_eq!(tiers.len(), 2);
    assert_eq!(tiers[0]["units"].to_string(), "10");
    assert_eq!(tiers[0]["per_unit_total_amount"].to_string(), "100");
    assert_eq!(tiers[0]["total_with_flat_amount"].to_string(), "102");
    assert_eq!(tiers[1]["units"].to_string(), "1");
    assert_eq!(tiers[1]["total_with_flat_amount"].to_string(), "8");
    assert_eq!(details["amount"].to_string(), "110");
}

#[test]
fn volume_prices_all_units_at_the_reached_tier() {
    let p = price(VOLUME_TIERS);
    assert_eq!(amount(&p, "0"), d("10")); // first tier's flat fee
    assert_eq!(amount(&p, "1"), d("12"));
    assert_eq!(amount(&p, "100"), d("210"));
    assert_eq!(amount(&p, "100.5"), d("100.5")); // between 100 and 101 → 101–200
    assert_eq!(amount(&p, "200"), d("200"));
    assert_eq!(amount(&p, "201"), d("150.5"));
    assert_eq!(amount(&p, "300"), d("200"));
}

#[test]
fn package_bills_started_packages_in_full() {
    let p = price(r#"{"charge_model":"package","properties":{"amount":"100","package_size":10,"free_units":0}}"#);
    assert_eq!(amount(&p, "0"), d("0"));
    assert_eq!(amount(&p, "1"), d("100"));
    assert_eq!(amount(&p, "10"), d("100"));
    assert_eq!(amount(&p, "10.01"), d("200"));
    assert_eq!(amount(&p, "121"), d("1300"));
    let free = price(r#"{"charge_model":"package","properties":{"amount":"5","package_size":1000,"free_units":100}}"#);
    assert_eq!(amount(&free, "100"), d("0"));
    assert_eq!(amount(&free, "101"), d("5"));
    assert_eq!(amount(&free, "1100"), d("5"));
    assert_eq!(amount(&free, "1101"), d("10"));
}

#[test]
fn percentage_with_fixed_amount_per_event() {
    let p = price(r#"{"charge_model":"percentage","properties":{"rate":"1.3","fixed_amount":"2"}}"#);
    assert_eq!(amount_of_events(&p, &["100", "200", "300", "200"]), d("18.4"));
    // A total priced without its events counts as one event.
    assert_eq!(amount(&p, "800"), d("12.4"));
    // No fixed fee when there are no units.
    assert_eq!(amount_of_events(&p, &["0", "0"]), d("0"));
}

#[test]
fn percentage_free_units_per_events() {
    // Running totals of the first 2 events: 100, 150 → 150 free units and 2 free events.
    let p = price(
        r#"{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_events":2}}"#,
    );
    assert_eq!(amount_of_events(&p, &["100", "50", "30"]), d("1.6")); // 30 × 2 % + 1 × 1
    assert_eq!(amount_of_events(&p, &["100", "50"]), d("0"));
}

#[test]
fn percentage_free_units_per_total_aggregation() {
    // Running totals 100, 150 (first above 120): 120 free units, 1 free event.
    let p = price(
        r#"{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_total_aggregation":"120"}}"#,
    );
    assert_eq!(amount_of_events(&p, &["100", "50", "30"]), d("3.2")); // 60 × 2 % + 2 × 1
    let generous = price(
        r#"{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_total_aggregation":"1000"}}"#,
    );
    assert_eq!(amount_of_events(&generous, &["100", "50"]), d("0"));
}

#[test]
fn percentage_with_both_allowances_without_bounds() {
    let p = price(
        r#"{"charge_model":"percentage","properties":{"rate":"2.99","free_units_per_events":3,"free_units_per_total_aggregation":"10000"}}"#,
    );
    assert_eq!(amount_of_events(&p, &["10", "80", "10000"]), d("2.691")); // (10090 − 10000) × 2.99 %
}

#[test]
fn percentage_per_transaction_bounds() {
    let p = price(
        r#"{"charge_model":"percentage","properties":{"rate":"2.99","free_units_per_events":3,
        "free_units_per_total_aggregation":"10000","per_transaction_min_amount":"1.75","per_transaction_max_amount":"12"}}"#,
    );
    assert_eq!(amount_of_events(&p, &["10", "80", "10000"]), d("2.691"));
    let clamped = price(
        r#"{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":"0.1",
        "per_transaction_min_amount":"0.5","per_transaction_max_amount":"3"}}"#,
    );
    // 0.2 → 0.5 (min), 1.1 stays, 10.1 → 3 (max)
    assert_eq!(amount_of_events(&clamped, &["10", "100", "1000"]), d("4.6"));
    let details = clamped.details(Usage::Events(&[d("10"), d("100"), d("1000")]), 2).unwrap();
    // plain amount 11.1 + 0.3 = 11.4; bounded 4.6
    assert_eq!(details["min_max_adjustment_total_amount"].to_string(), "-6.8");
}

#[test]
fn percentage_per_transaction_free_events_only() {
    let p = price(
        r#"{"charge_model":"percentage","properties":{"rate":"10","free_units_per_events":2,"per_transaction_min_amount":"1"}}"#,
    );
    // The first two events are free; the third costs max(50 × 10 %, 1) = 5.
    assert_eq!(amount_of_events(&p, &["500", "500", "50"]), d("5"));
}

#[test]
fn graduated_percentage_tiers() {
    let p = price(
        r#"{"charge_model":"graduated_percentage","properties":{"graduated_percentage_ranges":[
        {"from_value":0,"to_value":100,"rate":"10","flat_amount":"1"},
        {"from_value":101,"to_value":null,"rate":"5","flat_amount":"2"}]}}"#,
    );
    assert_eq!(amount(&p, "0"), d("1"));
    assert_eq!(amount(&p, "50"), d("6"));
    assert_eq!(amount(&p, "100"), d("11"));
    assert_eq!(amount(&p, "150"), d("15.5")); // 11 + 50 × 5 % + 2
}

#[test]
fn dynamic_sums_event_amounts_in_minor_units() {
    let p = price(r#"{"charge_model":"dynamic","properties":{}}"#);
    let events = [d("150"), d("250"), d("1")];
    assert_eq!(p.amount(Usage::Events(&events), 2).unwrap(), d("4.01"));
    assert_eq!(p.amount(Usage::Events(&events), 0).unwrap(), d("401"));
    assert_eq!(p.amount(Usage::Events(&events), 3).unwrap(), d("0.401"));
}

#[test]
fn canonical_json_normalises_decimals_and_key_order() {
    let p = price(r#"{"properties":{"amount":"5.00"},"charge_model":"standard"}"#);
    assert_eq!(p.to_json().to_string(), r#"{"charge_model":"standard","properties":{"amount":"5"}}"#);
    let round_trip = Price::from_json(&p.to_json()).unwrap();
    assert_eq!(round_trip, p);
    let tiers = price(VOLUME_TIERS);
    assert_eq!(Price::from_json(&tiers.to_json()).unwrap(), tiers);
}

#[test]
fn validation_names_the_field_and_value() {
    let cases: &[(&str, ErrorKind, &str)] = &[
        ("{", ErrorKind::MalformedInput, "invalid JSON for a price"),
        (r#"{"charge_model":"flat"}"#, ErrorKind::InvalidParameter, "unknown charge_model \"flat\""),
        (r#"{"properties":{}}"#, ErrorKind::InvalidParameter, "charge_model is required"),
        (r#"{"charge_model":"standard","properties":{}}"#, ErrorKind::InvalidParameter, "amount is required"),
        (
            r#"{"charge_model":"standard","properties":{"amount":"abc"}}"#,
            ErrorKind::InvalidParameter,
            "amount must be a decimal number",
        ),
        (
            r#"{"charge_model":"standard","properties":{"amount":"-1"}}"#,
            ErrorKind::InvalidParameter,
            "amount must not be negative",
        ),
        (
            r#"{"charge_model":"standard","properties":{"amount":"NaN"}}"#,
            ErrorKind::InvalidParameter,
            "amount must be a decimal number",
        ),
        (
            r#"{"charge_model":"standard","properties":{"amount":"1","rate":"2"}}"#,
            ErrorKind::InvalidParameter,
            "unknown property \"rate\" for charge model standard",
        ),
        (
            r#"{"charge_model":"standard","properties":{"amount":"123456789012345678901234567890"}}"#,
            ErrorKind::NumericOutOfRange,
            "amount is out of the supported range",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"},
              {"from_value":12,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[1].from_value must be 10 or 11",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":2,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[0].from_value must be 0 or 1",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":0,"per_unit_amount":"1","flat_amount":"0"},
              {"from_value":1,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[0].to_value must be greater than from_value 0",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":null,"per_unit_amount":"1","flat_amount":"0"},
              {"from_value":1,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[0].to_value is required",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[0].to_value must be null",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges must not be empty",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":null,"per_unit_amount":"1"}]}}"#,
            ErrorKind::InvalidParameter,
            "graduated_ranges[0].flat_amount is required",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[
              {"from_value":0,"to_value":null,"per_unit_amount":"1","flat_amount":"0","rate":"1"}]}}"#,
            ErrorKind::InvalidParameter,
            "unknown property \"graduated_ranges[0].rate\" for graduated_ranges",
        ),
        (
            r#"{"charge_model":"volume","properties":{"volume_ranges":[
              {"from_value":0,"to_value":100,"per_unit_amount":"1","flat_amount":"0"},
              {"from_value":100,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}"#,
            ErrorKind::InvalidParameter,
            "volume_ranges[1].from_value must be 101 or 102",
        ),
        (
            r#"{"charge_model":"package","properties":{"amount":"1","package_size":0}}"#,
            ErrorKind::InvalidParameter,
            "package_size must be greater than 0",
        ),
        (
            r#"{"charge_model":"package","properties":{"amount":"1"}}"#,
            ErrorKind::InvalidParameter,
            "package_size is required",
        ),
        (
            r#"{"charge_model":"percentage","properties":{"rate":"1","per_transaction_min_amount":"5","per_transaction_max_amount":"2"}}"#,
            ErrorKind::InvalidParameter,
            "per_transaction_min_amount must not exceed per_transaction_max_amount",
        ),
        (
            r#"{"charge_model":"percentage","properties":{"rate":"1","free_units_per_events":1.5}}"#,
            ErrorKind::InvalidParameter,
            "free_units_per_events must be a whole number",
        ),
        (
            r#"{"charge_model":"percentage","properties":{"fixed_amount":"1"}}"#,
            ErrorKind::InvalidParameter,
            "rate is required",
        ),
        (
            r#"{"charge_model":"dynamic","properties":{"amount":"1"}}"#,
            ErrorKind::InvalidParameter,
            "unknown property \"amount\" for charge model dynamic",
        ),
        (
            r#"{"charge_model":"standard","properties":[]}"#,
            ErrorKind::InvalidParameter,
            "properties must be a JSON object",
        ),
        (
            r#"{"charge_model":"standard","properties":{"amount":"1"},"extra":1}"#,
            ErrorKind::InvalidParameter,
            "unknown property \"extra\" for a price",
        ),
    ];
    for (json, kind, message) in cases {
        assert_eq!(error(json), (*kind, message.to_string()), "{json}");
    }
}

#[test]
fn money_values_must_be_decimal_strings() {
    // Lago's validators take amounts and rates as strings only: a JSON number (a float in
    // most clients' JSON libraries) is refused, naming the field and showing the value.
    let cases: &[(&str, &str)] = &[
        (r#"{"charge_model":"standard","properties":{"amount":1.5}}"#, "amount"),
        (r#"{"charge_model":"package","properties":{"amount":100,"package_size":10}}"#, "amount"),
        (r#"{"charge_model":"percentage","properties":{"rate":1.3}}"#, "rate"),
        (r#"{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":2}}"#, "fixed_amount"),
        (
            r#"{"charge_model":"percentage","properties":{"rate":"1","free_units_per_total_aggregation":100}}"#,
            "free_units_per_total_aggregation",
        ),
        (
            r#"{"charge_model":"percentage","properties":{"rate":"1","per_transaction_min_amount":0.5}}"#,
            "per_transaction_min_amount",
        ),
        (
            r#"{"charge_model":"percentage","properties":{"rate":"1","per_transaction_max_amount":9}}"#,
            "per_transaction_max_amount",
        ),
        (
            r#"{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":null,"per_unit_amount":0.002,"flat_amount":"0"}]}}"#,
            "graduated_ranges[0].per_unit_amount",
        ),
        (
            r#"{"charge_model":"volume","properties":{"volume_ranges":[{"from_value":0,"to_value":null,"per_unit_amount":"1","flat_amount":0}]}}"#,
            "volume_ranges[0].flat_amount",
        ),
        (
            r#"{"charge_model":"graduated_percentage","properties":{"graduated_percentage_ranges":[{"from_value":0,"to_value":null,"rate":2,"flat_amount":"0"}]}}"#,
            "graduated_percentage_ranges[0].rate",
        ),
    ];
    for (json, field) in cases {
        let e = Price::from_json_text(json).expect_err(json);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidParameter, format!("{field} must be a decimal string").as_str())
        );
        assert!(e.detail.as_deref().is_some_and(|d| d.starts_with("got the JSON number ")), "{json}: {:?}", e.detail);
        assert!(e.hint.as_deref().is_some_and(|h| h.contains("as strings")), "{json}: {:?}", e.hint);
    }
    // The number's own text is shown, so a float is visible as such.
    let e = Price::from_json_text(r#"{"charge_model":"standard","properties":{"amount":0.30000000000000004}}"#)
        .unwrap_err();
    assert_eq!(e.detail.as_deref(), Some("got the JSON number 0.30000000000000004"));
    // Bounds, sizes and counts stay JSON numbers (numeric strings are accepted too).
    let package =
        price(r#"{"charge_model":"package","properties":{"amount":"100","package_size":"10","free_units":5}}"#);
    assert_eq!(amount(&package, "121"), d("1200"));
    let percentage = price(r#"{"charge_model":"percentage","properties":{"rate":"2","free_units_per_events":1}}"#);
    assert_eq!(amount_of_events(&percentage, &["100", "200"]), d("4"));
}

#[test]
fn optional_properties_may_be_null_or_absent() {
    let with_nulls = price(
        r#"{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":null,"free_units_per_events":null}}"#,
    );
    let without = price(r#"{"charge_model":"percentage","properties":{"rate":"1"}}"#);
    assert_eq!(with_nulls, without);
    assert_eq!(price(r#"{"charge_model":"dynamic"}"#), Price::Dynamic);
}

fn decimal_strategy(max: u64, scale: u32) -> impl Strategy<Value = Decimal> {
    (0..=max).prop_map(move |m| Decimal::new(m as i64, scale))
}

fn single_tier(model: &str, key: &str, rate: Decimal, flat: Decimal) -> Price {
    price(&format!(
        r#"{{"charge_model":"{model}","properties":{{"{key}":[{{"from_value":0,"to_value":null,"per_unit_amount":"{rate}","flat_amount":"{flat}"}}]}}}}"#
    ))
}

proptest! {
    #[test]
    fn graduated_never_decreases_as_units_grow(a in decimal_strategy(5_000, 1), b in decimal_strategy(5_000, 1)) {
        for p in [price(INTEGER_TIERS), price(ADJACENT_TIERS)] {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(p.amount(Usage::Units(&low), 2).unwrap() <= p.amount(Usage::Units(&high), 2).unwrap());
        }
    }

    #[test]
    fn single_open_tier_agrees_across_graduated_volume_and_standard(
        units in decimal_strategy(1_000_000, 3), rate in decimal_strategy(100_000, 4)
    ) {
        let standard = price(&format!(r#"{{"charge_model":"standard","properties":{{"amount":"{rate}"}}}}"#));
        let graduated = single_tier("graduated", "graduated_ranges", rate, Decimal::ZERO);
        let volume = single_tier("volume", "volume_ranges", rate, Decimal::ZERO);
        let expected = standard.amount(Usage::Units(&units), 2).unwrap();
        prop_assert_eq!(graduated.amount(Usage::Units(&units), 2).unwrap(), expected);
        prop_assert_eq!(volume.amount(Usage::Units(&units), 2).unwrap(), expected);
    }

    #[test]
    fn package_steps_exactly_at_package_boundaries(size in 1u64..1_000, packages in 0u64..1_000, free in 0u64..100) {
        let p = price(&format!(
            r#"{{"charge_model":"package","properties":{{"amount":"3","package_size":{size},"free_units":{free}}}}}"#
        ));
        let boundary = Decimal::from(free + size * packages);
        let just_after = boundary + Decimal::new(1, 3);
        prop_assert_eq!(p.amount(Usage::Units(&boundary), 2).unwrap(), Decimal::from(3 * packages));
        prop_assert_eq!(p.amount(Usage::Units(&just_after), 2).unwrap(), Decimal::from(3 * (packages + 1)));
    }

    #[test]
    fn graduated_tier_units_add_up_to_the_total(units in decimal_strategy(10_000, 2)) {
        let p = price(INTEGER_TIERS);
        let details = p.details(Usage::Units(&units), 2).unwrap();
        let tier_units: Decimal = details["graduated_ranges"].as_array().unwrap().iter()
            .map(|t| d(&t["units"].to_string())).sum();
        prop_assert_eq!(tier_units, units);
    }

    #[test]
    fn volume_never_exceeds_graduated_on_decreasing_prices(units in decimal_strategy(1_000, 0)) {
        let tiers = r#"[{"from_value":0,"to_value":100,"per_unit_amount":"2","flat_amount":"0"},
                        {"from_value":101,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]"#;
        let graduated = price(&format!(r#"{{"charge_model":"graduated","properties":{{"graduated_ranges":{tiers}}}}}"#));
        let volume = price(&format!(r#"{{"charge_model":"volume","properties":{{"volume_ranges":{tiers}}}}}"#));
        prop_assert!(volume.amount(Usage::Units(&units), 2).unwrap() <= graduated.amount(Usage::Units(&units), 2).unwrap());
    }

    #[test]
    fn percentage_of_a_total_equals_per_event_without_allowances(values in proptest::collection::vec(decimal_strategy(100_000, 2), 1..20)) {
        let p = price(r#"{"charge_model":"percentage","properties":{"rate":"2.5"}}"#);
        let total: Decimal = values.iter().copied().sum();
        prop_assert_eq!(p.amount(Usage::Events(&values), 2).unwrap(), p.amount(Usage::Units(&total), 2).unwrap());
    }
}
