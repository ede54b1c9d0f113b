//! `qemu-img`, for files no running QEMU holds (or read-only, with `-U`).

use reprise_core::{Error, Result};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Arguments of a program, from anything that converts to an `OsStr`.
macro_rules! os_args {
    ($($a:expr),* $(,)?) => { vec![$(OsString::from($a)),*] };
}
use tokio::process::Command;

/// All volumes use 64 KiB clusters: the qcow2 default, and the unit the
/// snapshot engine maps.
pub const CLUSTER_SIZE: u64 = 65536;

/// The QEMU programs reprise runs, as configured.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub system: PathBuf,
    pub img: PathBuf,
}

impl Default for Binaries {
    fn default() -> Self {
        Binaries {
            system: "qemu-system-x86_64".into(),
            img: "qemu-img".into(),
        }
    }
}

/// Run a QEMU program to completion; a missing program is `qemu_missing`,
/// a failure is `code` with the program's own stderr in the message.
pub async fn run(program: &Path, args: Vec<OsString>, code: &str) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| missing_or(program, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::unavailable(
            code.to_string(),
            format!(
                "{} failed ({}): {}",
                program.display(),
                out.status,
                stderr.trim()
            ),
        ));
    }
    Ok(out)
}

pub(crate) fn missing_or(program: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::unavailable(
            "qemu_missing",
            format!(
                "QEMU program '{}' not found: install QEMU (apt-get install qemu-system-x86 qemu-utils) or set its path in the config",
                program.display()
            ),
        )
    } else {
        Error::unavailable(
            "qemu_failed",
            format!("cannot run {}: {e}", program.display()),
        )
        .with_source(e)
    }
}

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    #[serde(rename = "cluster-size", default)]
    pub cluster_size: Option<u64>,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotInfo>,
}

/// An internal snapshot as `qemu-img info` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(rename = "vm-state-size", default)]
    pub vm_state_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    Create,
    Apply,
    Delete,
    /// Delete, leaving the clusters it frees allocated in the file rather
    /// than punching a hole for each (`pass-discard-snapshot=off`): qcow2
    /// reuses them for its next allocations. For a snapshot base replaced
    /// by a newer one, the freed clusters are the old copies of what the
    /// guest rewrote since; its next rewrites, copied on write from the
    /// newer base, take them again. The holes cost 0.1–0.2 ms each (the
    /// larger part of a base's rotation after an increment).
    DeleteReusingSpace,
}

impl ImageInfo {
    /// An external data file, which a qcow2 may name to read or write any
    /// host file: never accepted from outside.
    pub fn data_file(&self) -> Option<String> {
        self.format_specific
            .as_ref()?
            .pointer("/data/data-file")?
            .as_str()
            .map(str::to_string)
    }
}

impl Binaries {
    /// A new, empty qcow2 of `size` bytes with 64 KiB clusters.
    pub async fn create(&self, path: &Path, size: u64) -> Result<()> {
        let size = size.to_string();
        let cluster = format!("cluster_size={CLUSTER_SIZE}");
        run(
            &self.img,
            os_args!["create", "-q", "-f", "qcow2", "-o", &cluster, path, &size],
            "qemu_img_failed",
        )
        .await?;
        durable(path).await
    }

    /// `qemu-img info`; `-U` lets it read a file a running QEMU holds.
    pub async fn info(&self, path: &Path, format: Option<&str>) -> Result<ImageInfo> {
        let mut args = os_args!["info", "-U", "--output=json"];
        if let Some(f) = format {
            args.extend(os_args!["-f", f]);
        }
        args.push(path.into());
        let out = run(&self.img, args, "image_invalid").await?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::invalid(
                "image_invalid",
                format!("qemu-img info of {}: {e}", path.display()),
            )
            .with_source(e)
        })
    }

    /// Grow a qcow2 that no QEMU holds.
    pub async fn resize(&self, path: &Path, size: u64) -> Result<()> {
        let size = size.to_string();
        run(
            &self.img,
            os_args!["resize", "-q", "-f", "qcow2", path, &size],
            "qemu_img_failed",
        )
        .await?;
        durable(path).await
    }

    /// `qemu-img snapshot -c|-a|-d TAG` on a qcow2 no QEMU holds: create,
    /// apply (revert to) or delete an internal snapshot.
    pub async fn snapshot(&self, action: SnapshotAction, path: &Path, tag: &str) -> Result<()> {
        let flag = match action {
            SnapshotAction::Create => "-c",
            SnapshotAction::Apply => "-a",
            SnapshotAction::Delete | SnapshotAction::DeleteReusingSpace => "-d",
        };
        let mut args = os_args!["snapshot", "-q", flag, tag];
        match (action, path.to_str()) {
            (SnapshotAction::DeleteReusingSpace, Some(name)) => {
                // In QEMU's option syntax a comma inside a value is doubled.
                let name = name.replace(',', ",,");
                args.push("--image-opts".into());
                args.push(
                    format!("driver=qcow2,file.driver=file,file.filename={name},pass-discard-snapshot=off")
                        .into(),
                );
            }
            _ => args.push(path.into()),
        }
        run(&self.img, args, "qemu_img_failed").await?;
        durable(path).await
    }

    /// Repair a qcow2 no QEMU holds whose metadata update was cut
    /// (`qemu-img check -r all`): an internal snapshot made or deleted by
    /// `qemu-img snapshot` and cut by a crash or a power cut leaves
    /// refcounts that disagree with the references (leaked clusters) and
    /// `COPIED` flags that disagree with the refcounts; both are recomputed
    /// from the references, which the cut left whole. Returns (leaks,
    /// other errors) fixed; an image that stays inconsistent is an error.
    pub async fn repair(&self, path: &Path) -> Result<(u64, u64)> {
        let out = run(
            &self.img,
            os_args!["check", "-r", "all", "-f", "qcow2", "--output=json", path],
            "image_corrupt",
        )
        .await?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let fixed = |field: &str| {
            report
                .get(field)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let repaired = (fixed("leaks-fixed"), fixed("corruptions-fixed"));
        if repaired != (0, 0) {
            durable(path).await?;
        }
        Ok(repaired)
    }

    /// The internal snapshot tags of a qcow2 (readable while QEMU runs it).
    pub async fn snapshot_tags(&self, path: &Path) -> Result<Vec<String>> {
        let info = self.info(path, Some("qcow2")).await?;
        Ok(info.snapshots.iter().map(|s| s.name.clone()).collect())
    }

    /// Copy an image of format `format` into a new qcow2 with 64 KiB
    /// clusters.
    pub async fn convert_to_qcow2(&self, src: &Path, format: &str, dst: &Path) -> Result<()> {
        let cluster = format!("cluster_size={CLUSTER_SIZE}");
        run(
            &self.img,
            os_args!["convert", "-q", "-f", format, "-O", "qcow2", "-o", &cluster, src, dst],
            "qemu_img_failed",
        )
        .await?;
        durable(dst).await
    }
}

/// Make a file qemu-img wrote, and its directory entry, durable: fsync the
/// file (qemu-img's default cache mode for `convert` never flushes) and
/// the directory that names it. Every `qemu-img` call here that writes
/// returns only once its output would survive a power cut, so a state
/// that says a volume is whole is written after the volume is.
pub async fn durable(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sync_file_and_dir(&path))
        .await
        .map_err(|e| Error::internal(format!("fsync: {e}")).with_source(e))?
}

/// [`durable`], blocking.
pub fn sync_file_and_dir(path: &Path) -> Result<()> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| {
            Error::unavailable("io_error", format!("cannot sync {what}: {e}")).with_source(e)
        }
    };
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn qemu_io(path: &Path, cmd: &str) {
        let ok = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", cmd])
            .arg(path)
            .status()
            .expect("qemu-io runs");
        assert!(ok.success(), "qemu-io {cmd}");
    }

    /// A base tag over 4 MiB the guest then rewrote, deleted one way or the
    /// other: returns the tags left and the file's allocated bytes before and
    /// after the delete.
    async fn delete_rewritten_base(
        dir: &Path,
        name: &str,
        action: SnapshotAction,
    ) -> (Vec<String>, u64, u64) {
        let bin = Binaries::default();
        let path = dir.join(name);
        run(
            &bin.img,
            os_args!["create", "-q", "-f", "qcow2", &path, "16M"],
            "create",
        )
        .await
        .unwrap();
        qemu_io(&path, "write -P 1 0 4M");
        bin.snapshot(SnapshotAction::Create, &path, "base")
            .await
            .unwrap();
        qemu_io(&path, "write -P 2 0 4M");
        bin.snapshot(SnapshotAction::Create, &path, "newer")
            .await
            .unwrap();
        let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let before = allocated();
        bin.snapshot(action, &path, "base").await.unwrap();
        let after = allocated();
        let check = run(&bin.img, os_args!["check", "-q", &path], "check").await;
        assert!(check.is_ok(), "{name}: qemu-img check: {check:?}");
        (bin.snapshot_tags(&path).await.unwrap(), before, after)
    }

    #[tokio::test]
    async fn deleting_a_base_either_way_leaves_the_same_tags_and_a_clean_image() {
        let dir = tempfile::tempdir().unwrap();
        let (tags, before, after) =
            delete_rewritten_base(dir.path(), "plain.qcow2", SnapshotAction::Delete).await;
        assert_eq!(tags, ["newer"]);
        assert!(
            after + (4 << 20) <= before,
            "the freed 4 MiB are punched out: {before} → {after}"
        );

        // A comma in the path, which QEMU's option syntax must escape.
        let (tags, before, after) =
            delete_rewritten_base(dir.path(), "a,b.qcow2", SnapshotAction::DeleteReusingSpace)
                .await;
        assert_eq!(tags, ["newer"]);
        // (The new snapshot table may take a block more.)
        assert!(
            after >= before,
            "the freed clusters stay allocated for reuse: {before} → {after}"
        );
    }
}
