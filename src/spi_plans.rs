//! Statements prepared once per backend and kept: the ingestion hot path runs the same
//! few statements on every call, so parsing and planning them each time would dominate.
//! Kept plans survive DROP/CREATE EXTENSION: PostgreSQL's plan cache re-analyses them when
//! the tables they name change.

use pgrx::pg_sys::Oid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static PLANS: RefCell<HashMap<usize, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// The kept plan of `sql` (a `'static` query text, identified by its address), prepared on
/// first use with the given parameter types.
pub fn plan(client: &SpiClient, sql: &'static str, types: &[Oid]) -> Rc<OwnedPreparedStatement> {
    let key = sql.as_ptr() as usize;
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).cloned()) {
        return plan;
    }
    let types: Vec<PgOid> = types.iter().map(|&oid| PgOid::from_untagged(oid)).collect();
    let plan = Rc::new(client.prepare_mut(sql, &types).expect("a valid pg_billing statement").keep());
    PLANS.with(|plans| plans.borrow_mut().insert(key, plan.clone()));
    plan
}
