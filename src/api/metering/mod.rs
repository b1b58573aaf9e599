//! Metering in PostgreSQL: set-based ingestion, the direct batch path, the COPY intake and
//! their SQL entry points.

pub mod bulk_store;
pub mod catalog_cache;
pub mod copy_paths;
pub mod ingest;
pub mod sql;
