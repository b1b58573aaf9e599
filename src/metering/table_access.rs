//! Writing pg_billing's own tables below the statement level: a table opened with its
//! indexes, a probe of its unique key through a dirty snapshot, speculative insertion,
//! the protocol `INSERT ... ON CONFLICT` uses to insert a row whose key a concurrent
//! transaction may be inserting at the same moment, and an update of a row as it was read.
//!
//! A caller takes this path only where it does exactly what its SQL statement would, which
//! `Target::open` checks: read committed isolation (under repeatable read a key committed
//! after the snapshot must fail the transaction, as ON CONFLICT makes it); a heap table
//! with the columns this version created and no triggers, rules, row security or CHECK
//! constraints; a caller holding the privileges the statement needs; a table not
//! distributed by Citus. Anywhere else the caller runs its statement.

use super::catalog_cache;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

/// A table opened for writing, with its indexes; closed (keeping the lock) when dropped.
pub struct Target {
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result_relation: *mut pg_sys::ResultRelInfo,
    /// The table's one unique index: its idempotency or rollup key.
    unique_index: pg_sys::Relation,
    /// A copy of the table's row type: slots made from it do not pin the relcache entry's
    /// descriptor, which would cost a resource-owner entry per row.
    row_type: pg_sys::TupleDesc,
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: everything was opened by `Target::open` and is closed once; the table's
        // lock is kept to the end of the transaction, as the executor keeps it.
        unsafe {
            if !self.result_relation.is_null() {
                pg_sys::ExecCloseIndices(self.result_relation);
            }
            if !self.estate.is_null() {
                pg_sys::FreeExecutorState(self.estate);
            }
            pg_sys::FreeTupleDesc(self.row_type);
            pg_sys::table_close(self.relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// What a table must be for a caller to write it through `Target`.
pub struct Shape {
    /// Its name in the billing schema.
    pub table: &'static CStr,
    /// Its columns, by name, in order.
    pub columns: &'static [&'static str],
    /// How many columns its unique index has.
    pub key_columns: i16,
    /// The privileges the caller's statement needs on it.
    pub privileges: &'static [u32],
}

/// The oid of a table in the billing schema (`InvalidOid` when there is none), looked up
/// once per invalidation generation (dropping or creating a table starts a new one).
pub(super) unsafe fn billing_table(name: &'static CStr) -> pg_sys::Oid {
    thread_local! {
        static RELIDS: RefCell<(u64, Vec<(&'static CStr, pg_sys::Oid)>)> = const { RefCell::new((0, Vec::new())) };
    }
    let generation = catalog_cache::generation();
    RELIDS.with_borrow_mut(|(seen, relids)| {
        if *seen != generation {
            *seen = generation;
            relids.clear();
        }
        if let Some(&(_, relid)) = relids.iter().find(|(table, _)| *table == name) {
            return relid;
        }
        let namespace = pg_sys::get_namespace_oid(c"billing".as_ptr(), false);
        let relid = pg_sys::get_relname_relid(name.as_ptr(), namespace);
        relids.push((name, relid));
        relid
    })
}

impl Target {
    /// Opens a table of the billing schema, or `None` when the path does not apply (see the
    /// module comment).
    pub(super) unsafe fn open(shape: &Shape) -> Option<Target> {
        if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
            return None;
        }
        if catalog_cache::citus_installed() {
            return None;
        }
        let relid = billing_table(shape.table);
        let permitted = |privilege: &u32| {
            pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), *privilege as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
        };
        if relid == pg_sys::InvalidOid || !shape.privileges.iter().all(permitted) {
            return None;
        }
        let relation = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let mut target = Target {
            relation,
            estate: std::ptr::null_mut(),
            result_relation: std::ptr::null_mut(),
            unique_index: std::ptr::null_mut(),
            row_type: pg_sys::CreateTupleDescCopy((*relation).rd_att),
        };
        let form = &*(*relation).rd_rel;
        let desc = (*relation).rd_att;
        let plain = form.relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && form.relam == pg_sys::HEAP_TABLE_AM_OID
            && !form.relrowsecurity
            && (*relation).trigdesc.is_null()
            && (*relation).rd_rules.is_null()
            && ((*desc).constr.is_null() || (*(*desc).constr).num_check == 0)
            && same_columns(desc, shape.columns);
        if !plain {
            return None;
        }
        target.estate = pg_sys::CreateExecutorState();
        target.result_relation =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
        // Range table index 0: the table is in no statement's range table, which also tells
        // an update's index insertion that no indexed column changed.
        pg_sys::InitResultRelInfo(target.result_relation, relation, 0, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(target.result_relation, false);
        let indexes = std::slice::from_raw_parts(
            (*target.result_relation).ri_IndexRelationDescs,
            (*target.result_relation).ri_NumIndices as usize,
        );
        let unique: Vec<pg_sys::Relation> = indexes.iter().copied().filter(|&i| (*(*i).rd_index).indisunique).collect();
        match unique.as_slice() {
            [index] if (*(**index).rd_index).indnkeyatts == shape.key_columns => target.unique_index = *index,
            _ => return None,
        }
        Some(target)
    }

    /// A scan of the unique key that sees committed rows and rows other transactions are
    /// still writing (a dirty snapshot), as the unique index's own check does.
    pub(super) unsafe fn key_scan(&self) -> KeyScan {
        // In this call's memory, which also frees it if a probe raises.
        let dirty = pg_sys::palloc0(std::mem::size_of::<pg_sys::SnapshotData>()).cast::<pg_sys::SnapshotData>();
        (*dirty).snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let key_columns = (*(*self.unique_index).rd_index).indnkeyatts as i32;
        KeyScan {
            scan: pg_sys::index_beginscan(self.relation, self.unique_index, dirty, key_columns, 0),
            dirty,
            found: pg_sys::MakeSingleTupleTableSlot(self.row_type, &pg_sys::TTSOpsBufferHeapTuple),
            relation: self.relation,
        }
    }

    /// A slot of the table's row type holding `values` (`None` is NULL); dropped by
    /// whoever writes it.
    pub(super) unsafe fn row(&self, values: &[Option<pg_sys::Datum>]) -> *mut pg_sys::TupleTableSlot {
        let slot = pg_sys::MakeSingleTupleTableSlot(self.row_type, &pg_sys::TTSOpsHeapTuple);
        for (column, value) in values.iter().enumerate() {
            *(*slot).tts_values.add(column) = value.unwrap_or(pg_sys::Datum::from(0));
            *(*slot).tts_isnull.add(column) = value.is_none();
        }
        pg_sys::ExecStoreVirtualTuple(slot);
        slot
    }

    /// Inserts the row of `values` unless the unique index holds its key (committed, written
    /// earlier in this transaction, or by a concurrent transaction, even one that got in
    /// after the caller's probe): then the row is withdrawn and the result is `false`, for
    /// the caller to probe (the probe waits for a concurrent writer). The insertion and its
    /// index entries are made as `INSERT ... ON CONFLICT` makes them: a row marked
    /// speculative until its unique entry is in.
    pub(super) unsafe fn insert_unless_key_appeared(&self, values: &[Option<pg_sys::Datum>]) -> bool {
        let slot = self.row(values);
        let routine = &*(*self.relation).rd_tableam;
        let command = pg_sys::GetCurrentCommandId(true);
        let transaction = pg_sys::GetCurrentTransactionId();
        let token = pg_sys::SpeculativeInsertionLockAcquire(transaction);
        routine.tuple_insert_speculative.expect("heap")(self.relation, slot, command, 0, std::ptr::null_mut(), token);
        let arbiter = pg_sys::lappend_oid(std::ptr::null_mut(), (*self.unique_index).rd_id);
        let mut conflict = false;
        pg_sys::ExecInsertIndexTuples(self.result_relation, slot, self.estate, false, true, &mut conflict, arbiter);
        routine.tuple_complete_speculative.expect("heap")(self.relation, slot, token, !conflict);
        pg_sys::SpeculativeInsertionLockRelease(transaction);
        self.reset_per_row_memory();
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        !conflict
    }

    /// Replaces the row at `tid` with the row of `values` unless a concurrent transaction updated
    /// or deleted it since the caller read it (`false`: read it again); waits for one that
    /// is updating it. Adds the new version's index entries unless it stayed on the page
    /// (HOT). The caller computed the new row from the one it read, so the update is right
    /// exactly when no other version came between: no lock is taken first, which saves a
    /// WAL record per update over `ON CONFLICT DO UPDATE`.
    pub(super) unsafe fn update_unless_changed(
        &self,
        tid: &mut pg_sys::ItemPointerData,
        values: &[Option<pg_sys::Datum>],
    ) -> bool {
        let slot = self.row(values);
        let routine = &*(*self.relation).rd_tableam;
        let mut failure: pg_sys::TM_FailureData = std::mem::zeroed();
        let mut lock_mode: pg_sys::LockTupleMode::Type = 0;
        let mut update_indexes = false;
        let result = routine.tuple_update.expect("heap")(
            self.relation,
            tid,
            slot,
            pg_sys::GetCurrentCommandId(true),
            pg_sys::GetActiveSnapshot(),
            std::ptr::null_mut(),
            true,
            &mut failure,
            &mut lock_mode,
            &mut update_indexes,
        );
        let updated = match result {
            pg_sys::TM_Result::TM_Ok => true,
            pg_sys::TM_Result::TM_Updated | pg_sys::TM_Result::TM_Deleted => false,
            other => panic!("updating a row of {} found it in state {other}", self.name()),
        };
        if updated && update_indexes {
            pg_sys::ExecInsertIndexTuples(
                self.result_relation,
                slot,
                self.estate,
                true,
                false,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        self.reset_per_row_memory();
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        updated
    }

    /// Inserts rows many at a time (the heap's multi-insert) and their index entries, the
    /// unique index checking the key; the slots are dropped.
    pub(super) unsafe fn insert_rows(&self, slots: &[*mut pg_sys::TupleTableSlot]) {
        if slots.is_empty() {
            return;
        }
        let command = pg_sys::GetCurrentCommandId(true);
        pg_sys::heap_multi_insert(
            self.relation,
            slots.as_ptr().cast_mut(),
            slots.len() as i32,
            command,
            0,
            std::ptr::null_mut(),
        );
        for &slot in slots {
            let no_list = std::ptr::null_mut();
            pg_sys::ExecInsertIndexTuples(
                self.result_relation,
                slot,
                self.estate,
                false,
                false,
                std::ptr::null_mut(),
                no_list,
            );
            self.reset_per_row_memory();
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
    }

    unsafe fn reset_per_row_memory(&self) {
        let per_tuple = (*self.estate).es_per_tuple_exprcontext;
        if !per_tuple.is_null() {
            pg_sys::MemoryContextReset((*per_tuple).ecxt_per_tuple_memory);
        }
    }

    unsafe fn name(&self) -> String {
        CStr::from_ptr((*(*self.relation).rd_rel).relname.data.as_ptr()).to_string_lossy().into_owned()
    }
}

/// An open scan of a table's unique key (see `Target::key_scan`), ended when dropped.
pub struct KeyScan {
    scan: pg_sys::IndexScanDesc,
    dirty: *mut pg_sys::SnapshotData,
    /// The row the last `find` found.
    pub found: *mut pg_sys::TupleTableSlot,
    relation: pg_sys::Relation,
}

impl KeyScan {
    /// Whether a row with the key `keys` describes is stored (committed, or written earlier
    /// in this transaction), after waiting for any other transaction that is writing or
    /// deleting it; the row is then in `found`.
    pub(super) unsafe fn find(&mut self, keys: &mut [pg_sys::ScanKeyData]) -> bool {
        loop {
            pg_sys::index_rescan(self.scan, keys.as_mut_ptr(), keys.len() as i32, std::ptr::null_mut(), 0);
            if !pg_sys::index_getnext_slot(self.scan, pg_sys::ScanDirection::ForwardScanDirection, self.found) {
                return false;
            }
            let (xmin, xmax) = ((*self.dirty).xmin, (*self.dirty).xmax);
            let in_progress = if xmin != pg_sys::InvalidTransactionId { xmin } else { xmax };
            if in_progress == pg_sys::InvalidTransactionId {
                return true;
            }
            pg_sys::XactLockTableWait(
                in_progress,
                self.relation,
                &mut (*self.found).tts_tid,
                pg_sys::XLTW_Oper::XLTW_InsertIndexUnique,
            );
        }
    }
}

impl Drop for KeyScan {
    fn drop(&mut self) {
        // An error's abort releases the scan's buffers and memory itself.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: opened by `Target::key_scan`, ended once.
        unsafe {
            pg_sys::index_endscan(self.scan);
            pg_sys::ExecDropSingleTupleTableSlot(self.found);
            pg_sys::pfree(self.dirty.cast());
        }
    }
}

/// An equality scan key on column `column` (1-based) of an index, `equal` being the
/// column type's equality function.
pub fn equal_key(column: i16, equal: u32, value: pg_sys::Datum) -> pg_sys::ScanKeyData {
    // SAFETY: ScanKeyInit fills a zeroed key.
    unsafe {
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        let strategy = pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber;
        pg_sys::ScanKeyInit(&mut key, column, strategy, pg_sys::Oid::from(equal), value);
        key
    }
}

/// Whether a table has exactly these columns.
unsafe fn same_columns(desc: pg_sys::TupleDesc, columns: &[&str]) -> bool {
    let attributes = (*desc).attrs.as_slice((*desc).natts as usize);
    attributes.len() == columns.len()
        && attributes.iter().zip(columns).all(|(attribute, name)| {
            !attribute.attisdropped && CStr::from_ptr(attribute.attname.data.as_ptr()).to_bytes() == name.as_bytes()
        })
}
