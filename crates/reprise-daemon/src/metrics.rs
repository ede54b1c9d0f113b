//! Prometheus metrics, rendered from the catalog and the request counters
//! at each scrape.

use crate::app::App;
use reprise_core::model::InstanceState;
use reprise_core::Result;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub fn render(app: &App) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP reprise_http_requests_total HTTP requests served, by method and status."
    );
    let _ = writeln!(out, "# TYPE reprise_http_requests_total counter");
    for ((method, status), n) in app.metrics.requests() {
        let _ = writeln!(
            out,
            "reprise_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP reprise_instances Instances, by state.");
    let _ = writeln!(out, "# TYPE reprise_instances gauge");
    let instances = app.catalog.list_instances(None)?;
    for state in InstanceState::ALL {
        let n = instances.iter().filter(|i| i.state == *state).count();
        let _ = writeln!(out, "reprise_instances{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP reprise_jobs Jobs in the catalog, by state.");
    let _ = writeln!(out, "# TYPE reprise_jobs gauge");
    for (state, n) in app.catalog.count_jobs_by_state()? {
        let _ = writeln!(out, "reprise_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP reprise_jobs_started_total Jobs started since the daemon started."
    );
    let _ = writeln!(out, "# TYPE reprise_jobs_started_total counter");
    let _ = writeln!(
        out,
        "reprise_jobs_started_total {}",
        app.metrics.jobs_started.load(Ordering::Relaxed)
    );
    Ok(out)
}
