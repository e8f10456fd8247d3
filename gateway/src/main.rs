//! `edge-gateway`: the daemon's command line.
#![forbid(unsafe_code)]

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

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::DemoBroker { .. });
    // The demo broker is rumqttd, whose own connection logs would drown the demo's output.
    edgegw::logging::init(if quiet { "off" } else { "info" });
    let result = match cli.command {
        Command::Demo { seconds, outage } => edgegw::demo::main(seconds, outage),
        Command::Adapter { source } => edgegw::adapter::main(&source),
        Command::DemoBroker { port } => edgegw::demo::broker_main(port),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
