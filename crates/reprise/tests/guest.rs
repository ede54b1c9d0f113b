//! End to end with the real test guest under QEMU (KVM where it runs a
//! Linux guest, TCG elsewhere) and its real qemu-guest-agent.

use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(120);

/// The foundation's story: a guest with a data volume, a file written
/// through the agent, a stop and a start, and the file read back.
#[test]
fn a_file_written_in_the_guest_survives_stop_and_start() {
    let d = TestDaemon::start();
    let c = d.admin();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "data", "size": "128M"}))
        .unwrap();
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &["data"]));
    let vm = instance(&c, "vm");
    assert_eq!(vm.state, InstanceState::Running);
    assert!(matches!(vm.accel.as_deref(), Some("kvm" | "tcg")));
    d.wait_agent(&vm);
    let shown = instance(&c, "vm");
    let agent = shown.guest_agent.expect("show asks the agent");
    assert_eq!(
        (agent.status.as_str(), agent.snapshot_consistency.as_str()),
        ("responding", "filesystem")
    );

    let (code, out) = d.guest_sh(
        &vm,
        "echo hello-reprise > /mnt/data/greeting && sync && cat /mnt/data/greeting",
    );
    assert_eq!((code, out.trim()), (0, "hello-reprise"));
    let console = std::fs::read_to_string(&vm.console_log).unwrap();
    assert!(
        console.contains("/dev/vda mounted on /mnt/data"),
        "console:\n{console}"
    );

    // Wrong-state requests are refused while it runs, and change nothing.
    let e = c
        .start_job("/api/v1/instances/vm/start", &json!({}))
        .unwrap_err();
    assert_eq!(e.code, "instance_running");
    let e = c.delete("/api/v1/volumes/data").unwrap_err();
    assert_eq!(e.code, "volume_in_use");
    let e = c.delete("/api/v1/instances/vm").unwrap_err();
    assert_eq!(e.code, "instance_running");

    let stop = run_job(&c, "/api/v1/instances/vm/stop", &json!({}));
    assert!(stop
        .log
        .iter()
        .any(|l| l.message.contains("QEMU has exited")));
    let vm = instance(&c, "vm");
    assert_eq!((vm.state, vm.pid), (InstanceState::Stopped, None));
    assert_eq!(vm.guest_agent.unwrap().status, "not_running");
    let data: Volume = c.get("/api/v1/volumes/data").unwrap();
    assert_eq!(
        qemu_img_check(&data.path),
        0,
        "a stopped guest leaves a clean qcow2"
    );

    run_job(&c, "/api/v1/instances/vm/start", &json!({}));
    let vm = instance(&c, "vm");
    let (code, out) = d.guest_sh(&vm, "cat /mnt/data/greeting");
    assert_eq!((code, out.trim()), (0, "hello-reprise"));

    let first_pid = vm.pid;
    run_job(&c, "/api/v1/instances/vm/restart", &json!({}));
    let vm = wait_state(&c, "vm", InstanceState::Running, BOOT);
    assert_ne!(vm.pid, first_pid, "a restart is a new QEMU");
    let (_, out) = d.guest_sh(&vm, "cat /mnt/data/greeting");
    assert_eq!(out.trim(), "hello-reprise");
    run_job(&c, "/api/v1/instances/vm/stop", &json!({"force": true}));
    c.delete("/api/v1/instances/vm").unwrap();
    let data: Volume = c.get("/api/v1/volumes/data").unwrap();
    assert_eq!(data.instance, None, "data volumes outlive their instance");
}

/// Stopping the daemon leaves the VM running; starting it again finds the
/// same QEMU (same pid, no second process), and a QEMU that died meanwhile
/// shows as Stopped.
#[test]
fn the_daemon_restarts_without_losing_or_duplicating_instances() {
    let mut d = TestDaemon::start();
    let c = d.admin();
    run_job(&c, "/api/v1/instances", &guest_instance("keep", &[]));
    run_job(&c, "/api/v1/instances", &guest_instance("lose", &[]));
    let keep = instance(&c, "keep");
    let lose = instance(&c, "lose");
    d.wait_agent(&keep);

    d.stop();
    assert!(
        reprise_qemu::process::is_instance(keep.pid.unwrap(), keep.id),
        "VMs outlive the daemon"
    );
    reprise_qemu::process::kill(lose.pid.unwrap(), lose.id);
    d.block_on(reprise_qemu::process::wait_exit(
        lose.pid.unwrap(),
        lose.id,
        Duration::from_secs(10),
    ));
    d.start_again();

    let c = d.admin();
    let again = instance(&c, "keep");
    assert_eq!((again.state, again.pid), (InstanceState::Running, keep.pid));
    assert_eq!(instance(&c, "lose").state, InstanceState::Stopped);
    let qemus = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|pid| reprise_qemu::process::is_instance(pid, keep.id))
        })
        .count();
    assert_eq!(qemus, 1, "exactly one QEMU for the instance");
    let (code, _) = d.guest_sh(&again, "true");
    assert_eq!(code, 0, "the re-attached guest still answers");
    // The re-attached instance is fully controllable.
    run_job(&c, "/api/v1/instances/keep/stop", &json!({}));
    assert_eq!(instance(&c, "keep").state, InstanceState::Stopped);
}

/// A guest that powers itself off shows as Stopped without anyone asking.
#[test]
fn a_guest_powering_off_is_noticed() {
    let d = TestDaemon::start();
    let c = d.admin();
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &[]));
    let vm = instance(&c, "vm");
    d.wait_agent(&vm);
    d.block_on(async {
        let mut a = reprise_qemu::agent::Agent::connect(
            vm.guest_agent_socket.as_ref(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let _ = a
            .execute(
                "guest-shutdown",
                json!({"mode": "powerdown"}),
                Duration::from_millis(500),
            )
            .await;
    });
    wait_state(&c, "vm", InstanceState::Stopped, Duration::from_secs(30));
}

/// Data volumes hot-plug into and out of a running guest, and grow while
/// it runs.
#[test]
fn volumes_hot_plug_unplug_and_grow_in_a_running_guest() {
    let d = TestDaemon::start();
    let c = d.admin();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "first", "size": "64M"}))
        .unwrap();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "extra", "size": "96M"}))
        .unwrap();
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &["first"]));
    let vm = instance(&c, "vm");
    d.wait_agent(&vm);

    let v: Volume = c
        .post("/api/v1/volumes/extra/attach", &json!({"instance": "vm"}))
        .unwrap();
    assert_eq!(v.instance.as_deref(), Some("vm"));
    let size_of_vdb = "for i in $(seq 50); do [ -b /dev/vdb ] && break; sleep 0.1; done; blockdev --getsize64 /dev/vdb";
    let (code, out) = d.guest_sh(&vm, size_of_vdb);
    assert_eq!((code, out.trim()), (0, (96u64 << 20).to_string().as_str()));

    let e = c
        .post::<_, Volume>("/api/v1/volumes/extra/attach", &json!({"instance": "vm"}))
        .unwrap_err();
    assert_eq!(e.code, "volume_attached");

    let grown: Volume = c
        .post("/api/v1/volumes/extra/resize", &json!({"size": "128M"}))
        .unwrap();
    assert_eq!(grown.size_bytes, 128 << 20);
    let (_, out) = d.guest_sh(&vm, "blockdev --getsize64 /dev/vdb");
    assert_eq!(
        out.trim(),
        (128u64 << 20).to_string(),
        "the guest sees the new size"
    );

    let v: Volume = c.post("/api/v1/volumes/extra/detach", &json!({})).unwrap();
    assert_eq!(v.instance, None);
    let (_, out) = d.guest_sh(&vm, "[ -b /dev/vdb ] && echo present || echo gone");
    assert_eq!(out.trim(), "gone");
    let listed: Vec<Volume> = c.get("/api/v1/volumes?instance=vm").unwrap();
    assert_eq!(
        listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["first"]
    );

    // Cold attach: at the next start the guest has it.
    run_job(&c, "/api/v1/instances/vm/stop", &json!({}));
    let _: Volume = c
        .post("/api/v1/volumes/extra/attach", &json!({"instance": "vm"}))
        .unwrap();
    run_job(&c, "/api/v1/instances/vm/start", &json!({}));
    let (code, out) = d.guest_sh(&vm, size_of_vdb);
    assert_eq!((code, out.trim()), (0, (128u64 << 20).to_string().as_str()));
}
