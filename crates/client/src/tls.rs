//! rustls client configuration: trust anchors from a CA file, an optional
//! client certificate, or `insecure` (no verification, for tests).

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::options::TlsOptions;
use crate::Error;

pub(crate) fn client_config(options: &TlsOptions) -> Result<ClientConfig, Error> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let Some(ca_file) = &options.ca_file else {
            return Err(Error::Tls(
                "no CA file to verify the server with (give one, or choose insecure)".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| Error::Tls(format!("reading CA file {}: {e}", ca_file.display())))?;
        for cert in certs {
            let cert = cert
                .map_err(|e| Error::Tls(format!("reading CA file {}: {e}", ca_file.display())))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("CA file {}: {e}", ca_file.display())))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls(format!(
                "CA file {} holds no certificate",
                ca_file.display()
            )));
        }
        builder.with_root_certificates(roots)
    };
    match (&options.cert_file, &options.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Tls(format!("reading certificate {}: {e}", cert_file.display()))
                })?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| Error::Tls(format!("reading key {}: {e}", key_file.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Tls(format!("client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::Tls(
            "a client certificate needs both a certificate file and a key file".into(),
        )),
    }
}

/// Describes a handshake failure, naming the rustls error when there is one.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => format!("handshake failed: {inner}"),
        None => format!("handshake failed: {e}"),
    }
}

/// Accepts every certificate; still checks the handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
