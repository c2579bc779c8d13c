//! Wake-ups: when the store makes executions due now (an API run, a trigger, a retry or
//! release by an operator, a rescue, a bulk insert), idle workers claim at once instead of
//! at their next poll.
//!
//! - In one process: every clone of a [`Store`] shares one signal ([`Wakeups`]); worker
//!   pools wait on it, on every backend.
//! - Across processes, on PostgreSQL: the store also sends `NOTIFY jobu_due` after the
//!   write, and each process that runs a pool LISTENs on one connection of its own
//!   ([`Store::listen_for_due`]), pinged every [`PING_INTERVAL`] and reconnected with
//!   backoff; after a reconnect it wakes its pools once, since notifications sent while it
//!   was away are lost. Off with `worker.notify: false` (PgBouncer in transaction mode
//!   cannot LISTEN), leaving polling as the only mode, as on MySQL and SQLite.
//!
//! A wake-up only makes pools claim sooner: polling (`worker.poll_interval_seconds`) stays
//! as the fallback, so a lost notification delays work by at most one poll interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use tokio::sync::watch;

use super::dialect::Dialect;
use super::Store;

/// The PostgreSQL channel jobu notifies and listens on.
pub const CHANNEL: &str = "jobu_due";
/// How often an idle listener checks that its connection still answers.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Longest pause between two tries to (re)connect the listener.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Work due within this long of now is announced; later work is found by the pools' own
/// timers (they sleep until the earliest `run_at` they saw, at most one poll interval).
const DUE_SOON: chrono::Duration = chrono::Duration::seconds(5);

/// The in-process signal and whether to notify other processes.
#[derive(Debug)]
pub struct Wakeups {
    tx: watch::Sender<u64>,
    notify: AtomicBool,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            tx: watch::channel(0).0,
            notify: AtomicBool::new(true),
        }
    }
}

impl Wakeups {
    /// Wakes this process's pools.
    pub fn wake(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every wake-up from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

impl Store {
    /// The signal this store (and every clone of it) raises when work becomes due.
    pub fn wakeups(&self) -> &Arc<Wakeups> {
        &self.wakeups
    }

    /// Makes this store raise (and its pools wait on) `other`'s signal, as if it were a
    /// clone of it: for a second pool of one process opened apart from the first.
    pub(crate) fn share_wakeups_with(&mut self, other: &Store) {
        self.wakeups = other.wakeups.clone();
    }

    /// Whether this store tells other processes through PostgreSQL `NOTIFY`
    /// (`worker.notify`; default true). Has no effect on other backends.
    pub fn set_notify(&self, on: bool) {
        self.wakeups.notify.store(on, Ordering::Relaxed);
    }

    fn notifies(&self) -> bool {
        self.dialect == Dialect::Postgres && self.wakeups.notify.load(Ordering::Relaxed)
    }

    /// Announces work due at `run_at` (or earlier): wakes this process's pools and, on
    /// PostgreSQL, the others'. Best effort: a failed NOTIFY is logged at debug level and
    /// left to polling.
    pub(crate) async fn announce_due(&self, run_at: DateTime<Utc>) {
        if run_at > Utc::now() + DUE_SOON {
            return;
        }
        self.wakeups.wake();
        if self.notifies() {
            let sql = format!("NOTIFY {CHANNEL}");
            if let Err(e) = self.db.execute_unprepared(&sql).await {
                tracing::debug!(error = %e, "NOTIFY failed; other workers find the work at their next poll");
            }
        }
    }

    /// Listens for other processes' announcements and raises this process's signal for
    /// each, until the store's pool closes. Does nothing unless the store notifies
    /// (PostgreSQL with `worker.notify`). Run it in a task of its own.
    pub async fn listen_for_due(&self) {
        if !self.notifies() {
            return;
        }
        use sea_orm::sqlx::postgres::PgListener;
        let pool = self.db.get_postgres_connection_pool().clone();
        let mut failures = 0u32;
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => l,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "cannot LISTEN for due work; polling meanwhile");
                        pause(failures).await;
                        continue;
                    }
                },
                Err(e) if pool.is_closed() => {
                    tracing::debug!(error = %e, "the store closed; the listener stops");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "cannot connect the listener for due work; polling meanwhile");
                    pause(failures).await;
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!("listening for due work again");
                // Announcements sent while the listener was away are lost.
                self.wakeups.wake();
            }
            failures = 0;
            loop {
                match tokio::time::timeout(PING_INTERVAL, listener.try_recv()).await {
                    Ok(Ok(Some(_))) => self.wakeups.wake(),
                    Ok(Ok(None)) => {
                        // The connection dropped; the listener reconnects on the next call.
                        self.wakeups.wake();
                    }
                    Ok(Err(e)) => {
                        if pool.is_closed() {
                            return;
                        }
                        failures += 1;
                        tracing::warn!(error = %e, "the listener for due work failed; reconnecting");
                        break;
                    }
                    Err(_) => {
                        // Quiet for a while: make sure the connection still answers (a cut
                        // network leaves it silent, not closed).
                        let ping = sea_orm::sqlx::query("SELECT 1").execute(&mut listener);
                        match tokio::time::timeout(PING_INTERVAL, ping).await {
                            Ok(Ok(_)) => {}
                            _ => {
                                if pool.is_closed() {
                                    return;
                                }
                                failures += 1;
                                tracing::warn!(
                                    "the listener for due work does not answer; reconnecting"
                                );
                                break;
                            }
                        }
                    }
                }
            }
            pause(failures).await;
        }
    }
}

async fn pause(failures: u32) {
    let delay = crate::actors::backoff(0.5, RECONNECT_MAX.as_secs_f64(), failures, 0.2);
    tokio::time::sleep(delay).await;
}
