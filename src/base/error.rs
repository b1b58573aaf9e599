//! The one error type of pg_billing and the one table of its SQLSTATEs.
//!
//! Plain Rust, so that the domain can return it without depending on PostgreSQL;
//! `pg::error_report` turns it into PostgreSQL's error report.

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
    /// Every kind, for the tests that check the table.
    pub const ALL: [ErrorKind; 9] = [
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

    /// The one table of kinds to SQLSTATEs, as the five characters PostgreSQL shows and
    /// stores with rejected events (`pg::error_report` packs them for ereport).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidParameter => "22023",
            ErrorKind::NumericOutOfRange => "22003",
            ErrorKind::MalformedInput => "22P02",
            ErrorKind::UnknownReference => "23503",
            ErrorKind::Duplicate => "23505",
            ErrorKind::LimitExceeded => "23514",
            ErrorKind::WrongState => "55000",
            ErrorKind::LockHeld => "55P03",
            ErrorKind::ProgramLimit => "54000",
        }
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
