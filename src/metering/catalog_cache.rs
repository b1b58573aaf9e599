//! The catalog rows ingestion checks events against (subscriptions with their customer's
//! time zone, billable metrics, the property keys that split usage), kept per backend.
//!
//! A single event would otherwise spend a quarter of its time in three catalog lookups.
//! The cache stays true through PostgreSQL's own invalidation messages, as the system
//! caches do: statement triggers on the catalog tables queue a relcache invalidation of
//! the changed table; once the change commits every backend delivers it to
//! `forget_cached_catalog` (the changing backend at its next command, and again on
//! rollback, so uncommitted rows never outlive their transaction). Each ingestion call
//! first takes the messages already queued, so it sees every catalog change committed
//! before it started. Unknown keys are not cached: they are looked up again next time.

use super::event::CatalogSnapshot;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
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
}

impl CachedCatalog {
    /// The sequence of billing.events' ids (looked up through pg_depend, then kept).
    pub fn id_sequence(&mut self) -> pg_sys::Oid {
        *self.id_sequence.get_or_insert_with(super::bulk_store::events_id_sequence)
    }
}

thread_local! {
    static CACHED: RefCell<CachedCatalog> = RefCell::new(CachedCatalog::default());
    /// Bumped by every relcache invalidation; a cache filled under an older generation is stale.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Whether Citus was installed, and the generation that was looked up under.
    static CITUS: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
}

/// The invalidation generation: a value looked up in the system catalogs under an older
/// one may be stale.
pub fn generation() -> u64 {
    GENERATION.with(Cell::get)
}

/// Whether Citus is installed in this database: looked up in pg_extension once per
/// invalidation generation rather than for every write (distributing a table sends a
/// relcache invalidation, which starts a new generation).
pub fn citus_installed() -> bool {
    match CITUS.with(Cell::get) {
        Some((seen, installed)) if seen == generation() => installed,
        _ => {
            // SAFETY: a catalog lookup inside a transaction.
            let installed = unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) } != pg_sys::InvalidOid;
            CITUS.with(|c| c.set(Some((generation(), installed))));
            installed
        }
    }
}

/// Relcache callback: any invalidation may be a catalog change, so the cache is dropped.
/// Only bumps a counter, since it can run in the middle of an ingestion call.
unsafe extern "C-unwind" fn forget_cached_catalog(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// Registers the invalidation callback; called once per backend when the library loads.
pub fn register_invalidation() {
    // SAFETY: the callback only touches a thread-local counter and lives as long as the library.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_cached_catalog), pg_sys::Datum::from(0)) };
}

/// The cached catalog, true for everything committed before this call (empty when stale).
/// The caller loads what its batch still needs and hands it back with `keep`.
pub fn take() -> CachedCatalog {
    // SAFETY: reads the shared invalidation queue, as every transaction start does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let generation = GENERATION.with(Cell::get);
    let cached = CACHED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if cached.generation == generation && cached.catalog.subscriptions.len() <= MAX_CACHED_SUBSCRIPTIONS {
        cached
    } else {
        CachedCatalog { generation, ..CachedCatalog::default() }
    }
}

/// Keeps the catalog for the next call, unless an invalidation arrived while it was in
/// use (rows read since may predate the change).
pub fn keep(cached: CachedCatalog) {
    if GENERATION.with(Cell::get) == cached.generation {
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
