//! Errors of the MQTT sink: setting it up (files, TLS), and connecting to the broker.

use std::io;
use std::path::PathBuf;

use rumqttc::{ConnectReturnCode, ConnectionError};

/// The sink could not be built: the configuration is invalid, or a file it names could not be
/// used. Each variant names the configuration key and the file.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    /// [`super::MqttConfig::problems`] found problems (`key path: message`, one per line).
    #[error("invalid MQTT configuration:{}", .0.iter().map(|(k, m)| format!("\n  {k}: {m}")).collect::<String>())]
    Invalid(Vec<(String, String)>),
    /// A file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    ReadFile {
        /// Configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{key}: {}: {detail}", path.display())]
    BadPem {
        /// Configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The client certificate and key do not make a TLS client identity (e.g. a key that does
    /// not belong to the certificate, or an unsupported key type).
    #[error("mqtt.tls.cert_file {} with mqtt.tls.key_file {}: {detail}", cert.display(), key.display())]
    ClientIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The password file is empty or not UTF-8. (Its content never appears in the message.)
    #[error("mqtt.password_file: {}: {why}", path.display())]
    Password {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TLS configuration could not be built.
    #[error("mqtt.tls: {detail}")]
    Tls {
        /// Why.
        detail: String,
    },
}

/// Why the broker connection failed or was lost. Reported by [`super::MqttSink::last_error`]
/// and logged (with a counter) where it happens; the sink keeps retrying with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerConnectionError {
    /// TCP connection or name resolution failed, or the broker did not answer in time.
    #[error("broker {broker}: cannot connect: {detail}")]
    Unreachable {
        /// `host:port`.
        broker: String,
        /// The underlying error.
        detail: String,
    },
    /// The TLS handshake failed, or the broker ended the session with a TLS alert.
    #[error("broker {broker}: TLS failed: {detail}{hint}")]
    Tls {
        /// `host:port`.
        broker: String,
        /// What rustls said.
        detail: String,
        /// What to check, when the cause is recognised (starts with " (").
        hint: &'static str,
    },
    /// The broker answered CONNECT with a refusal.
    #[error("broker {broker} refused the connection: {reason}")]
    Refused {
        /// `host:port`.
        broker: String,
        /// The CONNACK return code, explained.
        reason: &'static str,
    },
    /// An established connection was lost.
    #[error("broker {broker}: connection lost: {detail}")]
    Lost {
        /// `host:port`.
        broker: String,
        /// The underlying error.
        detail: String,
    },
}

impl BrokerConnectionError {
    /// Classifies a rumqttc error; `connected` says whether the connection had been
    /// established (CONNACK received) before it failed.
    pub(super) fn classify(broker: &str, connected: bool, e: &ConnectionError) -> Self {
        let broker = broker.to_owned();
        if let Some(tls) = find_rustls_error(e) {
            return Self::Tls {
                broker,
                detail: tls.to_string(),
                hint: tls_hint(tls),
            };
        }
        match e {
            ConnectionError::ConnectionRefused(code) => Self::Refused {
                broker,
                reason: refusal(*code),
            },
            ConnectionError::Tls(t) => Self::Tls {
                broker,
                detail: t.to_string(),
                hint: "",
            },
            _ if connected => Self::Lost {
                broker,
                detail: e.to_string(),
            },
            _ => Self::Unreachable {
                broker,
                detail: e.to_string(),
            },
        }
    }
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "success (unexpected refusal)",
        ConnectReturnCode::RefusedProtocolVersion => {
            "unacceptable protocol version (the broker does not speak MQTT 3.1.1)"
        }
        ConnectReturnCode::BadClientId => "client id rejected (check mqtt.client_id)",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (check mqtt.username and mqtt.password_file)"
        }
        // mosquitto answers a wrong password with this code, not with BadUserNamePassword.
        ConnectReturnCode::NotAuthorized => {
            "not authorized (check mqtt.username and mqtt.password_file, and the broker's access rules)"
        }
    }
}

/// The rustls error somewhere in `e`'s chain. tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips the wrapped error itself, so `io::Error::get_ref` is looked into too.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            && let Some(tls) = find_rustls_error(inner)
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            " (the broker's certificate is not signed by a CA in mqtt.tls.ca_file)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            " (the broker's certificate does not name mqtt.host)"
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => " (a certificate is outside its validity period: check it, and the clock)",
        E::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::AccessDenied,
        ) => " (the broker rejected the client certificate: check mqtt.tls.cert_file and key_file)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = ConnectionError::Tls(rumqttc::TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            inner,
        )));
        let c = BrokerConnectionError::classify("b:8883", false, &e);
        let text = c.to_string();
        assert!(matches!(c, BrokerConnectionError::Tls { .. }), "{c:?}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("mqtt.tls.ca_file"), "{text}");
    }

    #[test]
    fn refusals_say_what_to_check() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let text = BrokerConnectionError::classify("b:1883", false, &e).to_string();
        assert!(text.contains("mqtt.password_file"), "{text}");
    }
}
