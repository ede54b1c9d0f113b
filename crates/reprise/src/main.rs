//! The `reprise` binary: the CLI, and `reprise serve`, the daemon. The only
//! place that links both.

use reprise_cli::ServeArgs;
use reprise_core::{Error, Result};
use reprise_daemon::config::Config;

fn main() {
    // A freeze's guard runs as this binary (see reprise_daemon::quiesce).
    reprise_daemon::quiesce::guard_if_asked();
    std::process::exit(reprise_cli::main(serve));
}

/// `reprise serve`: the config (or the defaults), overridden by the flags.
fn serve(args: ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = std::path::absolute(d).unwrap_or_else(|_| d.clone());
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    reprise_daemon::init_logging(config.log_format);
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")).with_source(e))?;
    rt.block_on(reprise_daemon::run(config))
}
