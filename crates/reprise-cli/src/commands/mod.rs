//! The commands, as clap parses them, and what each one does.

//!
//! One module per resource, each with its grammar (a clap subcommand),
//! its handler and its renderer; the daemon is reached through the typed
//! methods of [`reprise_client::Client`].

mod accounts;
mod instances;
mod jobs;
mod points;
mod policies;
mod region;
mod snapshots;
mod templates;
mod uploads;
mod volumes;
mod zones;

use crate::output::{out, outln, table};
use crate::{client_config_path, ClientConfig};
use accounts::{AccountCmd, PlanCmd};
use clap::{Args, Parser, Subcommand};
use instances::InstanceCmd;
use jobs::JobCmd;
use points::PointCmd;
use reprise_client::Client;
use reprise_core::{Error, Result};
use serde::Serialize;
use snapshots::SnapshotCmd;
use std::path::PathBuf;
use templates::TemplateCmd;
use uploads::UploadCmd;
use volumes::VolumeCmd;
use zones::{HostCmd, ZoneCmd};

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
    /// The region's hosts: which are up, their zones, what lives on each.
    #[command(subcommand)]
    Host(HostCmd),
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
    /// Policies: snapshots or recovery points on a schedule, with retention.
    #[command(subcommand)]
    Policy(policies::PolicyCmd),
    /// Remove the chunks no snapshot references from the region's store
    /// (admin; also runs after every snapshot delete).
    Gc,
    /// The region as a whole (admin): rebuild the catalog from its store.
    #[command(subcommand)]
    Region(region::RegionCmd),
    /// The catalog's backups in the region's store (admin).
    #[command(subcommand)]
    Catalog(region::CatalogCmd),
    /// The region's store (admin): what it holds that no catalog knows.
    #[command(subcommand)]
    Store(region::StoreCmd),
    /// Jobs: the long operations.
    #[command(subcommand)]
    Job(JobCmd),
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

pub(super) struct Ctx {
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
        let path = default_data_dir().join("admin.key");
        std::fs::read_to_string(path)
            .ok()
            .map(|k| k.trim().to_string())
    });
    Ok(Client::new(&url, key))
}

/// The daemon's data directory on its embedded defaults, as this user.
pub(super) fn default_data_dir() -> PathBuf {
    reprise_core::defaults::data_dir(
        rustix::process::getuid().is_root(),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
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
        Command::Zone(c) => zones::run(&ctx, c),
        Command::Policy(c) => policies::run(&ctx, c),
        Command::Host(c) => zones::run_host(&ctx, c),
        Command::Account(c) => accounts::account(&ctx, c),
        Command::Plan(c) => accounts::plan(&ctx, c),
        Command::Upload(c) => uploads::run(&ctx, c),
        Command::Volume(c) => volumes::run(&ctx, c),
        Command::Instance(c) => instances::run(&ctx, c),
        Command::Point(c) => points::run(&ctx, c),
        Command::Snapshot(c) => snapshots::run(&ctx, c),
        Command::Template(c) => templates::run(&ctx, c),
        Command::Gc => snapshots::collect_garbage(&ctx),
        Command::Region(c) => region::region(&ctx, c),
        Command::Store(c) => region::store(&ctx, c),
        Command::Catalog(c) => region::catalog(&ctx, c),
        Command::Job(c) => jobs::run(&ctx, c),
    }
}

pub(super) fn print_json<T: Serialize>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Print a list as JSON or as a table.
pub(super) fn print_list<T: Serialize>(
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
