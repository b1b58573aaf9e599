//! `billing.price`: a validated `{charge_model, properties}` with canonical JSON text.

use crate::base::error::BillingError;
use crate::domain::pricing;
use crate::pg::error_report::raise;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{InOutFuncs, JsonB, StringInfo};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;

/// Stored as the parsed model, so pricing never re-validates a stored price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, PostgresType)]
#[inoutfuncs]
pub struct Price {
    pub model: pricing::Price,
}

impl InOutFuncs for Price {
    fn input(input: &CStr) -> Self {
        let text = input.to_str().unwrap_or_else(|_| {
            raise(BillingError::malformed("invalid JSON for a price").detail("the text is not valid UTF-8"))
        });
        pricing::Price::from_json_text(text).map(|model| Price { model }).unwrap_or_else(|e| raise(e))
    }

    fn output(&self, buffer: &mut StringInfo) {
        buffer.push_str(&self.model.to_json().to_string());
    }
}

/// `jsonb → billing.price`, also used as the assignment cast.
#[pg_extern(immutable, strict, parallel_safe, name = "price")]
fn price_from_jsonb(value: JsonB) -> Result<Price, ErrorReport> {
    Ok(Price { model: pricing::Price::from_json(&value.0)? })
}

/// `billing.price → jsonb`, the canonical form.
#[pg_extern(immutable, strict, parallel_safe)]
fn price_to_jsonb(price: Price) -> JsonB {
    JsonB(price.model.to_json())
}

extension_sql!(
    r#"
CREATE CAST (jsonb AS billing.price) WITH FUNCTION billing.price(jsonb) AS ASSIGNMENT;
CREATE CAST (billing.price AS jsonb) WITH FUNCTION billing.price_to_jsonb(billing.price);
"#,
    name = "price_casts",
    requires = [price_from_jsonb, price_to_jsonb]
);
