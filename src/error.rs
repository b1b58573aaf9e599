//! The one error type of pg_billing and its mapping to PostgreSQL SQLSTATEs.
//!
//! The type itself is plain Rust so that the pricing engine can return it without
//! depending on PostgreSQL; only the conversion into [`ErrorReport`] touches pgrx.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// What went wrong, which decides the SQLSTATE a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 22023: a parameter is well-formed but not acceptable (bad price properties).
    InvalidParameter,
    /// 22003: a number does not fit the exact decimal range pg_billing computes in.
    NumericOutOfRange,
    /// 22P02: text that does not parse (malformed JSON, a non-numeric value).
    MalformedInput,
    /// 23503: an unknown customer, subscription, metric or plan.
    UnknownReference,
    /// 23505: a duplicate where the caller asked for strictness.
    Duplicate,
    /// 23514: the operation would overdraw a wallet or exceed a cap.
    LimitExceeded,
    /// 55000: the object is in the wrong state (a subscription not active at that time).
    WrongState,
    /// 55P03: another session holds the lock (a billing run in progress).
    LockHeld,
    /// 54000: input beyond a documented limit of pg_billing (an identifier longer than 255
    /// bytes, properties too large or too deep to store).
    ProgramLimit,
}

impl ErrorKind {
    /// The one table of kinds: each kind's SQLSTATE, as pgrx's code and as the five
    /// characters stored with rejected events (a unit test checks the two agree).
    fn sqlstates(self) -> (PgSqlErrorCode, &'static str) {
        use PgSqlErrorCode::*;
        match self {
            ErrorKind::InvalidParameter => (ERRCODE_INVALID_PARAMETER_VALUE, "22023"),
            ErrorKind::NumericOutOfRange => (ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "22003"),
            ErrorKind::MalformedInput => (ERRCODE_INVALID_TEXT_REPRESENTATION, "22P02"),
            ErrorKind::UnknownReference => (ERRCODE_FOREIGN_KEY_VIOLATION, "23503"),
            ErrorKind::Duplicate => (ERRCODE_UNIQUE_VIOLATION, "23505"),
            ErrorKind::LimitExceeded => (ERRCODE_CHECK_VIOLATION, "23514"),
            ErrorKind::WrongState => (ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "55000"),
            ErrorKind::LockHeld => (ERRCODE_LOCK_NOT_AVAILABLE, "55P03"),
            ErrorKind::ProgramLimit => (ERRCODE_PROGRAM_LIMIT_EXCEEDED, "54000"),
        }
    }

    fn sqlstate(self) -> PgSqlErrorCode {
        self.sqlstates().0
    }

    /// The five-character SQLSTATE, as stored with rejected events.
    pub fn code(self) -> &'static str {
        self.sqlstates().1
    }
}

/// An error with the lowercase message, the offending value (detail) and the fix (hint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BillingError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, BillingError>;

impl BillingError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BillingError { kind, message: message.into(), detail: None, hint: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }

    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NumericOutOfRange, message)
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MalformedInput, message)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<BillingError> for ErrorReport {
    fn from(error: BillingError) -> Self {
        let mut report = ErrorReport::new(error.kind.sqlstate(), error.message, "pg_billing");
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
    use super::ErrorKind;

    /// PostgreSQL packs a SQLSTATE's five characters six bits each (MAKE_SQLSTATE).
    fn unpacked(code: i32) -> String {
        (0..5).map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
    }

    #[test]
    fn each_kind_has_one_sqlstate_in_both_spellings() {
        let kinds = [
            ErrorKind::InvalidParameter,
            ErrorKind::NumericOutOfRange,
            ErrorKind::MalformedInput,
            ErrorKind::UnknownReference,
            ErrorKind::Duplicate,
            ErrorKind::LimitExceeded,
            ErrorKind::WrongState,
            ErrorKind::LockHeld,
            ErrorKind::ProgramLimit,
        ];
        for kind in kinds {
            let (code, text) = kind.sqlstates();
            assert_eq!(unpacked(code as i32), text, "{kind:?}");
        }
    }
}
