//! A TLS listener's rustls configuration (the *ring* provider), read from
//! the listener's `certfile`, `keyfile`, `cafile`, `capath`, `crlfile`,
//! `require_certificate`, `disable_client_cert_date_checks` and
//! `tls_version`. Errors name the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, version, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, ListenerProtocol, TlsVersion};
use crate::net::transport::{IdentitySource, Wrapping};
use crate::net::x509;

/// `--tls-keylog FILE`: every TLS session's secrets, appended in the NSS
/// key log format Wireshark reads, as Mosquitto's option does. For
/// debugging only: whoever reads the file can decrypt the traffic.
#[derive(Debug)]
pub struct KeyLogFile(parking_lot::Mutex<std::fs::File>);

impl KeyLogFile {
    pub fn open(path: &Path) -> std::io::Result<Arc<KeyLogFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Arc::new(KeyLogFile(parking_lot::Mutex::new(file))))
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::fmt::Write as _;
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        let _ = std::io::Write::write_all(&mut *self.0.lock(), line.as_bytes());
    }
}

/// How connections on `listener` are wrapped; `None` for plain MQTT.
/// `key_log`: where TLS secrets go (`--tls-keylog`), if anywhere.
pub fn wrapping(
    listener: &ListenerConfig,
    key_log: Option<Arc<KeyLogFile>>,
) -> Result<Option<Wrapping>, String> {
    let websocket = listener.protocol == ListenerProtocol::WebSockets;
    let tls = if listener.is_tls() {
        Some(parking_lot::RwLock::new(acceptor(
            listener,
            key_log.clone(),
        )?))
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
        key_log,
    }))
}

/// A TLS acceptor for `listener`, its files read now.
pub fn acceptor(
    listener: &ListenerConfig,
    key_log: Option<Arc<KeyLogFile>>,
) -> Result<TlsAcceptor, String> {
    let mut config = server_config(listener)?;
    if let Some(key_log) = key_log {
        config.key_log = key_log;
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads every TLS listener's files again and, only if all of them load,
/// makes new connections use them (established ones keep their session).
/// Returns how many listeners were reloaded.
pub fn reload(wrappings: &[Arc<Wrapping>]) -> Result<usize, String> {
    let mut fresh = Vec::new();
    for w in wrappings {
        if let Some(tls) = &w.tls {
            let acceptor = acceptor(&w.listener, w.key_log.clone())
                .map_err(|e| format!("listener {}: {e}", w.listener.describe()))?;
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
    let cas = ca_certificates(listener)?;
    // Client certificates are asked for when they are required or name the
    // user; a CA file is what they are checked against.
    let wants_client_cert = listener.require_certificate
        || listener.use_identity_as_username
        || listener.use_subject_as_username;
    let builder = match (!cas.is_empty(), wants_client_cert) {
        (true, true) => {
            builder.with_client_cert_verifier(client_verifier(listener, &cas, provider)?)
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
    // As OpenSSL does for Mosquitto: a certfile holding only the server's
    // own certificate is sent with the intermediates the CA files have.
    let chain = complete_chain(chain, &cas);
    builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certfile {} / keyfile {}: {e}",
            certfile.display(),
            keyfile.display()
        )
    })
}

/// The certificates of `cafile` and `capath`, in that order.
fn ca_certificates(listener: &ListenerConfig) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut files = Vec::new();
    if let Some(cafile) = &listener.cafile {
        files.push((cafile.clone(), "cafile"));
    }
    if let Some(capath) = &listener.capath {
        files.extend(ca_directory(capath)?.into_iter().map(|f| (f, "capath")));
    }
    let mut cas = Vec::new();
    for (file, what) in &files {
        cas.extend(certificates(file, what)?);
    }
    Ok(cas)
}

/// What checks client certificates: against the CA files, with the
/// `crlfile` revocation lists for the client's own certificate (as
/// OpenSSL's `X509_V_FLAG_CRL_CHECK` that Mosquitto sets: a client whose
/// issuer has no list in the file is refused, and so is one checked
/// against an expired list), at this moment unless
/// `disable_client_cert_date_checks`.
fn client_verifier(
    listener: &ListenerConfig,
    cas: &[CertificateDer<'static>],
    provider: Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in cas {
        roots
            .add(cert.clone())
            .map_err(|e| format!("cafile/capath: {e}"))?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if !listener.require_certificate {
        verifier = verifier.allow_unauthenticated();
    }
    if let Some(crlfile) = &listener.crlfile {
        let crls = CertificateRevocationListDer::pem_file_iter(crlfile)
            .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("crlfile {}: {e}", crlfile.display()))?;
        if crls.is_empty() {
            return Err(format!(
                "crlfile {}: no PEM certificate revocation list in it",
                crlfile.display()
            ));
        }
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
        if !listener.disable_client_cert_date_checks {
            verifier = verifier.enforce_revocation_expiration();
        }
    }
    let verifier = verifier.build().map_err(|e| match &listener.crlfile {
        Some(crlfile) => format!(
            "client CA certificates (cafile/capath) or crlfile {}: {e}",
            crlfile.display()
        ),
        None => format!("client CA certificates (cafile/capath): {e}"),
    })?;
    if listener.disable_client_cert_date_checks {
        return Ok(Arc::new(AnyDate(verifier)));
    }
    Ok(verifier)
}

/// `disable_client_cert_date_checks`: a client's chain is checked as of a
/// moment inside the validity of each certificate it sent (the latest
/// notBefore), so expired and not-yet-valid certificates pass while
/// everything else (signatures, issuers, revocation) is checked as usual.
/// A chain whose certificates were never valid at one moment together is
/// checked as of now, and fails as it would without the option.
#[derive(Debug)]
struct AnyDate(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AnyDate {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let windows: Option<Vec<(i64, i64)>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| x509::validity(c))
            .collect();
        let moment = windows.and_then(|w| {
            let start = w.iter().map(|(from, _)| *from).max()?;
            let end = w.iter().map(|(_, to)| *to).min()?;
            (start <= end).then_some(start)
        });
        let at = match moment.and_then(|t| u64::try_from(t).ok()) {
            Some(t) => UnixTime::since_unix_epoch(std::time::Duration::from_secs(t)),
            None => now,
        };
        self.0.verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `chain` followed by the certificates that issued its last one, found
/// among `cas`, up to (not including) a self-signed root: what OpenSSL
/// sends when the certfile holds the server's certificate alone.
fn complete_chain(
    mut chain: Vec<CertificateDer<'static>>,
    cas: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    // A chain longer than this is no chain anyone uses.
    const MAX_DEPTH: usize = 10;
    while chain.len() < MAX_DEPTH {
        let Some((issuer, subject)) = chain.last().and_then(|c| x509::issuer_and_subject(c)) else {
            break;
        };
        if issuer == subject {
            break;
        }
        let next = cas.iter().find(|ca| {
            x509::issuer_and_subject(ca).is_some_and(|(ca_issuer, ca_subject)| {
                ca_subject == issuer && ca_issuer != ca_subject
            })
        });
        match next {
            Some(ca) if !chain.contains(ca) => chain.push(ca.clone()),
            _ => break,
        }
    }
    chain
}
