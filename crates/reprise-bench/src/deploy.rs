//! Deploying from a template: the time from `instance create --template`
//! to the guest agent answering in the new instance, with the template's
//! volume (1 GiB, 256 MiB written) built from the region's store.

use crate::{median, ms, Section};
use reprise_core::model::{Snapshot, Template, Volume};
use reprise_testing::*;
use serde_json::json;
use std::fmt::Write;
use std::process::Command;
use std::time::Instant;

pub fn run() -> Vec<Section> {
    let d = TestDaemon::start();
    let c = d.admin();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "golden", "size": "1G"}))
        .expect("volume");
    let mut args = vec!["-f".to_string(), "qcow2".to_string()];
    for i in 0..128u64 {
        args.push("-c".into());
        args.push(format!("write -P {} {} 2M", 1 + i % 250, i * (8 << 20)));
    }
    args.push(v.path.clone());
    assert!(Command::new("qemu-io")
        .args(&args)
        .status()
        .unwrap()
        .success());
    let job = run_job(&c, "/api/v1/snapshots", &json!({"volume": "golden"}));
    let s: Snapshot = c
        .get(&format!("/api/v1/snapshots/{}", job.target_id))
        .unwrap();
    let _: Template = c
        .post(
            "/api/v1/templates",
            &json!({"name": "web", "snapshot": s.id}),
        )
        .unwrap();
    let mut times = Vec::new();
    let mut rows = String::new();
    for i in 1..=3 {
        let name = format!("web{i}");
        let mut req = guest_instance(&name, &[]);
        req.template = Some("web".into());
        let started = Instant::now();
        run_job(&c, "/api/v1/instances", &req);
        let created = started.elapsed();
        let vm = instance(&c, &name);
        d.wait_agent(&vm);
        let answering = started.elapsed();
        times.push(ms(answering));
        let _ = writeln!(
            rows,
            "| {name} | {:.0} ms | {:.0} ms |",
            ms(created),
            ms(answering)
        );
        run_job(&c, &format!("/api/v1/instances/{name}/stop"), &json!({}));
    }
    let mut body = String::from(
        "Three instances deployed one after the other from one template (a 1 GiB volume with 256 MiB written, in the local region store); the guest boots under the machine's accelerator. \"Created and booted\" is the instance create job (root volume built from the store, QEMU started); \"agent answering\" adds the guest's boot until its qemu-guest-agent answers.\n\n| instance | created and booted | agent answering |\n|---|---|---|\n",
    );
    body.push_str(&rows);
    let _ = writeln!(
        body,
        "\nMedian time from `instance create --template` to the agent answering: {:.0} ms.",
        median(&mut times)
    );
    vec![Section {
        title: "Deploying instances from a template".into(),
        body,
    }]
}
