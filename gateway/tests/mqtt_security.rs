//! TLS, mutual TLS and passwords against a real mosquitto, with certificates made by openssl;
//! and the setup errors that name the file at fault.

#[path = "common/mosquitto.rs"]
mod mosquitto;

use std::time::Duration;

use edgegw::forward::dispatch::{BatchId, BatchSink, SinkEvent};
use edgegw::sinks::mqtt::{
    BrokerConnectionError, MqttConfig, MqttSetupError, MqttSink, MqttTlsConfig,
};
use mosquitto::{BrokerOptions, Mosquitto, TestPki};
use tokio::time::timeout;

fn config(port: u16) -> MqttConfig {
    let mut c = MqttConfig::new("127.0.0.1");
    c.port = Some(port);
    c.keepalive_s = 5;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 200;
    c
}

/// Connects, sends one batch and waits for its PUBACK.
async fn connect_and_deliver(sink: &mut MqttSink) {
    timeout(Duration::from_secs(10), async {
        while sink.next_event().await != SinkEvent::Connected {}
        sink.send(BatchId(1), "t/secure", b"hello".to_vec())
            .unwrap();
        assert_eq!(sink.next_event().await, SinkEvent::Acked(BatchId(1)));
    })
    .await
    .unwrap_or_else(|_| panic!("no delivery within 10 s: {:?}", sink.last_error()));
}

/// Runs the sink for `for_how_long`, asserting that it never connects; returns why.
async fn never_connects(sink: &mut MqttSink, for_how_long: Duration) -> BrokerConnectionError {
    let r = timeout(for_how_long, sink.next_event()).await;
    assert!(r.is_err(), "expected no event, got {r:?}");
    assert!(!sink.is_connected());
    assert!(sink.counters().snapshot().connect_failures >= 1);
    sink.last_error().cloned().expect("the failure is reported")
}

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    (dir, pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_and_delivers() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&BrokerOptions {
        tls: Some(pki.broker(true)),
        ..BrokerOptions::default()
    });
    let mut cfg = config(broker.port);
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    });
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    connect_and_deliver(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_connects_and_delivers() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&BrokerOptions {
        tls: Some(pki.broker(false)),
        ..BrokerOptions::default()
    });
    let mut cfg = config(broker.port);
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(pki.ca.clone()),
        ..MqttTlsConfig::default()
    });
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    connect_and_deliver(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_a_clear_error() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&BrokerOptions {
        tls: Some(pki.broker(true)),
        ..BrokerOptions::default()
    });
    let mut cfg = config(broker.port);
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(pki.other_ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    });
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    let e = never_connects(&mut sink, Duration::from_secs(2)).await;
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, BrokerConnectionError::Tls { .. }), "{e:?}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains("not signed by a CA in mqtt.tls.ca_file"),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{}", broker.port)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_client_certificate_fails_with_a_clear_error() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&BrokerOptions {
        tls: Some(pki.broker(true)),
        ..BrokerOptions::default()
    });
    let mut cfg = config(broker.port);
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(pki.ca.clone()),
        ..MqttTlsConfig::default()
    });
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    let e = never_connects(&mut sink, Duration::from_secs(2)).await;
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, BrokerConnectionError::Tls { .. }), "{e:?}");
    assert!(text.contains("rejected the client certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_file_work_and_the_password_never_prints() {
    const PASSWORD: &str = "s3cret-Pa55word";
    let broker = Mosquitto::start(&BrokerOptions {
        users: vec![("gw".into(), PASSWORD.into())],
        ..BrokerOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mqtt-password");
    // As systemd's LoadCredential= or an editor leaves it: with a line end.
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut cfg = config(broker.port);
    cfg.username = Some("gw".into());
    cfg.password_file = Some(file.clone());
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    connect_and_deliver(&mut sink).await;
    for shown in [
        format!("{sink:?}"),
        format!("{sink:#?}"),
        format!("{cfg:?}"),
    ] {
        assert!(!shown.contains(PASSWORD), "password shown: {shown}");
    }

    // A wrong password: refused, with what to check, and still never printed.
    std::fs::write(&file, "wrong-password\n").unwrap();
    let mut sink = MqttSink::new(&cfg, "test").unwrap();
    let e = never_connects(&mut sink, Duration::from_secs(2)).await;
    assert!(matches!(e, BrokerConnectionError::Refused { .. }), "{e:?}");
    let text = e.to_string();
    // mosquitto refuses a wrong password as "not authorized".
    assert!(text.contains("not authorized"), "{text}");
    assert!(text.contains("mqtt.password_file"), "{text}");
    for shown in [text, format!("{e:?}"), format!("{sink:?}")] {
        assert!(!shown.contains("wrong-password"), "password shown: {shown}");
    }
}

#[test]
fn setup_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");

    let mut cfg = config(8883);
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(missing.clone()),
        ..MqttTlsConfig::default()
    });
    let e = MqttSink::new(&cfg, "gw").unwrap_err();
    assert!(matches!(e, MqttSetupError::ReadFile { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("mqtt.tls.ca_file: cannot read "), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");

    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    cfg.tls.as_mut().unwrap().ca_file = Some(not_pem.clone());
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(text.starts_with("mqtt.tls.ca_file: "), "{text}");
    assert!(text.contains("no certificate"), "{text}");

    let (_pki_dir, pki) = pki();
    cfg.tls = Some(MqttTlsConfig {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_cert.clone()),
    });
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(text.starts_with("mqtt.tls.key_file: "), "{text}");
    assert!(text.contains("no usable private key"), "{text}");

    cfg.tls.as_mut().unwrap().key_file = Some(pki.server_key.clone());
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(text.starts_with("mqtt.tls.cert_file "), "{text}");

    let mut cfg = config(1883);
    cfg.username = Some("gw".into());
    cfg.password_file = Some(missing.clone());
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(
        text.starts_with("mqtt.password_file: cannot read "),
        "{text}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    cfg.password_file = Some(empty);
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(text.contains("is empty"), "{text}");

    let mut cfg = config(1883);
    cfg.qos = 2;
    cfg.inflight = 0;
    let text = MqttSink::new(&cfg, "gw").unwrap_err().to_string();
    assert!(text.contains("mqtt.qos: must be 0 or 1, got 2"), "{text}");
    assert!(text.contains("mqtt.inflight: "), "{text}");
}
