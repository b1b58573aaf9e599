//! The numeric ↔ Decimal boundary: values cross exactly, with their scale, both ways.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::numeric::{from_decimal, to_decimal};
    use pgrx::prelude::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[pg_test]
    fn decimals_become_the_same_numeric_whole_or_not() {
        for text in [
            "0",
            "-5",
            "5000",
            "5000.0",
            "0.002",
            "-12.3400",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "9999999999999999999999999999",
            "0.0000000000000000000000000001",
        ] {
            let decimal = Decimal::from_str(text).unwrap();
            let numeric = from_decimal(decimal);
            assert_eq!(numeric.to_string(), text, "printed scale of {text}");
            assert_eq!(to_decimal(&numeric, "value").unwrap(), decimal, "round trip of {text}");
        }
    }
}
