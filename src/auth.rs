//! Who may use `exec` and `files`: a shared token proven by HMAC challenge-response, and on Unix
//! sockets the peer's uid.
//!
//! The server opens with `HELLO` and a fresh 32-byte nonce. The client answers with its own nonce
//! and `HMAC-SHA256(token, "sockit-auth-v1 client" ‖ service ‖ server nonce ‖ client nonce)`; the
//! server checks it in constant time and answers `WELCOME` with the same MAC under the label
//! `"sockit-auth-v1 server"`, which the client checks in turn. The token itself never crosses the
//! wire, and since every server nonce is new, a recorded exchange proves nothing the next time.
//! Without TLS this does not protect what follows the handshake from someone who can rewrite the
//! traffic; that is why these services refuse non-loopback TCP unless told `--insecure`.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::proto::{self, HASH_LEN, Hash, Msg, ProtoError, ServiceKind, code, read_msg_max, write_msg};

/// The environment variable a token may come from.
pub const TOKEN_ENV: &str = "SOCKIT_TOKEN";
/// How long a whole handshake may take, however slowly the bytes trickle in.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a client with a wrong token waits before it is told so.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);

const CLIENT_LABEL: &[u8] = b"sockit-auth-v1 client";
const SERVER_LABEL: &[u8] = b"sockit-auth-v1 server";

/// A shared secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A token that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {}", crate::render::io_error(why))]
    Read {
        /// The file.
        path: String,
        /// Why. Not a `source`: the message says it already, and a chain would say it twice.
        why: io::Error,
    },
    /// Other users may read the file.
    #[error("token file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names something other than a file: a directory, a socket, a device.
    #[error("token file {path} is {kind}, not a file")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is ("a directory").
        kind: &'static str,
    },
    /// The token is empty.
    #[error("the token {0} is empty")]
    Empty(String),
    /// The token is too short to be safe.
    #[error("the token {0} is shorter than 16 bytes; make one with: head -c 32 /dev/urandom | base64")]
    Short(String),
}

impl Token {
    /// Wraps a secret; at least 16 bytes, with surrounding whitespace (a final newline) removed.
    pub fn new(secret: &[u8], origin: &str) -> Result<Token, TokenError> {
        let trimmed = secret.trim_ascii();
        if trimmed.is_empty() {
            return Err(TokenError::Empty(origin.to_string()));
        }
        if trimmed.len() < 16 {
            return Err(TokenError::Short(origin.to_string()));
        }
        Ok(Token(trimmed.to_vec()))
    }

    /// Reads a token from a file that only its owner may read. A pipe works too (`--token-file
    /// <(pass show sockit)`); a directory, a socket or a device is refused for what it is.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        use crate::fsroot::NamedFileError;
        let shown = path.display().to_string();
        let read_err = |why| TokenError::Read { path: shown.clone(), why };
        let (file, stat) = crate::fsroot::open_named_file(path).map_err(|e| match e {
            NamedFileError::NotAFile(kind) => {
                TokenError::NotAFile { path: shown.clone(), kind: crate::fsroot::kind_name(kind) }
            }
            NamedFileError::Io(e) => read_err(e),
        })?;
        let mode = stat.st_mode & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed { path: shown, mode });
        }
        let mut secret = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, 64 * 1024), &mut secret).map_err(read_err)?;
        Token::new(&secret, &format!("in {shown}"))
    }

    /// The token from `SOCKIT_TOKEN`, if it is set.
    pub fn from_env() -> Result<Option<Token>, TokenError> {
        match std::env::var_os(TOKEN_ENV) {
            None => Ok(None),
            Some(v) => {
                Token::new(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()), &format!("in ${TOKEN_ENV}")).map(Some)
            }
        }
    }

    fn mac(&self, label: &[u8], service: ServiceKind, server_nonce: &Hash, client_nonce: &Hash) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(&[service as u8]);
        mac.update(server_nonce);
        mac.update(client_nonce);
        mac
    }

    /// The MAC a client sends.
    pub fn client_mac(&self, service: ServiceKind, server_nonce: &Hash, client_nonce: &Hash) -> Hash {
        self.mac(CLIENT_LABEL, service, server_nonce, client_nonce).finalize().into_bytes().into()
    }

    /// The proof a server sends back.
    pub fn server_proof(&self, service: ServiceKind, server_nonce: &Hash, client_nonce: &Hash) -> Hash {
        self.mac(SERVER_LABEL, service, server_nonce, client_nonce).finalize().into_bytes().into()
    }

    fn verify(&self, label: &[u8], service: ServiceKind, sn: &Hash, cn: &Hash, tag: &Hash) -> bool {
        self.mac(label, service, sn, cn).verify_slice(tag).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> Hash {
    let mut n = [0u8; HASH_LEN];
    getrandom::fill(&mut n).expect("the kernel's random source works");
    n
}

/// What a server demands of its clients.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The token clients must prove; `None` only on Unix sockets, where the uid check applies.
    pub token: Option<Token>,
    /// Uids allowed on Unix sockets (the server's own is always allowed).
    pub allow_uids: Vec<u32>,
    /// Held by a refused client while it waits out [`FAILURE_DELAY`]: refusals come one at a
    /// time, so that guessing in parallel connections is no faster than one after another.
    failures: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Policy {
    /// A policy with a token (or none, for Unix sockets) and extra allowed uids.
    pub fn new(token: Option<Token>, allow_uids: Vec<u32>) -> Policy {
        Policy { token, allow_uids, failures: Default::default() }
    }

    /// Whether a Unix peer with this uid may come in.
    pub fn uid_allowed(&self, uid: u32) -> bool {
        uid == rustix::process::geteuid().as_raw() || self.allow_uids.contains(&uid)
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer broke the protocol or the connection.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The peer closed before the handshake ended.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// A message other than the expected one arrived.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol calls for here.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The server refused us, with its reason (as it sent it; shown with control characters
    /// escaped).
    #[error("{}", crate::render::printable(.0))]
    Refused(String),
    /// The client's token was wrong, or its uid is not allowed.
    #[error("{0}")]
    Denied(String),
    /// The server speaks another service or version.
    #[error("{0}")]
    Mismatch(String),
    /// The handshake took longer than [`HANDSHAKE_DEADLINE`].
    #[error("the handshake did not finish within {}s", HANDSHAKE_DEADLINE.as_secs())]
    Deadline,
    /// The client heard nothing at all from the server within [`HANDSHAKE_DEADLINE`]: a sockit
    /// server speaks first, so this is likely a server that waits for its client to.
    #[error(
        "the server sent no handshake within {secs}s: is it a sockit {service} server? a plain server such as \
         echo, or a TLS one (use tls://), waits for the client to speak first",
        secs = HANDSHAKE_DEADLINE.as_secs()
    )]
    Silent {
        /// The service the client wanted.
        service: &'static str,
    },
    /// The server closed the connection without sending a byte: not a sockit server of this
    /// kind, or one that gave up waiting for its client to speak (a TLS server does, after 10s).
    #[error(
        "the server closed the connection without a handshake: is it a sockit {service} server? a TLS one \
         (use tls://) closes after waiting for the client to speak first"
    )]
    ClosedSilently {
        /// The service the client wanted.
        service: &'static str,
    },
    /// The server's first bytes cannot begin a `HELLO` or an `ERROR`: it speaks something else.
    #[error("the server is not a sockit {service} server: it sent \"{sent}\"")]
    Foreign {
        /// The service the client wanted.
        service: &'static str,
        /// The start of what the server sent, escaped to one line.
        sent: String,
    },
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Proto(ProtoError::Io(e))
    }
}

/// The largest message of the handshake (an `ERROR` with a long reason); a stranger cannot make
/// the server hold more than this before it is authenticated.
const HANDSHAKE_MESSAGE: usize = 1024;

/// Whether `head`, the first bytes a server sent (up to five: the length and the type), can
/// begin the frame a sockit server opens with: a `HELLO`, or an `ERROR` of at most
/// [`HANDSHAKE_MESSAGE`] bytes that turns the client away.
fn may_begin_handshake(head: &[u8]) -> bool {
    let max = (HANDSHAKE_MESSAGE as u32).to_be_bytes();
    // Byte by byte, the length can still be at most the limit.
    let len_fits = head.iter().take(4).zip(max).try_fold(false, |below, (&b, m)| match below || b < m {
        true => Some(true),
        false => (b == m).then_some(false),
    });
    if len_fits.is_none() {
        return false;
    }
    let Some(header) = head.first_chunk::<4>() else { return true };
    let len = u32::from_be_bytes(*header) as usize;
    match head.get(4) {
        None => len >= 2,
        Some(&kind) => {
            (kind == proto::kind::HELLO && len == proto::HELLO_LEN) || (kind == proto::kind::ERROR && len >= 2)
        }
    }
}

/// How much of a foreign server's first bytes an error shows, and how long the client waits for
/// them to arrive after the few that gave it away.
const PREVIEW: usize = 48;
const PREVIEW_WAIT: Duration = Duration::from_millis(200);

/// The first line of what a foreign server sent, starting with `head` and followed by whatever
/// arrives within [`PREVIEW_WAIT`], escaped and cut to [`PREVIEW`] bytes (`…` marks a cut).
async fn preview<R: AsyncRead + Unpin>(r: &mut R, head: &[u8]) -> String {
    let mut seen = head.to_vec();
    seen.resize(PREVIEW + 1, 0);
    let mut have = head.len();
    let more = async {
        while have < seen.len() && !seen[..have].contains(&b'\n') {
            match r.read(&mut seen[have..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => have += n,
            }
        }
    };
    let _ = tokio::time::timeout(PREVIEW_WAIT, more).await;
    let seen = &seen[..have];
    let line_end = seen.iter().position(|&b| b == b'\n');
    let line = &seen[..line_end.unwrap_or(seen.len())];
    let mut shown = &line[..line.len().min(PREVIEW)];
    let cut = shown.len() < line.len() || line_end.is_some_and(|end| end + 1 < seen.len());
    if cut {
        // Cut inside a character: show none of it rather than its first bytes as escapes.
        shown = &shown[..crate::render::whole_chars(shown)];
    }
    let text = crate::render::escaped_line(shown);
    if cut { text + "…" } else { text }
}

/// Reads the server's first message, which a sockit server sends unasked. Its bytes are checked
/// as they arrive, so that a server of another kind (a chat banner, a program's output) is named
/// at once by what it sent, rather than read as a length prefix. `heard` is set once any byte
/// came, so that a deadline can tell a silent server from a slow handshake.
async fn first<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    service: ServiceKind,
    heard: &std::sync::atomic::AtomicBool,
) -> Result<Msg, HandshakeError> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                HandshakeError::ClosedSilently { service: service.name() }
            } else {
                ProtoError::Truncated.into()
            });
        }
        heard.store(true, std::sync::atomic::Ordering::Relaxed);
        got += n;
        if !may_begin_handshake(&head[..got]) {
            let sent = preview(r, &head[..got]).await;
            return Err(HandshakeError::Foreign { service: service.name(), sent });
        }
    }
    let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    buf.clear();
    buf.push(head[4]);
    r.take(len as u64 - 1).read_to_end(buf).await?;
    if buf.len() < len {
        return Err(ProtoError::Truncated.into());
    }
    match Msg::decode(buf)? {
        Msg::Error { message, .. } => Err(HandshakeError::Refused(message)),
        m => Ok(m),
    }
}

async fn next<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<Msg, HandshakeError> {
    match read_msg_max(r, buf, HANDSHAKE_MESSAGE).await? {
        Some(Msg::Error { message, .. }) => Err(HandshakeError::Refused(message)),
        Some(m) => Ok(m),
        None => Err(HandshakeError::Closed),
    }
}

/// The server's side: greets, checks the uid (`peer_uid` is `Some` on Unix sockets) and the
/// token, and returns once the client is in. A refused client is told why (after
/// [`FAILURE_DELAY`] for a wrong token) and the error is returned.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    service: ServiceKind,
    policy: &Policy,
    peer_uid: Option<u32>,
) -> Result<(), HandshakeError> {
    let work = async {
        if let Some(uid) = peer_uid.filter(|&uid| !policy.uid_allowed(uid)) {
            let why = format!("uid {uid} may not use this server (--allow-uid)");
            write_msg(stream, &Msg::error(code::AUTH, why.clone())).await?;
            return Err(HandshakeError::Denied(why));
        }
        if policy.token.is_none() && peer_uid.is_none() {
            // Only a Unix socket, where the kernel names the peer, may go without a token.
            let why = "this server has no token, and on TCP it needs one".to_string();
            write_msg(stream, &Msg::error(code::AUTH, why.clone())).await?;
            return Err(HandshakeError::Denied(why));
        }
        let server_nonce = nonce();
        let hello = Msg::Hello { version: proto::VERSION, service, auth: policy.token.is_some(), nonce: server_nonce };
        write_msg(stream, &hello).await?;
        let Some(token) = &policy.token else { return Ok(()) };
        let mut buf = Vec::new();
        let (client_nonce, mac) = match next(stream, &mut buf).await {
            Ok(Msg::Auth { nonce, mac }) => (nonce, mac),
            Err(HandshakeError::Proto(e)) if !matches!(e, ProtoError::Io(_)) => {
                let _ = write_msg(stream, &Msg::error(code::PROTOCOL, e.to_string())).await;
                return Err(HandshakeError::Proto(e));
            }
            Err(e) => return Err(e),
            Ok(other) => {
                let why = format!("expected AUTH, got {}", other.name());
                write_msg(stream, &Msg::error(code::PROTOCOL, why.clone())).await?;
                return Err(HandshakeError::Denied(why));
            }
        };
        if !token.verify(CLIENT_LABEL, service, &server_nonce, &client_nonce, &mac) {
            let _one_at_a_time = policy.failures.lock().await;
            tokio::time::sleep(FAILURE_DELAY).await;
            let why = "wrong token".to_string();
            write_msg(stream, &Msg::error(code::AUTH, why.clone())).await?;
            return Err(HandshakeError::Denied(why));
        }
        let proof = token.server_proof(service, &server_nonce, &client_nonce);
        write_msg(stream, &Msg::Welcome { proof }).await?;
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE_DEADLINE, work).await.unwrap_or(Err(HandshakeError::Deadline))
}

/// The client's side: checks the server runs `service`, proves the token if the server asks for
/// one, and checks the server's proof. `server_uid` is the server's uid on a Unix socket
/// (`None` on TCP): a server that asks for no token is trusted only there, and only when it runs
/// as this user or as root, since anyone could have bound the address and asked for nothing.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    service: ServiceKind,
    token: Option<&Token>,
    server_uid: Option<u32>,
) -> Result<(), HandshakeError> {
    let heard = std::sync::atomic::AtomicBool::new(false);
    let work = async {
        let mut buf = Vec::new();
        let (server_nonce, auth) = match first(stream, &mut buf, service, &heard).await? {
            Msg::Hello { version, service: theirs, auth, nonce } => {
                if version != proto::VERSION {
                    return Err(HandshakeError::Mismatch(format!(
                        "the server speaks protocol version {version}, this sockit speaks {}",
                        proto::VERSION
                    )));
                }
                if theirs != service {
                    return Err(HandshakeError::Mismatch(format!(
                        "the server runs the {} service, not {}",
                        theirs.name(),
                        service.name()
                    )));
                }
                (nonce, auth)
            }
            other => return Err(HandshakeError::Unexpected { expected: "HELLO", got: other.name() }),
        };
        if !auth {
            let me = rustix::process::geteuid().as_raw();
            return match server_uid {
                Some(uid) if uid == me || uid == 0 => Ok(()),
                Some(uid) => Err(HandshakeError::Denied(format!(
                    "the server runs as uid {uid} and asks for no token; not trusting it"
                ))),
                None => Err(HandshakeError::Denied(
                    "the server asks for no token, which a sockit server on TCP never does; not trusting it".into(),
                )),
            };
        }
        let Some(token) = token else {
            return Err(HandshakeError::Denied(format!(
                "the server wants a token: pass --token-file FILE or set ${TOKEN_ENV}"
            )));
        };
        let client_nonce = nonce();
        let mac = token.client_mac(service, &server_nonce, &client_nonce);
        write_msg(stream, &Msg::Auth { nonce: client_nonce, mac }).await?;
        match next(stream, &mut buf).await {
            Ok(Msg::Welcome { proof }) => {
                if token.verify(SERVER_LABEL, service, &server_nonce, &client_nonce, &proof) {
                    Ok(())
                } else {
                    Err(HandshakeError::Denied("the server could not prove it holds the token".into()))
                }
            }
            Ok(other) => Err(HandshakeError::Unexpected { expected: "WELCOME", got: other.name() }),
            Err(HandshakeError::Refused(why)) => {
                Err(HandshakeError::Denied(format!("the server refused the token: {why}")))
            }
            Err(e) => Err(e),
        }
    };
    match tokio::time::timeout(HANDSHAKE_DEADLINE, work).await {
        Ok(done) => done,
        Err(_) if !heard.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(HandshakeError::Silent { service: service.name() })
        }
        Err(_) => Err(HandshakeError::Deadline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::read_msg;
    use bytes::BytesMut;

    fn token(s: &str) -> Token {
        Token::new(s.as_bytes(), "test").unwrap()
    }

    #[test]
    fn tokens_are_checked() {
        assert!(matches!(Token::new(b"  \n", "x"), Err(TokenError::Empty(_))));
        assert!(matches!(Token::new(b"short", "x"), Err(TokenError::Short(_))));
        assert_eq!(token("0123456789abcdef\n").0, b"0123456789abcdef");
    }

    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Token::from_file(&path), Err(TokenError::Exposed { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::from_file(&path).is_ok());
        assert!(matches!(Token::from_file(&dir.path().join("missing")), Err(TokenError::Read { .. })));
    }

    /// A directory passed the open and was refused for its mode ("chmod 600 DIR"), a named pipe
    /// blocked the open until someone wrote to it, and a socket could not be opened.
    #[test]
    fn token_files_must_be_files() {
        let dir = tempfile::tempdir().unwrap();
        let kind = |path: &Path| match Token::from_file(path) {
            Err(TokenError::NotAFile { kind, .. }) => kind,
            other => panic!("{}: {other:?}", path.display()),
        };
        assert_eq!(kind(dir.path()), "a directory");
        assert_eq!(kind(Path::new("/dev/null")), "a character device");
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(kind(&sock), "a socket");
        assert_eq!(
            Token::from_file(dir.path()).unwrap_err().to_string(),
            format!("token file {} is a directory, not a file", dir.path().display())
        );
        // A pipe with nobody writing is an empty token, at once.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        assert!(matches!(Token::from_file(&fifo), Err(TokenError::Empty(_))));
        // A pipe with a writer is read to its end: `--token-file <(command)` gives one.
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&read_end));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            io::Write::write_all(&mut std::fs::File::from(write_end), b"0123456789abcdef0123\n").unwrap();
        });
        assert_eq!(Token::from_file(Path::new(&path)).unwrap().0, b"0123456789abcdef0123");
        writer.join().unwrap();
    }

    /// The MAC is HMAC-SHA256 over the documented bytes (the same vector is in PROTOCOL.md's
    /// Python client test).
    #[test]
    fn mac_is_hmac_sha256_of_the_documented_message() {
        let t = token("0123456789abcdef");
        let mac = t.client_mac(ServiceKind::Exec, &[1; 32], &[2; 32]);
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"0123456789abcdef").unwrap();
        let mut msg = b"sockit-auth-v1 client\x01".to_vec();
        msg.extend([1; 32]);
        msg.extend([2; 32]);
        m.update(&msg);
        assert_eq!(&mac[..], &m.finalize().into_bytes()[..]);
        assert_ne!(mac, t.server_proof(ServiceKind::Exec, &[1; 32], &[2; 32]));
        assert_ne!(mac, t.client_mac(ServiceKind::Files, &[1; 32], &[2; 32]));
    }

    async fn pair(
        server_token: Option<&str>,
        client_token: Option<&str>,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(server_token.map(token), vec![]);
        let ct = client_token.map(token);
        tokio::join!(
            server_handshake(&mut a, ServiceKind::Exec, &policy, None),
            client_handshake(&mut b, ServiceKind::Exec, ct.as_ref(), None)
        )
    }

    #[tokio::test]
    async fn right_token_gets_in() {
        let (s, c) = pair(Some("0123456789abcdef"), Some("0123456789abcdef")).await;
        s.unwrap();
        c.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_or_missing_token_is_refused() {
        let (s, c) = pair(Some("0123456789abcdef"), Some("0123456789abcdeX")).await;
        assert!(matches!(s, Err(HandshakeError::Denied(_))));
        assert!(c.unwrap_err().to_string().contains("refused the token: wrong token"));
        let (_, c) = pair(Some("0123456789abcdef"), None).await;
        assert!(c.unwrap_err().to_string().contains("wants a token"));
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_tokens_are_answered_one_per_second_however_many_connections_try() {
        let policy = Policy::new(Some(token("0123456789abcdef")), vec![]);
        let started = tokio::time::Instant::now();
        let attempt = |policy: Policy| async move {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let wrong = token("0123456789abcdeX");
            let (s, _) = tokio::join!(
                server_handshake(&mut a, ServiceKind::Exec, &policy, None),
                client_handshake(&mut b, ServiceKind::Exec, Some(&wrong), None)
            );
            assert!(matches!(s, Err(HandshakeError::Denied(_))));
            started.elapsed()
        };
        let (x, y, z) = tokio::join!(attempt(policy.clone()), attempt(policy.clone()), attempt(policy.clone()));
        let mut took = [x, y, z];
        took.sort();
        assert!(took[2] >= FAILURE_DELAY * 3, "three refusals in {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_auth_does_not_replay() {
        // Record a good AUTH for one server nonce, then present it to a new HELLO.
        let t = token("0123456789abcdef");
        let old_nonce = nonce();
        let client_nonce = nonce();
        let recorded =
            Msg::Auth { nonce: client_nonce, mac: t.client_mac(ServiceKind::Exec, &old_nonce, &client_nonce) };
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(Some(t), vec![]);
        let attacker = async {
            let mut buf = Vec::new();
            let hello = read_msg(&mut b, &mut buf).await.unwrap().unwrap();
            assert!(matches!(hello, Msg::Hello { auth: true, .. }));
            write_msg(&mut b, &recorded).await.unwrap();
            read_msg(&mut b, &mut buf).await.unwrap()
        };
        let (s, answer) = tokio::join!(server_handshake(&mut a, ServiceKind::Exec, &policy, None), attacker);
        assert!(matches!(s, Err(HandshakeError::Denied(_))));
        assert!(matches!(answer, Some(Msg::Error { code: code::AUTH, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_hits_the_deadline() {
        let (mut a, _b) = tokio::io::duplex(4096);
        let policy = Policy::new(Some(token("0123456789abcdef")), vec![]);
        let r = server_handshake(&mut a, ServiceKind::Exec, &policy, None).await;
        assert!(matches!(r, Err(HandshakeError::Deadline)));
    }

    /// Bytes that keep coming, one a second, do not extend the deadline: it is for the whole
    /// handshake, not for each read.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_hits_the_deadline_too() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(Some(token("0123456789abcdef")), vec![]);
        let started = tokio::time::Instant::now();
        let trickle = async {
            let mut buf = Vec::new();
            read_msg(&mut b, &mut buf).await.unwrap().unwrap();
            // The length of an AUTH message, then its bytes, one a second, never all of them.
            for byte in [0u8, 0, 0, 65].into_iter().chain(std::iter::repeat(0x02)) {
                if tokio::io::AsyncWriteExt::write_all(&mut b, &[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let r = tokio::select! {
            r = server_handshake(&mut a, ServiceKind::Exec, &policy, None) => r,
            _ = trickle => unreachable!("the trickle never ends by itself"),
        };
        assert!(matches!(r, Err(HandshakeError::Deadline)), "{r:?}");
        let took = started.elapsed();
        assert!(took >= HANDSHAKE_DEADLINE && took < HANDSHAKE_DEADLINE + Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn unknown_uid_is_refused_before_hello() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(None, vec![]);
        let other = rustix::process::geteuid().as_raw().wrapping_add(1);
        let (s, c) = tokio::join!(
            server_handshake(&mut a, ServiceKind::Exec, &policy, Some(other)),
            client_handshake(&mut b, ServiceKind::Exec, None, Some(0))
        );
        assert!(matches!(s, Err(HandshakeError::Denied(_))));
        assert!(c.unwrap_err().to_string().contains("may not use this server"));
    }

    #[tokio::test]
    async fn a_server_without_a_token_is_trusted_only_on_a_unix_socket_of_ours() {
        let me = rustix::process::geteuid().as_raw();
        for (server_uid, ok) in [(Some(me), true), (Some(0), true), (Some(me.wrapping_add(1)), false), (None, false)] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let policy = Policy::new(None, vec![]);
            let token = token("0123456789abcdef");
            let (_, c) = tokio::join!(
                server_handshake(&mut a, ServiceKind::Exec, &policy, Some(me)),
                client_handshake(&mut b, ServiceKind::Exec, Some(&token), server_uid)
            );
            assert_eq!(c.is_ok(), ok, "server uid {server_uid:?}: {c:?}");
        }
    }

    #[tokio::test]
    async fn no_token_on_tcp_is_refused_by_the_library_too() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(None, vec![]);
        let (s, c) = tokio::join!(
            server_handshake(&mut a, ServiceKind::Exec, &policy, None),
            client_handshake(&mut b, ServiceKind::Exec, None, None)
        );
        assert!(matches!(s, Err(HandshakeError::Denied(_))));
        assert!(c.is_err());
    }

    #[test]
    fn only_a_hello_or_an_error_may_begin_a_handshake() {
        let mut hello = BytesMut::new();
        Msg::Hello { version: 1, service: ServiceKind::Exec, auth: true, nonce: [7; 32] }.encode(&mut hello);
        let mut error = BytesMut::new();
        Msg::error(code::FAILED, "server busy").encode(&mut error);
        let table: [(&[u8], bool); 12] = [
            (&hello[..5], true),
            (&error[..5], true),
            (&[0, 0, 4, 0, proto::kind::ERROR], true),
            (&[0, 0, 4, 1], false),
            (&[0, 0, 5], false),
            (&[0, 1], false),
            (&[0, 0, 0, 1], false),
            (&[0, 0, 0, 36, proto::kind::WELCOME], false),
            (&[0, 0, 0, 37, proto::kind::HELLO], false),
            (b"*", false),
            (b"* we", false),
            (b"\x16\x03\x01", false),
        ];
        for (first, may) in table {
            assert_eq!(may_begin_handshake(first), may, "{first:?}");
            if may {
                for end in 1..first.len() {
                    assert!(may_begin_handshake(&first[..end]), "{:?}", &first[..end]);
                }
            }
        }
    }

    /// What a client says when the server's first bytes are not sockit's: the server's first
    /// line, escaped and cut, rather than a length read from its text.
    #[tokio::test]
    async fn a_server_that_speaks_first_in_another_protocol_is_named_at_once() {
        let t = token("0123456789abcdef");
        // Cut at 48 bytes, inside the 24th two-byte character: none of that one is shown.
        let (long, long_shown) = (format!("a{}", "ÿ".repeat(30)), format!("a{}…", "ÿ".repeat(23)));
        let table: [(&[u8], &str); 6] = [
            (
                b"* welcome, guest1. /nick NAME renames you, /who lists who is here\n",
                "* welcome, guest1. /nick NAME renames you, /who …",
            ),
            (b"hi\n", "hi"),
            (b"hi\nmore\n", "hi…"),
            (b"\x1b[2Jgotcha", "\\x1b[2Jgotcha"),
            (b"\x00\x00\x10\x00binary", "\\x00\\x00\\x10\\x00binary"),
            (long.as_bytes(), &long_shown),
        ];
        for (sent, shown) in table {
            let (mut a, mut b) = tokio::io::duplex(4096);
            tokio::io::AsyncWriteExt::write_all(&mut a, sent).await.unwrap();
            let e = client_handshake(&mut b, ServiceKind::Files, Some(&t), None).await.unwrap_err();
            assert!(matches!(&e, HandshakeError::Foreign { service: "files", sent } if sent == shown), "{e:?}");
            assert_eq!(e.to_string(), format!("the server is not a sockit files server: it sent \"{shown}\""));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_told_from_a_slow_handshake() {
        let t = token("0123456789abcdef");
        let (_a, mut b) = tokio::io::duplex(4096);
        let e = client_handshake(&mut b, ServiceKind::Exec, Some(&t), None).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Silent { service: "exec" }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("sent no handshake within 10s") && text.contains("use tls://"), "{text}");
        // Half a HELLO, then nothing: a sockit server that stalled, not another kind.
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut hello = BytesMut::new();
        Msg::Hello { version: 1, service: ServiceKind::Exec, auth: true, nonce: [7; 32] }.encode(&mut hello);
        tokio::io::AsyncWriteExt::write_all(&mut a, &hello[..10]).await.unwrap();
        let e = client_handshake(&mut b, ServiceKind::Exec, Some(&t), None).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Deadline), "{e:?}");
        // A close before any byte is said as such, with the same question.
        let (a, mut b) = tokio::io::duplex(4096);
        drop(a);
        let e = client_handshake(&mut b, ServiceKind::Files, Some(&t), None).await.unwrap_err();
        assert!(matches!(e, HandshakeError::ClosedSilently { service: "files" }), "{e:?}");
        assert!(e.to_string().contains("is it a sockit files server?"), "{e}");
    }

    #[tokio::test]
    async fn wrong_service_is_named() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let policy = Policy::new(None, vec![]);
        let (_, c) = tokio::join!(
            server_handshake(&mut a, ServiceKind::Files, &policy, Some(0)),
            client_handshake(&mut b, ServiceKind::Exec, None, Some(0))
        );
        assert!(c.unwrap_err().to_string().contains("runs the files service, not exec"));
    }
}
