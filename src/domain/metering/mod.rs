//! Metering's rules: validating one event against the catalog, and folding events into
//! day rollups.

pub mod event;
pub mod rollup;
