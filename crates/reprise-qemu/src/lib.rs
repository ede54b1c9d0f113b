//! Everything reprise says to QEMU.
//!
//! - [`qmp`]: the QEMU Machine Protocol client (commands, errors, events).
//! - [`agent`]: the qemu-guest-agent client, over the virtio-serial socket.
//! - [`cmdline`]: the QEMU command line of an instance, built as pure data.
//! - [`accel`]: choosing KVM or TCG for this host.
//! - [`img`]: `qemu-img` (create, info, resize, check).
//! - [`process`]: launching a daemonized QEMU and finding it again.
//! - [`cgroup`]: the control group each QEMU runs in, limited by its
//!   instance.
//!
//! Invariants: every call that waits on QEMU or on the guest has a timeout;
//! every message read from QEMU or the guest is capped in size
//! ([`read_line_capped`]), so a hostile guest cannot grow the daemon's
//! memory; a QEMU process is recognised by its pid *and* its `-uuid`
//! argument, so a recycled pid is never mistaken for an instance.

pub mod accel;
pub mod agent;
pub mod cgroup;
pub mod cmdline;
pub mod img;
pub mod process;
pub mod qmp;

pub use accel::{Accel, AccelSetting};

/// How one capped read of a line ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line (its newline included) is in the buffer.
    Whole,
    /// `max` bytes came without a newline: the buffer holds them; the rest
    /// of the line is still to read.
    TooLong,
    /// The peer closed the connection.
    Closed,
}

/// Read up to the next newline into `line` (cleared first), never more
/// than `max` bytes.
pub async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    line.clear();
    let n = reader.take(max as u64).read_until(b'\n', line).await?;
    Ok(match (n, line.last()) {
        (0, _) => Line::Closed,
        (_, Some(b'\n')) => Line::Whole,
        _ if n < max => Line::Closed,
        _ => Line::TooLong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_is_read_in_capped_pieces() {
        let mut flood = vec![b'x'; 10 << 20];
        flood.extend_from_slice(b"\n{\"return\": 1}\n");
        let mut reader = tokio::io::BufReader::new(&flood[..]);
        let mut line = Vec::new();
        let mut pieces = 0;
        loop {
            match read_line_capped(&mut reader, &mut line, 1 << 20)
                .await
                .unwrap()
            {
                Line::TooLong => {
                    assert_eq!(line.len(), 1 << 20, "never more than the cap");
                    pieces += 1;
                }
                Line::Whole if line == b"\n" => {}
                Line::Whole => break,
                Line::Closed => panic!("closed early"),
            }
        }
        assert_eq!(pieces, 10);
        assert_eq!(line, b"{\"return\": 1}\n");
        let mut tail = tokio::io::BufReader::new(&b"no newline"[..]);
        assert_eq!(
            read_line_capped(&mut tail, &mut line, 1 << 20)
                .await
                .unwrap(),
            Line::Closed
        );
    }
}
