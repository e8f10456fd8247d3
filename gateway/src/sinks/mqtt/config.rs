//! `[mqtt]`: the broker and how to talk to it.
//!
//! Stage one of the configuration: serde structs with `deny_unknown_fields`, defaults as
//! `const fn`, and [`MqttConfig::problems`], a validation that names key paths and does no I/O
//! (it opens no file and resolves no name). Stage two is [`MqttSink::new`], which reads the
//! TLS and password files and builds the running sink.
//!
//! [`MqttSink::new`]: super::MqttSink::new

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[mqtt]`: the broker and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or IP address (no lookup at validation).
    pub host: String,
    /// Broker port; default 1883, or 8883 with `[mqtt.tls]`.
    pub port: Option<u16>,
    /// MQTT client id; default the gateway's name.
    pub client_id: Option<String>,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// File holding the password: its first line, without the line end. Read once when the sink
    /// is built (so systemd `LoadCredential=` works); the password is never logged and never
    /// appears in `Debug` output.
    pub password_file: Option<PathBuf>,
    /// QoS of telemetry batches: 0 or 1; default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Keepalive in seconds, 5..=65535; default 15. A dead connection is noticed within about
    /// twice this (a PINGREQ unanswered until the next one is due).
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// Batches in flight (sent, not yet acknowledged) at most; default 64.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Retained status topic: `online` after every CONNACK, `offline` as the last will and on a
    /// clean shutdown. Default `edge-gateway/<gateway name>/status`.
    pub status_topic: Option<String>,
    /// First reconnect delay, ms; default 100. Doubles after every failed attempt.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Largest reconnect delay, ms; default 30000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Largest MQTT packet, bytes, in either direction; default 1 MiB. A batch that would not
    /// fit is refused by the sink.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// TLS; absent = plain TCP.
    pub tls: Option<MqttTlsConfig>,
}

/// `[mqtt.tls]`: TLS, and mutual TLS when a client certificate is given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA(s) that sign the broker's certificate; default the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (PKCS#8, PKCS#1 or SEC1); needs `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Default QoS: 1 (at least once).
pub const fn default_qos() -> u8 {
    1
}

/// Default keepalive: 15 s.
pub const fn default_keepalive_s() -> u64 {
    15
}

/// Default in-flight window: 64 batches.
pub const fn default_inflight() -> u16 {
    64
}

/// Largest in-flight window: rumqttc's own limit (`u16`) less the two status messages that may
/// be in flight besides the batches.
pub const MAX_INFLIGHT: u16 = u16::MAX - 2;

/// Default first reconnect delay: 100 ms.
pub const fn default_backoff_min_ms() -> u64 {
    100
}

/// Default largest reconnect delay: 30 s.
pub const fn default_backoff_max_ms() -> u64 {
    30_000
}

/// Default largest packet: 1 MiB.
pub const fn default_max_packet_size() -> usize {
    1024 * 1024
}

/// Largest packet MQTT 3.1.1 can express (remaining length 268,435,455 plus the fixed header).
pub const MAX_PACKET_SIZE: usize = 268_435_460;

/// Default port without TLS.
pub const fn default_port() -> u16 {
    1883
}

/// Default port with TLS.
pub const fn default_tls_port() -> u16 {
    8883
}

impl MqttConfig {
    /// A configuration for `host` with every default.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            client_id: None,
            username: None,
            password_file: None,
            qos: default_qos(),
            keepalive_s: default_keepalive_s(),
            inflight: default_inflight(),
            status_topic: None,
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_packet_size: default_max_packet_size(),
            tls: None,
        }
    }

    /// The port to connect to: as configured, else 1883 (8883 with TLS).
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.tls.is_some() {
            default_tls_port()
        } else {
            default_port()
        })
    }

    /// The client id: as configured, else the gateway's name.
    pub fn effective_client_id<'a>(&'a self, gateway_name: &'a str) -> &'a str {
        self.client_id.as_deref().unwrap_or(gateway_name)
    }

    /// The status topic: as configured, else `edge-gateway/<gateway name>/status`.
    pub fn effective_status_topic(&self, gateway_name: &str) -> String {
        self.status_topic
            .clone()
            .unwrap_or_else(|| format!("edge-gateway/{gateway_name}/status"))
    }

    /// Keepalive as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_s)
    }

    /// Problems as `(key path, message)`, each path under `path` (e.g. `mqtt`); empty when
    /// valid. No I/O: files are only named here, and read by [`super::MqttSink::new`].
    pub fn problems(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |key: &str, msg: String| out.push((format!("{path}.{key}"), msg));
        if let Some(why) = host_problem(&self.host) {
            add("host", why);
        }
        if self.port == Some(0) {
            add("port", "must be 1..=65535".into());
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() {
                add("client_id", "must not be empty".into());
            } else if id.len() > usize::from(u16::MAX) {
                add("client_id", "must be at most 65535 bytes".into());
            }
        }
        match (&self.username, &self.password_file) {
            (Some(u), _) if u.is_empty() => add("username", "must not be empty".into()),
            (None, Some(_)) => add("password_file", "needs username".into()),
            _ => {}
        }
        if self
            .password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            add("password_file", "must not be empty".into());
        }
        if self.qos > 1 {
            add("qos", format!("must be 0 or 1, got {}", self.qos));
        }
        if !(5..=65535).contains(&self.keepalive_s) {
            add(
                "keepalive_s",
                format!("must be 5..=65535, got {}", self.keepalive_s),
            );
        }
        if !(1..=MAX_INFLIGHT).contains(&self.inflight) {
            add(
                "inflight",
                format!("must be 1..={MAX_INFLIGHT}, got {}", self.inflight),
            );
        }
        if let Some(topic) = &self.status_topic
            && let Some(why) = topic_problem(topic)
        {
            add("status_topic", why);
        }
        if self.backoff_min_ms == 0 {
            add("backoff_min_ms", "must be > 0".into());
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            add(
                "backoff_max_ms",
                format!(
                    "must be >= backoff_min_ms ({}), got {}",
                    self.backoff_min_ms, self.backoff_max_ms
                ),
            );
        }
        if !(1024..=MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            add(
                "max_packet_size",
                format!(
                    "must be 1024..={MAX_PACKET_SIZE}, got {}",
                    self.max_packet_size
                ),
            );
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [
                ("tls.ca_file", &tls.ca_file),
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    add(key, "must not be empty".into());
                }
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(_), None) => add(
                    "tls.key_file",
                    "needed with cert_file (mutual TLS needs both)".into(),
                ),
                (None, Some(_)) => add(
                    "tls.cert_file",
                    "needed with key_file (mutual TLS needs both)".into(),
                ),
                _ => {}
            }
        }
        out
    }
}

/// Why `host` is not an IP address or a syntactically valid host name, if it is not.
fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("must not be empty".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    if host.contains(':') {
        return Some(format!("{host:?} is neither an IP address nor a host name"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Some(format!(
            "{host:?} is not a valid host name (letters, digits, '-' and '_' in dot-separated labels)"
        ));
    }
    None
}

/// Why `topic` cannot be published to, if it cannot.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        Some("must not be empty".into())
    } else if topic.contains(['+', '#', '\0']) {
        Some(format!(
            "{topic:?} must not contain the wildcards '+' or '#', or NUL"
        ))
    } else if topic.len() > usize::from(u16::MAX) {
        Some("must be at most 65535 bytes".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &MqttConfig) -> Vec<String> {
        c.problems("mqtt").into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn defaults_are_valid_and_filled_in() {
        let c: MqttConfig = toml::from_str("host = \"broker.local\"").unwrap();
        assert_eq!(c, MqttConfig::new("broker.local"));
        assert!(c.problems("mqtt").is_empty());
        assert_eq!(c.effective_port(), 1883);
        assert_eq!(c.effective_client_id("gw1"), "gw1");
        assert_eq!(c.effective_status_topic("gw1"), "edge-gateway/gw1/status");
        let tls: MqttConfig = toml::from_str("host = \"b\"\n[tls]\n").unwrap();
        assert_eq!(tls.effective_port(), 8883);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<MqttConfig>("host = \"b\"\nqso = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field `qso`"), "{e}");
        let e = toml::from_str::<MqttConfig>("host = \"b\"\n[tls]\nca = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `ca`"), "{e}");
    }

    #[test]
    fn every_problem_names_its_key() {
        let mut c = MqttConfig::new("bad host");
        c.port = Some(0);
        c.client_id = Some(String::new());
        c.password_file = Some("pw".into());
        c.qos = 2;
        c.keepalive_s = 1;
        c.inflight = 0;
        c.status_topic = Some("a/#".into());
        c.backoff_min_ms = 500;
        c.backoff_max_ms = 100;
        c.max_packet_size = 10;
        c.tls = Some(MqttTlsConfig {
            cert_file: Some("c.pem".into()),
            ..MqttTlsConfig::default()
        });
        assert_eq!(
            paths(&c),
            [
                "mqtt.host",
                "mqtt.port",
                "mqtt.client_id",
                "mqtt.password_file",
                "mqtt.qos",
                "mqtt.keepalive_s",
                "mqtt.inflight",
                "mqtt.status_topic",
                "mqtt.backoff_max_ms",
                "mqtt.max_packet_size",
                "mqtt.tls.key_file",
            ]
        );
        let msgs: Vec<String> = c.problems("mqtt").into_iter().map(|(_, m)| m).collect();
        assert!(
            msgs.contains(&"must be 0 or 1, got 2".to_owned()),
            "{msgs:?}"
        );
    }

    #[test]
    fn host_names_and_addresses() {
        for ok in [
            "broker",
            "10.0.0.1",
            "::1",
            "mqtt.example.com.",
            "my_broker-1",
        ] {
            assert_eq!(host_problem(ok), None, "{ok}");
        }
        for bad in ["", "a b", "-a", "a..b", "fe80::1%eth0:1883"] {
            assert!(host_problem(bad).is_some(), "{bad}");
        }
    }
}
