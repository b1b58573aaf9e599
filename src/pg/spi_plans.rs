//! Statements prepared once per backend and kept: the ingestion hot path runs the same
//! few statements on every call, so parsing them each time would dominate a single event.
//!
//! A statement whose plan cannot depend on its input's size (an insert from arrays) always
//! runs one generic plan. A statement that joins its input keeps two forms: small inputs
//! (a single event) run a generic plan, since planning it on every call would cost more
//! than the work and its estimate of a few array elements is right for them; larger
//! batches are planned for the arrays they bring, so joins see a thousand ids rather than
//! the generic guess of ten (a nested loop that is right for one event is a thousand scans
//! for a batch), and the planning is noise next to the work. Kept plans survive
//! DROP/CREATE EXTENSION: PostgreSQL's plan cache re-analyses them when the tables they
//! name change.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Up to this many input rows a statement planned per input runs its generic plan.
const GENERIC_PLAN_MAX_ROWS: usize = 10;

/// How a statement is planned.
#[derive(Clone, Copy)]
pub enum Planning {
    /// One generic plan for every call: the best plan does not depend on the input's size.
    Generic,
    /// A plan fitted to an input of this many rows (generic for a few rows).
    ForRows(usize),
    /// A plan made for each call's values: for planners that cannot plan the statement
    /// without them (Citus, for a statement that is not routed to one shard).
    Custom,
}

impl Planning {
    fn generic(self) -> bool {
        match self {
            Planning::Generic => true,
            Planning::ForRows(rows) => rows <= GENERIC_PLAN_MAX_ROWS,
            Planning::Custom => false,
        }
    }
}

thread_local! {
    /// Kept plans by statement text (its address), argument types and planning.
    static PLANS: RefCell<HashMap<(usize, Vec<pg_sys::Oid>, bool), usize>> = RefCell::new(HashMap::new());
}

fn kept_plan(sql: &'static str, types: &[pg_sys::Oid], generic: bool) -> pg_sys::SPIPlanPtr {
    // A query text is identified by its address: every caller passes an include_str! constant.
    // The same text with other argument types is another statement.
    let key = (sql.as_ptr() as usize, types.to_vec(), generic);
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).copied()) {
        return plan as pg_sys::SPIPlanPtr;
    }
    let options = if generic { pg_sys::CURSOR_OPT_GENERIC_PLAN } else { pg_sys::CURSOR_OPT_CUSTOM_PLAN };
    let text = std::ffi::CString::new(sql).expect("statement texts have no NUL");
    // SAFETY: called inside an SPI connection; the plan is moved out of SPI's memory by
    // SPI_keepplan and lives for the backend.
    let plan = unsafe {
        let plan =
            pg_sys::SPI_prepare_cursor(text.as_ptr(), types.len() as i32, types.as_ptr().cast_mut(), options as i32);
        assert!(!plan.is_null(), "a valid pg_billing statement");
        pg_sys::SPI_keepplan(plan);
        plan
    };
    PLANS.with(|plans| plans.borrow_mut().insert(key, plan as usize));
    plan
}

/// One result row, read while the statement's result is alive.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    /// Column `n` (1-based), copied into a Rust value; `None` for SQL NULL.
    pub fn get<T: FromDatum>(&self, n: i32) -> Option<T> {
        let mut is_null = false;
        // SAFETY: the tuple and descriptor come from the live SPI result; n is a column of it.
        unsafe {
            let datum = pg_sys::SPI_getbinval(self.tuple, self.desc, n, &mut is_null);
            T::from_datum(datum, is_null)
        }
    }
}

/// Runs a kept statement with `args` (its parameters take their types), planned as
/// `planning` says, and reads each result row with `read`. Must run inside an SPI
/// connection (Spi::connect).
pub fn execute<R>(
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    planning: Planning,
    mut read: impl FnMut(&Row) -> R,
) -> Vec<R> {
    let types: Vec<pg_sys::Oid> = args.iter().map(DatumWithOid::oid).collect();
    let plan = kept_plan(sql, &types, planning.generic());
    let mut values: Vec<pg_sys::Datum> =
        args.iter().map(|a| a.datum().map_or(pg_sys::Datum::from(0), |d| d.sans_lifetime())).collect();
    let nulls: Vec<std::ffi::c_char> =
        args.iter().map(|a| if a.datum().is_none() { b'n' } else { b' ' } as _).collect();
    // SAFETY: the plan takes exactly these arguments; the result table is read before the
    // next SPI call and copied into Rust values by `read`.
    unsafe {
        let status = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        assert!(status >= 0, "SPI_execute_plan failed with status {status}");
        let table = pg_sys::SPI_tuptable;
        if table.is_null() {
            return Vec::new();
        }
        let rows = std::slice::from_raw_parts((*table).vals, pg_sys::SPI_processed as usize);
        rows.iter().map(|&tuple| read(&Row { tuple, desc: (*table).tupdesc })).collect()
    }
}
