//! The daemon's TOML configuration. Every field has a default, so an empty
//! file (or none) runs reprise: data under the default data directory, the
//! API on loopback, one zone, a local-directory region store.
//!
//! ```toml
//! data_dir = "/var/lib/reprise"
//! listen = "127.0.0.1:7480"
//! accel = "auto"              # auto | kvm | tcg
//! log_format = "text"         # text | json
//! default_zone = "zone1"
//! stop_timeout_secs = 30      # ACPI/agent power-down, then forced
//!
//! [qemu]
//! system = "qemu-system-x86_64"
//! img = "qemu-img"
//!
//! [region]                    # where volume snapshots live
//! store = "local"             # local | s3
//! path = "/var/lib/reprise/objects"   # local: the directory
//! key_file = "/var/lib/reprise/region.key"  # the region's secret, made at first start
//! encrypt = false             # encrypt every chunk (fixed when the store is created)
//! # prefix = "reprise"        # keep the region under this prefix of the store
//!
//! [region.s3]                 # store = "s3"
//! endpoint = "http://127.0.0.1:3900"
//! bucket = "reprise"
//! region = "garage"
//! access_key_id = "GK..."
//! secret_access_key = "..."
//!
//! [snapshots]
//! freeze_timeout_secs = 10    # the watchdog thaws a frozen guest after this
//!
//! [plans.vps]                 # plans cap what an instance may hold
//! max_recovery_points = 1
//! ```

use reprise_core::{Error, Result};
use reprise_qemu::AccelSetting;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub accel: AccelSetting,
    pub log_format: LogFormat,
    pub default_zone: String,
    pub stop_timeout_secs: u64,
    pub qemu: QemuConfig,
    pub region: RegionConfig,
    pub snapshots: SnapshotConfig,
    pub plans: std::collections::BTreeMap<String, Plan>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// The bound on a guest filesystem freeze: the watchdog thaws the guest
    /// once it is reached, whatever happens to the snapshot.
    pub freeze_timeout_secs: u64,
    /// Fault injection for tests: keep the guest frozen this long before
    /// cutting the snapshot.
    pub test_hold_frozen_ms: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            freeze_timeout_secs: 10,
            test_hold_frozen_ms: 0,
        }
    }
}

/// What a plan allows an instance; absent limits are unlimited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub max_recovery_points: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    pub system: PathBuf,
    pub img: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// `local`: a directory (the embedded default); `s3`: see `s3`.
    pub store: String,
    /// For `local`: the directory; empty means `DATA_DIR/objects`.
    pub path: Option<PathBuf>,
    pub s3: Option<reprise_store::S3Config>,
    /// Keep the region's objects under this prefix of the store.
    pub prefix: Option<String>,
    /// The region's 32-byte secret (64 hex digits); every daemon of the
    /// region needs the same. Empty means `DATA_DIR/region.key`, made at
    /// first start.
    pub key_file: Option<PathBuf>,
    /// Encrypt chunks (XChaCha20-Poly1305). Fixed for a store at creation.
    pub encrypt: bool,
    /// Fault injection for tests: pause this long after each chunk.
    pub test_chunk_delay_ms: u64,
}

impl Default for QemuConfig {
    fn default() -> Self {
        let b = reprise_qemu::img::Binaries::default();
        QemuConfig {
            system: b.system,
            img: b.img,
        }
    }
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            store: "local".into(),
            path: None,
            s3: None,
            prefix: None,
            key_file: None,
            encrypt: false,
            test_chunk_delay_ms: 0,
        }
    }
}

/// Where data lives when nothing says otherwise: `/var/lib/reprise` for
/// root, `~/.local/share/reprise` for anyone else.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::getuid().is_root() {
        return PathBuf::from("/var/lib/reprise");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("reprise"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/reprise"),
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            accel: AccelSetting::Auto,
            log_format: LogFormat::Text,
            default_zone: "zone1".into(),
            stop_timeout_secs: 30,
            qemu: QemuConfig::default(),
            region: RegionConfig::default(),
            snapshots: SnapshotConfig::default(),
            plans: Default::default(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::invalid("config_invalid", format!("config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "config_invalid",
                format!("cannot read config {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text).map_err(|e| e.context(path.display()))
    }

    fn validate(&self) -> Result<()> {
        reprise_core::name::validate_name("zone", &self.default_zone)?;
        match (self.region.store.as_str(), &self.region.s3) {
            ("local", _) | ("s3", Some(_)) => {}
            ("s3", None) => {
                return Err(Error::invalid(
                    "config_invalid",
                    "region.store = \"s3\" needs a [region.s3] section (endpoint, bucket, region, access_key_id, secret_access_key)",
                ))
            }
            (other, _) => {
                return Err(Error::invalid(
                    "config_invalid",
                    format!("region.store = \"{other}\" is not a store: use \"local\" or \"s3\""),
                ))
            }
        }
        Ok(())
    }

    /// A plan by name, or `plan_not_found`.
    pub fn plan(&self, name: &str) -> Result<&Plan> {
        self.plans.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.plans.keys().map(String::as_str).collect();
            Error::invalid(
                "plan_not_found",
                format!(
                    "plan '{name}' is not defined in the daemon's config (plans: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
    }

    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }

    pub fn instance_run_dir(&self, id: uuid::Uuid) -> PathBuf {
        self.data_dir.join("run").join(id.to_string())
    }

    pub fn default_zone_dir(&self) -> PathBuf {
        self.data_dir.join("zones").join(&self.default_zone)
    }

    pub fn region_store_dir(&self) -> PathBuf {
        self.region
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects"))
    }

    pub fn region_key_path(&self) -> PathBuf {
        self.region
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("region.key"))
    }

    pub fn binaries(&self) -> reprise_qemu::img::Binaries {
        reprise_qemu::img::Binaries {
            system: self.qemu.system.clone(),
            img: self.qemu.img.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_runs_on_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.accel, AccelSetting::Auto);
        assert_eq!(c.default_zone, "zone1");
        assert!(c.region_store_dir().ends_with("objects"));
    }

    #[test]
    fn fields_parse_and_typos_are_named() {
        let c = Config::parse(
            "data_dir = \"/d\"\naccel = \"tcg\"\nlog_format = \"json\"\n[qemu]\nimg = \"/opt/qemu-img\"\n[plans.vps]\nmax_recovery_points = 1\n",
        )
        .unwrap();
        assert_eq!(c.plan("vps").unwrap().max_recovery_points, Some(1));
        assert_eq!(c.plan("gold").unwrap_err().code, "plan_not_found");
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.accel, AccelSetting::Tcg);
        assert_eq!(c.qemu.img, PathBuf::from("/opt/qemu-img"));
        assert_eq!(c.admin_key_path(), PathBuf::from("/d/admin.key"));
        let err = Config::parse("acel = \"kvm\"").unwrap_err();
        assert_eq!(err.code, "config_invalid");
        assert!(err.message.contains("acel"), "{}", err.message);
        let err = Config::parse("accel = \"fast\"").unwrap_err();
        assert!(err.message.contains("fast"), "{}", err.message);
    }
}
