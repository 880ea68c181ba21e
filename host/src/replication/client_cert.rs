//! The client certificate a PostgreSQL connection presents when the server
//! asks for one (`hostssl … cert` in pg_hba.conf, or `clientcert=verify-*`):
//! libpq's `sslcert`, `sslkey` and `sslpassword`.
//!
//! What this keeps true: the files are read when the TLS configuration is
//! built, before any byte is sent, and every failure names the file at
//! fault; the key's password is a [`Secret`] and is never printed. Keys may
//! be PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM, or PKCS#8 encrypted with
//! `sslpassword` (what `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::secret::Secret;

/// Why the client certificate or its key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error("cannot read the client certificate file {path} (sslcert)")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the client certificate file {path} (sslcert) holds no certificate")]
    NoCert { path: PathBuf },
    #[error("cannot read the client key file {path} (sslkey)")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the client key file {path} (sslkey) holds no private key in PEM (PKCS#8, PKCS#1 or SEC1)"
    )]
    NoKey { path: PathBuf },
    #[error("the client key file {path} (sslkey) is encrypted: give its password as sslpassword")]
    NeedsPassword { path: PathBuf },
    #[error(
        "cannot decrypt the client key file {path} (sslkey) with sslpassword: wrong password or an unsupported cipher"
    )]
    Decrypt { path: PathBuf },
    #[error(
        "the client key file {path} (sslkey) is encrypted in OpenSSL's legacy format: convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
    )]
    LegacyEncryption { path: PathBuf },
}

/// The certificate chain of `cert` and the key of `key`, decrypted with
/// `password` when it is encrypted.
pub(crate) fn load(
    cert: &Path,
    key: &Path,
    password: Option<&Secret>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientCertError> {
    let read_cert = |source| ClientCertError::ReadCert {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_cert)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_cert)?;
    if chain.is_empty() {
        return Err(ClientCertError::NoCert {
            path: cert.to_owned(),
        });
    }
    let text = std::fs::read_to_string(key).map_err(|source| ClientCertError::ReadKey {
        path: key.to_owned(),
        source,
    })?;
    Ok((chain, private_key(&text, key, password)?))
}

fn private_key(
    text: &str,
    path: &Path,
    password: Option<&Secret>,
) -> Result<PrivateKeyDer<'static>, ClientCertError> {
    let path = || path.to_owned();
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or_else(|| ClientCertError::NeedsPassword { path: path() })?;
        let decrypted = (|| {
            let (_, document) = pkcs8::SecretDocument::from_pem(text.trim()).ok()?;
            let info = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes()).ok()?;
            info.decrypt(password.expose()).ok()
        })()
        .ok_or_else(|| ClientCertError::Decrypt { path: path() })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            decrypted.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(ClientCertError::LegacyEncryption { path: path() });
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|_| ClientCertError::NoKey { path: path() })
}
