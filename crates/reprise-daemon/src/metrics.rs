//! Prometheus metrics, kept with `prometheus-client` and rendered in the
//! OpenMetrics text format at each scrape.
//!
//! Counters and histograms are updated where things happen (requests,
//! jobs, backups, restores, collections, uploads); gauges of what the
//! catalog holds (instances and jobs by state) are set at each scrape.
//! `/metrics` answers the admin key only, or anyone on the operator's own
//! `metrics_listen` address.

use crate::app::App;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use reprise_core::model::InstanceState;
use reprise_core::Result;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Durations from 10 ms to about 3 hours.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.5, 14))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    jobs: Family<Labels, Counter>,
    job_failures: Family<Labels, Counter>,
    job_seconds: Histograms,
    backup_read_bytes: Counter,
    backup_new_bytes: Counter,
    restore_bytes: Counter,
    gc_seconds: Histogram,
    gc_deleted_chunks: Counter,
    gc_freed_bytes: Counter,
    store_orphans: Gauge,
    upload_bytes: Counter,
    instances: Family<Labels, Gauge>,
    jobs_by_state: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reprise");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method and status",
            requests.clone(),
        );
        let jobs = Family::<Labels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs that ended, by kind and outcome",
            jobs.clone(),
        );
        let job_failures = Family::<Labels, Counter>::default();
        registry.register(
            "job_failures",
            "Jobs that failed, by kind and error code",
            job_failures.clone(),
        );
        let job_seconds = Histograms::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "job_duration_seconds",
            "How long jobs ran, by kind (snapshot.create is a backup, volume.create a restore…)",
            job_seconds.clone(),
        );
        let backup_read_bytes = Counter::default();
        registry.register(
            "backup_read_bytes",
            "Guest bytes read by volume-snapshot backups",
            backup_read_bytes.clone(),
        );
        let backup_new_bytes = Counter::default();
        registry.register(
            "backup_new_bytes",
            "Bytes of new chunks backups wrote to the region's store",
            backup_new_bytes.clone(),
        );
        let restore_bytes = Counter::default();
        registry.register(
            "restore_bytes",
            "Guest bytes of volumes restored from snapshots and templates",
            restore_bytes.clone(),
        );
        let gc_seconds = duration_histogram();
        registry.register(
            "gc_duration_seconds",
            "How long garbage collections of the region's store took",
            gc_seconds.clone(),
        );
        let gc_deleted_chunks = Counter::default();
        registry.register(
            "gc_deleted_chunks",
            "Chunks garbage collection removed",
            gc_deleted_chunks.clone(),
        );
        let gc_freed_bytes = Counter::default();
        registry.register(
            "gc_freed_bytes",
            "Bytes garbage collection freed in the region's store",
            gc_freed_bytes.clone(),
        );
        let store_orphans = Gauge::default();
        registry.register(
            "store_orphans",
            "Snapshots and templates the region's store holds that the catalog does not know, as the last sweep found them (kept; `reprise region recover` brings them back)",
            store_orphans.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register(
            "upload_bytes",
            "Bytes received by uploads",
            upload_bytes.clone(),
        );
        let instances = Family::<Labels, Gauge>::default();
        registry.register("instances", "Instances, by state", instances.clone());
        let jobs_by_state = Family::<Labels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the catalog, by state",
            jobs_by_state.clone(),
        );
        Metrics {
            registry,
            requests,
            jobs,
            job_failures,
            job_seconds,
            backup_read_bytes,
            backup_new_bytes,
            restore_bytes,
            gc_seconds,
            gc_deleted_chunks,
            gc_freed_bytes,
            store_orphans,
            upload_bytes,
            instances,
            jobs_by_state,
        }
    }
}

impl Metrics {
    pub fn count_request(&self, method: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// A job ended: `Err(code)` when it failed.
    pub fn job_finished(&self, kind: &str, took: Duration, failed: Option<&str>) {
        let outcome = if failed.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        self.jobs
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        if let Some(code) = failed {
            self.job_failures
                .get_or_create(&vec![
                    ("kind", kind.to_string()),
                    ("code", code.to_string()),
                ])
                .inc();
        }
        self.job_seconds
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(took.as_secs_f64());
    }

    pub fn backed_up(&self, read_bytes: u64, new_bytes: u64) {
        self.backup_read_bytes.inc_by(read_bytes);
        self.backup_new_bytes.inc_by(new_bytes);
    }

    pub fn restored(&self, bytes: u64) {
        self.restore_bytes.inc_by(bytes);
    }

    pub fn collected(&self, took: Duration, chunks: u64, bytes: u64) {
        self.gc_seconds.observe(took.as_secs_f64());
        self.gc_deleted_chunks.inc_by(chunks);
        self.gc_freed_bytes.inc_by(bytes);
    }

    pub fn orphans(&self, count: u64) {
        self.store_orphans.set(count as i64);
    }

    pub fn uploaded(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }
}

/// The exposition text, with the catalog's gauges read now.
pub fn render(app: &App) -> Result<String> {
    let m = &app.metrics;
    let instances = app.catalog.list_instances(None)?;
    for state in InstanceState::ALL {
        let n = instances.iter().filter(|i| i.state == *state).count();
        m.instances
            .get_or_create(&vec![("state", state.to_string())])
            .set(n as i64);
    }
    for (state, n) in app.catalog.count_jobs_by_state()? {
        m.jobs_by_state
            .get_or_create(&vec![("state", state)])
            .set(n as i64);
    }
    let mut out = String::new();
    encode(&mut out, &m.registry).map_err(|e| {
        reprise_core::Error::internal(format!("encoding the metrics: {e}")).with_source(e)
    })?;
    Ok(out)
}
