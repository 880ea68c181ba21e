//! TLS for both PostgreSQL connections, on rustls, with libpq's `sslmode`s.
//!
//! One [`rustls::ClientConfig`] is built per connection string and serves
//! the replication connection (through [`tokio_rustls`]) and the ordinary
//! SQL connection (through [`MakeRustlsConnect`], tokio-postgres' TLS hook).
//!
//! Invariants: `verify-full` checks the chain and the host name; `verify-ca`
//! checks the chain only (a name mismatch is the one error it forgives);
//! `require` checks the chain only when a root certificate was configured,
//! as libpq does; `prefer` and `require` without roots still verify the
//! handshake signatures, so the peer must hold the key of the certificate it
//! shows, which is what SCRAM channel binding relies on.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conninfo::{ConnInfo, Host, SslMode};

/// Why TLS could not be set up (before any byte is sent).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the root certificate file {path}")]
    ReadRootCert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the root certificate file {path} holds no usable certificate")]
    NoRootCert { path: PathBuf },
    #[error(
        "sslmode={mode} needs trusted root certificates: set `sslrootcert=/path/to/ca.pem` (or `sslrootcert=system`), or put them in {default}"
    )]
    MissingRootCert { mode: SslMode, default: String },
    #[error("cannot load the system's root certificates: {0}")]
    SystemRoots(String),
    #[error("cannot build the certificate verifier")]
    Verifier(#[source] VerifierBuilderError),
    #[error("cannot configure TLS")]
    Config(#[source] rustls::Error),
    #[error("`{0}` is not a valid host name for TLS")]
    ServerName(String),
    #[error(transparent)]
    ClientCert(#[from] super::client_cert::ClientCertError),
    #[error("cannot use the client certificate {path} with its key (sslcert, sslkey)")]
    ClientAuth {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Builds the client configuration for `info`, or `None` when TLS is off
/// (`sslmode=disable`, or a Unix-domain socket, which libpq never encrypts).
pub(crate) fn client_config(info: &ConnInfo) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if info.ssl_mode == SslMode::Disable || matches!(info.host, Host::Unix(_)) {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match info.ssl_mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer => Arc::new(Lenient::new(None, &provider)),
        SslMode::Require => {
            let chain = root_store(info)?
                .map(|roots| webpki(roots, &provider))
                .transpose()?;
            Arc::new(Lenient::new(chain, &provider))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = root_store(info)?.ok_or_else(|| TlsError::MissingRootCert {
                mode: info.ssl_mode,
                default: default_root_cert().display().to_string(),
            })?;
            let verifier = webpki(roots, &provider)?;
            if info.ssl_mode == SslMode::VerifyCa {
                Arc::new(Lenient::new(Some(verifier), &provider))
            } else {
                verifier
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    // The certificate is sent only when the server asks for one.
    let config = match (&info.ssl_cert, &info.ssl_key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = super::client_cert::load(cert, key, info.ssl_password.as_ref())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::ClientAuth {
                    path: cert.clone(),
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// The name rustls checks the certificate against and sends as SNI.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsError::Verifier)
}

/// libpq's default root certificate file.
fn default_root_cert() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".postgresql/root.crt")
}

/// The configured roots: `sslrootcert`, `system`, or libpq's default file if
/// it exists; `None` when there are none.
fn root_store(info: &ConnInfo) -> Result<Option<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    let path = match &info.ssl_root_cert {
        Some(p) if p.as_os_str() == "system" => {
            let loaded = rustls_native_certs::load_native_certs();
            if loaded.certs.is_empty() {
                let why = loaded
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "none found".to_owned());
                return Err(TlsError::SystemRoots(why));
            }
            store.add_parsable_certificates(loaded.certs);
            return Ok(Some(store));
        }
        Some(p) => p.clone(),
        None => {
            let p = default_root_cert();
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let read_err = |source| TlsError::ReadRootCert {
        path: path.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoRootCert { path });
    }
    Ok(Some(store))
}

/// The verifier of the modes that do not check the host name: `verify-ca`
/// and `require` with roots check the chain (`chain`) but forgive a
/// certificate that names another host; `prefer` and `require` without roots
/// accept any certificate. Either way the peer must sign the handshake with
/// its certificate's key.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Lenient {
    fn new(chain: Option<Arc<WebPkiServerVerifier>>, provider: &CryptoProvider) -> Self {
        Lenient {
            chain,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `tls-server-end-point` channel binding data (RFC 5929 §4.1): the
/// server certificate hashed with its signature's hash, SHA-256 standing in
/// for MD5 and SHA-1. `None` for algorithms without a defined hash
/// (RSASSA-PSS, EdDSA) or an unparsable certificate: SCRAM then runs
/// without binding.
pub(crate) fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    // OIDs (DER value bytes) of the signature algorithms, by hash.
    const SHA256: &[&[u8]] = &[
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x04], // md5WithRSA
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x05], // sha1WithRSA
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B], // sha256WithRSA
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01],             // ecdsa-with-SHA1
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02],       // ecdsa-with-SHA256
    ];
    const SHA384: &[&[u8]] = &[
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C],
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D],
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04],
    ];
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (body, _) = der_element(cert, 0x30)?;
    let (_tbs, rest) = der_any(body)?;
    let (alg, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(alg, 0x06)?;
    if SHA256.contains(&oid) {
        Some(Sha256::digest(cert).to_vec())
    } else if SHA384.contains(&oid) {
        Some(Sha384::digest(cert).to_vec())
    } else if SHA512.contains(&oid) {
        Some(Sha512::digest(cert).to_vec())
    } else {
        None
    }
}

/// Splits one DER element with the expected tag off `input`: (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    der_any(input)
}

/// Splits one DER element off `input`, whatever its tag: (contents, rest).
fn der_any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// tokio-postgres' TLS hook, on the same rustls configuration as the
/// replication connection.
#[derive(Clone, Debug)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl MakeRustlsConnect {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Self {
        MakeRustlsConnect { config }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name =
            server_name(domain).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One pending TLS handshake for tokio-postgres.
pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsConnect")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS stream that tells tokio-postgres its channel binding data.
#[derive(Debug)]
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert))
        {
            Some(hash) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(hash),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_rejects_truncated_input() {
        assert_eq!(server_end_point(&[]), None);
        assert_eq!(server_end_point(&[0x30, 0x82, 0xFF]), None);
        assert_eq!(server_end_point(&[0x30, 0x05, 0x30, 0x00]), None);
    }

    #[test]
    fn end_point_hash_uses_the_signature_hash() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let hash = server_end_point(cert.der()).unwrap();
        assert_eq!(hash, Sha384::digest(cert.der()).to_vec());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(server_end_point(cert.der()), None);
    }
}
