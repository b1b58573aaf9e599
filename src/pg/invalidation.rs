//! Which catalog state a backend's cached lookups were made under: a generation counter
//! that every relcache invalidation bumps (PostgreSQL delivers them at transaction start,
//! on taking a lock, and when asked), and what is cached per generation here (whether
//! Citus is installed, and whether it distributes a table). Callers compare generations to tell a stale value.

use pgrx::pg_sys;
use std::cell::Cell;

thread_local! {
    /// Bumped by every relcache invalidation; a value read under an older generation may be stale.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Whether Citus was installed, and the generation that was looked up under.
    static CITUS: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
    /// Whether a relation was distributed by Citus (relation, generation, answer).
    static DISTRIBUTED: Cell<Option<(pg_sys::Oid, u64, bool)>> = const { Cell::new(None) };
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

/// Whether Citus distributes `relid` (a distributed or reference table of a Citus
/// coordinator): its rows are in shards on the workers, not in the local heap, and statements
/// over it must be ones Citus can plan. Looked up in Citus's metadata once per invalidation
/// generation (distributing a table invalidates it). Must run inside a transaction.
pub fn distributed_by_citus(relid: pg_sys::Oid) -> bool {
    if !citus_installed() {
        return false;
    }
    match DISTRIBUTED.with(Cell::get) {
        Some((seen_relid, seen, distributed)) if seen_relid == relid && seen == generation() => distributed,
        _ => {
            let distributed = pgrx::Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1)",
                &[relid.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            DISTRIBUTED.with(|c| c.set(Some((relid, generation(), distributed))));
            distributed
        }
    }
}

/// Relcache callback: any invalidation may be a catalog change, so every cached value is
/// stale. Only bumps a counter, since it can run in the middle of an ingestion call.
unsafe extern "C-unwind" fn count_invalidation(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// Registers the invalidation callback; called once per backend when the library loads.
pub fn register() {
    // SAFETY: the callback only touches a thread-local counter and lives as long as the library.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(count_invalidation), pg_sys::Datum::from(0)) };
}
