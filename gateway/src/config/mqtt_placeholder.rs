//! `[mqtt]`: a stand-in for the MQTT sink's own configuration struct.
//!
//! The sink (`edgegw::sinks::mqtt`) will own its configuration; until it lands, this struct
//! mirrors the keys of the sink's struct as it is being written (broker, client id, TLS/mTLS
//! files, username and password file, QoS, keepalive, window, status topic, backoff, packet
//! size), with the same conventions: serde, `deny_unknown_fields`, defaults as `const fn`, and
//! pure validation that names key paths. When the sink's module is wired into the crate this
//! file goes away and `raw.rs` embeds that struct.

use std::path::PathBuf;

use serde::Deserialize;

use super::raw::host_problem;

/// `[mqtt]`: the broker and how to talk to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or IP address (no lookup at validation).
    pub host: String,
    /// Broker port; default 1883, or 8883 with `[mqtt.tls]`.
    pub port: Option<u16>,
    /// MQTT client id; default `gateway.name`.
    pub client_id: Option<String>,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// File holding the password (first line; trailing newline ignored). Read when the sink
    /// connects, never logged; works with systemd `LoadCredential=`.
    pub password_file: Option<PathBuf>,
    /// QoS of telemetry batches: 0 or 1; default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Keepalive in seconds; default 15.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// Batches in flight at most; default 64.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Retained status topic; default `<payload prefix>/status` (filled in by the
    /// configuration's stage two).
    pub status_topic: Option<String>,
    /// First reconnect delay, ms; default 100.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Largest reconnect delay, ms; default 30000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Largest MQTT packet, bytes; default 1 MiB.
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
    /// PEM client certificate (mTLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (mTLS); needs `cert_file`.
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

/// Default port without TLS.
pub const fn default_port() -> u16 {
    1883
}

/// Default port with TLS.
pub const fn default_tls_port() -> u16 {
    8883
}

impl MqttConfig {
    /// The port to connect to: as configured, else 1883 (8883 with TLS).
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.tls.is_some() {
            default_tls_port()
        } else {
            default_port()
        })
    }

    /// Problems as `(key path, message)`, each path under `path`; no I/O.
    pub fn problems(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |key: &str, msg: String| out.push((format!("{path}.{key}"), msg));
        if let Some(why) = host_problem(&self.host) {
            add("host", why);
        }
        if self.port == Some(0) {
            add("port", "must be 1..=65535".into());
        }
        if self.client_id.as_deref() == Some("") {
            add("client_id", "must not be empty".into());
        }
        if self.password_file.is_some() && self.username.is_none() {
            add("password_file", "needs username".into());
        }
        if self.qos > 1 {
            add("qos", format!("must be 0 or 1, got {}", self.qos));
        }
        if !(5..=65535).contains(&self.keepalive_s) {
            add("keepalive_s", "must be 5..=65535".into());
        }
        if self.inflight == 0 {
            add("inflight", "must be > 0".into());
        }
        if let Some(t) = &self.status_topic
            && (t.is_empty() || t.contains(['+', '#', '\0']))
        {
            add("status_topic", "must be a topic without + # or NUL".into());
        }
        if self.backoff_min_ms == 0 {
            add("backoff_min_ms", "must be > 0".into());
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            add("backoff_max_ms", "must be >= backoff_min_ms".into());
        }
        if self.max_packet_size < 1024 {
            add("max_packet_size", "must be at least 1024".into());
        }
        if let Some(tls) = &self.tls {
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
