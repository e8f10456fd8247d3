//! TLS for the MQTT sink: reads the PEM files named by `[mqtt.tls]` and builds a rustls client
//! configuration with the `ring` provider (rumqttc is built without a provider of its own).
//!
//! Every failure names the key and the file it came from, so a plant engineer can fix the
//! right file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::MqttTlsConfig;
use super::error::MqttSetupError;

/// The rustls client configuration `tls` asks for: the CAs of `ca_file` (or the system roots),
/// and the client certificate and key for mutual TLS when both are given.
pub(super) fn client_config(tls: &MqttTlsConfig) -> Result<Arc<ClientConfig>, MqttSetupError> {
    let roots = match &tls.ca_file {
        Some(path) => ca_roots(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttSetupError::Tls {
            detail: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("mqtt.tls.cert_file", cert)?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                MqttSetupError::ClientIdentity {
                    cert: cert.clone(),
                    key: tls.key_file.clone().unwrap_or_default(),
                    detail: e.to_string(),
                }
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path).map_err(|source| MqttSetupError::ReadFile {
        key,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MqttSetupError::BadPem {
            key,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MqttSetupError::BadPem {
            key,
            path: path.to_owned(),
            detail: "no certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(certs)
}

fn ca_roots(path: &Path) -> Result<RootCertStore, MqttSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("mqtt.tls.ca_file", path)? {
        roots.add(cert).map_err(|e| MqttSetupError::BadPem {
            key: "mqtt.tls.ca_file",
            path: path.to_owned(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttSetupError> {
    let pem = read("mqtt.tls.key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| MqttSetupError::BadPem {
        key: "mqtt.tls.key_file",
        path: path.to_owned(),
        detail: format!("no usable private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

fn system_roots() -> Result<RootCertStore, MqttSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(MqttSetupError::Tls {
            detail: format!(
                "no system CA certificates ({why}); set mqtt.tls.ca_file or install ca-certificates"
            ),
        });
    }
    Ok(roots)
}
