//! The reprise daemon.
//!
//! A request flows: [`http`] (route, authenticate, parse) → [`ops`] (check
//! everything, then act) → [`reprise_catalog`] for what is known and
//! [`vm`]/[`reprise_qemu`] for the host; long operations are handed to
//! [`jobs`] and the request answers at once with the job.
//!
//! [`start`] prepares the data directory (locked, so one daemon owns it),
//! the catalog, the admin account and key, the default zone and the region
//! store, reconciles the catalog with the host ([`reconcile`]), then
//! serves. Stopping the daemon leaves every VM running.

pub mod agents;
pub mod app;
pub mod binding;
pub mod catalog_backup;
pub mod cloudstack;
pub mod config;
pub mod deferred;
pub mod edge;
pub mod forward;
pub mod gc;
pub mod hosts;
pub mod http;
pub mod import;
pub mod jobs;
pub mod metrics;
pub mod once;
pub mod openapi;
pub mod ops;
pub mod quiesce;
pub mod reconcile;
pub mod schedules;
pub mod vm;

use app::App;
pub use app::Seams;
use config::{Config, LogFormat};
use reprise_catalog::Catalog;
use reprise_core::{Error, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running daemon.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Background work that ends with the server: the reconciler, the
    /// garbage collector, the operator's metrics listener.
    background: Vec<JoinHandle<()>>,
    _lock: std::fs::File,
}

impl Server {
    /// Stop serving (VMs keep running) and wait until the port is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        for task in &mut self.background {
            task.abort();
            let _ = task.await;
        }
        // Jobs still running lose the catalog; a daemon started next on it
        // (a restart) finds it free.
        self.app.catalog.close();
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPRISE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub(crate) fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::unavailable("data_dir_unavailable", format!("{what}: {e}")).with_source(e)
}

/// Take the data directory for this daemon alone.
fn lock_data_dir(config: &Config) -> Result<std::fs::File> {
    let path = config.data_dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            Error::conflict(
                "data_dir_locked",
                format!(
                    "another reprise daemon is using {}: stop it first",
                    config.data_dir.display()
                ),
            )
        },
    )?;
    Ok(file)
}

/// Write a secret to a file its owner alone can read, atomically (a crash
/// leaves the old file or the whole new one).
pub(crate) fn write_private(path: &std::path::Path, secret: &str) -> Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(format!("cannot write {}", tmp.display())))?;
    writeln!(f, "{secret}")
        .and_then(|_| f.sync_all())
        .map_err(io_err(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("cannot write {}", path.display())))?;
    reprise_qemu::img::sync_file_and_dir(path)
}

/// Create the admin account at first start and write its key, readable by
/// its owner only.
fn ensure_admin(config: &Config, catalog: &Catalog) -> Result<()> {
    if catalog.admin_exists()? {
        return Ok(());
    }
    let made = catalog.create_account("admin", true)?;
    let path = config.admin_key_path();
    write_private(&path, &made.api_key)?;
    tracing::info!(
        path = %path.display(),
        "first start: admin account created; its API key is in this file, readable by its owner only"
    );
    Ok(())
}

/// Write the config's plans to the catalog (the config wins over a plan of
/// the same name changed through the API), then check the default plan.
fn apply_plans(config: &Config, catalog: &Catalog) -> Result<()> {
    for (name, limits) in &config.plans {
        catalog.put_plan(&reprise_core::plan::Plan {
            name: name.clone(),
            limits: limits.clone(),
        })?;
    }
    if let Some(p) = &config.default_plan {
        catalog.plan(p).map_err(|e| {
            Error::invalid("config_invalid", format!("default_plan: {}", e.message)).with_source(e)
        })?;
    }
    Ok(())
}

fn ensure_default_zone(app: &App) -> Result<()> {
    let admin = app
        .catalog
        .list_accounts()?
        .into_iter()
        .find(|a| a.admin)
        .ok_or_else(|| Error::internal("no admin account"))?;
    if app.catalog.zone(&app.config.default_zone).is_err() {
        ops::accounts::create_zone(
            app,
            &admin,
            reprise_core::model::CreateZone {
                name: app.config.default_zone.clone(),
                storage_dir: Some(app.config.default_zone_dir().to_string_lossy().into_owned()),
            },
        )?;
    }
    Ok(())
}

/// The region's secret: read from its key file, or made (0600) at first
/// start when the file does not exist.
fn region_secret(config: &Config) -> Result<[u8; 32]> {
    let path = config.region_key_path();
    let parse = |text: &str| -> Option<[u8; 32]> { hex::decode(text.trim()).ok()?.try_into().ok() };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).ok_or_else(|| {
            Error::invalid(
                "config_invalid",
                format!(
                    "the region key file {} must hold 64 hex digits",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            write_private(&path, &hex::encode(secret))?;
            tracing::info!(path = %path.display(), "region key created: keep a copy apart from the store (`reprise region key export` prints it); no snapshot can be read without it");
            Ok(secret)
        }
        Err(e) => Err(io_err(format!("cannot read {}", path.display()))(e)),
    }
}

/// How to reach the region's object store, and its key.
fn region_spec(config: &Config) -> Result<app::RegionSpec> {
    let secret = region_secret(config)?;
    let store = match &config.region.s3 {
        Some(s3) if config.region.store == "s3" => reprise_store::Store::s3(s3)?,
        _ => reprise_store::Store::local(&config.region_store_dir())?,
    };
    let store = match config.region.prefix.as_deref() {
        Some(p) if !p.is_empty() => store.with_prefix(p)?,
        _ => store,
    };
    Ok(app::RegionSpec {
        store,
        secret,
        encrypt: config.region.encrypt,
    })
}

/// Prepare everything and start serving on `config.listen`.
pub async fn start(config: Config) -> Result<Server> {
    start_with_seams(config, Seams::default()).await
}

/// [`start`], with tests' pauses (see [`Seams`]).
pub async fn start_with_seams(config: Config, seams: Seams) -> Result<Server> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(format!(
        "cannot create {}",
        config.data_dir.display()
    )))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
        io_err(format!("cannot restrict {}", config.data_dir.display())),
    )?;
    let lock = lock_data_dir(&config)?;
    edge::raise_open_files_limit();
    let catalog = match &config.catalog.url {
        Some(url) => Catalog::connect(url, &config.host.name)?,
        None => Catalog::open(&config.catalog_path())?.with_host(&config.host.name),
    };
    // Before anything else that can fail (a wrong region key, a bad plan).
    quiesce::thaw_frozen_guests(&config, &catalog).await;
    apply_plans(&config, &catalog)?;
    ensure_admin(&config, &catalog)?;
    let spec = region_spec(&config)?;
    let app = App::new(config, catalog, spec, seams)?;
    // A wrong key or setting stops the daemon here; an unreachable store
    // does not: it is opened again when a snapshot needs it.
    match app.region().await {
        Ok(_) => {}
        Err(e) if e.kind == reprise_core::ErrorKind::Unavailable => {
            tracing::warn!("the region store is unreachable ({e}); snapshots wait for it, everything else runs")
        }
        Err(e) => return Err(e),
    }
    ensure_default_zone(&app)?;

    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| {
            Error::unavailable(
                "listen_failed",
                format!("cannot listen on {}: {e}", app.config.listen),
            )
            .with_source(e)
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("the listener's address: {e}")).with_source(e))?;
    hosts::register(&app, addr)?;
    reconcile::at_startup(&app).await?;
    // Tests and scripts that listen on port 0 learn the port here.
    let _ = std::fs::write(app.config.data_dir.join("daemon.addr"), addr.to_string());
    tracing::info!(
        %addr,
        data_dir = %app.config.data_dir.display(),
        console = %format!("http://{addr}/"),
        "reprise is listening"
    );

    let mut background = vec![
        tokio::spawn(reconcile::watch(app.clone())),
        tokio::spawn(gc::run_when_asked(app.clone())),
        tokio::spawn(ops::deletes::purge_when_due(app.clone())),
        tokio::spawn(hosts::heartbeat(app.clone())),
        tokio::spawn(schedules::run(app.clone())),
        // Once the server below accepts: it sends them to itself.
        tokio::spawn(deferred::run_kept(app.clone())),
    ];
    if let Some(addr) = app.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::unavailable(
                "listen_failed",
                format!("cannot listen for metrics on {addr}: {e}"),
            )
            .with_source(e)
        })?;
        tracing::info!(%addr, "metrics served here without a key");
        let router = http::metrics_router(app.clone());
        let limits = app.config.http.clone();
        background.push(tokio::spawn(edge::serve(
            listener,
            router,
            limits,
            std::future::pending(),
        )));
    }

    let (tx, rx) = oneshot::channel::<()>();
    let router = http::router(app.clone());
    let limits = app.config.http.clone();
    let task = tokio::spawn(async move {
        edge::serve(listener, router, limits, async move {
            let _ = rx.await;
        })
        .await;
    });
    Ok(Server {
        addr,
        app,
        shutdown: Some(tx),
        task,
        background,
        _lock: lock,
    })
}

/// Serve until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    run_with_seams(config, Seams::default()).await
}

/// [`run`], with tests' pauses (see [`Seams`]).
pub async fn run_with_seams(config: Config, seams: Seams) -> Result<()> {
    let server = start_with_seams(config, seams).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::internal(format!("cannot watch SIGTERM: {e}")).with_source(e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stopping; instances keep running");
    server.stop().await;
    Ok(())
}
