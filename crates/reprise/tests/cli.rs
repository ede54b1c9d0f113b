//! The `reprise` command as users and scripts rely on it: tables for
//! people, `--json` for scripts, errors on stderr with a non-zero exit,
//! jobs waited on unless `--no-wait`.

use reprise_testing::*;
use serde_json::Value;
use std::process::{Command, Output};

struct Cli<'a> {
    d: &'a TestDaemon,
    key: String,
    home: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(d: &'a TestDaemon) -> Self {
        Cli {
            d,
            key: d.admin_key.clone(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_reprise"))
            .args(args)
            .env("REPRISE_URL", &self.d.url)
            .env("REPRISE_API_KEY", &self.key)
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .expect("reprise runs")
    }

    /// Run and expect success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "reprise {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json prints JSON")
    }

    /// Run and expect failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "reprise {args:?} should fail");
        assert!(out.stdout.is_empty(), "nothing on stdout when failing");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[test]
fn volumes_from_the_command_line() {
    let d = TestDaemon::start();
    let cli = Cli::new(&d);
    let shown = cli.ok(&["volume", "create", "db", "--size", "256M"]);
    assert!(shown.contains("state:    Ready"), "{shown}");
    assert!(shown.contains("256M (268435456 bytes)"), "{shown}");

    let v = cli.json(&["volume", "show", "db"]);
    for field in [
        "id",
        "name",
        "kind",
        "state",
        "size_bytes",
        "path",
        "zone",
        "instance",
        "created_at",
    ] {
        assert!(v.get(field).is_some(), "--json show has {field}: {v}");
    }
    assert_eq!(v["state"], "Ready");
    assert_eq!(qemu_img_check(v["path"].as_str().unwrap()), 0);

    let table = cli.ok(&["volume", "list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME  KIND  SIZE  STATE  ZONE   INSTANCE  CREATED"),
        "{header}"
    );
    assert!(lines
        .next()
        .unwrap()
        .starts_with("db    Data  256M  Ready  zone1  -"));

    let grown = cli.json(&["volume", "resize", "db", "--size", "1G"]);
    assert_eq!(grown["size_bytes"], 1u64 << 30);

    let err = cli.fails(&["volume", "create", "x", "--size", "ten"]);
    assert!(err.starts_with("error: size 'ten' not understood"), "{err}");
    assert!(err.trim_end().ends_with("[size_invalid]"), "{err}");
    let err = cli.fails(&["volume", "resize", "db", "--size", "512M"]);
    assert!(err.contains("[size_not_larger]"), "{err}");
    let err = cli.fails(&["volume", "show", "nope"]);
    assert!(err.contains("volume 'nope' not found"), "{err}");

    // A pipe closed early (`| head -1`, `| grep -q`): the command ends
    // quietly, no panic.
    for args in [&["volume", "list"][..], &["--json", "volume", "show", "db"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reprise"))
            .args(args)
            .env("REPRISE_URL", &d.url)
            .env("REPRISE_API_KEY", &cli.key)
            .env("HOME", cli.home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }

    // Where it lives, and the region's hosts: this daemon alone, Up, leading.
    assert!(cli
        .ok(&["volume", "show", "db"])
        .contains("host:     local"));
    let hosts = cli.ok(&["host", "list"]);
    let mut lines = hosts.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME     STATE  ZONES  INSTANCES  VOLUMES  ALLOCATED  HEARTBEAT"),
        "{header}"
    );
    let me = lines.next().unwrap();
    assert!(
        me.starts_with("local *  Up     (all)  0          1        1G"),
        "{me}"
    );
    let h = cli.json(&["host", "list"]);
    assert_eq!(
        (h[0]["leader"].as_bool(), h[0]["volume_bytes"].as_u64()),
        (Some(true), Some(1 << 30))
    );

    cli.ok(&["volume", "delete", "db"]);
    assert_eq!(cli.json(&["volume", "list"]), serde_json::json!([]));
}

#[test]
fn accounts_keys_and_unreachable_daemons() {
    let d = TestDaemon::start();
    let admin = Cli::new(&d);
    let made = admin.json(&["account", "create", "alice"]);
    let key = made["api_key"].as_str().unwrap().to_string();
    let listed = admin.ok(&["account", "list"]);
    assert!(
        listed.contains("alice") && listed.contains("admin"),
        "{listed}"
    );

    let mut alice = Cli::new(&d);
    alice.key = key;
    alice.ok(&["volume", "create", "mine", "--size", "64M"]);
    let err = alice.fails(&["zone", "create", "z2"]);
    assert!(err.contains("[admin_only]"), "{err}");
    // The admin does not see alice's volume: accounts are apart.
    let err = admin.fails(&["volume", "show", "mine"]);
    assert!(err.contains("[volume_not_found]"), "{err}");

    let mut nobody = Cli::new(&d);
    nobody.key = "rpk_wrong".into();
    let err = nobody.fails(&["volume", "list"]);
    assert!(err.contains("[api_key_invalid]"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["--url", "http://127.0.0.1:9", "volume", "list"])
        .env("HOME", admin.home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the reprise daemon at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn an_instance_from_the_command_line() {
    let d = TestDaemon::start();
    // A tenant: its kernel and initrd are uploaded from this machine.
    let made = Cli::new(&d).json(&["account", "create", "alice"]);
    let mut cli = Cli::new(&d);
    cli.key = made["api_key"].as_str().unwrap().to_string();
    let alice = reprise_client::Client::new(&d.url, Some(cli.key.clone()));
    let g = guest();
    cli.ok(&["volume", "create", "data", "--size", "64M"]);
    let shown = cli.ok(&[
        "instance",
        "create",
        "vm",
        "--memory",
        "256M",
        "--kernel",
        g.kernel.to_str().unwrap(),
        "--initrd",
        g.initrd.to_str().unwrap(),
        "--append",
        GUEST_APPEND,
        "--data-volume",
        "data",
    ]);
    assert!(shown.contains("state:        Running"), "{shown}");
    assert!(shown.contains("volumes:      data (Data, 64M)"), "{shown}");
    assert!(shown.contains("kernel:       kernel"), "{shown}");
    let uploads = cli.json(&["upload", "list"]);
    assert_eq!(
        uploads,
        serde_json::json!([]),
        "the CLI's uploads are gone once used"
    );
    let vm = instance(&alice, "vm");
    d.wait_agent(&vm);
    let v = cli.json(&["instance", "show", "vm"]);
    assert_eq!(v["state"], "Running");
    assert_eq!(v["guest_agent"]["status"], "responding");
    assert_eq!(v["guest_agent"]["snapshot_consistency"], "filesystem");
    let people = cli.ok(&["instance", "show", "vm"]);
    assert!(people.contains("guest agent:  responding"), "{people}");

    let err = cli.fails(&["instance", "start", "vm"]);
    assert!(
        err.contains("is Running") && err.contains("[instance_running]"),
        "{err}"
    );

    // --no-wait returns the job at once; `job wait` follows it to the end.
    let job = cli.json(&["--no-wait", "instance", "stop", "vm"]);
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["kind"], "instance.stop");
    let waited = cli.ok(&["job", "wait", id]);
    assert!(waited.contains("state:    Succeeded"), "{waited}");
    let jobs = cli.ok(&["job", "list"]);
    assert!(
        jobs.contains("instance.stop") && jobs.contains("instance.create"),
        "{jobs}"
    );
    let listed = cli.ok(&["instance", "list"]);
    assert!(
        listed.lines().nth(1).unwrap().starts_with("vm    Stopped"),
        "{listed}"
    );
    cli.ok(&["instance", "delete", "vm"]);
}

#[test]
fn plans_keys_uploads_and_imports_from_the_command_line() {
    let images = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| c.import_dirs.push(images.path().into()));
    let admin = Cli::new(&d);
    admin.ok(&[
        "plan",
        "set",
        "small",
        "--max-volumes",
        "1",
        "--max-volume-size",
        "1G",
    ]);
    let plans = admin.ok(&["plan", "list"]);
    assert!(plans.contains("small") && plans.contains("1G"), "{plans}");
    let made = admin.json(&["account", "create", "alice", "--plan", "small"]);
    let mut alice = Cli::new(&d);
    alice.key = made["api_key"].as_str().unwrap().to_string();
    alice.ok(&["volume", "create", "one", "--size", "64M"]);
    let err = alice.fails(&["volume", "create", "two", "--size", "64M"]);
    assert!(
        err.contains("[volume_limit_reached]") && err.contains("'small'"),
        "{err}"
    );
    let shown = alice.ok(&["account", "show"]);
    assert!(shown.contains("plan:    small"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("max_volumes") && l.contains(" 1 ")),
        "{shown}"
    );
    let err = alice.fails(&["account", "set", "alice", "--plan", ""]);
    assert!(err.contains("[admin_only]"), "{err}");

    // Keys: made, listed, revoked; the revoked one fails at once.
    let ci = alice.json(&["account", "key", "create", "ci"]);
    let mut with_ci = Cli::new(&d);
    with_ci.key = ci["api_key"].as_str().unwrap().to_string();
    with_ci.ok(&["volume", "list"]);
    let keys = alice.ok(&["account", "key", "list"]);
    assert!(keys.contains("default") && keys.contains("ci"), "{keys}");
    alice.ok(&["account", "key", "revoke", "ci"]);
    let err = with_ci.fails(&["volume", "list"]);
    assert!(err.contains("[api_key_invalid]"), "{err}");
    // A CloudStack pair: its secret shown once, listed as such.
    let pair = alice.ok(&["account", "key", "create", "scripts", "--cloudstack"]);
    assert!(pair.contains("secret key"), "{pair}");
    let keys = alice.ok(&["account", "key", "list"]);
    let line = keys.lines().find(|l| l.starts_with("scripts")).unwrap();
    assert!(line.contains("cloudstack"), "{keys}");
    alice.ok(&["account", "key", "revoke", "scripts"]);

    // A template from a file of this machine: uploaded, then imported.
    let image = images.path().join("disk.raw");
    std::fs::write(&image, vec![0x42u8; 3 << 20]).unwrap();
    let t = alice.json(&[
        "template",
        "import",
        "golden",
        "--file",
        image.to_str().unwrap(),
    ]);
    assert_eq!(t["source_snapshot"], "upload:disk.raw");
    assert_eq!(t["size_bytes"], 3 << 20);
    assert_eq!(alice.json(&["upload", "list"]), serde_json::json!([]));
    // A tenant cannot name the daemon's files; the admin can, below import_dirs.
    let err = alice.fails(&[
        "template",
        "import",
        "host",
        "--file",
        image.to_str().unwrap(),
        "--on-server",
    ]);
    assert!(err.contains("[host_path_refused]"), "{err}");
    let t = admin.json(&[
        "template",
        "import",
        "host",
        "--file",
        image.to_str().unwrap(),
        "--on-server",
    ]);
    assert_eq!(t["source_snapshot"], "image:disk.raw");
    // Uploads by hand: listed with their checksum, deleted.
    let u = alice.json(&["upload", "create", image.to_str().unwrap()]);
    assert_eq!(u["state"], "Complete");
    assert_eq!(u["sha256"].as_str().unwrap().len(), 64);
    let listed = alice.ok(&["upload", "list"]);
    assert!(
        listed.contains("disk.raw") && listed.contains("Complete"),
        "{listed}"
    );
    alice.ok(&["upload", "delete", u["id"].as_str().unwrap()]);

    // The admin rotates its own key; the old one fails, the new one works.
    let rotated = admin.json(&["account", "key", "rotate"]);
    let err = admin.fails(&["volume", "list"]);
    assert!(err.contains("[api_key_invalid]"), "{err}");
    let mut admin = Cli::new(&d);
    admin.key = rotated["api_key"].as_str().unwrap().to_string();
    admin.ok(&["volume", "list"]);
    let err = admin.fails(&["account", "delete", "alice"]);
    assert!(err.contains("[account_not_empty]"), "{err}");
    admin.ok(&["account", "delete", "alice", "--purge"]);
    let err = alice.fails(&["volume", "list"]);
    assert!(err.contains("[api_key_invalid]"), "{err}");
}

#[test]
fn volume_snapshots_from_the_command_line() {
    let d = TestDaemon::start();
    let cli = Cli::new(&d);
    let v = cli.json(&["volume", "create", "db", "--size", "16M"]);
    let path = v["path"].as_str().unwrap();
    let wrote = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 9 0 3M", path])
        .output()
        .unwrap();
    assert!(wrote.status.success());

    // A table for people, with the state and what it stored.
    let shown = cli.ok(&["snapshot", "create", "db", "--name", "nightly"]);
    assert!(shown.contains("BackedUp"), "{shown}");
    assert!(shown.contains("none (full)"), "{shown}");
    let second = cli.json(&["snapshot", "create", "db"]);
    assert_eq!(second["state"], "BackedUp");
    assert!(second["name"].as_str().unwrap().starts_with("db-"));
    assert_eq!(second["read_bytes"], 0, "nothing changed: nothing read");
    let table = cli.ok(&["snapshot", "list"]);
    assert!(
        table.contains("nightly") && table.contains("incremental"),
        "{table}"
    );
    let verified = cli.json(&["snapshot", "verify", "nightly"]);
    assert!(verified["verified_at"].is_string(), "{verified}");

    // Errors are named on stderr.
    let err = cli.fails(&["snapshot", "create", "nope"]);
    assert!(err.contains("[volume_not_found]"), "{err}");
    let err = cli.fails(&["snapshot", "create", "db", "--quiesce", "maybe"]);
    assert!(err.contains("[quiesce_invalid]"), "{err}");

    assert!(cli
        .ok(&["snapshot", "delete", "nightly"])
        .contains("deleted"));
    let left = cli.json(&["snapshot", "list"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    let gc = cli.json(&["gc"]);
    assert_eq!(gc["state"], "Succeeded", "{gc}");

    // The store stands alone: a protected snapshot refuses its delete; a
    // dry-run recover finds nothing missing; the region's secret is
    // printed from its key file, exactly as the daemon keeps it.
    cli.ok(&["snapshot", "create", "db", "--name", "kept", "--protect"]);
    let err = cli.fails(&["snapshot", "delete", "kept"]);
    assert!(err.contains("[snapshot_protected]"), "{err}");
    assert!(cli
        .ok(&["snapshot", "unprotect", "kept"])
        .contains("BackedUp"));
    let recovered = cli.ok(&["region", "recover", "--dry-run"]);
    assert!(
        recovered.contains("0 snapshots and 0 templates to add"),
        "{recovered}"
    );
    let key_file = d.config.region_key_path();
    let printed = cli.ok(&[
        "region",
        "key",
        "export",
        "--key-file",
        key_file.to_str().unwrap(),
    ]);
    let kept = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(printed.trim(), kept.trim());
    let err = cli.fails(&[
        "region",
        "key",
        "export",
        "--key-file",
        "/nonexistent/region.key",
    ]);
    assert!(err.contains("[config_invalid]"), "{err}");
}

#[test]
fn policies_from_the_command_line() {
    let d = TestDaemon::start();
    let cli = Cli::new(&d);
    cli.ok(&["volume", "create", "db", "--size", "64M"]);
    let shown = cli.ok(&[
        "policy",
        "create",
        "--volume",
        "db",
        "--schedule",
        "daily",
        "02:30",
        "--timezone",
        "Europe/Paris",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
    ]);
    for line in [
        "name:        db-daily",
        "target:      volume db",
        "schedule:    daily 02:30",
        "cloudstack:  DAILY 30:02",
        "timezone:    Europe/Paris",
        "keep:        daily 7, weekly 4",
        "enabled:     true",
    ] {
        assert!(shown.contains(line), "{line} in\n{shown}");
    }
    let p = cli.json(&["policy", "show", "db-daily"]);
    assert_eq!(p["keep"]["weekly"], 4);
    assert!(p["next_run_at"].as_str().unwrap().ends_with(":30:00Z"));
    let list = cli.ok(&["policy", "list", "--volume", "db"]);
    assert!(
        list.lines()
            .nth(1)
            .unwrap()
            .starts_with("db-daily  volume db  daily 02:30"),
        "{list}"
    );
    cli.ok(&["snapshot", "create", "db", "--name", "by-hand"]);
    let sim = cli.ok(&["policy", "simulate", "db-daily"]);
    assert!(
        sim.contains("policy db-daily keeps daily 7, weekly 4:"),
        "{sim}"
    );
    assert!(
        sim.contains("1 taken by hand: never removed by a policy"),
        "{sim}"
    );
    let off = cli.ok(&[
        "policy",
        "update",
        "db-daily",
        "--disable",
        "--keep-last",
        "3",
    ]);
    assert!(
        off.contains("enabled:     false") && off.contains("keep:        last 3"),
        "{off}"
    );
    let err = cli.fails(&[
        "policy",
        "create",
        "--volume",
        "db",
        "--schedule",
        "weekly",
        "funday",
        "02:00",
    ]);
    assert!(err.contains("[schedule_invalid]"), "{err}");
    assert_eq!(
        cli.json(&["snapshot", "list", "--policy", "db-daily"]),
        serde_json::json!([])
    );
    cli.ok(&["policy", "delete", "db-daily"]);
    assert_eq!(cli.json(&["policy", "list"]), serde_json::json!([]));
}
