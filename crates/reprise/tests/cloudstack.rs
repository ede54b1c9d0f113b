//! The CloudStack API driven by real CloudStack clients from PyPI (see
//! `scripts/python-deps.sh`): the `cs` command line (5.2.0) and Apache
//! Libcloud (3.9.1), against a real daemon and the real test guest.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn python_bin(name: &str) -> PathBuf {
    let bin = guest_dir().join("../python/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/python-deps.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The `cs` command line for one CloudStack key pair.
struct Cs {
    endpoint: String,
    key: String,
    secret: String,
    env: Vec<(String, String)>,
}

impl Cs {
    fn new(d: &TestDaemon, made: &ApiKeyCreated) -> Cs {
        Cs {
            endpoint: format!("{}/client/api", d.url),
            key: made.api_key.clone(),
            secret: made
                .secret_key
                .clone()
                .expect("a CloudStack pair has a secret"),
            env: Vec::new(),
        }
    }

    fn with_env(&self, name: &str, value: &str) -> Cs {
        let mut env = self.env.clone();
        env.push((name.into(), value.into()));
        Cs {
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            secret: self.secret.clone(),
            env,
        }
    }

    /// Run `cs ARGS`: whether it succeeded, and the JSON it printed (`{}`
    /// when it printed nothing: an empty answer).
    fn run(&self, args: &[&str]) -> (bool, Value) {
        let out = Command::new(python_bin("cs"))
            .args(args)
            .env("CLOUDSTACK_ENDPOINT", &self.endpoint)
            .env("CLOUDSTACK_KEY", &self.key)
            .env("CLOUDSTACK_SECRET", &self.secret)
            .env("CLOUDSTACK_POLL_INTERVAL", "0.2")
            .env("CLOUDSTACK_TIMEOUT", "120")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run cs");
        let text = String::from_utf8_lossy(&out.stdout);
        let value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("cs {args:?} printed {text}: {e}"))
        };
        eprintln!(
            "$ cs {}\n{}",
            args.join(" "),
            serde_json::to_string(&value).unwrap()
        );
        (out.status.success(), value)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (ok, v) = self.run(args);
        assert!(ok, "cs {args:?} failed: {v}");
        v
    }

    /// A refused call: its error object (under its command's key).
    fn refused(&self, args: &[&str], errorcode: u64) -> Value {
        let (ok, v) = self.run(args);
        assert!(!ok, "cs {args:?} must fail: {v}");
        let e = v
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(v.clone());
        assert_eq!(e["errorcode"], errorcode, "cs {args:?}: {v}");
        e
    }
}

fn cs_key(c: &Client, account: &str, name: &str) -> ApiKeyCreated {
    c.post(
        &format!("/api/v1/accounts/{account}/keys"),
        &json!({"name": name, "cloudstack": true}),
    )
    .expect("CloudStack key pair")
}

/// A CloudStack call signed by hand as `cs` signs it (the names and
/// values given as they are): the HTTP status and the body.
fn signed_call(d: &TestDaemon, made: &ApiKeyCreated, params: &[(&str, &str)]) -> (u16, Value) {
    use reprise_cloudstack::sign;
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("apiKey".into(), made.api_key.clone()));
    all.push(("response".into(), "json".into()));
    let secret = made.secret_key.as_deref().unwrap();
    let signature = sign::sign(&sign::signed_string(&all, sign::Variant::Java), secret);
    all.push(("signature".into(), signature));
    let mut req = ureq::get(&format!("{}/client/api", d.url));
    for (k, v) in &all {
        req = req.query(k, v);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

#[test]
fn the_cs_client_drives_snapshots_templates_and_vm_snapshots() {
    let d = TestDaemon::start();
    let admin = d.admin();
    let _: Zone = admin
        .post("/api/v1/zones", &json!({"name": "zone2"}))
        .unwrap();
    let acme = d.account("acme");
    let made = cs_key(&acme, "acme", "cs");
    assert_eq!(made.api_key.len(), 86);
    let cs = Cs::new(&d, &made);

    // A pair is no bearer key.
    let bearer = Client::new(&d.url, Some(made.api_key.clone()));
    assert!(bearer.get::<Account>("/api/v1/whoami").is_err());
    let keys: Vec<ApiKey> = acme.get("/api/v1/accounts/acme/keys").unwrap();
    assert!(keys
        .iter()
        .any(|k| k.cloudstack_api_key.as_deref() == Some(&made.api_key)));

    let zones = cs.ok(&["listZones"]);
    assert_eq!(zones["count"], 2, "{zones}");
    let zone2 = zones["zone"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "zone2")
        .map(id_of)
        .unwrap();
    // An empty list is `{}`.
    assert_eq!(cs.ok(&["listSnapshots"]), json!({}));
    let apis = cs.ok(&["listApis"]);
    assert!(apis["count"].as_u64().unwrap() >= 30, "{apis}");

    // A running guest's data volume, snapshotted through `cs` (blocking
    // on the job), listed, restored in the other zone, made a template.
    let vm = d.booted_guest(&acme, "vm1", "data1");
    let (_, sum) = d.guest_sh(
        &vm,
        "dd if=/dev/urandom of=/mnt/data/app.bin bs=1M count=3 2>/dev/null && sync && md5sum /mnt/data/app.bin",
    );
    let data1 = cs.ok(&["listVolumes", "name=data1"])["volume"][0].clone();
    assert_eq!(
        (data1["type"].as_str(), data1["vmname"].as_str()),
        (Some("DATADISK"), Some("vm1"))
    );
    let data1 = id_of(&data1);
    let snap = cs.ok(&[
        "createSnapshot",
        &format!("volumeid={data1}"),
        "name=snap1",
        "quiescevm=true",
    ])["snapshot"]
        .clone();
    assert_eq!(
        (snap["state"].as_str(), snap["snapshottype"].as_str()),
        (Some("BackedUp"), Some("MANUAL")),
        "{snap}"
    );
    let snap1 = id_of(&snap);
    let listed = cs.ok(&["listSnapshots", &format!("id={snap1}")]);
    assert_eq!(
        (
            listed["count"].as_u64(),
            listed["snapshot"][0]["volumeid"].as_str()
        ),
        (Some(1), Some(data1.as_str()))
    );
    let restored = cs.ok(&[
        "createVolume",
        &format!("snapshotid={snap1}"),
        &format!("zoneid={zone2}"),
        "name=restored",
    ])["volume"]
        .clone();
    assert_eq!(
        (restored["zonename"].as_str(), restored["state"].as_str()),
        (Some("zone2"), Some("Ready")),
        "{restored}"
    );
    let ostype = id_of(&cs.ok(&["listOsTypes"])["ostype"][0]);
    let template = cs.ok(&[
        "createTemplate",
        &format!("snapshotid={snap1}"),
        "name=golden",
        "displaytext=Golden image",
        &format!("ostypeid={ostype}"),
    ])["template"]
        .clone();
    let golden = id_of(&template);
    assert_eq!(cs.ok(&["listTemplates", "templatefilter=self"])["count"], 1);
    assert_eq!(
        cs.ok(&["listTemplates", "templatefilter=featured"]),
        json!({})
    );

    // Deployed from the template in zone2; the guest reads the file.
    let offerings = cs.ok(&["listServiceOfferings", "name=Tiny"]);
    let tiny = id_of(&offerings["serviceoffering"][0]);
    let boot = d.guest_instance_for(&acme, "unused", &[]);
    let kernel = boot.kernel_upload.clone().unwrap();
    let initrd = boot.initrd_upload.clone().unwrap();
    let append = boot.append.clone().unwrap();
    let deployed = cs.ok(&[
        "deployVirtualMachine",
        &format!("serviceofferingid={tiny}"),
        &format!("templateid={golden}"),
        &format!("zoneid={zone2}"),
        "name=web1",
        &format!("details[0].kernelupload={kernel}"),
        &format!("details[0].initrdupload={initrd}"),
        &format!("details[0].append={append}"),
    ])["virtualmachine"]
        .clone();
    assert_eq!(
        (
            deployed["state"].as_str(),
            deployed["zonename"].as_str(),
            deployed["memory"].as_u64()
        ),
        (Some("Running"), Some("zone2"), Some(256)),
        "{deployed}"
    );
    let web1 = instance(&acme, "web1");
    d.wait_agent(&web1);
    let (code, got) = d.guest_sh(&web1, "md5sum /mnt/data/app.bin");
    assert_eq!((code, got.as_str()), (0, sum.as_str()));

    // A VM snapshot with memory; a change after it; reverted: gone.
    let web1_id = web1.id.to_string();
    let vms = cs.ok(&[
        "createVMSnapshot",
        &format!("virtualmachineid={web1_id}"),
        "name=before",
        "description=before the change",
        "snapshotmemory=true",
    ])["vmsnapshot"]
        .clone();
    assert_eq!(
        (vms["state"].as_str(), vms["type"].as_str()),
        (Some("Ready"), Some("DiskAndMemory")),
        "{vms}"
    );
    let point = id_of(&vms);
    let (code, _) = d.guest_sh(&web1, "echo changed > /mnt/data/after.txt && sync");
    assert_eq!(code, 0);
    let reverted = cs.ok(&["revertToVMSnapshot", &format!("vmsnapshotid={point}")]);
    assert_eq!(reverted["virtualmachine"]["state"], "Running", "{reverted}");
    let web1 = instance(&acme, "web1");
    d.wait_agent(&web1);
    let (code, _) = d.guest_sh(&web1, "test -e /mnt/data/after.txt");
    assert_eq!(
        code, 1,
        "the file written after the VM snapshot must be gone"
    );
    let listed = cs.ok(&["listVMSnapshot", &format!("virtualmachineid={web1_id}")]);
    assert_eq!(
        (
            listed["count"].as_u64(),
            listed["vmSnapshot"][0]["current"].as_bool()
        ),
        (Some(1), Some(true)),
        "{listed}"
    );
    cs.ok(&["deleteVMSnapshot", &format!("vmsnapshotid={point}")]);
    assert_eq!(cs.ok(&["listVMSnapshot"]), json!({}));

    // Snapshot policies, CloudStack's way: one per volume and interval.
    let policy = cs.ok(&[
        "createSnapshotPolicy",
        &format!("volumeid={data1}"),
        "intervaltype=DAILY",
        "schedule=30:02",
        "timezone=Europe/Paris",
        "maxsnaps=3",
    ]);
    assert_eq!(
        (
            policy["intervaltype"].as_u64(),
            policy["schedule"].as_str(),
            policy["maxsnaps"].as_u64()
        ),
        (Some(1), Some("30:02"), Some(3)),
        "{policy}"
    );
    let again = cs.ok(&[
        "createSnapshotPolicy",
        &format!("volumeid={data1}"),
        "intervaltype=1",
        "schedule=45:03",
        "timezone=UTC",
        "maxsnaps=5",
    ]);
    assert_eq!(
        (id_of(&again), again["schedule"].as_str()),
        (id_of(&policy), Some("45:03"))
    );
    assert_eq!(
        cs.ok(&["listSnapshotPolicies", &format!("volumeid={data1}")])["count"],
        1
    );
    cs.refused(
        &[
            "createSnapshotPolicy",
            &format!("volumeid={data1}"),
            "intervaltype=YEARLY",
            "schedule=0",
            "timezone=UTC",
            "maxsnaps=1",
        ],
        431,
    );
    cs.ok(&["deleteSnapshotPolicies", &format!("id={}", id_of(&policy))]);
    assert_eq!(cs.ok(&["listSnapshotPolicies"]), json!({}));

    // A job that fails reports jobstatus 2 and the error: a kernel that is
    // no kernel, found out when QEMU starts.
    let junk = d.dir.path().join("junk-kernel");
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let junk = acme.upload(&junk, |_, _| {}).unwrap().id.to_string();
    let started = cs.ok(&[
        "--async",
        "deployVirtualMachine",
        &format!("serviceofferingid={tiny}"),
        &format!("templateid={golden}"),
        &format!("zoneid={zone2}"),
        "name=broken",
        &format!("details[0].kernelupload={junk}"),
        &format!("details[0].initrdupload={initrd}"),
    ]);
    let jobid = started["jobid"].as_str().unwrap().to_string();
    assert!(started["id"].is_string(), "{started}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let r = cs.ok(&["queryAsyncJobResult", &format!("jobid={jobid}")]);
        if r["jobstatus"] != 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(result["jobstatus"], 2, "{result}");
    assert!(result["jobresultcode"].as_u64().unwrap() >= 400, "{result}");
    assert!(
        !result["jobresult"]["errortext"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{result}"
    );
    assert!(
        result["cmd"].as_str().unwrap().ends_with("DeployVMCmd"),
        "{result}"
    );
    // Blocking, `cs` itself reports the failure.
    let (ok, v) = cs.run(&[
        "deployVirtualMachine",
        &format!("serviceofferingid={tiny}"),
        &format!("templateid={golden}"),
        &format!("zoneid={zone2}"),
        "name=broken2",
        &format!("details[0].kernelupload={junk}"),
        &format!("details[0].initrdupload={initrd}"),
    ]);
    assert!(!ok);
    assert_eq!(v["queryasyncjobresultresponse"]["jobstatus"], 2, "{v}");
    let jobs = cs.ok(&["listAsyncJobs"]);
    assert!(jobs["count"].as_u64().unwrap() >= 8, "{jobs}");

    // POST as well as GET; pages counted across.
    let second = cs.ok(&[
        "--post",
        "createSnapshot",
        &format!("volumeid={data1}"),
        "name=snap2",
    ]);
    let snap2 = id_of(&second["snapshot"]);
    let page = cs.ok(&["listServiceOfferings", "page=3", "pagesize=2"]);
    assert_eq!(
        (
            page["count"].as_u64(),
            page["serviceoffering"].as_array().map(Vec::len)
        ),
        (Some(5), Some(1))
    );
    let script = r#"
import json, os
from cs import CloudStack
c = CloudStack(endpoint=os.environ["CLOUDSTACK_ENDPOINT"], key=os.environ["CLOUDSTACK_KEY"], secret=os.environ["CLOUDSTACK_SECRET"])
snaps = c.listSnapshots(fetch_list=True, pagesize=1)
post = CloudStack(endpoint=os.environ["CLOUDSTACK_ENDPOINT"], key=os.environ["CLOUDSTACK_KEY"], secret=os.environ["CLOUDSTACK_SECRET"], method="post")
vols = post.listVolumes(fetch_list=True, pagesize=2)
print(json.dumps({"snapshots": sorted(s["id"] for s in snaps), "volumes": len(vols)}))
"#;
    let out = Command::new(python_bin("python"))
        .args(["-c", script])
        .env("CLOUDSTACK_ENDPOINT", &cs.endpoint)
        .env("CLOUDSTACK_KEY", &cs.key)
        .env("CLOUDSTACK_SECRET", &cs.secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let paged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut both = vec![snap1.clone(), snap2.clone()];
    both.sort();
    assert_eq!(paged["snapshots"], json!(both));
    let native_volumes: Vec<Volume> = acme.get("/api/v1/volumes").unwrap();
    assert_eq!(paged["volumes"], native_volumes.len());

    // revertSnapshot puts a volume back, its instance stopped (as
    // CloudStack asks): the file written after snap1 is gone.
    let (code, _) = d.guest_sh(&vm, "echo later > /mnt/data/later.txt && sync");
    assert_eq!(code, 0);
    let vm1 = vm.id.to_string();
    let e = cs.refused(&["revertSnapshot", &format!("id={snap1}")], 536);
    assert!(
        e["errortext"].as_str().unwrap().contains("stop it first"),
        "{e}"
    );
    cs.ok(&["stopVirtualMachine", &format!("id={vm1}")]);
    cs.ok(&["revertSnapshot", &format!("id={snap1}")]);
    let started = cs.ok(&["startVirtualMachine", &format!("id={vm1}")]);
    assert_eq!(started["virtualmachine"]["state"], "Running", "{started}");
    let vm = instance(&acme, "vm1");
    d.wait_agent(&vm);
    let (code, got) = d.guest_sh(
        &vm,
        "test -e /mnt/data/later.txt || md5sum /mnt/data/app.bin",
    );
    assert_eq!((code, got.as_str()), (0, sum.as_str()));
    // Deletes.
    cs.ok(&["deleteSnapshot", &format!("id={snap2}")]);
    cs.ok(&["deleteTemplate", &format!("id={golden}")]);
    cs.ok(&["deleteVolume", &format!("id={}", id_of(&restored))]);
    cs.ok(&[
        "stopVirtualMachine",
        &format!("id={web1_id}"),
        "forced=true",
    ]);
    let destroyed = cs.ok(&[
        "destroyVirtualMachine",
        &format!("id={web1_id}"),
        "expunge=true",
    ]);
    assert_eq!(
        destroyed["virtualmachine"]["state"], "Destroyed",
        "{destroyed}"
    );
    assert!(acme.get::<Instance>("/api/v1/instances/web1").is_err());
    assert_eq!(cs.ok(&["listSnapshots"])["count"], 1);
}

#[test]
fn signatures_are_checked_as_cloudstack_checks_them() {
    let d = TestDaemon::start();
    let acme = d.account("acme");
    let made = cs_key(&acme, "acme", "cs");
    let cs = Cs::new(&d, &made);
    // The catalog keeps the apiKey, and the secret key only sealed.
    let mut stored = Vec::new();
    for file in ["catalog.db", "catalog.db-wal"] {
        stored.extend(std::fs::read(d.config.data_dir.join(file)).unwrap_or_default());
    }
    let holds = |text: &str| stored.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(holds(&made.api_key), "the apiKey is in the catalog");
    assert!(
        !holds(made.secret_key.as_ref().unwrap()),
        "the secret key is not kept in plain text"
    );
    // Values with spaces, `*`, `~`, `+`, `/`, UTF-8 and map keys sign as
    // the client signs them.
    let v = cs.ok(&[
        "listVolumes",
        "keyword=a*b~c+d/e é ☃",
        "tags[0].key=env",
        "tags[0].value=prod",
    ]);
    assert_eq!(v, json!({}));
    // Version 3 without `expires` is checked for nothing else.
    let e = cs
        .with_env("CLOUDSTACK_EXPIRATION", "-1")
        .refused(&["listZones", "signatureVersion=3"], 401);
    assert!(e["errortext"].as_str().unwrap().contains("expires"), "{e}");
    let e = cs.refused(
        &[
            "listZones",
            "signatureVersion=3",
            "expires=2020-01-01T00:00:00+0000",
        ],
        401,
    );
    assert!(e["errortext"].as_str().unwrap().contains("expired"), "{e}");
    // Without version 3 a past `expires` is not checked.
    cs.with_env("CLOUDSTACK_EXPIRATION", "-1")
        .ok(&["listZones", "expires=2020-01-01T00:00:00+0000"]);
    cs.with_env("CLOUDSTACK_EXPIRATION", "-1")
        .ok(&["listZones"]);
    cs.with_env("CLOUDSTACK_SECRET", "not-the-secret")
        .refused(&["listZones"], 401);
    cs.with_env("CLOUDSTACK_KEY", "no-such-key")
        .refused(&["listZones"], 401);
    // An `expires` further ahead than the server allows is refused: a
    // signed request is a bearer token until it expires.
    let e = cs
        .with_env("CLOUDSTACK_EXPIRATION", "86400")
        .refused(&["listZones"], 401);
    assert!(
        e["errortext"].as_str().unwrap().contains("further ahead"),
        "{e}"
    );
    // A name that folds two parameters into one signs like them: refused.
    let (status, body) = signed_call(
        &d,
        &made,
        &[("command", "listZones"), ("signatureVersion=3&id", "x")],
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("parameter name"), "{body}");
    // A signed change runs once: its replay is refused. One refused
    // (it changed nothing) may be sent again, and a new signature for
    // the same change is not a replay.
    let expires = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:%S+0000")
        .to_string();
    let refused = [
        ("command", "deleteSnapshot"),
        ("id", "00000000-0000-0000-0000-000000000001"),
        ("signatureVersion", "3"),
        ("expires", expires.as_str()),
    ];
    assert_eq!(signed_call(&d, &made, &refused).0, 431);
    assert_eq!(signed_call(&d, &made, &refused).0, 431, "sent again");
    let change = [
        ("command", "createVolume"),
        ("name", "once"),
        ("size", "1"),
        ("signatureVersion", "3"),
        ("expires", expires.as_str()),
    ];
    let (first, body) = signed_call(&d, &made, &change);
    assert_eq!(first, 200, "{body}");
    let (again, body) = signed_call(&d, &made, &change);
    assert_eq!(again, 401, "{body}");
    assert!(body.to_string().contains("already used"), "{body}");
    let later = (chrono::Utc::now() + chrono::Duration::minutes(11))
        .format("%Y-%m-%dT%H:%M:%S+0000")
        .to_string();
    let mut renewed = change;
    renewed[4] = ("expires", later.as_str());
    let (status, body) = signed_call(&d, &made, &renewed);
    assert_ne!(status, 401, "{body}");
    // Reads replay harmlessly: a poll signed once may be sent again.
    let read = [
        ("command", "listZones"),
        ("signatureVersion", "3"),
        ("expires", expires.as_str()),
    ];
    assert_eq!(signed_call(&d, &made, &read).0, 200);
    assert_eq!(signed_call(&d, &made, &read).0, 200);
    // Unknown commands and parameters that would change meaning.
    cs.refused(&["migrateVirtualMachine", "id=x"], 432);
    let e = cs.refused(&["listVolumes", "projectid=p"], 431);
    assert!(
        e["errortext"].as_str().unwrap().contains("projectid"),
        "{e}"
    );
    let e = cs.refused(&["createSnapshot"], 431);
    assert!(
        e["errortext"]
            .as_str()
            .unwrap()
            .contains("missing parameter volumeid"),
        "{e}"
    );
    cs.refused(&["deleteVolume", "id=../../etc"], 431);
    // A revoked pair fails from the next request on.
    cs.ok(&["listZones"]);
    acme.delete("/api/v1/accounts/acme/keys/cs").unwrap();
    cs.refused(&["listZones"], 401);

    // The answer is JSON under the command's key, with CloudStack's
    // content type, also for a 401.
    let resp = match ureq::get(&format!(
        "{}/client/api?command=listZones&response=json",
        d.url
    ))
    .call()
    {
        Err(ureq::Error::Status(401, resp)) => resp,
        other => panic!("an unsigned call must get 401: {other:?}"),
    };
    assert!(resp.content_type().starts_with("application/json"));
    let body: Value = resp.into_json().unwrap();
    assert_eq!(body["listzonesresponse"]["errorcode"], 401, "{body}");
}

#[test]
fn libcloud_lists_creates_and_deletes_snapshots_and_makes_a_template() {
    let d = TestDaemon::start();
    let acme = d.account("acme");
    let made = cs_key(&acme, "acme", "lc");
    let v: Volume = acme
        .post("/api/v1/volumes", &json!({"name": "data1", "size": "16M"}))
        .unwrap();
    let port = d
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let script = r#"
import json, os
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
from libcloud.compute.base import StorageVolume
Driver = get_driver(Provider.CLOUDSTACK)
d = Driver(key=os.environ["KEY"], secret=os.environ["SECRET"], host="127.0.0.1", port=int(os.environ["PORT"]), path="/client/api", secure=False)
volume = StorageVolume(id=os.environ["VOLUME"], name="data1", size=0, driver=d)
snap = d.create_volume_snapshot(volume)
listed = [s.id for s in d.list_snapshots()]
image = d.ex_create_snapshot_template(snap, "lc-golden", os.environ["OSTYPE"])
images = [i.id for i in d.list_images()]
d.destroy_volume_snapshot(snap)
print(json.dumps({"snapshot": snap.id, "volume": snap.extra["volume_id"], "listed": listed, "image": image.id, "images": images}))
"#;
    let out = Command::new(python_bin("python"))
        .args(["-c", script])
        .env("KEY", &made.api_key)
        .env("SECRET", made.secret_key.as_ref().unwrap())
        .env("PORT", &port)
        .env("VOLUME", v.id.to_string())
        .env("OSTYPE", reprise_cloudstack::objects::OS_TYPE_ID)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libcloud: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("libcloud: {r}");
    assert_eq!(r["volume"], v.id.to_string());
    assert_eq!(r["listed"], json!([r["snapshot"]]));
    assert_eq!(r["images"], json!([r["image"]]));
    // The snapshot is gone; the template made from it stays.
    assert!(acme
        .get::<Vec<Snapshot>>("/api/v1/snapshots")
        .unwrap()
        .is_empty());
    let t: Template = acme.get("/api/v1/templates/lc-golden").unwrap();
    assert_eq!(t.id.to_string(), r["image"]);
}

#[test]
fn another_account_gets_cloudstacks_errors_and_changes_nothing() {
    let d = TestDaemon::start();
    let acme = d.account("acme");
    let other = d.account("other");
    let acme_cs = Cs::new(&d, &cs_key(&acme, "acme", "cs"));
    let other_cs = Cs::new(&d, &cs_key(&other, "other", "cs"));
    let v: Volume = acme
        .post("/api/v1/volumes", &json!({"name": "data1", "size": "16M"}))
        .unwrap();
    let snap = id_of(&acme_cs.ok(&["createSnapshot", &format!("volumeid={}", v.id)])["snapshot"]);
    let before = acme_cs.ok(&["listSnapshots"]);
    assert_eq!(other_cs.ok(&["listSnapshots"]), json!({}));
    assert_eq!(other_cs.ok(&["listVolumes"]), json!({}));
    for args in [
        vec!["deleteSnapshot".to_string(), format!("id={snap}")],
        vec!["revertSnapshot".into(), format!("id={snap}")],
        vec![
            "createVolume".into(),
            format!("snapshotid={snap}"),
            "name=stolen".into(),
        ],
        vec![
            "createTemplate".into(),
            format!("snapshotid={snap}"),
            "name=stolen".into(),
        ],
        vec!["deleteVolume".into(), format!("id={}", v.id)],
        vec!["createSnapshot".into(), format!("volumeid={}", v.id)],
        vec![
            "createSnapshotPolicy".into(),
            format!("volumeid={}", v.id),
            "intervaltype=DAILY".into(),
            "schedule=00:01".into(),
            "timezone=UTC".into(),
            "maxsnaps=1".into(),
        ],
        vec![
            "queryAsyncJobResult".into(),
            format!(
                "jobid={}",
                acme.get::<Vec<Job>>("/api/v1/jobs").unwrap()[0].id
            ),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = other_cs.refused(&args, 431);
        assert_eq!(e["cserrorcode"], 4350, "{args:?}: {e}");
    }
    assert_eq!(acme_cs.ok(&["listSnapshots"]), before);
    assert!(other
        .get::<Vec<Volume>>("/api/v1/volumes")
        .unwrap()
        .is_empty());
    // A tenant's CloudStack key cannot do what only the admin may.
    let e = other_cs.refused(
        &[
            "createTemplate",
            "name=x",
            &format!("snapshotid={snap}"),
            "ispublic=true",
        ],
        431,
    );
    assert!(e["errortext"].as_str().unwrap().contains("ispublic"), "{e}");
}
