//! Work done as the extension's owner on behalf of a role that may not do it itself, as
//! PostgreSQL runs a foreign key's check as the referenced table's owner.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The user and security context to go back to, restored when dropped: after the work, or
/// while an error unwinds through it (the (sub)transaction's abort restores them too).
struct Restore {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: puts back the values GetUserIdAndSecContext returned.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `work` as the role that owns the extension, as a SECURITY DEFINER function would.
pub fn as_extension_owner<R>(work: impl FnOnce() -> R) -> R {
    let owner =
        Spi::get_one::<pg_sys::Oid>("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_billing'")
            .ok()
            .flatten()
            .expect("ingestion runs in a database with pg_billing");
    let mut restore = Restore { user: pg_sys::InvalidOid, context: 0 };
    // SAFETY: the backend's current user and context, read and then set as SECURITY DEFINER
    // functions set them (fmgr_security_definer).
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut restore.user, &mut restore.context);
        pg_sys::SetUserIdAndSecContext(owner, restore.context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    work()
}
