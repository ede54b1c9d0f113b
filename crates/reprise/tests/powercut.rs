//! The power-cut campaign. A whole daemon runs inside a VM
//! (`tests/powercut/build.sh`), its data on the VM's ext4 disk, driven over
//! its API from here. Each round runs operations one after the other —
//! root volumes copied from images or made from templates, templates
//! imported from files or uploads, uploads, snapshots, restores, templates
//! from snapshots, volume reverts, disk-only recovery points of stopped
//! instances made, reverted to and deleted, deletes, garbage collections —
//! until the power is cut at a random instant: `kill -9` of the VM's QEMU.
//! What the guest kernel held in its page cache, every write not yet
//! synced, is gone, as at a power cut; what QEMU had written to the disk
//! image stays, as a disk's own cache may have written it.
//!
//! What the daemon showed done before the cut is recorded here (a volume
//! `Ready` with the content it must have, a snapshot `BackedUp`, a template
//! listed, a delete answered), and after the cut:
//!
//! - the VM off, its disk mounted here (the journal replayed, as the VM's
//!   next boot does): every volume shown `Ready` is a clean qcow2
//!   (`qemu-img check`) whose content is the one it was shown with (a
//!   revert cut short: the content before or after);
//! - the VM booted again: every snapshot shown `BackedUp` still is, every
//!   volume shown `Ready` still is, every template shown is listed, nothing
//!   shown deleted is back, nothing is left in a passing state; whatever
//!   finished unseen is checked like the rest; each snapshot verifies
//!   (every chunk read back and checked against its name) once done.
//!
//! At the end the VM is cut once more and checked, and every `BackedUp`
//! snapshot verifies. The region is not encrypted: under TCG, ChaCha20's
//! vector code runs at a few MiB/s, and what is synced when does not
//! depend on it (encrypted regions are tested natively). CI runs `REPRISE_POWERCUT_ROUNDS` rounds (3 by
//! default); `scripts/powercut.sh N` runs a long campaign. The seed is
//! printed, and `REPRISE_POWERCUT_SEED` replays one. Needs root (the disk
//! is loop-mounted between boots).

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::campaign::*;
use reprise_testing::guest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every image is this large: root volumes, snapshots and restores of 16
/// chunks, quick under TCG.
const IMAGE_BYTES: usize = 16 << 20;
/// The VM's disk (sparse).
const DISK_BYTES: u64 = 2 << 30;
/// Live volumes, snapshots and templates kept at most: a long campaign stays
/// as quick per round as a short one.
const MAX_VOLUMES: usize = 5;
const MAX_SNAPSHOTS: usize = 6;
const MAX_TEMPLATES: usize = 3;
const MAX_UPLOADS: usize = 2;
const MAX_POINTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Volume,
    Snapshot,
    Template,
    /// By id.
    Upload,
    /// A disk-only recovery point of a stopped instance.
    Point,
}

/// A volume, snapshot or template, by name.
type Key = (Kind, String);

/// A started job and what it makes, changes or deletes.
type Started = (Job, Vec<Key>);

/// What this test knows of something it asked for.
#[derive(Debug)]
struct Thing {
    /// The contents it may have: one, or two while a revert is unsettled.
    contents: Vec<blake3::Hash>,
    /// The daemon showed it done (Ready, BackedUp, listed).
    shown: bool,
    /// A delete was asked for…
    deleting: bool,
    /// …and answered done.
    deleted: bool,
    /// A snapshot's volume; a point's instance's root volume.
    volume: Option<String>,
    /// A volume's file, in the VM; an upload's SHA-256.
    path: Option<String>,
    /// A snapshot verified once done.
    verified: bool,
    /// Where its content came from, for the messages.
    origin: String,
}

impl Thing {
    fn asked(contents: blake3::Hash, origin: String) -> Thing {
        Thing {
            origin,
            contents: vec![contents],
            shown: false,
            deleting: false,
            deleted: false,
            volume: None,
            path: None,
            verified: false,
        }
    }

    fn live(&self) -> bool {
        self.shown && !self.deleting && !self.deleted
    }
}

/// The VM that runs the daemon, its disk and its console.
struct PowerVm {
    dir: PathBuf,
    disk: PathBuf,
    port: u16,
    child: Option<Child>,
    key: Option<String>,
    boots: usize,
}

impl PowerVm {
    fn boot(&mut self) -> Client {
        let g = guest();
        let console = self.dir.join("console.log");
        let _ = std::fs::remove_file(&console);
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&g.kernel)
            .arg("-initrd")
            .arg(self.dir.join("initrd.img"))
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache=writeback",
                self.disk.display()
            ))
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:7480",
                self.port
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-monitor", "none", "-display", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 runs");
        self.child = Some(child);
        self.boots += 1;
        let started = Instant::now();
        let key = loop {
            let log = std::fs::read_to_string(&console).unwrap_or_default();
            // The daemon writes to the same console: the line may carry
            // the start of one of its own; and it may not be whole yet.
            const MARK: &str = "powercut: admin-key ";
            let whole = log.find(MARK).and_then(|at| {
                let rest = &log[at + MARK.len()..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
                rest[end..]
                    .starts_with(['\r', '\n'])
                    .then(|| rest[..end].to_string())
            });
            if let Some(k) = whole {
                break k;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "boot {}: the daemon in the VM did not start; its console:\n{log}",
                self.boots
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(known) = &self.key {
            assert_eq!(known, &key, "the admin key changed across a power cut");
        }
        self.key = Some(key.clone());
        let c = Client::new(&format!("http://127.0.0.1:{}", self.port), Some(key));
        while c.zones().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "boot {}: the API does not answer",
                self.boots
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Cut the power after `after`, from another thread (the operations go
    /// on meanwhile); `cut` is set once it is.
    fn cut_after(&self, after: Duration, cut: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let pid = self.child.as_ref().expect("the VM runs").id();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            cut.store(true, Ordering::SeqCst);
        })
    }

    fn wait_off(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The VM's disk mounted here (the VM off), unmounted when dropped.
    fn mount(&self) -> Mounted {
        let at = self.dir.join("mnt");
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&self.disk)
            .arg(&at)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot loop-mount the VM's disk (the campaign needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at)
    }
}

impl Drop for PowerVm {
    fn drop(&mut self) {
        self.wait_off();
    }
}

struct Mounted(PathBuf);

impl Mounted {
    /// A path inside the VM (under /data) as seen here.
    fn host_path(&self, in_vm: &str) -> PathBuf {
        self.0.join(
            in_vm
                .strip_prefix("/data/")
                .expect("VM paths are under /data"),
        )
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status();
        assert!(ok.is_ok_and(|s| s.success()), "umount {}", self.0.display());
    }
}

/// The instance whose root volume is `root`.
fn instance_of(root: &str) -> &str {
    root.strip_suffix("-root").expect("a root volume's name")
}

/// 16 MiB of new content: half random, a quarter zeros, a quarter text.
fn image_bytes(dice: &mut Dice, round: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(IMAGE_BYTES);
    while bytes.len() < IMAGE_BYTES / 2 {
        bytes.extend_from_slice(&dice.roll().to_le_bytes());
    }
    bytes.resize(IMAGE_BYTES * 3 / 4, 0);
    let mut line = 0;
    while bytes.len() < IMAGE_BYTES {
        bytes.extend_from_slice(format!("round {round} line {line}\n").as_bytes());
        line += 1;
    }
    bytes.truncate(IMAGE_BYTES);
    bytes
}

struct Campaign {
    dice: Dice,
    /// Where the images are kept here too, to upload.
    dir: PathBuf,
    things: BTreeMap<Key, Thing>,
    /// The images in the VM's import directory: name → content.
    images: Vec<(String, blake3::Hash)>,
    violations: Vec<String>,
    /// Operations started, by kind; cut inside one, by kind.
    started: BTreeMap<&'static str, usize>,
    cut_inside: BTreeMap<&'static str, usize>,
    /// Operations that failed, with their errors (none should, unfaulted).
    failed: Vec<String>,
    shown_done: usize,
    verified: usize,
    /// Volumes whose metadata update the cut interrupted, found before
    /// the daemon's start repaired them.
    leaked: usize,
    /// What was asked and how it ended, for the messages of a violation.
    journal: Vec<String>,
    /// What the operation under way changes or makes.
    touched: Vec<Key>,
    /// The volumes whose update the last cut interrupted.
    cut_subjects: Vec<String>,
}

impl Campaign {
    fn violation(&mut self, round: usize, what: String) {
        eprintln!("round {round}: VIOLATION {what}");
        self.violations.push(format!("round {round}: {what}"));
    }

    fn live(&self, kind: Kind) -> Vec<String> {
        self.things
            .iter()
            .filter(|((k, _), t)| *k == kind && t.live())
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    fn pick(&mut self, names: &[String]) -> String {
        names[self.dice.below(names.len() as u64) as usize].clone()
    }

    /// With the VM off: a new image for this round, and every volume shown
    /// Ready checked on the disk.
    fn check_disk(&mut self, vm: &PowerVm, round: usize) {
        let m = vm.mount();
        let images = m.0.join("images");
        let bytes = image_bytes(&mut self.dice, round);
        let name = format!("img{round}.raw");
        std::fs::write(images.join(&name), &bytes).unwrap();
        // A copy here, to upload.
        std::fs::write(vm.dir.join(&name), &bytes).unwrap();
        self.images.push((name, blake3::hash(&bytes)));
        if self.images.len() > 3 {
            let (old, _) = self.images.remove(0);
            std::fs::remove_file(images.join(&old)).unwrap();
            std::fs::remove_file(vm.dir.join(old)).unwrap();
        }
        let scratch = vm.dir.clone();
        let mut found = Vec::new();
        let mut leaked = 0;
        let interrupted = std::mem::take(&mut self.cut_subjects);
        for ((kind, name), t) in &self.things {
            let (Kind::Volume, true, false, Some(path)) = (kind, t.shown, t.deleted, &t.path)
            else {
                continue;
            };
            let file = m.host_path(path);
            if !file.exists() {
                if !t.deleting {
                    found.push((name.clone(), Err(format!("{path} is gone"))));
                }
                continue;
            }
            // An update of its metadata cut in the middle leaves leaks (3)
            // or COPIED flags out of step (2) in the volume it was making
            // a snapshot or point of, which the daemon repairs at its start.
            // Anywhere else, or anything else, is damage.
            match reprise_testing::qemu_img_check(file.to_str().unwrap()) {
                0 => {}
                2 | 3 if interrupted.contains(name) => leaked += 1,
                code => {
                    // The evidence kept, and what happened to it.
                    let kept = std::env::temp_dir().join(format!("powercut-{name}.qcow2"));
                    let _ = std::fs::copy(&file, &kept);
                    let story: Vec<&String> = self
                        .journal
                        .iter()
                        .filter(|l| l.contains(name.as_str()) || l.contains("cut"))
                        .collect();
                    found.push((
                        name.clone(),
                        Err(format!(
                            "{path} fails qemu-img check ({code}); copied to {}; its story: {story:#?}",
                            kept.display()
                        )),
                    ));
                    continue;
                }
            }
            let digest = content_digest(&file, &scratch);
            if t.contents.contains(&digest) {
                found.push((name.clone(), Ok(digest)));
            } else {
                found.push((
                    name.clone(),
                    Err(format!(
                        "{path} has content it was never given (made from {}; {} expected, {digest} found)",
                        t.origin,
                        t.contents.iter().map(|c| c.to_hex()[..12].to_string()).collect::<Vec<_>>().join(" or ")
                    )),
                ));
            }
        }
        drop(m);
        self.leaked += leaked;
        for (name, result) in found {
            match result {
                // A revert cut short is settled: the content is the file's.
                Ok(digest) => {
                    self.things.get_mut(&(Kind::Volume, name)).unwrap().contents = vec![digest]
                }
                Err(e) => self.violation(round, format!("volume {name}: {e}")),
            }
        }
    }

    /// With the VM booted again: what was shown done still is.
    fn check_api(&mut self, c: &Client, round: usize) {
        for j in c.jobs(1000).unwrap() {
            if matches!(j.state, JobState::Queued | JobState::Running) {
                self.violation(round, format!("job {} {} is {:?}", j.kind, j.id, j.state));
            }
        }
        let mut now: BTreeMap<Key, (bool, Option<String>, String)> = BTreeMap::new();
        for v in c.volumes(None, None).unwrap() {
            let done = v.state == VolumeState::Ready;
            if !done && v.state != VolumeState::Error {
                self.violation(round, format!("volume {} is {}", v.name, v.state));
            }
            now.insert(
                (Kind::Volume, v.name),
                (done, Some(v.path), v.state.to_string()),
            );
        }
        for s in c.snapshots(&Default::default()).unwrap() {
            let done = s.state == SnapshotState::BackedUp;
            if !done && s.state != SnapshotState::Error {
                self.violation(round, format!("snapshot {} is {}", s.name, s.state));
            }
            now.insert((Kind::Snapshot, s.name), (done, None, s.state.to_string()));
        }
        for t in c.templates().unwrap() {
            now.insert((Kind::Template, t.name), (true, None, "listed".into()));
        }
        for i in c.instances().unwrap() {
            for p in c.points(&i.name).unwrap() {
                let done = p.state == PointState::Ready;
                if !done && p.state != PointState::Error {
                    self.violation(round, format!("point {} is {}", p.name, p.state));
                }
                now.insert((Kind::Point, p.name), (done, None, p.state.to_string()));
            }
        }
        for u in c.uploads().unwrap() {
            let done = u.state == UploadState::Complete;
            now.insert(
                (Kind::Upload, u.id.to_string()),
                (done, u.sha256, u.state.to_string()),
            );
        }
        let mut gone = Vec::new();
        let mut found = Vec::new();
        for (key, t) in &mut self.things {
            let name = format!("{:?} {}", key.0, key.1).to_lowercase();
            match now.get(key) {
                None if t.deleted || t.deleting || !t.shown => gone.push(key.clone()),
                None => found.push(format!("{name}, shown done, is gone")),
                Some(_) if t.deleted => found.push(format!("{name}, shown deleted, is back")),
                Some((true, sha, _)) if key.0 == Kind::Upload && t.shown && t.path != *sha => {
                    found.push(format!("{name}, shown Complete, now has SHA-256 {sha:?}"))
                }
                Some((true, path, _)) => {
                    // Finished, seen or not: from now on it must stay.
                    t.shown = true;
                    t.deleting = false;
                    if path.is_some() {
                        t.path = path.clone();
                    }
                }
                Some((false, _, state)) if t.shown && !t.deleting => {
                    found.push(format!("{name}, shown done, is {state}"))
                }
                // Failed named (an interrupted job), or a delete cut short:
                // not counted on again.
                Some(_) => {
                    t.shown = true;
                    t.deleting = true;
                }
            }
        }
        for key in gone {
            self.things.remove(&key);
        }
        for f in found {
            self.violation(round, f);
        }
        self.verify_new(c, round);
    }

    /// Every snapshot done since the last check verifies.
    fn verify_new(&mut self, c: &Client, round: usize) {
        let fresh: Vec<String> = self
            .things
            .iter()
            .filter(|((k, _), t)| *k == Kind::Snapshot && t.live() && !t.verified)
            .map(|((_, n), _)| n.clone())
            .collect();
        for name in fresh {
            let done = c
                .verify_snapshot(&name)
                .and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(300), |_| {}));
            match done {
                Ok(_) => {
                    self.verified += 1;
                    self.things
                        .get_mut(&(Kind::Snapshot, name))
                        .unwrap()
                        .verified = true;
                }
                Err(e) => self.violation(round, format!("snapshot {name} does not verify: {e:?}")),
            }
        }
    }

    /// Operations one after the other until the power is cut.
    fn run_until_cut(&mut self, c: &Client, round: usize, cut: &AtomicBool) {
        let mut n = 0;
        while !cut.load(Ordering::SeqCst) {
            n += 1;
            let name = format!("{round}x{n}");
            let op = self.choose();
            *self.started.entry(op).or_default() += 1;
            self.touched.clear();
            match self.start(c, op, &name) {
                Ok(Some(job)) => {
                    let about: Vec<String> = job
                        .1
                        .iter()
                        .map(
                            |k| match self.things.get(k).and_then(|t| t.volume.clone()) {
                                Some(v) => format!("{} of {v}", k.1),
                                None => k.1.clone(),
                            },
                        )
                        .collect();
                    self.journal
                        .push(format!("round {round}: {op} {name} on {about:?}"));
                    if !self.follow(c, op, job, cut) {
                        self.journal
                            .push(format!("round {round}: cut inside {op} {name}"));
                        self.note_cut_subjects();
                        *self.cut_inside.entry(op).or_default() += 1;
                        return;
                    }
                }
                Ok(None) => self
                    .journal
                    .push(format!("round {round}: {op} {name}, answered at once")),
                Err(e) if cut.load(Ordering::SeqCst) || e.code == "daemon_unreachable" => {
                    self.journal
                        .push(format!("round {round}: cut while asking {op} {name}"));
                    self.note_cut_subjects();
                    *self.cut_inside.entry(op).or_default() += 1;
                    return;
                }
                Err(e) => self
                    .failed
                    .push(format!("{op} {name}: refused {}: {}", e.code, e.message)),
            }
        }
    }

    /// The volumes the operation cut was changing (a snapshot's or a
    /// point's is its volume's): `qemu-img snapshot` cut in the middle
    /// leaves their qcow2 metadata for the daemon's start to repair.
    fn note_cut_subjects(&mut self) {
        self.cut_subjects = self
            .touched
            .iter()
            .filter_map(|k| match k.0 {
                Kind::Volume => Some(k.1.clone()),
                _ => self.things.get(k).and_then(|t| t.volume.clone()),
            })
            .collect();
    }

    fn choose(&mut self) -> &'static str {
        let volumes = self.live(Kind::Volume).len();
        let snapshots = self.live(Kind::Snapshot).len();
        let templates = self.live(Kind::Template).len();
        let uploads = self.live(Kind::Upload).len();
        let points = self.live(Kind::Point).len();
        if volumes > MAX_VOLUMES {
            let op = if self.dice.below(2) == 0 {
                "delete volume"
            } else {
                "delete instance"
            };
            return self.runnable(op);
        }
        if snapshots > MAX_SNAPSHOTS {
            return self.runnable("delete snapshot");
        }
        if templates > MAX_TEMPLATES {
            return self.runnable("delete template");
        }
        if uploads > MAX_UPLOADS {
            return self.runnable("delete upload");
        }
        if points > MAX_POINTS {
            return self.runnable("delete point");
        }
        const OPS: &[&str] = &[
            "instance",
            "instance from template",
            "import",
            "upload",
            "import upload",
            "snapshot",
            "snapshot",
            "restore",
            "restore",
            "template",
            "revert",
            "revert",
            "point",
            "point",
            "revert point",
            "delete point",
            "delete snapshot",
            "delete volume",
            "gc",
        ];
        let op = OPS[self.dice.below(OPS.len() as u64) as usize];
        self.runnable(op)
    }

    /// `op`, or what must come first when it has nothing to act on.
    fn runnable(&self, op: &'static str) -> &'static str {
        let restored = self.live(Kind::Volume).iter().any(|v| v.starts_with('r'));
        if op == "delete volume" && !restored {
            return self.runnable("delete instance");
        }
        if op == "delete instance" && self.deletable_roots().is_empty() {
            // An instance with points is not deleted: a point goes first.
            return if self.revertible_points().is_empty() {
                "gc"
            } else {
                "delete point"
            };
        }
        let needs_volume = !matches!(
            op,
            "instance"
                | "instance from template"
                | "import"
                | "upload"
                | "import upload"
                | "delete upload"
                | "gc"
        );
        let needs_snapshot = matches!(op, "restore" | "template" | "revert" | "delete snapshot");
        // Each stand-in is checked in turn (none leads back).
        if op == "instance from template" && self.live(Kind::Template).is_empty() {
            "instance"
        } else if op == "delete template" && self.live(Kind::Template).is_empty() {
            "import"
        } else if matches!(op, "import upload" | "delete upload")
            && self.live(Kind::Upload).is_empty()
        {
            "upload"
        } else if op == "point" && self.roots().is_empty() {
            "instance"
        } else if matches!(op, "revert point" | "delete point")
            && self.revertible_points().is_empty()
        {
            self.runnable("point")
        } else if needs_volume && self.live(Kind::Volume).is_empty() {
            "instance"
        } else if needs_snapshot && self.live(Kind::Snapshot).is_empty()
            || op == "revert" && self.revertible().is_empty()
        {
            self.runnable("snapshot")
        } else {
            op
        }
    }

    /// Live root volumes: their instances take points.
    fn roots(&self) -> Vec<String> {
        self.live(Kind::Volume)
            .into_iter()
            .filter(|v| v.ends_with("-root"))
            .collect()
    }

    /// Live root volumes whose instances have no point.
    fn deletable_roots(&self) -> Vec<String> {
        let with_points = self.with_points();
        self.roots()
            .into_iter()
            .filter(|v| !with_points.contains(v))
            .collect()
    }

    /// The root volumes of instances with points.
    fn with_points(&self) -> Vec<String> {
        self.things
            .iter()
            .filter(|((k, _), t)| *k == Kind::Point && !t.deleted)
            .filter_map(|(_, t)| t.volume.clone())
            .collect()
    }

    /// Live points of instances whose root volume is live: (volume, point).
    fn revertible_points(&self) -> Vec<(String, String)> {
        self.live(Kind::Point)
            .into_iter()
            .filter_map(|p| {
                let v = self.things[&(Kind::Point, p.clone())].volume.clone()?;
                self.things
                    .get(&(Kind::Volume, v.clone()))
                    .is_some_and(Thing::live)
                    .then_some((v, p))
            })
            .collect()
    }

    /// Live volumes with a live snapshot of their own and no point (a
    /// volume of an instance with points is not reverted alone):
    /// (volume, snapshot).
    fn revertible(&self) -> Vec<(String, String)> {
        let with_points = self.with_points();
        self.live(Kind::Snapshot)
            .into_iter()
            .filter_map(|s| {
                let v = self.things[&(Kind::Snapshot, s.clone())].volume.clone()?;
                (self
                    .things
                    .get(&(Kind::Volume, v.clone()))
                    .is_some_and(Thing::live)
                    && !with_points.contains(&v))
                .then_some((v, s))
            })
            .collect()
    }

    /// The one content `name` is known to have.
    fn content(&self, kind: Kind, name: &str) -> blake3::Hash {
        self.things[&(kind, name.to_string())].contents[0]
    }

    fn thing(&mut self, key: &Key) -> &mut Thing {
        self.things.get_mut(key).expect("a thing this test knows")
    }

    fn pick_image(&mut self) -> (String, blake3::Hash) {
        self.images[self.dice.below(self.images.len() as u64) as usize].clone()
    }

    fn pick_pair(&mut self, pairs: &[(String, String)]) -> (String, String) {
        pairs[self.dice.below(pairs.len() as u64) as usize].clone()
    }

    /// Record `key` as asked for with `contents` (from `origin`), made by
    /// the job `start` starts.
    fn make(
        &mut self,
        key: Key,
        contents: blake3::Hash,
        origin: String,
        volume: Option<String>,
        start: impl FnOnce() -> reprise_core::Result<Job>,
    ) -> reprise_core::Result<Option<Started>> {
        let mut t = Thing::asked(contents, origin);
        t.volume = volume;
        self.things.insert(key.clone(), t);
        self.touched.push(key.clone());
        Ok(Some((start()?, vec![key])))
    }

    /// Start a delete of `key`: `deleting` from now on, unless refused
    /// (the power cut in the middle leaves it `deleting`). A delete
    /// answered at once (no job) is `deleted` once it is answered.
    fn delete(
        &mut self,
        key: Key,
        start: impl FnOnce() -> reprise_core::Result<Option<Job>>,
    ) -> reprise_core::Result<Option<Started>> {
        self.thing(&key).deleting = true;
        self.touched.push(key.clone());
        match start() {
            Ok(Some(job)) => Ok(Some((job, vec![key]))),
            Ok(None) => {
                self.thing(&key).deleted = true;
                Ok(None)
            }
            Err(e) => {
                if e.code != "daemon_unreachable" {
                    self.thing(&key).deleting = false;
                }
                Err(e)
            }
        }
    }

    /// Start a revert of volume `v` to `to`: it holds either content until
    /// the job says which.
    fn revert(
        &mut self,
        v: String,
        to: blake3::Hash,
        start: impl FnOnce() -> reprise_core::Result<Job>,
    ) -> reprise_core::Result<Option<Started>> {
        let key = (Kind::Volume, v);
        self.thing(&key).contents.push(to);
        self.touched.push(key.clone());
        match start() {
            Ok(job) => Ok(Some((job, vec![key]))),
            Err(e) => {
                if e.code != "daemon_unreachable" {
                    self.thing(&key).contents.truncate(1);
                }
                Err(e)
            }
        }
    }

    /// Start `op`: the job to follow, or none when it was done at once.
    fn start(
        &mut self,
        c: &Client,
        op: &'static str,
        name: &str,
    ) -> reprise_core::Result<Option<Started>> {
        let instance = |image: Option<String>, template: Option<String>| CreateInstance {
            name: format!("i{name}"),
            image,
            template,
            no_start: true,
            ..Default::default()
        };
        let root = (Kind::Volume, format!("i{name}-root"));
        match op {
            "instance" => {
                let (file, digest) = self.pick_image();
                let image = Some(format!("/data/images/{file}"));
                self.make(root, digest, format!("image {file}"), None, || {
                    c.create_instance(&instance(image, None))
                })
            }
            "instance from template" => {
                let t = self.pick(&self.live(Kind::Template));
                let digest = self.content(Kind::Template, &t);
                self.make(root, digest, format!("template {t}"), None, || {
                    c.create_instance(&instance(None, Some(t.clone())))
                })
            }
            "import" => {
                let (file, digest) = self.pick_image();
                let req = ImportTemplate {
                    name: format!("m{name}"),
                    upload: None,
                    file: Some(format!("/data/images/{file}")),
                };
                let key = (Kind::Template, req.name.clone());
                self.make(key, digest, format!("image {file}"), None, || {
                    c.import_template(&req)
                })
            }
            "upload" => {
                let (file, digest) = self.pick_image();
                let u = c.upload(&self.dir.join(&file), |_, _| {})?;
                let mut t = Thing::asked(digest, format!("image {file}"));
                t.shown = true;
                t.path = u.sha256;
                self.things.insert((Kind::Upload, u.id.to_string()), t);
                self.shown_done += 1;
                Ok(None)
            }
            "import upload" => {
                let u = self.pick(&self.live(Kind::Upload));
                let digest = self.content(Kind::Upload, &u);
                let req = ImportTemplate {
                    name: format!("u{name}"),
                    upload: Some(u.clone()),
                    file: None,
                };
                let key = (Kind::Template, req.name.clone());
                self.make(key, digest, format!("upload {u}"), None, || {
                    c.import_template(&req)
                })
            }
            "snapshot" => {
                let v = self.pick(&self.live(Kind::Volume));
                let req = CreateSnapshot {
                    volume: v.clone(),
                    name: Some(format!("s{name}")),
                    quiesce: None,
                    protect: false,
                };
                let key = (Kind::Snapshot, format!("s{name}"));
                let digest = self.content(Kind::Volume, &v);
                self.make(key, digest, format!("volume {v}"), Some(v), || {
                    c.create_snapshot(&req)
                })
            }
            "restore" => {
                let s = self.pick(&self.live(Kind::Snapshot));
                let req = VolumeFromSnapshot {
                    name: format!("r{name}"),
                    zone: None,
                    host: None,
                };
                let key = (Kind::Volume, req.name.clone());
                let digest = self.content(Kind::Snapshot, &s);
                self.make(key, digest, format!("snapshot {s}"), None, || {
                    c.volume_from_snapshot(&s, &req)
                })
            }
            "template" => {
                let s = self.pick(&self.live(Kind::Snapshot));
                let key = (Kind::Template, format!("t{name}"));
                let digest = self.content(Kind::Snapshot, &s);
                self.things
                    .insert(key.clone(), Thing::asked(digest, format!("snapshot {s}")));
                // A template from a snapshot is made at once.
                c.create_template(&CreateTemplate {
                    name: key.1.clone(),
                    snapshot: s,
                })?;
                self.thing(&key).shown = true;
                self.shown_done += 1;
                Ok(None)
            }
            "point" => {
                let v = self.pick(&self.roots());
                let req = CreatePoint {
                    name: Some(format!("p{name}")),
                    ..Default::default()
                };
                let key = (Kind::Point, format!("p{name}"));
                let digest = self.content(Kind::Volume, &v);
                self.make(key, digest, format!("volume {v}"), Some(v.clone()), || {
                    c.create_point(instance_of(&v), &req)
                })
            }
            "revert" => {
                // A volume with a snapshot of its own, back to it.
                let (v, s) = self.pick_pair(&self.revertible());
                let to = self.content(Kind::Snapshot, &s);
                self.revert(v.clone(), to, || {
                    c.revert_volume(&v, &RevertVolume { snapshot: s })
                })
            }
            "revert point" => {
                let (v, p) = self.pick_pair(&self.revertible_points());
                let to = self.content(Kind::Point, &p);
                self.revert(v.clone(), to, || c.revert_point(instance_of(&v), &p))
            }
            "delete point" => {
                let (v, p) = self.pick_pair(&self.revertible_points());
                self.delete((Kind::Point, p.clone()), || {
                    c.delete_point(instance_of(&v), &p).map(Some)
                })
            }
            "delete snapshot" => {
                let s = self.pick(&self.live(Kind::Snapshot));
                self.delete((Kind::Snapshot, s.clone()), || {
                    c.delete_snapshot(&s, false).map(Some)
                })
            }
            "delete template" => {
                let t = self.pick(&self.live(Kind::Template));
                self.delete((Kind::Template, t.clone()), || {
                    c.delete_template(&t).map(Some)
                })
            }
            "delete upload" => {
                let u = self.pick(&self.live(Kind::Upload));
                self.delete((Kind::Upload, u.clone()), || {
                    c.delete_upload(&u).map(|()| None)
                })
            }
            // Restored volumes are deleted as volumes, root volumes with
            // their instances.
            "delete volume" => {
                let restored: Vec<String> = self
                    .live(Kind::Volume)
                    .into_iter()
                    .filter(|v| v.starts_with('r'))
                    .collect();
                let v = self.pick(&restored);
                self.delete((Kind::Volume, v.clone()), || {
                    c.delete_volume(&v).map(|()| None)
                })
            }
            "delete instance" => {
                let v = self.pick(&self.deletable_roots());
                self.delete((Kind::Volume, v.clone()), || {
                    c.delete_instance(instance_of(&v)).map(|()| None)
                })
            }
            "gc" => Ok(Some((c.collect_garbage()?, vec![]))),
            other => panic!("unknown operation {other}"),
        }
    }

    /// Follow a job to its end, recording what it shows done; false when
    /// the power was cut first.
    fn follow(&mut self, c: &Client, op: &str, (job, targets): Started, cut: &AtomicBool) -> bool {
        let id = job.id.to_string();
        let job = loop {
            if cut.load(Ordering::SeqCst) {
                return false;
            }
            match c.job(&id) {
                Ok(j) if matches!(j.state, JobState::Queued | JobState::Running) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(j) => break j,
                Err(_) => return false,
            }
        };
        for key in targets {
            let Some(t) = self.things.get_mut(&key) else {
                continue;
            };
            if job.state != JobState::Succeeded {
                // Not done; a revert leaves the volume as it was.
                if op.starts_with("revert") {
                    t.contents.truncate(1);
                }
                if t.deleting {
                    t.deleting = false;
                }
                continue;
            }
            self.shown_done += 1;
            if t.deleting {
                t.deleted = true;
            } else if op.starts_with("revert") {
                t.contents.remove(0);
            } else {
                t.shown = true;
                if key.0 == Kind::Volume {
                    t.path = c.volume(&key.1).ok().map(|v| v.path);
                }
            }
        }
        if job.state != JobState::Succeeded {
            self.failed
                .push(format!("{op} {id}: {:?} {:?}", job.state, job.error));
        }
        self.journal.push(format!("  … {op} ended {:?}", job.state));
        true
    }
}

#[test]
fn a_power_cut_loses_nothing_shown_done() {
    let rounds = env_u64("REPRISE_POWERCUT_ROUNDS", 3) as usize;
    let seed = seed_from_env("REPRISE_POWERCUT_SEED");
    eprintln!(
        "power-cut campaign: {rounds} rounds, seed {seed} (REPRISE_POWERCUT_SEED replays it)"
    );
    let dir = tempfile::Builder::new()
        .prefix("rp-power")
        .tempdir()
        .unwrap();
    let built = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/powercut/build.sh"))
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_reprise"))
        .env("GUEST", guest().initrd.parent().unwrap())
        .status()
        .expect("tests/powercut/build.sh runs");
    assert!(built.success(), "tests/powercut/build.sh failed");
    let disk = dir.path().join("disk.img");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "truncate -s {DISK_BYTES} {0} && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 {0}",
            disk.display()
        ))
        .status()
        .unwrap();
    assert!(made.success(), "mkfs.ext4 of the VM's disk");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut vm = PowerVm {
        dir: dir.path().to_path_buf(),
        disk,
        port,
        child: None,
        key: None,
        boots: 0,
    };
    {
        let m = vm.mount();
        std::fs::create_dir_all(m.0.join("images")).unwrap();
        std::fs::create_dir_all(m.0.join("reprise")).unwrap();
        std::fs::write(
            m.0.join("reprise.toml"),
            "data_dir = \"/data/reprise\"\nlisten = \"0.0.0.0:7480\"\nimport_dirs = [\"/data/images\"]\n\
             log_format = \"json\"\n[gc]\ngrace_minutes = 0\nmin_interval_minutes = 0\n[snapshots]\nundelete_days = 0\n",
        )
        .unwrap();
    }
    let mut campaign = Campaign {
        dice: Dice(seed),
        dir: dir.path().to_path_buf(),
        things: BTreeMap::new(),
        images: Vec::new(),
        violations: Vec::new(),
        started: BTreeMap::new(),
        cut_inside: BTreeMap::new(),
        failed: Vec::new(),
        shown_done: 0,
        verified: 0,
        leaked: 0,
        journal: Vec::new(),
        touched: Vec::new(),
        cut_subjects: Vec::new(),
    };
    let started = Instant::now();
    for round in 1..=rounds {
        campaign.check_disk(&vm, round);
        let c = vm.boot();
        campaign.check_api(&c, round);
        // Up to 10 s of operations, then the power goes: inside one, or
        // just after one was shown done (when the kernel still holds
        // whatever was not synced: it writes back after 5-30 s).
        let after = Duration::from_millis(200 + campaign.dice.below(10_000));
        let cut = Arc::new(AtomicBool::new(false));
        let cutter = vm.cut_after(after, cut.clone());
        campaign.run_until_cut(&c, round, &cut);
        cutter.join().unwrap();
        vm.wait_off();
        eprintln!(
            "round {round}: power cut after {after:?}; {} things known, {} violations so far",
            campaign.things.len(),
            campaign.violations.len()
        );
    }
    // The last cut checked too; then every BackedUp snapshot verifies.
    campaign.check_disk(&vm, rounds + 1);
    let c = vm.boot();
    campaign.check_api(&c, rounds + 1);
    let mut all = 0;
    for s in c.snapshots(&Default::default()).unwrap() {
        if s.state != SnapshotState::BackedUp {
            continue;
        }
        let done = c
            .verify_snapshot(&s.name)
            .and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(300), |_| {}));
        match done {
            Ok(_) => all += 1,
            Err(e) => campaign.violation(
                rounds + 1,
                format!("snapshot {} does not verify: {e:?}", s.name),
            ),
        }
    }
    vm.wait_off();
    eprintln!(
        "power-cut campaign: {rounds} cuts in {:?}; operations started {:?}; cut inside {:?}; \
         {} shown done; {} snapshot verifies after cuts, {all} BackedUp at the end all verified; \
         {} volumes with a metadata update cut (repaired at the next start); \
         failed operations {:?}; {} violations",
        started.elapsed(),
        campaign.started,
        campaign.cut_inside,
        campaign.shown_done,
        campaign.verified,
        campaign.leaked,
        campaign.failed,
        campaign.violations.len()
    );
    assert!(campaign.violations.is_empty(), "{:#?}", campaign.violations);
}
