//! Everything reprise says to QEMU.
//!
//! - [`qmp`]: the QEMU Machine Protocol client (commands, errors, events).
//! - [`agent`]: the qemu-guest-agent client, over the virtio-serial socket.
//! - [`cmdline`]: the QEMU command line of an instance, built as pure data.
//! - [`accel`]: choosing KVM or TCG for this host.
//! - [`img`]: `qemu-img` (create, info, resize, check).
//! - [`process`]: launching a daemonized QEMU and finding it again.
//!
//! Invariants: every call that waits on QEMU or on the guest has a timeout;
//! a QEMU process is recognised by its pid *and* its `-uuid` argument, so a
//! recycled pid is never mistaken for an instance.

pub mod accel;
pub mod agent;
pub mod cmdline;
pub mod img;
pub mod process;
pub mod qmp;

pub use accel::{Accel, AccelSetting};
