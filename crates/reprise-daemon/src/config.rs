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
//! # Files on the daemon's host that the admin (never a tenant) may name
//! # for an import or a boot; everything else comes by upload.
//! import_dirs = ["/srv/images"]
//! default_plan = "vps"        # the plan of new accounts (none: unlimited)
//! # metrics_listen = "127.0.0.1:9480"  # /metrics without a key, here only
//!
//! [catalog]                   # what reprise knows; none: DATA_DIR/catalog.db (SQLite)
//! # url = "postgres://reprise:secret@db.example:5432/reprise"   # PostgreSQL
//! backup_every_hours = 24     # its own rows backed up into the region's store (0: never)
//! backups_kept = 14
//!
//! [host]                      # this daemon as a host of a region (docs/region.md)
//! name = "local"              # unique in the region
//! # address = "http://10.0.0.1:7480"  # where other daemons reach it; none: http://LISTEN
//! # zones = ["zone1"]         # the zones it serves; none: every zone
//! lease_secs = 6              # Down after this long without a heartbeat (sent every lease/3)
//! guest_memory_ratio = 1.0    # running guests' RAM, at most this share of the host's
//!
//! [qemu]
//! system = "qemu-system-x86_64"
//! img = "qemu-img"
//! cgroups = true              # each QEMU in a control group capped at its vCPUs and RAM
//! console_log_max = "8M"      # a guest's console log is rotated past this (one old one kept)
//!
//! [region]                    # where volume snapshots live
//! store = "local"             # local | s3
//! path = "/var/lib/reprise/objects"   # local: the directory
//! key_file = "/var/lib/reprise/region.key"  # the region's secret, made at first start
//! encrypt = false             # encrypt every chunk (fixed when the store is created)
//! legacy_unsealed_manifests = false  # true only for a region made before 2026-12
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
//! freeze_timeout_secs = 10    # the freeze's guard thaws a frozen guest after this
//! memory_save = "auto"        # memory points: auto | background | snapshot-save
//! undelete_days = 7           # a deleted snapshot or template can be undeleted this long
//!
//! [cloudstack]
//! max_expires_ahead_secs = 3600  # a signed request expiring further ahead is refused
//! require_expires = false     # true: refuse requests without signatureVersion=3 and expires
//!
//! [http]                    # the API's edge: what a slow or greedy client may hold
//! header_timeout_secs = 10    # a request head (or the next one on a kept connection)
//! body_idle_secs = 60         # a request body that sends nothing this long fails
//! write_stall_secs = 60       # an answer the client does not read this long is dropped
//! max_connections = 1024      # open at once; one more is closed unread
//! max_connections_per_peer = 256  # from one address
//! peer_connect_secs = 5       # a request sent on to another host: connecting
//! peer_read_secs = 120        # and silent this long (nothing sent or answered)
//!
//! [jobs]
//! keep_days = 30              # a job that ended this long ago is forgotten
//!
//! [uploads]
//! max_bytes = "64G"           # one upload (an image, a kernel, an initrd)
//! max_per_account = 16
//! expire_hours = 24           # an unfinished upload idle this long goes
//! keep_days = 7               # a complete one goes this long after it completed
//!
//! [images]
//! max_virtual_size = "4T"     # the largest disk an imported image may be
//!
//! [gc]
//! delay_ms = 2000             # deletes are collected together, this long after the last
//! every_hours = 24            # and the region's leader collects this often (0: never)
//! grace_minutes = 60          # chunks written this lately are left to a later sweep
//! min_interval_minutes = 10   # sweeps after deletes, at most this often in the region
//!
//! [plans.vps]                 # plans: set by the operator, assigned to accounts
//! max_recovery_points = 1     # per instance
//! max_snapshots_per_volume = 10
//! max_snapshots = 50
//! max_volumes = 4
//! max_instances = 2
//! max_vcpus = 4               # all the account's instances together
//! max_memory_bytes = "8G"
//! max_volume_bytes = "200G"
//! max_snapshot_bytes = "500G"
//! max_concurrent_jobs = 4
//! ```

use reprise_core::plan::PlanLimits;
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
    /// Directories below which the admin may name host files (imports,
    /// kernels); tenants never name host files.
    pub import_dirs: Vec<PathBuf>,
    /// The plan given to new accounts (`None`: unlimited).
    pub default_plan: Option<String>,
    /// Serve `/metrics` without a key on this address (operator only);
    /// on the API's address it needs the admin key.
    pub metrics_listen: Option<SocketAddr>,
    pub uploads: UploadConfig,
    pub images: ImageConfig,
    pub gc: GcConfig,
    pub catalog: CatalogConfig,
    pub host: HostConfig,
    pub cloudstack: CloudStackConfig,
    pub http: HttpConfig,
    pub jobs: JobsConfig,
    /// Plans, applied to the catalog at every start (the config wins over
    /// a plan of the same name changed through the API).
    pub plans: std::collections::BTreeMap<String, PlanLimits>,
}

/// The CloudStack API at `/client/api` (docs/cloudstack.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudStackConfig {
    /// A signed request (`signatureVersion=3`) may expire at most this far
    /// ahead: until then it is a bearer token.
    pub max_expires_ahead_secs: u64,
    /// Refuse requests without `signatureVersion=3` and `expires` (which
    /// CloudStack itself accepts, and which can be replayed for ever).
    pub require_expires: bool,
}

impl Default for CloudStackConfig {
    fn default() -> Self {
        CloudStackConfig {
            max_expires_ahead_secs: 3600,
            require_expires: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A job that ended this many days ago is forgotten, its log with it.
    pub keep_days: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { keep_days: 30 }
    }
}

/// The API's edge (see [`crate::edge`]): bounds on what one client's
/// connections may hold, and on requests sent on to other hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub header_timeout_secs: u64,
    pub body_idle_secs: u64,
    pub write_stall_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub peer_connect_secs: u64,
    pub peer_read_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            body_idle_secs: 60,
            write_stall_secs: 60,
            max_connections: 1024,
            max_connections_per_peer: 256,
            peer_connect_secs: 5,
            peer_read_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// The largest upload accepted, in bytes (`"64G"` in the file).
    #[serde(deserialize_with = "reprise_core::size::deserialize_bytes")]
    pub max_bytes: u64,
    pub max_per_account: u64,
    /// An upload still receiving, untouched this long, is removed.
    pub expire_hours: u64,
    /// A complete upload is removed this many days after it completed
    /// (what was made of it keeps its own copy).
    pub keep_days: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            max_bytes: 64 << 30,
            max_per_account: 16,
            expire_hours: 24,
            keep_days: 7,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// The largest virtual size of an imported image.
    #[serde(deserialize_with = "reprise_core::size::deserialize_bytes")]
    pub max_virtual_size: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_virtual_size: 4 << 40,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Deletes ask for a collection; it runs this long after the last ask,
    /// in the background, one at a time.
    pub delay_ms: u64,
    /// Also collect this often, on the region's leader (0: only after
    /// deletes): what a crashed delete left is collected in the end.
    pub every_hours: u64,
    /// A sweep leaves unreferenced chunks younger than this: a second
    /// line of defence behind the holds of backups in progress.
    pub grace_minutes: u64,
    /// Sweeps after deletes begin at most this often in the region (0:
    /// after every quiet `delay_ms`); the admin's `reprise gc` and the
    /// leader's periodic sweep are not held.
    pub min_interval_minutes: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            delay_ms: 2000,
            every_hours: 24,
            grace_minutes: 60,
            min_interval_minutes: 10,
        }
    }
}

/// This daemon as a host of its region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Unique in the region: the catalog refuses a second daemon of the
    /// same name.
    pub name: String,
    /// Where the other daemons send this host its work (`http://host:port`);
    /// none: `http://` and the address it listens on.
    pub address: Option<String>,
    /// The zones it serves (new volumes and instances of these zones may
    /// be placed here); empty: every zone.
    pub zones: Vec<String>,
    /// A host whose last heartbeat is older than this is `Down`.
    pub lease_secs: u64,
    /// The RAM of the instances running here may be at most this share
    /// of the host's RAM (above 1: overcommitted); a start past it is
    /// refused (`host_memory_short`).
    pub guest_memory_ratio: f64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            name: reprise_catalog::DEFAULT_HOST.into(),
            address: None,
            zones: Vec::new(),
            lease_secs: 6,
            guest_memory_ratio: 1.0,
        }
    }
}

/// Where the catalog is: SQLite in the data directory (the embedded
/// default) or a PostgreSQL database (a region's, see docs/region.md).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// The region's leader backs the catalog's own rows up into the
    /// region's store this often (0: never; `reprise catalog backup` any
    /// time).
    pub backup_every_hours: u64,
    /// This catalog's backups kept in the store (the oldest go).
    pub backups_kept: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: None,
            backup_every_hours: 24,
            backups_kept: 14,
        }
    }
}

impl std::fmt::Debug for CatalogConfig {
    // The URL may hold a password: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = if self.url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        write!(f, "CatalogConfig({engine})")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// The bound on a guest filesystem freeze: the freeze's guard thaws the guest
    /// once it is reached, whatever happens to the snapshot.
    pub freeze_timeout_secs: u64,
    /// How a recovery point's memory is saved.
    pub memory_save: MemorySave,
    /// Days a deleted snapshot or template stays undeletable (a plan's
    /// `undelete_days` overrides it); 0: deletes are at once.
    pub undelete_days: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            freeze_timeout_secs: 10,
            memory_save: MemorySave::Auto,
            undelete_days: 7,
        }
    }
}

/// How a recovery point's RAM and device state is saved.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MemorySave {
    /// `background` where QEMU and the host's kernel allow it, else
    /// `snapshot-save`.
    Auto,
    /// The guest runs on while its RAM is written (QEMU's
    /// `background-snapshot`); a point fails where it is unavailable.
    Background,
    /// The guest is paused while its RAM is written (`snapshot-save`).
    SnapshotSave,
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
    /// Back guests' RAM with the host's 2 MiB huge pages (hugetlbfs,
    /// allocated when QEMU starts), which keeps a background memory point's
    /// pause flat in RAM size. The operator reserves them
    /// (`vm.nr_hugepages`); an instance that would not fit in the free ones
    /// is refused at start. See `reprise_qemu::cmdline::HUGE_PAGE`.
    pub hugepages: bool,
    /// Run each QEMU in a control group of its own, limited to its
    /// instance's vCPUs and RAM (`reprise_qemu::cgroup`); a host without a
    /// writable hierarchy runs them without, and says so at start.
    pub cgroups: bool,
    /// A guest's serial console log (`console.log` in its run directory)
    /// is rotated past this many bytes: the full one becomes
    /// `console.log.1`, replacing the one before.
    #[serde(deserialize_with = "reprise_core::size::deserialize_bytes")]
    pub console_log_max: u64,
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
    /// Encrypt chunks (AES-256-GCM). Fixed for a store at creation.
    pub encrypt: bool,
    /// Read unsealed manifests: only for a region made before 2026-12.
    /// Kept here, out of the store's reach, so that whoever can write the
    /// store cannot switch a region's manifest seal off.
    pub legacy_unsealed_manifests: bool,
}

impl Default for QemuConfig {
    fn default() -> Self {
        let b = reprise_qemu::img::Binaries::default();
        QemuConfig {
            system: b.system,
            img: b.img,
            hugepages: false,
            cgroups: true,
            console_log_max: 8 << 20,
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
            legacy_unsealed_manifests: false,
        }
    }
}

/// Where data lives when nothing says otherwise: `/var/lib/reprise` for
/// root, `~/.local/share/reprise` for anyone else.
pub fn default_data_dir() -> PathBuf {
    reprise_core::defaults::data_dir(
        rustix::process::getuid().is_root(),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

pub use reprise_core::defaults::DEFAULT_LISTEN;

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
            import_dirs: Vec::new(),
            default_plan: None,
            metrics_listen: None,
            uploads: UploadConfig::default(),
            images: ImageConfig::default(),
            gc: GcConfig::default(),
            catalog: CatalogConfig::default(),
            host: HostConfig::default(),
            cloudstack: CloudStackConfig::default(),
            http: HttpConfig::default(),
            jobs: JobsConfig::default(),
            plans: Default::default(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::invalid("config_invalid", format!("config: {e}")).with_source(e))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "config_invalid",
                format!("cannot read config {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
        Self::parse(&text).map_err(|e| e.context(path.display()))
    }

    fn validate(&self) -> Result<()> {
        reprise_core::name::validate_name("zone", &self.default_zone)?;
        reprise_core::name::validate_name("host", &self.host.name)
            .map_err(|e| e.context("[host] name"))?;
        for zone in &self.host.zones {
            reprise_core::name::validate_name("zone", zone)
                .map_err(|e| e.context("[host] zones"))?;
        }
        if self.host.lease_secs < 3 {
            return Err(Error::invalid(
                "config_invalid",
                "[host] lease_secs must be at least 3 (a heartbeat goes every third of it)",
            ));
        }
        if let Some(a) = &self.host.address {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return Err(Error::invalid(
                    "config_invalid",
                    format!("[host] address must be an http:// or https:// URL, not '{a}'"),
                ));
            }
        }
        let ratio = self.host.guest_memory_ratio;
        if !(ratio.is_finite() && ratio > 0.0) {
            return Err(Error::invalid(
                "config_invalid",
                format!("[host] guest_memory_ratio must be a positive number, not {ratio}"),
            ));
        }
        let h = &self.http;
        if [
            h.header_timeout_secs,
            h.body_idle_secs,
            h.write_stall_secs,
            h.peer_connect_secs,
            h.peer_read_secs,
        ]
        .contains(&0)
            || h.max_connections == 0
            || h.max_connections_per_peer == 0
        {
            return Err(Error::invalid(
                "config_invalid",
                "[http]: every timeout and connection limit must be at least 1 (0 would refuse everything)",
            ));
        }
        for plan in self.plans.keys() {
            reprise_core::name::validate_name("plan", plan)
                .map_err(|e| Error::invalid("config_invalid", format!("plans: {}", e.message)))?;
        }
        if let Some(d) = self.import_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(Error::invalid(
                "config_invalid",
                format!("import_dirs: '{}' must be an absolute path", d.display()),
            ));
        }
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

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// Where the hardened import path keeps its private copies.
    pub fn imports_dir(&self) -> PathBuf {
        self.data_dir.join("imports")
    }

    /// Where an instance's kernel and initrd are kept.
    pub fn boot_dir(&self, instance: uuid::Uuid) -> PathBuf {
        self.data_dir.join("boot").join(instance.to_string())
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
    }

    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }

    /// Where the machine states of an instance's background-saved
    /// recovery points are kept.
    pub fn point_state_dir(&self, instance: uuid::Uuid) -> PathBuf {
        self.data_dir.join("points").join(instance.to_string())
    }

    pub fn point_state_path(&self, instance: uuid::Uuid, point: uuid::Uuid) -> PathBuf {
        self.point_state_dir(instance)
            .join(format!("{point}.state"))
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

    /// The ```toml block of a text (a module doc or the README), `prefix`
    /// stripped from its lines.
    fn toml_block(text: &str, prefix: &str) -> String {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                l.strip_prefix(prefix)
                    .or_else(|| l.strip_prefix(prefix.trim_end()))
                    .unwrap_or(l)
            })
            .collect();
        let start = lines
            .iter()
            .position(|l| l.trim() == "```toml")
            .expect("a toml block");
        let end = start
            + 1
            + lines[start + 1..]
                .iter()
                .position(|l| l.trim() == "```")
                .expect("its end");
        lines[start + 1..end].join("\n")
    }

    #[test]
    fn the_documented_configs_parse() {
        let doc = toml_block(include_str!("config.rs"), "//! ");
        let c = Config::parse(&doc).unwrap();
        assert_eq!(c.import_dirs, [PathBuf::from("/srv/images")]);
        assert_eq!(c.plans["vps"].max_volume_bytes, Some(200 << 30));
        assert!(c.region.s3.is_some());
        let readme = toml_block(include_str!("../../../README.md"), "");
        let c = Config::parse(&readme).unwrap();
        assert_eq!(c.plans["vps"].max_recovery_points, Some(1));
        assert_eq!(c.uploads.max_bytes, 64 << 30);
    }

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
            "data_dir = \"/d\"\naccel = \"tcg\"\nlog_format = \"json\"\nimport_dirs = [\"/srv\"]\n[qemu]\nimg = \"/opt/qemu-img\"\n[uploads]\nmax_bytes = \"1G\"\n[plans.vps]\nmax_recovery_points = 1\nmax_volume_bytes = \"10G\"\n",
        )
        .unwrap();
        assert_eq!(c.plans["vps"].max_recovery_points, Some(1));
        assert_eq!(c.plans["vps"].max_volume_bytes, Some(10 << 30));
        assert_eq!(c.uploads.max_bytes, 1 << 30);
        assert_eq!(c.import_dirs, [PathBuf::from("/srv")]);
        let err = Config::parse("import_dirs = [\"images\"]").unwrap_err();
        assert!(err.message.contains("absolute"), "{}", err.message);
        let err = Config::parse("[plans.vps]\nmax_points = 1").unwrap_err();
        assert!(err.message.contains("max_points"), "{}", err.message);
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
