//! The few SQL differences between PostgreSQL, MySQL/MariaDB and SQLite that the protocol
//! files need: placeholders, the database clock, clock arithmetic and error classification.
//! Protocol SQL is written once against these helpers so the three dialects cannot drift.

use sea_orm::{DatabaseBackend, DbErr, RuntimeErr, Statement, Value};

use crate::entities::job_execution::Status;

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    pub fn of(backend: DatabaseBackend) -> Dialect {
        match backend {
            DatabaseBackend::Postgres => Dialect::Postgres,
            DatabaseBackend::MySql => Dialect::MySql,
            DatabaseBackend::Sqlite => Dialect::Sqlite,
        }
    }

    pub fn backend(self) -> DatabaseBackend {
        match self {
            Dialect::Postgres => DatabaseBackend::Postgres,
            Dialect::MySql => DatabaseBackend::MySql,
            Dialect::Sqlite => DatabaseBackend::Sqlite,
        }
    }

    /// The database clock, in the representation the instant columns use.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "now()",
            Dialect::MySql => "UTC_TIMESTAMP(6)",
            // Same text shape sqlx writes for DateTime<Utc>, so comparisons order correctly.
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
        }
    }

    /// `IS NOT DISTINCT FROM`: equality that treats two NULLs as equal.
    pub fn null_safe_eq(self) -> &'static str {
        match self {
            Dialect::Postgres => "IS NOT DISTINCT FROM",
            Dialect::MySql => "<=>",
            Dialect::Sqlite => "IS",
        }
    }

    /// `value` as this dialect must receive it. sqlx sends DateTime<Utc> to MySQL as
    /// TIMESTAMP, which ends in 2038 (MariaDB turns a later value into NULL); a naive UTC
    /// value binds as DATETIME.
    pub fn value(self, value: Value) -> Value {
        match (self, value) {
            (Dialect::MySql, Value::ChronoDateTimeUtc(t)) => {
                Value::ChronoDateTime(t.map(|t| Box::new(t.naive_utc())))
            }
            (_, v) => v,
        }
    }

    /// Put before a column in a WHERE term that must not pick the index: SQLite's unary `+`
    /// keeps it from reaching rows through a status index (scanning every RUNNING or PENDING
    /// row) when the statement names them by primary key. Nothing elsewhere.
    pub fn no_index(self) -> &'static str {
        match self {
            Dialect::Sqlite => "+",
            Dialect::Postgres | Dialect::MySql => "",
        }
    }

    /// Row locks that skip rows other transactions hold (SQLite serialises writers instead).
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }
}

/// `Ok` when a MySQL or MariaDB server (its `VERSION()`) supports `FOR UPDATE SKIP LOCKED`:
/// MySQL 8.0.1+, MariaDB 10.6+. The message of `Err` tells the operator what to run instead.
pub fn check_skip_locked_support(version: &str) -> Result<(), String> {
    let lower = version.to_ascii_lowercase();
    let mariadb = lower.contains("mariadb");
    // Old MariaDB servers prefix the version with "5.5.5-" for replication clients.
    let numbers = if mariadb {
        lower.strip_prefix("5.5.5-").unwrap_or(&lower)
    } else {
        &lower
    };
    let mut parts = numbers
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    let (name, needed) = if mariadb {
        ("MariaDB", (10, 6, 0))
    } else {
        ("MySQL", (8, 0, 1))
    };
    if found >= needed {
        Ok(())
    } else {
        Err(format!(
            "{name} {version} does not support SELECT ... FOR UPDATE SKIP LOCKED, which jobu's \
             claim protocol needs: use MariaDB 10.6 or later, or MySQL 8.0 or later"
        ))
    }
}

/// A SQL statement built with dialect-correct placeholders.
#[derive(Debug)]
pub struct Sql {
    dialect: Dialect,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            values: Vec::new(),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Appends literal SQL.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        let value = self.dialect.value(value.into());
        self.values.push(value);
        match self.dialect {
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            Dialect::MySql | Dialect::Sqlite => self.text.push('?'),
        }
        self
    }

    /// Appends `(p1, p2, ...)` bound to `values`; callers must not pass an empty list.
    pub fn bind_list<V: Into<Value> + Clone>(&mut self, values: &[V]) -> &mut Self {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v.clone());
        }
        self.push(")")
    }

    /// Appends a status as a SQL literal, not a placeholder: the PENDING and RUNNING indexes
    /// are partial (`WHERE status = 'PENDING'`), and a planner uses a partial index only when
    /// it can see the predicate in the query's text (a bound value is unknown to PostgreSQL's
    /// generic plans and to SQLite's planner). Statuses are a closed set of plain words.
    pub fn status(&mut self, status: Status) -> &mut Self {
        self.push("'").push(status.as_str()).push("'")
    }

    /// Appends `('A', 'B', ...)` of status literals (see [`Sql::status`]); callers must not
    /// pass an empty list.
    pub fn statuses(&mut self, statuses: &[Status]) -> &mut Self {
        self.push("(");
        for (i, s) in statuses.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.status(*s);
        }
        self.push(")")
    }

    /// Appends `(id, owner_token) IN (...)` over `pairs`, the fence of a batch of attempts;
    /// callers must not pass an empty list. SQLite takes row values from `VALUES` only.
    pub fn id_token_in(&mut self, pairs: &[(i64, String)]) -> &mut Self {
        self.push("(id, owner_token) IN (");
        if self.dialect == Dialect::Sqlite {
            self.push("VALUES ");
        }
        for (i, (id, token)) in pairs.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(")
                .bind(*id)
                .push(", ")
                .bind(token.as_str())
                .push(")");
        }
        self.push(")")
    }

    /// Appends the database clock.
    pub fn now(&mut self) -> &mut Self {
        let now = self.dialect.now();
        self.push(now)
    }

    /// Appends the database clock plus `seconds` (may be fractional or negative).
    pub fn now_plus(&mut self, seconds: f64) -> &mut Self {
        match self.dialect {
            Dialect::Postgres => {
                self.push("(now() + ");
                self.bind(seconds);
                self.push(" * interval '1 second')")
            }
            Dialect::MySql => {
                self.push("TIMESTAMPADD(MICROSECOND, ");
                self.bind((seconds * 1_000_000.0).round() as i64);
                self.push(", UTC_TIMESTAMP(6))")
            }
            Dialect::Sqlite => {
                self.push("strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', ");
                self.bind(format!("{seconds:+.3} seconds"));
                self.push(")")
            }
        }
    }

    /// Appends a value that a batched statement may set differently per row (see [`Arg`]).
    pub fn arg(&mut self, arg: &Arg) -> &mut Self {
        match arg {
            Arg::Value(v) => self.bind(v.clone()),
            Arg::Column(c) => self.push(c),
            Arg::ById(pairs) => {
                self.push("CASE id");
                for (id, v) in pairs {
                    self.push(" WHEN ").bind(*id).push(" THEN ").bind(v.clone());
                }
                self.push(" END")
            }
        }
    }

    /// Appends the database clock plus `seconds`, which may differ per row.
    pub fn now_plus_arg(&mut self, seconds: &Arg) -> &mut Self {
        if let Arg::Value(Value::Double(Some(s))) = seconds {
            return self.now_plus(*s);
        }
        match self.dialect {
            Dialect::Postgres => self
                .push("(now() + (")
                .arg(seconds)
                .push(") * interval '1 second')"),
            Dialect::MySql => self
                .push("TIMESTAMPADD(MICROSECOND, ROUND((")
                .arg(seconds)
                .push(") * 1000000), UTC_TIMESTAMP(6))"),
            Dialect::Sqlite => self
                .push("strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', printf('%+.3f seconds', ")
                .arg(seconds)
                .push("))"),
        }
    }

    pub fn build(self) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), self.text, self.values)
    }
}

/// A value set by a statement that may end many attempts at once: the same for every row,
/// a column of the batch's row source (PostgreSQL and SQLite join the batch as a table), or
/// `CASE id WHEN ... END` (MySQL, whose multi-table UPDATE does not promise the left-to-right
/// SET order the retry rule relies on, so the batch stays a single-table UPDATE there).
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Value(Value),
    Column(&'a str),
    ById(Vec<(i64, Value)>),
}

impl<'a> Arg<'a> {
    pub fn value(v: impl Into<Value>) -> Arg<'a> {
        Arg::Value(v.into())
    }
}

/// Errors worth retrying as they are: deadlocks, lock timeouts, serialization failures and
/// a busy SQLite file.
pub fn is_transient(err: &DbErr) -> bool {
    let db_err = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    let Some(e) = db_err.as_database_error() else {
        return false;
    };
    let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
    if let Some(my) = e.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>() {
        // 1213 deadlock, 1205 lock wait timeout
        return matches!(my.number(), 1213 | 1205);
    }
    // PostgreSQL: serialization failure, deadlock. SQLite: BUSY (5), LOCKED (6) and their
    // extended codes (BUSY_SNAPSHOT = 517, ...), whose low byte is the primary code.
    matches!(code.as_str(), "40001" | "40P01")
        || code
            .parse::<i32>()
            .map(|c| matches!(c & 0xff, 5 | 6))
            .unwrap_or(false)
}

/// Whether `err` is a unique-key violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        for (dialect, expected) in [
            (Dialect::Postgres, "a = $1 AND b IN ($2, $3)"),
            (Dialect::MySql, "a = ? AND b IN (?, ?)"),
            (Dialect::Sqlite, "a = ? AND b IN (?, ?)"),
        ] {
            let mut q = Sql::new(dialect);
            q.push("a = ").bind(1).push(" AND b IN ").bind_list(&[2, 3]);
            assert_eq!(q.build().sql, expected);
        }
    }

    #[test]
    fn id_token_pairs_follow_the_dialect() {
        let pairs = [(1, "a".to_string()), (2, "b".to_string())];
        for (dialect, expected) in [
            (
                Dialect::Postgres,
                "(id, owner_token) IN (($1, $2), ($3, $4))",
            ),
            (Dialect::MySql, "(id, owner_token) IN ((?, ?), (?, ?))"),
            (
                Dialect::Sqlite,
                "(id, owner_token) IN (VALUES (?, ?), (?, ?))",
            ),
        ] {
            let mut q = Sql::new(dialect);
            q.id_token_in(&pairs);
            assert_eq!(q.build().sql, expected);
        }
    }

    #[test]
    fn skip_locked_needs_mysql_8_or_mariadb_10_6() {
        for ok in [
            "10.11.19-MariaDB-0+deb12u1",
            "10.6.0-MariaDB",
            "5.5.5-10.6.12-MariaDB-log",
            "11.4.2-MariaDB",
            "8.0.35",
            "8.0.1-log",
            "8.4.0",
            "9.1.0",
        ] {
            assert!(check_skip_locked_support(ok).is_ok(), "{ok}");
        }
        for old in [
            "10.5.22-MariaDB",
            "5.5.5-10.3.39-MariaDB",
            "5.7.44",
            "8.0.0-dmr",
        ] {
            let err = check_skip_locked_support(old).expect_err(old);
            assert!(err.contains("SKIP LOCKED") && err.contains(old), "{err}");
        }
    }
}
