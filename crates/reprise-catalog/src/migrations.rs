//! Versioned schema migrations. Step N takes `user_version` from N-1 to N;
//! steps are only ever appended, never edited once released.

use crate::db_err;
use reprise_core::{Error, Result};
use rusqlite::Connection;

pub(crate) const STEPS: &[&str] = &[
    // 1: accounts, zones, volumes, instances, jobs.
    r#"
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        admin INTEGER NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE zones (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL UNIQUE,
        storage_dir TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        zone_id TEXT NOT NULL REFERENCES zones(id),
        state TEXT NOT NULL,
        cpus INTEGER NOT NULL,
        memory_bytes INTEGER NOT NULL,
        root_volume_id TEXT,
        kernel TEXT,
        initrd TEXT,
        append TEXT,
        accel TEXT,
        pid INTEGER,
        last_error TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        zone_id TEXT NOT NULL REFERENCES zones(id),
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        path TEXT NOT NULL UNIQUE,
        instance_id TEXT REFERENCES instances(id),
        slot INTEGER,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name),
        UNIQUE (instance_id, slot)
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_id TEXT NOT NULL,
        target_name TEXT NOT NULL,
        state TEXT NOT NULL,
        progress_done INTEGER NOT NULL,
        progress_total INTEGER NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_by_account ON jobs (account_id, created_at);
    CREATE TABLE job_log (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX job_log_by_job ON job_log (job_id);
    "#,
    // 2: recovery points, and the instance's position in their tree,
    // snapshot switch and plan.
    r#"
    CREATE TABLE points (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        instance_id TEXT NOT NULL REFERENCES instances(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        parent_id TEXT,
        state TEXT NOT NULL,
        memory INTEGER NOT NULL,
        consistency TEXT NOT NULL,
        frozen_ms INTEGER,
        volume_ids TEXT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX points_by_instance ON points (instance_id);
    ALTER TABLE instances ADD COLUMN current_point_id TEXT;
    ALTER TABLE instances ADD COLUMN snapshots_enabled INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE instances ADD COLUMN plan TEXT;
    "#,
    // 3: volume snapshots in the region's store, the chunks they reference
    // (what garbage collection keeps) and each volume's incremental base.
    r#"
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        volume_id TEXT NOT NULL,
        volume_name TEXT NOT NULL,
        zone TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        consistency TEXT NOT NULL,
        base_id TEXT,
        progress_done INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER NOT NULL DEFAULT 0,
        written_bytes INTEGER,
        stored_bytes INTEGER,
        new_bytes INTEGER,
        read_bytes INTEGER,
        chunk_count INTEGER,
        positions INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        completed_at TEXT,
        verified_at TEXT,
        UNIQUE (account_id, name)
    );
    CREATE INDEX snapshots_by_volume ON snapshots (volume_id);
    CREATE TABLE chunks (
        name BLOB PRIMARY KEY,
        stored_size INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE snapshot_chunks (
        snapshot_id TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
        name BLOB NOT NULL,
        PRIMARY KEY (snapshot_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX snapshot_chunks_by_name ON snapshot_chunks (name);
    ALTER TABLE volumes ADD COLUMN snapshot_base_id TEXT;
    "#,
    // 4: templates (golden images), which share their snapshot's chunks.
    r#"
    CREATE TABLE templates (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        source_snapshot_id TEXT,
        source_snapshot TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE template_chunks (
        template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
        name BLOB NOT NULL,
        PRIMARY KEY (template_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX template_chunks_by_name ON template_chunks (name);
    "#,
    // 5: tenancy. Several named API keys per account (the one key of each
    // account becomes its key "default", with the account's id); plans set
    // by the operator and assigned to accounts; uploads. The accounts table
    // is rebuilt without its key column (foreign keys are off meanwhile).
    r#"
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        UNIQUE (account_id, name)
    );
    INSERT INTO api_keys (id, account_id, name, hash, prefix, created_at)
        SELECT id, id, 'default', key_hash, 'rpk_', created_at FROM accounts;
    CREATE TABLE plans (
        name TEXT PRIMARY KEY,
        limits TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE accounts_new (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        admin INTEGER NOT NULL,
        plan TEXT REFERENCES plans(name),
        created_at TEXT NOT NULL
    );
    INSERT INTO accounts_new (id, name, admin, plan, created_at)
        SELECT id, name, admin, NULL, created_at FROM accounts;
    DROP TABLE accounts;
    ALTER TABLE accounts_new RENAME TO accounts;
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        received_bytes INTEGER NOT NULL,
        sha256 TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX uploads_by_account ON uploads (account_id);
    CREATE INDEX jobs_by_state ON jobs (account_id, state);
    "#,
];

/// The schema version this build writes.
pub const LATEST: u32 = STEPS.len() as u32;

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err("user_version"))?;
    if current > LATEST {
        return Err(Error::unavailable(
            "catalog_too_new",
            format!(
                "the catalog has schema version {current}, newer than this reprise ({LATEST}): \
                 run a newer reprise"
            ),
        ));
    }
    if current == LATEST {
        return Ok(());
    }
    // Steps that rebuild a table need foreign keys off, and the pragma is
    // a no-op inside a transaction; each step checks them before commit.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(db_err("migration"))?;
    let migrated = (|| {
        for (i, step) in STEPS.iter().enumerate().skip(current as usize) {
            let version = i as u32 + 1;
            let tx = conn.transaction().map_err(db_err("migration"))?;
            tx.execute_batch(step).map_err(db_err("migration"))?;
            let broken: i64 = tx
                .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .map_err(db_err("migration"))?;
            if broken > 0 {
                return Err(Error::internal(format!(
                    "catalog migration {version} would break {broken} references"
                )));
            }
            tx.pragma_update(None, "user_version", version)
                .map_err(db_err("migration"))?;
            tx.commit().map_err(db_err("migration"))?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err("migration"))?;
    migrated
}
