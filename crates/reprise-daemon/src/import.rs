//! The one path by which files enter the daemon: disk images (template
//! imports, root disks of new instances) and boot files (kernels, initrds).
//!
//! 1. **Name → open file.** A tenant names only its own Complete uploads.
//!    The admin may also name a host file, only below one of the config's
//!    `import_dirs`: it is opened with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from the import
//!    directory, so no `..`, symlink or path swapped between a check and a
//!    use can lead out of it, and from then on only the open file is read.
//!    Every refusal of a host path says the same thing whether or not the
//!    path exists, so it reveals nothing of the host.
//! 2. **Private copy.** The bytes are hard-linked (an upload, which is
//!    never written once Complete) or copied (a host file, from the open
//!    file) into `DATA_DIR/imports/` or the instance's boot directory,
//!    which the daemon alone owns. Tools only ever read that copy.
//! 3. **Judged by its bytes** ([`judge`]): qcow2, whose header reprise's
//!    own parser reads and refuses with a backing file, an external data
//!    file, encryption, unknown incompatible features, tables beyond the
//!    end of the file or a virtual size above the operator's cap; or raw.
//!    Other known formats are refused by name.
//! 4. **Converted** ([`convert`]) by `qemu-img` with the judged format
//!    given explicitly (`-f`), under `prlimit` (address space, CPU time,
//!    output size), after `qemu-img check` of a qcow2 under the same
//!    limits.

use crate::app::App;
use reprise_core::model::{Account, UploadState};
use reprise_core::{Error, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The most a kernel or an initrd may weigh.
pub const MAX_BOOT_FILE: u64 = 1 << 30;

/// A file a request named, open for reading.
pub struct Opened {
    file: File,
    /// The upload's own file, when it is one (hard-linked, not copied).
    upload_path: Option<PathBuf>,
    /// What to call it where a tenant may read: `upload:NAME` or
    /// `image:FILE NAME` (never a host path).
    pub label: String,
    pub len: u64,
}

impl Opened {
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// The refusal of a host path: the same words whatever the reason, so a
/// caller learns nothing of what the host holds.
fn host_path_refused(app: &App, caller: &Account, field: &str, path: &str) -> Error {
    let message = if caller.admin {
        let dirs: Vec<String> = app
            .config
            .import_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        format!(
            "{field} '{path}' is not a regular file below an import directory (import_dirs: {}); symlinks are not followed",
            if dirs.is_empty() { "none configured".to_string() } else { dirs.join(", ") }
        )
    } else {
        format!(
            "{field}: files on the daemon's host are not accepted from tenants: upload the file (POST /api/v1/uploads) and give the upload's id"
        )
    };
    Error::new(
        reprise_core::ErrorKind::Forbidden,
        "host_path_refused",
        message,
    )
}

/// Open what a request names for `field`: an upload of the caller's, or
/// (admin only) a host file below `import_dirs`. `Ok(None)`: neither given.
pub fn open(
    app: &App,
    caller: &Account,
    field: &str,
    upload: Option<&str>,
    host_path: Option<&str>,
) -> Result<Option<Opened>> {
    match (upload, host_path) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Error::invalid(
            "source_conflict",
            format!("give {field} as an upload or as a host file, not both"),
        )),
        (Some(id), None) => open_upload(app, caller, field, id).map(Some),
        (None, Some(path)) => open_host_file(app, caller, field, path).map(Some),
    }
}

/// The disk image a request names (an upload, or for the admin a host
/// file), opened and judged by its bytes against the daemon's size cap.
pub fn open_image(
    app: &App,
    caller: &Account,
    upload: Option<&str>,
    host_path: Option<&str>,
) -> Result<Option<(Opened, Judged)>> {
    let Some(opened) = open(app, caller, "image", upload, host_path)? else {
        return Ok(None);
    };
    let cap = app
        .config
        .images
        .max_virtual_size
        .min(crate::ops::MAX_VOLUME_SIZE);
    let judged = judge(opened.file(), &opened.label, cap)?;
    Ok(Some((opened, judged)))
}

/// Open a file the daemon itself keeps (an instance's own kernel, for a
/// clone): no tenant names it.
pub fn open_own(path: &Path, what: &str) -> Result<Opened> {
    let file = File::open(path).map_err(io_error(format!("cannot read the instance's {what}")))?;
    let len = file
        .metadata()
        .map_err(io_error(format!("cannot read the instance's {what}")))?
        .len();
    Ok(Opened {
        file,
        upload_path: None,
        label: what.to_string(),
        len,
    })
}

fn open_upload(app: &App, caller: &Account, field: &str, reference: &str) -> Result<Opened> {
    let u = app.catalog.upload(caller.id, reference)?;
    if u.state != UploadState::Complete {
        return Err(Error::conflict(
            "upload_incomplete",
            format!(
                "{field}: upload '{}' has {} of its {} bytes: finish it first",
                u.name, u.received_bytes, u.size_bytes
            ),
        ));
    }
    let path = crate::ops::uploads::file_of(app, u.id);
    let file = File::open(&path).map_err(|e| {
        Error::unavailable(
            "upload_unavailable",
            format!("{field}: upload '{}' cannot be read: {e}", u.name),
        )
        .with_source(e)
    })?;
    Ok(Opened {
        file,
        upload_path: Some(path),
        label: format!("upload:{}", u.name),
        len: u.size_bytes,
    })
}

fn open_host_file(app: &App, caller: &Account, field: &str, path: &str) -> Result<Opened> {
    let refused = || host_path_refused(app, caller, field, path);
    if !caller.admin {
        return Err(refused());
    }
    let wanted = Path::new(path);
    for dir in &app.config.import_dirs {
        let Ok(rest) = wanted.strip_prefix(dir) else {
            continue;
        };
        if rest.as_os_str().is_empty() {
            continue;
        }
        let Ok(dirfd) = File::open(dir) else {
            continue;
        };
        let opened = rustix::fs::openat2(
            &dirfd,
            rest,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        );
        let Ok(fd) = opened else { continue };
        let file = File::from(fd);
        let Ok(meta) = file.metadata() else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        let name = wanted
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Opened {
            file,
            upload_path: None,
            label: format!("image:{name}"),
            len: meta.len(),
        });
    }
    Err(refused())
}

/// A private copy of an imported file; removed when dropped unless kept.
pub struct Staged {
    pub path: PathBuf,
    keep: bool,
}

impl Staged {
    /// Keep the file (it became part of a resource).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::unavailable("io_error", format!("{what}: {e}")).with_source(e)
}

fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("cannot create {}", dir.display())))
}

/// Put a private copy of `opened` at `dest` (a path in a directory the
/// daemon owns): a hard link of an upload, else a copy of the open file's
/// bytes, at most `max` of them. Blocking: call from a blocking task for
/// large host files.
pub fn stage(opened: &Opened, dest: &Path, max: u64) -> Result<Staged> {
    if let Some(parent) = dest.parent() {
        private_dir(parent)?;
    }
    if opened.len > max {
        return Err(Error::invalid(
            "file_too_large",
            format!(
                "{} is {} bytes, above the limit of {}",
                opened.label,
                opened.len,
                reprise_core::size::format_size(max)
            ),
        ));
    }
    let staged = Staged {
        path: dest.to_path_buf(),
        keep: false,
    };
    if let Some(src) = &opened.upload_path {
        if std::fs::hard_link(src, dest).is_ok() {
            return Ok(staged);
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io_error(format!("cannot create {}", dest.display())))?;
    // The open file's cursor is still at its start: `judge` reads at
    // offsets, and this is the one sequential read.
    let mut from = std::io::Read::take(&opened.file, max.saturating_add(1));
    let copied = std::io::copy(&mut from, &mut out)
        .map_err(io_error(format!("cannot copy {}", opened.label)))?;
    if copied > max {
        return Err(Error::invalid(
            "file_too_large",
            format!("{} grew above the limit while it was copied", opened.label),
        ));
    }
    out.sync_all()
        .map_err(io_error(format!("cannot write {}", dest.display())))?;
    Ok(staged)
}

/// What an image is, judged from its own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// `qcow2` or `raw`: given to qemu-img explicitly.
    pub format: &'static str,
    /// The disk it holds, in bytes (a raw image's size, rounded up to a
    /// sector).
    pub virtual_size: u64,
}

/// Formats refused by name rather than taken for raw disks.
const OTHER_FORMATS: &[(&[u8], usize, &str)] = &[
    (b"KDMV", 0, "VMDK"),
    (b"# Disk DescriptorFile", 0, "VMDK"),
    (b"vhdxfile", 0, "VHDX"),
    (b"conectix", 0, "VHD"),
    (b"QED\0", 0, "QED"),
    (b"LUKS\xba\xbe", 0, "LUKS"),
    (b"\x7f\x10\xda\xbe", 0x40, "VDI"),
];

/// Judge an image by its bytes: qcow2 (its header checked) or raw. `label`
/// names it in errors; `max_virtual` is the operator's cap.
pub fn judge(file: &File, label: &str, max_virtual: u64) -> Result<Judged> {
    let len = file
        .metadata()
        .map_err(io_error(format!("cannot read {label}")))?
        .len();
    let mut head = vec![0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read_at(&mut head[got..], got as u64)
            .map_err(io_error(format!("cannot read {label}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    let refused = |code: &str, why: String| {
        Error::invalid(code.to_string(), format!("image {label} is refused: {why}"))
    };
    let judged = if head.starts_with(&reprise_qcow2::header::MAGIC.to_be_bytes()) {
        let checked = reprise_qcow2::Header::parse(&head).and_then(|h| {
            h.check_within(len)?;
            Ok(h)
        });
        match checked {
            Ok(h) => Judged {
                format: "qcow2",
                virtual_size: h.size,
            },
            Err(e) if e.code == "qcow2_corrupt" => {
                return Err(refused(
                    "image_corrupt",
                    format!("it is corrupt ({})", e.message),
                ))
            }
            Err(e) => return Err(refused("image_unsafe", e.message)),
        }
    } else if let Some((_, _, name)) = OTHER_FORMATS
        .iter()
        .find(|(magic, at, _)| head.get(*at..*at + magic.len()) == Some(magic))
    {
        return Err(refused(
            "image_format_unsupported",
            format!("it is a {name} image; convert it to qcow2 or raw first"),
        ));
    } else {
        Judged {
            format: "raw",
            virtual_size: len.div_ceil(512) * 512,
        }
    };
    if judged.virtual_size == 0 {
        return Err(refused("image_corrupt", "it is empty".into()));
    }
    if judged.virtual_size > max_virtual {
        return Err(refused(
            "image_too_large",
            format!(
                "a virtual size of {} bytes is above the limit of {} (images.max_virtual_size)",
                judged.virtual_size,
                reprise_core::size::format_size(max_virtual)
            ),
        ));
    }
    Ok(judged)
}

/// Resource limits for `qemu-img` on an untrusted image: address space and
/// CPU time, so a crafted image (huge tables, endless chains) cannot take
/// the host down; the output file is capped too.
const LIMIT_AS: u64 = 2 << 30;
const LIMIT_CPU_SECS: u64 = 3600;

async fn limited_qemu_img(
    app: &App,
    args: &[&std::ffi::OsStr],
    max_output: u64,
    code: &str,
) -> Result<()> {
    let mut all: Vec<std::ffi::OsString> = vec![
        format!("--as={LIMIT_AS}").into(),
        format!("--cpu={LIMIT_CPU_SECS}").into(),
        format!("--fsize={max_output}").into(),
        "--".into(),
        app.config.qemu.img.clone().into(),
    ];
    all.extend(args.iter().map(|a| a.to_os_string()));
    reprise_qemu::img::run(Path::new("prlimit"), all, code)
        .await
        .map(|_| ())
}

/// Convert a judged private copy into a qcow2 at `dest` (64 KiB clusters),
/// after checking a qcow2's metadata, under resource limits; durable (file
/// and directory) when this returns.
pub async fn convert(app: &App, judged: Judged, src: &Path, dest: &Path) -> Result<()> {
    let max_output = judged.virtual_size.saturating_add(1 << 30);
    if judged.format == "qcow2" {
        limited_qemu_img(
            app,
            &[
                "check".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                src.as_os_str(),
            ],
            1 << 20,
            "image_corrupt",
        )
        .await
        .map_err(|e| {
            Error::invalid(
                "image_corrupt",
                format!("the image's qcow2 metadata is damaged: {}", e.message),
            )
            .with_source(e)
        })?;
    }
    limited_qemu_img(
        app,
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            judged.format.as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            "-o".as_ref(),
            "cluster_size=65536".as_ref(),
            src.as_os_str(),
            dest.as_os_str(),
        ],
        max_output,
        "image_import_failed",
    )
    .await?;
    // A root volume made from the image is Ready once this returns: its
    // bytes must be on disk first (the power-cut campaign found them lost).
    reprise_qemu::img::durable(dest).await
}

/// The private path an import works on.
pub fn staging_path(app: &App, id: Uuid, what: &str) -> PathBuf {
    app.config.imports_dir().join(format!("{id}.{what}"))
}

/// Make the qcow2 `dest` from an opened image judged `expected`: a private
/// copy (named by `id`), judged again (a host file may have changed since),
/// checked and converted. The private copy is removed after.
pub async fn import_image(
    app: &App,
    opened: Opened,
    expected: Judged,
    id: Uuid,
    dest: &Path,
) -> Result<()> {
    let src = staging_path(app, id, "src");
    let label = opened.label.clone();
    let staged = tokio::task::spawn_blocking(move || stage(&opened, &src, u64::MAX))
        .await
        .map_err(|e| Error::internal(format!("import: {e}")).with_source(e))??;
    let file =
        File::open(&staged.path).map_err(io_error(format!("cannot read the copy of {label}")))?;
    let judged = judge(
        &file,
        &label,
        app.config
            .images
            .max_virtual_size
            .min(crate::ops::MAX_VOLUME_SIZE),
    )?;
    if judged != expected {
        return Err(Error::conflict(
            "image_changed",
            format!("{label} changed while it was imported: import it again"),
        ));
    }
    convert(app, judged, &staged.path, dest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        (dir, File::open(path).unwrap())
    }

    fn qcow2_header(size: u64) -> Vec<u8> {
        let mut b = vec![0u8; 0x40000];
        b[0..4].copy_from_slice(&reprise_qcow2::header::MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&4096u32.to_be_bytes());
        b[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        b[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        b
    }

    #[test]
    fn images_are_judged_by_their_bytes() {
        let (_d, f) = file_with(&qcow2_header(1 << 30));
        assert_eq!(
            judge(&f, "x", 1 << 40).unwrap(),
            Judged {
                format: "qcow2",
                virtual_size: 1 << 30
            }
        );
        let (_d, f) = file_with(&[1u8; 1000]);
        assert_eq!(
            judge(&f, "x", 1 << 40).unwrap(),
            Judged {
                format: "raw",
                virtual_size: 1024
            }
        );
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                qcow2_header(1 << 30)[..200].to_vec(),
                "image_corrupt",
                "beyond the end",
            ),
            (qcow2_header(1 << 41), "image_too_large", "max_virtual_size"),
            (
                {
                    let mut b = qcow2_header(1 << 30);
                    b[8..16].copy_from_slice(&0x200u64.to_be_bytes());
                    b
                },
                "image_unsafe",
                "backing file",
            ),
            (
                b"KDMV and more".to_vec(),
                "image_format_unsupported",
                "VMDK",
            ),
            (Vec::new(), "image_corrupt", "empty"),
        ];
        for (bytes, code, words) in cases {
            let (_d, f) = file_with(&bytes);
            let e = judge(&f, "x", 1 << 40).unwrap_err();
            assert_eq!(e.code, code, "{words}: {}", e.message);
            assert!(e.message.contains(words), "{words}: {}", e.message);
        }
    }
}
