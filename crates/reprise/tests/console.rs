//! The web console in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`tests/console/e2e.mjs`), against a real daemon with a
//! real guest. The script does what the guides describe — snapshot from the
//! Volumes tab and watch it back up, volumes, templates, instances and
//! clones made from snapshots, recovery points with memory, the tree,
//! revert, delete with confirmation, three languages, phone width,
//! accessibility (axe-core), a second account that sees nothing of the
//! first — and saves a screenshot of each
//! main screen in `target/console-screenshots/`. This test then checks on
//! the API that what the browser did really happened.
//!
//! Needs Node.js ≥ 20, `/usr/bin/chromium` and `npm ci` in `tests/console`
//! (`scripts/test.sh` installs them); without them it fails and says so.

use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn account_key(d: &TestDaemon, name: &str) -> String {
    let made: AccountCreated = d
        .admin()
        .post("/api/v1/accounts", &json!({ "name": name }))
        .expect("account created");
    made.api_key
}

#[test]
fn the_console_does_what_the_guides_describe_in_three_languages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/console/e2e.mjs");
    assert!(
        root.join("tests/console/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run scripts/test.sh, or `npm ci --prefix tests/console`"
    );
    let chromium = std::env::var("REPRISE_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/install-deps.sh (installs Debian's chromium)"
    );

    // Slow chunks a little, so the browser sees BackingUp and its progress.
    let d = TestDaemon::start_seamed(chunk_pause(700), |_| {});
    let alice_key = account_key(&d, "alice");
    let bob_key = account_key(&d, "bob");
    // alice's plan, shown on her Account tab.
    let _: serde_json::Value = d
        .admin()
        .post(
            "/api/v1/plans",
            &serde_json::json!({"name": "standard", "max_recovery_points": 2, "max_volumes": 10}),
        )
        .unwrap();
    let _: AccountDetails = d
        .admin()
        .post(
            "/api/v1/accounts/alice/settings",
            &serde_json::json!({"plan": "standard"}),
        )
        .unwrap();
    // A disk image of this machine the browser imports as a template.
    let images = tempfile::tempdir().unwrap();
    let image = images.path().join("disk.raw");
    std::fs::write(&image, vec![0x5Au8; 20 << 20]).unwrap();
    let alice = reprise_client::Client::new(&d.url, Some(alice_key.clone()));
    let vm = d.booted_guest(&alice, "web", "data1");
    let (code, _) = d.guest_sh(
        &vm,
        "dd if=/dev/urandom of=/mnt/data/blob bs=1M count=24 2>/dev/null && sync",
    );
    assert_eq!(code, 0);

    let shots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let status = Command::new("node")
        .arg(&script)
        .env("CONSOLE_URL", &d.url)
        .env("ALICE_KEY", &alice_key)
        .env("BOB_KEY", &bob_key)
        .env("ADMIN_KEY", &d.admin_key)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("GUEST_KERNEL", &guest().kernel)
        .env("GUEST_INITRD", &guest().initrd)
        .env("GUEST_APPEND", GUEST_APPEND)
        .env("TEMPLATE_IMAGE", &image)
        .status()
        .expect("run node (Node.js 20 or later is needed)");
    assert!(
        status.success(),
        "the browser test failed (see its output above and {}/failure.png)",
        shots.display()
    );

    // What the browser did, seen through the API.
    let snapshots: Vec<Snapshot> = alice.get("/api/v1/snapshots").unwrap();
    let names: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
    // Three taken in the browser (one more was deleted there), one by the clone.
    assert_eq!(names.len(), 4, "{names:?}");
    for name in ["nightly", "from-instance-page", "depuis-la-console"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(snapshots.iter().all(|s| s.state == SnapshotState::BackedUp));
    let points: Vec<Point> = alice.get("/api/v1/instances/web/points").unwrap();
    assert!(points.is_empty(), "deleted from the tree: {points:?}");
    let jobs: Vec<Job> = alice.get("/api/v1/jobs?limit=100").unwrap();
    let succeeded = |kind: &str| {
        jobs.iter()
            .filter(|j| j.kind == kind && j.state == JobState::Succeeded)
            .count()
    };
    assert_eq!(succeeded("point.create"), 2);
    assert_eq!(succeeded("point.revert"), 1);
    // One point deleted from the tree, the last by Delete all.
    assert_eq!(succeeded("point.delete"), 2);
    assert_eq!(succeeded("snapshot.delete"), 1);
    assert_eq!(succeeded("volume.restore"), 1);
    assert_eq!(succeeded("volume.revert"), 1);
    assert_eq!(succeeded("template.import"), 1);
    assert_eq!(succeeded("template.delete"), 2);
    assert_eq!(succeeded("instance.clone"), 1);
    assert_eq!(
        succeeded("instance.create"),
        3,
        "web, web2 from the template, the clone"
    );
    let instances: Vec<Instance> = alice.get("/api/v1/instances").unwrap();
    assert_eq!(instances.len(), 1, "web2 and the clone were deleted");
    let templates: Vec<Template> = alice.get("/api/v1/templates").unwrap();
    assert!(templates.is_empty());
    let volumes: Vec<Volume> = alice.get("/api/v1/volumes").unwrap();
    assert_eq!(
        volumes.len(),
        1,
        "the restored and cloned volumes were deleted"
    );
    assert_eq!(instance(&alice, "web").state, InstanceState::Running);
    let bob = reprise_client::Client::new(&d.url, Some(bob_key));
    let bobs: Vec<Snapshot> = bob.get("/api/v1/snapshots").unwrap();
    assert!(bobs.is_empty());
}
