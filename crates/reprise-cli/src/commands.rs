//! The commands, as clap parses them, and what each one does.

use crate::output::{self, fields, opt, out, outln, size, table, time};
use crate::{client_config_path, ClientConfig};
use clap::{Args, Parser, Subcommand};
use reprise_client::{segment, Client};
use reprise_core::model::*;
use reprise_core::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "reprise",
    version,
    about = "Snapshot manager for QEMU/KVM virtual machines"
)]
pub struct Cli {
    /// The daemon's URL.
    #[arg(long, global = true, env = "REPRISE_URL")]
    url: Option<String>,
    /// The API key of your account.
    #[arg(long, global = true, env = "REPRISE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Start long operations and return at once, printing their job.
    #[arg(long, global = true)]
    no_wait: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Zones: each has its own primary storage.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Accounts, their plans and API keys.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Plans: what an account may hold and run (set by the operator).
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Uploads: files sent to the daemon (images, kernels, initrds).
    #[command(subcommand)]
    Upload(UploadCmd),
    /// Volumes: qcow2 disks in a zone's primary storage.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Instances: QEMU/KVM virtual machines.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Recovery points: an instance's volumes (and memory) at one instant.
    #[command(subcommand)]
    Point(PointCmd),
    /// Volume snapshots: copies of volumes in the region's object store.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Templates: golden images made from snapshots, to deploy instances.
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Remove the chunks no snapshot references from the region's store
    /// (admin; also runs after every snapshot delete).
    Gc,
    /// Jobs: the long operations.
    #[command(subcommand)]
    Job(JobCmd),
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Make a template from a snapshot (no data is copied).
    Create {
        name: String,
        #[arg(long)]
        from_snapshot: String,
    },
    /// Import a qcow2 or raw image file: uploaded from this machine, then
    /// checked and converted under resource limits (images are untrusted
    /// input).
    Import {
        name: String,
        #[arg(long)]
        file: String,
        /// FILE names a file on the daemon's host, below its import_dirs
        /// (admin only), instead of a file to upload.
        #[arg(long)]
        on_server: bool,
    },
    List,
    Show {
        template: String,
    },
    /// Delete a template; instances made from it keep their volumes.
    Delete {
        template: String,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot a volume into the region's object store: the instant is
    /// cut in milliseconds, then only data changed since the volume's last
    /// snapshot is read and uploaded.
    Create {
        /// The volume, by name or id.
        volume: String,
        /// Generated from the volume name and the UTC time when left out.
        #[arg(long)]
        name: Option<String>,
        /// Freeze the guest's filesystems (`--quiesce` alone: required; or
        /// auto, the default, or none).
        #[arg(long, num_args = 0..=1, default_missing_value = "required")]
        quiesce: Option<String>,
    },
    List,
    Show {
        snapshot: String,
    },
    /// Delete a snapshot; chunks nothing else references are removed.
    Delete {
        snapshot: String,
    },
    /// Re-read every chunk of a snapshot and check it.
    Verify {
        snapshot: String,
    },
}

#[derive(Subcommand)]
enum PointCmd {
    /// Take a recovery point (disk-only unless --memory).
    Create {
        instance: String,
        /// Generated from the instance name and the UTC time when left out.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Include RAM and device state: reverting resumes the instance as
        /// it was, without a reboot (takes space: about the guest's RAM).
        #[arg(long)]
        memory: bool,
        /// Do not freeze the guest's filesystems (crash-consistent).
        #[arg(long, conflicts_with = "quiesce")]
        no_quiesce: bool,
        /// auto (freeze when the guest agent answers), required, or none.
        #[arg(long)]
        quiesce: Option<String>,
    },
    /// List an instance's recovery points, or draw them as a tree.
    List {
        instance: String,
        #[arg(long)]
        tree: bool,
    },
    Show {
        instance: String,
        point: String,
    },
    /// Revert the instance to a point; the other points stay.
    Revert {
        instance: String,
        point: String,
    },
    /// Delete one point (its children move to its parent) or all.
    Delete {
        instance: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        point: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

/// What `reprise serve` is given; the binary runs the daemon with it (the
/// CLI itself does not link the daemon).
#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (every field has a default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (catalog, keys, default zone, region store).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, like 127.0.0.1:7480.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum ZoneCmd {
    /// Create a zone (admin).
    Create {
        name: String,
        /// Its primary storage directory (default DATA_DIR/zones/NAME).
        #[arg(long)]
        storage: Option<String>,
    },
    List,
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account (admin); prints its API key once.
    Create {
        name: String,
        /// Its plan (default: the daemon's default_plan; "" for none).
        #[arg(long)]
        plan: Option<String>,
    },
    List,
    /// An account's plan and what it uses of each limit (your own when
    /// left out).
    Show {
        account: Option<String>,
    },
    /// Assign a plan to an account (admin; "" removes it).
    Set {
        account: String,
        #[arg(long)]
        plan: String,
    },
    /// Delete an account (admin): refused while it owns anything, unless
    /// --purge, which revokes its keys and deletes all it owns first.
    Delete {
        account: String,
        #[arg(long)]
        purge: bool,
    },
    /// API keys: several per account, each revocable.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make a new key (shown once).
    Create {
        name: String,
        /// Whose (admin; your own account when left out).
        #[arg(long)]
        account: Option<String>,
    },
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a key: it fails from the next request on.
    Revoke {
        key: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// Replace the key this command uses by a new one (for the admin, the
    /// daemon's admin.key file too); prints the new key once.
    Rotate,
}

#[derive(Subcommand)]
enum PlanCmd {
    /// Plans (yours, or all for the admin).
    List,
    /// Define or replace a plan (admin). Limits left out are unlimited.
    Set {
        name: String,
        /// Recovery points per instance.
        #[arg(long)]
        max_recovery_points: Option<u64>,
        #[arg(long)]
        max_snapshots_per_volume: Option<u64>,
        /// Volume snapshots of the account.
        #[arg(long)]
        max_snapshots: Option<u64>,
        #[arg(long)]
        max_volumes: Option<u64>,
        #[arg(long)]
        max_instances: Option<u64>,
        /// Total size of the account's volumes, like 200G.
        #[arg(long)]
        max_volume_size: Option<String>,
        /// Bytes of the account's snapshots in the region's store, like 1T.
        #[arg(long)]
        max_snapshot_size: Option<String>,
        #[arg(long)]
        max_concurrent_jobs: Option<u64>,
    },
    /// Delete a plan no account or instance uses (admin).
    Delete { name: String },
}

#[derive(Subcommand)]
enum UploadCmd {
    /// Send a file; prints the upload (its id is what imports take).
    Create {
        file: PathBuf,
    },
    List,
    Show {
        upload: String,
    },
    Delete {
        upload: String,
    },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a data volume: blank (--size), or with a snapshot's content
    /// (--from-snapshot), in any zone.
    Create {
        name: String,
        /// Like 512M, 10G, 1T.
        #[arg(
            long,
            required_unless_present = "from_snapshot",
            conflicts_with = "from_snapshot"
        )]
        size: Option<String>,
        #[arg(long)]
        from_snapshot: Option<String>,
        #[arg(long)]
        zone: Option<String>,
    },
    List {
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        instance: Option<String>,
    },
    Show {
        volume: String,
    },
    /// Grow a volume (hot when its instance runs).
    Resize {
        volume: String,
        #[arg(long)]
        size: String,
    },
    Delete {
        volume: String,
    },
    /// Attach a data volume to an instance (hot-plug when it runs).
    Attach {
        volume: String,
        instance: String,
    },
    Detach {
        volume: String,
    },
    /// Put a volume back to a snapshot's content (its instance stopped);
    /// the volume's snapshots stay.
    Revert {
        volume: String,
        #[arg(long)]
        to_snapshot: String,
    },
}

#[derive(Subcommand)]
enum InstanceCmd {
    /// Create an instance and start it.
    Create(Box<CreateInstanceArgs>),
    /// Clone an instance for troubleshooting: its volumes snapshotted at
    /// one instant, copied into new volumes (any zone), a new instance
    /// started on them.
    Clone {
        instance: String,
        name: String,
        #[arg(long)]
        zone: Option<String>,
    },
    List,
    /// Show an instance, with whether its guest agent answers.
    Show {
        instance: String,
    },
    Start {
        instance: String,
    },
    /// Power off (ACPI and guest agent), forced after the timeout.
    Stop {
        instance: String,
        /// Do not ask the guest: stop QEMU at once.
        #[arg(long)]
        force: bool,
    },
    Restart {
        instance: String,
    },
    /// Operator settings (admin): enable or disable snapshots, set the plan.
    Set {
        instance: String,
        /// enabled or disabled.
        #[arg(long, value_parser = ["enabled", "disabled"])]
        snapshots: Option<String>,
        /// A plan of the daemon's config; "" removes it.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Delete a stopped instance and its root volume.
    Delete {
        instance: String,
    },
}

#[derive(Args)]
struct CreateInstanceArgs {
    name: String,
    #[arg(long)]
    zone: Option<String>,
    #[arg(long)]
    cpus: Option<u32>,
    /// Like 512M, 2G.
    #[arg(long)]
    memory: Option<String>,
    /// A blank root volume of this size.
    #[arg(long, conflicts_with = "image")]
    root_size: Option<String>,
    /// A disk image file (qcow2 or raw), uploaded and copied into the root
    /// volume.
    #[arg(long, conflicts_with = "template")]
    image: Option<String>,
    /// A template whose content becomes the root volume.
    #[arg(long, conflicts_with = "root_size")]
    template: Option<String>,
    /// A data volume to attach (repeatable).
    #[arg(long = "data-volume")]
    data_volumes: Vec<String>,
    /// Boot this kernel directly (small guests); uploaded, like --initrd.
    #[arg(long)]
    kernel: Option<String>,
    #[arg(long, requires = "kernel")]
    initrd: Option<String>,
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// --image, --kernel and --initrd name files on the daemon's host,
    /// below its import_dirs (admin only), instead of files to upload.
    #[arg(long)]
    on_server: bool,
    /// Create it Stopped.
    #[arg(long)]
    no_start: bool,
    /// A plan for this instance, overriding its account's for recovery
    /// points (admin).
    #[arg(long)]
    plan: Option<String>,
}

#[derive(Subcommand)]
enum JobCmd {
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Show {
        job: String,
    },
    /// Wait for a job to end.
    Wait {
        job: String,
    },
}

struct Ctx {
    client: Client,
    json: bool,
    no_wait: bool,
}

fn resolve_client(cli: &Cli) -> Result<Client> {
    let file: ClientConfig = match client_config_path().filter(|p| p.exists()) {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                Error::invalid(
                    "config_invalid",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            toml::from_str(&text)
                .map_err(|e| Error::invalid("config_invalid", format!("{}: {e}", p.display())))?
        }
        None => ClientConfig::default(),
    };
    let url = cli
        .url
        .clone()
        .or(file.url)
        .unwrap_or_else(|| format!("http://{}", reprise_core::defaults::DEFAULT_LISTEN));
    let key = cli.api_key.clone().or(file.api_key).or_else(|| {
        let data_dir = reprise_core::defaults::data_dir(
            rustix::process::getuid().is_root(),
            std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        );
        let path = data_dir.join("admin.key");
        std::fs::read_to_string(path)
            .ok()
            .map(|k| k.trim().to_string())
    });
    Ok(Client::new(&url, key))
}

/// Run a parsed command; `serve` runs the daemon for `reprise serve`.
pub fn run(cli: Cli, serve: impl FnOnce(ServeArgs) -> Result<()>) -> Result<()> {
    let cli = match cli.command {
        Command::Serve(args) => return serve(args),
        _ => cli,
    };
    let ctx = Ctx {
        client: resolve_client(&cli)?,
        json: cli.json,
        no_wait: cli.no_wait,
    };
    match cli.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Zone(c) => zone(&ctx, c),
        Command::Account(c) => account(&ctx, c),
        Command::Plan(c) => plan(&ctx, c),
        Command::Upload(c) => upload(&ctx, c),
        Command::Volume(c) => volume(&ctx, c),
        Command::Instance(c) => instance(&ctx, c),
        Command::Point(c) => point(&ctx, c),
        Command::Snapshot(c) => snapshot(&ctx, c),
        Command::Template(c) => template(&ctx, c),
        Command::Gc => {
            let job = ctx.client.start_job("/api/v1/gc", &serde_json::json!({}))?;
            let id = job.id.to_string();
            if follow(&ctx, job)? {
                show_job(&ctx, &ctx.client.job(&id)?);
            }
            Ok(())
        }
        Command::Job(c) => job(&ctx, c),
    }
}

fn print_json<T: Serialize>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Print a list as JSON or as a table.
fn print_list<T: Serialize>(
    ctx: &Ctx,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) {
    if ctx.json {
        print_json(&items);
    } else {
        out!(
            "{}",
            table(headers, &items.iter().map(row).collect::<Vec<_>>())
        );
    }
}

fn zone(ctx: &Ctx, cmd: ZoneCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        ZoneCmd::Create { name, storage } => {
            let z: Zone = c.post(
                "/api/v1/zones",
                &CreateZone {
                    name,
                    storage_dir: storage,
                },
            )?;
            show_zone(ctx, &z);
        }
        ZoneCmd::List => {
            let zones: Vec<Zone> = c.get("/api/v1/zones")?;
            print_list(ctx, &zones, &["NAME", "STORAGE", "CREATED", "ID"], |z| {
                vec![
                    z.name.clone(),
                    z.storage_dir.clone(),
                    time(&z.created_at),
                    z.id.to_string(),
                ]
            });
        }
    }
    Ok(())
}

fn show_zone(ctx: &Ctx, z: &Zone) {
    if ctx.json {
        return print_json(z);
    }
    out!(
        "{}",
        fields(&[
            ("id", z.id.to_string()),
            ("name", z.name.clone()),
            ("storage", z.storage_dir.clone()),
            ("created", time(&z.created_at)),
        ])
    );
}

fn account_path(a: &str) -> String {
    format!("/api/v1/accounts/{}", segment(a))
}

/// The account a command names, or the caller's own.
fn account_or_me(c: &Client, account: Option<String>) -> Result<String> {
    match account {
        Some(a) => Ok(a),
        None => c
            .get::<Account>("/api/v1/whoami")
            .map(|me| me.id.to_string()),
    }
}

fn account(ctx: &Ctx, cmd: AccountCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        AccountCmd::Create { name, plan } => {
            let made: AccountCreated = c.post("/api/v1/accounts", &CreateAccount { name, plan })?;
            if ctx.json {
                print_json(&made);
            } else {
                out!(
                    "{}",
                    fields(&[
                        ("id", made.account.id.to_string()),
                        ("name", made.account.name.clone()),
                        ("plan", opt(&made.account.plan)),
                        ("api key", made.api_key.clone()),
                    ])
                );
                eprintln!("The API key is shown this once: keep it now.");
            }
        }
        AccountCmd::List => {
            let accounts: Vec<Account> = c.get("/api/v1/accounts")?;
            print_list(
                ctx,
                &accounts,
                &["NAME", "ADMIN", "PLAN", "CREATED", "ID"],
                |a| {
                    vec![
                        a.name.clone(),
                        if a.admin { "yes" } else { "no" }.into(),
                        opt(&a.plan),
                        time(&a.created_at),
                        a.id.to_string(),
                    ]
                },
            );
        }
        AccountCmd::Show { account } => {
            let a = account_or_me(c, account)?;
            show_account(ctx, &c.get(&account_path(&a))?);
        }
        AccountCmd::Set { account, plan } => {
            let d: AccountDetails = c.post(
                &format!("{}/settings", account_path(&account)),
                &AccountSettings { plan: Some(plan) },
            )?;
            show_account(ctx, &d);
        }
        AccountCmd::Delete { account, purge } => {
            if purge {
                let job = c.delete_job(&format!("{}?purge=true", account_path(&account)))?;
                if !follow(ctx, job)? {
                    return Ok(());
                }
            } else {
                c.delete(&account_path(&account))?;
            }
            if !ctx.json {
                outln!("account {account} deleted");
            }
        }
        AccountCmd::Key(k) => key(ctx, k)?,
    }
    Ok(())
}

fn show_account(ctx: &Ctx, d: &AccountDetails) {
    if ctx.json {
        return print_json(d);
    }
    out!(
        "{}",
        fields(&[
            ("id", d.account.id.to_string()),
            ("name", d.account.name.clone()),
            ("admin", if d.account.admin { "yes" } else { "no" }.into()),
            ("plan", opt(&d.account.plan)),
            ("created", time(&d.account.created_at)),
        ])
    );
    let limits = d
        .plan
        .as_ref()
        .map(|p| p.limits.clone())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = reprise_core::plan::Limit::ALL
        .iter()
        .map(|l| {
            let bytes = matches!(
                l,
                reprise_core::plan::Limit::VolumeBytes | reprise_core::plan::Limit::SnapshotBytes
            );
            let show = |n: u64| if bytes { size(n) } else { n.to_string() };
            vec![
                l.field().to_string(),
                show(l.used(&d.usage)),
                l.of(&limits)
                    .map(show)
                    .unwrap_or_else(|| "unlimited".into()),
            ]
        })
        .collect();
    outln!();
    out!("{}", table(&["LIMIT", "USED", "ALLOWED"], &rows));
}

fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<()> {
    let c = &ctx.client;
    let show_made = |made: &ApiKeyCreated| {
        if ctx.json {
            print_json(made);
        } else {
            out!(
                "{}",
                fields(&[
                    ("id", made.key.id.to_string()),
                    ("name", made.key.name.clone()),
                    ("api key", made.api_key.clone()),
                ])
            );
            eprintln!("The API key is shown this once: keep it now.");
        }
    };
    match cmd {
        KeyCmd::Create { name, account } => {
            let a = account_or_me(c, account)?;
            let made: ApiKeyCreated = c.post(
                &format!("{}/keys", account_path(&a)),
                &CreateApiKey { name },
            )?;
            show_made(&made);
        }
        KeyCmd::List { account } => {
            let a = account_or_me(c, account)?;
            let keys: Vec<ApiKey> = c.get(&format!("{}/keys", account_path(&a)))?;
            print_list(
                ctx,
                &keys,
                &["NAME", "PREFIX", "CREATED", "LAST USED", "ID"],
                |k| {
                    vec![
                        k.name.clone(),
                        format!("{}…", k.prefix),
                        time(&k.created_at),
                        k.last_used_at
                            .as_ref()
                            .map(time)
                            .unwrap_or_else(|| "-".into()),
                        k.id.to_string(),
                    ]
                },
            );
        }
        KeyCmd::Revoke { key, account } => {
            let a = account_or_me(c, account)?;
            c.delete(&format!("{}/keys/{}", account_path(&a), segment(&key)))?;
            if !ctx.json {
                outln!("key {key} revoked");
            }
        }
        KeyCmd::Rotate => {
            let made: ApiKeyCreated = c.post("/api/v1/keys/rotate", &serde_json::json!({}))?;
            show_made(&made);
        }
    }
    Ok(())
}

fn plan(ctx: &Ctx, cmd: PlanCmd) -> Result<()> {
    use reprise_core::plan::{Limit, Plan, PlanLimits};
    let c = &ctx.client;
    match cmd {
        PlanCmd::List => {
            let plans: Vec<Plan> = c.get("/api/v1/plans")?;
            if ctx.json {
                print_json(&plans);
                return Ok(());
            }
            let mut headers = vec!["NAME"];
            headers.extend(Limit::ALL.iter().map(|l| l.field()));
            let rows: Vec<Vec<String>> = plans
                .iter()
                .map(|p| {
                    let mut row = vec![p.name.clone()];
                    row.extend(Limit::ALL.iter().map(|l| match l.of(&p.limits) {
                        None => "-".to_string(),
                        Some(n) if matches!(l, Limit::VolumeBytes | Limit::SnapshotBytes) => {
                            size(n)
                        }
                        Some(n) => n.to_string(),
                    }));
                    row
                })
                .collect();
            out!("{}", table(&headers, &rows));
        }
        PlanCmd::Set {
            name,
            max_recovery_points,
            max_snapshots_per_volume,
            max_snapshots,
            max_volumes,
            max_instances,
            max_volume_size,
            max_snapshot_size,
            max_concurrent_jobs,
        } => {
            let bytes =
                |s: Option<String>| s.map(|s| reprise_core::size::parse_size(&s)).transpose();
            let plan = Plan {
                name,
                limits: PlanLimits {
                    max_recovery_points,
                    max_snapshots_per_volume,
                    max_snapshots,
                    max_volumes,
                    max_instances,
                    max_volume_bytes: bytes(max_volume_size)?,
                    max_snapshot_bytes: bytes(max_snapshot_size)?,
                    max_concurrent_jobs,
                },
            };
            let p: Plan = c.post("/api/v1/plans", &plan)?;
            if ctx.json {
                print_json(&p);
            } else {
                outln!("plan {} set", p.name);
            }
        }
        PlanCmd::Delete { name } => {
            c.delete(&format!("/api/v1/plans/{}", segment(&name)))?;
            if !ctx.json {
                outln!("plan {name} deleted");
            }
        }
    }
    Ok(())
}

/// Upload a local file with a progress bar (quiet with --json).
fn send_file(ctx: &Ctx, path: &std::path::Path) -> Result<Upload> {
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(path.display().to_string());
    let sent = ctx.client.upload(path, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    sent
}

fn upload(ctx: &Ctx, cmd: UploadCmd) -> Result<()> {
    let c = &ctx.client;
    let path = |u: &str| format!("/api/v1/uploads/{}", segment(u));
    let u: Upload = match cmd {
        UploadCmd::Create { file } => send_file(ctx, &file)?,
        UploadCmd::List => {
            let list: Vec<Upload> = c.get("/api/v1/uploads")?;
            print_list(
                ctx,
                &list,
                &["NAME", "STATE", "SIZE", "RECEIVED", "CREATED", "ID"],
                |u| {
                    vec![
                        u.name.clone(),
                        u.state.to_string(),
                        size(u.size_bytes),
                        size(u.received_bytes),
                        time(&u.created_at),
                        u.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        UploadCmd::Show { upload } => c.get(&path(&upload))?,
        UploadCmd::Delete { upload } => {
            c.delete(&path(&upload))?;
            if !ctx.json {
                outln!("upload {upload} deleted");
            }
            return Ok(());
        }
    };
    if ctx.json {
        print_json(&u);
        return Ok(());
    }
    out!(
        "{}",
        fields(&[
            ("id", u.id.to_string()),
            ("name", u.name.clone()),
            ("state", u.state.to_string()),
            (
                "size",
                format!("{} ({} bytes)", size(u.size_bytes), u.size_bytes)
            ),
            ("received", u.received_bytes.to_string()),
            ("sha256", opt(&u.sha256)),
            ("created", time(&u.created_at)),
        ])
    );
    Ok(())
}

/// Files a command brings to the daemon: uploaded (and their uploads
/// deleted once used), or, with --on-server, host paths for the admin.
struct Files<'a> {
    ctx: &'a Ctx,
    on_server: bool,
    sent: Vec<Upload>,
}

impl<'a> Files<'a> {
    fn new(ctx: &'a Ctx, on_server: bool) -> Self {
        Files {
            ctx,
            on_server,
            sent: Vec::new(),
        }
    }

    /// `(upload id, host path)` for one file argument.
    fn bring(&mut self, file: Option<String>) -> Result<(Option<String>, Option<String>)> {
        match file {
            None => Ok((None, None)),
            Some(f) if self.on_server => Ok((None, Some(absolute(f)))),
            Some(f) => {
                let u = send_file(self.ctx, std::path::Path::new(&f))?;
                let id = u.id.to_string();
                self.sent.push(u);
                Ok((Some(id), None))
            }
        }
    }
}

impl Drop for Files<'_> {
    /// The daemon keeps its own copy of what it took: the uploads go.
    fn drop(&mut self) {
        for u in &self.sent {
            let _ = self.ctx.client.delete(&format!("/api/v1/uploads/{}", u.id));
        }
    }
}

fn volume_path(v: &str) -> String {
    format!("/api/v1/volumes/{}", segment(v))
}

fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<()> {
    let c = &ctx.client;
    let v: Volume = match cmd {
        VolumeCmd::Create {
            name,
            size: Some(size),
            zone,
            ..
        } => c.post("/api/v1/volumes", &CreateVolume { name, size, zone })?,
        VolumeCmd::Create {
            name,
            from_snapshot,
            zone,
            ..
        } => {
            let job = c.start_job(
                &format!(
                    "{}/volumes",
                    snapshot_path(&from_snapshot.unwrap_or_default())
                ),
                &VolumeFromSnapshot { name, zone },
            )?;
            let id = job.target_id;
            if !follow(ctx, job)? {
                return Ok(());
            }
            c.get(&volume_path(&id.to_string()))?
        }
        VolumeCmd::List { zone, instance } => {
            let mut query = Vec::new();
            if let Some(z) = zone {
                query.push(format!("zone={}", segment(&z)));
            }
            if let Some(i) = instance {
                query.push(format!("instance={}", segment(&i)));
            }
            let vols: Vec<Volume> = c.get(&format!("/api/v1/volumes?{}", query.join("&")))?;
            print_list(
                ctx,
                &vols,
                &[
                    "NAME", "KIND", "SIZE", "STATE", "ZONE", "INSTANCE", "CREATED", "ID",
                ],
                |v| {
                    vec![
                        v.name.clone(),
                        v.kind.to_string(),
                        size(v.size_bytes),
                        v.state.to_string(),
                        v.zone.clone(),
                        opt(&v.instance),
                        time(&v.created_at),
                        v.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        VolumeCmd::Show { volume } => c.get(&volume_path(&volume))?,
        VolumeCmd::Resize { volume, size } => c.post(
            &format!("{}/resize", volume_path(&volume)),
            &ResizeVolume { size },
        )?,
        VolumeCmd::Delete { volume } => {
            c.delete(&volume_path(&volume))?;
            if !ctx.json {
                outln!("volume {volume} deleted");
            }
            return Ok(());
        }
        VolumeCmd::Attach { volume, instance } => c.post(
            &format!("{}/attach", volume_path(&volume)),
            &AttachVolume { instance },
        )?,
        VolumeCmd::Detach { volume } => c.post(
            &format!("{}/detach", volume_path(&volume)),
            &serde_json::json!({}),
        )?,
        VolumeCmd::Revert {
            volume,
            to_snapshot,
        } => {
            let job = c.start_job(
                &format!("{}/revert", volume_path(&volume)),
                &RevertVolume {
                    snapshot: to_snapshot,
                },
            )?;
            if !follow(ctx, job)? {
                return Ok(());
            }
            c.get(&volume_path(&volume))?
        }
    };
    show_volume(ctx, &v);
    Ok(())
}

fn show_volume(ctx: &Ctx, v: &Volume) {
    if ctx.json {
        return print_json(v);
    }
    out!(
        "{}",
        fields(&[
            ("id", v.id.to_string()),
            ("name", v.name.clone()),
            ("kind", v.kind.to_string()),
            ("state", v.state.to_string()),
            (
                "size",
                format!("{} ({} bytes)", size(v.size_bytes), v.size_bytes)
            ),
            ("zone", v.zone.clone()),
            ("instance", opt(&v.instance)),
            ("path", v.path.clone()),
            ("created", time(&v.created_at)),
        ])
    );
}

fn instance_path(i: &str) -> String {
    format!("/api/v1/instances/{}", segment(i))
}

fn instance(ctx: &Ctx, cmd: InstanceCmd) -> Result<()> {
    let c = &ctx.client;
    let (job, name) = match cmd {
        InstanceCmd::Create(a) => {
            let a = *a;
            let name = a.name.clone();
            let mut files = Files::new(ctx, a.on_server);
            let (image_upload, image) = files.bring(a.image)?;
            let (kernel_upload, kernel) = files.bring(a.kernel)?;
            let (initrd_upload, initrd) = files.bring(a.initrd)?;
            let req = CreateInstance {
                name: a.name,
                zone: a.zone,
                cpus: a.cpus,
                memory: a.memory,
                root_size: a.root_size,
                image_upload,
                image,
                template: a.template,
                data_volumes: a.data_volumes,
                kernel_upload,
                initrd_upload,
                kernel,
                initrd,
                append: a.append,
                no_start: a.no_start,
                plan: a.plan,
            };
            let job = c.start_job("/api/v1/instances", &req)?;
            let shown = follow(ctx, job)?;
            drop(files);
            if shown {
                show_instance(ctx, &c.get(&instance_path(&name))?);
            }
            return Ok(());
        }
        InstanceCmd::List => {
            let list: Vec<Instance> = c.get("/api/v1/instances")?;
            print_list(
                ctx,
                &list,
                &[
                    "NAME", "STATE", "CPUS", "MEMORY", "ZONE", "VOLUMES", "CREATED", "ID",
                ],
                |i| {
                    vec![
                        i.name.clone(),
                        i.state.to_string(),
                        i.cpus.to_string(),
                        size(i.memory_bytes),
                        i.zone.clone(),
                        i.volumes.len().to_string(),
                        time(&i.created_at),
                        i.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        InstanceCmd::Show { instance } => {
            let i: Instance = c.get(&instance_path(&instance))?;
            show_instance(ctx, &i);
            return Ok(());
        }
        InstanceCmd::Start { instance } => (
            c.start_job(
                &format!("{}/start", instance_path(&instance)),
                &serde_json::json!({}),
            )?,
            instance,
        ),
        InstanceCmd::Stop { instance, force } => (
            c.start_job(
                &format!("{}/stop", instance_path(&instance)),
                &StopInstance { force },
            )?,
            instance,
        ),
        InstanceCmd::Clone {
            instance,
            name,
            zone,
        } => (
            c.start_job(
                &format!("{}/clone", instance_path(&instance)),
                &CloneInstance {
                    name: name.clone(),
                    zone,
                },
            )?,
            name,
        ),
        InstanceCmd::Restart { instance } => (
            c.start_job(
                &format!("{}/restart", instance_path(&instance)),
                &serde_json::json!({}),
            )?,
            instance,
        ),
        InstanceCmd::Set {
            instance,
            snapshots,
            plan,
        } => {
            let req = InstanceSettings {
                snapshots_enabled: snapshots.map(|s| s == "enabled"),
                plan,
            };
            let i: Instance = c.post(&format!("{}/settings", instance_path(&instance)), &req)?;
            show_instance(ctx, &i);
            return Ok(());
        }
        InstanceCmd::Delete { instance } => {
            c.delete(&instance_path(&instance))?;
            if !ctx.json {
                outln!("instance {instance} deleted");
            }
            return Ok(());
        }
    };
    if follow(ctx, job)? {
        let i: Instance = c.get(&instance_path(&name))?;
        show_instance(ctx, &i);
    }
    Ok(())
}

/// Paths the daemon reads are resolved here, so a relative path means what
/// the user meant.
fn absolute(p: String) -> String {
    std::path::absolute(&p)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or(p)
}

fn show_instance(ctx: &Ctx, i: &Instance) {
    if ctx.json {
        return print_json(i);
    }
    let volumes = i
        .volumes
        .iter()
        .map(|v| format!("{} ({}, {})", v.name, v.kind, size(v.size_bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut pairs = vec![
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("state", i.state.to_string()),
        ("zone", i.zone.clone()),
        ("cpus", i.cpus.to_string()),
        ("memory", size(i.memory_bytes)),
        (
            "volumes",
            if volumes.is_empty() {
                "-".into()
            } else {
                volumes
            },
        ),
        ("accel", opt(&i.accel)),
        (
            "snapshots",
            if i.snapshots_enabled {
                "enabled"
            } else {
                "disabled"
            }
            .into(),
        ),
        ("plan", opt(&i.plan)),
        ("pid", opt(&i.pid)),
        ("kernel", opt(&i.kernel)),
        ("console log", i.console_log.clone()),
        ("qmp socket", i.qmp_socket.clone()),
        ("agent socket", i.guest_agent_socket.clone()),
        ("created", time(&i.created_at)),
    ];
    if let Some(a) = &i.guest_agent {
        pairs.push(("guest agent", a.status.clone()));
        pairs.push((
            "consistency",
            format!("{}: {}", a.snapshot_consistency, a.message),
        ));
    }
    if let Some(e) = &i.last_error {
        pairs.push(("last error", e.clone()));
    }
    out!("{}", fields(&pairs));
}

/// Wait for a job with a progress bar, or print it with `--no-wait`.
/// Returns whether the job was waited for (and succeeded).
fn follow(ctx: &Ctx, job: Job) -> Result<bool> {
    if ctx.no_wait {
        show_job(ctx, &job);
        return Ok(false);
    }
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {percent}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let result = ctx
        .client
        .wait_job(&job.id.to_string(), Duration::from_secs(3600), |j| {
            bar.set_message(format!("{} {} ({})", j.kind, j.target_name, j.state));
            bar.set_position((j.fraction() * 100.0) as u64);
        });
    bar.finish_and_clear();
    result.map(|_| true)
}

fn show_job(ctx: &Ctx, j: &Job) {
    if ctx.json {
        return print_json(j);
    }
    let mut pairs = vec![
        ("id", j.id.to_string()),
        ("kind", j.kind.clone()),
        (
            "target",
            format!("{} {} ({})", j.target_kind, j.target_name, j.target_id),
        ),
        ("state", j.state.to_string()),
        (
            "progress",
            format!(
                "{}/{} ({:.0}%)",
                j.progress_done,
                j.progress_total,
                j.fraction() * 100.0
            ),
        ),
        ("created", time(&j.created_at)),
        (
            "started",
            j.started_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "finished",
            j.finished_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &j.error {
        pairs.push(("error", format!("{} [{}]", e.message, e.code)));
    }
    out!("{}", fields(&pairs));
    for line in &j.log {
        outln!("  {}  {}", output::time(&line.at), line.message);
    }
}

fn job(ctx: &Ctx, cmd: JobCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        JobCmd::List { limit } => {
            let jobs: Vec<Job> = c.get(&format!("/api/v1/jobs?limit={limit}"))?;
            print_list(
                ctx,
                &jobs,
                &["ID", "KIND", "TARGET", "STATE", "PROGRESS", "CREATED"],
                |j| {
                    vec![
                        j.id.to_string(),
                        j.kind.clone(),
                        j.target_name.clone(),
                        j.state.to_string(),
                        format!("{:.0}%", j.fraction() * 100.0),
                        time(&j.created_at),
                    ]
                },
            );
        }
        JobCmd::Show { job } => show_job(ctx, &c.job(&job)?),
        JobCmd::Wait { job } => {
            let j = c.job(&job)?;
            let waited = follow(
                &Ctx {
                    client: c.clone(),
                    json: ctx.json,
                    no_wait: false,
                },
                j,
            );
            let j = c.job(&job)?;
            show_job(ctx, &j);
            waited?;
        }
    }
    Ok(())
}

fn points_path(instance: &str) -> String {
    format!("{}/points", instance_path(instance))
}

fn point(ctx: &Ctx, cmd: PointCmd) -> Result<()> {
    let c = &ctx.client;
    let (job, instance) = match cmd {
        PointCmd::Create {
            instance,
            name,
            description,
            memory,
            no_quiesce,
            quiesce,
        } => {
            let req = CreatePoint {
                name,
                description,
                memory,
                quiesce: if no_quiesce {
                    Some("none".into())
                } else {
                    quiesce
                },
            };
            (c.start_job(&points_path(&instance), &req)?, instance)
        }
        PointCmd::List { instance, tree } => {
            let points: Vec<Point> = c.get(&points_path(&instance))?;
            if ctx.json {
                print_json(&points);
            } else if tree {
                out!("{}", crate::output::point_tree(&instance, &points));
            } else {
                out!(
                    "{}",
                    table(
                        &POINT_HEADERS,
                        &points.iter().map(point_row).collect::<Vec<_>>()
                    )
                );
            }
            return Ok(());
        }
        PointCmd::Show { instance, point } => {
            let p: Point = c.get(&format!("{}/{}", points_path(&instance), segment(&point)))?;
            show_point(ctx, &p);
            return Ok(());
        }
        PointCmd::Revert { instance, point } => (
            c.start_job(
                &format!("{}/{}/revert", points_path(&instance), segment(&point)),
                &serde_json::json!({}),
            )?,
            instance,
        ),
        PointCmd::Delete {
            instance,
            point,
            all,
        } => {
            let job = if all {
                c.delete_job(&points_path(&instance))?
            } else {
                let point = point.unwrap_or_default();
                c.delete_job(&format!("{}/{}", points_path(&instance), segment(&point)))?
            };
            (job, instance)
        }
    };
    let kind = job.kind.clone();
    let target = job.target_id;
    if follow(ctx, job)? {
        if kind == "point.create" || kind == "point.revert" {
            let p: Point = c.get(&format!("{}/{}", points_path(&instance), target))?;
            show_point(ctx, &p);
        } else if !ctx.json {
            outln!("deleted");
        }
    }
    Ok(())
}

const POINT_HEADERS: [&str; 9] = [
    "NAME",
    "STATE",
    "MEMORY",
    "CONSISTENCY",
    "FROZEN",
    "HOLDS",
    "PARENT",
    "CREATED",
    "ID",
];

fn point_row(p: &Point) -> Vec<String> {
    vec![
        if p.current {
            format!("{} *", p.name)
        } else {
            p.name.clone()
        },
        p.state.to_string(),
        if p.memory { "yes" } else { "no" }.into(),
        p.consistency.clone(),
        p.frozen_ms
            .map(|m| format!("{m} ms"))
            .unwrap_or_else(|| "-".into()),
        p.size_bytes.map(size).unwrap_or_else(|| "?".into()),
        opt(&p.parent_id),
        time(&p.created_at),
        p.id.to_string(),
    ]
}

fn show_point(ctx: &Ctx, p: &Point) {
    if ctx.json {
        return print_json(p);
    }
    let mut pairs = vec![
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("instance", p.instance.clone()),
        ("state", p.state.to_string()),
        (
            "current",
            if p.current {
                "yes: the instance is at this point"
            } else {
                "no"
            }
            .into(),
        ),
        (
            "memory",
            if p.memory {
                "yes"
            } else {
                "no (reverting reboots the instance)"
            }
            .into(),
        ),
        ("consistency", p.consistency.clone()),
        (
            "frozen",
            p.frozen_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "holds",
            p.size_bytes.map(size).unwrap_or_else(|| "?".into()),
        ),
        ("parent", opt(&p.parent_id)),
        ("created", time(&p.created_at)),
    ];
    if !p.description.is_empty() {
        pairs.insert(2, ("description", p.description.clone()));
    }
    if let Some(e) = &p.error {
        pairs.push(("error", e.clone()));
    }
    out!("{}", fields(&pairs));
}

fn snapshot_path(s: &str) -> String {
    format!("/api/v1/snapshots/{}", segment(s))
}

fn snapshot(ctx: &Ctx, cmd: SnapshotCmd) -> Result<()> {
    let c = &ctx.client;
    let job = match cmd {
        SnapshotCmd::Create {
            volume,
            name,
            quiesce,
        } => c.start_job(
            "/api/v1/snapshots",
            &CreateSnapshot {
                volume,
                name,
                quiesce,
            },
        )?,
        SnapshotCmd::List => {
            let list: Vec<Snapshot> = c.get("/api/v1/snapshots")?;
            print_list(
                ctx,
                &list,
                &[
                    "NAME", "VOLUME", "STATE", "SIZE", "STORED", "NEW", "BASE", "CREATED", "ID",
                ],
                |s| {
                    vec![
                        s.name.clone(),
                        s.volume.clone(),
                        snapshot_state(s),
                        size(s.size_bytes),
                        s.stored_bytes.map(size).unwrap_or_else(|| "-".into()),
                        s.new_bytes.map(size).unwrap_or_else(|| "-".into()),
                        if s.base_id.is_some() {
                            "incremental"
                        } else {
                            "full"
                        }
                        .into(),
                        time(&s.created_at),
                        s.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        SnapshotCmd::Show { snapshot } => {
            show_snapshot(ctx, &c.get(&snapshot_path(&snapshot))?);
            return Ok(());
        }
        SnapshotCmd::Delete { snapshot } => c.delete_job(&snapshot_path(&snapshot))?,
        SnapshotCmd::Verify { snapshot } => c.start_job(
            &format!("{}/verify", snapshot_path(&snapshot)),
            &serde_json::json!({}),
        )?,
    };
    let (kind, target) = (job.kind.clone(), job.target_id);
    if follow(ctx, job)? {
        if kind == "snapshot.delete" {
            if !ctx.json {
                outln!("deleted");
            }
        } else {
            show_snapshot(ctx, &c.get(&snapshot_path(&target.to_string()))?);
        }
    }
    Ok(())
}

/// The state, with progress while backing up.
fn snapshot_state(s: &Snapshot) -> String {
    if s.state == SnapshotState::BackingUp && s.progress_total > 0 {
        format!(
            "{} {:.0}%",
            s.state,
            100.0 * s.progress_done as f64 / s.progress_total as f64
        )
    } else {
        s.state.to_string()
    }
}

fn show_snapshot(ctx: &Ctx, s: &Snapshot) {
    if ctx.json {
        return print_json(s);
    }
    let opt_size = |v: Option<u64>| v.map(size).unwrap_or_else(|| "-".into());
    let mut pairs = vec![
        ("id", s.id.to_string()),
        ("name", s.name.clone()),
        ("volume", format!("{} ({})", s.volume, s.volume_id)),
        ("zone", s.zone.clone()),
        ("state", snapshot_state(s)),
        ("size", size(s.size_bytes)),
        ("written", opt_size(s.written_bytes)),
        ("stored", opt_size(s.stored_bytes)),
        ("new", opt_size(s.new_bytes)),
        ("read", opt_size(s.read_bytes)),
        (
            "chunks",
            s.chunk_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "dedup",
            s.dedup_ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "base",
            s.base_id
                .map(|b| format!("{b} (incremental)"))
                .unwrap_or_else(|| "none (full)".into()),
        ),
        ("consistency", s.consistency.clone()),
        ("created", time(&s.created_at)),
        (
            "completed",
            s.completed_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "verified",
            s.verified_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &s.error {
        pairs.push(("error", e.clone()));
    }
    out!("{}", fields(&pairs));
}

fn template_path(t: &str) -> String {
    format!("/api/v1/templates/{}", segment(t))
}

fn template(ctx: &Ctx, cmd: TemplateCmd) -> Result<()> {
    let c = &ctx.client;
    let shown: Template = match cmd {
        TemplateCmd::Create {
            name,
            from_snapshot,
        } => c.post(
            "/api/v1/templates",
            &CreateTemplate {
                name,
                snapshot: from_snapshot,
            },
        )?,
        TemplateCmd::List => {
            let list: Vec<Template> = c.get("/api/v1/templates")?;
            print_list(
                ctx,
                &list,
                &["NAME", "SIZE", "CHUNKS", "FROM", "CREATED", "ID"],
                |t| {
                    vec![
                        t.name.clone(),
                        size(t.size_bytes),
                        t.chunk_count.to_string(),
                        t.source_snapshot.clone(),
                        time(&t.created_at),
                        t.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        TemplateCmd::Show { template } => c.get(&template_path(&template))?,
        TemplateCmd::Import {
            name,
            file,
            on_server,
        } => {
            let mut files = Files::new(ctx, on_server);
            let (upload, file) = files.bring(Some(file))?;
            let job = c.start_job(
                "/api/v1/templates/import",
                &ImportTemplate { name, upload, file },
            )?;
            let id = job.target_id;
            let shown = follow(ctx, job)?;
            drop(files);
            if !shown {
                return Ok(());
            }
            c.get(&template_path(&id.to_string()))?
        }
        TemplateCmd::Delete { template } => {
            if follow(ctx, c.delete_job(&template_path(&template))?)? && !ctx.json {
                outln!("deleted");
            }
            return Ok(());
        }
    };
    if ctx.json {
        print_json(&shown);
    } else {
        out!(
            "{}",
            fields(&[
                ("id", shown.id.to_string()),
                ("name", shown.name.clone()),
                ("size", size(shown.size_bytes)),
                ("chunks", shown.chunk_count.to_string()),
                (
                    "from",
                    match shown.source_snapshot_id {
                        Some(_) => format!("snapshot {}", shown.source_snapshot),
                        None if shown.source_snapshot.starts_with("image:")
                            || shown.source_snapshot.starts_with("upload:") =>
                        {
                            shown.source_snapshot.clone()
                        }
                        None => format!("snapshot {} (deleted since)", shown.source_snapshot),
                    }
                ),
                ("created", time(&shown.created_at)),
            ])
        );
    }
    Ok(())
}
