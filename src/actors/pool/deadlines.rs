//! The pool's attempt deadlines in one ordered queue behind one armed timer: each running
//! attempt has a timeout (`timeout_seconds`) and a lease deadline (see `leases`). Two timer
//! tasks per attempt, spawned and aborted, cost more than a no-op attempt itself; the queue
//! costs two ordered-set inserts and removals, and a timer is re-armed only when a deadline
//! earlier than the armed one arrives.
//!
//! The timer sends [`PoolMsg::DeadlinesDue`]; the pool then takes [`Deadlines::due`] and acts
//! on each. A message from a timer that was re-armed meanwhile finds nothing due: harmless.

use std::collections::BTreeSet;

use ractor::ActorRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::PoolMsg;
use crate::actors::send_later;

/// Which deadline of an attempt came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    /// `timeout_seconds` reached.
    Timeout,
    /// The lease deadline as it was armed; a renewal since may have moved it.
    Lease,
}

#[derive(Default)]
pub(super) struct Deadlines {
    queue: BTreeSet<(Instant, i64, Deadline)>,
    armed: Option<(Instant, JoinHandle<()>)>,
}

impl Deadlines {
    /// Adds `kind` of execution `id` at `at`.
    pub fn insert(&mut self, pool: &ActorRef<PoolMsg>, at: Instant, id: i64, kind: Deadline) {
        self.queue.insert((at, id, kind));
        self.arm(pool);
    }

    /// Drops a deadline that no longer matters: its attempt ended. (A renewal leaves the
    /// lease entry in place; `leases::deadline_reached` re-queues it at the moved deadline
    /// when it comes.) The armed timer stays: firing early finds nothing due and re-arms.
    pub fn remove(&mut self, at: Instant, id: i64, kind: Deadline) {
        self.queue.remove(&(at, id, kind));
    }

    /// The deadlines that have come, in order, removed from the queue; the timer is re-armed
    /// for the next one.
    pub fn due(&mut self, pool: &ActorRef<PoolMsg>) -> Vec<(i64, Deadline)> {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(&(at, id, kind)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            due.push((id, kind));
        }
        self.arm(pool);
        due
    }

    /// Stops the timer (the pool is stopping).
    pub fn clear(&mut self) {
        self.queue.clear();
        if let Some((_, timer)) = self.armed.take() {
            timer.abort();
        }
    }

    /// Makes sure a timer fires no later than the earliest deadline.
    fn arm(&mut self, pool: &ActorRef<PoolMsg>) {
        let Some(&(first, _, _)) = self.queue.first() else {
            return;
        };
        if let Some((at, timer)) = &self.armed {
            if *at <= first && !timer.is_finished() {
                return;
            }
        }
        if let Some((_, timer)) = self.armed.take() {
            timer.abort();
        }
        let delay = first.saturating_duration_since(Instant::now());
        self.armed = Some((first, send_later(pool, delay, PoolMsg::DeadlinesDue)));
    }
}
