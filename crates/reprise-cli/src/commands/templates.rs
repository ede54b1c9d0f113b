//! `reprise template`: golden images to deploy instances from.

use super::jobs::follow;
use super::uploads::Files;
use super::{print_json, print_list, Ctx};
use crate::output::{fields, out, outln, size, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum TemplateCmd {
    /// Make a template from a snapshot (no data is copied).
    Create {
        name: String,
        #[arg(long)]
        from_snapshot: String,
    },
    /// Import a qcow2 or raw image file: uploaded from this machine, then
    /// checked and converted under resource limits (images are untrusted
    /// input).
    Import {
        name: String,
        #[arg(long)]
        file: String,
        /// FILE names a file on the daemon's host, below its import_dirs
        /// (admin only), instead of a file to upload.
        #[arg(long)]
        on_server: bool,
    },
    List {
        /// The deleted ones still in their undelete window, instead.
        #[arg(long)]
        deleted: bool,
    },
    Show {
        template: String,
    },
    /// Delete a template; instances made from it keep their volumes. It
    /// can be undeleted for the undelete window, then goes for good.
    Delete {
        template: String,
    },
    /// Bring a deleted template back.
    Undelete {
        template: String,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: TemplateCmd) -> Result<()> {
    let c = &ctx.client;
    let shown: Template = match cmd {
        TemplateCmd::Create {
            name,
            from_snapshot,
        } => c.create_template(&CreateTemplate {
            name,
            snapshot: from_snapshot,
        })?,
        TemplateCmd::List { deleted } => {
            let list = if deleted {
                c.deleted_templates()?
            } else {
                c.templates()?
            };
            print_list(
                ctx,
                &list,
                &["NAME", "SIZE", "CHUNKS", "FROM", "CREATED", "ID"],
                |t| {
                    let mut name = t.name.clone();
                    if let Some(until) = &t.purge_after {
                        name = format!("{name} (deleted; until {})", time(until));
                    }
                    vec![
                        name,
                        size(t.size_bytes),
                        t.chunk_count.to_string(),
                        t.source_snapshot.clone(),
                        time(&t.created_at),
                        t.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        TemplateCmd::Undelete { template } => c.undelete_template(&template)?,
        TemplateCmd::Show { template } => c.template(&template)?,
        TemplateCmd::Import {
            name,
            file,
            on_server,
        } => {
            let mut files = Files::new(ctx, on_server);
            let (upload, file) = files.bring(Some(file))?;
            let job = c.import_template(&ImportTemplate { name, upload, file })?;
            let id = job.target_id;
            let shown = follow(ctx, job)?;
            drop(files);
            if !shown {
                return Ok(());
            }
            c.template(&id.to_string())?
        }
        TemplateCmd::Delete { template } => {
            if follow(ctx, c.delete_template(&template)?)? && !ctx.json {
                outln!("deleted");
            }
            return Ok(());
        }
    };
    if ctx.json {
        print_json(&shown);
    } else {
        out!(
            "{}",
            fields(&[
                ("id", shown.id.to_string()),
                ("name", shown.name.clone()),
                ("size", size(shown.size_bytes)),
                ("chunks", shown.chunk_count.to_string()),
                (
                    "from",
                    match shown.source_snapshot_id {
                        Some(_) => format!("snapshot {}", shown.source_snapshot),
                        None if shown.source_snapshot.starts_with("image:")
                            || shown.source_snapshot.starts_with("upload:") =>
                        {
                            shown.source_snapshot.clone()
                        }
                        None => format!("snapshot {} (deleted since)", shown.source_snapshot),
                    }
                ),
                ("created", time(&shown.created_at)),
            ])
        );
    }
    Ok(())
}
