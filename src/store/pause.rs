//! Pausing and resuming many crons at once (the admin API's bulk actions): one transaction
//! over a selection (ids, a handler's crons, or all), so a partial change never shows.
//!
//! A pause is what disabling one cron does, for each: `is_enabled` false with the note, the
//! instant and who, and the PENDING executions created ahead for fire times still to come
//! are cancelled (`unscheduled`) in the same transaction, so no fire time of the paused
//! period runs. The dispatchers lock crons by row (`SKIP LOCKED`) while they create a page,
//! so a page either committed before the pause (and its rows ahead are cancelled here) or
//! sees the cron disabled. A resume clears the pause and resets the dispatcher's marker, as
//! enabling one cron does: the cron fires from its next fire time on, and the paused period
//! is not caught up (the misfire policy is for fire times missed while no dispatcher ran).

use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};

use super::crons::cancel_unscheduled_in;
use super::dialect::{Dialect, Sql};
use super::{retry_transient, Store, StoreResult};

/// At most this many ids per statement.
const IDS_PER_STATEMENT: usize = 1000;

/// Which crons a bulk action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<i64>),
    Handler(String),
    All,
}

/// What a bulk pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bulk {
    Done {
        /// The crons it paused (resumed), by id.
        changed: Vec<i64>,
        /// Selected crons that were paused (enabled) already.
        unchanged: Vec<i64>,
    },
    /// These ids name no cron; nothing changed.
    Unknown(Vec<i64>),
}

impl Store {
    /// Pauses the selected crons that are enabled, with `note`, recorded as paused by
    /// `actor` now.
    pub async fn pause_crons(
        &self,
        selection: &Selection,
        note: Option<&str>,
        actor: &str,
    ) -> StoreResult<Bulk> {
        self.bulk(selection, Change::Pause { note, actor }).await
    }

    /// Enables the selected crons that are paused, clearing their pause and their marker.
    pub async fn resume_crons(&self, selection: &Selection) -> StoreResult<Bulk> {
        self.bulk(selection, Change::Resume).await
    }

    async fn bulk(&self, selection: &Selection, change: Change<'_>) -> StoreResult<Bulk> {
        let d = self.dialect;
        let run = || async {
            let txn = self.db.begin().await?;
            if d == Dialect::Sqlite {
                // Take SQLite's write lock first, so the read below cannot go stale.
                let mut q = Sql::new(d);
                q.push("UPDATE cron_jobs SET id = id");
                push_selection(&mut q, selection);
                txn.execute(q.build()).await?;
            }
            let mut q = Sql::new(d);
            q.push("SELECT id, is_enabled FROM cron_jobs");
            push_selection(&mut q, selection);
            q.push(" ORDER BY id");
            if d != Dialect::Sqlite {
                q.push(" FOR UPDATE");
            }
            let mut found = Vec::new();
            for row in txn.query_all(q.build()).await? {
                found.push((
                    row.try_get_by_index::<i64>(0)?,
                    row.try_get_by_index::<bool>(1)?,
                ));
            }
            if let Selection::Ids(ids) = selection {
                let mut missing: Vec<i64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !found.iter().any(|(f, _)| f == id))
                    .collect();
                if !missing.is_empty() {
                    missing.sort_unstable();
                    missing.dedup();
                    txn.rollback().await?;
                    return Ok::<_, DbErr>(Bulk::Unknown(missing));
                }
            }
            let wants_enabled = matches!(change, Change::Resume);
            let (unchanged, changed): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|(_, enabled)| *enabled == wants_enabled);
            let changed: Vec<i64> = changed.into_iter().map(|(id, _)| id).collect();
            let unchanged: Vec<i64> = unchanged.into_iter().map(|(id, _)| id).collect();
            for chunk in changed.chunks(IDS_PER_STATEMENT) {
                let mut q = Sql::new(d);
                match change {
                    Change::Pause { note, actor } => q
                        .push("UPDATE cron_jobs SET is_enabled = ")
                        .bind(false)
                        .push(", pause_note = ")
                        .bind(note.map(str::to_string))
                        .push(", paused_by = ")
                        .bind(actor.to_string())
                        .push(", paused_at = ")
                        .now(),
                    Change::Resume => q
                        .push("UPDATE cron_jobs SET is_enabled = ")
                        .bind(true)
                        .push(
                            ", pause_note = NULL, paused_by = NULL, paused_at = NULL, \
                             next_fire_time = NULL",
                        ),
                };
                q.push(", updated_at = ")
                    .now()
                    .push(" WHERE id IN ")
                    .bind_list(chunk);
                txn.execute(q.build()).await?;
            }
            if !wants_enabled && !changed.is_empty() {
                cancel_unscheduled_in(&txn, d, None).await?;
            }
            txn.commit().await?;
            Ok(Bulk::Done { changed, unchanged })
        };
        Ok(retry_transient(run).await?)
    }
}

#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    Pause {
        note: Option<&'a str>,
        actor: &'a str,
    },
    Resume,
}

fn push_selection(q: &mut Sql, selection: &Selection) {
    match selection {
        Selection::Ids(ids) => {
            q.push(" WHERE id IN ").bind_list(ids);
        }
        Selection::Handler(name) => {
            q.push(" WHERE handler_name = ").bind(name.clone());
        }
        Selection::All => {}
    }
}
