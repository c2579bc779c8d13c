//! The commit protocol: [`Coordinator::run`] begins a branch on every named database, runs
//! the caller's closure over them, and commits all or none.
//!
//! - One database: `BEGIN` ... `COMMIT`, after checking that the attempt still owns its
//!   execution (inside the transaction, locked, when that database is jobu's own).
//! - Several: every PostgreSQL/MySQL branch prepares; then the decision is logged, fenced by
//!   the attempt's owner token ([`super::log`]); then the SQLite last resource, if any,
//!   commits with its record of the outcome; then every prepared branch commits. A failure
//!   before the decision rolls back everywhere; after it, branches that could not be
//!   committed are left prepared for recovery ([`super::recovery`]), which commits them.
//!
//! [`Fault`]s injected for the fault tests ([`Coordinator::with_fault`], or the
//! `JOBU_TEST_TXN_FAULT` environment variable read when the coordinator opens) fail or kill
//! the process with SIGKILL at one step of the protocol.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{ConnectionTrait, Statement};

use super::branch::{Branch, BranchState, Conn};
use super::databases::{Databases, Participant, TwoPhase};
use super::log::{self, Decision, FencedDecision, Written};
use super::protocol;
use super::xid::{Xid, MAX_PARTICIPANTS};
use super::TxnError;
use crate::config::DEFAULT_DATABASE;
use crate::store::{Dialect, Store};

/// The environment variable of the test fault hook (see the module documentation).
pub const FAULT_ENV: &str = "JOBU_TEST_TXN_FAULT";

/// A failure injected at one step of the commit protocol, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The commit fails (as if the process failed) right after the first branch prepared.
    FailAfterFirstPrepare,
    /// SIGKILL after every branch prepared, before the decision is logged.
    KillAfterPrepare,
    /// SIGKILL after the decision is logged, before the first commit.
    KillAfterDecision,
    /// SIGKILL after the first branch committed (the SQLite last resource, if any).
    KillAfterFirstCommit,
}

impl Fault {
    pub fn parse(text: &str) -> Option<Fault> {
        match text {
            "fail_after_first_prepare" => Some(Fault::FailAfterFirstPrepare),
            "kill_after_prepare" => Some(Fault::KillAfterPrepare),
            "kill_after_decision" => Some(Fault::KillAfterDecision),
            "kill_after_first_commit" => Some(Fault::KillAfterFirstCommit),
            _ => None,
        }
    }
}

/// The attempt a transaction belongs to: its decision is fenced by the owner token.
#[derive(Debug, Clone)]
pub struct Fence {
    pub execution_id: i64,
    pub attempt: u32,
    pub owner_token: String,
    pub worker_id: String,
}

/// The branches the closure works on.
#[derive(Debug)]
pub struct Tx {
    branches: Vec<Branch>,
    xid: Option<Xid>,
}

impl Tx {
    /// The branch of database `name` (one of the names given to [`Coordinator::run`]).
    pub fn db(&self, name: &str) -> Result<&Branch, TxnError> {
        self.branches
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                TxnError::Refused(format!(
                    "database `{name}` is not part of this transaction (it has {})",
                    self.names().join(", ")
                ))
            })
    }

    /// The participants, in the order given.
    pub fn names(&self) -> Vec<&str> {
        self.branches.iter().map(|b| b.name.as_str()).collect()
    }

    /// The transaction id (`None` for a transaction over one database).
    pub fn xid(&self) -> Option<String> {
        self.xid.as_ref().map(ToString::to_string)
    }
}

/// What the closure returns: a boxed future borrowing the [`Tx`].
pub type TxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TxnError>> + Send + 'a>>;

/// Runs transactions over the named databases of one process.
#[derive(Debug, Clone)]
pub struct Coordinator {
    /// jobu's own database: the decision log and the executions that fence it.
    store: Store,
    databases: Databases,
    /// This deployment's part of every transaction id.
    id: String,
    fault: Option<Fault>,
}

impl Coordinator {
    /// A coordinator for jobu's (migrated) database `store`; reads or creates its id.
    pub async fn open(store: Store, databases: Databases) -> Result<Coordinator, sea_orm::DbErr> {
        let id = log::coordinator_id(&store).await?;
        let fault = std::env::var(FAULT_ENV).ok().and_then(|f| Fault::parse(&f));
        if let Some(fault) = fault {
            tracing::warn!(fault = ?fault, "{FAULT_ENV} is set: transactions fail on purpose");
        }
        Ok(Coordinator {
            store,
            databases,
            id,
            fault,
        })
    }

    /// The coordinator with `fault` injected into every commit (tests only).
    pub fn with_fault(mut self, fault: Option<Fault>) -> Coordinator {
        self.fault = fault;
        self
    }

    /// The coordinator id in this deployment's transaction ids.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` over a branch of each database in `names` and commits all of them or none.
    ///
    /// ```ignore
    /// coordinator.run(&fence, &["billing", "ledger"], |tx| Box::pin(async move {
    ///     tx.db("billing")?.execute_unprepared("UPDATE ...").await?;
    ///     tx.db("ledger")?.execute_unprepared("INSERT ...").await?;
    ///     Ok(())
    /// })).await?;
    /// ```
    pub async fn run<T, F>(&self, fence: &Fence, names: &[&str], f: F) -> Result<T, TxnError>
    where
        T: Send,
        F: for<'a> FnOnce(&'a Tx) -> TxFuture<'a, T>,
    {
        let participants = self.plan(names)?;
        let xid =
            (participants.len() > 1).then(|| Xid::new(&self.id, fence.execution_id, fence.attempt));
        let mut tx = Tx {
            branches: Vec::with_capacity(participants.len()),
            xid: xid.clone(),
        };
        for (i, p) in participants.iter().enumerate() {
            let id = xid.as_ref().map(|x| x.branch(i));
            match begin(p, id).await {
                Ok(branch) => tx.branches.push(branch),
                Err(e) => {
                    self.abort(&mut tx, fence).await;
                    return Err(e);
                }
            }
        }
        let value = match f(&tx).await {
            Ok(v) => v,
            Err(e) => {
                self.abort(&mut tx, fence).await;
                return Err(e);
            }
        };
        if tx.branches.len() == 1 {
            self.commit_one(&mut tx, fence).await?;
        } else {
            self.commit_two_phase(&mut tx, fence).await?;
        }
        Ok(value)
    }

    /// The participants in commit order (the SQLite last resource at the end), or why the
    /// set cannot make one transaction.
    fn plan(&self, names: &[&str]) -> Result<Vec<Participant>, TxnError> {
        if names.is_empty() {
            return Err(TxnError::Refused(
                "a transaction needs at least one database".into(),
            ));
        }
        if names.len() > MAX_PARTICIPANTS {
            return Err(TxnError::Refused(format!(
                "a transaction spans at most {MAX_PARTICIPANTS} databases, got {}",
                names.len()
            )));
        }
        let mut out: Vec<Participant> = Vec::with_capacity(names.len());
        for name in names {
            if out.iter().any(|p| p.name == *name) {
                return Err(TxnError::Refused(format!(
                    "database `{name}` is named twice in one transaction"
                )));
            }
            let p = self
                .databases
                .get(name)
                .ok_or_else(|| TxnError::unknown(name, &self.databases))?;
            out.push(p.clone());
        }
        let sqlite: Vec<&str> = out
            .iter()
            .filter(|p| p.dialect() == Dialect::Sqlite)
            .map(|p| p.name.as_str())
            .collect();
        if sqlite.len() > 1 {
            return Err(TxnError::Refused(format!(
                "SQLite cannot prepare, so a transaction may include at most one SQLite \
                 database (committed last); got {}",
                sqlite.join(", ")
            )));
        }
        if out.len() > 1 {
            for p in &out {
                if let TwoPhase::Unavailable(why) = &p.two_phase {
                    return Err(TxnError::Refused(format!(
                        "database `{}` cannot take part in a transaction over several \
                         databases: {why}",
                        p.name
                    )));
                }
            }
        }
        out.sort_by_key(|p| p.dialect() == Dialect::Sqlite);
        Ok(out)
    }

    async fn commit_one(&self, tx: &mut Tx, fence: &Fence) -> Result<(), TxnError> {
        let branch = &mut tx.branches[0];
        // On jobu's own database the check runs inside the transaction, holding the row.
        let owner = if branch.name == DEFAULT_DATABASE {
            let dialect = branch.dialect;
            log::still_owner(
                &*branch,
                dialect,
                fence.execution_id,
                &fence.owner_token,
                true,
            )
            .await
        } else {
            log::still_owner(
                self.store.connection(),
                self.store.dialect(),
                fence.execution_id,
                &fence.owner_token,
                false,
            )
            .await
        };
        match owner {
            Ok(true) => {}
            Ok(false) => {
                self.abort(tx, fence).await;
                return Err(TxnError::Fenced(fence.execution_id));
            }
            Err(e) => {
                self.abort(tx, fence).await;
                return Err(TxnError::Log(e.to_string()));
            }
        }
        let branch = &mut tx.branches[0];
        let commit = protocol::commit_active(branch.dialect, None);
        match branch.protocol(&commit).await {
            Ok(()) => {
                branch.finish();
                Ok(())
            }
            Err(source) => {
                branch.discard();
                Err(TxnError::Participant {
                    database: branch.name.clone(),
                    source,
                })
            }
        }
    }

    async fn commit_two_phase(&self, tx: &mut Tx, fence: &Fence) -> Result<(), TxnError> {
        let Some(xid) = tx.xid.clone() else {
            return Err(TxnError::Refused("a two-phase commit needs an id".into()));
        };
        let xid_text = xid.to_string();
        let fault = self.fault;
        // Phase one.
        let mut prepared = 0;
        for i in 0..tx.branches.len() {
            let branch = &mut tx.branches[i];
            let Some(id) = branch.id.clone() else {
                continue;
            };
            if branch.dialect == Dialect::Sqlite {
                continue;
            }
            let statements = protocol::prepare(branch.dialect, &id);
            branch.state = BranchState::PrepareUnknown;
            if let Err(source) = branch.protocol(&statements).await {
                let database = branch.name.clone();
                tracing::warn!(xid = %xid_text, database = %database, error = %source, "prepare failed: rolling back everywhere");
                self.abort(tx, fence).await;
                return Err(TxnError::Participant { database, source });
            }
            branch.state = BranchState::Prepared;
            prepared += 1;
            if prepared == 1 && fault == Some(Fault::FailAfterFirstPrepare) {
                self.abort(tx, fence).await;
                return Err(TxnError::Aborted(
                    "test fault after the first prepare".into(),
                ));
            }
        }
        if fault == Some(Fault::KillAfterPrepare) {
            kill_self();
        }
        // The decision.
        let names: Vec<String> = tx.branches.iter().map(|b| b.name.clone()).collect();
        let last_resource = tx
            .branches
            .iter()
            .position(|b| b.dialect == Dialect::Sqlite);
        let decision = if last_resource.is_some() {
            Decision::LastResource
        } else {
            Decision::Commit
        };
        let written = log::decide_fenced(
            &self.store,
            &FencedDecision {
                xid: &xid_text,
                execution_id: fence.execution_id,
                attempt: fence.attempt,
                owner_token: &fence.owner_token,
                worker_id: &fence.worker_id,
                participants: &names,
                decision,
            },
        )
        .await;
        match written {
            Ok(Written::Decided) => {}
            Ok(Written::Fenced) => {
                tracing::warn!(xid = %xid_text, execution_id = fence.execution_id, attempt = fence.attempt, "the attempt lost its lease before the decision: rolling back everywhere");
                self.abort(tx, fence).await;
                return Err(TxnError::Fenced(fence.execution_id));
            }
            Ok(Written::Already(other)) => {
                tracing::warn!(xid = %xid_text, decision = ?other, "the transaction was decided by recovery first: rolling back");
                self.abort(tx, fence).await;
                return Err(TxnError::Aborted(
                    "recovery rolled the transaction back before its decision was logged".into(),
                ));
            }
            Err(e) => {
                // The insert may have committed without our hearing of it.
                if !self
                    .settle_unknown_decision(tx, fence, &xid, &names, decision, &e)
                    .await?
                {
                    return Err(TxnError::Log(e.to_string()));
                }
            }
        }
        tracing::debug!(xid = %xid_text, execution_id = fence.execution_id, attempt = fence.attempt, decision = decision.as_str(), "decision logged");
        if fault == Some(Fault::KillAfterDecision) {
            kill_self();
        }
        // The last resource commits with its record of the outcome: that commit decides.
        if let Some(i) = last_resource {
            if let Err(source) = commit_last_resource(&mut tx.branches[i], &xid_text).await {
                let database = tx.branches[i].name.clone();
                tracing::warn!(xid = %xid_text, database = %database, error = %source, "the last resource did not commit: rolling back everywhere");
                self.abort(tx, fence).await;
                return Err(TxnError::Participant { database, source });
            }
        }
        // Phase two.
        let mut left = 0;
        let mut committed = 0;
        if last_resource.is_some() {
            committed += 1;
            if fault == Some(Fault::KillAfterFirstCommit) {
                kill_self();
            }
        }
        for branch in tx.branches.iter_mut() {
            if branch.state != BranchState::Prepared {
                continue;
            }
            let Some(id) = branch.id.clone() else {
                continue;
            };
            let Some(sql) = protocol::commit_prepared(branch.dialect, &id) else {
                continue;
            };
            match branch.protocol(&[sql]).await {
                Ok(()) => branch.finish(),
                Err(e) if protocol::is_unknown_branch(branch.dialect, &e) => branch.finish(),
                Err(e) => {
                    left += 1;
                    tracing::warn!(xid = %xid_text, database = %branch.name, error = %e, "commit of a prepared branch failed: recovery commits it");
                    branch.state = BranchState::Finished;
                    if let Some(conn) = branch.conn.get_mut().take() {
                        conn.discard();
                    }
                }
            }
            committed += 1;
            if committed == 1 && fault == Some(Fault::KillAfterFirstCommit) {
                kill_self();
            }
        }
        if left == 0 {
            if let Err(e) = log::complete(&self.store, &xid_text).await {
                tracing::debug!(xid = %xid_text, error = %e, "cannot mark the transaction finished; recovery will");
            }
        }
        Ok(())
    }

    /// The decision write failed with an unknown outcome. Reads the log: a logged decision
    /// stands (`Ok(true)`: go on committing); none logged is made a rollback (`Ok(false)`
    /// after rolling back); when nothing can be known, the prepared branches are left to
    /// recovery and the attempt fails as in doubt.
    async fn settle_unknown_decision(
        &self,
        tx: &mut Tx,
        fence: &Fence,
        xid: &Xid,
        names: &[String],
        decision: Decision,
        error: &sea_orm::DbErr,
    ) -> Result<bool, TxnError> {
        let text = xid.to_string();
        if let Ok(Some(entry)) = log::entry(&self.store, &text).await {
            if entry.decision() == Some(decision) {
                return Ok(true);
            }
            self.abort(tx, fence).await;
            return Ok(false);
        }
        match log::decide(
            &self.store,
            xid,
            names,
            Decision::Rollback,
            &fence.worker_id,
        )
        .await
        {
            Ok(Some(Decision::Rollback)) => {
                self.abort(tx, fence).await;
                Ok(false)
            }
            Ok(Some(d)) if d == decision => Ok(true),
            _ => {
                for b in tx.branches.iter_mut() {
                    b.discard();
                }
                tracing::error!(xid = %text, error = %error, "the decision log cannot be reached: the prepared branches are left to recovery");
                Err(TxnError::InDoubt(format!(
                    "transaction {text}: the decision could not be logged ({error}); recovery \
                     resolves it"
                )))
            }
        }
    }

    /// Rolls back every branch; prepared ones that cannot be rolled back now get a logged
    /// rollback decision so recovery finishes them without waiting.
    async fn abort(&self, tx: &mut Tx, fence: &Fence) {
        let mut left = false;
        for branch in tx.branches.iter_mut() {
            match branch.state {
                BranchState::Finished => {}
                BranchState::Active => {
                    let rollback = protocol::rollback_active(branch.dialect, branch.id.as_deref());
                    match branch.protocol(&rollback).await {
                        Ok(()) => branch.finish(),
                        Err(_) => branch.discard(),
                    }
                }
                BranchState::Prepared | BranchState::PrepareUnknown => {
                    let Some(id) = branch.id.clone() else {
                        branch.discard();
                        continue;
                    };
                    let Some(sql) = protocol::rollback_prepared(branch.dialect, &id) else {
                        branch.discard();
                        continue;
                    };
                    if branch.state == BranchState::PrepareUnknown {
                        // Close the session first: a branch it never prepared dies with it.
                        if let Some(conn) = branch.conn.get_mut().take() {
                            conn.discard();
                        }
                    }
                    let on_branch = if branch.state == BranchState::Prepared {
                        branch.protocol(std::slice::from_ref(&sql)).await
                    } else {
                        Err(sea_orm::DbErr::Custom("prepare outcome unknown".into()))
                    };
                    let dialect = branch.dialect;
                    let done = match on_branch {
                        Ok(()) => true,
                        Err(e) if protocol::is_unknown_branch(dialect, &e) => true,
                        Err(_) => {
                            // A fresh session of the participant's pool.
                            match self.databases.get(&branch.name) {
                                Some(p) => {
                                    let stmt = Statement::from_string(dialect.backend(), sql);
                                    match p.connection().execute(stmt).await {
                                        Ok(_) => true,
                                        Err(e) => protocol::is_unknown_branch(dialect, &e),
                                    }
                                }
                                None => false,
                            }
                        }
                    };
                    if done && branch.state == BranchState::Prepared {
                        branch.finish();
                    } else {
                        // Unknown outcomes stay suspect: the prepare may still land.
                        left |= !done || branch.state == BranchState::PrepareUnknown;
                        branch.discard();
                    }
                }
            }
        }
        if let (true, Some(xid)) = (left, tx.xid.as_ref()) {
            let names: Vec<String> = tx.branches.iter().map(|b| b.name.clone()).collect();
            match log::decide(
                &self.store,
                xid,
                &names,
                Decision::Rollback,
                &fence.worker_id,
            )
            .await
            {
                Ok(d) => {
                    tracing::info!(xid = %xid, decision = ?d, "branches left prepared: recovery rolls them back")
                }
                Err(e) => {
                    tracing::warn!(xid = %xid, error = %e, "branches left prepared and no rollback logged: recovery rolls them back after its grace period")
                }
            }
        }
    }
}

/// Takes a connection and begins the branch.
async fn begin(p: &Participant, id: Option<String>) -> Result<Branch, TxnError> {
    let err = |source| TxnError::Participant {
        database: p.name.clone(),
        source,
    };
    let mut conn = Conn::acquire(p.connection(), p.dialect())
        .await
        .map_err(err)?;
    let sql = protocol::begin(p.dialect(), id.as_deref());
    if let Err(e) = conn.simple(&sql).await {
        conn.discard();
        return Err(err(e));
    }
    Ok(Branch {
        name: p.name.clone(),
        dialect: p.dialect(),
        id,
        conn: tokio::sync::Mutex::new(Some(conn)),
        state: BranchState::Active,
    })
}

/// Records the commit in the last resource's own transaction, then commits it.
async fn commit_last_resource(branch: &mut Branch, xid: &str) -> Result<(), sea_orm::DbErr> {
    let stmt = Statement::from_sql_and_values(
        branch.dialect.backend(),
        "INSERT INTO jobu_last_resource (xid, outcome) VALUES (?, 'commit')",
        [xid.into()],
    );
    branch.execute(stmt).await?;
    branch
        .protocol(&protocol::commit_active(branch.dialect, None))
        .await?;
    branch.finish();
    Ok(())
}

fn kill_self() {
    tracing::warn!("test fault: killing this process with SIGKILL");
    // SAFETY: kill(2) with our own pid and a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}
