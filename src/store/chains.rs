//! Chains as a cron sets them: `on_success` and `on_failure` name the crons to run once
//! after each execution of this one ends that way. What is saved is checked here, under
//! the locks of the crons it links, so two edits racing cannot close a loop between them:
//! every target must exist, and following the links from a target must never lead back.
//! (Starting the chained executions is in `chain_start`.)

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use super::dialect::{Dialect, Sql};
use super::{query_ids, StoreError};

/// At most this many crons in one list.
pub const MAX_CHAIN_TARGETS: usize = 32;

/// A cron's chain list as stored (a JSON array of ids); malformed values read as empty.
pub fn stored_ids(value: Option<&serde_json::Value>) -> Vec<i64> {
    value
        .and_then(|v| v.as_array())
        .map(|items| items.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default()
}

/// The stored form of a list: `None` for an empty one.
pub(crate) fn ids_json(ids: &[i64]) -> Option<serde_json::Value> {
    (!ids.is_empty()).then(|| serde_json::json!(ids))
}

/// The lists as given, without repeats, in order; too long a list is refused.
pub(crate) fn normalise(field: &'static str, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    let mut seen = BTreeSet::new();
    let out: Vec<i64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    if out.len() > MAX_CHAIN_TARGETS {
        return Err(rejected(
            field,
            "too_many_chained",
            format!(
                "{field} names {} crons; at most {MAX_CHAIN_TARGETS}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn rejected(field: &'static str, error: &'static str, message: String) -> StoreError {
    StoreError::Rejected {
        field,
        error,
        message,
    }
}

#[derive(FromQueryResult)]
struct Link {
    id: i64,
    on_success: Option<serde_json::Value>,
    on_failure: Option<serde_json::Value>,
}

/// Checks the chains `cron` (`None`: a cron not inserted yet, which nothing can name) is
/// about to get, in the transaction `db` that saves them. The cron and its targets are
/// locked first (by id, so racing edits queue instead of deadlocking), then the whole graph
/// of crons with chains is read. Refused: an unknown target, the cron itself, a loop.
pub(crate) async fn check<C: ConnectionTrait>(
    db: &C,
    dialect: Dialect,
    cron: Option<i64>,
    on_success: &[i64],
    on_failure: &[i64],
) -> Result<Result<(), StoreError>, DbErr> {
    let targets: BTreeSet<i64> = on_success.iter().chain(on_failure).copied().collect();
    if targets.is_empty() {
        return Ok(Ok(()));
    }
    let field_of = |id: i64| {
        if on_success.contains(&id) {
            "on_success"
        } else {
            "on_failure"
        }
    };
    if let Some(me) = cron {
        if targets.contains(&me) {
            return Ok(Err(rejected(
                field_of(me),
                "chain_cycle",
                format!("cron {me} cannot chain to itself (the cycle {me} -> {me})"),
            )));
        }
    }
    let mut locked: Vec<i64> = targets.iter().copied().chain(cron).collect();
    locked.sort_unstable();
    let mut q = Sql::new(dialect);
    q.push("SELECT id FROM cron_jobs WHERE id IN ")
        .bind_list(&locked)
        .push(" ORDER BY id");
    if dialect != Dialect::Sqlite {
        q.push(" FOR UPDATE");
    }
    let found: BTreeSet<i64> = query_ids(db, q.build()).await?;
    if let Some(missing) = targets.iter().find(|id| !found.contains(id)) {
        return Ok(Err(rejected(
            field_of(*missing),
            "unknown_cron",
            format!(
                "{} names cron {missing}, which does not exist",
                field_of(*missing)
            ),
        )));
    }
    let Some(me) = cron else {
        return Ok(Ok(()));
    };
    let mut q = Sql::new(dialect);
    q.push("SELECT id, on_success, on_failure FROM cron_jobs WHERE chains_since IS NOT NULL");
    let mut graph: HashMap<i64, Vec<i64>> = Link::find_by_statement(q.build())
        .all(db)
        .await?
        .into_iter()
        .map(|l| {
            let mut next = stored_ids(l.on_success.as_ref());
            next.extend(stored_ids(l.on_failure.as_ref()));
            (l.id, next)
        })
        .collect();
    graph.insert(me, targets.iter().copied().collect());
    if let Some(path) = path_back(&graph, me) {
        let cycle = path
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(" -> ");
        return Ok(Err(rejected(
            field_of(path[1]),
            "chain_cycle",
            format!("the chains would loop: {cycle}"),
        )));
    }
    Ok(Ok(()))
}

/// A path `start -> ... -> start` through `graph`, if there is one (depth first, each cron
/// visited once).
fn path_back(graph: &HashMap<i64, Vec<i64>>, start: i64) -> Option<Vec<i64>> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(i64, usize)> = vec![(start, 0)];
    while let Some((node, next)) = stack.last().copied() {
        let children = graph.get(&node).map(Vec::as_slice).unwrap_or(&[]);
        let Some(&child) = children.get(next) else {
            stack.pop();
            continue;
        };
        if let Some(top) = stack.last_mut() {
            top.1 += 1;
        }
        if child == start {
            let mut path: Vec<i64> = stack.iter().map(|(n, _)| *n).collect();
            path.push(start);
            return Some(path);
        }
        if seen.insert(child) {
            stack.push((child, 0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_found_with_its_path() {
        let graph: HashMap<i64, Vec<i64>> =
            [(1, vec![2]), (2, vec![3, 4]), (4, vec![1]), (3, vec![])]
                .into_iter()
                .collect();
        assert_eq!(path_back(&graph, 1), Some(vec![1, 2, 4, 1]));
        assert_eq!(path_back(&graph, 3), None);
        let tree: HashMap<i64, Vec<i64>> = [(1, vec![2, 3]), (2, vec![3])].into_iter().collect();
        assert_eq!(path_back(&tree, 1), None);
    }

    #[test]
    fn lists_lose_repeats_and_are_capped() {
        assert_eq!(normalise("on_success", &[3, 1, 3]).unwrap(), vec![3, 1]);
        let long: Vec<i64> = (0..33).collect();
        assert!(normalise("on_success", &long).is_err());
        assert_eq!(
            stored_ids(Some(&serde_json::json!([1, "x", 2]))),
            vec![1, 2]
        );
        assert_eq!(ids_json(&[]), None);
    }
}
