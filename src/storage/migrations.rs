//! The database schema as numbered steps.
//!
//! A database records the last step applied to it (`meta.schema_version`). When a store
//! opens a database, the steps it lacks run in one transaction, in order: a database
//! written by an older acme-cse is upgraded at start, all or nothing. A database whose
//! version this build does not know was written by a newer acme-cse and is refused with a
//! message naming `database.path`, never read by rules that do not fit it. A database from
//! before the version was recorded is version 1 (it has the `resources` table).
//!
//! The step numbers are shared by every backend; each backend carries its own statements
//! for them, so one version number means the same tables everywhere.

use crate::error::{Error, Result};

/// One step of the schema.
pub(crate) struct Migration {
    pub version: u32,
    /// What the step does, for the log.
    pub what: &'static str,
    /// Its statements for SQLite.
    pub sqlite: &'static str,
    /// Its statements for PostgreSQL.
    pub postgres: &'static str,
}

/// Every step, oldest first; the last one is the version this build writes.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "resources, the notification outbox, meta",
        sqlite: "
CREATE TABLE IF NOT EXISTS resources (
    ri      TEXT PRIMARY KEY NOT NULL,
    pi      TEXT NOT NULL,
    ty      INTEGER NOT NULL,
    path    TEXT NOT NULL UNIQUE,
    et      TEXT,
    creator TEXT,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources(pi, ty);
CREATE INDEX IF NOT EXISTS resources_by_type ON resources(ty);
CREATE INDEX IF NOT EXISTS resources_by_expiry ON resources(et) WHERE et IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    target       TEXT NOT NULL,
    subscription TEXT NOT NULL,
    rqi          TEXT NOT NULL,
    content      TEXT NOT NULL,
    created      TEXT NOT NULL,
    due          TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    batch        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox(target, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
",
        // Texts that are compared or ranged (paths, times, targets) in the "C" collation:
        // byte order, whatever the database's locale.
        postgres: r#"
CREATE TABLE IF NOT EXISTS resources (
    ri      TEXT PRIMARY KEY,
    pi      TEXT NOT NULL,
    ty      INTEGER NOT NULL,
    path    TEXT COLLATE "C" NOT NULL UNIQUE,
    et      TEXT COLLATE "C",
    creator TEXT,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources(pi, ty);
CREATE INDEX IF NOT EXISTS resources_by_type ON resources(ty);
CREATE INDEX IF NOT EXISTS resources_by_expiry ON resources(et) WHERE et IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq          BIGSERIAL PRIMARY KEY,
    target       TEXT COLLATE "C" NOT NULL,
    subscription TEXT NOT NULL,
    rqi          TEXT NOT NULL,
    content      TEXT NOT NULL,
    created      TEXT NOT NULL,
    due          TEXT COLLATE "C" NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    batch        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox(target, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        what: "an explicit creation order (resources.ord) instead of SQLite's rowid; paths compared bytewise",
        // `ord` is SQLite's rowid under a name of its own (INTEGER PRIMARY KEY): the order
        // of creation, kept from the old rowid, given to new rows as one more than the
        // largest. The indexes by parent and by type end with it implicitly, so children
        // come in creation order straight from the index. Paths are compared bytewise
        // (BINARY), which the prefix ranges of subtree queries rely on.
        sqlite: "
CREATE TABLE resources_v2 (
    ord     INTEGER PRIMARY KEY,
    ri      TEXT NOT NULL UNIQUE,
    pi      TEXT NOT NULL,
    ty      INTEGER NOT NULL,
    path    TEXT NOT NULL UNIQUE COLLATE BINARY,
    et      TEXT,
    creator TEXT,
    body    TEXT NOT NULL
);
INSERT INTO resources_v2 (ord, ri, pi, ty, path, et, creator, body)
    SELECT rowid, ri, pi, ty, path, et, creator, body FROM resources ORDER BY rowid;
DROP TABLE resources;
ALTER TABLE resources_v2 RENAME TO resources;
CREATE INDEX resources_by_parent ON resources(pi, ty);
CREATE INDEX resources_by_type ON resources(ty);
CREATE INDEX resources_by_expiry ON resources(et) WHERE et IS NOT NULL;
",
        postgres: "
ALTER TABLE resources ADD COLUMN ord BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE resources ADD CONSTRAINT resources_ord_unique UNIQUE (ord);
DROP INDEX resources_by_parent;
CREATE INDEX resources_by_parent ON resources(pi, ty, ord);
DROP INDEX resources_by_type;
CREATE INDEX resources_by_type ON resources(ty, ord);
",
    },
    Migration {
        version: 3,
        what: "the instances serving the database and their addresses (the CSEBase poa)",
        sqlite: "
CREATE TABLE instances (
    id   TEXT PRIMARY KEY NOT NULL,
    poa  TEXT NOT NULL,
    seen TEXT NOT NULL
);
",
        postgres: r#"
CREATE TABLE instances (
    id   TEXT PRIMARY KEY,
    poa  TEXT NOT NULL,
    seen TEXT COLLATE "C" NOT NULL
);
"#,
    },
    Migration {
        version: 4,
        what: "claims on notifications: which instance sends one, and until when",
        sqlite: "
ALTER TABLE outbox ADD COLUMN claimant TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;
",
        postgres: r#"
ALTER TABLE outbox ADD COLUMN claimant TEXT, ADD COLUMN claimed_until TEXT COLLATE "C";
"#,
    },
    Migration {
        version: 5,
        what: "content instances left out of the index by type",
        // Every CIN CREATE wrote a page of this index, which only the rare reads of all
        // resources of a type use (the CSRs at start, the announceable types after a
        // registration): a copy of the schema with 20,000 instances wrote 7.9 WAL frames per
        // CIN commit with it and 6.8 without. Those reads name `ty <> 4` so that the planner
        // may use the partial index; the content instances are read in table order.
        sqlite: "
DROP INDEX resources_by_type;
CREATE INDEX resources_by_type ON resources(ty) WHERE ty <> 4;
",
        postgres: "
DROP INDEX resources_by_type;
CREATE INDEX resources_by_type ON resources(ty, ord) WHERE ty <> 4;
",
    },
    Migration {
        version: 6,
        what: "the resources announced (a non-empty `at`) found by an index",
        // The announcer looks for what is announced to a CSE at every registration of one:
        // it read every announceable resource, content instances by a scan of the whole
        // table. 1,000 registrations read 1,000 CSR bodies each: 3.3 s of reading on the
        // benchmark's machine, and a database of many instances read them all every time.
        // `announced` is 1 (TRUE) for a resource whose `at` lists something and NULL
        // otherwise, so that the partial index holds only those and a CIN CREATE without
        // `at` writes no page of it. The step fills it from the stored bodies.
        sqlite: "
ALTER TABLE resources ADD COLUMN announced INTEGER;
UPDATE resources SET announced = 1
    WHERE (CASE WHEN json_valid(body) THEN json_array_length(body, '$.at') ELSE 0 END) > 0;
CREATE INDEX resources_announced ON resources(announced) WHERE announced IS NOT NULL;
",
        postgres: "
ALTER TABLE resources ADD COLUMN announced BOOLEAN;
UPDATE resources SET announced = TRUE
    WHERE CASE WHEN jsonb_typeof(body::jsonb -> 'at') = 'array'
               THEN jsonb_array_length(body::jsonb -> 'at') > 0 ELSE FALSE END;
CREATE INDEX resources_announced ON resources(announced) WHERE announced;
",
    },
];

/// The version this build writes.
pub(crate) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The version of a database from the version it recorded (if any) and whether it has
/// the `resources` table: 0 when it is new, 1 when it predates the record.
pub(crate) fn version_of(recorded: Option<&str>, has_resources: bool, database: &str) -> Result<u32> {
    match recorded {
        Some(version) => version
            .parse()
            .map_err(|_| Error::internal(format!("{database}: its schema version {version:?} is not a number"))),
        None => Ok(u32::from(has_resources)),
    }
}

/// The steps a database at version `found` lacks, in order; an error naming the key when
/// it was written by a newer build.
pub(crate) fn pending(found: u32, database: &str, key: &str) -> Result<impl Iterator<Item = &'static Migration>> {
    let latest = latest();
    if found > latest {
        return Err(Error::internal(format!(
            "{database} has schema version {found}, written by a newer acme-cse (this one knows versions up to \
             {latest}): run that version, or point {key} at another database"
        )));
    }
    Ok(MIGRATIONS.iter().filter(move |migration| migration.version > found))
}

/// The error of a step that failed.
pub(crate) fn failed(migration: &Migration, database: &str, error: impl std::fmt::Display) -> Error {
    Error::internal(format!(
        "{database}: upgrading the schema to version {} ({}) failed: {error}",
        migration.version, migration.what
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_numbered_one_by_one_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.what);
        }
        assert_eq!(latest() as usize, MIGRATIONS.len());
    }
}
