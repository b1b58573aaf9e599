//! Read access to a JSON value, whatever holds it: the vocabulary event validation reads
//! payloads through, implemented by PostgreSQL's jsonb in place (`pg::jsonb`) and by serde
//! values in tests.

/// A JSON value as validation sees it: scalars with their text, containers by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    /// The number's decimal text.
    Number(String),
    Text(String),
    Array,
    Object,
}

/// Read access to a JSON value, whatever holds it (a Postgres jsonb in place, or a serde
/// value in tests).
pub trait JsonView: Copy {
    fn scalar(self) -> Scalar;
    /// The value under `key` when this is an object that has it.
    fn get(self, key: &str) -> Option<Self>;
    /// Members of an object or elements of an array.
    fn len(self) -> usize;
    fn is_empty(self) -> bool {
        self.len() == 0
    }
    /// An object's keys, in stored order.
    fn keys(self) -> Vec<String>;
    /// Equal as JSON values (the `=` of jsonb).
    fn same(self, other: Self) -> bool;
    /// The value as serde JSON. Only for values no deeper than the properties depth limit
    /// (serde_json stops at 128 levels): deeper ones are rejected before anything asks.
    fn to_value(self) -> serde_json::Value;
    /// The value as JSON text, at any depth.
    fn to_text(self) -> String;
    /// How many containers deep the value nests (0 for a scalar, 1 for a flat object or
    /// array), at any depth and without recursion; counting may stop once past `limit`.
    fn depth(self, limit: usize) -> usize;
    /// The size of the value as pg_billing stores it, in bytes.
    fn stored_size(self) -> usize;
}
