//! The catalog's schema, one list of steps per engine. Step N takes the
//! schema from version N-1 to N; steps are only ever appended, never
//! edited once released. The two lists describe the same tables (SQLite's
//! history, PostgreSQL's starting at what SQLite's step 5 made); a change
//! is a step appended to both.

/// SQLite's steps (the version is `PRAGMA user_version`).
pub(crate) const SQLITE: &[&str] = &[
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
    // 6: a template is Creating until its index and manifest are in the
    // store (a crash in between is removed at the next start).
    TEMPLATE_STATE,
    // 7: the region's hosts, and the host each volume and instance lives on.
    HOSTS,
    // 8: snapshot policies (a schedule and retention on a volume or an
    // instance).
    r#"
    CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        volume_id TEXT,
        instance_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT NOT NULL,
        keep TEXT NOT NULL,
        quiesce TEXT,
        memory INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        running INTEGER NOT NULL,
        next_run_at TEXT,
        last_run_at TEXT,
        last_result TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    "#,
    // 9: the policy that made each snapshot and point.
    POLICY_COLUMNS,
    // 10: CloudStack key pairs.
    CLOUDSTACK_KEYS,
    // 11: how a memory point's state was saved.
    POINT_MEMORY_SAVE,
    // 12: requests kept for a host that is down.
    DEFERRED_REQUESTS,
    // 13: the catalog's own id and generation (what the region's store is
    // bound to).
    CATALOG_IDENTITY,
    // 14: protected snapshots and points; deleted snapshots and templates
    // kept for an undelete window, their names free meanwhile. SQLite
    // rebuilds the two tables to replace their UNIQUE (account_id, name)
    // by an index that leaves deleted rows out (foreign keys are off
    // meanwhile; their rowids, the insertion order, are kept).
    r#"
    CREATE TABLE snapshots_new (
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
        policy_id TEXT,
        protected INTEGER NOT NULL DEFAULT 0,
        deleted_at TEXT,
        purge_after TEXT
    );
    INSERT INTO snapshots_new (rowid, id, account_id, name, volume_id, volume_name, zone, state,
            size_bytes, consistency, base_id, progress_done, progress_total, written_bytes,
            stored_bytes, new_bytes, read_bytes, chunk_count, positions, error, created_at,
            completed_at, verified_at, policy_id)
        SELECT rowid, id, account_id, name, volume_id, volume_name, zone, state,
            size_bytes, consistency, base_id, progress_done, progress_total, written_bytes,
            stored_bytes, new_bytes, read_bytes, chunk_count, positions, error, created_at,
            completed_at, verified_at, policy_id FROM snapshots;
    DROP TABLE snapshots;
    ALTER TABLE snapshots_new RENAME TO snapshots;
    CREATE INDEX snapshots_by_volume ON snapshots (volume_id);
    CREATE INDEX snapshots_by_policy ON snapshots (policy_id);
    CREATE UNIQUE INDEX snapshots_names ON snapshots (account_id, name) WHERE state <> 'Deleted';
    CREATE TABLE templates_new (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        source_snapshot_id TEXT,
        source_snapshot TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'Ready',
        host TEXT NOT NULL DEFAULT '',
        deleted_at TEXT,
        purge_after TEXT
    );
    INSERT INTO templates_new (rowid, id, account_id, name, source_snapshot_id, source_snapshot,
            size_bytes, chunk_count, created_at, state, host)
        SELECT rowid, id, account_id, name, source_snapshot_id, source_snapshot,
            size_bytes, chunk_count, created_at, state, host FROM templates;
    DROP TABLE templates;
    ALTER TABLE templates_new RENAME TO templates;
    CREATE UNIQUE INDEX templates_names ON templates (account_id, name) WHERE state <> 'Deleted';
    ALTER TABLE points ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
    "#,
];

const TEMPLATE_STATE: &str =
    "ALTER TABLE templates ADD COLUMN state TEXT NOT NULL DEFAULT 'Ready';";

/// The hosts of a region and their leases; the host each volume,
/// instance, job, template and upload lives on (the daemon that does its
/// work). Rows made before hosts existed have host
/// `''`: the first daemon that starts takes them (it was the only one).
const HOSTS: &str = r#"
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        zones TEXT NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );
    ALTER TABLE volumes ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE templates ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE uploads ADD COLUMN host TEXT NOT NULL DEFAULT '';
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX volumes_by_host ON volumes (host);
    CREATE INDEX instances_by_host ON instances (host);
"#;

/// The policy that made a snapshot or a recovery point (none: by hand).
const POLICY_COLUMNS: &str = r#"
    ALTER TABLE snapshots ADD COLUMN policy_id TEXT;
    ALTER TABLE points ADD COLUMN policy_id TEXT;
    CREATE INDEX snapshots_by_policy ON snapshots (policy_id);
"#;

/// A CloudStack key pair is a row of `api_keys` whose bearer hash is of a
/// secret never shown (it cannot be used as a bearer key): its public
/// `apiKey`, and its secret key sealed under the region's secret (see
/// `reprise-daemon/src/cloudstack.rs`), which the daemon opens to verify
/// a request's HMAC.
const CLOUDSTACK_KEYS: &str = r#"
    ALTER TABLE api_keys ADD COLUMN cloudstack_api_key TEXT;
    ALTER TABLE api_keys ADD COLUMN cloudstack_secret TEXT;
    CREATE UNIQUE INDEX api_keys_by_cloudstack_key ON api_keys (cloudstack_api_key);
"#;

/// How a recovery point's RAM and device state was saved: `background`
/// (written to a file while the guest ran on) or `snapshot-save` (the
/// guest paused; the state inside the first volume's qcow2). NULL for a
/// disk-only point, and for memory points made before this column
/// (`snapshot-save`, the only way then).
const POINT_MEMORY_SAVE: &str = "ALTER TABLE points ADD COLUMN memory_save TEXT;";

/// A request for a resource of a `Down` host, kept with its job (Queued)
/// until that host is back and runs it: the method, the path with its
/// query, the caller (`ACCOUNT_ID KEY_ID`) and the JSON body.
const DEFERRED_REQUESTS: &str = r#"
    CREATE TABLE deferred_requests (
        job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        caller TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX deferred_requests_by_host ON deferred_requests (host, created_at);
"#;

/// The catalog's id (random, made at its first use), the region it was
/// first bound to, and its generation, which advances with every snapshot
/// and template it records; `behind` says why it must recover before it
/// sweeps (it saw the store ahead of it). One row. See
/// `reprise_backup::binding`.
const CATALOG_IDENTITY: &str = r#"
    CREATE TABLE catalog_identity (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        catalog_id TEXT NOT NULL,
        region_id TEXT,
        generation BIGINT NOT NULL,
        behind TEXT
    );
"#;

/// The schema version this build writes.
pub const LATEST: u32 = SQLITE.len() as u32;

/// PostgreSQL's steps, numbered as SQLite's so that a version means the
/// same tables on both: PostgreSQL catalogs start at version 5 (steps 1–4
/// are empty), with the tables SQLite's first five steps made; later
/// steps are the same on both. Integers
/// are `BIGINT`, flags `BOOLEAN`, chunk names `BYTEA`; tables listed in
/// insertion order get a `rowid BIGSERIAL` (SQLite's implicit column).
/// The version is in `reprise_schema`.
pub(crate) const POSTGRES: &[&str] = &[
    "",
    "",
    "",
    "",
    r#"
    CREATE TABLE plans (
        name TEXT PRIMARY KEY,
        limits TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        admin BOOLEAN NOT NULL,
        plan TEXT REFERENCES plans(name),
        created_at TEXT NOT NULL
    );
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
        cpus BIGINT NOT NULL,
        memory_bytes BIGINT NOT NULL,
        root_volume_id TEXT,
        kernel TEXT,
        initrd TEXT,
        append TEXT,
        accel TEXT,
        pid BIGINT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        current_point_id TEXT,
        snapshots_enabled BOOLEAN NOT NULL DEFAULT TRUE,
        plan TEXT,
        UNIQUE (account_id, name)
    );
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        zone_id TEXT NOT NULL REFERENCES zones(id),
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        instance_id TEXT REFERENCES instances(id),
        slot BIGINT,
        created_at TEXT NOT NULL,
        snapshot_base_id TEXT,
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
        progress_done BIGINT NOT NULL,
        progress_total BIGINT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_by_account ON jobs (account_id, created_at);
    CREATE INDEX jobs_by_state ON jobs (account_id, state);
    CREATE TABLE job_log (
        rowid BIGSERIAL,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX job_log_by_job ON job_log (job_id);
    CREATE TABLE points (
        rowid BIGSERIAL,
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        instance_id TEXT NOT NULL REFERENCES instances(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        parent_id TEXT,
        state TEXT NOT NULL,
        memory BOOLEAN NOT NULL,
        consistency TEXT NOT NULL,
        frozen_ms BIGINT,
        volume_ids TEXT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX points_by_instance ON points (instance_id);
    CREATE TABLE snapshots (
        rowid BIGSERIAL,
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        volume_id TEXT NOT NULL,
        volume_name TEXT NOT NULL,
        zone TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        consistency TEXT NOT NULL,
        base_id TEXT,
        progress_done BIGINT NOT NULL DEFAULT 0,
        progress_total BIGINT NOT NULL DEFAULT 0,
        written_bytes BIGINT,
        stored_bytes BIGINT,
        new_bytes BIGINT,
        read_bytes BIGINT,
        chunk_count BIGINT,
        positions BIGINT,
        error TEXT,
        created_at TEXT NOT NULL,
        completed_at TEXT,
        verified_at TEXT,
        UNIQUE (account_id, name)
    );
    CREATE INDEX snapshots_by_volume ON snapshots (volume_id);
    CREATE TABLE chunks (
        name BYTEA PRIMARY KEY,
        stored_size BIGINT NOT NULL
    );
    CREATE TABLE snapshot_chunks (
        snapshot_id TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
        name BYTEA NOT NULL,
        PRIMARY KEY (snapshot_id, name)
    );
    CREATE INDEX snapshot_chunks_by_name ON snapshot_chunks (name);
    CREATE TABLE templates (
        rowid BIGSERIAL,
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        source_snapshot_id TEXT,
        source_snapshot TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        chunk_count BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE template_chunks (
        template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
        name BYTEA NOT NULL,
        PRIMARY KEY (template_id, name)
    );
    CREATE INDEX template_chunks_by_name ON template_chunks (name);
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        received_bytes BIGINT NOT NULL,
        sha256 TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX uploads_by_account ON uploads (account_id);
    "#,
    TEMPLATE_STATE,
    HOSTS,
    r#"
    CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        volume_id TEXT,
        instance_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT NOT NULL,
        keep TEXT NOT NULL,
        quiesce TEXT,
        memory BOOLEAN NOT NULL,
        enabled BOOLEAN NOT NULL,
        running BOOLEAN NOT NULL,
        next_run_at TEXT,
        last_run_at TEXT,
        last_result TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    "#,
    POLICY_COLUMNS,
    CLOUDSTACK_KEYS,
    POINT_MEMORY_SAVE,
    DEFERRED_REQUESTS,
    CATALOG_IDENTITY,
    r#"
    ALTER TABLE snapshots DROP CONSTRAINT snapshots_account_id_name_key;
    ALTER TABLE snapshots ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE,
                          ADD COLUMN deleted_at TEXT,
                          ADD COLUMN purge_after TEXT;
    CREATE UNIQUE INDEX snapshots_names ON snapshots (account_id, name) WHERE state <> 'Deleted';
    ALTER TABLE templates DROP CONSTRAINT templates_account_id_name_key;
    ALTER TABLE templates ADD COLUMN deleted_at TEXT,
                          ADD COLUMN purge_after TEXT;
    CREATE UNIQUE INDEX templates_names ON templates (account_id, name) WHERE state <> 'Deleted';
    ALTER TABLE points ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
];
