//! The named databases handlers may use (`worker.databases`): their pools, opened once at
//! start, and what each can do in a transaction over several databases (whether its server
//! can prepare). `default` is jobu's own database and shares jobu's pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::protocol;
use crate::config::{redact_url, Settings, DEFAULT_DATABASE};
use crate::store::{Dialect, Store, StoreError};

/// Whether a participant can take part in two-phase commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwoPhase {
    Available,
    /// A PostgreSQL or MySQL server that cannot prepare, and why (said at start).
    Unavailable(String),
    /// SQLite: at most one per transaction, committed last.
    LastResourceOnly,
}

/// One named database.
#[derive(Debug, Clone)]
pub struct Participant {
    pub name: String,
    pub store: Store,
    pub two_phase: TwoPhase,
}

impl Participant {
    pub fn dialect(&self) -> Dialect {
        self.store.dialect()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        self.store.connection()
    }
}

/// The named databases of one process; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    by_name: Arc<BTreeMap<String, Participant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open database `{name}` ({url}): {source}")]
pub struct OpenError {
    pub name: String,
    /// Without its password.
    pub url: String,
    pub source: StoreError,
}

/// `/ready` gives each named database this long to answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

impl Databases {
    /// Opens the pools of `worker.databases` (`default` shares `default_store`), checks
    /// which can prepare, and says plainly at start where two-phase commit is unavailable.
    pub async fn open(settings: &Settings, default_store: &Store) -> Result<Databases, OpenError> {
        let mut by_name = BTreeMap::new();
        for name in &settings.worker.databases {
            if by_name.contains_key(name) {
                continue;
            }
            let store = if name == DEFAULT_DATABASE {
                default_store.clone()
            } else {
                let db = settings.databases.get(name).ok_or_else(|| OpenError {
                    name: name.clone(),
                    url: String::new(),
                    source: StoreError::Invalid(format!(
                        "no database named `{name}` under `databases`"
                    )),
                })?;
                Store::connect(db).await.map_err(|source| OpenError {
                    name: name.clone(),
                    url: redact_url(&db.url),
                    source,
                })?
            };
            let two_phase = probe_two_phase(&store).await;
            if store.dialect() == Dialect::Sqlite {
                // The last resource's commit record (see `coordinator`).
                store
                    .connection()
                    .execute_unprepared(protocol::LAST_RESOURCE_TABLE)
                    .await
                    .map_err(|e| OpenError {
                        name: name.clone(),
                        url: String::new(),
                        source: StoreError::Db(e),
                    })?;
            }
            match &two_phase {
                TwoPhase::Available => {
                    tracing::info!(database = %name, "two-phase commit available")
                }
                TwoPhase::Unavailable(why) => tracing::warn!(
                    database = %name,
                    reason = %why,
                    "two-phase commit is unavailable on this database: it can only be used \
                     alone or as the one database of a transaction"
                ),
                TwoPhase::LastResourceOnly => tracing::info!(
                    database = %name,
                    "SQLite cannot prepare: it takes part in transactions over several \
                     databases as their one last resource, committed last"
                ),
            }
            by_name.insert(
                name.clone(),
                Participant {
                    name: name.clone(),
                    store,
                    two_phase,
                },
            );
        }
        Ok(Databases {
            by_name: Arc::new(by_name),
        })
    }

    /// Databases from stores opened elsewhere (tests, embedding programs).
    pub async fn from_stores(stores: impl IntoIterator<Item = (String, Store)>) -> Databases {
        let mut by_name = BTreeMap::new();
        for (name, store) in stores {
            if store.dialect() == Dialect::Sqlite {
                let _ = store
                    .connection()
                    .execute_unprepared(protocol::LAST_RESOURCE_TABLE)
                    .await;
            }
            let two_phase = probe_two_phase(&store).await;
            by_name.insert(
                name.clone(),
                Participant {
                    name,
                    store,
                    two_phase,
                },
            );
        }
        Databases {
            by_name: Arc::new(by_name),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Participant> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether a transaction over several of them is possible at all: two or more
    /// databases, one of which can prepare. (Recovery has nothing to do otherwise.)
    pub fn can_span_several(&self) -> bool {
        self.by_name.len() >= 2
            && self
                .by_name
                .values()
                .any(|p| p.two_phase == TwoPhase::Available)
    }

    /// Each database answers a trivial query within [`PING_TIMEOUT`]: `Ok` or why not.
    pub async fn ping(&self) -> Vec<(String, Result<(), String>)> {
        let mut out = Vec::new();
        for p in self.by_name.values() {
            let stmt =
                Statement::from_string(p.store.connection().get_database_backend(), "SELECT 1");
            let answer =
                tokio::time::timeout(PING_TIMEOUT, p.store.connection().execute(stmt)).await;
            let result = match answer {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => {
                    tracing::warn!(database = %p.name, error = %e, "readiness: database error");
                    Err("unreachable".to_string())
                }
                Err(_) => Err(format!("no answer within {} s", PING_TIMEOUT.as_secs())),
            };
            out.push((p.name.clone(), result));
        }
        out
    }
}

async fn probe_two_phase(store: &Store) -> TwoPhase {
    let d = store.dialect();
    let Some(sql) = protocol::two_phase_probe(d) else {
        return TwoPhase::LastResourceOnly;
    };
    let db = store.connection();
    let stmt = Statement::from_string(db.get_database_backend(), sql);
    match (d, db.query_all(stmt).await) {
        (Dialect::Postgres, Ok(rows)) => {
            let n: i32 = rows
                .first()
                .and_then(|r| r.try_get("", "n").ok())
                .unwrap_or(0);
            if n > 0 {
                TwoPhase::Available
            } else {
                TwoPhase::Unavailable(
                    "max_prepared_transactions is 0: set it above 0 (for example 64) in \
                     postgresql.conf and restart the server"
                        .into(),
                )
            }
        }
        (_, Ok(_)) => TwoPhase::Available,
        (_, Err(e)) => TwoPhase::Unavailable(format!(
            "the server refuses XA ({e}); MySQL 8 needs the XA_RECOVER_ADMIN privilege"
        )),
    }
}
