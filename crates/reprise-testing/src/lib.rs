//! Test support shared by reprise's integration tests.
//!
//! - [`TestDaemon`]: a real daemon (in this process, on its own runtime)
//!   with its data in a temporary directory and the API on a free loopback
//!   port; it can be restarted on the same data, and on drop it kills every
//!   QEMU it started, so no test leaks a VM.
//! - [`guest`]: the tiny test guest (kernel, initramfs with qemu-ga), built
//!   by `tests/guest/build.sh` on first use.
//! - [`TestDaemon::guest_sh`]: run a shell command in a guest through its
//!   real qemu-guest-agent.
//! - [`fake_agent`]: a scripted qemu-guest-agent for the daemon's unit
//!   tests of its freeze protocol.
//! - [`s3_proxy`]: an S3 that refuses connections when told to.
//! - [`campaign`]: what the fault campaigns share (a seedable generator, a
//!   qcow2's content as a digest).
//! - [`Seams`] ([`chunk_pause`], [`hold_frozen`], [`sweep_pause`]): windows widened in a
//!   daemon, in this process ([`TestDaemon::start_seamed`]) or in its own
//!   ([`serve_seamed_process`]).

pub mod campaign;
pub mod fake_agent;
pub mod s3_proxy;

use reprise_client::Client;
use reprise_core::model::{CreateInstance, Instance, InstanceState, Job};
use reprise_daemon::config::Config;
pub use reprise_daemon::Seams;
use reprise_daemon::Server;
use reprise_qemu::agent::Agent;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: Config,
    /// The pauses it runs with (kept across restarts).
    pub seams: Seams,
    pub url: String,
    pub admin_key: String,
    rt: tokio::runtime::Runtime,
    server: Option<Server>,
    /// The test guest's kernel and initrd uploaded by each tenant.
    guest_uploads: Mutex<std::collections::HashMap<uuid::Uuid, (String, String)>>,
}

impl TestDaemon {
    pub fn start() -> TestDaemon {
        Self::start_with(|_| {})
    }

    /// Start with a config adjusted by `adjust` (data dir and listen
    /// address are the test's own).
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestDaemon {
        Self::start_seamed(Seams::default(), adjust)
    }

    /// [`TestDaemon::start_with`], with windows widened by `seams` (a
    /// backup that pauses after each chunk, a guest held frozen).
    pub fn start_seamed(seams: Seams, adjust: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("rp")
            .tempdir()
            .expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("address"),
            stop_timeout_secs: 10,
            // The admin boots the test guest from its build directory.
            import_dirs: vec![guest_dir()],
            // Tests see a sweep take what it may at once, and a delete
            // remove for good at once (the undelete window's own tests
            // set one).
            gc: reprise_daemon::config::GcConfig {
                grace_minutes: 0,
                min_interval_minutes: 0,
                ..Default::default()
            },
            snapshots: reprise_daemon::config::SnapshotConfig {
                undelete_days: 0,
                ..Default::default()
            },
            ..Config::default()
        };
        adjust(&mut config);
        if config.catalog.url.is_none() {
            config.catalog.url = test_catalog_url();
            if config.catalog.url.is_some() && config.region.store == "local" {
                use_store(&mut config, &test_region_store());
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(reprise_daemon::start_with_seams(
                config.clone(),
                seams.clone(),
            ))
            .expect("daemon starts");
        let url = format!("http://{}", server.addr);
        let admin_key = std::fs::read_to_string(config.admin_key_path())
            .expect("admin.key written at first start")
            .trim()
            .to_string();
        TestDaemon {
            dir,
            config,
            seams,
            url,
            admin_key,
            rt,
            server: Some(server),
            guest_uploads: Mutex::new(Default::default()),
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("daemon running")
    }

    /// Stop the daemon (VMs keep running).
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.stop());
        }
    }

    /// Start it again on the same data, on the same port.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "stop the daemon first");
        let mut config = self.config.clone();
        config.listen = self
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        let server = self
            .rt
            .block_on(reprise_daemon::start_with_seams(config, self.seams.clone()))
            .expect("daemon restarts");
        self.server = Some(server);
        // A catalog made anew (the old one lost) has a new admin key.
        self.admin_key = std::fs::read_to_string(self.config.admin_key_path())
            .expect("admin.key")
            .trim()
            .to_string();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(self.admin_key.clone()))
    }

    /// A new account, and a client that speaks as it.
    pub fn account(&self, name: &str) -> Client {
        let made: reprise_core::model::AccountCreated = self
            .admin()
            .post(
                "/api/v1/accounts",
                &reprise_core::model::CreateAccount {
                    name: name.into(),
                    plan: None,
                },
            )
            .expect("account created");
        Client::new(&self.url, Some(made.api_key))
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Run `script` with `sh -c` in the guest through its agent, retrying
    /// the connection until the agent answers (it starts with the guest).
    pub fn guest_sh(&self, instance: &Instance, script: &str) -> (i64, String) {
        // A tenant's view of an instance has no host path: the test knows
        // where the daemon keeps the socket.
        let socket = match instance.guest_agent_socket.as_str() {
            "" => self.config.instance_run_dir(instance.id).join("qga.sock"),
            s => PathBuf::from(s),
        };
        self.block_on(agent_sh(&socket, script))
    }

    /// Wait until the guest agent of an instance answers a ping.
    pub fn wait_agent(&self, instance: &Instance) -> Duration {
        let started = Instant::now();
        let (code, _) = self.guest_sh(instance, "true");
        assert_eq!(code, 0);
        started.elapsed()
    }

    /// A request that creates an instance booting the test guest, for any
    /// account: the admin names the guest's files below its import
    /// directory; a tenant uploads them (once per account, then reused).
    pub fn guest_instance_for(
        &self,
        client: &Client,
        name: &str,
        data_volumes: &[&str],
    ) -> CreateInstance {
        let mut req = guest_instance(name, data_volumes);
        let me: reprise_core::model::Account = client.get("/api/v1/whoami").expect("whoami");
        if me.admin {
            return req;
        }
        let mut uploads = self.guest_uploads.lock().unwrap_or_else(|p| p.into_inner());
        let (kernel, initrd) = uploads.entry(me.id).or_insert_with(|| {
            let g = guest();
            let send = |p: &Path| client.upload(p, |_, _| {}).expect("upload").id.to_string();
            (send(&g.kernel), send(&g.initrd))
        });
        req.kernel = None;
        req.initrd = None;
        req.kernel_upload = Some(kernel.clone());
        req.initrd_upload = Some(initrd.clone());
        req
    }

    /// A 64 MiB data volume `volume` and an instance `name` booting the test
    /// guest with it (mounted at `/mnt/data`), made by `client`, returned once
    /// its agent answers.
    pub fn booted_guest(&self, client: &Client, name: &str, volume: &str) -> Instance {
        let _: reprise_core::model::Volume = client
            .post(
                "/api/v1/volumes",
                &serde_json::json!({"name": volume, "size": "64M"}),
            )
            .expect("volume created");
        run_job(
            client,
            "/api/v1/instances",
            &self.guest_instance_for(client, name, &[volume]),
        );
        let vm = instance(client, name);
        self.wait_agent(&vm);
        vm
    }
}

/// Kills the QEMUs under a run directory when dropped: a test whose daemon
/// runs as its own process (and leaves its VMs running) leaks none.
pub struct KillInstancesOnDrop(pub PathBuf);

impl Drop for KillInstancesOnDrop {
    fn drop(&mut self) {
        kill_instances_under(&self.0);
    }
}

/// A daemon run as its own process (`reprise serve`), for tests that kill
/// it or measure it; killed when dropped (its VMs keep running).
pub struct DaemonProcess {
    pub child: std::process::Child,
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DaemonProcess {
    /// The daemon's resident and peak memory (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the daemon has used so far (user and system, its own and
    /// its waited-for children's), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) in ")".
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime, cstime are fields 14–17 of the line, 12–15
        // after the name; Linux counts them in 1/100 s (USER_HZ).
        let ticks: u64 = fields.get(11..15).map(|f| f.iter().sum()).unwrap_or(0);
        ticks as f64 / 100.0
    }
}

/// Start `BIN serve --config CONFIG` (`BIN`: the `reprise` binary; the
/// config's data directory is `data`), its log beside the data directory;
/// returns it and an admin client once it listens.
pub fn serve_process(bin: &str, config: &Path, data: &Path) -> (DaemonProcess, Client) {
    let mut command = Command::new(bin);
    command.args(["serve", "--config", config.to_str().expect("utf-8 path")]);
    spawn_daemon(command, data)
}

/// [`serve_process`] with `seams`: runs the `seamed_serve` example (built
/// by `cargo test` beside the test binaries), since the product binary
/// takes no seams.
pub fn serve_seamed_process(config: &Path, data: &Path, seams: &Seams) -> (DaemonProcess, Client) {
    let test_binary = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/examples/seamed_serve
    let bin = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("examples/seamed_serve");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build -p reprise --example seamed_serve`)",
        bin.display()
    );
    let mut command = Command::new(bin);
    command.arg(config).args(
        [seams.chunk_pause, seams.hold_frozen, seams.sweep_pause]
            .map(|d| d.as_millis().to_string()),
    );
    spawn_daemon(command, data)
}

fn spawn_daemon(mut command: Command, data: &Path) -> (DaemonProcess, Client) {
    let _ = std::fs::remove_file(data.join("daemon.addr"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .expect("daemon log");
    let child = command.stderr(log).spawn().expect("the daemon starts");
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(data.join("daemon.addr")) {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let key = std::fs::read_to_string(data.join("admin.key")).expect("admin.key");
    (
        DaemonProcess { child },
        Client::new(&format!("http://{addr}"), Some(key.trim().into())),
    )
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop();
        kill_instances_under(&self.config.data_dir.join("run"));
    }
}

/// Run `script` with `sh -c` in a guest through the agent at `socket`,
/// retrying the connection until the agent answers (it starts with the
/// guest), for at most 90 s.
pub async fn agent_sh(socket: &Path, script: &str) -> (i64, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match Agent::connect(socket, Duration::from_secs(3)).await {
            Ok(mut a) => {
                let out = a
                    .exec("/bin/sh", &["-c", script], None, Duration::from_secs(60))
                    .await
                    .expect("guest-exec runs");
                return (
                    out.exit_code,
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr),
                );
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the guest agent never answered: {e}"),
        }
    }
}

/// What the guest agent of an instance says of its filesystems (`frozen` or
/// `thawed`), or `None` when it does not answer.
pub fn freeze_status(vm: &Instance) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let mut a = Agent::connect(vm.guest_agent_socket.as_ref(), Duration::from_secs(2))
            .await
            .ok()?;
        a.freeze_status(Duration::from_secs(2)).await.ok()
    })
}

/// Kill every QEMU whose pidfile is under `run_dir`.
pub fn kill_instances_under(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(id) = uuid::Uuid::parse_str(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if let Some(pid) = reprise_qemu::process::find(&e.path().join("qemu.pid"), id) {
            reprise_qemu::process::kill(pid, id);
        }
    }
}

/// The test guest's files.
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

pub const GUEST_APPEND: &str = "console=ttyS0 panic=-1 quiet";

static GUEST_BUILD: Mutex<()> = Mutex::new(());

/// The test guest, built into `target/test-guest` on first use and again
/// whenever `tests/guest/build.sh` or `randread.c` change (their hash is
/// the build stamp).
/// Where the test guest is built.
pub fn guest_dir() -> PathBuf {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/");
    crates
        .parent()
        .expect("the workspace")
        .join("target/test-guest")
}

pub fn guest() -> Guest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = guest_dir();
    let script = root.join("tests/guest/build.sh");
    let _guard = GUEST_BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let initrd = out.join("initrd.img");
    let stamp = std::fs::read_to_string(out.join("build.stamp")).unwrap_or_default();
    // The same hash build.sh writes: the script and the sources it builds.
    let hash = Command::new("sh")
        .args(["-c", "cat build.sh randread.c | sha256sum"])
        .current_dir(root.join("tests/guest"))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    if !initrd.exists() || stamp.trim() != hash {
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run tests/guest/build.sh");
        assert!(status.success(), "tests/guest/build.sh failed");
    }
    let vmlinux = out.join("vmlinux");
    Guest {
        kernel: if vmlinux.exists() {
            vmlinux
        } else {
            out.join("vmlinuz")
        },
        initrd,
    }
}

/// A request that creates an instance booting the test guest.
pub fn guest_instance(name: &str, data_volumes: &[&str]) -> CreateInstance {
    let g = guest();
    CreateInstance {
        name: name.into(),
        memory: Some("256M".into()),
        kernel: Some(g.kernel.to_string_lossy().into_owned()),
        initrd: Some(g.initrd.to_string_lossy().into_owned()),
        append: Some(GUEST_APPEND.into()),
        data_volumes: data_volumes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Start a job and wait for it; panics with the job's error if it fails.
pub fn run_job<B: serde::Serialize>(client: &Client, path: &str, body: &B) -> Job {
    let job = client.start_job(path, body).expect("job accepted");
    client
        .wait_job(&job.id.to_string(), Duration::from_secs(300), |_| {})
        .unwrap_or_else(|e| panic!("job {} failed: {e:?}", job.kind))
}

pub fn instance(client: &Client, name: &str) -> Instance {
    client
        .get(&format!("/api/v1/instances/{name}"))
        .expect("instance shown")
}

/// Wait until an instance reaches `state` (the reconciler notices within
/// seconds).
pub fn wait_state(client: &Client, name: &str, state: InstanceState, within: Duration) -> Instance {
    let started = Instant::now();
    loop {
        let i = instance(client, name);
        if i.state == state {
            return i;
        }
        assert!(
            started.elapsed() < within,
            "instance {name} is {} after {within:?}, expected {state}",
            i.state
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The host's free 2 MiB huge pages (none where it has no such pool).
pub fn free_huge_pages() -> u64 {
    reprise_qemu::process::free_huge_pages().unwrap_or(0)
}

/// At least `pages` free 2 MiB huge pages for a test's guests
/// (`qemu.hugepages`): `vm.nr_hugepages` is raised (root), and put back
/// when this is dropped. Fails the test, saying why, where the kernel
/// cannot give them.
pub struct HugePages {
    before: String,
}

pub fn reserve_huge_pages(pages: u64) -> HugePages {
    const KNOB: &str = "/proc/sys/vm/nr_hugepages";
    let before = std::fs::read_to_string(KNOB).expect("vm.nr_hugepages");
    let total: u64 = before.trim().parse().expect("a number");
    let short = pages.saturating_sub(free_huge_pages());
    if short > 0 {
        std::fs::write(KNOB, (total + short).to_string()).unwrap_or_else(|e| {
            panic!("cannot reserve {pages} huge pages ({KNOB}: {e}): this test needs root")
        });
    }
    let free = free_huge_pages();
    let guard = HugePages { before };
    assert!(
        free >= pages,
        "the kernel gave {free} free huge pages of the {pages} asked for (memory too fragmented?)"
    );
    guard
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.before.trim());
    }
}

/// `qemu-img` on a test file: the JSON of `info`, or the exit code of
/// `check` (0 = clean).
pub fn qemu_img_info(path: &str) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json", path])
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img info {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img info JSON")
}

pub fn qemu_img_check(path: &str) -> i32 {
    Command::new("qemu-img")
        .args(["check", "-U", "-q", path])
        .status()
        .expect("qemu-img runs")
        .code()
        .unwrap_or(-1)
}

/// The region stores every snapshot test runs against: the local directory
/// (the default), and the S3 server the test scripts start.
pub fn region_stores() -> Vec<(&'static str, Option<reprise_store::S3Config>)> {
    let mut out = vec![("local", None)];
    if let Some(s3) = reprise_store::S3Config::from_test_env() {
        out.push(("s3", Some(s3)));
    }
    out
}

/// A daemon started as host `name` of a region: its catalog `catalog`
/// (PostgreSQL), serving `zone`, reaching the store through `s3`, its
/// heartbeats' lease `lease_secs`. The first host (`first` none) makes the
/// region's store prefix, key and admin; the others take `first`'s.
pub fn region_host(
    catalog: &str,
    name: &str,
    zone: &str,
    s3: reprise_store::S3Config,
    first: Option<&Config>,
    seams: Seams,
    lease_secs: u64,
) -> TestDaemon {
    TestDaemon::start_seamed(seams, |c| {
        c.catalog.url = Some(catalog.to_string());
        c.host.name = name.into();
        c.host.zones = vec![zone.into()];
        c.host.lease_secs = lease_secs;
        // A wedged peer is given up on in a test's time; longer than any
        // request a host answers here (a forced stop takes 10 s).
        c.http.peer_read_secs = 15;
        c.default_zone = zone.into();
        match first {
            Some(first) => {
                c.region = first.region.clone();
                c.region.s3 = Some(s3);
                c.region.key_file = Some(first.region_key_path());
                std::fs::create_dir_all(&c.data_dir).expect("data dir");
                std::fs::copy(first.admin_key_path(), c.admin_key_path())
                    .expect("the region's admin key");
            }
            None => use_store(c, &Some(s3)),
        }
    })
}

/// Point a daemon's region at `s3` (under a prefix of its own), or leave
/// it on the local directory.
pub fn use_store(config: &mut Config, s3: &Option<reprise_store::S3Config>) {
    if let Some(s3) = s3 {
        config.region.store = "s3".into();
        config.region.s3 = Some(s3.clone());
        config.region.prefix = Some(format!("test-{}", uuid::Uuid::new_v4()));
    }
}

/// What QEMU reads from internal snapshot `tag` of a qcow2 in use.
pub fn qemu_export(path: &str, tag: &str, out: &Path) -> Vec<u8> {
    let status = Command::new("qemu-img")
        .args(["convert", "-U", "-q", "-f", "qcow2", "-O", "raw", "-l"])
        .arg(format!("snapshot.name={tag}"))
        .arg(path)
        .arg(out)
        .status()
        .expect("qemu-img runs");
    assert!(status.success(), "qemu-img convert of {tag} from {path}");
    std::fs::read(out).expect("export read")
}

/// A snapshot's bytes as the region's store holds them, read back through
/// the daemon's own region.
pub fn restore_snapshot(d: &TestDaemon, snapshot: uuid::Uuid, out: &Path) -> Vec<u8> {
    let region = d.block_on(d.server().app.region()).expect("region");
    d.block_on(async {
        let manifest = region.manifest(snapshot).await.expect("manifest");
        let index = region.index(&manifest).await.expect("index");
        let file = std::fs::File::create(out).expect("output file");
        reprise_backup::restore_raw(region, &index, file, |_, _| {})
            .await
            .expect("restore");
    });
    std::fs::read(out).expect("restored image")
}

/// Write `pattern` over `len` bytes at `offset` of a qcow2 no QEMU holds.
pub fn qemu_io_write(path: &str, pattern: u8, offset: u64, len: u64) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P {pattern} {offset} {len}"))
        .arg(path)
        .output()
        .expect("qemu-io runs");
    assert!(out.status.success(), "qemu-io write on {path}: {out:?}");
}

/// The internal snapshot tags of a qcow2 (in use or not).
pub fn qcow2_tags(path: &str) -> Vec<String> {
    qemu_img_info(path)["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// With `REPRISE_TEST_CATALOG=postgres` (or `region`), every
/// [`TestDaemon`] keeps its catalog in a fresh schema of the test
/// PostgreSQL (so the same tests run on both engines); otherwise SQLite in
/// its data directory.
pub fn test_catalog_url() -> Option<String> {
    match std::env::var("REPRISE_TEST_CATALOG").as_deref() {
        Ok("postgres" | "region") => {
            let url = reprise_catalog::testing::postgres_url()
                .expect("REPRISE_TEST_CATALOG=postgres needs REPRISE_TEST_POSTGRES");
            Some(reprise_catalog::testing::fresh_postgres_url(&url))
        }
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("REPRISE_TEST_CATALOG={other}: sqlite, postgres or region"),
    }
}

/// With `REPRISE_TEST_CATALOG=region`, a [`TestDaemon`] left on the local
/// store keeps its snapshots in the region's store instead: the
/// three-node Garage cluster the test scripts start
/// (`REPRISE_TEST_CLUSTER_*`), under a prefix of its own.
fn test_region_store() -> Option<reprise_store::S3Config> {
    (std::env::var("REPRISE_TEST_CATALOG").as_deref() == Ok("region"))
        .then(|| reprise_store::S3Config::from_env("REPRISE_TEST_CLUSTER"))
}

/// Seams that pause a backup `ms` after each chunk it reads.
pub fn chunk_pause(ms: u64) -> Seams {
    Seams {
        chunk_pause: Duration::from_millis(ms),
        ..Default::default()
    }
}

/// Seams that pause a sweep `ms` after each chunk it deletes.
pub fn sweep_pause(ms: u64) -> Seams {
    Seams {
        sweep_pause: Duration::from_millis(ms),
        ..Default::default()
    }
}

/// Seams that hold a guest frozen `ms` before each cut.
pub fn hold_frozen(ms: u64) -> Seams {
    Seams {
        hold_frozen: Duration::from_millis(ms),
        ..Default::default()
    }
}
