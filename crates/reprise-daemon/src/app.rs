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
    /// The region's object store, where volume snapshots live: opened at
    /// startup, or at first use when it was unreachable then (see
    /// [`App::region`]).
    region: tokio::sync::OnceCell<reprise_backup::Region>,
    region_spec: RegionSpec,
    /// Chunks that backups in progress reference (for garbage collection).
    pub refs: Arc<reprise_backup::Refs>,
    pub host: HostFacts,
    locks: Mutex<HashMap<Uuid, Arc<AsyncMutex<()>>>>,
    pub metrics: Metrics,
    /// Woken whenever a job reaches a final state (for long-polling).
    pub job_finished: tokio::sync::Notify,
}

/// What opening the region's store takes.
pub struct RegionSpec {
    pub store: reprise_store::Store,
    pub secret: [u8; 32],
    pub encrypt: bool,
    pub test_chunk_delay: std::time::Duration,
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
    pub fn new(config: Config, catalog: Catalog, region_spec: RegionSpec) -> Arc<App> {
        Arc::new(App {
            config,
            catalog,
            region: tokio::sync::OnceCell::new(),
            region_spec,
            refs: Default::default(),
            host: HostFacts::probe(),
            locks: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            job_finished: tokio::sync::Notify::new(),
        })
    }

    /// The region's store, opened (and its settings and key checked) on
    /// first success; while it is unreachable, every call tries again and
    /// fails with `object_store_unavailable`, and the rest of the daemon
    /// works on.
    pub async fn region(&self) -> reprise_core::Result<&reprise_backup::Region> {
        self.region
            .get_or_try_init(|| async {
                let spec = &self.region_spec;
                let mut region =
                    reprise_backup::Region::open(spec.store.clone(), &spec.secret, spec.encrypt)
                        .await?;
                region.test_chunk_delay = spec.test_chunk_delay;
                tracing::info!(
                    store = region.store.label(),
                    encrypted = spec.encrypt,
                    "region store opened"
                );
                Ok(region)
            })
            .await
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
