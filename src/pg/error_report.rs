//! Errors crossing into PostgreSQL: a [`BillingError`] as an error report with its
//! SQLSTATE, message, detail and hint, and the panic hook that keeps Rust internals out of
//! what callers see.

use crate::base::error::{BillingError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// PostgreSQL's packed form of a five-character SQLSTATE (MAKE_SQLSTATE: six bits each).
fn packed(code: &str) -> i32 {
    code.bytes().enumerate().map(|(i, c)| (((c - b'0') & 0x3F) as i32) << (6 * i)).sum()
}

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    PgSqlErrorCode::from(packed(kind.code()))
}

impl From<BillingError> for ErrorReport {
    fn from(error: BillingError) -> Self {
        let mut report = ErrorReport::new(sqlstate(error.kind), error.message, "pg_billing");
        if let Some(detail) = error.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = error.hint {
            report = report.set_hint(hint);
        }
        report
    }
}

/// Raises the error in PostgreSQL; for contexts that cannot return a `Result`
/// (type input functions, aggregate transitions).
pub fn raise(error: BillingError) -> ! {
    ErrorReport::from(error).report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Keeps Rust backtraces out of what callers see.
///
/// pgrx's panic hook captures a backtrace at every panic (when `RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE` is set in the server's environment), and pgrx appends it to the
/// DETAIL of the error it raises, both for a Rust panic and for a PostgreSQL error that
/// crossed Rust code (PostgreSQL's longjmp is caught at the FFI boundary and carried up as
/// a panic, whose hook run captures the backtrace). This hook replaces pgrx's: a
/// PostgreSQL error, or an error report raised from Rust, goes up untouched (its own
/// SQLSTATE, message, detail and hint, no backtrace); a Rust panic, which is a bug, is logged
/// to the server log with its location and backtrace, and the caller gets its message with
/// SQLSTATE XX000 and nothing else.
pub fn install_panic_hook() {
    use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
    use std::sync::OnceLock;
    static BACKEND_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();
    BACKEND_THREAD.get_or_init(|| std::thread::current().id());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        if payload.is::<CaughtError>() || payload.is::<ErrorReport>() || payload.is::<ErrorReportWithLevel>() {
            return;
        }
        if BACKEND_THREAD.get() != Some(&std::thread::current().id()) {
            // Not the backend's thread: PostgreSQL cannot log from here.
            return previous(info);
        }
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let location = info.location().map_or_else(|| "an unknown location".to_string(), |l| l.to_string());
        let backtrace = std::backtrace::Backtrace::force_capture();
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("pg_billing internal error: {message}"),
            "pg_billing",
        )
        .set_detail(format!("panicked at {location}\n{backtrace}"))
        .report(pgrx::PgLogLevel::LOG_SERVER_ONLY);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_packs_to_the_sqlstate_postgresql_knows() {
        use PgSqlErrorCode::*;
        let known = [
            (ErrorKind::InvalidParameter, ERRCODE_INVALID_PARAMETER_VALUE),
            (ErrorKind::NumericOutOfRange, ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
            (ErrorKind::MalformedInput, ERRCODE_INVALID_TEXT_REPRESENTATION),
            (ErrorKind::UnknownReference, ERRCODE_FOREIGN_KEY_VIOLATION),
            (ErrorKind::Duplicate, ERRCODE_UNIQUE_VIOLATION),
            (ErrorKind::LimitExceeded, ERRCODE_CHECK_VIOLATION),
            (ErrorKind::WrongState, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
            (ErrorKind::LockHeld, ERRCODE_LOCK_NOT_AVAILABLE),
            (ErrorKind::ProgramLimit, ERRCODE_PROGRAM_LIMIT_EXCEEDED),
        ];
        assert_eq!(known.len(), ErrorKind::ALL.len());
        for (kind, expected) in known {
            assert_eq!(sqlstate(kind), expected, "{kind:?}");
        }
    }
}
