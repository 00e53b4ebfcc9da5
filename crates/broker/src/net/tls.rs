//! A TLS listener's rustls configuration (the *ring* provider), read from
//! the listener's `certfile`, `keyfile`, `cafile`, `require_certificate`
//! and `tls_version`. Errors name the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{version, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, ListenerProtocol, TlsVersion};
use crate::net::transport::{IdentitySource, Wrapping};

/// How connections on `listener` are wrapped; `None` for plain MQTT.
pub fn wrapping(listener: &ListenerConfig) -> Result<Option<Wrapping>, String> {
    let websocket = listener.protocol == ListenerProtocol::WebSockets;
    let tls = if listener.is_tls() {
        Some(parking_lot::RwLock::new(acceptor(listener)?))
    } else {
        None
    };
    if tls.is_none() && !websocket {
        return Ok(None);
    }
    let identity = if listener.use_identity_as_username {
        IdentitySource::CommonName
    } else if listener.use_subject_as_username {
        IdentitySource::Subject
    } else {
        IdentitySource::Connect
    };
    Ok(Some(Wrapping {
        tls,
        websocket,
        identity,
        listener: listener.clone(),
    }))
}

/// A TLS acceptor for `listener`, its files read now.
pub fn acceptor(listener: &ListenerConfig) -> Result<TlsAcceptor, String> {
    Ok(TlsAcceptor::from(Arc::new(server_config(listener)?)))
}

/// Reads every TLS listener's files again and, only if all of them load,
/// makes new connections use them (established ones keep their session).
/// Returns how many listeners were reloaded.
pub fn reload(wrappings: &[Arc<Wrapping>]) -> Result<usize, String> {
    let mut fresh = Vec::new();
    for w in wrappings {
        if let Some(tls) = &w.tls {
            let acceptor =
                acceptor(&w.listener).map_err(|e| format!("listener {}: {e}", w.listener.addr))?;
            fresh.push((tls, acceptor));
        }
    }
    let n = fresh.len();
    for (tls, acceptor) in fresh {
        *tls.write() = acceptor;
    }
    Ok(n)
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls server configuration of a TLS listener.
pub fn server_config(listener: &ListenerConfig) -> Result<ServerConfig, String> {
    let (Some(certfile), Some(keyfile)) = (&listener.certfile, &listener.keyfile) else {
        return Err("a TLS listener needs certfile and keyfile".into());
    };
    let chain = certificates(certfile, "certfile")?;
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .map_err(|e| format!("keyfile {}: {e}", keyfile.display()))?;
    let versions: &[&'static SupportedProtocolVersion] = match listener.tls_version {
        None => &[&version::TLS13, &version::TLS12],
        Some(TlsVersion::Tls12) => &[&version::TLS12],
        Some(TlsVersion::Tls13) => &[&version::TLS13],
    };
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    // Client certificates are asked for when they are required or name the
    // user; a CA file is what they are checked against.
    let wants_client_cert = listener.require_certificate
        || listener.use_identity_as_username
        || listener.use_subject_as_username;
    let builder = match (&listener.cafile, wants_client_cert) {
        (Some(cafile), true) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(cafile, "cafile")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("cafile {}: {e}", cafile.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if listener.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("cafile {}: {e}", cafile.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => {
            return Err(
                "client certificates (require_certificate, use_identity_as_username, \
                 use_subject_as_username) need a cafile"
                    .into(),
            )
        }
        (_, false) => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certfile {} / keyfile {}: {e}",
            certfile.display(),
            keyfile.display()
        )
    })
}
