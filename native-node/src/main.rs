//! The `infermesh` binary: parses the command line and runs the node.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use infermesh_node::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    infermesh_node::executor::one_core_per_task();
    let cli = Cli::parse();
    // A headless node logs what it does; at the prompt only problems are
    // shown, so they do not drown the conversation. RUST_LOG overrides.
    // The WebRTC stack (webrtc-rs) warns about routine things, such as the
    // TLS extensions every Chromium offers in its DTLS handshake.
    let default = match cli.command {
        Command::Node { .. } => {
            "info,webrtc=error,webrtc_ice=error,webrtc_sctp=error,dtls=error,webrtc_mdns=error"
        }
        _ => "warn,webrtc=error,webrtc_ice=error,webrtc_sctp=error,dtls=error,webrtc_mdns=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)))
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(infermesh_node::run(cli));
    // Reading stdin happens on a blocking thread that cannot be interrupted;
    // do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
