//! Transactions over one or more of the named databases handlers may use
//! (`worker.databases`), committed all or none.
//!
//! - [`databases`]: the named pools, opened at start, and which of them can prepare
//! - [`branch`]: one participant's part of a transaction, on a connection of its own
//! - [`protocol`]: the SQL of begin / prepare / commit / rollback / recover, per dialect
//! - [`xid`]: transaction and branch ids (`jobu:<execution>:<attempt>:<random>:<branch>`)
//! - [`log`]: the fenced decision log in jobu's own database
//! - [`coordinator`]: the commit protocol (one database: a plain transaction; several:
//!   two-phase commit, SQLite as the one last resource)
//! - [`recovery`]: finishing branches left in doubt, run by `crate::actors::recovery`
//!
//! A handler reaches all of it through its execution context:
//!
//! ```ignore
//! ctx.transaction(&["billing", "ledger"], |tx| Box::pin(async move {
//!     tx.db("billing")?.execute_unprepared("UPDATE accounts SET ...").await?;
//!     tx.db("ledger")?.execute_unprepared("INSERT INTO entries ...").await?;
//!     Ok(())
//! })).await?;
//! ```

pub mod branch;
pub mod coordinator;
pub mod databases;
pub mod log;
pub mod protocol;
pub mod recovery;
pub mod xid;

pub use branch::Branch;
pub use coordinator::{Coordinator, Fault, Fence, Tx, TxFuture};
pub use databases::{Databases, Participant, TwoPhase};
pub use xid::Xid;

use sea_orm::DbErr;

/// Why a transaction did not commit (or, for [`TxnError::InDoubt`], is not known to have).
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// A name that is not in `worker.databases`.
    #[error(
        "no database named `{name}` is available to handlers (worker.databases: {configured})"
    )]
    UnknownDatabase { name: String, configured: String },
    /// The set of databases cannot make one transaction (two SQLite databases, a server
    /// without two-phase commit, ...).
    #[error("{0}")]
    Refused(String),
    /// A statement of the handler failed; the database's message.
    #[error("{0}")]
    Db(#[from] DbErr),
    /// A participant failed in the protocol (begin, prepare, commit).
    #[error("database `{database}`: {source}")]
    Participant { database: String, source: DbErr },
    /// The handler's closure gave up.
    #[error("{0}")]
    Aborted(String),
    /// The attempt lost its lease: another worker owns the execution. Rolled back.
    #[error(
        "the attempt no longer owns execution {0} (its lease was lost): rolled back everywhere"
    )]
    Fenced(i64),
    /// The decision could not be written to jobu's database. Rolled back.
    #[error("cannot log the transaction's decision in jobu's database ({0}): rolled back")]
    Log(String),
    /// The decision may or may not have been logged; recovery finishes the transaction.
    #[error("{0}")]
    InDoubt(String),
}

impl TxnError {
    pub(crate) fn unknown(name: &str, databases: &Databases) -> TxnError {
        let names = databases.names();
        TxnError::UnknownDatabase {
            name: name.to_string(),
            configured: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        }
    }
}

impl From<TxnError> for crate::handlers::HandlerError {
    fn from(e: TxnError) -> Self {
        crate::handlers::HandlerError::new(e.to_string())
    }
}
