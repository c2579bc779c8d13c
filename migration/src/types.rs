//! Column types and defaults that differ per backend. Instants are UTC everywhere:
//! PostgreSQL `timestamptz`, MySQL `DATETIME(6)` (not TIMESTAMP, which ends in 2038),
//! SQLite RFC 3339 text in the exact shape sqlx writes, so text order is time order.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// A UTC instant column.
pub fn instant(backend: DbBackend, col: &mut ColumnDef) -> &mut ColumnDef {
    match backend {
        DbBackend::MySql => col.custom(Alias::new("DATETIME(6)")),
        DbBackend::Postgres | DbBackend::Sqlite => col.timestamp_with_time_zone(),
    }
}

/// The database clock as a column default.
pub fn now_default(backend: DbBackend) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::cust("now()"),
        DbBackend::MySql => Expr::cust("CURRENT_TIMESTAMP(6)"),
        DbBackend::Sqlite => Expr::cust("(strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))"),
    }
}

/// A JSON document column (`jsonb` on PostgreSQL).
pub fn json(backend: DbBackend, col: &mut ColumnDef) -> &mut ColumnDef {
    match backend {
        DbBackend::Postgres => col.json_binary(),
        DbBackend::MySql | DbBackend::Sqlite => col.json(),
    }
}
