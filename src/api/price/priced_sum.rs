//! `billing.priced_sum(value, price)`: prices the sum of a group's values, so any query
//! can price grouped usage. The running state lives in the aggregate's memory context
//! (an `internal` state), not in a serialised type re-encoded on every row.

use super::price_type::Price;
use crate::base::decimal::add;
use crate::base::error::BillingError;
use crate::domain::pricing::{self, minor_units, Usage};
use crate::pg::error_report::raise;
use crate::pg::numeric::{from_decimal, to_decimal};
use pgrx::prelude::*;
use pgrx::{AnyNumeric, Internal, PgMemoryContexts};
use rust_decimal::Decimal;

struct PricedSumState {
    units: Decimal,
    price: pricing::Price,
}

/// Transition: adds one value; every row of a group must carry the same price.
#[pg_extern(parallel_safe)]
fn _priced_sum_step(
    mut state: Internal,
    value: Option<AnyNumeric>,
    price: Option<Price>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let Some(value) = value else { return state };
    let Some(price) = price else {
        raise(BillingError::invalid("priced_sum needs a price on every row").hint("give each row a billing.price"))
    };
    let value = to_decimal(&value, "value").unwrap_or_else(|e| raise(e));
    // SAFETY: the state pointer was created below, in the aggregate context, as PricedSumState.
    if let Some(current) = unsafe { state.get_mut::<PricedSumState>() } {
        if current.price != price.model {
            raise(
                BillingError::invalid("priced_sum got different prices within one group")
                    .detail(format!("{} and {}", current.price.to_json(), price.model.to_json()))
                    .hint("group by the price too, or price each group with one billing.price"),
            );
        }
        current.units = add(current.units, value).unwrap_or_else(|e| raise(e));
        return state;
    }
    let fresh = PricedSumState { units: value, price: price.model };
    // SAFETY: fcinfo is the live call's; AggCheckCallContext tells whether we are an aggregate.
    let mut context = std::ptr::null_mut();
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        raise(BillingError::invalid("_priced_sum_step can only be called by billing.priced_sum"));
    }
    let pointer = PgMemoryContexts::For(context).leak_and_drop_on_delete(fresh);
    Internal::from(Some(pg_sys::Datum::from(pointer)))
}

/// Final: the amount of the summed units, or NULL for a group without values.
#[pg_extern(parallel_safe)]
fn _priced_sum_final(state: Internal) -> Option<AnyNumeric> {
    // SAFETY: set by _priced_sum_step as PricedSumState.
    let state = unsafe { state.get::<PricedSumState>() }?;
    let digits = minor_units("USD").unwrap_or_else(|e| raise(e));
    let amount = state.price.amount(Usage::Units(&state.units), digits).unwrap_or_else(|e| raise(e));
    Some(from_decimal(amount))
}

extension_sql!(
    r#"
CREATE AGGREGATE billing.priced_sum(value numeric, price billing.price) (
    SFUNC = billing._priced_sum_step,
    STYPE = internal,
    FINALFUNC = billing._priced_sum_final
);
REVOKE ALL ON FUNCTION billing._priced_sum_step(internal, numeric, billing.price) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing._priced_sum_final(internal) FROM PUBLIC;
"#,
    name = "priced_sum_aggregate",
    requires = [_priced_sum_step, _priced_sum_final]
);
