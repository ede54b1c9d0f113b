//! `reprise job`, and following a job a command started.

use super::{print_json, print_list, Ctx};
use crate::output::{self, fields, out, outln, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;
use std::time::Duration;

#[derive(Subcommand)]
pub(super) enum JobCmd {
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Show {
        job: String,
    },
    /// Wait for a job to end.
    Wait {
        job: String,
    },
    /// Cancel a job that waits for its host (kept while the host is down).
    Cancel {
        job: String,
    },
}

/// Wait for a job with a progress bar, or print it with `--no-wait`.
/// Returns whether the job was waited for (and succeeded).
pub(super) fn follow(ctx: &Ctx, job: Job) -> Result<bool> {
    if ctx.no_wait {
        show_job(ctx, &job);
        return Ok(false);
    }
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {percent}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let result = ctx
        .client
        .wait_job(&job.id.to_string(), Duration::from_secs(3600), |j| {
            bar.set_message(format!("{} {} ({})", j.kind, j.target_name, j.state));
            bar.set_position((j.fraction() * 100.0) as u64);
        });
    bar.finish_and_clear();
    result.map(|_| true)
}

pub(super) fn show_job(ctx: &Ctx, j: &Job) {
    if ctx.json {
        return print_json(j);
    }
    let mut pairs = vec![
        ("id", j.id.to_string()),
        ("kind", j.kind.clone()),
        (
            "target",
            format!("{} {} ({})", j.target_kind, j.target_name, j.target_id),
        ),
        ("state", j.state.to_string()),
        (
            "progress",
            format!(
                "{}/{} ({:.0}%)",
                j.progress_done,
                j.progress_total,
                j.fraction() * 100.0
            ),
        ),
        ("created", time(&j.created_at)),
        (
            "started",
            j.started_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "finished",
            j.finished_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &j.error {
        pairs.push(("error", format!("{} [{}]", e.message, e.code)));
    }
    out!("{}", fields(&pairs));
    for line in &j.log {
        outln!("  {}  {}", output::time(&line.at), line.message);
    }
}

pub(super) fn run(ctx: &Ctx, cmd: JobCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        JobCmd::List { limit } => {
            let jobs = c.jobs(limit)?;
            print_list(
                ctx,
                &jobs,
                &["ID", "KIND", "TARGET", "STATE", "PROGRESS", "CREATED"],
                |j| {
                    vec![
                        j.id.to_string(),
                        j.kind.clone(),
                        j.target_name.clone(),
                        j.state.to_string(),
                        format!("{:.0}%", j.fraction() * 100.0),
                        time(&j.created_at),
                    ]
                },
            );
        }
        JobCmd::Show { job } => show_job(ctx, &c.job(&job)?),
        JobCmd::Cancel { job } => show_job(ctx, &c.cancel_job(&job)?),
        JobCmd::Wait { job } => {
            let j = c.job(&job)?;
            let waited = follow(
                &Ctx {
                    client: c.clone(),
                    json: ctx.json,
                    no_wait: false,
                },
                j,
            );
            let j = c.job(&job)?;
            show_job(ctx, &j);
            waited?;
        }
    }
    Ok(())
}
