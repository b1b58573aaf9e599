//! The catalog rows ingestion checks events against (subscriptions with their customer's
//! time zone, billable metrics, the property keys that split usage), kept per backend.
//!
//! A single event would otherwise spend a quarter of its time in three catalog lookups.
//! The cache stays true through PostgreSQL's own invalidation messages, as the system
//! caches do: statement triggers on the catalog tables queue a relcache invalidation of
//! the changed table; once the change commits every backend delivers it to
//! the counter of `invalidation` (the changing backend at its next command, and again on
//! rollback, so uncommitted rows never outlive their transaction). Each ingestion call
//! first takes the messages already queued, so it sees every catalog change committed
//! before it started. Unknown keys are not cached: they are looked up again next time.

use crate::base::error::{BillingError, ErrorKind};
use crate::domain::metering::event::CatalogSnapshot;
use crate::pg::error_report::raise;
use crate::pg::invalidation;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;

/// Beyond this many cached subscriptions the cache starts over, so a backend that serves
/// every tenant does not grow without bound.
const MAX_CACHED_SUBSCRIPTIONS: usize = 50_000;

/// The cached catalog as one ingestion call uses it.
#[derive(Default)]
pub struct CachedCatalog {
    pub catalog: CatalogSnapshot,
    /// Plan versions whose dimension keys are in `catalog.dimension_keys` (a version with
    /// no splitting keys has no entry there).
    pub plan_versions: HashSet<i64>,
    /// The sequence of billing.events' ids, once an ingestion has needed it.
    id_sequence: Option<pg_sys::Oid>,
    /// The invalidation generation the rows were read under.
    generation: u64,
    /// Whether the schema's version was checked under that generation (false in a new backend).
    schema_checked: bool,
}

impl CachedCatalog {
    /// The sequence of billing.events' ids (looked up through pg_depend, then kept).
    pub fn id_sequence(&mut self) -> pg_sys::Oid {
        *self.id_sequence.get_or_insert_with(super::bulk_store::events_id_sequence)
    }
}

thread_local! {
    static CACHED: RefCell<CachedCatalog> = RefCell::new(CachedCatalog::default());
}

/// The cached catalog, true for everything committed before this call (empty when stale).
/// The caller loads what its batch still needs and hands it back with `keep`.
pub fn take() -> CachedCatalog {
    // SAFETY: reads the shared invalidation queue, as every transaction start does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let generation = invalidation::generation();
    let cached = CACHED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if cached.schema_checked
        && cached.generation == generation
        && cached.catalog.subscriptions.len() <= MAX_CACHED_SUBSCRIPTIONS
    {
        cached
    } else {
        check_schema_version();
        CachedCatalog { generation, schema_checked: true, ..CachedCatalog::default() }
    }
}

/// The library serves the schema of its own version: ingestion into a database still on an
/// earlier one (the new build installed, `ALTER EXTENSION pg_billing UPDATE` not run yet)
/// would read tables that are not there yet, so it stops with the fix instead. Checked when
/// the cached catalog is reloaded (an update invalidates it).
fn check_schema_version() {
    let library = env!("CARGO_PKG_VERSION");
    let schema = Spi::get_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_billing'")
        .ok()
        .flatten()
        .unwrap_or_default();
    if schema != library {
        raise(
            BillingError::new(
                ErrorKind::WrongState,
                format!("this database has the pg_billing {schema} schema, the server's library is {library}"),
            )
            .detail("ingestion needs the schema of the installed library")
            .hint(format!("run ALTER EXTENSION pg_billing UPDATE (to {library}) in this database")),
        );
    }
}

/// Keeps the catalog for the next call, unless an invalidation arrived while it was in
/// use (rows read since may predate the change).
pub fn keep(cached: CachedCatalog) {
    if invalidation::generation() == cached.generation {
        CACHED.with(|c| *c.borrow_mut() = cached);
    }
}

/// Statement trigger on the catalog tables: queues the invalidation that empties every
/// backend's cached catalog once the change commits.
#[pg_trigger]
fn _catalog_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // SAFETY: queues an invalidation message for a relation that exists (the trigger's own).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(trigger.relid()?) };
    Ok(None)
}
