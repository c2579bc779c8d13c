//! Fire times computed by croniter 6 for croniter's day forms (`L`, `nW`,
//! `D#n`, `LD`), their combinations with the other day field, lists of
//! expressions, and daylight-saving days in America/New_York and
//! Europe/Berlin. `testdata/croniter_table.py` generates
//! `testdata/croniter_cases.rs` and documents the two jobu rules it applies
//! on top of croniter's answers.

use chrono::{DateTime, SecondsFormat, Utc};

use super::Schedule;

include!("testdata/croniter_cases.rs");

#[test]
fn croniter_known_answers() {
    let mut failures = Vec::new();
    for (text, zone, after, want) in CRONITER_CASES {
        let schedule = Schedule::parse(text, zone).unwrap_or_else(|e| panic!("{e}"));
        let after: DateTime<Utc> = after.parse().expect(after);
        let got: Vec<String> = schedule
            .iter_after(after)
            .take(want.len())
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .collect();
        if got != *want {
            failures.push(format!(
                "{text} in {zone} after {after}:\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
