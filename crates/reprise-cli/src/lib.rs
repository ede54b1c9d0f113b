//! The `reprise` command. `reprise serve` runs the daemon; every other
//! command is a client of its HTTP API. Output is a table for people and
//! JSON with `--json`; errors go to stderr with a non-zero exit; long
//! operations wait on their job with a progress bar unless `--no-wait`.

mod commands;
mod output;

pub use commands::ServeArgs;
pub use reprise_client::Client;

use clap::Parser;
use std::path::PathBuf;

/// Exit code of a command that failed.
pub const EXIT_ERROR: i32 = 1;

/// Parse the command line and run it; `serve` runs the daemon (the binary
/// links it, the CLI does not). Returns the exit code.
pub fn main(serve: impl FnOnce(ServeArgs) -> reprise_core::Result<()>) -> i32 {
    let cli = commands::Cli::parse();
    match commands::run(cli, serve) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {} [{}]", e.message, e.code);
            EXIT_ERROR
        }
    }
}

/// Where the client finds the daemon and its key, in order: flags and
/// environment (`--url`/`REPRISE_URL`, `--api-key`/`REPRISE_API_KEY`), the
/// client config file (`~/.config/reprise/client.toml`: `url`, `api_key`),
/// and last the admin key of a daemon on this host with the default data
/// directory, when readable.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

pub fn client_config_path() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d).join("reprise/client.toml")),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/reprise/client.toml")),
    }
}
