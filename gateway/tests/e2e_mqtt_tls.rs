//! End to end: MQTT over mutual TLS configured in the TOML file. `edge-gateway run` talks to
//! a real mosquitto that requires client certificates, all made by openssl; a subscriber over
//! TLS checks every record and the retained status. And the files `[mqtt]` names, when they
//! cannot be used, stop `run` before anything starts, with exit status 78 and a line naming
//! the configuration file, the key and the file.

#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gateway::{BIN, GatewayProcess, Seen, collect_until, collect_until_quiet};
use mosquitto::{BrokerOptions, Mosquitto, Subscriber, SubscriberOptions, TestPki};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The subscriber's side of the PKI: trusts the test CA, presents the client certificate.
fn subscriber_tls(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.client_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.client_key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    Arc::new(config)
}

/// A gateway configuration with one synthetic source and `mqtt_extra` appended to `[mqtt]`.
fn write_config(dir: &Path, port: u16, mqtt_extra: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
name = "tls-gw"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {port}
{mqtt_extra}

[[synthetic]]
name = "sim"
group = "signals"
tags = [
  {{ name = "a", signal = "counter", rate_hz = 500.0 }},
  {{ name = "b", signal = "sine", rate_hz = 500.0 }},
]
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_mutual_tls_configured_in_toml_delivers_every_record() {
    let dir = tempfile::tempdir().unwrap();
    // The certificates sit beside the configuration and are named relative to it.
    let pki = TestPki::generate(&{
        let p = dir.path().join("pki");
        std::fs::create_dir(&p).unwrap();
        p
    });
    let broker = Mosquitto::start(&BrokerOptions {
        tls: Some(pki.broker(true)),
        ..BrokerOptions::default()
    });
    let mut sub = Subscriber::start(
        broker.port,
        "edge-gateway/#",
        SubscriberOptions {
            tls: Some(subscriber_tls(&pki)),
            ..SubscriberOptions::default()
        },
    );
    sub.wait_subscribed(0, Duration::from_secs(10)).await;

    let config = write_config(
        dir.path(),
        broker.port,
        "[mqtt.tls]\nca_file = \"pki/ca.pem\"\ncert_file = \"pki/client.pem\"\nkey_file = \"pki/client.key\"\n",
    );
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut gw = GatewayProcess::start(&config, &dir.path().join("gateway.log"));
    let mut seen = Seen::default();
    collect_until(
        &mut sub.rx,
        &mut seen,
        "telemetry over mutual TLS",
        Duration::from_secs(30),
        |s| s.distinct("sim") >= 3_000 && !s.status.is_empty(),
    )
    .await;
    let status = tokio::task::block_in_place(|| gw.sigterm_and_wait(Duration::from_secs(15)));
    assert!(status.success(), "gateway exit {status}:\n{}", gw.log());
    collect_until_quiet(
        &mut sub.rx,
        &mut seen,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;

    let statuses: Vec<&str> = seen.status.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"online"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"offline"), "{statuses:?}");
    let epochs = seen.epochs("sim");
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    let missing = seen.missing("sim", epochs[0]);
    assert!(missing.is_empty(), "{} seqs missing", missing.len());
    let log = gw.log();
    assert!(
        log.contains("connected to the MQTT broker"),
        "the sink connected:\n{log}"
    );
    assert!(
        !log.contains("TLS failed"),
        "no TLS failure on the way:\n{log}"
    );
}

/// `run` with `mqtt_extra`: must exit 78 at once with one line naming the configuration
/// file, `key` and `file`, and start no adapter.
fn run_refuses(dir: &Path, mqtt_extra: &str, key: &str, file: &str) {
    // No broker is needed: the files are read before anything connects.
    let config = write_config(dir, 1, mqtt_extra);
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{key}: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no line names {key}: {stderr}"));
    assert!(
        line.contains(&config.display().to_string()),
        "the configuration file is named: {line}"
    );
    assert!(line.contains(file), "the file {file} is named: {line}");
    assert!(
        !stderr.contains("adapter"),
        "nothing started before the refusal: {stderr}"
    );
}

#[test]
fn unusable_tls_or_password_files_exit_78_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let pki_dir = dir.path().display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let empty = dir.path().join("empty-password");
    std::fs::write(&empty, "").unwrap();

    run_refuses(
        dir.path(),
        "[mqtt.tls]\nca_file = \"missing-ca.pem\"\n",
        "mqtt.tls.ca_file",
        &format!("{pki_dir}/missing-ca.pem"),
    );
    run_refuses(
        dir.path(),
        "[mqtt.tls]\nca_file = \"garbage.pem\"\n",
        "mqtt.tls.ca_file",
        "garbage.pem",
    );
    run_refuses(
        dir.path(),
        "[mqtt.tls]\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"missing.key\"\n",
        "mqtt.tls.key_file",
        "missing.key",
    );
    run_refuses(
        dir.path(),
        "[mqtt.tls]\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"garbage.pem\"\n",
        "mqtt.tls.key_file",
        "garbage.pem",
    );
    // A key that is not the certificate's.
    run_refuses(
        dir.path(),
        "[mqtt.tls]\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"server.key\"\n",
        "mqtt.tls.cert_file",
        "server.key",
    );
    run_refuses(
        dir.path(),
        "username = \"gw\"\npassword_file = \"no-such-password\"\n",
        "mqtt.password_file",
        "no-such-password",
    );
    run_refuses(
        dir.path(),
        "username = \"gw\"\npassword_file = \"empty-password\"\n",
        "mqtt.password_file",
        "empty-password",
    );
    drop(pki);
}
