//! Writing pg_billing's own tables below the statement level: a table opened with its
//! indexes, a probe of its unique key through a dirty snapshot, and the heap's
//! multi-insert with the executor's per-row checks, as COPY writes rows.
//!
//! A caller takes this path only where it does exactly what its SQL statement would, which
//! `Target::open` checks and `refusal` explains: the setting `pg_billing.direct_writes`
//! on; read committed isolation (under repeatable read a key committed after the snapshot
//! must fail the transaction, as ON CONFLICT makes it); no Citus; a caller holding every
//! privilege the statement needs; and a table of exactly the shape this version created:
//! every column's name, type, typmod, collation, NOT NULL and default; the unique index's
//! columns, operator classes and collations; no triggers, rules, row security, CHECK
//! constraints, other unique or exclusion indexes, partitioning or replica identity other
//! than the default. Anything else (an ALTER TABLE by a DBA included) gets the statement,
//! and `billing.direct_write_status()` says why.

use super::invalidation;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

/// `pg_billing.direct_writes`: whether ingestion may write below the statement level at all.
pub static DIRECT_WRITES: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

/// A table opened for writing, with its indexes; closed (keeping the lock) when dropped.
pub struct Target {
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    result_relation: *mut pg_sys::ResultRelInfo,
    /// The table's one unique index: its idempotency key.
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

/// A column's default, as the direct path must find it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// None: the statement sets the column.
    None,
    /// `GENERATED ALWAYS AS IDENTITY`: the statement sets it with OVERRIDING SYSTEM VALUE.
    IdentityAlways,
    /// `DEFAULT now()`: the statement leaves the column to it, the direct path writes the
    /// transaction's start time, which is what now() returns.
    Now,
}

/// One column as the direct path writes it.
pub struct Column {
    pub name: &'static str,
    pub type_oid: pg_sys::Oid,
    pub not_null: bool,
    /// Its collation (`InvalidOid` for types without one).
    pub collation: pg_sys::Oid,
    pub default: Default,
}

/// What a table must be for a caller to write it through `Target`.
pub struct Shape {
    /// Its name in the billing schema.
    pub table: &'static CStr,
    /// Its columns, in order.
    pub columns: &'static [Column],
    /// The unique index's key columns (0-based positions in `columns`), in order.
    pub key: &'static [usize],
    /// The privileges the caller's statement needs on it.
    pub privileges: &'static [(u32, &'static str)],
}

/// The oid of a table in the billing schema (`InvalidOid` when there is none), looked up
/// once per invalidation generation (dropping or creating a table starts a new one).
pub(crate) unsafe fn billing_table(name: &'static CStr) -> pg_sys::Oid {
    thread_local! {
        static RELIDS: RefCell<(u64, Vec<(&'static CStr, pg_sys::Oid)>)> = const { RefCell::new((0, Vec::new())) };
    }
    let generation = invalidation::generation();
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

/// Why the direct path does not apply to a table in this session and transaction, or
/// `None` when it does. Checks only what holds before the table is opened.
unsafe fn session_refusal(shape: &Shape) -> Option<String> {
    if !DIRECT_WRITES.get() {
        return Some("pg_billing.direct_writes is off".into());
    }
    if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return Some("the transaction is repeatable read or serializable".into());
    }
    if invalidation::citus_installed() {
        return Some("Citus is installed".into());
    }
    let relid = billing_table(shape.table);
    if relid == pg_sys::InvalidOid {
        return Some("the table does not exist".into());
    }
    let user = pg_sys::GetUserId();
    for &(privilege, name) in shape.privileges {
        if pg_sys::pg_class_aclcheck(relid, user, privilege as pg_sys::AclMode) != pg_sys::AclResult::ACLCHECK_OK {
            return Some(format!("the current role lacks {name} on the table"));
        }
    }
    None
}

impl Target {
    /// Opens a table of the billing schema for writing directly, or says why the statement
    /// must be used instead (see the module comment).
    pub(crate) unsafe fn open(shape: &Shape) -> Result<Target, String> {
        if let Some(reason) = session_refusal(shape) {
            return Err(reason);
        }
        let relation = pg_sys::table_open(billing_table(shape.table), pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let mut target = Target {
            relation,
            estate: std::ptr::null_mut(),
            result_relation: std::ptr::null_mut(),
            unique_index: std::ptr::null_mut(),
            row_type: pg_sys::CreateTupleDescCopy((*relation).rd_att),
        };
        table_refusal(relation, shape).map_or(Ok(()), Err)?;
        target.estate = pg_sys::CreateExecutorState();
        target.result_relation =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
        // Range table index 0: the table is in no statement's range table.
        pg_sys::InitResultRelInfo(target.result_relation, relation, 0, std::ptr::null_mut(), 0);
        // The executor's own check that rows may be inserted into this relation (its kind,
        // and what publications require of inserts).
        pg_sys::CheckValidResultRel(target.result_relation, pg_sys::CmdType::CMD_INSERT);
        pg_sys::ExecOpenIndices(target.result_relation, false);
        let indexes = std::slice::from_raw_parts(
            (*target.result_relation).ri_IndexRelationDescs,
            (*target.result_relation).ri_NumIndices as usize,
        );
        let infos = std::slice::from_raw_parts(
            (*target.result_relation).ri_IndexRelationInfo,
            (*target.result_relation).ri_NumIndices as usize,
        );
        if infos.iter().any(|&info| !(*info).ii_ExclusionOps.is_null()) {
            return Err("the table has an exclusion constraint".into());
        }
        let unique: Vec<pg_sys::Relation> = indexes.iter().copied().filter(|&i| (*(*i).rd_index).indisunique).collect();
        match unique.as_slice() {
            [index] => {
                key_refusal(*index, shape).map_or(Ok(()), Err)?;
                target.unique_index = *index;
            }
            [] => return Err("the table has no unique index".into()),
            _ => return Err("the table has more than one unique index".into()),
        }
        Ok(target)
    }

    /// A scan of the unique key that sees committed rows and rows other transactions are
    /// still writing (a dirty snapshot), as the unique index's own check does.
    pub(crate) unsafe fn key_scan(&self) -> KeyScan {
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
    pub(crate) unsafe fn row(&self, values: &[Option<pg_sys::Datum>]) -> *mut pg_sys::TupleTableSlot {
        let slot = pg_sys::MakeSingleTupleTableSlot(self.row_type, &pg_sys::TTSOpsHeapTuple);
        for (column, value) in values.iter().enumerate() {
            *(*slot).tts_values.add(column) = value.unwrap_or(pg_sys::Datum::from(0));
            *(*slot).tts_isnull.add(column) = value.is_none();
        }
        pg_sys::ExecStoreVirtualTuple(slot);
        slot
    }

    /// Inserts rows many at a time (the heap's multi-insert) and their index entries, the
    /// unique index checking the key; each row first passes the executor's constraint
    /// check (NOT NULL and CHECK), as COPY's rows do. The slots are dropped.
    pub(crate) unsafe fn insert_rows(&self, slots: &[*mut pg_sys::TupleTableSlot]) {
        if slots.is_empty() {
            return;
        }
        for &slot in slots {
            pg_sys::ExecConstraints(self.result_relation, slot, self.estate);
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
}

/// Why the opened table is not of the shape the direct path writes, or `None`.
unsafe fn table_refusal(relation: pg_sys::Relation, shape: &Shape) -> Option<String> {
    let form = &*(*relation).rd_rel;
    if form.relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char || form.relam != pg_sys::HEAP_TABLE_AM_OID {
        return Some("the table is not a plain heap table".into());
    }
    if form.relispartition {
        return Some("the table is a partition".into());
    }
    if form.relrowsecurity {
        return Some("the table has row level security".into());
    }
    if let Some(reason) = triggers_or_rules(relation) {
        return Some(reason.into());
    }
    if form.relreplident != pg_sys::REPLICA_IDENTITY_DEFAULT as std::ffi::c_char {
        return Some("the table's replica identity is not the default".into());
    }
    let desc = (*relation).rd_att;
    let constraints = (*desc).constr;
    if !constraints.is_null() && (*constraints).num_check > 0 {
        return Some("the table has CHECK constraints".into());
    }
    let attributes = (*desc).attrs.as_slice((*desc).natts as usize);
    if attributes.len() != shape.columns.len() {
        return Some(format!(
            "the table has {} columns (dropped ones included), not {}",
            attributes.len(),
            shape.columns.len()
        ));
    }
    for (attribute, column) in attributes.iter().zip(shape.columns) {
        let name = CStr::from_ptr(attribute.attname.data.as_ptr()).to_string_lossy();
        let differs = |what: &str| Some(format!("column {} differs in its {what}", column.name));
        if attribute.attisdropped || name != column.name {
            return Some(format!("column {} is not {name} as expected", attribute.attnum));
        }
        if attribute.atttypid != column.type_oid {
            return differs("type");
        }
        if attribute.atttypmod != -1 {
            return differs("type modifier");
        }
        if attribute.attcollation != column.collation {
            return differs("collation");
        }
        if attribute.attnotnull != column.not_null {
            return differs("NOT NULL");
        }
        if attribute.attgenerated != 0 {
            return differs("generation");
        }
        let identity_always = attribute.attidentity == pg_sys::ATTRIBUTE_IDENTITY_ALWAYS as std::ffi::c_char;
        let default_ok = match column.default {
            Default::None => attribute.attidentity == 0 && !attribute.atthasdef,
            Default::IdentityAlways => identity_always && !attribute.atthasdef,
            Default::Now => attribute.attidentity == 0 && default_is_now(desc, attribute.attnum),
        };
        if !default_ok {
            return differs("default");
        }
    }
    None
}

/// Whether column `attnum`'s default is exactly `now()`.
unsafe fn default_is_now(desc: pg_sys::TupleDesc, attnum: pg_sys::AttrNumber) -> bool {
    let constraints = (*desc).constr;
    if constraints.is_null() {
        return false;
    }
    let defaults = std::slice::from_raw_parts((*constraints).defval, (*constraints).num_defval as usize);
    defaults.iter().filter(|d| d.adnum == attnum).any(|d| {
        let node = pg_sys::stringToNode(d.adbin).cast::<pg_sys::Node>();
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_FuncExpr {
            return false;
        }
        let call = node.cast::<pg_sys::FuncExpr>();
        (*call).funcid == pg_sys::Oid::from(pg_sys::F_NOW) && (*call).args.is_null()
    })
}

/// Why the unique index is not the key the direct path probes, or `None`: its columns,
/// operator classes and collations must be those of the key, so that a probe and the
/// index agree on which keys are equal.
unsafe fn key_refusal(index: pg_sys::Relation, shape: &Shape) -> Option<String> {
    let form = &*(*index).rd_index;
    let refusal = || Some("the unique index is not the expected key".into());
    if form.indnkeyatts as usize != shape.key.len()
        || form.indnatts != form.indnkeyatts
        || !form.indimmediate
        || form.indnullsnotdistinct
        || !form.indisvalid
        || !pg_sys::heap_attisnull((*index).rd_indextuple, pg_sys::Anum_pg_index_indpred as i32, std::ptr::null_mut())
        || !pg_sys::heap_attisnull((*index).rd_indextuple, pg_sys::Anum_pg_index_indexprs as i32, std::ptr::null_mut())
        || (*(*index).rd_rel).relam != pg_sys::BTREE_AM_OID
    {
        return refusal();
    }
    let attributes = form.indkey.values.as_slice(shape.key.len());
    for (position, &column) in shape.key.iter().enumerate() {
        let expected = &shape.columns[column];
        let default_class = pg_sys::GetDefaultOpClass(expected.type_oid, pg_sys::BTREE_AM_OID);
        if attributes[position] as usize != column + 1
            || *(*index).rd_indcollation.add(position) != expected.collation
            || opclass_of(index, position) != default_class
        {
            return refusal();
        }
    }
    None
}

/// The operator class of an index column.
unsafe fn opclass_of(index: pg_sys::Relation, position: usize) -> pg_sys::Oid {
    let mut is_null = false;
    let classes = pg_sys::SysCacheGetAttr(
        pg_sys::SysCacheIdentifier::INDEXRELID as i32,
        (*index).rd_indextuple,
        pg_sys::Anum_pg_index_indclass as pg_sys::AttrNumber,
        &mut is_null,
    );
    let vector = classes.cast_mut_ptr::<pg_sys::oidvector>();
    *(*vector).values.as_ptr().add(position)
}

/// Why a table is written through its statement rather than directly in this session, or
/// `None` when it is written directly (for `billing.direct_write_status()`).
pub fn refusal(shape: &Shape) -> Option<String> {
    // SAFETY: inside a transaction; the table is opened and closed again.
    unsafe { Target::open(shape).err() }
}

/// Whether a billing table has triggers or rules: they may write other tables in the
/// middle of a statement that inserts into it, which a statement writing those tables too
/// must not meet (ON CONFLICT DO UPDATE cannot update a row the same statement changed).
/// Looked at under the lock an insert takes, so none can be added before the caller's.
pub fn has_triggers_or_rules(table: &'static CStr) -> bool {
    // SAFETY: inside a transaction; the table is opened and closed again, its lock kept.
    unsafe {
        let relid = billing_table(table);
        if relid == pg_sys::InvalidOid {
            return true;
        }
        let relation = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let found = triggers_or_rules(relation).is_some();
        pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
}

/// Whether an open table has triggers or rules, which act in the middle of a statement
/// that writes it: the reason a caller gives for stepping aside.
unsafe fn triggers_or_rules(relation: pg_sys::Relation) -> Option<&'static str> {
    if !(*relation).trigdesc.is_null() {
        Some("the table has triggers")
    } else if !(*relation).rd_rules.is_null() {
        Some("the table has rules")
    } else {
        None
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
    /// deleting it; the row is then in `found`. While it waits it holds no buffer pin
    /// (VACUUM of the table is not held up), and it waits for a speculative insertion
    /// only until that insertion is confirmed or withdrawn, as the unique check does.
    pub(crate) unsafe fn find(&mut self, keys: &mut [pg_sys::ScanKeyData]) -> bool {
        loop {
            pg_sys::index_rescan(self.scan, keys.as_mut_ptr(), keys.len() as i32, std::ptr::null_mut(), 0);
            if !pg_sys::index_getnext_slot(self.scan, pg_sys::ScanDirection::ForwardScanDirection, self.found) {
                return false;
            }
            let (xmin, xmax, token) = ((*self.dirty).xmin, (*self.dirty).xmax, (*self.dirty).speculativeToken);
            let in_progress = if xmin != pg_sys::InvalidTransactionId { xmin } else { xmax };
            if in_progress == pg_sys::InvalidTransactionId {
                return true;
            }
            let mut tid = (*self.found).tts_tid;
            // Releases the heap page's pin, then the rescan the leaf page's and the
            // heap fetch's.
            pg_sys::ExecClearTuple(self.found);
            pg_sys::index_rescan(self.scan, keys.as_mut_ptr(), keys.len() as i32, std::ptr::null_mut(), 0);
            if token != 0 {
                pg_sys::SpeculativeInsertionWait(xmin, token);
            } else {
                pg_sys::XactLockTableWait(
                    in_progress,
                    self.relation,
                    &mut tid,
                    pg_sys::XLTW_Oper::XLTW_InsertIndexUnique,
                );
            }
            pgrx::check_for_interrupts!();
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
