//! `reprise upload`, and the files other commands bring to the daemon.

use super::instances::absolute;
use super::{print_json, print_list, Ctx};
use crate::output::{fields, opt, out, outln, size, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum UploadCmd {
    /// Send a file; prints the upload (its id is what imports take).
    Create {
        file: PathBuf,
    },
    List,
    Show {
        upload: String,
    },
    Delete {
        upload: String,
    },
}

/// Upload a local file with a progress bar (quiet with --json).
pub(super) fn send_file(ctx: &Ctx, path: &std::path::Path) -> Result<Upload> {
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(path.display().to_string());
    let sent = ctx.client.upload(path, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    sent
}

pub(super) fn run(ctx: &Ctx, cmd: UploadCmd) -> Result<()> {
    let c = &ctx.client;
    let u: Upload = match cmd {
        UploadCmd::Create { file } => send_file(ctx, &file)?,
        UploadCmd::List => {
            let list = c.uploads()?;
            print_list(
                ctx,
                &list,
                &["NAME", "STATE", "SIZE", "RECEIVED", "CREATED", "ID"],
                |u| {
                    vec![
                        u.name.clone(),
                        u.state.to_string(),
                        size(u.size_bytes),
                        size(u.received_bytes),
                        time(&u.created_at),
                        u.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        UploadCmd::Show { upload } => c.upload_status(&upload)?,
        UploadCmd::Delete { upload } => {
            c.delete_upload(&upload)?;
            if !ctx.json {
                outln!("upload {upload} deleted");
            }
            return Ok(());
        }
    };
    if ctx.json {
        print_json(&u);
        return Ok(());
    }
    out!(
        "{}",
        fields(&[
            ("id", u.id.to_string()),
            ("name", u.name.clone()),
            ("state", u.state.to_string()),
            (
                "size",
                format!("{} ({} bytes)", size(u.size_bytes), u.size_bytes)
            ),
            ("received", u.received_bytes.to_string()),
            ("sha256", opt(&u.sha256)),
            ("created", time(&u.created_at)),
        ])
    );
    Ok(())
}

/// Files a command brings to the daemon: uploaded (and their uploads
/// deleted once used), or, with --on-server, host paths for the admin.
pub(super) struct Files<'a> {
    ctx: &'a Ctx,
    on_server: bool,
    sent: Vec<Upload>,
}

impl<'a> Files<'a> {
    pub(super) fn new(ctx: &'a Ctx, on_server: bool) -> Self {
        Files {
            ctx,
            on_server,
            sent: Vec::new(),
        }
    }

    /// `(upload id, host path)` for one file argument.
    pub(super) fn bring(
        &mut self,
        file: Option<String>,
    ) -> Result<(Option<String>, Option<String>)> {
        match file {
            None => Ok((None, None)),
            Some(f) if self.on_server => Ok((None, Some(absolute(f)))),
            Some(f) => {
                let u = send_file(self.ctx, std::path::Path::new(&f))?;
                let id = u.id.to_string();
                self.sent.push(u);
                Ok((Some(id), None))
            }
        }
    }
}

impl Drop for Files<'_> {
    /// The daemon keeps its own copy of what it took: the uploads go.
    fn drop(&mut self) {
        for u in &self.sent {
            let _ = self.ctx.client.delete_upload(&u.id.to_string());
        }
    }
}
