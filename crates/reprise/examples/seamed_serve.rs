//! `reprise serve` with test seams, for the tests that kill the daemon's
//! process in the middle of an operation (`tests/crash.rs`):
//!
//! `seamed_serve CONFIG CHUNK_PAUSE_MS HOLD_FROZEN_MS SWEEP_PAUSE_MS`
//!
//! The seams are not settable from a config file, so the product binary
//! cannot be told to pause; this example is built by `cargo test` and
//! found by `reprise_testing::serve_seamed_process`.

use reprise_daemon::config::Config;
use reprise_daemon::Seams;
use std::time::Duration;

fn main() {
    reprise_daemon::quiesce::guard_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let [_, config, chunk_pause, hold_frozen, sweep_pause] = &args[..] else {
        eprintln!("usage: seamed_serve CONFIG CHUNK_PAUSE_MS HOLD_FROZEN_MS SWEEP_PAUSE_MS");
        std::process::exit(2);
    };
    let ms = |v: &str| Duration::from_millis(v.parse().expect("milliseconds"));
    let seams = Seams {
        chunk_pause: ms(chunk_pause),
        hold_frozen: ms(hold_frozen),
        sweep_pause: ms(sweep_pause),
    };
    let config = Config::load(std::path::Path::new(config)).expect("config");
    reprise_daemon::init_logging(config.log_format);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = rt.block_on(reprise_daemon::run_with_seams(config, seams)) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
