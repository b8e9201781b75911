//! The server's TLS settings made into a rustls configuration: the
//! certificate chain and key (`certfile`, `keyfile`, PEM), and client
//! certificates (`ca_certs`, `cert_reqs`, gunicorn's names and meanings).
//!
//! The crypto provider is *ring*: it is already built for the MongoDB
//! driver's TLS (no second C toolchain as aws-lc-rs needs: cmake, and Go
//! for its FIPS build), and its AES-GCM and ChaCha20-Poly1305 are
//! BoringSSL's assembly, as aws-lc-rs' are (BENCHMARKS.md measures the
//! cost per request against nginx's OpenSSL). What ring does not offer is
//! a FIPS 140-3 validated module: a deployment that needs one terminates
//! TLS in front (nginx with a FIPS OpenSSL).
//!
//! Versions: TLS 1.3 and 1.2 only, with rustls' cipher suites (AEADs with
//! forward secrecy; no CBC, RC4, 3DES or static RSA). ALPN: `http/1.1`.
//!
//! The files are read by `config` (so a reload that cannot read them is
//! refused like any bad setting); this module parses what was read.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The protocol this server speaks inside TLS (ALPN).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Whether clients must present a certificate (gunicorn's `cert_reqs`:
/// Python's `ssl.CERT_NONE`, `CERT_OPTIONAL`, `CERT_REQUIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// 0: none is asked for.
    None,
    /// 1: one is asked for, and checked against `ca_certs` if sent.
    Optional,
    /// 2: one signed by `ca_certs` is required.
    Required,
}

impl ClientCerts {
    /// From `cert_reqs`' number.
    pub fn from_number(n: u64) -> Option<ClientCerts> {
        match n {
            0 => Some(ClientCerts::None),
            1 => Some(ClientCerts::Optional),
            2 => Some(ClientCerts::Required),
            _ => None,
        }
    }
}

/// The TLS files as read, named for errors.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain: the server's first, then intermediates.
    pub cert: (PathBuf, Vec<u8>),
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: (PathBuf, Vec<u8>),
    /// CA certificates that sign client certificates.
    pub ca: Option<(PathBuf, Vec<u8>)>,
    /// Whether a client certificate is asked for.
    pub client_certs: ClientCerts,
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Other users may read or write the key file.
    #[error("keyfile {}: other users may read or write it (mode {mode:o}): chmod 600 it, owned by the user that starts the server", .path.display())]
    KeyExposed { path: PathBuf, mode: u32 },
    /// A file holds no certificate.
    #[error("{}: no PEM certificate in it", .path.display())]
    NoCertificate { path: PathBuf },
    /// A file holds a broken certificate.
    #[error("{}: a PEM certificate cannot be read", .path.display())]
    Certificate {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// The key file holds no private key.
    #[error("keyfile {}: no PEM private key could be read", .path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// Client certificates are asked for, but no CA to check them against.
    #[error("cert_reqs 1 or 2 (client certificates) needs ca_certs")]
    NoCa,
    /// rustls refuses the certificates or the key (a key that does not
    /// match the certificate, an unsupported key type).
    #[error("TLS settings")]
    Rustls(#[from] rustls::Error),
    /// The client CA certificates cannot be used.
    #[error("ca_certs")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The rustls configuration of these files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert.0, &files.cert.1)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key.1).map_err(|source| TlsError::Key {
        path: files.key.0.clone(),
        source,
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_verifier(files, provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file (at least one).
fn certificates(
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate {
            path: path.to_path_buf(),
            source,
        })?;
    match chain.is_empty() {
        true => Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        }),
        false => Ok(chain),
    }
}

/// The verifier of client certificates that `cert_reqs` asks for.
fn client_verifier(
    files: &TlsFiles,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let ca = match (&files.ca, files.client_certs) {
        (_, ClientCerts::None) => return Ok(None),
        (None, _) => return Err(TlsError::NoCa),
        (Some(ca), _) => ca,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(&ca.0, &ca.1)? {
        roots.add(cert)?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = match files.client_certs {
        ClientCerts::Optional => builder.allow_unauthenticated().build()?,
        _ => builder.build()?,
    };
    Ok(Some(verifier))
}
