//! Transaction ids. A transaction over several databases is named
//! `jobu:<coordinator>:<execution_id>:<attempt>:<random>` (the key of its decision-log row),
//! and its branch on participant number `i` (the position in the transaction's participant
//! list) is that name followed by `:<i>`: the PostgreSQL `gid` and the MySQL/MariaDB `gtrid`.
//! An operator can tell jobu's prepared transactions from other XA users' by the prefix, and
//! find the execution and attempt that own one. `<coordinator>` (8 hex digits, kept in jobu's
//! database, see [`super::log::coordinator_id`]) tells apart the deployments of jobu that
//! share a participant server, so one's recovery never touches another's branches. The
//! longest branch id is 60 bytes, within MySQL's 64-byte gtrid and PostgreSQL's 200-byte gid.

use std::fmt;

/// What every id jobu gives a transaction starts with.
pub const PREFIX: &str = "jobu:";
/// MySQL/MariaDB XA `formatID` of jobu's branches (ASCII "jobu").
pub const XA_FORMAT_ID: i64 = 0x6a6f_6275;
/// Most participants of one transaction (branch numbers are 0 to 15).
pub const MAX_PARTICIPANTS: usize = 16;

/// A transaction's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid {
    /// The jobu deployment (its database) whose decision log holds the decision.
    pub coordinator: String,
    pub execution_id: i64,
    pub attempt: u32,
    /// 12 hex digits, so two transactions of one attempt differ.
    pub nonce: String,
}

/// Hex digits of a coordinator id and of a nonce.
pub const COORDINATOR_DIGITS: usize = 8;
const NONCE_DIGITS: usize = 12;

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh coordinator id.
pub fn new_coordinator_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl Xid {
    pub fn new(coordinator: &str, execution_id: i64, attempt: u32) -> Xid {
        Xid {
            coordinator: coordinator.to_string(),
            execution_id,
            attempt,
            nonce: format!("{:012x}", rand::random::<u64>() >> 16),
        }
    }

    /// The id of the branch on participant `index`.
    pub fn branch(&self, index: usize) -> String {
        format!("{self}:{index}")
    }

    /// Parses a transaction id (`jobu:<coordinator>:<execution>:<attempt>:<nonce>`).
    pub fn parse(text: &str) -> Option<Xid> {
        let rest = text.strip_prefix(PREFIX)?;
        let mut parts = rest.split(':');
        let coordinator = parts.next()?;
        let execution_id = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        if !is_hex(coordinator, COORDINATOR_DIGITS)
            || !is_hex(nonce, NONCE_DIGITS)
            || parts.next().is_some()
        {
            return None;
        }
        Some(Xid {
            coordinator: coordinator.to_string(),
            execution_id,
            attempt,
            nonce: nonce.to_string(),
        })
    }

    /// Parses a branch id into its transaction and branch number; `None` for ids that are
    /// not jobu's.
    pub fn parse_branch(text: &str) -> Option<(Xid, usize)> {
        let (xid, index) = text.rsplit_once(':')?;
        let index: usize = index.parse().ok()?;
        if index >= MAX_PARTICIPANTS {
            return None;
        }
        Some((Xid::parse(xid)?, index))
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}:{}:{}",
            self.coordinator, self.execution_id, self.attempt, self.nonce
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fits_the_xa_limit() {
        let xid = Xid::new("0123abcd", i64::MAX, u32::MAX);
        let branch = xid.branch(MAX_PARTICIPANTS - 1);
        assert!(branch.len() <= 64, "{branch} is {} bytes", branch.len());
        assert_eq!(Xid::parse_branch(&branch), Some((xid.clone(), 15)));
        assert_eq!(Xid::parse(&xid.to_string()), Some(xid));
    }

    #[test]
    fn parses_a_branch() {
        let (xid, i) = Xid::parse_branch("jobu:0123abcd:7:2:0123456789ab:1").expect("jobu's");
        assert_eq!(
            (xid.coordinator.as_str(), xid.execution_id, xid.attempt, i),
            ("0123abcd", 7, 2, 1)
        );
    }

    #[test]
    fn refuses_other_ids() {
        for other in [
            "",
            "jobu:0123abcd:1:1:abc:0",
            "other:0123abcd:1:1:0123456789ab:0",
            "jobu:0123abcd:x:1:0123456789ab:0",
            "jobu:0123abc:1:1:0123456789ab:0",
            "jobu:0123abcd:1:1:0123456789ab:16",
            "jobu:0123abcd:1:1:0123456789ab:0:0",
        ] {
            assert_eq!(Xid::parse_branch(other), None, "{other}");
        }
    }
}
