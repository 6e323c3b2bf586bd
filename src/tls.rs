//! TLS: certificates, trust, and the encrypted stream that `tls://` endpoints use.
//!
//! A server is a [`ServerTls`]: a certificate chain and its key, from PEM files
//! ([`ServerTls::from_pem_files`]) or a self-signed certificate made once and kept in a
//! directory ([`self_signed`]). Its [`Fingerprint`] (SHA-256 of the certificate, written
//! `sha256:AB:CD:…`) is what a client can pin. A client is a [`ClientTls`], built from a
//! [`Trust`]: the system's roots, a CA bundle, a pinned fingerprint, or (only when asked) no
//! check at all. rustls does the protocol with the *ring* provider, passed explicitly: nothing
//! here installs a process-wide default.
//!
//! Once the handshake is done, a connection is a [`TlsStream`] inside [`crate::net::Stream`],
//! so every service and client that reads and writes a stream runs unchanged inside TLS. What
//! looks at the raw socket instead (splice, `MSG_TRUNC`, `sendfile`) is not used on one. The
//! `files` service leaves the runtime after its handshake; [`BlockingTls`] is the same
//! connection as a blocking `Read + Write`, with the bytes rustls had already buffered.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::endpoint::Host;

/// How long a TLS handshake may take, on either side. A server counts it from the moment it
/// accepted the connection; a client's handshake is part of its connect timeout.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The names of the files a self-signed certificate is kept in.
pub const CERT_FILE: &str = "cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "key.pem";

/// The crypto provider every configuration here uses: *ring* (no C toolchain beyond a C
/// compiler, no cmake or nasm).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

/// The SHA-256 of a certificate's DER encoding: what `openssl x509 -fingerprint -sha256` prints,
/// and what a client pins. Display is `sha256:` and 32 upper-case hex bytes joined by colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    /// `sha256:AB:CD:…`, or the 64 hex digits alone; colons are optional and case does not
    /// matter.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hex = match t.split_once(':') {
            Some((algo, rest)) if algo.eq_ignore_ascii_case("sha256") => rest,
            Some((algo, _)) if !algo.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(format!("'{s}': only sha256 fingerprints are supported (sha256:AB:CD:…)"));
            }
            _ => t,
        };
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        let bad = || format!("'{s}' is not a SHA-256 fingerprint (sha256: and 64 hex digits, colons optional)");
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a certificate, a key or a trust setting could not be used. Each message is one line that
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {}", path.display(), crate::render::io_error(error))]
    Read {
        /// `certificate`, `key` or `CA file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file holds no certificate, or a malformed one.
    #[error("{} holds no usable PEM certificate (-----BEGIN CERTIFICATE-----){}", path.display(), detail(why))]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything.
        why: Option<String>,
    },
    /// A file holds no private key, or a malformed one.
    #[error("{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1){}", path.display(), detail(why))]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything.
        why: Option<String>,
    },
    /// The key is not the certificate's.
    #[error("the key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key for another reason.
    #[error("cannot use the certificate {}: {why}", cert.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// What rustls said.
        why: String,
    },
    /// The kept self-signed certificate is damaged or cannot be kept.
    #[error("TLS certificate store {}: {why}", dir.display())]
    Store {
        /// The directory.
        dir: PathBuf,
        /// What is wrong, with a hint.
        why: String,
    },
    /// The system's trusted roots could not be loaded.
    #[error(
        "no trusted root certificates in the system store{} (hint: --ca FILE, or --pin sha256:… as the server prints it)",
        detail(why)
    )]
    NoSystemRoots {
        /// What went wrong, if anything did.
        why: Option<String>,
    },
}

fn detail(why: &Option<String>) -> String {
    why.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The server side

/// A server's certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("fingerprint", &self.fingerprint.to_string()).finish()
    }
}

impl ServerTls {
    /// A certificate chain (the server's own first) and its private key, from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = read_certificates(cert, "certificate")?;
        let key_der = read_key(key)?;
        ServerTls::from_der(chain, key_der).map_err(|e| match e {
            BuildError::Mismatch => TlsError::KeyMismatch { cert: cert.into(), key: key.into() },
            BuildError::Other(why) => TlsError::Unusable { cert: cert.into(), why },
        })
    }

    fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<ServerTls, BuildError> {
        let fingerprint = Fingerprint::of(chain.first().ok_or(BuildError::Other("no certificate".into()))?);
        let provider = provider();
        let signing_key = provider.key_provider.load_private_key(key).map_err(|e| BuildError::Other(e.to_string()))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(BuildError::Mismatch);
            }
            Err(e) => return Err(BuildError::Other(e.to_string())),
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::Other(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        // No session tickets: a connection carries nothing after the handshake that the peer did
        // not ask for, and sockit's connections are not resumed.
        config.send_tls13_tickets = 0;
        Ok(ServerTls { config: Arc::new(config), fingerprint })
    }

    /// The SHA-256 fingerprint of the server's certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The acceptor that runs a connection's handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

enum BuildError {
    Mismatch,
    Other(String),
}

fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text =
        crate::fsroot::read_config_file(path).map_err(|error| TlsError::Read { what, path: path.into(), error })?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&text) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => return Err(TlsError::NoCertificate { path: path.into(), why: Some(e.to_string()) }),
        }
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into(), why: None });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = crate::fsroot::read_config_file(path).map_err(|error| TlsError::Read {
        what: "key",
        path: path.into(),
        error,
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => None,
            other => Some(other.to_string()),
        };
        TlsError::NoKey { path: path.into(), why }
    })
}

/// A self-signed certificate kept in a directory: loaded from there, or made and stored there
/// on first use.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate and key, ready to serve.
    pub tls: ServerTls,
    /// Where the certificate is (a client can use it as `--ca`).
    pub cert_path: PathBuf,
    /// Whether it was made just now.
    pub created: bool,
}

/// Loads the self-signed certificate kept in `dir` (`cert.pem`, `key.pem`), or makes one for
/// `localhost`, `127.0.0.1`, `::1` and `host_name` and keeps it there: the directory is created
/// with mode 0700 and the key written with mode 0600, under a lock so that two servers starting
/// at once make one certificate, not two. A store that is half there, unreadable or damaged is
/// an error that says so; nothing is replaced silently, since clients may have pinned it.
pub fn self_signed(dir: &Path, host_name: Option<&str>) -> Result<SelfSigned, TlsError> {
    let store_err = |why: String| TlsError::Store { dir: dir.into(), why };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| store_err(format!("cannot create it: {e}")))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".lock"))
        .map_err(|e| store_err(format!("cannot lock it: {e}")))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| store_err(format!("cannot lock it: {e}")))?;
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let remake = format!(
        "remove {} and {} to make a new one (clients that pinned the old one must pin the new one)",
        cert_path.display(),
        key_path.display()
    );
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let mode = std::fs::metadata(&key_path).map_err(|e| store_err(format!("{}: {e}", key_path.display())))?;
            if mode.permissions().mode() & 0o077 != 0 {
                return Err(store_err(format!(
                    "{} may be read by others (mode {:o}); chmod 600 it, or {remake}",
                    key_path.display(),
                    mode.permissions().mode() & 0o777
                )));
            }
            let tls =
                ServerTls::from_pem_files(&cert_path, &key_path).map_err(|e| store_err(format!("{e}; {remake}")))?;
            Ok(SelfSigned { tls, cert_path, created: false })
        }
        (false, false) => {
            let (cert_pem, key_pem) =
                generate(host_name).map_err(|e| store_err(format!("cannot make a certificate: {e}")))?;
            // The key first: a certificate on disk always has its key beside it.
            write_new(&key_path, key_pem.as_bytes(), 0o600)
                .map_err(|e| store_err(format!("cannot write {}: {e}", key_path.display())))?;
            write_new(&cert_path, cert_pem.as_bytes(), 0o644)
                .map_err(|e| store_err(format!("cannot write {}: {e}", cert_path.display())))?;
            let tls = ServerTls::from_pem_files(&cert_path, &key_path).map_err(|e| store_err(e.to_string()))?;
            Ok(SelfSigned { tls, cert_path, created: true })
        }
        (true, false) => {
            Err(store_err(format!("{} is there but {} is not; {remake}", cert_path.display(), key_path.display())))
        }
        (false, true) => {
            Err(store_err(format!("{} is there but {} is not; {remake}", key_path.display(), cert_path.display())))
        }
    }
}

/// A new ECDSA P-256 key and a self-signed certificate for the local names, both as PEM.
fn generate(host_name: Option<&str>) -> Result<(String, String), rcgen::Error> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(h) = host_name.filter(|h| !h.is_empty() && *h != "localhost" && h.parse::<IpAddr>().is_err()) {
        names.push(h.to_owned());
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = match rcgen::CertificateParams::new(names.clone()) {
        Ok(p) => p,
        // A host name that is no DNS name is left out rather than failing the server.
        Err(_) => rcgen::CertificateParams::new(names[..3].to_vec())?,
    };
    // A name of its own: a client handed another sockit server's certificate as its CA then
    // hears "unknown issuer", not a signature that fails under the same name.
    let mut tag = [0u8; 4];
    let _ = getrandom::fill(&mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("sockit self-signed {} {tag}", host_name.unwrap_or("localhost")));
    params.distinguished_name = dn;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a new file with `mode` through a temporary name and a rename, so that a crash never
/// leaves half a file under the real name.
fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Why there is no default place for the self-signed certificate.
#[derive(Debug, thiserror::Error)]
pub enum NoStore {
    /// Neither `XDG_CONFIG_HOME` (absolute) nor `HOME` is set.
    #[error("neither HOME nor XDG_CONFIG_HOME is set")]
    Unset,
    /// The variable names no directory. It is not made: a home directory that does not exist
    /// (`HOME=/nonexistent`, as for system users) is not sockit's to create.
    #[error("{var} is {}, which is not a directory", .path.display())]
    NotADirectory {
        /// `XDG_CONFIG_HOME` or `HOME`.
        var: &'static str,
        /// What it names.
        path: PathBuf,
    },
}

/// The default place for the self-signed certificate: `$XDG_CONFIG_HOME/sockit/tls`, else
/// `$HOME/.config/sockit/tls`. The directory the variable names must exist; what is below it is
/// made by [`self_signed`].
pub fn default_store() -> Result<PathBuf, NoStore> {
    let (var, base) = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) if Path::new(&x).is_absolute() => ("XDG_CONFIG_HOME", PathBuf::from(x)),
        _ => ("HOME", PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty()).ok_or(NoStore::Unset)?)),
    };
    if !base.is_dir() {
        return Err(NoStore::NotADirectory { var, path: base });
    }
    let base = if var == "HOME" { base.join(".config") } else { base };
    Ok(base.join("sockit").join("tls"))
}

/// This machine's host name, if it has one.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok().filter(|h| !h.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The client side

/// How a client decides to trust a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots (the OS store, as `openssl` and `curl` use it), and the
    /// certificate must name the host connected to.
    System,
    /// The CA certificates in a PEM file instead of the system's; the name is checked too.
    Ca(PathBuf),
    /// Exactly the certificate with this fingerprint, whatever signed it and whatever names it
    /// holds (the handshake's signature is still checked: the server has its key).
    Pin(Fingerprint),
    /// Any certificate: no protection against someone in the middle.
    Insecure,
}

/// A client's TLS settings, ready to connect.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    trust: Trust,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("trust", &self.trust).finish()
    }
}

impl ClientTls {
    /// Client settings that trust as `trust` says.
    pub fn new(trust: Trust) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions");
        let config = match &trust {
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found.errors.first().map(|e| e.to_string());
                    return Err(TlsError::NoSystemRoots { why });
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Ca(path) => {
                let certs = read_certificates(path, "CA file")?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| TlsError::NoCertificate { path: path.clone(), why: Some(e.to_string()) })?;
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::NoCertificate { path: path.clone(), why: Some(e.to_string()) })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CaFile { webpki, certs }))
                    .with_no_client_auth()
            }
            Trust::Pin(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { want: Some(*fp), provider }))
                .with_no_client_auth(),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { want: None, provider }))
                .with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config), trust })
    }

    /// The system's roots, loaded once per process.
    pub fn system() -> Result<Arc<ClientTls>, TlsError> {
        static SYSTEM: OnceLock<Result<Arc<ClientTls>, Option<String>>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                ClientTls::new(Trust::System).map(Arc::new).map_err(|e| match e {
                    TlsError::NoSystemRoots { why } => why,
                    other => Some(other.to_string()),
                })
            })
            .clone()
            .map_err(|why| TlsError::NoSystemRoots { why })
    }

    /// How this client trusts servers.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Runs the handshake over a connected TCP stream; `host` is the name (or address) the
    /// certificate must be for.
    pub async fn connect(&self, host: &Host, tcp: TcpStream) -> Result<TlsStream, HandshakeFailure> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match connector.connect(server_name(host), tcp).await {
            Ok(s) => Ok(TlsStream::new(tokio_rustls::TlsStream::Client(s))),
            Err(e) => Err(HandshakeFailure::from_io(e, &self.trust)),
        }
    }
}

/// The name a server's certificate must carry for `host`: the address itself for an IP literal,
/// `localhost` when no host was given.
pub fn server_name(host: &Host) -> ServerName<'static> {
    match host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Unspecified => ServerName::try_from("localhost").expect("a valid name"),
        Host::Name(n) => {
            ServerName::try_from(n.clone()).unwrap_or_else(|_| ServerName::try_from("invalid").expect("a valid name"))
        }
    }
}

/// The certificates of a `--ca` file: a chain to one of them, checked as usual, or the server's
/// own certificate found in the file and valid for the name. The second is how OpenSSL and curl
/// treat a self-signed certificate given as the CA, and `openssl req -x509` marks its
/// certificates as CAs, which a chain check refuses to see at the end of a chain.
#[derive(Debug)]
struct CaFile {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    certs: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(_) | CertificateError::UnknownIssuer))
                if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts exactly one certificate (by fingerprint), or any with `want: None`, and checks the
/// handshake's signatures with the certificate's key as usual.
#[derive(Debug)]
struct Pinned {
    want: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

/// Why a pinned certificate was refused: a message for [`CertificateError::Other`].
#[derive(Debug)]
struct PinMismatch {
    got: Fingerprint,
    want: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server's certificate is {}, not the pinned {}", self.got, self.want)
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        match self.want {
            Some(want) if want != got => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch { got, want })),
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a client's handshake failed.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The server's certificate was refused: what was wrong with it, and what may help.
    Untrusted {
        /// What was wrong.
        why: String,
        /// What may help.
        hint: &'static str,
    },
    /// Anything else: the server is not speaking TLS, refused us, or the connection failed.
    Other(io::Error),
}

impl HandshakeFailure {
    fn from_io(e: io::Error, trust: &Trust) -> HandshakeFailure {
        let Some(rustls::Error::InvalidCertificate(ce)) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        else {
            return HandshakeFailure::Other(e);
        };
        let issuer = match trust {
            Trust::Ca(path) => format!("not signed by a CA in {}", path.display()),
            _ => "not signed by an authority the system trusts (a self-signed certificate?)".to_owned(),
        };
        let why = match ce {
            CertificateError::UnknownIssuer => issuer,
            CertificateError::BadSignature => format!("its signature does not verify ({issuer})"),
            // webpki's words when the server's own certificate is a CA's (`openssl req -x509`
            // makes those) and no trusted one vouches for it: only the certificate itself, in
            // the --ca file, would.
            CertificateError::Other(other) if other.to_string() == "CaUsedAsEndEntity" => {
                format!("{issuer}: it is a CA certificate, as `openssl req -x509` makes, trusted only by itself")
            }
            CertificateError::Other(other) => other.to_string(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!("it has expired ({ce})"),
            other => other.to_string(),
        };
        let hint = match trust {
            Trust::Pin(_) => {
                "if the server made a new certificate, pin the one it prints now; if not, someone may be in between"
            }
            _ => "--ca FILE, or --pin sha256:… as the server printed it",
        };
        HandshakeFailure::Untrusted { why, hint }
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::Untrusted { why, hint } => write!(f, "certificate not trusted: {why} (hint: {hint})"),
            HandshakeFailure::Other(e) => describe_io(e, f),
        }
    }
}

/// A handshake error in words a person can act on.
fn describe_io(e: &io::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => {
            write!(f, "TLS handshake failed: the server does not speak TLS ({e})")
        }
        Some(other) => write!(f, "TLS handshake failed: {other}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            write!(f, "TLS handshake failed: the server closed the connection (is it a TLS server?)")
        }
        None => write!(f, "TLS handshake failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The stream

/// A TLS connection over TCP, after its handshake. A write may leave bytes in the TLS buffer
/// when the socket is full: flush after the last write before waiting for anything else (the
/// next write sends them too). Dropping it sends `close_notify` if it can without waiting,
/// unless the connection is to end with a reset.
#[derive(Debug)]
pub struct TlsStream {
    /// Always `Some`, except while [`TlsStream::into_blocking`] takes it apart.
    inner: Option<tokio_rustls::TlsStream<TcpStream>>,
    /// Set once close_notify has been sent or must not be (a reset is coming).
    closed: AtomicBool,
}

impl TlsStream {
    fn new(inner: tokio_rustls::TlsStream<TcpStream>) -> TlsStream {
        TlsStream { inner: Some(inner), closed: AtomicBool::new(false) }
    }

    fn io(&self) -> &tokio_rustls::TlsStream<TcpStream> {
        self.inner.as_ref().expect("a TLS stream is whole until taken apart")
    }

    fn io_mut(&mut self) -> &mut tokio_rustls::TlsStream<TcpStream> {
        self.inner.as_mut().expect("a TLS stream is whole until taken apart")
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.io().get_ref().0
    }

    /// The negotiated protocol version, as `TLSv1.3`.
    pub fn version(&self) -> Option<&'static str> {
        match self.io().get_ref().1.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            other => other.as_str(),
        }
    }

    /// Marks the connection as ending with a reset: no `close_notify` on drop.
    pub fn abort_on_drop(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Leaves the async runtime: the same connection as a blocking stream, with whatever rustls
    /// had buffered in either direction.
    pub fn into_blocking(mut self) -> io::Result<BlockingTls> {
        let closed = self.closed.swap(true, Ordering::Relaxed);
        let (tcp, conn) = match self.inner.take().expect("a TLS stream is whole until taken apart") {
            tokio_rustls::TlsStream::Client(s) => {
                let (io, c) = s.into_inner();
                (io, rustls::Connection::Client(c))
            }
            tokio_rustls::TlsStream::Server(s) => {
                let (io, c) = s.into_inner();
                (io, rustls::Connection::Server(c))
            }
        };
        let sock = tcp.into_std()?;
        sock.set_nonblocking(false)?;
        Ok(BlockingTls { conn, sock, closed })
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        if *self.closed.get_mut() {
            return;
        }
        match self.inner.as_mut() {
            Some(tokio_rustls::TlsStream::Client(s)) => {
                let (tcp, conn) = s.get_mut();
                close_now(tcp, conn);
            }
            Some(tokio_rustls::TlsStream::Server(s)) => {
                let (tcp, conn) = s.get_mut();
                close_now(tcp, conn);
            }
            None => {}
        }
    }
}

/// Sends `close_notify` in one attempt, never waiting: what does not fit now is lost, as with
/// any close.
fn close_now<D>(tcp: &TcpStream, conn: &mut rustls::ConnectionCommon<D>) {
    conn.send_close_notify();
    let mut out = TryWriter(tcp);
    while conn.wants_write() {
        match conn.write_tls(&mut out) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Writes to a tokio TCP stream without waiting.
struct TryWriter<'a>(&'a TcpStream);

impl Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Reading never writes (not even what a write left in the buffer): it would take the
        // socket's one write waker from a writer in another task, which would then never wake.
        match Pin::new(self.get_mut().io_mut()).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(plain_eof_error(e))),
            other => other,
        }
    }
}

/// rustls's error for a peer that closed without `close_notify`, in a line of our own (its own
/// carries a URL): the data may have been cut short by someone in between, so it is an error,
/// not an end.
fn plain_eof_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_some() {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection without TLS close_notify")
    } else {
        e
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io_mut()).poll_flush(cx)
    }
    /// Sends `close_notify` and shuts down the TCP sending side; reading goes on.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(this.io_mut()).poll_shutdown(cx);
        if r.is_ready() {
            this.closed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl AsFd for TlsStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}

/// Runs a server's handshake on an accepted TCP connection (without a deadline: the caller
/// bounds it).
pub async fn accept(acceptor: &tokio_rustls::TlsAcceptor, tcp: TcpStream) -> io::Result<TlsStream> {
    let s = acceptor.accept(tcp).await?;
    Ok(TlsStream::new(tokio_rustls::TlsStream::Server(s)))
}

/// A server's failed handshake, in words for its log.
pub fn accept_error(e: &io::Error) -> String {
    use rustls::AlertDescription as A;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown))) => {
            format!("TLS handshake failed: the client does not trust our certificate ({a:?})")
        }
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => {
            format!("TLS handshake failed: the client does not speak TLS ({e})")
        }
        _ if e.kind() == io::ErrorKind::UnexpectedEof => {
            "TLS handshake failed: the client closed the connection".to_owned()
        }
        _ => format!("TLS handshake failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Blocking

/// A TLS connection as a blocking `Read + Write`, for work done in a plain thread. Read and write
/// timeouts set on [`BlockingTls::socket`] apply (a timeout is a `WouldBlock` error). Dropping
/// it sends `close_notify` if that can be done without waiting.
pub struct BlockingTls {
    conn: rustls::Connection,
    sock: std::net::TcpStream,
    closed: bool,
}

impl fmt::Debug for BlockingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingTls").field("sock", &self.sock).finish()
    }
}

impl BlockingTls {
    /// The TCP socket underneath, for its options (timeouts) and for `shutdown`.
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.sock
    }

    /// Sends everything rustls holds for the peer.
    fn write_out(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Reads once from the socket into rustls and processes what came.
    fn read_in(&mut self) -> io::Result<usize> {
        let n = self.conn.read_tls(&mut self.sock)?;
        if let Err(e) = self.conn.process_new_packets() {
            // Tell the peer why, if there is an alert to send.
            let _ = self.write_out();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }

    /// Whether a read would find something now (plaintext, the end, or an error) without
    /// waiting for the peer. Handshake messages and the like that carry no data are taken in
    /// and do not count.
    pub fn readable_now(&mut self) -> bool {
        // Bounded: a peer cannot keep us here by sending records that carry nothing.
        for _ in 0..64 {
            match self.conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => return true,
                Ok(_) => {}
                Err(_) => return true,
            }
            let ready = crate::net::poll_now(self.sock.as_raw_fd(), libc::POLLIN).is_some_and(|r| r != 0);
            if !ready {
                return false;
            }
            // The socket has something (or its end): one read cannot wait.
            match self.read_in() {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    }

    /// Sends `close_notify` (waiting at most as long as the socket's write timeout).
    pub fn close(&mut self) -> io::Result<()> {
        self.closed = true;
        self.conn.send_close_notify();
        self.write_out()
    }
}

impl Read for BlockingTls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_out()?;
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other.map_err(plain_eof_error),
            }
            self.read_in()?;
            // An answer rustls owes the peer (a key update) goes out at once.
            self.write_out()?;
        }
    }
}

impl Write for BlockingTls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.write_out()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.write_out()
    }
}

impl Drop for BlockingTls {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.conn.send_close_notify();
        if self.sock.set_nonblocking(true).is_ok() {
            let _ = self.write_out();
        }
    }
}

/// Reads `file` from `offset` to `end` and writes it to `out` (a TLS stream cannot use
/// `sendfile`): the copy loop that stands in for it.
pub(crate) fn copy_file_range_to(
    out: &mut impl Write,
    file: &File,
    buf: &mut [u8],
    (offset, end): (u64, u64),
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let want = (end - offset).min(buf.len() as u64) as usize;
    let n = loop {
        match file.read_at(&mut buf[..want], offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    out.write_all(&buf[..n])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse() {
        let fp = Fingerprint::of(b"not really a certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 32 * 3 - 1, "{text}");
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        let bare: String = text[7..].chars().filter(|&c| c != ':').collect();
        assert_eq!(bare.to_lowercase().parse::<Fingerprint>(), Ok(fp));
        assert_eq!(format!("SHA256:{}", bare.to_lowercase()).parse::<Fingerprint>(), Ok(fp));
        for bad in ["", "sha256:", "sha256:abcd", "md5:00", &format!("{bare}00"), &text.replace('A', "G")] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
        assert!("sha1:00".parse::<Fingerprint>().unwrap_err().contains("only sha256"));
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sockit/tls");
        let first = self_signed(&store, Some("testhost")).unwrap();
        assert!(first.created);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join(KEY_FILE)), 0o600);
        let again = self_signed(&store, Some("testhost")).unwrap();
        assert!(!again.created);
        assert_eq!(first.tls.fingerprint(), again.tls.fingerprint());
        let pem = std::fs::read(&first.cert_path).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(Fingerprint::of(&der), first.tls.fingerprint());
    }

    #[test]
    fn a_damaged_store_is_an_error_not_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("tls");
        self_signed(&store, None).unwrap();
        std::fs::write(store.join(CERT_FILE), "garbage").unwrap();
        let e = self_signed(&store, None).unwrap_err().to_string();
        assert!(e.contains("holds no usable PEM certificate") && e.contains("to make a new one"), "{e}");
        std::fs::remove_file(store.join(CERT_FILE)).unwrap();
        let e = self_signed(&store, None).unwrap_err().to_string();
        assert!(e.contains("is there but") && e.contains(CERT_FILE), "{e}");
        assert!(!e.contains('\n'));
        // A key others may read is refused.
        let other = dir.path().join("open");
        self_signed(&other, None).unwrap();
        std::fs::set_permissions(other.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = self_signed(&other, None).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(&dir.path().join("a"), None).unwrap();
        self_signed(&dir.path().join("b"), None).unwrap();
        let e = ServerTls::from_pem_files(&a.cert_path, &dir.path().join("b").join(KEY_FILE)).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let e = ServerTls::from_pem_files(&a.cert_path, &a.cert_path).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        let e = ServerTls::from_pem_files(&dir.path().join("none"), &a.cert_path).unwrap_err();
        assert!(e.to_string().starts_with("cannot read certificate"), "{e}");
    }

    #[test]
    fn server_names() {
        assert_eq!(server_name(&Host::Ip("127.0.0.1".parse().unwrap())).to_str(), "127.0.0.1");
        assert_eq!(server_name(&Host::Unspecified).to_str(), "localhost");
        assert_eq!(server_name(&Host::Name("example.org".into())).to_str(), "example.org");
    }
}
