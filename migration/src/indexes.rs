//! Rebuilding an index in another form (partial or full) under the same name, shared by the
//! migrations that do it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

/// Replaces index `name` of `job_executions` by `CREATE {unique}INDEX name ON
/// job_executions {definition}`. The new index is built first, under a temporary name, so
/// every query and every insert-if-absent always has one to use. The initial migration made
/// the fire-time key a table constraint, later ones plain indexes: whichever it is goes.
pub async fn rebuild(
    manager: &SchemaManager<'_>,
    name: &str,
    unique: bool,
    definition: &str,
) -> Result<(), DbErr> {
    let unique = if unique { "UNIQUE " } else { "" };
    let steps = [
        format!("CREATE {unique}INDEX {name}_next ON job_executions {definition}"),
        format!("ALTER TABLE job_executions DROP CONSTRAINT IF EXISTS {name}"),
        format!("DROP INDEX IF EXISTS {name}"),
        format!("ALTER INDEX {name}_next RENAME TO {name}"),
    ];
    let db = manager.get_connection();
    for sql in steps {
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}
