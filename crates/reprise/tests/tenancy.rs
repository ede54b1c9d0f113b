//! Tenants cannot reach the host, and the operator decides what they may
//! use: host paths refused (and only the admin's, below `import_dirs`,
//! accepted), uploads that resume, one hardened import path for every
//! entry, plans and quotas checked atomically, the key lifecycle, the
//! cross-tenant matrix over every documented route, and nothing of the
//! host in what a tenant reads. No guest boots here, but the upload that
//! becomes a template and an instance does (see `uploaded_files_boot_a_guest`).

use reprise_client::Client;
use reprise_core::model::*;
use reprise_core::ErrorKind;
use reprise_testing::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn err_of<T: std::fmt::Debug>(r: reprise_core::Result<T>) -> reprise_core::Error {
    r.expect_err("the request must be refused")
}

fn qemu_img(args: &[&str]) {
    // LUKS creation times its key derivation by CPU time, and fails now
    // and then when a coarse clock reads none ("Unable to get accurate
    // CPU usage"): tried again then.
    for _ in 0..5 {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Unable to get accurate CPU usage"),
            "qemu-img {args:?}: {out:?}"
        );
    }
    panic!("qemu-img {args:?} never measured its CPU usage");
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// What an account holds, as the API lists it: compared before and after
/// a refused request, it must not change.
fn holdings(c: &Client) -> Value {
    let get = |p: &str| c.get::<Value>(p).unwrap();
    let mut jobs = get("/api/v1/jobs?limit=1000");
    // A job's log grows while it runs; its identity and state are what count.
    for j in jobs.as_array_mut().unwrap() {
        j.as_object_mut()
            .unwrap()
            .retain(|k, _| k == "id" || k == "state");
    }
    let me: Account = c.get("/api/v1/whoami").unwrap();
    let mut keys = get(&format!("/api/v1/accounts/{}/keys", me.id));
    for k in keys.as_array_mut().unwrap() {
        k.as_object_mut().unwrap().remove("last_used_at");
    }
    let instances = get("/api/v1/instances");
    let mut points = Vec::new();
    for i in instances.as_array().unwrap() {
        points.push(get(&format!(
            "/api/v1/instances/{}/points",
            i["id"].as_str().unwrap()
        )));
    }
    json!({
        "volumes": get("/api/v1/volumes"),
        "policies": get("/api/v1/policies"),
        "instances": instances,
        "points": points,
        "snapshots": get("/api/v1/snapshots"),
        "templates": get("/api/v1/templates"),
        "uploads": get("/api/v1/uploads"),
        "jobs": jobs,
        "keys": keys,
        "account": get(&format!("/api/v1/accounts/{}", me.id)),
    })
}

fn wait_snapshot(c: &Client, name: &str) -> Snapshot {
    for _ in 0..600 {
        let s: Snapshot = c.get(&format!("/api/v1/snapshots/{name}")).unwrap();
        if s.state != SnapshotState::BackingUp {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("snapshot {name} still backing up");
}

#[test]
fn a_tenant_never_names_a_host_file_and_the_admin_only_below_import_dirs() {
    let imports = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| c.import_dirs.push(imports.path().into()));
    let alice = d.account("alice");
    let admin = d.admin();
    let admin_key_file = d.config.admin_key_path();
    let before = holdings(&alice);

    // Every host path a tenant names is refused with the same words, be it
    // a secret, the daemon's own key, a device or nothing at all.
    let secret = elsewhere.path().join("secret");
    std::fs::write(&secret, vec![7u8; 4096]).unwrap();
    let paths = [
        "/etc/shadow".to_string(),
        admin_key_file.to_string_lossy().into_owned(),
        "/proc/kcore".into(),
        "/no/such/file".into(),
        secret.to_string_lossy().into_owned(),
    ];
    let mut messages = Vec::new();
    for path in &paths {
        for (route, body) in [
            (
                "/api/v1/templates/import",
                json!({"name": "stolen", "file": path}),
            ),
            (
                "/api/v1/instances",
                json!({"name": "vm", "image": path, "no_start": true}),
            ),
            (
                "/api/v1/instances",
                json!({"name": "vm", "kernel": path, "no_start": true}),
            ),
            (
                "/api/v1/instances",
                json!({"name": "vm", "root_size": "1G", "kernel": "/boot/vmlinuz", "initrd": path}),
            ),
        ] {
            let e = err_of(alice.start_job(route, &body));
            assert_eq!(
                (e.kind, e.code.as_str()),
                (ErrorKind::Forbidden, "host_path_refused"),
                "{route} {body}"
            );
            assert!(
                !e.message.contains(path.as_str()),
                "the path is not echoed: {}",
                e.message
            );
            messages.push(e.message.replace(path.as_str(), ""));
        }
    }
    messages.sort();
    messages.dedup();
    assert!(
        messages.len() <= 3,
        "the refusal says the same whatever the path: {messages:?}"
    );
    assert_eq!(holdings(&alice), before, "nothing changed");

    // The admin: only regular files below an import directory, opened
    // without following a symlink or leaving the directory.
    std::fs::write(imports.path().join("disk.raw"), vec![0xABu8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink(&secret, imports.path().join("link.raw")).unwrap();
    std::fs::create_dir(imports.path().join("sub")).unwrap();
    let import_path = |rest: &str| format!("{}/{rest}", imports.path().display());
    for path in [
        secret.to_string_lossy().into_owned(),
        import_path("link.raw"),
        import_path("sub/../../secret"),
        import_path("sub"),
        import_path("missing.raw"),
        "relative.raw".into(),
    ] {
        let e = err_of(admin.start_job(
            "/api/v1/templates/import",
            &json!({"name": "t", "file": path}),
        ));
        assert_eq!(e.code, "host_path_refused", "{path}: {}", e.message);
        assert!(e.message.contains("import_dirs"), "{}", e.message);
    }
    assert!(admin
        .get::<Vec<Template>>("/api/v1/templates")
        .unwrap()
        .is_empty());

    // A path swapped between check and use: the import reads the file it
    // opened when the request came, never what the path names later.
    let job = admin
        .start_job(
            "/api/v1/templates/import",
            &json!({"name": "swapped", "file": import_path("disk.raw")}),
        )
        .unwrap();
    std::fs::remove_file(imports.path().join("disk.raw")).unwrap();
    std::os::unix::fs::symlink(&secret, imports.path().join("disk.raw")).unwrap();
    admin
        .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
        .unwrap();
    let t: Template = admin.get("/api/v1/templates/swapped").unwrap();
    assert_eq!(
        t.size_bytes,
        1 << 20,
        "the opened file was imported, not the secret"
    );
    assert_eq!(
        t.source_snapshot, "image:disk.raw",
        "no host path is recorded"
    );

    // Nothing is left in the daemon's private import directory.
    let left: Vec<_> = std::fs::read_dir(d.config.imports_dir())
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn uploads_resume_are_capped_and_stay_their_owners() {
    let d = TestDaemon::start_with(|c| {
        c.uploads.max_bytes = 8 << 20;
        c.uploads.max_per_account = 3;
    });
    let alice = d.account("alice");
    let bob = d.account("bob");
    // A request's status and body, whatever the status.
    let raw = |c: &Client, path: &str, body: &[u8]| -> (u16, String) {
        let sent = ureq::AgentBuilder::new()
            .build()
            .request("PUT", &format!("{}{path}", d.url))
            .set("Authorization", &format!("Bearer {}", c.key().unwrap()))
            .send_bytes(body);
        match sent {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    };
    let data: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i * 31 % 251) as u8).collect();
    let u: Upload = alice
        .post(
            "/api/v1/uploads",
            &json!({"name": "disk.raw", "size_bytes": data.len()}),
        )
        .unwrap();
    assert_eq!((u.state, u.received_bytes), (UploadState::Receiving, 0));
    let data_path = format!("/api/v1/uploads/{}/data", u.id);

    // The first half arrives; a retry from the wrong place is told where
    // to resume; the rest completes it with the file's SHA-256.
    let half = data.len() / 2;
    let (status, text) = raw(&alice, &format!("{data_path}?offset=0"), &data[..half]);
    assert_eq!(status, 200, "{text}");
    let after: Upload = serde_json::from_str(&text).unwrap();
    assert_eq!(after.received_bytes, half as u64);
    let (status, text) = raw(&alice, &format!("{data_path}?offset=0"), &data[..10]);
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("upload_offset_mismatch") && text.contains(&half.to_string()),
        "{text}"
    );
    // Another account cannot write to it, nor see it. (A small body: the
    // daemon answers a refusal without reading the body, and a client
    // still writing a large one would meet a closed connection.)
    let (status, _) = raw(
        &bob,
        &format!("{data_path}?offset={half}"),
        &data[half..half + 10],
    );
    assert_eq!(status, 404);
    assert_eq!(
        err_of(bob.get::<Upload>(&format!("/api/v1/uploads/{}", u.id))).code,
        "upload_not_found"
    );
    let (status, text) = raw(&alice, &format!("{data_path}?offset={half}"), &data[half..]);
    assert_eq!(status, 200, "{text}");
    let done: Upload = serde_json::from_str(&text).unwrap();
    assert_eq!(done.state, UploadState::Complete);
    let local = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&data)?;
            child.wait_with_output()
        })
        .unwrap();
    let local = String::from_utf8_lossy(&local.stdout);
    assert_eq!(done.sha256.as_deref(), local.split(' ').next());
    // Complete means never written again.
    let (status, text) = raw(&alice, &format!("{data_path}?offset={}", data.len()), b"x");
    assert_eq!(status, 409);
    assert!(text.contains("upload_complete"), "{text}");

    // More bytes than announced are refused; so is an upload above the cap,
    // and more uploads than the account may keep.
    let small: Upload = alice
        .post(
            "/api/v1/uploads",
            &json!({"name": "small", "size_bytes": 4}),
        )
        .unwrap();
    let (status, text) = raw(
        &alice,
        &format!("/api/v1/uploads/{}/data", small.id),
        b"toolong",
    );
    assert_eq!(status, 400);
    assert!(text.contains("upload_too_large"), "{text}");
    let e = err_of(alice.post::<_, Upload>(
        "/api/v1/uploads",
        &json!({"name": "big", "size_bytes": 9 << 20}),
    ));
    assert_eq!(e.code, "upload_too_large");
    let _: Upload = alice
        .post(
            "/api/v1/uploads",
            &json!({"name": "third", "size_bytes": 1}),
        )
        .unwrap();
    let e = err_of(alice.post::<_, Upload>(
        "/api/v1/uploads",
        &json!({"name": "fourth", "size_bytes": 1}),
    ));
    assert_eq!(e.code, "upload_limit_reached");
    let e = err_of(
        alice.post::<_, Upload>("/api/v1/uploads", &json!({"name": "a/b", "size_bytes": 1})),
    );
    assert_eq!(e.code, "name_invalid");

    // The client's upload: whole file, checked against its own hash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.raw");
    std::fs::write(&file, &data).unwrap();
    alice
        .delete(&format!("/api/v1/uploads/{}", small.id))
        .unwrap();
    let sent = alice.upload(&file, |_, _| {}).unwrap();
    assert_eq!(sent.sha256, done.sha256);
    // Deleted, its file goes.
    alice
        .delete(&format!("/api/v1/uploads/{}", sent.id))
        .unwrap();
    assert!(!d.config.uploads_dir().join(sent.id.to_string()).exists());
    // An upload still receiving cannot be used.
    let pending: Upload = alice
        .get::<Vec<Upload>>("/api/v1/uploads")
        .unwrap()
        .into_iter()
        .find(|u| u.state == UploadState::Receiving)
        .unwrap();
    let e = err_of(alice.start_job(
        "/api/v1/templates/import",
        &json!({"name": "t", "upload": pending.id}),
    ));
    assert_eq!(e.code, "upload_incomplete");
}

/// Hostile images, made under names of our own in a temp dir, then patched.
fn hostile_images(dir: &Path) -> Vec<(String, &'static str, &'static str)> {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    std::fs::write(p("base.raw"), vec![1u8; 1 << 20]).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &p("base.raw"),
        "-F",
        "raw",
        &p("backing.qcow2"),
    ]);
    std::fs::write(p("own-data"), b"").unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", p("own-data")),
        &p("datafile.qcow2"),
        "16M",
    ]);
    qemu_img(&["create", "-q", "-f", "qcow2", &p("feature.qcow2"), "16M"]);
    patch(&dir.join("feature.qcow2"), 72, &[0x80]);
    qemu_img(&["create", "-q", "-f", "qcow2", &p("huge.qcow2"), "16M"]);
    patch(&dir.join("huge.qcow2"), 24, &(1u64 << 62).to_be_bytes());
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=pw",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0",
        &p("encrypted.qcow2"),
        "16M",
    ]);
    qemu_img(&["create", "-q", "-f", "qcow2", &p("cut.qcow2"), "16M"]);
    let whole = std::fs::read(p("cut.qcow2")).unwrap();
    std::fs::write(p("cut.qcow2"), &whole[..200]).unwrap();
    qemu_img(&["create", "-q", "-f", "vmdk", &p("disk.vmdk"), "16M"]);
    vec![
        (p("backing.qcow2"), "image_unsafe", "backing file"),
        (p("datafile.qcow2"), "image_unsafe", "external data file"),
        (p("feature.qcow2"), "image_unsafe", "incompatible feature"),
        (p("encrypted.qcow2"), "image_unsafe", "encryption"),
        (p("huge.qcow2"), "image_unsafe", "virtual size"),
        (p("cut.qcow2"), "image_corrupt", "beyond the end"),
        (p("disk.vmdk"), "image_format_unsupported", "VMDK"),
    ]
}

#[test]
fn hostile_images_are_refused_at_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let images = hostile_images(dir.path());
    let d = TestDaemon::start_with(|c| c.import_dirs.push(dir.path().into()));
    let admin = d.admin();
    let alice = d.account("alice");
    let data_file_before = std::fs::metadata(dir.path().join("own-data"))
        .unwrap()
        .modified()
        .unwrap();
    let admin_before = holdings(&admin);
    for (file, code, words) in &images {
        let upload = alice
            .upload(Path::new(file), |_, _| {})
            .unwrap()
            .id
            .to_string();
        let alice_before = holdings(&alice);
        let entries = [
            (
                &alice,
                "/api/v1/templates/import",
                json!({"name": "bad", "upload": upload}),
            ),
            (
                &alice,
                "/api/v1/instances",
                json!({"name": "bad", "image_upload": upload, "no_start": true}),
            ),
            (
                &admin,
                "/api/v1/templates/import",
                json!({"name": "bad", "file": file}),
            ),
            (
                &admin,
                "/api/v1/instances",
                json!({"name": "bad", "image": file, "no_start": true}),
            ),
        ];
        for (who, route, body) in entries {
            let e = err_of(who.start_job(route, &body));
            assert!(
                e.code == *code && e.message.contains(words),
                "{file} via {route} {body}: {e:?}"
            );
        }
        assert_eq!(holdings(&alice), alice_before, "{file}: nothing changed");
        alice.delete(&format!("/api/v1/uploads/{upload}")).unwrap();
    }
    assert_eq!(holdings(&admin), admin_before);
    assert_eq!(
        std::fs::metadata(dir.path().join("own-data"))
            .unwrap()
            .modified()
            .unwrap(),
        data_file_before,
        "the data file was not touched"
    );
}

/// The boot of a tenant's own files: an image, a kernel and an initrd
/// uploaded, the image made a template, an instance deployed from it that
/// boots with the uploaded kernel, and its agent reads the template's bytes.
#[test]
fn uploaded_files_boot_a_guest() {
    let d = TestDaemon::start();
    let alice = d.account("alice");
    let dir = tempfile::tempdir().unwrap();
    // An ext4 disk holding a file: the guest mounts its first disk.
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    let bytes: Vec<u8> = (0..(3 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(content.join("app.bin"), &bytes).unwrap();
    let image = dir.path().join("golden.raw");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("16M")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let upload = alice.upload(&image, |_, _| {}).unwrap();
    run_job(
        &alice,
        "/api/v1/templates/import",
        &json!({"name": "golden", "upload": upload.id}),
    );
    let t: Template = alice.get("/api/v1/templates/golden").unwrap();
    assert_eq!(
        (t.size_bytes, t.source_snapshot.as_str()),
        (16 << 20, "upload:golden.raw")
    );
    let mut req = d.guest_instance_for(&alice, "vm", &[]);
    req.template = Some("golden".into());
    run_job(&alice, "/api/v1/instances", &req);
    let vm = instance(&alice, "vm");
    assert_eq!(vm.state, InstanceState::Running);
    assert!(
        vm.qmp_socket.is_empty() && vm.pid.is_none(),
        "no host details: {vm:?}"
    );
    assert_eq!(vm.kernel.as_deref(), Some("kernel"));
    let (code, out) = d.guest_sh(&vm, "md5sum /mnt/data/app.bin");
    assert_eq!(code, 0, "{out}");
    let local = Command::new("md5sum")
        .arg(content.join("app.bin"))
        .output()
        .unwrap();
    assert_eq!(
        out.split(' ').next(),
        String::from_utf8_lossy(&local.stdout).split(' ').next(),
        "the guest reads the uploaded image's bytes"
    );
    run_job(&alice, "/api/v1/instances/vm/stop", &json!({"force": true}));
}

/// Each QEMU runs in a control group of its own, capped at its
/// instance's vCPUs and RAM (and QEMU's overhead): what its guest takes is
/// counted there, not against the daemon or the host.
#[test]
fn each_guest_runs_in_a_control_group_capped_at_its_instance() {
    use reprise_qemu::cgroup::{memory_limit, Hierarchy};
    let hierarchy = Hierarchy::probe(Path::new("/sys/fs/cgroup"))
        .expect("this test needs a writable cgroup hierarchy (it runs as root)");
    let d = TestDaemon::start();
    let admin = d.admin();
    let vm = d.booted_guest(&admin, "vm", "vm-data");
    let pid = instance(&admin, "vm")
        .pid
        .expect("a running instance's pid");
    let group = format!("/reprise/{}", vm.id);
    let cgroups_of = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (memory_dir, limit_file, usage_file, cpu) = match &hierarchy {
        Hierarchy::V2(root) => {
            let dir = root.join(&group[1..]);
            (
                dir.clone(),
                "memory.max",
                "memory.current",
                (dir, "cpu.max", "100000 100000"),
            )
        }
        Hierarchy::V1 { memory, cpu } => (
            memory.join(&group[1..]),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            (cpu.join(&group[1..]), "cpu.cfs_quota_us", "100000"),
        ),
    };
    let qemu = cgroups_of(&pid.to_string());
    assert!(
        qemu.lines()
            .any(|l| l.ends_with(&group) && (l.starts_with("0::") || l.contains(":memory:"))),
        "QEMU's groups: {qemu}"
    );
    assert!(
        !cgroups_of("self").contains("/reprise/"),
        "the daemon is in no instance's group"
    );
    let read = |dir: &Path, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read(&memory_dir, limit_file),
        memory_limit(256 << 20).to_string()
    );
    assert_eq!(read(&cpu.0, cpu.1), cpu.2);

    // The guest fills 150 MiB of its RAM: counted in QEMU's group, within
    // its limit, and the guest runs on.
    let (code, out) = d.guest_sh(&vm, "dd if=/dev/zero of=/fill bs=1M count=150 2>&1; sync");
    assert_eq!(code, 0, "{out}");
    let used: u64 = read(&memory_dir, usage_file).parse().unwrap();
    assert!(
        used > 150 << 20 && used <= memory_limit(256 << 20),
        "QEMU's group holds {} MiB",
        used >> 20
    );
    let (code, _) = d.guest_sh(&vm, "rm /fill");
    assert_eq!(code, 0);
    run_job(&admin, "/api/v1/instances/vm/stop", &json!({"force": true}));
    assert_eq!(instance(&admin, "vm").state, InstanceState::Stopped);
}

/// An instance made before uploads, whose kernel or initrd is a file of
/// the host, is refused its boot and its clone by name: QEMU would load
/// that file into the guest's memory. (Such rows are made here by hand.)
#[test]
fn an_instance_booting_a_host_file_is_refused_its_boot_and_its_clone() {
    let d = TestDaemon::start();
    let admin = d.admin();
    let _: Volume = admin
        .post(
            "/api/v1/volumes",
            &json!({"name": "old-data", "size": "64M"}),
        )
        .unwrap();
    run_job(
        &admin,
        "/api/v1/instances",
        &CreateInstance {
            no_start: true,
            ..guest_instance("old", &["old-data"])
        },
    );
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), b"a host secret").unwrap();
    let legacy = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute('UPDATE instances SET initrd = ? WHERE name = ?', (sys.argv[2], 'old')); c.commit()",
        )
        .arg(d.config.catalog_path())
        .arg(secret.path())
        .status()
        .unwrap();
    assert!(legacy.success());
    for route in ["/api/v1/instances/old/start", "/api/v1/instances/old/clone"] {
        let body = json!({"name": "copy"});
        let e = match admin.start_job(route, &body) {
            Err(e) => e,
            Ok(job) => admin
                .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
                .expect_err("a boot of a host file"),
        };
        assert_eq!(e.code, "boot_file_not_own", "{route}: {e}");
        assert!(
            !e.message.contains(secret.path().to_str().unwrap()),
            "{}",
            e.message
        );
    }
    assert_eq!(instance(&admin, "old").state, InstanceState::Stopped);
    assert!(admin.get::<Instance>("/api/v1/instances/copy").is_err());
}

/// A guest that writes without end to its serial console fills no disk:
/// past `[qemu] console_log_max` its log is rotated, one old log kept.
#[test]
fn a_guest_s_console_log_is_rotated_past_its_limit() {
    const MAX: u64 = 64 << 10;
    let d = TestDaemon::start_with(|c| c.qemu.console_log_max = MAX);
    let admin = d.admin();
    let vm = d.booted_guest(&admin, "chatty", "chatty-data");
    let log = d.config.instance_run_dir(vm.id).join("console.log");
    let old = d.config.instance_run_dir(vm.id).join("console.log.1");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    for round in 0..2 {
        let (code, out) = d.guest_sh(
            &vm,
            "dd if=/dev/zero bs=1k count=512 > /dev/ttyS0 2>/dev/null; echo written",
        );
        assert_eq!((code, out.trim()), (0, "written"), "round {round}");
        let waited = std::time::Instant::now();
        while size(&log) > MAX {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "round {round}: the console log holds {} bytes",
                size(&log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            size(&old) > MAX,
            "round {round}: the rotated log holds what passed the limit ({} bytes)",
            size(&old)
        );
    }
    run_job(
        &admin,
        "/api/v1/instances/chatty/stop",
        &json!({"force": true}),
    );
}

/// A host lets its running guests have at most `[host]
/// guest_memory_ratio` of its RAM: a start past it is refused, naming no
/// capacity of the host, and works once another guest stops.
#[test]
fn a_host_starts_no_guest_past_the_ram_it_lets_guests_have() {
    let host = reprise_qemu::process::host_memory().expect("/proc/meminfo");
    // Room for one test guest (256 MiB), not two.
    let d = TestDaemon::start_with(|c| {
        c.host.guest_memory_ratio = (400u64 << 20) as f64 / host as f64;
    });
    let admin = d.admin();
    let first = d.booted_guest(&admin, "first", "first-data");
    run_job(
        &admin,
        "/api/v1/instances",
        &CreateInstance {
            no_start: true,
            ..guest_instance("second", &[])
        },
    );
    let start = |name: &str| {
        let job = admin
            .start_job(&format!("/api/v1/instances/{name}/start"), &json!({}))
            .unwrap();
        admin.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
    };
    let e = start("second").expect_err("a second guest past the host's RAM ratio");
    assert_eq!(e.code, "host_memory_short", "{e}");
    assert!(
        !e.message.contains("MiB"),
        "no capacity of the host: {}",
        e.message
    );
    assert_eq!(instance(&admin, "second").state, InstanceState::Stopped);
    assert_eq!(instance(&admin, "first").state, InstanceState::Running);

    run_job(
        &admin,
        &format!("/api/v1/instances/{}/stop", first.name),
        &json!({"force": true}),
    );
    start("second").expect("room again once the first stopped");
    assert_eq!(instance(&admin, "second").state, InstanceState::Running);
    run_job(
        &admin,
        "/api/v1/instances/second/stop",
        &json!({"force": true}),
    );
}

#[test]
fn plans_are_the_operators_and_every_limit_holds_atomically() {
    // Backups slow enough for requests to race a running job.
    let d = TestDaemon::start_seamed(chunk_pause(200), |c| {
        c.plans.insert(
            "small".into(),
            reprise_core::plan::PlanLimits {
                max_volumes: Some(3),
                max_volume_bytes: Some(3 << 30),
                max_instances: Some(1),
                max_vcpus: Some(2),
                max_memory_bytes: Some(1 << 30),
                max_snapshots_per_volume: Some(1),
                max_recovery_points: Some(1),
                max_snapshot_bytes: Some(64 << 20),
                max_keys: Some(2),
                max_policies: Some(1),
                ..Default::default()
            },
        );
        c.default_plan = Some("small".into());
    });
    let admin = d.admin();
    let alice = d.account("alice");
    let me: AccountDetails = alice.get("/api/v1/accounts/alice").unwrap();
    assert_eq!(
        me.account.plan.as_deref(),
        Some("small"),
        "the default plan"
    );

    // A tenant neither chooses nor changes its plan, nor defines plans.
    let e = err_of(
        alice.post::<_, AccountDetails>("/api/v1/accounts/alice/settings", &json!({"plan": ""})),
    );
    assert_eq!(e.code, "admin_only");
    let e = err_of(alice.post::<_, Value>("/api/v1/plans", &json!({"name": "free"})));
    assert_eq!(e.code, "admin_only");
    let e = err_of(alice.start_job(
        "/api/v1/instances",
        &json!({"name": "vm", "root_size": "64M", "no_start": true, "plan": "small"}),
    ));
    assert_eq!(e.code, "admin_only");
    let plans: Vec<Value> = alice.get("/api/v1/plans").unwrap();
    assert_eq!(plans.len(), 1, "a tenant sees its own plan: {plans:?}");

    // Keys (bearer keys and CloudStack pairs together) and policies.
    let me_id = me.account.id;
    let key = |name: &str, cloudstack: bool| {
        alice.post::<_, ApiKeyCreated>(
            &format!("/api/v1/accounts/{me_id}/keys"),
            &json!({"name": name, "cloudstack": cloudstack}),
        )
    };
    key("second", false).unwrap();
    for cloudstack in [false, true] {
        let e = err_of(key("third", cloudstack));
        assert_eq!(e.code, "key_limit_reached", "{e}");
        assert!(e.message.contains("revoke a key"), "{}", e.message);
    }

    // Volumes: count and bytes, named in the refusal.
    for n in ["a", "b"] {
        let _: Volume = alice
            .post("/api/v1/volumes", &json!({"name": n, "size": "1G"}))
            .unwrap();
    }
    let e = err_of(alice.post::<_, Volume>("/api/v1/volumes", &json!({"name": "c", "size": "2G"})));
    assert_eq!(e.code, "volume_size_limit_reached");
    for part in ["'small'", "max_volume_bytes", "delete a volume"] {
        assert!(e.message.contains(part), "{part}: {}", e.message);
    }
    let e = err_of(alice.post::<_, Volume>("/api/v1/volumes/a/resize", &json!({"size": "3G"})));
    assert_eq!(e.code, "volume_size_limit_reached");
    assert_eq!(
        alice.get::<Volume>("/api/v1/volumes/a").unwrap().size_bytes,
        1 << 30,
        "not resized"
    );
    // vCPUs and RAM: an instance asking more than the plan's totals.
    for (shape, code) in [
        (json!({"cpus": 4}), "vcpu_limit_reached"),
        (json!({"memory": "2G"}), "memory_limit_reached"),
    ] {
        let mut req = json!({"name": "big", "root_size": "64M", "no_start": true});
        req.as_object_mut()
            .unwrap()
            .extend(shape.as_object().unwrap().clone());
        let e = err_of(alice.start_job("/api/v1/instances", &req));
        assert_eq!(e.code, code, "{e}");
        assert!(e.message.contains("'small'"), "{}", e.message);
    }
    assert!(alice
        .get::<Vec<Value>>("/api/v1/instances")
        .unwrap()
        .is_empty());
    // A template import whose disk could take the account past its bytes
    // in the store: a tiny upload holding a 1 GiB disk is refused at once.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1G"]);
    let up = alice.upload(&image, |_, _| {}).unwrap();
    let e = err_of(alice.start_job(
        "/api/v1/templates/import",
        &json!({"name": "big", "upload": up.id.to_string()}),
    ));
    assert_eq!(e.code, "snapshot_size_limit_reached", "{e}");
    assert!(alice
        .get::<Vec<Value>>("/api/v1/templates")
        .unwrap()
        .is_empty());
    let policy = |name: &str| {
        alice.post::<_, Policy>(
            "/api/v1/policies",
            &json!({"name": name, "volume": "a", "schedule": "daily 02:30", "enabled": false}),
        )
    };
    policy("nightly").unwrap();
    assert_eq!(err_of(policy("hourly")).code, "policy_limit_reached");
    // The instance's root volume counts too.
    run_job(
        &alice,
        "/api/v1/instances",
        &json!({"name": "vm", "root_size": "512M", "no_start": true}),
    );
    let e =
        err_of(alice.post::<_, Volume>("/api/v1/volumes", &json!({"name": "c", "size": "64M"})));
    assert_eq!(e.code, "volume_limit_reached");
    let e = err_of(alice.start_job(
        "/api/v1/instances",
        &json!({"name": "vm2", "kernel_upload": "x", "no_start": true}),
    ));
    assert_eq!(e.code, "upload_not_found");
    let e = err_of(alice.start_job(
        "/api/v1/instances",
        &json!({"name": "vm2", "root_size": "64M", "no_start": true}),
    ));
    assert_eq!(e.code, "instance_limit_reached");

    // Recovery points: the VPS rule, one per instance.
    run_job(
        &alice,
        "/api/v1/instances/vm/points",
        &json!({"name": "only"}),
    );
    let e = err_of(alice.start_job("/api/v1/instances/vm/points", &json!({})));
    assert_eq!(e.code, "point_limit_reached");
    assert!(
        e.message
            .contains("delete the existing recovery point first"),
        "{}",
        e.message
    );

    // Snapshots per volume.
    run_job(
        &alice,
        "/api/v1/snapshots",
        &json!({"volume": "a", "name": "s1"}),
    );
    assert_eq!(wait_snapshot(&alice, "s1").state, SnapshotState::BackedUp);
    let e = err_of(alice.start_job("/api/v1/snapshots", &json!({"volume": "a"})));
    assert_eq!(e.code, "snapshot_limit_reached");

    // The account shows its plan and usage against each limit.
    let me: AccountDetails = alice.get("/api/v1/accounts/alice").unwrap();
    assert_eq!(
        (
            me.usage.volumes,
            me.usage.volume_bytes,
            me.usage.instances,
            me.usage.snapshots,
            me.usage.most_recovery_points
        ),
        (3, (2 << 30) + (512 << 20), 1, 1, 1)
    );
    // The CLI says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["--url", &d.url, "account", "show", "alice"])
        .env("REPRISE_API_KEY", alice.key().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("max_volumes") && text.contains("small"),
        "{text}"
    );

    // The operator lifts the account onto another plan; the tenant's next
    // request sees it.
    let _: Value = admin
        .post(
            "/api/v1/plans",
            &json!({"name": "one", "max_volumes": 5, "max_concurrent_jobs": 1}),
        )
        .unwrap();
    let _: AccountDetails = admin
        .post("/api/v1/accounts/alice/settings", &json!({"plan": "one"}))
        .unwrap();
    let e = err_of(admin.delete("/api/v1/plans/one"));
    assert_eq!(e.code, "plan_in_use");

    // 20 concurrent requests against a limit of one: exactly one passes.
    let _: Value = admin
        .post(
            "/api/v1/plans",
            &json!({"name": "one", "max_volumes": 4, "max_concurrent_jobs": 1}),
        )
        .unwrap();
    let race = |make: &(dyn Fn(&Client, usize) -> reprise_core::Result<Value> + Sync)| {
        let results: Vec<reprise_core::Result<Value>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    let c = alice.clone();
                    s.spawn(move || make(&c, i))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let passed: Vec<Value> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let codes: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| e.code)
            .collect();
        (passed, codes)
    };
    let (passed, codes) = race(&|c, i| {
        c.post(
            "/api/v1/volumes",
            &json!({"name": format!("race{i}"), "size": "64M"}),
        )
    });
    assert_eq!(passed.len(), 1, "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "volume_limit_reached"),
        "{codes:?}"
    );
    // Jobs at once: a backup of written data takes a while; of 20 that
    // race to start, one runs.
    let path = d
        .server()
        .app
        .catalog
        .volume(me.account.id, "b")
        .unwrap()
        .path;
    let ok = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 7 0 4M", &path])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let (passed, codes) = race(&|c, i| {
        c.post::<_, JobStarted>(
            "/api/v1/snapshots",
            &json!({"volume": "b", "name": format!("b{i}")}),
        )
        .map(|j| serde_json::to_value(j.job).unwrap())
    });
    assert_eq!(passed.len(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| c == "job_limit_reached"), "{codes:?}");
    let job: Job = serde_json::from_value(passed[0].clone()).unwrap();
    alice
        .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
        .unwrap();
}

#[test]
fn keys_are_made_listed_revoked_and_rotated_and_accounts_deleted() {
    let d = TestDaemon::start();
    let admin = d.admin();
    let alice = d.account("alice");
    let bob = d.account("bob");

    // Several named keys; the list shows when each was last used.
    let made: ApiKeyCreated = alice
        .post("/api/v1/accounts/alice/keys", &json!({"name": "ci"}))
        .unwrap();
    let ci = Client::new(&d.url, Some(made.api_key.clone()));
    let _: Vec<Volume> = ci.get("/api/v1/volumes").unwrap();
    let keys: Vec<ApiKey> = alice.get("/api/v1/accounts/alice/keys").unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["default", "ci"]);
    assert!(keys.iter().all(|k| k.last_used_at.is_some()), "{keys:?}");
    assert!(
        !serde_json::to_string(&keys)
            .unwrap()
            .contains(&made.api_key),
        "never shown again"
    );
    // Another tenant sees none of them, and cannot revoke one.
    assert_eq!(
        err_of(bob.get::<Vec<ApiKey>>("/api/v1/accounts/alice/keys")).code,
        "account_not_found"
    );
    assert_eq!(
        err_of(bob.delete("/api/v1/accounts/alice/keys/ci")).code,
        "account_not_found"
    );
    // Revoked: the next request fails.
    alice.delete("/api/v1/accounts/alice/keys/ci").unwrap();
    let e = err_of(ci.get::<Vec<Volume>>("/api/v1/volumes"));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::Unauthorized, "api_key_invalid")
    );
    // The admin revokes any key.
    admin.delete("/api/v1/accounts/bob/keys/default").unwrap();
    assert_eq!(
        err_of(bob.get::<Vec<Volume>>("/api/v1/volumes")).code,
        "api_key_invalid"
    );

    // The admin key rotates without a restart; the file follows.
    let e = err_of(admin.delete("/api/v1/accounts/admin/keys/default"));
    assert_eq!(e.code, "last_admin_key");
    let rotated: ApiKeyCreated = admin.post("/api/v1/keys/rotate", &json!({})).unwrap();
    assert_eq!(
        err_of(admin.get::<Account>("/api/v1/whoami")).code,
        "api_key_invalid"
    );
    let admin = Client::new(&d.url, Some(rotated.api_key.clone()));
    assert!(admin.get::<Account>("/api/v1/whoami").unwrap().admin);
    assert_eq!(
        std::fs::read_to_string(d.config.admin_key_path())
            .unwrap()
            .trim(),
        rotated.api_key
    );

    // An account is deleted only empty, or with purge, through the usual
    // operations; its keys fail at once.
    let _: Volume = alice
        .post("/api/v1/volumes", &json!({"name": "v", "size": "64M"}))
        .unwrap();
    run_job(
        &alice,
        "/api/v1/snapshots",
        &json!({"volume": "v", "name": "s"}),
    );
    wait_snapshot(&alice, "s");
    run_job(
        &alice,
        "/api/v1/instances",
        &json!({"name": "vm", "root_size": "64M", "no_start": true}),
    );
    run_job(&alice, "/api/v1/instances/vm/points", &json!({"name": "p"}));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"hello").unwrap();
    alice.upload(&dir.path().join("f"), |_, _| {}).unwrap();
    let e = err_of(admin.delete("/api/v1/accounts/alice"));
    assert_eq!(e.code, "account_not_empty");
    for part in ["1 instance", "volume", "1 snapshot", "1 upload"] {
        assert!(e.message.contains(part), "{part}: {}", e.message);
    }
    assert_eq!(
        err_of(alice.delete("/api/v1/accounts/alice")).code,
        "admin_only"
    );
    let files_before: Vec<_> = std::fs::read_dir(d.config.default_zone_dir())
        .unwrap()
        .collect();
    assert_eq!(files_before.len(), 2);
    let purge = admin
        .delete_job("/api/v1/accounts/alice?purge=true")
        .unwrap();
    admin
        .wait_job(&purge.id.to_string(), Duration::from_secs(120), |_| {})
        .unwrap();
    assert_eq!(
        err_of(alice.get::<Account>("/api/v1/whoami")).code,
        "api_key_invalid"
    );
    assert_eq!(
        err_of(admin.get::<AccountDetails>("/api/v1/accounts/alice")).code,
        "account_not_found"
    );
    let left: Vec<_> = std::fs::read_dir(d.config.default_zone_dir())
        .unwrap()
        .collect();
    assert!(left.is_empty(), "its volumes' files are gone: {left:?}");
    let uploads_left: Vec<_> = std::fs::read_dir(d.config.uploads_dir()).unwrap().collect();
    assert!(uploads_left.is_empty(), "{uploads_left:?}");
    assert_eq!(
        err_of(admin.delete("/api/v1/accounts/admin")).code,
        "account_is_admin"
    );
}

/// Alice's resources of every kind, and the value each path parameter
/// takes to name them, by id and by name.
struct Alice {
    client: Client,
    refs: Vec<(&'static str, Vec<String>)>,
}

fn alice_with_everything(d: &TestDaemon) -> Alice {
    let c = d.account("alice");
    let me: Account = c.get("/api/v1/whoami").unwrap();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "avol", "size": "64M"}))
        .unwrap();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "aspare", "size": "64M"}))
        .unwrap();
    run_job(
        &c,
        "/api/v1/snapshots",
        &json!({"volume": "avol", "name": "asnap"}),
    );
    let s = wait_snapshot(&c, "asnap");
    let t: Template = c
        .post(
            "/api/v1/templates",
            &json!({"name": "atpl", "snapshot": "asnap"}),
        )
        .unwrap();
    let job = run_job(
        &c,
        "/api/v1/instances",
        &json!({"name": "avm", "root_size": "64M", "no_start": true}),
    );
    let vm = instance(&c, "avm");
    run_job(
        &c,
        "/api/v1/instances/avm/points",
        &json!({"name": "apoint"}),
    );
    let points: Vec<Point> = c.get("/api/v1/instances/avm/points").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"alice's").unwrap();
    let u = c.upload(&dir.path().join("f"), |_, _| {}).unwrap();
    let keys: Vec<ApiKey> = c.get("/api/v1/accounts/alice/keys").unwrap();
    // Switched off: it must not run while the matrix is tried.
    let policy: Policy = c
        .post(
            "/api/v1/policies",
            &json!({"name": "apol", "volume": "avol", "schedule": "daily 02:30", "enabled": false}),
        )
        .unwrap();
    let refs = vec![
        ("volume", vec![v.id.to_string(), "avol".into()]),
        ("instance", vec![vm.id.to_string(), "avm".into()]),
        ("point", vec![points[0].id.to_string(), "apoint".into()]),
        ("snapshot", vec![s.id.to_string(), "asnap".into()]),
        ("template", vec![t.id.to_string(), "atpl".into()]),
        ("job", vec![job.id.to_string()]),
        ("upload", vec![u.id.to_string()]),
        ("account", vec![me.id.to_string(), "alice".into()]),
        ("key", vec![keys[0].id.to_string(), "default".into()]),
        ("plan", vec!["gold".into()]),
        ("policy", vec![policy.id.to_string(), "apol".into()]),
    ];
    Alice { client: c, refs }
}

/// The kind of resource a documented path's parameter names.
fn kind_of(path: &str, param: &str) -> &'static str {
    match (param, path) {
        ("point", _) => "point",
        ("key", _) => "key",
        ("account", _) => "account",
        ("plan", _) => "plan",
        ("id", p) if p.starts_with("/api/v1/volumes/") => "volume",
        ("id", p) if p.starts_with("/api/v1/instances/") => "instance",
        ("id", p) if p.starts_with("/api/v1/snapshots/") => "snapshot",
        ("id", p) if p.starts_with("/api/v1/templates/") => "template",
        ("id", p) if p.starts_with("/api/v1/jobs/") => "job",
        ("id", p) if p.starts_with("/api/v1/uploads/") => "upload",
        ("id", p) if p.starts_with("/api/v1/policies/") => "policy",
        _ => panic!("{path}: parameter {{{param}}} names a resource this test does not know: add it to the matrix"),
    }
}

/// A body for a route that takes one: plausible, naming Alice's
/// resources where the route takes references.
fn body_for(path: &str) -> Value {
    match path {
        p if p.ends_with("/attach") => json!({"instance": "avm"}),
        p if p.ends_with("/resize") => json!({"size": "128M"}),
        p if p.ends_with("/revert") && p.contains("/volumes/") => json!({"snapshot": "asnap"}),
        p if p.ends_with("/volumes") => json!({"name": "stolen"}),
        p if p.ends_with("/clone") => json!({"name": "stolen"}),
        p if p.ends_with("/settings") => json!({}),
        p if p.ends_with("/keys") => json!({"name": "stolen"}),
        p if p.ends_with("/points") => json!({"name": "stolen"}),
        p if p.ends_with("/protection") => json!({"protected": false}),
        _ => json!({}),
    }
}

/// Headers a request is sent with.
type Headers = Vec<(String, String)>;

/// Every documented route and method, called by each caller without a
/// right to it — no key, a revoked key, a CloudStack pair's public key as
/// a bearer, a forged mark of a request sent on between hosts, a genuine
/// mark grown stale — is refused by name at the edge, before any route
/// runs; nothing of alice's changes. (Another tenant's calls are the
/// cross-tenant matrix below; a replayed mark, `edge.rs`.)
#[test]
fn every_route_refuses_every_caller_without_a_right() {
    let d = TestDaemon::start();
    let alice = alice_with_everything(&d);
    let me: Account = alice.client.get("/api/v1/whoami").unwrap();
    let key = |name: &str, cloudstack: bool| -> ApiKeyCreated {
        alice
            .client
            .post(
                &format!("/api/v1/accounts/{}/keys", me.id),
                &json!({"name": name, "cloudstack": cloudstack}),
            )
            .unwrap()
    };
    let revoked = key("revoked", false);
    alice
        .client
        .delete(&format!(
            "/api/v1/accounts/{}/keys/{}",
            me.id, revoked.key.id
        ))
        .unwrap();
    let pair = key("pair", true);
    let before = holdings(&alice.client);
    let doc: Value = alice.client.get("/api/v1/openapi.json").unwrap();
    let forward_key = d.server().app.forward_key();
    // Routes anyone may read: the API's description and its health.
    let public = ["/api/v1/openapi.json", "/api/v1/health"];

    let mut tried = 0;
    let mut nonce = 0u64;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        // Alice's resources by id where the route names one.
        let mut url = path.clone();
        for param in path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            let kind = kind_of(path, param);
            let values = &alice.refs.iter().find(|(k, _)| *k == kind).unwrap().1;
            url = url.replace(&format!("{{{param}}}"), &values[0]);
        }
        for (method, _) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            // Who calls, the headers it sends, the code it must get.
            let callers: Vec<(&str, Headers, &str)> = {
                let mut marked = |age: i64, forged: bool| {
                    nonce += 1;
                    let caller = format!("{} {}", me.id, uuid::Uuid::nil());
                    let mut headers = reprise_daemon::forward::HeaderMap::new();
                    headers.insert("x-reprise-caller", caller.parse().unwrap());
                    let m: reprise_daemon::forward::Method = method.parse().unwrap();
                    let body = if method == "POST" {
                        body_for(path).to_string()
                    } else {
                        String::new()
                    };
                    let mark = reprise_daemon::forward::MarkOf {
                        host: "local",
                        method: &m,
                        path_and_query: &url,
                        headers: &headers,
                        time: chrono::Utc::now().timestamp() - age,
                        nonce: &format!("{nonce:032x}"),
                        body: Some(blake3::hash(body.as_bytes())),
                    }
                    .header(if forged { &[9u8; 32] } else { &forward_key });
                    vec![
                        ("x-reprise-caller".to_string(), caller),
                        ("x-reprise-forwarded".to_string(), mark),
                    ]
                };
                vec![
                    ("no key", vec![], "api_key_missing"),
                    (
                        "a revoked key",
                        vec![(
                            "Authorization".into(),
                            format!("Bearer {}", revoked.api_key),
                        )],
                        "api_key_invalid",
                    ),
                    (
                        "a CloudStack apiKey as a bearer",
                        vec![("Authorization".into(), format!("Bearer {}", pair.api_key))],
                        "api_key_invalid",
                    ),
                    ("a forged mark", marked(0, true), "forward_invalid"),
                    ("a stale mark", marked(120, false), "forward_expired"),
                ]
            };
            for (who, headers, code) in callers {
                if who == "no key" && public.contains(&path.as_str()) {
                    continue;
                }
                let mut req = ureq::AgentBuilder::new()
                    .build()
                    .request(&method, &format!("{}{url}", d.url));
                for (name, value) in &headers {
                    req = req.set(name, value);
                }
                let resp = match method.as_str() {
                    "POST" => req.send_json(body_for(path)),
                    "PUT" => req.send_bytes(b"a stranger's bytes"),
                    _ => req.call(),
                };
                let (status, answer) = match resp {
                    Ok(r) => panic!("{method} {url} by {who}: answered {}", r.status()),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
                    Err(e) => panic!("{method} {url} by {who}: {e}"),
                };
                let v: Value = serde_json::from_str(&answer).unwrap_or_default();
                assert_eq!(
                    (status, v["error"]["code"].as_str().unwrap_or("")),
                    (401, code),
                    "{method} {url} by {who}: {answer}"
                );
                tried += 1;
            }
        }
    }
    assert_eq!(holdings(&alice.client), before, "alice's holdings changed");
    println!("route × caller matrix: {tried} requests refused, 0 leaks");
    assert!(tried > 300, "only {tried} requests tried");
}

#[test]
fn the_cross_tenant_matrix_covers_every_documented_route() {
    let d = TestDaemon::start();
    let alice = alice_with_everything(&d);
    let bob = d.account("bob");
    let _: Volume = bob
        .post("/api/v1/volumes", &json!({"name": "bvol", "size": "64M"}))
        .unwrap();
    let before = holdings(&alice.client);
    let doc: Value = bob.get("/api/v1/openapi.json").unwrap();
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let params: Vec<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        if params.is_empty() {
            continue;
        }
        // Every combination of Alice's references, by id and by name.
        let mut urls = vec![path.clone()];
        for param in &params {
            let kind = kind_of(path, param);
            let values = &alice.refs.iter().find(|(k, _)| *k == kind).unwrap().1;
            urls = urls
                .iter()
                .flat_map(|u| {
                    values
                        .iter()
                        .map(move |v| u.replace(&format!("{{{param}}}"), v))
                })
                .collect();
        }
        for (method, _) in ops.as_object().unwrap() {
            for url in &urls {
                let req = ureq::AgentBuilder::new()
                    .build()
                    .request(&method.to_uppercase(), &format!("{}{url}", d.url))
                    .set("Authorization", &format!("Bearer {}", bob.key().unwrap()));
                let resp = match method.as_str() {
                    "post" => req.send_json(body_for(path)),
                    "put" => req.send_bytes(b"bob's bytes"),
                    _ => req.call(),
                };
                let status = match resp {
                    Ok(r) => panic!(
                        "{method} {url}: bob got {} for alice's resource",
                        r.status()
                    ),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
                    Err(e) => panic!("{method} {url}: {e}"),
                };
                assert!(
                    status.0 == 404 || (status.0 == 403 && status.1.contains("admin_only")),
                    "{method} {url}: {status:?}"
                );
                tried += 1;
            }
        }
    }
    // Routes without a parameter take references in their bodies.
    for (route, body) in [
        ("/api/v1/snapshots", json!({"volume": "avol"})),
        (
            "/api/v1/templates",
            json!({"name": "t", "snapshot": "asnap"}),
        ),
        (
            "/api/v1/templates/import",
            json!({"name": "t", "upload": alice.refs[6].1[0]}),
        ),
        (
            "/api/v1/instances",
            json!({"name": "i", "template": "atpl", "no_start": true}),
        ),
        (
            "/api/v1/instances",
            json!({"name": "i", "root_size": "64M", "data_volumes": ["aspare"], "no_start": true}),
        ),
        (
            "/api/v1/instances",
            json!({"name": "i", "image_upload": alice.refs[6].1[0], "no_start": true}),
        ),
        ("/api/v1/volumes/bvol/attach", json!({"instance": "avm"})),
        (
            "/api/v1/policies",
            json!({"volume": "avol", "schedule": "daily 02:30"}),
        ),
        (
            "/api/v1/policies",
            json!({"instance": "avm", "schedule": "daily 02:30"}),
        ),
    ] {
        let e = err_of(bob.start_job(route, &body));
        assert_eq!(e.kind, ErrorKind::NotFound, "{route} {body}: {e:?}");
        tried += 1;
    }
    assert!(tried > 60, "{tried} requests");
    assert_eq!(
        holdings(&alice.client),
        before,
        "nothing of alice's changed"
    );
}

#[test]
fn nothing_of_the_host_reaches_a_tenant() {
    let d = TestDaemon::start();
    let alice = alice_with_everything(&d);
    let data_dir = d.config.data_dir.to_string_lossy().into_owned();
    let mut answers = Vec::new();
    let c = &alice.client;
    for path in [
        "/api/v1/zones",
        "/api/v1/volumes",
        "/api/v1/volumes/avol",
        "/api/v1/instances",
        "/api/v1/instances/avm",
        "/api/v1/instances/avm/points",
        "/api/v1/snapshots",
        "/api/v1/templates",
        "/api/v1/jobs?limit=1000",
        "/api/v1/uploads",
        "/api/v1/accounts/alice",
    ] {
        answers.push((path.to_string(), c.get::<Value>(path).unwrap().to_string()));
    }
    for j in c.get::<Vec<Job>>("/api/v1/jobs").unwrap() {
        let path = format!("/api/v1/jobs/{}", j.id);
        answers.push((path.clone(), c.get::<Value>(&path).unwrap().to_string()));
    }
    // Errors too: a failing resize of a volume whose file is gone names no
    // path to the tenant, while the admin's own view keeps it.
    let v: Volume = d
        .admin()
        .post("/api/v1/volumes", &json!({"name": "x", "size": "64M"}))
        .unwrap();
    assert!(
        v.path.starts_with(&data_dir),
        "the admin sees paths: {}",
        v.path
    );
    let avol = d.server().app.catalog.volume(alice_id(c), "avol").unwrap();
    std::fs::remove_file(&avol.path).unwrap();
    let e = err_of(c.post::<_, Volume>("/api/v1/volumes/avol/resize", &json!({"size": "128M"})));
    answers.push(("resize error".into(), format!("{e:?}")));
    for (path, text) in &answers {
        assert!(
            !text.contains(&data_dir),
            "{path} shows a host path: {text}"
        );
        assert!(
            !text.contains("qmp.sock") && !text.contains("qga.sock"),
            "{path}: {text}"
        );
    }
}

fn alice_id(c: &Client) -> uuid::Uuid {
    c.get::<Account>("/api/v1/whoami").unwrap().id
}

/// Deletes do not collect the region's garbage themselves: the asks of a
/// tenant looping create/delete are gathered into a collection in the
/// background, which frees the space soon after.
/// What a tenant reads of its snapshots' bytes is its own: a snapshot of
/// data another account already stores says the bytes are new to it, as
/// they are (before, "0 new": whether anyone else holds a given chunk).
#[test]
fn a_tenant_learns_nothing_of_other_accounts_chunks() {
    let d = TestDaemon::start();
    let mut new_bytes = Vec::new();
    for who in ["alice", "bob"] {
        let c = d.account(who);
        let path = volume_file(&d, &c, "v");
        // The same 2 MiB in both accounts: stored once in the region.
        qemu_io_write(&path, 0x5a, 0, 2 << 20);
        let job = run_job(
            &c,
            "/api/v1/snapshots",
            &json!({"volume": "v", "name": "s"}),
        );
        assert!(
            job.log.iter().all(|l| !l.message.contains("uploaded")),
            "{:?}",
            job.log
        );
        new_bytes.push(wait_snapshot(&c, "s").new_bytes.unwrap());
        // Again, unchanged: nothing new to the account.
        run_job(
            &c,
            "/api/v1/snapshots",
            &json!({"volume": "v", "name": "again"}),
        );
        assert_eq!(wait_snapshot(&c, "again").new_bytes, Some(0), "{who}");
    }
    assert!(new_bytes[0] > 0);
    assert_eq!(
        new_bytes[0], new_bytes[1],
        "bob's copy of alice's data is new to bob, as it was to alice"
    );
}

/// A new 64 MiB volume of `c`'s, and the path of its file.
fn volume_file(d: &TestDaemon, c: &Client, name: &str) -> String {
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": name, "size": "64M"}))
        .unwrap();
    d.server()
        .app
        .catalog
        .volume(v.account_id, name)
        .unwrap()
        .path
}

/// Snapshot `volume` as `name`, wait for it, then delete it (its delete
/// job ended).
fn snapshot_and_delete(c: &Client, volume: &str, name: &str) -> Job {
    run_job(
        c,
        "/api/v1/snapshots",
        &json!({"volume": volume, "name": name}),
    );
    wait_snapshot(c, name);
    let job = c.delete_job(&format!("/api/v1/snapshots/{name}")).unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap()
}

/// The chunks in the region's store.
fn store_chunks(d: &TestDaemon) -> Vec<(String, u64)> {
    d.block_on(async {
        let region = d.server().app.region().await.unwrap();
        region.store.list("chunks").await
    })
    .unwrap()
}

/// Sweeps after deletes are spaced in the region: a delete within
/// `[gc] min_interval_minutes` of the last such sweep waits for the next,
/// while the admin's `gc` runs at once.
#[test]
fn sweeps_after_deletes_are_spaced_in_the_region() {
    let d = TestDaemon::start_with(|c| {
        c.gc.delay_ms = 200;
        c.gc.min_interval_minutes = 60;
    });
    let alice = d.account("alice");
    let path = volume_file(&d, &alice, "v");
    let chunks = || store_chunks(&d).len();
    let snapshot_then_delete = |round: u8| {
        qemu_io_write(&path, round + 1, 0, 2 << 20);
        snapshot_and_delete(&alice, "v", &format!("s{round}"));
    };
    let collected_within = |within: Duration| {
        let started = std::time::Instant::now();
        while chunks() > 0 {
            if started.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    };
    snapshot_then_delete(0);
    assert!(
        collected_within(Duration::from_secs(20)),
        "the first sweep runs at once"
    );
    snapshot_then_delete(1);
    assert!(
        !collected_within(Duration::from_secs(3)),
        "a second sweep within the spacing waits"
    );
    run_job(&d.admin(), "/api/v1/gc", &json!({}));
    assert_eq!(chunks(), 0, "the admin's sweep is not held");
}

#[test]
fn deletes_are_collected_together_in_the_background() {
    let d = TestDaemon::start_with(|c| c.gc.delay_ms = 500);
    let alice = d.account("alice");
    let path = volume_file(&d, &alice, "v");
    let chunks = || store_chunks(&d);
    for round in 0..5u8 {
        qemu_io_write(&path, round + 1, 0, 2 << 20);
        let done = snapshot_and_delete(&alice, "v", &format!("s{round}"));
        assert!(
            done.log
                .iter()
                .any(|l| l.message.contains("next garbage collection")),
            "{:?}",
            done.log
        );
    }
    let started = std::time::Instant::now();
    while !chunks().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never collected: {:?}",
            chunks()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = d.admin().get_text("/metrics").unwrap();
    let runs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("reprise_gc_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!((1..=5).contains(&runs), "{runs} collections for 5 deletes");
    assert!(
        metrics.contains("reprise_job_duration_seconds_count{kind=\"snapshot.create\"} 5"),
        "{metrics}"
    );
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(counter("reprise_backup_new_bytes_total ") > 0);
    assert!(counter("reprise_backup_read_bytes_total ") >= 5 * (2 << 20));
    assert!(counter("reprise_gc_deleted_chunks_total ") > 0);
}

/// A guest that kills its agent and floods the channel with one endless
/// line: the daemon, asked about the agent again and again, reads it in
/// capped pieces and stays within a stated bound of memory (its own
/// process, measured by the kernel).
#[test]
fn a_guest_flooding_its_agent_channel_does_not_grow_the_daemon() {
    const BOUND: u64 = 64 << 20;
    let dir = tempfile::Builder::new().prefix("rp").tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("reprise.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nimport_dirs = [\"{}\"]\n",
            data.display(),
            guest_dir().display()
        ),
    )
    .unwrap();
    let (daemon, c) = serve_process(env!("CARGO_BIN_EXE_reprise"), &config, &data);
    let _cleanup = KillVms(data.join("run"));
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &[]));
    let vm = instance(&c, "vm");
    let socket = std::path::PathBuf::from(&vm.guest_agent_socket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, out) = rt.block_on(agent_sh(
        &socket,
        "(sleep 1; kill $(pidof qemu-ga); sleep 1; yes 0123456789abcdef | tr -d '\\n' > /dev/virtio-ports/org.qemu.guest_agent.0) </dev/null >/dev/null 2>&1 &",
    ));
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_secs(3));
    let (rss_before, peak_before) = daemon.memory();
    let started = std::time::Instant::now();
    let mut asked = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let shown = instance(&c, "vm");
        let status = shown.guest_agent.unwrap().status;
        assert_eq!(status, "not_responding", "the flood is no answer");
        asked += 1;
    }
    let (rss_after, peak_after) = daemon.memory();
    eprintln!(
        "agent flood: {asked} probes in 20 s; daemon RSS {} MiB -> {} MiB, peak {} MiB -> {} MiB (bound: +{} MiB)",
        rss_before >> 20,
        rss_after >> 20,
        peak_before >> 20,
        peak_after >> 20,
        BOUND >> 20
    );
    assert!(asked >= 5, "{asked} probes");
    assert!(
        peak_after <= peak_before.max(rss_before) + BOUND,
        "the daemon grew from {rss_before} to a peak of {peak_after} bytes"
    );
    run_job(&c, "/api/v1/instances/vm/stop", &json!({"force": true}));
}

struct KillVms(std::path::PathBuf);

impl Drop for KillVms {
    fn drop(&mut self) {
        kill_instances_under(&self.0);
    }
}

/// An upload left unfinished is removed (with its file) once it has been
/// idle past `uploads.expire_hours`; a complete one stays, until
/// `uploads.keep_days` after it completed.
#[test]
fn unfinished_uploads_expire() {
    let mut d = TestDaemon::start();
    let alice = d.account("alice");
    let pending: Upload = alice
        .post(
            "/api/v1/uploads",
            &json!({"name": "half", "size_bytes": 100}),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whole"), b"complete").unwrap();
    let complete = alice.upload(&dir.path().join("whole"), |_, _| {}).unwrap();
    d.stop();
    d.config.uploads.expire_hours = 0;
    d.start_again();
    let left: Vec<Upload> = alice.get("/api/v1/uploads").unwrap();
    let ids: Vec<uuid::Uuid> = left.iter().map(|u| u.id).collect();
    assert_eq!(ids, [complete.id], "the unfinished one is gone");
    assert!(!d.config.uploads_dir().join(pending.id.to_string()).exists());
    assert!(d
        .config
        .uploads_dir()
        .join(complete.id.to_string())
        .exists());
    // A complete one goes `uploads.keep_days` after it completed.
    d.stop();
    d.config.uploads.keep_days = 0;
    d.start_again();
    assert!(alice
        .get::<Vec<Upload>>("/api/v1/uploads")
        .unwrap()
        .is_empty());
    assert!(!d
        .config
        .uploads_dir()
        .join(complete.id.to_string())
        .exists());
}

/// A tenant looping snapshot create/delete (each delete asking for a
/// collection) does not keep another tenant's backup from finishing whole.
#[test]
fn a_tenant_looping_deletes_does_not_starve_another_s_backup() {
    // Bob's backup reads 64 chunks, 200 ms each (eight at a time): it
    // lasts long enough for alice to loop several times, even on a busy
    // machine.
    let d = TestDaemon::start_seamed(chunk_pause(200), |c| {
        c.gc.delay_ms = 20;
    });
    let alice = d.account("alice");
    let bob = d.account("bob");
    let write = |c: &Client, name: &str, mib: u32| {
        let v: Volume = c
            .post("/api/v1/volumes", &json!({"name": name, "size": "64M"}))
            .unwrap();
        let path = d
            .server()
            .app
            .catalog
            .volume(v.account_id, name)
            .unwrap()
            .path;
        let ok = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", &format!("write -P 9 0 {mib}M"), &path])
            .output()
            .unwrap();
        assert!(ok.status.success());
    };
    write(&alice, "a", 1);
    write(&bob, "b", 64);
    let job = bob
        .start_job("/api/v1/snapshots", &json!({"volume": "b", "name": "big"}))
        .unwrap();
    let mut loops = 0;
    while bob.job(&job.id.to_string()).unwrap().state != JobState::Succeeded {
        snapshot_and_delete(&alice, "a", &format!("l{loops}"));
        loops += 1;
        assert!(loops < 200, "bob's backup never ends");
    }
    assert!(loops >= 2, "alice looped while bob backed up ({loops})");
    let s = wait_snapshot(&bob, "big");
    assert_eq!(s.state, SnapshotState::BackedUp);
    run_job(&bob, "/api/v1/snapshots/big/verify", &json!({}));
    let s: Snapshot = bob.get("/api/v1/snapshots/big").unwrap();
    assert!(
        s.verified_at.is_some(),
        "every chunk of bob's snapshot is there"
    );
}
