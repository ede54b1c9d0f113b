//! Accounts, their API keys, the operator's plans, and the quota check
//! that records a new resource only if the account's plan allows it.
//!
//! Invariants:
//! - A key is 256 random bits, shown once; only its SHA-256 is kept
//!   (`api_keys.hash`), with a short prefix to tell keys apart. A revoked
//!   key's row is gone, so the next request with it finds no account.
//! - An account's plan is a name in `plans`; a plan assigned to an account
//!   (or an instance) cannot be deleted.
//! - [`Catalog::admit`] counts usage and writes the new row in one
//!   IMMEDIATE transaction on the one connection: no two requests can both
//!   pass a limit, whatever the interleaving.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, hash_key, now, Catalog};
use reprise_core::model::*;
use reprise_core::plan::{self, Demand, Plan, PlanLimits, Usage};
use reprise_core::{Error, Result};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a key found is trusted without asking the catalog again. A
/// request then costs one statement less, which on PostgreSQL is most of
/// a read's time; the price is that a key revoked through another daemon
/// of the region still works here for up to this long.
pub const KEY_FRESH: Duration = Duration::from_secs(1);

/// At most this many keys are remembered (only keys that matched an
/// account go in, so this bounds only a very busy region's memory).
const KEYS_SEEN_MAX: usize = 4096;

/// Keys found lately: their hash → when, the account and the key's id.
/// `generation` moves on each time they are forgotten: a lookup whose
/// statement ran before a change but ends after it must not remember
/// what it read.
#[derive(Default)]
pub(crate) struct KeysSeen {
    generation: u64,
    keys: HashMap<String, (Instant, Account, Uuid)>,
}

const ACCOUNT_SELECT: &str = "SELECT id, name, admin, plan, created_at FROM accounts";
const KEY_SELECT: &str =
    "SELECT id, account_id, name, prefix, created_at, last_used_at, cloudstack_api_key FROM api_keys";

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("rpk_{}", hex::encode(bytes))
}

/// Enough of a key to tell it from the account's others, nothing to guess
/// it with (16 of its 256 bits).
fn prefix_of(secret: &str) -> String {
    secret.chars().take(8).collect()
}

fn insert_key(conn: &dyn Db, account: Uuid, name: &str) -> Result<ApiKeyCreated> {
    reprise_core::name::validate_name("key", name)?;
    let secret = new_secret();
    let key = ApiKey {
        id: Uuid::new_v4(),
        account_id: account,
        name: name.to_string(),
        prefix: prefix_of(&secret),
        created_at: now(),
        last_used_at: None,
        cloudstack_api_key: None,
    };
    conn.execute(
        "INSERT INTO api_keys (id, account_id, name, hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![key.id.sql(), account.sql(), key.name, hash_key(&secret), key.prefix, key.created_at],
    )
    .map_err(db_err(&format!("key '{name}'")))?;
    Ok(ApiKeyCreated {
        key,
        api_key: secret,
        secret_key: None,
    })
}

pub(crate) fn load_plan(conn: &dyn Db, name: &str) -> Result<Plan> {
    let limits: Option<String> = conn
        .query_row(
            "SELECT limits FROM plans WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err("plan"))?;
    let limits = limits.ok_or_else(|| {
        Error::invalid(
            "plan_not_found",
            format!("plan '{name}' does not exist: the operator defines plans (reprise plan list)"),
        )
    })?;
    let limits: PlanLimits = serde_json::from_str(&limits)
        .map_err(|e| Error::internal(format!("catalog: plan '{name}': {e}")).with_source(e))?;
    Ok(Plan {
        name: name.to_string(),
        limits,
    })
}

/// What a quota check counts against, besides the account.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scope {
    /// The instance a recovery point is for: its own plan, if any,
    /// overrides the account's recovery-point limit.
    pub instance: Option<Uuid>,
    /// The volume a snapshot is of (for the per-volume limit).
    pub volume: Option<Uuid>,
}

fn usage_on(conn: &dyn Db, account: Uuid, scope: Scope) -> Result<Usage> {
    conn.query_row(
        "SELECT
            (SELECT COUNT(*) FROM volumes WHERE account_id = ?1),
            (SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM volumes WHERE account_id = ?1),
            (SELECT COUNT(*) FROM instances WHERE account_id = ?1),
            (SELECT COUNT(*) FROM snapshots WHERE account_id = ?1 AND state <> 'Deleted'),
            (SELECT CAST(COALESCE(SUM(stored_size), 0) AS BIGINT) FROM chunks WHERE name IN (
                SELECT sc.name FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
                 WHERE s.account_id = ?1
                UNION
                SELECT tc.name FROM template_chunks tc JOIN templates t ON t.id = tc.template_id
                 WHERE t.account_id = ?1)),
            (SELECT COUNT(*) FROM jobs WHERE account_id = ?1 AND state IN ('Queued', 'Running')),
            CASE WHEN CAST(?2 AS TEXT) IS NULL
                THEN (SELECT COALESCE(MAX(n), 0) FROM
                        (SELECT COUNT(*) AS n FROM points WHERE account_id = ?1 GROUP BY instance_id) AS per_instance)
                ELSE (SELECT COUNT(*) FROM points WHERE instance_id = ?2) END,
            CASE WHEN CAST(?3 AS TEXT) IS NULL
                THEN (SELECT COALESCE(MAX(n), 0) FROM
                        (SELECT COUNT(*) AS n FROM snapshots WHERE account_id = ?1 AND state <> 'Deleted'
                          GROUP BY volume_id) AS per_volume)
                ELSE (SELECT COUNT(*) FROM snapshots WHERE volume_id = ?3 AND state <> 'Deleted') END,
            (SELECT COUNT(*) FROM snapshots WHERE account_id = ?1 AND protected)
              + (SELECT COUNT(*) FROM points WHERE account_id = ?1 AND protected),
            (SELECT CAST(COALESCE(SUM(cpus), 0) AS BIGINT) FROM instances WHERE account_id = ?1),
            (SELECT CAST(COALESCE(SUM(memory_bytes), 0) AS BIGINT) FROM instances WHERE account_id = ?1),
            (SELECT COUNT(*) FROM api_keys WHERE account_id = ?1),
            (SELECT COUNT(*) FROM policies WHERE account_id = ?1)",
        params![account.sql(), scope.instance.sql(), scope.volume.sql()],
        |r| {
            let n = |i: usize| r.get::<i64>(i).map(|v| v.max(0) as u64);
            Ok(Usage {
                volumes: n(0)?,
                volume_bytes: n(1)?,
                instances: n(2)?,
                snapshots: n(3)?,
                snapshot_bytes: n(4)?,
                concurrent_jobs: n(5)?,
                most_recovery_points: n(6)?,
                most_snapshots_per_volume: n(7)?,
                protected: n(8)?,
                vcpus: n(9)?,
                memory_bytes: n(10)?,
                keys: n(11)?,
                policies: n(12)?,
            })
        },
    )
    .map_err(db_err("usage"))
}

/// The plan that applies: the account's, with the recovery-point limit of
/// the instance's own plan when it has one. `None`: unlimited.
fn effective_plan(conn: &dyn Db, account: Uuid, scope: Scope) -> Result<Option<Plan>> {
    let account_plan: Option<String> = conn
        .query_row(
            "SELECT plan FROM accounts WHERE id = ?1",
            params![account.sql()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err("account plan"))?
        .flatten();
    let instance_plan: Option<String> = match scope.instance {
        Some(i) => conn
            .query_row(
                "SELECT plan FROM instances WHERE id = ?1",
                params![i.sql()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("instance plan"))?
            .flatten(),
        None => None,
    };
    let mut plan = account_plan
        .as_deref()
        .map(|p| load_plan(conn, p))
        .transpose()?;
    if let Some(name) = instance_plan {
        let own = load_plan(conn, &name)?;
        match &mut plan {
            Some(p) => {
                p.limits.max_recovery_points = own.limits.max_recovery_points;
                p.name = name;
            }
            None => {
                plan = Some(Plan {
                    name,
                    limits: PlanLimits {
                        max_recovery_points: own.limits.max_recovery_points,
                        ..Default::default()
                    },
                })
            }
        }
    }
    Ok(plan)
}

impl Catalog {
    // ---- accounts ------------------------------------------------------

    /// Create an account with one API key, named `default`; the key is
    /// returned once and only its hash is kept.
    pub fn create_account(&self, name: &str, admin: bool) -> Result<AccountCreated> {
        self.create_account_with_plan(name, admin, None)
    }

    pub fn create_account_with_plan(
        &self,
        name: &str,
        admin: bool,
        plan: Option<&str>,
    ) -> Result<AccountCreated> {
        reprise_core::name::validate_name("account", name)?;
        let account = Account {
            id: Uuid::new_v4(),
            name: name.to_string(),
            admin,
            plan: plan.map(str::to_string),
            created_at: now(),
        };
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("create account"))?;
        if let Some(p) = plan {
            load_plan(&tx, p)?;
        }
        tx.execute(
            "INSERT INTO accounts (id, name, admin, plan, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                account.id.sql(),
                account.name,
                admin,
                account.plan,
                account.created_at
            ],
        )
        .map_err(db_err(&format!("account '{name}'")))?;
        let key = insert_key(&tx, account.id, "default")?;
        tx.commit().map_err(db_err("create account"))?;
        Ok(AccountCreated {
            account,
            api_key: key.api_key,
        })
    }

    /// The account a key belongs to, and the key's id.
    pub fn account_by_key(&self, key: &str) -> Result<Option<(Account, Uuid)>> {
        let hash = hash_key(key);
        let generation = {
            let seen = self.keys_seen();
            if let Some((at, account, id)) = seen.keys.get(&hash) {
                if at.elapsed() < KEY_FRESH {
                    return Ok(Some((account.clone(), *id)));
                }
            }
            seen.generation
        };
        let found = self
            .conn()
            .query_row(
                "SELECT a.id, a.name, a.admin, a.plan, a.created_at, k.id
                   FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.hash = ?1",
                params![hash],
                |r| Ok((rows::account(r)?, rows::uuid(r, 5)?)),
            )
            .optional()
            .map_err(db_err("account by key"))?;
        let mut seen = self.keys_seen();
        match &found {
            Some((account, id)) if seen.generation == generation => {
                if seen.keys.len() >= KEYS_SEEN_MAX {
                    seen.keys.clear();
                }
                seen.keys
                    .insert(hash, (Instant::now(), account.clone(), *id));
            }
            _ => {
                seen.keys.remove(&hash);
            }
        }
        Ok(found)
    }

    fn keys_seen(&self) -> std::sync::MutexGuard<'_, KeysSeen> {
        self.keys_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget every key found: an account or key changed through here.
    /// Called once the change is made (whether it was or not), so that no
    /// request after it sees the old key.
    pub(crate) fn forget_keys(&self) {
        let mut seen = self.keys_seen();
        seen.generation += 1;
        seen.keys.clear();
    }

    pub fn list_accounts(&self) -> Result<Vec<Account>> {
        rows::query(
            &self.conn(),
            &format!("{ACCOUNT_SELECT} ORDER BY created_at"),
            params![],
            rows::account,
        )
    }

    /// An account by name or id.
    pub fn account(&self, reference: &str) -> Result<Account> {
        self.conn()
            .query_row(
                &format!("{ACCOUNT_SELECT} WHERE id = ?1 OR name = ?1"),
                params![reference],
                rows::account,
            )
            .optional()
            .map_err(db_err("account"))?
            .ok_or_else(|| Error::not_found("account", reference))
    }

    pub fn admin_exists(&self) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM accounts WHERE admin)",
                params![],
                |r| r.get(0),
            )
            .map_err(db_err("admin exists"))
    }

    /// Assign a plan to an account (`None`: no plan).
    pub fn set_account_plan(&self, account: Uuid, plan: Option<&str>) -> Result<()> {
        let outcome = self.set_account_plan_now(account, plan);
        self.forget_keys();
        outcome
    }

    fn set_account_plan_now(&self, account: Uuid, plan: Option<&str>) -> Result<()> {
        let conn = self.conn();
        if let Some(p) = plan {
            load_plan(&conn, p)?;
        }
        conn.execute(
            "UPDATE accounts SET plan = ?2 WHERE id = ?1",
            params![account.sql(), plan],
        )
        .map_err(db_err("account plan"))?;
        Ok(())
    }

    /// What an account still owns, by kind, for a delete that must find
    /// it empty: `[("volume", n), …]` with non-zero counts only.
    pub fn account_resources(&self, account: Uuid) -> Result<Vec<(&'static str, u64)>> {
        let conn = self.conn();
        let mut out = Vec::new();
        for (kind, table) in [
            ("instance", "instances"),
            ("volume", "volumes"),
            ("snapshot", "snapshots"),
            ("template", "templates"),
            ("recovery point", "points"),
            ("upload", "uploads"),
        ] {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE account_id = ?1"),
                    params![account.sql()],
                    |r| r.get(0),
                )
                .map_err(db_err("account resources"))?;
            if n > 0 {
                out.push((kind, n as u64));
            }
        }
        Ok(out)
    }

    /// Delete an account that owns nothing: its keys and its jobs go with
    /// it. Refused (`account_not_empty`) if it still owns a resource.
    pub fn delete_account(&self, account: Uuid) -> Result<()> {
        let outcome = self.delete_account_now(account);
        self.forget_keys();
        outcome
    }

    fn delete_account_now(&self, account: Uuid) -> Result<()> {
        let left = self.account_resources(account)?;
        if !left.is_empty() {
            return Err(Error::conflict(
                "account_not_empty",
                "the account still owns resources",
            ));
        }
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("delete account"))?;
        tx.execute(
            "DELETE FROM jobs WHERE account_id = ?1",
            params![account.sql()],
        )
        .map_err(db_err("delete account"))?;
        tx.execute(
            "DELETE FROM api_keys WHERE account_id = ?1",
            params![account.sql()],
        )
        .map_err(db_err("delete account"))?;
        let n = tx
            .execute(
                "DELETE FROM accounts WHERE id = ?1 AND NOT admin",
                params![account.sql()],
            )
            .map_err(db_err("delete account"))?;
        if n == 0 {
            return Err(Error::conflict(
                "account_is_admin",
                "the admin account cannot be deleted",
            ));
        }
        tx.commit().map_err(db_err("delete account"))
    }

    // ---- keys ------------------------------------------------------------

    /// A new key for an account; returned once.
    /// A new API key, if the account's plan allows one more.
    pub fn create_key(&self, account: Uuid, name: &str) -> Result<ApiKeyCreated> {
        let one = Demand {
            keys: 1,
            ..Default::default()
        };
        self.admit(account, Scope::default(), &one, |c| {
            insert_key(c, account, name)
        })
    }

    /// A CloudStack key pair for an account: its public `api_key`, and its
    /// secret key `sealed` by the caller. The row's bearer hash is of a
    /// secret no one is shown, so the pair is no bearer key.
    pub fn create_cloudstack_key(
        &self,
        account: Uuid,
        name: &str,
        api_key: &str,
        sealed: &str,
    ) -> Result<ApiKey> {
        reprise_core::name::validate_name("key", name)?;
        let key = ApiKey {
            id: Uuid::new_v4(),
            account_id: account,
            name: name.to_string(),
            prefix: prefix_of(api_key),
            created_at: now(),
            last_used_at: None,
            cloudstack_api_key: Some(api_key.to_string()),
        };
        let one = Demand {
            keys: 1,
            ..Default::default()
        };
        self.admit(account, Scope::default(), &one, |c| {
            c.execute(
                "INSERT INTO api_keys (id, account_id, name, hash, prefix, created_at, cloudstack_api_key, cloudstack_secret)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key.id.sql(),
                    account.sql(),
                    key.name,
                    hash_key(&new_secret()),
                    key.prefix,
                    key.created_at,
                    api_key,
                    sealed
                ],
            )
            .map_err(db_err(&format!("key '{name}'")))
        })?;
        Ok(key)
    }

    /// The account a CloudStack `apiKey` belongs to, the key's id, and its
    /// sealed secret.
    pub fn account_by_cloudstack_key(
        &self,
        api_key: &str,
    ) -> Result<Option<(Account, Uuid, String)>> {
        self.conn()
            .query_row(
                "SELECT a.id, a.name, a.admin, a.plan, a.created_at, k.id, k.cloudstack_secret
                   FROM api_keys k JOIN accounts a ON a.id = k.account_id
                  WHERE k.cloudstack_api_key = ?1",
                params![api_key],
                |r| Ok((rows::account(r)?, rows::uuid(r, 5)?, r.get(6)?)),
            )
            .optional()
            .map_err(db_err("account by CloudStack key"))
    }

    pub fn list_keys(&self, account: Uuid) -> Result<Vec<ApiKey>> {
        rows::query(
            &self.conn(),
            &format!("{KEY_SELECT} WHERE account_id = ?1 ORDER BY created_at"),
            params![account.sql()],
            rows::api_key,
        )
    }

    /// A key of an account by name or id.
    pub fn key(&self, account: Uuid, reference: &str) -> Result<ApiKey> {
        self.conn()
            .query_row(
                &format!("{KEY_SELECT} WHERE account_id = ?1 AND (id = ?2 OR name = ?2)"),
                params![account.sql(), reference],
                rows::api_key,
            )
            .optional()
            .map_err(db_err("key"))?
            .ok_or_else(|| Error::not_found("key", reference))
    }

    /// Revoke a key: its row goes, so it fails from the next request on.
    pub fn revoke_key(&self, key: Uuid) -> Result<()> {
        let outcome = self.revoke_key_now(key);
        self.forget_keys();
        outcome
    }

    fn revoke_key_now(&self, key: Uuid) -> Result<()> {
        self.update(
            "revoke key",
            "DELETE FROM api_keys WHERE id = ?1",
            params![key.sql()],
        )
    }

    /// Replace a key by a new one with the same name, in one transaction:
    /// the old one fails from the next request on.
    pub fn rotate_key(&self, key: Uuid) -> Result<ApiKeyCreated> {
        let outcome = self.rotate_key_now(key);
        self.forget_keys();
        outcome
    }

    fn rotate_key_now(&self, key: Uuid) -> Result<ApiKeyCreated> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("rotate key"))?;
        let (account, name): (String, String) = tx
            .query_row(
                "SELECT account_id, name FROM api_keys WHERE id = ?1",
                params![key.sql()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err("rotate key"))?
            .ok_or_else(|| Error::not_found("key", &key.to_string()))?;
        tx.execute("DELETE FROM api_keys WHERE id = ?1", params![key.sql()])
            .map_err(db_err("rotate key"))?;
        let account = Uuid::parse_str(&account)
            .map_err(|e| Error::internal(format!("catalog: {e}")).with_source(e))?;
        let made = insert_key(&tx, account, &name)?;
        tx.commit().map_err(db_err("rotate key"))?;
        Ok(made)
    }

    /// Record that a key was used now.
    pub fn touch_key(&self, key: Uuid) -> Result<()> {
        self.update(
            "key used",
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
            params![key.sql(), now()],
        )
    }

    // ---- plans -----------------------------------------------------------

    /// Create or replace a plan.
    pub fn put_plan(&self, plan: &Plan) -> Result<()> {
        reprise_core::name::validate_name("plan", &plan.name)?;
        let limits = serde_json::to_string(&plan.limits)
            .map_err(|e| Error::internal(format!("plan: {e}")).with_source(e))?;
        self.update(
            "plan",
            "INSERT INTO plans (name, limits, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET limits = excluded.limits",
            params![plan.name, limits, now()],
        )
    }

    pub fn plan(&self, name: &str) -> Result<Plan> {
        load_plan(&self.conn(), name)
    }

    pub fn list_plans(&self) -> Result<Vec<Plan>> {
        let names: Vec<String> = rows::query(
            &self.conn(),
            "SELECT name FROM plans ORDER BY name",
            params![],
            |r| r.get(0),
        )?;
        names.iter().map(|n| self.plan(n)).collect()
    }

    /// Delete a plan no account or instance uses.
    pub fn delete_plan(&self, name: &str) -> Result<()> {
        let conn = self.conn();
        load_plan(&conn, name)?;
        let users: Vec<String> = rows::query(
            &conn,
            "SELECT 'account ' || name FROM accounts WHERE plan = ?1
             UNION ALL SELECT 'instance ' || name FROM instances WHERE plan = ?1",
            params![name],
            |r| r.get(0),
        )?;
        if !users.is_empty() {
            return Err(Error::conflict(
                "plan_in_use",
                format!(
                    "plan '{name}' is assigned to {}: assign another plan first",
                    users.join(", ")
                ),
            ));
        }
        conn.execute("DELETE FROM plans WHERE name = ?1", params![name])
            .map_err(db_err("delete plan"))?;
        Ok(())
    }

    // ---- quotas ----------------------------------------------------------

    /// What an account uses now (with `scope`, the recovery points of that
    /// instance and the snapshots of that volume).
    pub fn usage(&self, account: Uuid, scope: Scope) -> Result<Usage> {
        usage_on(&self.conn(), account, scope)
    }

    /// The plan that applies to an account (and an instance of it).
    pub fn effective_plan(&self, account: Uuid, scope: Scope) -> Result<Option<Plan>> {
        effective_plan(&self.conn(), account, scope)
    }

    /// Run `write` only if `demand` fits the account's plan, in one
    /// IMMEDIATE transaction with the count: the check and the write are
    /// atomic. A refusal names the limit (see [`plan::refusal`]) and
    /// writes nothing.
    pub fn admit<T>(
        &self,
        account: Uuid,
        scope: Scope,
        demand: &Demand,
        write: impl FnOnce(&dyn Db) -> Result<T>,
    ) -> Result<T> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("quota"))?;
        if let Some(p) = effective_plan(&tx, account, scope)? {
            let usage = usage_on(&tx, account, scope)?;
            if let Some(limit) = plan::first_exceeded(&p.limits, &usage, demand) {
                return Err(plan::refusal(limit, &p.name, &p.limits, &usage));
            }
        }
        let out = write(&tx)?;
        tx.commit().map_err(db_err("quota"))?;
        Ok(out)
    }
}
