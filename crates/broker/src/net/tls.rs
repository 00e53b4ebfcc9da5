//! A TLS listener's rustls configuration (the *ring* provider), read from
//! the listener's `certfile`, `keyfile`, `cafile`, `capath`,
//! `require_certificate` and `tls_version`. Errors name the file and what
//! is wrong with it.

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

/// The CA files of a `capath` directory, in name order: `*.pem` and `*.crt`
/// files, and OpenSSL's hashed names (`<8 hex digits>.<n>`, made by
/// `openssl rehash`) when they are not links to a file already taken, so a
/// directory Mosquitto reads through OpenSSL works here too.
fn ca_directory(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("capath {}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut hashed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_hash = name.split_once('.').is_some_and(|(h, n)| {
            h.len() == 8
                && h.chars().all(|c| c.is_ascii_hexdigit())
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
        });
        if name.ends_with(".pem") || name.ends_with(".crt") {
            files.push(path);
        } else if is_hash {
            hashed.push(path);
        }
    }
    let taken: Vec<_> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    for h in hashed {
        if !std::fs::canonicalize(&h).is_ok_and(|c| taken.contains(&c)) {
            files.push(h);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "capath {}: no CA certificate (*.pem, *.crt) in it",
            dir.display()
        ));
    }
    Ok(files)
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
    let has_ca = listener.cafile.is_some() || listener.capath.is_some();
    let builder = match (has_ca, wants_client_cert) {
        (true, true) => {
            let mut roots = RootCertStore::empty();
            let mut files = Vec::new();
            if let Some(cafile) = &listener.cafile {
                files.push((cafile.clone(), "cafile"));
            }
            if let Some(capath) = &listener.capath {
                files.extend(ca_directory(capath)?.into_iter().map(|f| (f, "capath")));
            }
            for (file, what) in &files {
                for cert in certificates(file, what)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{what} {}: {e}", file.display()))?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if listener.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client CA certificates (cafile/capath): {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        (false, true) => {
            return Err(
                "client certificates (require_certificate, use_identity_as_username, \
                 use_subject_as_username) need a cafile or capath"
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
