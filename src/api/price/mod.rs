//! The SQL surface of the pricing engine: the `billing.price` type, the pure pricing
//! functions and the `billing.priced_sum` aggregate.

pub mod functions;
pub mod price_type;
pub mod priced_sum;
