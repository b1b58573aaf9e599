//! ISO 4217 currencies and the one rounding rule for money: half-up to minor units.

use crate::base::error::{BillingError, Result};
use rust_decimal::{Decimal, RoundingStrategy};

/// Active ISO 4217 currencies with their number of minor-unit digits. Codes without
/// minor units (precious metals, testing codes) cannot carry an invoice and are left out.
const MINOR_UNITS: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SLL", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
    ("ZWL", 2),
];

/// Digits after the decimal point of a currency's minor unit (2 for USD, 0 for JPY).
/// Codes are matched case-sensitively: ISO 4217 codes are upper case.
pub fn minor_units(code: &str) -> Result<u32> {
    MINOR_UNITS.binary_search_by(|(known, _)| known.cmp(&code)).map(|i| MINOR_UNITS[i].1).map_err(|_| {
        BillingError::invalid(format!("unknown currency \"{code}\""))
            .detail("currencies are ISO 4217 codes with minor units")
            .hint("use an upper-case ISO 4217 code such as USD, EUR or JPY")
    })
}

/// Rounds half-up (away from zero on a tie) to the currency's minor units and shows
/// exactly that many decimals: 1.005 USD → 1.01, 1.5 JPY → 2.
pub fn round_money(amount: Decimal, code: &str) -> Result<Decimal> {
    let digits = minor_units(code)?;
    let mut rounded = amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(digits);
    Ok(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(MINOR_UNITS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        assert_eq!(minor_units("USD").unwrap(), 2);
        assert_eq!(minor_units("EUR").unwrap(), 2);
        assert_eq!(minor_units("JPY").unwrap(), 0);
        assert_eq!(minor_units("KWD").unwrap(), 3);
        assert_eq!(minor_units("BHD").unwrap(), 3);
        assert_eq!(minor_units("CLF").unwrap(), 4);
        assert!(minor_units("usd").is_err());
        assert!(minor_units("XAU").is_err());
    }

    #[test]
    fn rounds_half_up_to_minor_units() {
        assert_eq!(round_money(d("1.005"), "USD").unwrap().to_string(), "1.01");
        assert_eq!(round_money(d("1.004999"), "USD").unwrap().to_string(), "1.00");
        assert_eq!(round_money(d("-1.005"), "USD").unwrap().to_string(), "-1.01");
        assert_eq!(round_money(d("2.5"), "JPY").unwrap().to_string(), "3");
        assert_eq!(round_money(d("1.2345"), "KWD").unwrap().to_string(), "1.235");
        assert_eq!(round_money(d("54.838709677"), "EUR").unwrap().to_string(), "54.84");
        assert_eq!(round_money(d("7"), "USD").unwrap().to_string(), "7.00");
    }
}
