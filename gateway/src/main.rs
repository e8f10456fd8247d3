//! `edge-gateway`: the daemon's command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "edge-gateway",
    version,
    about = "Industrial edge gateway: PLC → shared ring → MQTT, with a spool that loses nothing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the packaged configuration lives.
const DEFAULT_CONFIG: &str = "/etc/edge-gateway/gateway.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration and print the resolved plan (exit 78 if invalid).
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Inspect the spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Run the whole pipeline on a built-in default: Modbus simulator, adapter processes,
    /// rings, forwarder, spool, an embedded MQTT broker and a subscriber that checks every
    /// record.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Kill the broker for this many seconds mid-run, to show spooling and replay.
        #[arg(long, default_value_t = 0)]
        outage: u64,
    },
    /// (internal) Run one source's adapter; started by the gateway with its ring.
    #[command(hide = true)]
    Adapter {
        /// Source name.
        #[arg(long)]
        source: String,
    },
    /// (internal) The demo's MQTT broker with its checking subscriber.
    #[command(hide = true)]
    DemoBroker {
        /// Port to listen on (loopback).
        #[arg(long)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum SpoolCommand {
    /// Depth, age of the oldest record, and size on disk (read-only).
    Stats {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::DemoBroker { .. });
    // The demo broker is rumqttd, whose own connection logs would drown the demo's output.
    if matches!(cli.command, Command::Adapter { .. }) {
        edgegw::logging::init_adapter("info");
    } else {
        edgegw::logging::init(if quiet { "off" } else { "info" });
    }
    let result = match cli.command {
        Command::Run { config } => edgegw::cli::run(&config),
        Command::Check { config } => edgegw::cli::check(&config),
        Command::Spool {
            command: SpoolCommand::Stats { config },
        } => edgegw::cli::spool_stats(&config),
        Command::Demo { seconds, outage } => edgegw::demo::main(seconds, outage),
        Command::Adapter { source } => edgegw::adapter::main(&source),
        Command::DemoBroker { port } => edgegw::demo::broker_main(port),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Configuration errors already name the file, line, column and key; sink setup
            // errors the file, the key and the file it names; a CPU latency request that
            // cannot be held the file, the key and the device. All exit 78 (EX_CONFIG).
            if let Some(config_error) = e.downcast_ref::<edgegw::config::ConfigError>() {
                eprintln!("{config_error}");
                ExitCode::from(config_error.exit_code())
            } else if let Some((setup, code)) = edgegw::cli::setup_error(&e) {
                eprintln!("edge-gateway: {setup}");
                ExitCode::from(code)
            } else {
                eprintln!("edge-gateway: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
