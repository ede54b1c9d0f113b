//! The daemon's shared state: configuration, catalog, host facts, the
//! per-instance (and per-upload) locks, the metrics, and the background
//! garbage collector's trigger.
//!
//! Locking: every operation that talks to an instance's QEMU or changes its
//! volumes holds that instance's lock ([`App::instance_lock`]) for its whole
//! duration, so QMP sessions never interleave and the periodic reconciler
//! never judges an instance in the middle of an operation.

use crate::config::Config;
use crate::metrics::Metrics;
use reprise_catalog::Catalog;
use reprise_core::{Error, Result};
use reprise_qemu::accel::HostFacts;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
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
    /// When each key's use was last written to the catalog.
    key_touches: Mutex<HashMap<Uuid, Instant>>,
    /// Deletes ask for a collection here; see [`crate::gc`].
    pub gc_wanted: tokio::sync::Notify,
    /// Held while a collection runs: one at a time.
    pub gc_running: AsyncMutex<()>,
    pub seams: Seams,
    /// Where freezes' guards run (see [`crate::quiesce::Guard`]).
    pub freeze_guard: crate::quiesce::Guard,
    /// The instances' guest-agent connections ([`crate::agents`]).
    pub agents: Arc<crate::agents::AgentLinks>,
    /// The client that sends requests on to other hosts ([`crate::forward`]).
    forwarder: std::sync::OnceLock<reqwest::Client>,
    /// The region's hosts as last read, and when ([`crate::hosts::known`]).
    pub(crate) hosts_seen: Mutex<Option<(Instant, Vec<reprise_catalog::HostRow>)>>,
    /// The host's control groups, when QEMUs run in groups of their own.
    pub cgroups: Option<reprise_qemu::cgroup::Hierarchy>,
    /// Held while a QEMU is judged against the host's RAM and started.
    pub(crate) launching: AsyncMutex<()>,
    /// Marks of requests sent on to this host, already accepted.
    pub(crate) marks_used: crate::once::UsedOnce,
}

/// Where tests widen a daemon's windows. The product runs with the
/// default (no pause anywhere); no config file can set these: only code
/// that starts the daemon ([`crate::start_with_seams`]).
#[derive(Clone, Debug, Default)]
pub struct Seams {
    /// A pause after each chunk a backup reads, so it lasts long enough to
    /// be raced or interrupted.
    pub chunk_pause: Duration,
    /// A pause with the guest frozen, before the cut.
    pub hold_frozen: Duration,
    /// A pause after each chunk a sweep deletes.
    pub sweep_pause: Duration,
}

/// How often a key's last use is written: a busy client is not a write per
/// request.
const KEY_TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The catalog's sweep lock as garbage collection uses it.
struct SweepLockOf(reprise_catalog::SweepLock);

impl reprise_backup::RegionSweepLock for SweepLockOf {
    fn share(&self) -> Result<u64> {
        self.0.share().map_err(lock_err)
    }
    fn unshare(&self) {
        self.0.unshare()
    }
    fn exclusive(&self) -> Result<u64> {
        self.0.exclusive().map_err(lock_err)
    }
    fn unexclusive(&self) {
        self.0.unexclusive()
    }
    fn still_held(&self, generation: u64) -> bool {
        self.0.still_held(generation)
    }
}

fn lock_err(e: reprise_catalog::db::DbError) -> Error {
    Error::unavailable(
        "catalog_unavailable",
        format!("the region's sweep lock: {e}"),
    )
    .with_source(e)
}

/// What opening the region's store takes.
pub struct RegionSpec {
    pub store: reprise_store::Store,
    pub secret: [u8; 32],
    pub encrypt: bool,
}

impl App {
    pub fn new(
        config: Config,
        catalog: Catalog,
        region_spec: RegionSpec,
        seams: Seams,
    ) -> Result<Arc<App>> {
        let cgroups = config
            .qemu
            .cgroups
            .then(|| reprise_qemu::cgroup::Hierarchy::probe(std::path::Path::new("/sys/fs/cgroup")))
            .flatten();
        match &cgroups {
            Some(h) => tracing::info!(?h, "each QEMU runs in a control group of its own"),
            None if config.qemu.cgroups => tracing::warn!(
                "no control group hierarchy this daemon may write (cgroup v2 with memory and cpu, or v1's memory and cpu): QEMUs run without limits of their own"
            ),
            None => {}
        }
        let refs = match catalog.sweep_lock()? {
            Some(lock) => reprise_backup::Refs::shared_with(Arc::new(SweepLockOf(lock))),
            None => reprise_backup::Refs::default(),
        };
        Ok(Arc::new(App {
            config,
            catalog,
            region: tokio::sync::OnceCell::new(),
            region_spec,
            refs: Arc::new(refs),
            host: HostFacts::probe(),
            locks: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            job_finished: tokio::sync::Notify::new(),
            key_touches: Mutex::new(HashMap::new()),
            gc_wanted: tokio::sync::Notify::new(),
            gc_running: AsyncMutex::new(()),
            seams,
            freeze_guard: crate::quiesce::default_guard(),
            agents: Arc::default(),
            forwarder: std::sync::OnceLock::new(),
            hosts_seen: Mutex::new(None),
            marks_used: Default::default(),
            launching: AsyncMutex::new(()),
            cgroups,
        }))
    }

    /// The key of the marks on requests sent between the region's daemons
    /// (derived from the region's secret, which every daemon has).
    /// The key CloudStack secret keys are sealed with in the catalog.
    pub fn cloudstack_seal_key(&self) -> [u8; 32] {
        blake3::derive_key(
            "reprise 2026-12 CloudStack secret key sealed in the catalog",
            &self.region_spec.secret,
        )
    }

    pub fn forward_key(&self) -> [u8; 32] {
        blake3::derive_key(
            "reprise 2026-12 request sent on to its host",
            &self.region_spec.secret,
        )
    }

    /// The client for requests sent on to other hosts: a host that does
    /// not connect fails the request (`host_unreachable`); one that falls
    /// silent is given up by `forward::send_on`.
    pub fn forwarder(&self) -> &reqwest::Client {
        self.forwarder.get_or_init(|| {
            let http = &self.config.http;
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(http.peer_connect_secs))
                .build()
                .unwrap_or_else(|e| {
                    tracing::warn!("the forwarder's timeouts: {e}; sent on without them");
                    reqwest::Client::new()
                })
        })
    }

    /// The name of this daemon's host.
    pub fn host_name(&self) -> &str {
        &self.config.host.name
    }

    /// The region's store, opened (and its settings and key checked) on
    /// first success; while it is unreachable, every call tries again and
    /// fails with `object_store_unavailable`, and the rest of the daemon
    /// works on.
    pub async fn region(&self) -> reprise_core::Result<&reprise_backup::Region> {
        self.region
            .get_or_try_init(|| async {
                let spec = &self.region_spec;
                let mut region = reprise_backup::Region::open_pinned(
                    spec.store.clone(),
                    &spec.secret,
                    spec.encrypt,
                    self.config.region.legacy_unsealed_manifests,
                )
                .await?;
                region.chunk_pause = self.seams.chunk_pause;
                region.sweep_pause = self.seams.sweep_pause;
                region.sweep_grace = Duration::from_secs(self.config.gc.grace_minutes * 60);
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
    pub async fn lock_instance(&self, id: Uuid) -> OwnedMutexGuard<()> {
        self.instance_lock(id).lock_owned().await
    }

    /// A place in the queue for an instance's lock, taken now: the jobs of
    /// one instance run in the order they were asked for, whenever their
    /// tasks get to run (a stop asked after a point waits for the point).
    pub fn queue_for_instance(&self, id: Uuid) -> InstanceTurn {
        let mut acquire: Acquire = Box::pin(self.instance_lock(id).lock_owned());
        // Polled once, it joins the lock's first-come queue; it keeps its
        // place until it is awaited (the job's task) or dropped.
        let waker = futures::task::noop_waker();
        match acquire
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            std::task::Poll::Ready(guard) => InstanceTurn::Held(guard),
            std::task::Poll::Pending => InstanceTurn::Waiting(acquire),
        }
    }

    /// Wait for an upload's lock: one writer at a time.
    pub async fn lock_upload(&self, id: Uuid) -> OwnedMutexGuard<()> {
        self.instance_lock(id).lock_owned().await
    }

    /// Record that a key was used, at most once a minute per key.
    pub fn touch_key(&self, key: Uuid) {
        let now = Instant::now();
        {
            let mut touches = self.key_touches.lock().unwrap_or_else(|p| p.into_inner());
            if touches
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < KEY_TOUCH_EVERY)
            {
                return;
            }
            touches.insert(key, now);
        }
        if let Err(e) = self.catalog.touch_key(key) {
            tracing::warn!(key = %key, "cannot record the key's use: {e}");
        }
    }

    /// Ask for a garbage collection of the region's store; it runs in the
    /// background, after deletes stop coming (see [`crate::gc`]).
    pub fn request_gc(&self) {
        self.gc_wanted.notify_one();
    }

    /// The region's hosts as the catalog said at most `fresh` ago, read
    /// again when older or when `enough` says they lack what is wanted.
    pub fn hosts_known(
        &self,
        fresh: Duration,
        enough: impl Fn(&[reprise_catalog::HostRow]) -> bool,
    ) -> reprise_core::Result<Vec<reprise_catalog::HostRow>> {
        let mut seen = self.hosts_seen.lock().unwrap_or_else(|p| p.into_inner());
        let stale = seen
            .as_ref()
            .is_none_or(|(at, hosts)| at.elapsed() > fresh || !enough(hosts));
        if stale {
            *seen = Some((Instant::now(), self.catalog.list_hosts()?));
        }
        Ok(seen.as_ref().map(|(_, h)| h.clone()).unwrap_or_default())
    }

    /// The host directories whose paths a tenant must not see.
    fn host_prefixes(&self) -> Vec<String> {
        let mut dirs = vec![self.config.data_dir.clone(), self.config.region_store_dir()];
        dirs.extend(self.config.import_dirs.iter().cloned());
        if let Ok(zones) = self.catalog.list_zones() {
            dirs.extend(zones.into_iter().map(|z| z.storage_dir.into()));
        }
        let mut out: Vec<String> = dirs
            .into_iter()
            .flat_map(|d| {
                let canonical = std::fs::canonicalize(&d).ok();
                [Some(d), canonical].into_iter().flatten()
            })
            .map(|d| d.to_string_lossy().trim_end_matches('/').to_string())
            .filter(|d| d.len() > 1)
            .collect();
        // Longest first, so a zone inside the data directory goes whole.
        out.sort_by_key(|d| std::cmp::Reverse(d.len()));
        out.dedup();
        out
    }

    /// `text` with every host directory reprise uses replaced by `…`: what
    /// a tenant may read of an error or a job's log.
    /// The region's hosts are named and reached nowhere in it either, nor
    /// is the region's store.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for prefix in self.host_prefixes() {
            out = out.replace(&prefix, "…");
        }
        let store = self.region_spec.store.label();
        if !store.is_empty() {
            out = out.replace(store, "the region's store");
        }
        let hosts = self
            .hosts_known(Duration::from_secs(1), |_| true)
            .unwrap_or_default();
        for h in hosts {
            out = out
                .replace(&h.address, "…")
                .replace(&format!("host '{}'", h.name), "its host")
                .replace(&format!("on '{}'", h.name), "on another host");
        }
        out
    }

    pub fn run_paths(&self, id: Uuid) -> reprise_qemu::cmdline::RunPaths {
        reprise_qemu::cmdline::RunPaths::new(self.config.instance_run_dir(id))
    }
}

/// An instance job's place in its instance's lock queue
/// ([`App::queue_for_instance`]).
pub enum InstanceTurn {
    Held(OwnedMutexGuard<()>),
    Waiting(Acquire),
}

/// The wait for an instance's lock, queued.
type Acquire = Pin<Box<dyn Future<Output = OwnedMutexGuard<()>> + Send>>;

impl InstanceTurn {
    /// The instance's lock, when this turn comes.
    pub async fn wait(self) -> OwnedMutexGuard<()> {
        match self {
            InstanceTurn::Held(guard) => guard,
            InstanceTurn::Waiting(acquire) => acquire.await,
        }
    }
}
