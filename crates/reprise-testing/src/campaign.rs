//! Shared by the fault campaigns: a seedable generator, knobs from the
//! environment, a qcow2's content as a digest.

use std::path::Path;

/// A small, seedable generator (xorshift64*): a campaign replays from its
/// seed.
pub struct Dice(pub u64);

impl Dice {
    pub fn roll(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n
    }
}

/// The seed a campaign was asked to replay (`name` in the environment), or
/// a new one from the clock.
pub fn seed_from_env(name: &str) -> u64 {
    env_u64(
        name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970")
            .as_nanos() as u64
            | 1,
    )
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The guest bytes of a qcow2 no QEMU holds, as a digest (exported to
/// `dir/content.raw` on the way).
pub fn content_digest(path: &Path, dir: &Path) -> blake3::Hash {
    let out = dir.join("content.raw");
    let ok = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-q", "-O", "raw"])
        .arg(path)
        .arg(&out)
        .status()
        .expect("qemu-img runs");
    assert!(ok.success(), "qemu-img convert {}", path.display());
    let digest = blake3::hash(&std::fs::read(&out).expect("the export"));
    let _ = std::fs::remove_file(&out);
    digest
}
