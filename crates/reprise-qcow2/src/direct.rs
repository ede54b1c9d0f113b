//! Direct I/O (`O_DIRECT`) for volume data: bytes go between the disk and
//! reprise's own buffers without a copy in the page cache. A snapshot's
//! backup reads gigabytes once and a restore writes them once; through the
//! page cache each byte is copied once more (on this kind of host, that
//! copy into fresh pages was a third of a backup's CPU) and the cache is
//! filled with data nobody reads again.
//!
//! Direct I/O needs the buffer, the offset and the length aligned to the
//! device's logical block; [`ALIGN`] (4 KiB) is a multiple of every common
//! one. What is not aligned, and filesystems that refuse direct I/O
//! (`EINVAL`), go through the ordinary file instead: direct I/O is only
//! ever a faster path to the same bytes. Reads stay coherent with writes
//! still in the page cache (a running QEMU's, with a cache mode that has
//! one): the kernel writes those back before a direct read of the range.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The alignment of buffers, offsets and lengths for direct I/O.
pub const ALIGN: usize = 4096;

thread_local! {
    /// Each thread's aligned copy of bytes whose buffer is not aligned.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `file` opened once more, for direct reads or writes; `None` where the
/// filesystem does not take direct I/O.
pub fn reopen(file: &File, write: bool) -> Option<File> {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    rustix::fs::open(
        path.as_str(),
        access | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(File::from)
}

/// Whether `len` bytes at `offset` of a file can be moved with direct I/O.
pub fn fits(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN)
}

fn aligned(buf: &[u8]) -> bool {
    buf.as_ptr().align_offset(ALIGN) == 0
}

/// The first `len` bytes of `buf` from an [`ALIGN`]ed address, `buf`
/// grown to allow it: a buffer a thread keeps and reuses (its pages are
/// given memory only once written).
pub fn aligned_part(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len + ALIGN {
        *buf = vec![0; len + ALIGN];
    }
    let start = buf.as_ptr().align_offset(ALIGN);
    &mut buf[start..start + len]
}

/// `f` on an aligned buffer of `len` bytes, this thread's, reused.
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with_borrow_mut(|buf| f(aligned_part(buf, len)))
}

/// `Ok(false)` where the filesystem refused direct I/O (`EINVAL`).
fn done_unless_refused(r: std::io::Result<()>) -> std::io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read `buf.len()` bytes at `offset` of `direct` (the offset and length
/// [`fits`]). `Ok(false)`: the filesystem refused, nothing was read.
pub fn read_at(direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<bool> {
    let read = |into: &mut [u8]| done_unless_refused(direct.read_exact_at(into, offset));
    if aligned(buf) {
        return read(buf);
    }
    with_bounce(buf.len(), |bounce| {
        let done = read(bounce)?;
        if done {
            buf.copy_from_slice(bounce);
        }
        Ok(done)
    })
}

/// Write `bytes` at `offset` of `direct` (the offset and length [`fits`]).
/// `Ok(false)`: the filesystem refused, nothing was written.
pub fn write_at(direct: &File, bytes: &[u8], offset: u64) -> std::io::Result<bool> {
    let write = |from: &[u8]| done_unless_refused(direct.write_all_at(from, offset));
    if aligned(bytes) {
        return write(bytes);
    }
    with_bounce(bytes.len(), |bounce| {
        bounce.copy_from_slice(bytes);
        write(bounce)
    })
}

/// An image file read with direct I/O where the reads allow it: the
/// [`Source`](crate::Source) a backup reads a volume through.
pub struct DirectFile {
    file: File,
    direct: Option<File>,
}

impl DirectFile {
    pub fn new(file: File) -> DirectFile {
        let direct = reopen(&file, false);
        DirectFile { file, direct }
    }

    /// Whether aligned reads go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }
}

impl crate::Source for DirectFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> reprise_core::Result<()> {
        if let Some(direct) = self.direct.as_ref().filter(|_| fits(offset, buf.len())) {
            if read_at(direct, buf, offset).map_err(crate::image::io)? {
                return Ok(());
            }
        }
        crate::Source::read_at(&self.file, offset, buf)
    }

    fn size(&self) -> reprise_core::Result<u64> {
        crate::Source::size(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    #[test]
    fn direct_reads_and_writes_move_the_same_bytes_as_buffered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..64 * ALIGN).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let source = DirectFile::new(File::open(&path).unwrap());
        // Aligned and not, buffers and offsets: the same bytes either way.
        for (offset, len) in [
            (0, 4 * ALIGN),
            (ALIGN, 8 * ALIGN),
            (100, 5000),
            (ALIGN, 100),
        ] {
            let mut plain = vec![0u8; len + 1];
            source.read_at(offset as u64, &mut plain[1..]).unwrap();
            assert_eq!(plain[1..], data[offset..offset + len]);
            with_bounce(len, |aligned| {
                source.read_at(offset as u64, aligned).unwrap();
                assert_eq!(aligned[..], data[offset..offset + len]);
            });
        }
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        if let Some(direct) = reopen(&file, true) {
            let new = vec![9u8; 2 * ALIGN + 1];
            assert!(write_at(&direct, &new[1..], 3 * ALIGN as u64).unwrap());
            let back = std::fs::read(&path).unwrap();
            assert_eq!(back[3 * ALIGN..5 * ALIGN], new[1..]);
            assert_eq!(back[..3 * ALIGN], data[..3 * ALIGN]);
        }
    }
}
