//! Metering: event validation (pure), set-based ingestion, and its SQL entry points.

pub mod bulk_store;
pub mod catalog_cache;
pub mod copy_paths;
pub mod event;
pub mod ingest;
pub mod invalidation;
pub mod rollup;
pub mod sql;
pub mod table_access;
