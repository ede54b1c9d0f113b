//! The daemon's shared state: configuration, catalog, host facts, the
//! per-instance locks and the metrics counters.
//!
//! Locking: every operation that talks to an instance's QEMU or changes its
//! volumes holds that instance's lock ([`App::instance_lock`]) for its whole
//! duration, so QMP sessions never interleave and the periodic reconciler
//! never judges an instance in the middle of an operation.

use crate::config::Config;
use reprise_catalog::Catalog;
use reprise_qemu::accel::HostFacts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

pub struct App {
    pub config: Config,
    pub catalog: Catalog,
    /// The region's object store, where volume snapshots live.
    pub region: reprise_backup::Region,
    /// Chunks that backups in progress reference (for garbage collection).
    pub refs: Arc<reprise_backup::Refs>,
    pub host: HostFacts,
    locks: Mutex<HashMap<Uuid, Arc<AsyncMutex<()>>>>,
    pub metrics: Metrics,
    /// Woken whenever a job reaches a final state (for long-polling).
    pub job_finished: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    pub jobs_started: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, method: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method.to_string(), status)).or_default() += 1;
    }

    pub fn requests(&self) -> Vec<((String, u16), u64)> {
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    pub fn job_started(&self) {
        self.jobs_started.fetch_add(1, Ordering::Relaxed);
    }
}

impl App {
    pub fn new(config: Config, catalog: Catalog, region: reprise_backup::Region) -> Arc<App> {
        Arc::new(App {
            config,
            catalog,
            region,
            refs: Default::default(),
            host: HostFacts::probe(),
            locks: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            job_finished: tokio::sync::Notify::new(),
        })
    }

    /// The lock of one instance (created on first use).
    pub fn instance_lock(&self, id: Uuid) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id).or_default().clone()
    }

    /// Wait for an instance's lock and hold it until the guard drops.
    pub async fn lock_instance(&self, id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        self.instance_lock(id).lock_owned().await
    }

    pub fn run_paths(&self, id: Uuid) -> reprise_qemu::cmdline::RunPaths {
        reprise_qemu::cmdline::RunPaths::new(self.config.instance_run_dir(id))
    }
}
