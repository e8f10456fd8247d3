//! `edge-gateway run` stopped by SIGTERM the moment its first adapter process exists, before
//! the gateway is ready: a clean stop (exit 0, the stop logged and the summary written), never
//! the signal's default action. systemd sends SIGTERM whenever `systemctl stop` comes, starting
//! or not.

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::time::{Duration, Instant};

use gateway::{GatewayProcess, adapter_children};
use mosquitto::{BrokerOptions, Mosquitto};

/// Rounds, each a fresh gateway.
const ROUNDS: usize = 3;
/// Sources, so adapters: the gateway starts them one after another, so the signal comes while
/// it is still starting the rest, before it is ready.
const SOURCES: usize = 16;

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let mut text = format!(
        "[gateway]\nname = \"stop-early\"\nstate_dir = \"{}\"\nshutdown_timeout_ms = 4000\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n",
        dir.join("state").display()
    );
    for i in 0..SOURCES {
        text.push_str(&format!(
            "\n[[synthetic]]\nname = \"sim{i}\"\ngroup = \"signals\"\n\
             tags = [{{ name = \"a\", signal = \"counter\", rate_hz = 100.0 }}]\n"
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigterm_as_the_first_adapter_starts_is_a_clean_stop() {
    let broker = Mosquitto::start(&BrokerOptions::default());
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), broker.port);
        let log = dir.path().join("gateway.log");
        let mut gw = GatewayProcess::start(&config, &log);

        // As soon as the adapter child shows in /proc (polled every millisecond).
        let start = Instant::now();
        while adapter_children(gw.pid()).is_empty() {
            gw.assert_running();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {round}: no adapter within 20 s:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = adapter_children(gw.pid()).len();
        let status = gw.sigterm_and_wait(Duration::from_secs(15));
        let text = gw.log();
        assert!(
            status.success(),
            "round {round}: SIGTERM with {started} of {SOURCES} adapters started ended the gateway \
             with {status}:\n{text}"
        );
        assert!(
            text.contains("SIGTERM") && text.contains("stopped"),
            "round {round}: the stop and the summary are logged:\n{text}"
        );
    }
}
