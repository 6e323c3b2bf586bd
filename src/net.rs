//! Sockets for every endpoint: binding, accepting and connecting over TCP, UDP and the three
//! Unix-domain socket types, with errors a person can act on.
//!
//! [`bind`] turns an [`Endpoint`] into a [`ServerSocket`]: a [`Listener`] for connected
//! families (TCP, `unix:`, `unix-seqpacket:`) or a [`DatagramSocket`] (UDP, `unix-dgram:`).
//! [`connect`] turns one into a [`ClientSocket`]. Listening sockets get `SO_REUSEADDR` so a
//! server restarts at once, `:PORT` is one dual-stack socket for IPv4 and IPv6, and a Unix socket
//! file is handled with care: a stale one left by a crash is replaced, a live one or any other
//! file is never touched, the mode is set before `listen` so nobody connects in between, and
//! the file is removed when the socket is dropped (only if it is still ours).
//!
//! An `fd://` endpoint binds or connects nothing: it takes the socket the parent passed
//! ([`crate::inherit`]) and wraps it as what it is. A listening socket becomes a [`Listener`], a
//! datagram socket a [`DatagramSocket`], and a connected stream (inetd's way) a listener of
//! exactly one connection ([`Listener::is_single`]). Its socket file, if any, is not ours and
//! is never removed.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};

use crate::endpoint::{Endpoint, Family, FdRef, Host, IpProto, SocketStyle, UnixAddr, UnixKind};
use crate::inherit::{InheritError, Inherited, SockFamily, SockState};
use crate::tls::{ClientTls, HandshakeFailure, ServerTls, TlsError, TlsStream};

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its final NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// How to bind a server socket.
#[derive(Debug, Clone)]
pub struct BindOptions {
    /// The listen backlog: connections the kernel completes before `accept` takes them.
    pub backlog: u32,
    /// The permission bits of a new Unix socket file.
    pub unix_mode: u32,
    /// The certificate a `tls://` endpoint serves (required there, refused elsewhere).
    pub tls: Option<ServerTls>,
    /// How many listening sockets to open on a TCP address, all bound to it with
    /// `SO_REUSEPORT`, so that a server can give each of its threads its own and the kernel
    /// spreads new connections over them ([`crate::server::run`] does). Other endpoints get
    /// one. The address is first bound alone, without sharing, so a port another program holds
    /// is refused as usual, and a second server cannot join this one's sockets.
    pub listeners: usize,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions { backlog: 1024, unix_mode: 0o600, tls: None, listeners: 1 }
    }
}

/// Why a socket could not be bound or connected. Each message is one lower-case line that names
/// the endpoint and, where there is one, a hint.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Another socket holds the address.
    #[error(
        "cannot listen on {endpoint}: address already in use (hint: another program listens there; stop it or pick another port, `ss -ltnp` shows who)"
    )]
    AddrInUse {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// The address is not one of this machine's.
    #[error(
        "cannot listen on {endpoint}: address not available on this machine (hint: use 127.0.0.1, :PORT or an address `ip addr` lists)"
    )]
    AddrNotAvailable {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// The operating system refused.
    #[error("cannot {action} {endpoint}: permission denied (hint: {hint})")]
    PermissionDenied {
        /// `listen on` or `connect to`.
        action: &'static str,
        /// The endpoint, as written.
        endpoint: String,
        /// What usually fixes it.
        hint: &'static str,
    },
    /// The server took the connection and reset it at once, before it was ever used.
    #[error(
        "cannot connect to {endpoint}: the server reset the connection (hint: access rules, a connection limit or a relay's unreachable target do this at once; the server's log says why)"
    )]
    ResetAtOnce {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// Nothing accepts connections at the address.
    #[error(
        "cannot connect to {endpoint}: nothing is listening there (hint: is the server running, on this address and port? `sockit serve {endpoint} SERVICE` starts one)"
    )]
    Refused {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// The Unix socket there is of another type than the endpoint's scheme says.
    #[error("cannot connect to {endpoint}: the socket there is {found}, not {tried} (hint: connect to {instead})")]
    WrongUnixKind {
        /// The endpoint, as written.
        endpoint: String,
        /// The type the endpoint asked for, in words.
        tried: String,
        /// The type (or the two possible types) of the socket that is there, in words.
        found: String,
        /// The endpoint (or the two) that would fit.
        instead: String,
    },
    /// A Unix endpoint's path is a file of another kind (connecting there is refused).
    #[error(
        "cannot connect to {endpoint}: it is {kind}, not a socket (hint: a server makes its socket file when it starts; check the path)"
    )]
    FileNotSocket {
        /// The endpoint, as written.
        endpoint: String,
        /// What the file is, in words ("a regular file").
        kind: &'static str,
    },
    /// A client was given port 0, which only a listener can use (the kernel picks a free port).
    #[error(
        "cannot connect to {endpoint}: port 0 is for listening, where the kernel picks a free port; a client needs the server's port"
    )]
    PortZero {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// The Unix socket path does not exist.
    #[error("cannot connect to {endpoint}: no such socket file (hint: is the server running, and is the path right?)")]
    NoSocketFile {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// The host name did not resolve.
    #[error("unknown host '{host}' (hint: check the spelling, or use an IP address such as 127.0.0.1)")]
    UnknownHost {
        /// The name as written.
        host: String,
    },
    /// The host name resolved, but not to an address of the endpoint's family.
    #[error("host '{host}' has no {family} address")]
    NoAddressOfFamily {
        /// The name as written.
        host: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// An abstract Unix socket name is longer than the kernel allows.
    #[error(
        "abstract unix socket name '{name}' is {len} bytes; the limit is {MAX_UNIX_PATH} (hint: use a shorter name)"
    )]
    NameTooLong {
        /// The name, with its `@`.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A Unix socket path is longer than the kernel allows.
    #[error(
        "unix socket path '{path}' is {len} bytes; the limit is {MAX_UNIX_PATH} (hint: use a shorter or relative path, or an abstract name like unix:@name)"
    )]
    PathTooLong {
        /// The path.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A server already listens on the Unix socket path.
    #[error(
        "cannot listen on {endpoint}: a server is already listening on that socket (hint: stop it or choose another path)"
    )]
    LiveSocket {
        /// The endpoint, as written.
        endpoint: String,
    },
    /// Something that is not a socket is in the way.
    #[error("cannot listen on {endpoint}: '{path}' exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The endpoint, as written.
        endpoint: String,
        /// The path in the way.
        path: String,
    },
    /// Connecting took longer than allowed.
    #[error("cannot connect to {endpoint}: timed out after {}", humantime::format_duration(*after))]
    TimedOut {
        /// The endpoint, as written.
        endpoint: String,
        /// The limit.
        after: Duration,
    },
    /// An inherited socket (`fd://`) that is missing, not a socket, or not usable here.
    #[error(transparent)]
    Inherit(#[from] InheritError),
    /// The server's certificate did not pass the client's check.
    #[error("cannot connect to {endpoint}: certificate not trusted: {why} (hint: {hint})")]
    TlsUntrusted {
        /// The endpoint, as written.
        endpoint: String,
        /// What was wrong with the certificate.
        why: String,
        /// What may help.
        hint: &'static str,
    },
    /// The TLS handshake failed for another reason.
    #[error("cannot connect to {endpoint}: {why}")]
    TlsHandshake {
        /// The endpoint, as written.
        endpoint: String,
        /// What went wrong, in words that say it was the TLS handshake.
        why: String,
    },
    /// A TLS setting could not be used (the system's roots, a certificate).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A `tls://` endpoint bound without a certificate, or a certificate given for another
    /// endpoint.
    #[error("cannot listen on {endpoint}: {why}")]
    TlsSetup {
        /// The endpoint, as written.
        endpoint: String,
        /// What does not fit.
        why: &'static str,
    },
    /// A Unix socket file cannot be made: its directory does not exist.
    #[error(
        "cannot listen on {endpoint}: there is no directory '{dir}' (hint: create it, or choose a path in one that exists)"
    )]
    NoDirectory {
        /// The endpoint, as written.
        endpoint: String,
        /// The directory that is missing (`.` for a bare relative name).
        dir: String,
    },
    /// Any other failure of a system call.
    #[error("cannot {action} {endpoint}: {}", crate::render::io_error(error))]
    Io {
        /// What was being done.
        action: &'static str,
        /// The endpoint, as written.
        endpoint: String,
        /// The operating system's error (shown in the message, so not a `source`).
        error: io::Error,
    },
}

impl NetError {
    fn from_io(action: &'static str, endpoint: &Endpoint, e: io::Error) -> NetError {
        let endpoint_text = endpoint.to_string();
        let listening = action == "listen on";
        match e.raw_os_error() {
            Some(libc::EADDRINUSE) => NetError::AddrInUse { endpoint: endpoint_text },
            Some(libc::EADDRNOTAVAIL) if listening => NetError::AddrNotAvailable { endpoint: endpoint_text },
            Some(libc::EACCES) | Some(libc::EPERM) => {
                let hint = match endpoint {
                    Endpoint::Ip { .. } if listening => {
                        "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port from 1024 up"
                    }
                    Endpoint::Ip { .. } => "a firewall or security policy refused it",
                    Endpoint::Unix { .. } if listening => {
                        "you cannot create files in that directory; choose a path you own"
                    }
                    Endpoint::Unix { .. } => {
                        "the socket file's permissions do not let you in (see the server's --mode)"
                    }
                    Endpoint::Fd(_) => "a security policy refused it",
                };
                NetError::PermissionDenied { action, endpoint: endpoint_text, hint }
            }
            Some(libc::ECONNREFUSED)
                if let Endpoint::Unix { addr: UnixAddr::Path(path), .. } = endpoint
                    && let Ok(meta) = std::fs::metadata(path)
                    && !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) =>
            {
                NetError::FileNotSocket { endpoint: endpoint_text, kind: crate::fsroot::kind_name_of(&meta) }
            }
            Some(libc::ECONNREFUSED) => NetError::Refused { endpoint: endpoint_text },
            Some(libc::ECONNRESET) if action == "connect to" => NetError::ResetAtOnce { endpoint: endpoint_text },
            Some(libc::ENOENT) if !listening => NetError::NoSocketFile { endpoint: endpoint_text },
            Some(libc::ENOENT) if let Endpoint::Unix { addr: UnixAddr::Path(path), .. } = endpoint => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                NetError::NoDirectory { endpoint: endpoint_text, dir: dir.display().to_string() }
            }
            Some(libc::EPROTOTYPE) if !listening && let Endpoint::Unix { kind, addr } = endpoint => {
                wrong_unix_kind(endpoint_text, *kind, addr)
            }
            _ => NetError::Io { action, endpoint: endpoint_text, error: e },
        }
    }
}

/// What to say when connecting as `tried` met a Unix socket of another type (`EPROTOTYPE`).
/// Which of the other two it is, a datagram connect tells without the server noticing (no
/// packet is sent); a stream or seqpacket connect would be accepted and logged, so between
/// those two the message names both.
fn wrong_unix_kind(endpoint: String, tried: UnixKind, addr: &UnixAddr) -> NetError {
    use UnixKind::{Dgram, Seqpacket, Stream};
    let is_dgram = || {
        let probe = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None).ok()?;
        let sockaddr = unix_sockaddr(&Endpoint::Unix { kind: Dgram, addr: addr.clone() }, addr).ok()?;
        // A datagram socket connected to a peer of its own refuses others with EPERM, which
        // only comes once the type matched.
        match probe.connect(&sockaddr) {
            Ok(()) => Some(true),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Some(true),
            Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => Some(false),
            Err(_) => None,
        }
    };
    let found: &[UnixKind] = match (tried, is_dgram()) {
        (Dgram, _) => &[Stream, Seqpacket],
        (_, Some(true)) => &[Dgram],
        (Stream, Some(false)) => &[Seqpacket],
        (Seqpacket, Some(false)) => &[Stream],
        (Stream, None) => &[Seqpacket, Dgram],
        (Seqpacket, None) => &[Stream, Dgram],
    };
    let word = |k: &UnixKind| match k {
        Stream => "stream",
        Dgram => "datagram",
        Seqpacket => "seqpacket",
    };
    let join = |f: &dyn Fn(&UnixKind) -> String| found.iter().map(f).collect::<Vec<_>>().join(" or ");
    NetError::WrongUnixKind {
        endpoint,
        tried: format!("a {} socket", word(&tried)),
        found: format!("a {} socket", join(&|k| word(k).to_owned())),
        instead: join(&|k| Endpoint::Unix { kind: *k, addr: addr.clone() }.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// The address of the other end of a connection or datagram.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IP peer.
    Inet(SocketAddr),
    /// A Unix-domain peer with a path or abstract name; datagram replies go there.
    Unix(UnixAddr),
    /// A Unix-domain peer without a name (the usual case for a connecting client), with its
    /// credentials where the kernel reports them.
    UnixUnnamed {
        /// The peer's process id, if known.
        pid: Option<i32>,
        /// The peer's user id, if known.
        uid: Option<u32>,
    },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An IPv4 client of a dual-stack socket arrives as `::ffff:a.b.c.d`; it is an IPv4
            // client, and is shown as one.
            PeerAddr::Inet(SocketAddr::V6(a)) if let Some(v4) = a.ip().to_ipv4_mapped() => {
                write!(f, "{v4}:{}", a.port())
            }
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix(a) => write!(f, "unix:{a}"),
            PeerAddr::UnixUnnamed { pid: Some(pid), uid: Some(uid) } => write!(f, "unix(pid {pid}, uid {uid})"),
            PeerAddr::UnixUnnamed { .. } => f.write_str("unix(unnamed)"),
        }
    }
}

fn peer_from_tokio_unix(addr: &tokio::net::unix::SocketAddr) -> Option<PeerAddr> {
    if let Some(p) = addr.as_pathname() {
        return Some(PeerAddr::Unix(UnixAddr::Path(p.to_path_buf())));
    }
    addr.as_abstract_name().map(|n| PeerAddr::Unix(UnixAddr::Abstract(n.to_vec())))
}

/// Checks, without binding or connecting, that the kernel could take `endpoint`'s address: a
/// Unix path or abstract name must fit in `sun_path` ([`NetError::PathTooLong`],
/// [`NetError::NameTooLong`]). Other endpoints pass. A relay checks its target this way before it
/// serves, rather than failing each client.
pub fn check_address(endpoint: &Endpoint) -> Result<(), NetError> {
    match endpoint {
        Endpoint::Unix { addr, .. } => unix_sockaddr(endpoint, addr).map(drop),
        _ => Ok(()),
    }
}

fn unix_sockaddr(endpoint: &Endpoint, addr: &UnixAddr) -> Result<SockAddr, NetError> {
    let bytes: Vec<u8> = match addr {
        UnixAddr::Path(p) => {
            use std::os::unix::ffi::OsStrExt;
            let b = p.as_os_str().as_bytes();
            if b.len() > MAX_UNIX_PATH {
                return Err(NetError::PathTooLong { path: p.display().to_string(), len: b.len() });
            }
            b.to_vec()
        }
        UnixAddr::Abstract(name) => {
            if name.len() > MAX_UNIX_PATH {
                return Err(NetError::NameTooLong {
                    name: format!("@{}", String::from_utf8_lossy(name)),
                    len: name.len(),
                });
            }
            let mut b = Vec::with_capacity(name.len() + 1);
            b.push(0);
            b.extend_from_slice(name);
            b
        }
    };
    use std::os::unix::ffi::OsStrExt;
    SockAddr::unix(Path::new(std::ffi::OsStr::from_bytes(&bytes))).map_err(|e| NetError::Io {
        action: "use",
        endpoint: endpoint.to_string(),
        error: e,
    })
}

fn std_unix_addr(addr: &UnixAddr) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match addr {
        UnixAddr::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
        UnixAddr::Abstract(n) => std::os::unix::net::SocketAddr::from_abstract_name(n),
    }
}

/// The addresses a client of `endpoint` would try, in order: as [`connect`] resolves them (the
/// local host for no host, and only the endpoint's family). Empty for an endpoint that is not
/// an IP one.
pub async fn connect_addresses(endpoint: &Endpoint) -> Result<Vec<SocketAddr>, NetError> {
    match endpoint {
        Endpoint::Ip { family, host, port, .. } => resolve(endpoint, *family, host, *port, false).await,
        _ => Ok(Vec::new()),
    }
}

async fn resolve(
    endpoint: &Endpoint,
    family: Family,
    host: &Host,
    port: u16,
    listening: bool,
) -> Result<Vec<SocketAddr>, NetError> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Unspecified if listening => match family {
            Family::V4 => vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)],
            // `Any` binds one dual-stack IPv6 socket; see `bind_ip`.
            Family::V6 | Family::Any => vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)],
        },
        Host::Unspecified => match family {
            Family::V6 => vec![SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)],
            Family::V4 => vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)],
            Family::Any => {
                vec![
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
                ]
            }
        },
        Host::Name(name) => match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(it) => it.collect(),
            Err(_) => return Err(NetError::UnknownHost { host: name.clone() }),
        },
    };
    let wanted: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    if wanted.is_empty() {
        let host = match host {
            Host::Name(n) => n.clone(),
            _ => endpoint.to_string(),
        };
        return Err(match family {
            Family::V6 => NetError::NoAddressOfFamily { host, family: "IPv6" },
            Family::V4 => NetError::NoAddressOfFamily { host, family: "IPv4" },
            Family::Any => NetError::UnknownHost { host },
        });
    }
    Ok(wanted)
}

// ---------------------------------------------------------------------------------------------
// Socket files

/// A Unix socket file this process created. Dropping it removes the file, but only while the
/// file at that path is still the one we bound: a file replaced by someone else is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn claim(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() })
    }

    /// The path of the socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes room for a new socket at `path`: nothing there is fine; a socket nobody answers on is
/// a stale leftover and is removed; a live socket or any other kind of file is an error.
fn clear_stale_socket(endpoint: &Endpoint, path: &Path, ty: Type) -> Result<(), NetError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NetError::from_io("listen on", endpoint, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(NetError::NotASocket { endpoint: endpoint.to_string(), path: path.display().to_string() });
    }
    // A listener the kernel shows on this very file is live; asking is quieter than connecting,
    // which the live server would log as a client. Not found (or not asked: sock_diag sees only
    // this network namespace), the connection decides.
    if ty != Type::DGRAM && crate::diag::unix_listener_on(&meta).unwrap_or(false) {
        return Err(NetError::LiveSocket { endpoint: endpoint.to_string() });
    }
    let io_err = |e| NetError::from_io("listen on", endpoint, e);
    let probe = Socket::new(Domain::UNIX, ty.nonblocking(), None).map_err(io_err)?;
    let addr = SockAddr::unix(path).map_err(io_err)?;
    match probe.connect(&addr) {
        // Someone answers (or is too busy to, which is just as alive).
        Ok(()) => Err(NetError::LiveSocket { endpoint: endpoint.to_string() }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINPROGRESS) | Some(libc::EPROTOTYPE)) => {
            Err(NetError::LiveSocket { endpoint: endpoint.to_string() })
        }
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        },
        Err(e) => Err(io_err(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Server sockets

/// A bound server socket: a listener for connected families, a datagram socket otherwise.
#[derive(Debug)]
pub enum ServerSocket {
    /// TCP, `unix:` or `unix-seqpacket:`.
    Listener(Listener),
    /// UDP or `unix-dgram:`.
    Datagram(DatagramSocket),
}

impl ServerSocket {
    /// Serves a socket the program made itself: a listening `std::net::TcpListener`,
    /// `UnixListener` or `socket2::Socket`, a bound `UdpSocket`, or a connected socket (served as
    /// the one client, as from inetd). Ownership passes to the server, which makes it
    /// non-blocking and closes it when done; the family, type and state are read from the socket.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mine = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let socket = sockit::net::ServerSocket::from_socket(mine)?;
    /// assert!(socket.local_endpoint().starts_with("tcp://127.0.0.1:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_socket(socket: impl Into<OwnedFd>) -> Result<ServerSocket, NetError> {
        let fd: OwnedFd = socket.into();
        let named = FdRef::Number(fd.as_raw_fd());
        let endpoint = Endpoint::Fd(named.clone());
        let info = crate::inherit::describe(std::os::fd::AsFd::as_fd(&fd), &named)?;
        socket2::SockRef::from(&fd).set_nonblocking(true).map_err(|e| NetError::from_io("listen on", &endpoint, e))?;
        let mut socket = serve_socket(&endpoint, &named, fd, &info)?;
        // Its own address, without the "(fd://N)" of a socket that was passed down.
        if let Some(address) = info.address {
            match &mut socket {
                ServerSocket::Listener(l) => l.local = address,
                ServerSocket::Datagram(d) => d.local = address,
            }
        }
        Ok(socket)
    }

    /// The address the socket is bound to, as an endpoint string (with the real port when 0
    /// was asked for). For an inherited socket, where it came from follows in brackets:
    /// `tcp://127.0.0.1:7000 (fd://3)`, `fd://0 (an unnamed unix stream socket)`; the first word
    /// always parses as an endpoint.
    pub fn local_endpoint(&self) -> &str {
        match self {
            ServerSocket::Listener(l) => &l.local,
            ServerSocket::Datagram(d) => &d.local,
        }
    }

    /// Whether one socket serves both IPv4 and IPv6 (`:PORT`).
    pub fn is_dual_stack(&self) -> bool {
        match self {
            ServerSocket::Listener(l) => l.dual_stack,
            ServerSocket::Datagram(d) => d.dual_stack,
        }
    }

    /// Whether this is a listener of one connection, made from an inherited connected socket
    /// (see [`Listener::is_single`]).
    pub fn is_single(&self) -> bool {
        matches!(self, ServerSocket::Listener(l) if l.is_single())
    }
}

/// A listening socket of any connected family.
#[derive(Debug)]
pub struct Listener {
    inner: ListenerInner,
    local: String,
    dual_stack: bool,
    tls: Option<ServerTls>,
    _file: Option<SocketFile>,
    /// More listening sockets on the same TCP address ([`BindOptions::listeners`]), not yet
    /// given to a runtime.
    siblings: Vec<std::net::TcpListener>,
}

#[derive(Debug)]
enum ListenerInner {
    Tcp(TcpListener, NoDelay),
    Unix(UnixListener),
    Seqpacket(UnixSeqpacketListener),
    /// An inherited connected socket: handed out by the first `accept`, then nothing more.
    Single(Option<(Conn, PeerAddr)>),
}

/// An accepted or connected socket of a connected family.
#[derive(Debug)]
pub enum Conn {
    /// A byte stream (TCP or `unix:`).
    Stream(Stream),
    /// A `unix-seqpacket:` socket: every send is one message.
    Seqpacket(UnixSeqpacket),
}

impl Listener {
    /// Accepts the next connection. Cancel-safe: if the future is dropped, no connection is lost.
    ///
    /// On a TLS listener ([`Listener::tls`]) this is the TCP connection before its handshake:
    /// run it with [`crate::tls::accept`] (the server does, in the connection's own task and
    /// under a deadline, so that a slow handshake delays nobody else).
    pub async fn accept(&mut self) -> io::Result<(Conn, PeerAddr)> {
        match &mut self.inner {
            ListenerInner::Tcp(l, nodelay) => {
                let (s, a) = l.accept().await?;
                nodelay.ensure(&s);
                Ok((Conn::Stream(Stream::Tcp(s)), PeerAddr::Inet(a)))
            }
            ListenerInner::Unix(l) => {
                let (s, a) = l.accept().await?;
                let peer = peer_from_tokio_unix(&a).unwrap_or_else(|| {
                    let cred = s.peer_cred().ok();
                    PeerAddr::UnixUnnamed { pid: cred.and_then(|c| c.pid()), uid: cred.map(|c| c.uid()) }
                });
                Ok((Conn::Stream(Stream::Unix(s)), peer))
            }
            ListenerInner::Seqpacket(l) => {
                let s = l.accept().await?;
                mark_messages(&s)?;
                let cred = s.peer_cred().ok();
                let peer =
                    PeerAddr::UnixUnnamed { pid: cred.as_ref().and_then(|c| c.pid()), uid: cred.map(|c| c.uid()) };
                Ok((Conn::Seqpacket(s), peer))
            }
            ListenerInner::Single(slot) => match slot.take() {
                Some(conn) => Ok(conn),
                // Never an error: an accept loop that does not ask `is_single` just waits for
                // its stop signal, as on a listener nobody connects to.
                None => std::future::pending().await,
            },
        }
    }

    /// Whether this listener yields exactly one connection, an inherited connected socket
    /// (inetd's way): the first `accept` returns it at once with its real peer address, and
    /// later ones never finish. A server treats it like `--once`: it stops accepting after that
    /// connection and ends when it is done, without waiting to be told to stop.
    pub fn is_single(&self) -> bool {
        matches!(self.inner, ListenerInner::Single(_))
    }

    /// The bound address as an endpoint string; for an inherited socket followed by where it
    /// came from, as in `tcp://127.0.0.1:7000 (fd://3)`.
    pub fn local_endpoint(&self) -> &str {
        &self.local
    }

    /// The certificate of a `tls://` listener, whose connections need a handshake first.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// How many listening sockets this listener has: more than one when it was bound with
    /// [`BindOptions::listeners`] on a TCP address.
    pub fn sockets(&self) -> usize {
        1 + self.siblings.len()
    }

    /// Whether this is a TCP listener (plain or `tls://`), which [`Listener::into_parts`] splits.
    pub fn is_tcp(&self) -> bool {
        matches!(self.inner, ListenerInner::Tcp(..))
    }

    /// Splits a TCP listener into one [`Unregistered`] listener per socket, to be given each to
    /// its own runtime. Fails only on a listener of another kind.
    pub fn into_parts(self) -> io::Result<Vec<Unregistered>> {
        let ListenerInner::Tcp(first, _) = self.inner else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "only a TCP listener can be split"));
        };
        let first = first.into_std()?;
        let (local, dual_stack, tls) = (self.local, self.dual_stack, self.tls);
        Ok(std::iter::once(first)
            .chain(self.siblings)
            .map(|socket| Unregistered { socket, local: local.clone(), dual_stack, tls: tls.clone() })
            .collect())
    }
}

/// One of the sockets of a listener split by [`Listener::into_parts`], not yet registered with
/// a runtime: [`Unregistered::register`] makes it a [`Listener`] of the runtime it is called in.
#[derive(Debug)]
pub struct Unregistered {
    socket: std::net::TcpListener,
    local: String,
    dual_stack: bool,
    tls: Option<ServerTls>,
}

impl Unregistered {
    /// The listening socket itself, for a server that drives it without a runtime.
    pub(crate) fn into_socket(self) -> std::net::TcpListener {
        self.socket
    }

    /// A listener driven by the current runtime.
    pub fn register(self) -> io::Result<Listener> {
        Ok(Listener {
            inner: ListenerInner::Tcp(TcpListener::from_std(self.socket)?, NoDelay::default()),
            local: self.local,
            dual_stack: self.dual_stack,
            tls: self.tls,
            _file: None,
            siblings: Vec::new(),
        })
    }
}

/// Sets `TCP_NODELAY` on accepted connections at the least cost. Linux (like the BSDs) copies
/// it from the listening socket, where sockit sets it when it binds, so a connection normally
/// has it already and a `setsockopt` per connection would be a wasted system call. The first
/// connection of a listener tells whether that holds (one `getsockopt`); a listener that does
/// not pass it on, such as one inherited from another program, has it set on each connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoDelay {
    /// Whether the listener passes it on, once the first connection has told.
    inherited: Option<bool>,
}

impl NoDelay {
    /// Makes sure the accepted connection `sock` has `TCP_NODELAY`.
    pub(crate) fn ensure(&mut self, sock: &impl std::os::fd::AsFd) {
        let sock = socket2::SockRef::from(sock);
        let inherited = *self.inherited.get_or_insert_with(|| sock.tcp_nodelay().unwrap_or(false));
        if !inherited {
            let _ = sock.set_tcp_nodelay(true);
        }
    }
}

/// What one receive on a `unix-seqpacket:` connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A message, which may be empty: an empty packet is a message.
    Message {
        /// Its length in the buffer.
        len: usize,
        /// It was longer than the buffer, and the rest of it is lost.
        truncated: bool,
    },
    /// The peer shut down its sending side (or closed) and every message it sent has been read.
    End,
}

/// Receives one message from a seqpacket connection, telling an empty message from the end.
/// Exact on a socket [`mark_messages`] has prepared, as every `Conn::Seqpacket` this module
/// makes is. Cancel-safe.
///
/// Both read as zero bytes, with no flag between them: Linux sets neither `MSG_EOR` nor
/// anything else, and `POLLRDHUP` only says that the peer has shut down, not that its messages
/// have all been read (it is up while a queue of packets, empty ones among them, waits). But a
/// receive that takes a packet off the queue returns the packet's control messages, and one that
/// finds the end returns before any (`__unix_dgram_recvmsg` in `net/unix/af_unix.c`). With
/// `SO_TIMESTAMP` on, every packet carries one, so zero bytes without control data is the end.
/// On a socket without it, an empty message while the peer has shut down is taken for the end.
///
/// A peer that closed with packets of ours unread resets the connection, and unlike a stream a
/// seqpacket socket reports that before the packets the peer sent first, which are still queued
/// (the receive takes the socket's error before looking at the queue). They are taken, as on a
/// stream, and the reset is reported only when none was left: after them the connection ends as
/// a close does.
pub async fn recv_packet(sock: &UnixSeqpacket, buf: &mut [u8]) -> io::Result<Packet> {
    match recv_packet_once(sock, buf).await {
        // The reset is reported once, so the next receive finds the queue, or the end at once.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => match recv_packet_once(sock, buf).await? {
            Packet::End => Err(e),
            packet => Ok(packet),
        },
        other => other,
    }
}

async fn recv_packet_once(sock: &UnixSeqpacket, buf: &mut [u8]) -> io::Result<Packet> {
    /// Room for the timestamp and little more, aligned for `cmsghdr`. Anything else a peer
    /// attaches (descriptors) does not fit, or is closed when the reader is dropped.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let (info, ancillary) = sock.recv_with_ancillary(buf, &mut control.0).await?;
    let carried_control = !ancillary.is_empty() || info.ancillary_truncated();
    let len = info.bytes_read();
    // A zero-byte receive is rare (an empty message or the end), so checking the option there
    // costs the hot path nothing.
    let end = len == 0 && !carried_control && (messages_marked(sock) || seqpacket_peer_closed(sock));
    Ok(if end { Packet::End } else { Packet::Message { len, truncated: info.truncated() } })
}

/// Turns on `SO_TIMESTAMP`, so that [`recv_packet`] tells an empty message from the end exactly.
/// `SO_TIMESTAMP` rather than `SO_PASSCRED`, which would do as well on receipt but makes the
/// kernel bind an unnamed socket to an abstract name of its own the first time it sends. On a
/// Unix socket it costs a clock read per packet received and does not turn on the host-wide
/// timestamping of network packets (`sock_needs_netstamp`). It is not inherited from a listener,
/// so each accepted connection needs it.
pub fn mark_messages(sock: &UnixSeqpacket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: an open descriptor, and a pointer to a c_int with its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Whether [`mark_messages`] has prepared `sock`.
fn messages_marked(sock: &UnixSeqpacket) -> bool {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an open descriptor, and a c_int with its size in `len`.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMP, (&raw mut on).cast(), &raw mut len)
    };
    r == 0 && on != 0
}

/// Whether a seqpacket peer has shut down its sending side (`POLLRDHUP`). Not a test for the
/// end of its messages: it is true while packets, empty ones among them, still wait to be
/// read. A zero-length receive is told from the end by [`recv_packet`].
fn seqpacket_peer_closed(sock: &UnixSeqpacket) -> bool {
    peer_hung_up(sock.as_raw_fd())
}

/// Whether the peer of the connected socket `fd` has shut down its sending side or the
/// connection failed (`POLLRDHUP`, `POLLHUP`, `POLLERR`), even with unread data queued. Does not
/// wait. An fd that is not open counts as hung up.
pub fn peer_hung_up(fd: std::os::fd::RawFd) -> bool {
    poll_now(fd, libc::POLLRDHUP).is_none_or(|r| r & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
}

/// The events of `events` (plus the ones poll always reports) that `fd` has right now, without
/// waiting; `None` if poll itself failed.
pub fn poll_now(fd: std::os::fd::RawFd, events: i16) -> Option<i16> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd and a zero timeout; poll only reads the descriptor's state (a
    // closed one is reported as POLLNVAL, not undefined behaviour).
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    (n >= 0).then_some(pfd.revents)
}

/// A bound datagram socket (UDP or `unix-dgram:`).
#[derive(Debug)]
pub struct DatagramSocket {
    inner: DatagramInner,
    local: String,
    dual_stack: bool,
    _file: Option<SocketFile>,
}

#[derive(Debug)]
enum DatagramInner {
    Udp(UdpSocket),
    /// The tokio socket for readiness, and a duplicate of its descriptor as a std socket, whose
    /// `send_to_addr` can reach abstract names that tokio's path-based `send_to` cannot.
    Unix(UnixDatagram, std::os::unix::net::UnixDatagram),
}

/// The largest datagram sockit receives: the UDP maximum.
pub const MAX_DATAGRAM: usize = 65_536;

/// The most one UDP datagram carries over IPv4 (65,535 bytes less the IP and UDP headers); over
/// IPv6, 20 bytes more.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

impl DatagramSocket {
    /// Receives one datagram into `buf` and says who sent it. Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Option<PeerAddr>)> {
        match &self.inner {
            DatagramInner::Udp(s) => {
                let (n, a) = s.recv_from(buf).await?;
                Ok((n, Some(PeerAddr::Inet(a))))
            }
            DatagramInner::Unix(s, _) => {
                let (n, a) = s.recv_from(buf).await?;
                Ok((n, peer_from_tokio_unix(&a)))
            }
        }
    }

    /// Sends one datagram to `peer` if the socket can take it now; `WouldBlock` otherwise. A
    /// server answers this way, so that one peer that does not read never makes it wait.
    pub fn try_send_to(&self, buf: &[u8], peer: &PeerAddr) -> io::Result<usize> {
        match (&self.inner, peer) {
            (DatagramInner::Udp(s), PeerAddr::Inet(a)) => socket2::SockRef::from(s).send_to(buf, &(*a).into()),
            (DatagramInner::Unix(_, std_sock), PeerAddr::Unix(a)) => std_sock.send_to_addr(buf, &std_unix_addr(a)?),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot answer a peer without an address")),
        }
    }

    /// Sends one datagram to the connected peer (client sockets only).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.inner {
            DatagramInner::Udp(s) => s.send(buf).await,
            DatagramInner::Unix(s, _) => s.send(buf).await,
        }
    }

    /// Receives one datagram from the connected peer (client sockets only). Cancel-safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            DatagramInner::Udp(s) => s.recv(buf).await,
            DatagramInner::Unix(s, _) => s.recv(buf).await,
        }
    }

    /// The bound address as an endpoint string.
    pub fn local_endpoint(&self) -> &str {
        &self.local
    }
}

/// Binds `endpoint` for serving: a listener or a datagram socket, ready to use. A `tls://`
/// endpoint needs `opts.tls`, and no other endpoint takes it.
pub async fn bind(endpoint: &Endpoint, opts: &BindOptions) -> Result<ServerSocket, NetError> {
    match (endpoint.is_tls(), &opts.tls) {
        (true, None) => {
            return Err(NetError::TlsSetup {
                endpoint: endpoint.to_string(),
                why: "a TLS endpoint needs a certificate and its key",
            });
        }
        (false, Some(_)) => {
            return Err(NetError::TlsSetup {
                endpoint: endpoint.to_string(),
                why: "a certificate is for tls:// endpoints only",
            });
        }
        _ => {}
    }
    match endpoint {
        Endpoint::Ip { proto, family, host, port } => {
            let addrs = resolve(endpoint, *family, host, *port, true).await?;
            let dual_stack = matches!(host, Host::Unspecified) && *family == Family::Any;
            let mut last = None;
            for addr in addrs {
                match bind_ip(endpoint, *proto, addr, dual_stack, opts) {
                    Ok(s) => return Ok(s),
                    // A machine without IPv6 still serves `:PORT` on IPv4.
                    Err(NetError::Io { error, .. })
                        if dual_stack && matches!(error.raw_os_error(), Some(libc::EAFNOSUPPORT)) =>
                    {
                        let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port);
                        return bind_ip(endpoint, *proto, v4, false, opts);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("resolve returns at least one address"))
        }
        Endpoint::Unix { kind, addr } => bind_unix(endpoint, *kind, addr, opts),
        Endpoint::Fd(r) => bind_inherited(endpoint, r),
    }
}

/// Serves on an inherited socket: as it is, with its own backlog and address (`opts` does not
/// apply).
fn bind_inherited(endpoint: &Endpoint, r: &FdRef) -> Result<ServerSocket, NetError> {
    let (fd, info) = crate::inherit::take(r)?;
    serve_socket(endpoint, r, fd, &info)
}

/// A server socket made of a socket that exists already (`info` says what it is), non-blocking.
fn serve_socket(endpoint: &Endpoint, r: &FdRef, fd: OwnedFd, info: &Inherited) -> Result<ServerSocket, NetError> {
    let err = |e| NetError::from_io("listen on", endpoint, e);
    let local = info.local_endpoint();
    let listener = |inner| {
        Ok(ServerSocket::Listener(Listener {
            inner,
            local: local.clone(),
            dual_stack: info.dual_stack,
            tls: None,
            _file: None,
            siblings: Vec::new(),
        }))
    };
    match (info.style, info.state) {
        (SocketStyle::Datagram, _) => Ok(ServerSocket::Datagram(inherited_datagram(fd, info).map_err(err)?)),
        (_, SockState::Connected) => listener(ListenerInner::Single(Some(inherited_conn(fd, info).map_err(err)?))),
        (SocketStyle::Stream, SockState::Listening) if info.is_unix() => {
            listener(ListenerInner::Unix(UnixListener::from_std(fd.into()).map_err(err)?))
        }
        (SocketStyle::Stream, SockState::Listening) => {
            listener(ListenerInner::Tcp(TcpListener::from_std(fd.into()).map_err(err)?, NoDelay::default()))
        }
        (SocketStyle::Seqpacket, SockState::Listening) => {
            listener(ListenerInner::Seqpacket(UnixSeqpacketListener::try_from(fd).map_err(err)?))
        }
        (_, SockState::Unconnected) => Err(InheritError::Unusable {
            endpoint: r.clone(),
            what: format!("{} that neither listens nor is connected", info.describe()),
            need: "a server needs a listening socket, or a connected one to serve that one client",
        }
        .into()),
    }
}

/// Wraps an inherited connected stream or seqpacket socket, with its peer's address.
fn inherited_conn(fd: OwnedFd, info: &Inherited) -> io::Result<(Conn, PeerAddr)> {
    match (info.style, info.family) {
        (SocketStyle::Seqpacket, _) => {
            let s = UnixSeqpacket::try_from(fd)?;
            mark_messages(&s)?;
            let cred = s.peer_cred().ok();
            let peer = PeerAddr::UnixUnnamed { pid: cred.as_ref().and_then(|c| c.pid()), uid: cred.map(|c| c.uid()) };
            Ok((Conn::Seqpacket(s), peer))
        }
        (_, SockFamily::Unix) => {
            let s = UnixStream::from_std(fd.into())?;
            let peer = s.peer_addr().ok().and_then(|a| peer_from_tokio_unix(&a)).unwrap_or_else(|| {
                let cred = s.peer_cred().ok();
                PeerAddr::UnixUnnamed { pid: cred.and_then(|c| c.pid()), uid: cred.map(|c| c.uid()) }
            });
            Ok((Conn::Stream(Stream::Unix(s)), peer))
        }
        (_, SockFamily::Inet4 | SockFamily::Inet6) => {
            let s = TcpStream::from_std(fd.into())?;
            let _ = s.set_nodelay(true);
            let peer = PeerAddr::Inet(s.peer_addr()?);
            Ok((Conn::Stream(Stream::Tcp(s)), peer))
        }
    }
}

/// Wraps an inherited datagram socket (UDP or Unix).
fn inherited_datagram(fd: OwnedFd, info: &Inherited) -> io::Result<DatagramSocket> {
    let inner = if info.is_unix() {
        let dup = fd.try_clone()?;
        DatagramInner::Unix(UnixDatagram::from_std(fd.into())?, dup.into())
    } else {
        DatagramInner::Udp(UdpSocket::from_std(fd.into())?)
    };
    Ok(DatagramSocket { inner, local: info.local_endpoint(), dual_stack: info.dual_stack, _file: None })
}

fn bind_ip(
    endpoint: &Endpoint,
    proto: IpProto,
    addr: SocketAddr,
    dual_stack: bool,
    opts: &BindOptions,
) -> Result<ServerSocket, NetError> {
    let err = |e| NetError::from_io("listen on", endpoint, e);
    let ty = match proto {
        IpProto::Tcp | IpProto::Tls => Type::STREAM,
        IpProto::Udp => Type::DGRAM,
    };
    let new_socket = |reuse_port: bool| -> Result<Socket, NetError> {
        let socket = Socket::new(Domain::for_address(addr), ty.nonblocking().cloexec(), None).map_err(err)?;
        // Restart at once after a crash or Ctrl-C, even with connections in TIME-WAIT.
        if proto != IpProto::Udp {
            socket.set_reuse_address(true).map_err(err)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(!dual_stack).map_err(err)?;
        }
        // Accepted connections take it from here ([`NoDelay`]).
        if proto != IpProto::Udp {
            let _ = socket.set_tcp_nodelay(true);
        }
        if reuse_port {
            socket.set_reuse_port(true).map_err(err)?;
        }
        Ok(socket)
    };
    let shared = opts.listeners > 1 && proto != IpProto::Udp;
    let socket = new_socket(false)?;
    socket.bind(&addr.into()).map_err(err)?;
    let (socket, siblings) = if shared {
        // Bound alone first: a port in use is refused here as it would be without sharing, and
        // port 0 becomes a real one. Then the address is bound again by every socket of the
        // group, which nothing outside it can join (a later bind without SO_REUSEPORT fails,
        // like this first one would have).
        let at = socket.local_addr().map_err(err)?;
        drop(socket);
        let mut group = Vec::with_capacity(opts.listeners);
        for _ in 0..opts.listeners {
            let s = new_socket(true)?;
            s.bind(&at).map_err(err)?;
            s.listen(backlog(opts)).map_err(err)?;
            group.push(s);
        }
        let first = group.remove(0);
        (first, group.into_iter().map(std::net::TcpListener::from).collect())
    } else {
        (socket, Vec::new())
    };
    let local = socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
    let scheme = proto.scheme();
    let local_text = match (dual_stack, local) {
        (true, _) => format!("{scheme}://:{}", local.port()),
        (false, SocketAddr::V6(a)) => format!("{scheme}://[{}]:{}", a.ip(), a.port()),
        (false, SocketAddr::V4(a)) => format!("{scheme}://{a}"),
    };
    match proto {
        IpProto::Tcp | IpProto::Tls => {
            if !shared {
                socket.listen(backlog(opts)).map_err(err)?;
            }
            let l = TcpListener::from_std(socket.into()).map_err(err)?;
            Ok(ServerSocket::Listener(Listener {
                inner: ListenerInner::Tcp(l, NoDelay::default()),
                local: local_text,
                dual_stack,
                tls: opts.tls.clone().filter(|_| proto == IpProto::Tls),
                _file: None,
                siblings,
            }))
        }
        IpProto::Udp => {
            deepen_udp_queue(&socket);
            let s = UdpSocket::from_std(socket.into()).map_err(err)?;
            Ok(ServerSocket::Datagram(DatagramSocket {
                inner: DatagramInner::Udp(s),
                local: local_text,
                dual_stack,
                _file: None,
            }))
        }
    }
}

/// The receive buffer asked for on UDP sockets. UDP has no flow control: a burst that outruns
/// the reader is dropped by the kernel once the queue is full, and the default queue
/// (`net.core.rmem_default`, 208 KiB) holds only 256 small datagrams, at 832 bytes of kernel
/// memory each. `seq 1 1000 | sockit connect udp://…` to an echo server got 256 answers back.
/// The kernel caps the request at `net.core.rmem_max`.
pub const UDP_RECV_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_RECV_BUFFER`]; best effort, as the kernel may give less.
fn deepen_udp_queue(socket: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(UDP_RECV_BUFFER);
}

fn backlog(opts: &BindOptions) -> i32 {
    opts.backlog.min(i32::MAX as u32) as i32
}

fn unix_type(kind: UnixKind) -> Type {
    match kind {
        UnixKind::Stream => Type::STREAM,
        UnixKind::Dgram => Type::DGRAM,
        UnixKind::Seqpacket => Type::SEQPACKET,
    }
}

fn bind_unix(
    endpoint: &Endpoint,
    kind: UnixKind,
    addr: &UnixAddr,
    opts: &BindOptions,
) -> Result<ServerSocket, NetError> {
    let err = |e| NetError::from_io("listen on", endpoint, e);
    let sockaddr = unix_sockaddr(endpoint, addr)?;
    let ty = unix_type(kind);
    if let UnixAddr::Path(p) = addr {
        clear_stale_socket(endpoint, p, ty)?;
    }
    let socket = Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None).map_err(err)?;
    socket.bind(&sockaddr).map_err(err)?;
    // From here on the file is ours; the guard removes it on any early return.
    let file = match addr {
        UnixAddr::Path(p) => {
            let file = SocketFile::claim(p).map_err(err)?;
            // Before listen(): until then nobody can connect, so no client slips in while the
            // file still has the umask's permissions.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(opts.unix_mode)).map_err(err)?;
            Some(file)
        }
        UnixAddr::Abstract(_) => None,
    };
    let local = endpoint.to_string();
    let fd: OwnedFd = match kind {
        UnixKind::Dgram => socket.into(),
        UnixKind::Stream | UnixKind::Seqpacket => {
            socket.listen(backlog(opts)).map_err(err)?;
            socket.into()
        }
    };
    Ok(match kind {
        UnixKind::Stream => {
            let l = UnixListener::from_std(fd.into()).map_err(err)?;
            ServerSocket::Listener(Listener {
                inner: ListenerInner::Unix(l),
                local,
                dual_stack: false,
                tls: None,
                _file: file,
                siblings: Vec::new(),
            })
        }
        UnixKind::Seqpacket => {
            let l = UnixSeqpacketListener::try_from(fd).map_err(err)?;
            ServerSocket::Listener(Listener {
                inner: ListenerInner::Seqpacket(l),
                local,
                dual_stack: false,
                tls: None,
                _file: file,
                siblings: Vec::new(),
            })
        }
        UnixKind::Dgram => {
            let dup = fd.try_clone().map_err(err)?;
            let s = UnixDatagram::from_std(fd.into()).map_err(err)?;
            ServerSocket::Datagram(DatagramSocket {
                inner: DatagramInner::Unix(s, dup.into()),
                local,
                dual_stack: false,
                _file: file,
            })
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Client sockets

/// A connected client socket.
#[derive(Debug)]
pub enum ClientSocket {
    /// A byte stream or a seqpacket connection.
    Conn(Conn),
    /// A datagram socket connected to one peer.
    Datagram(DatagramSocket),
}

impl ClientSocket {
    /// The addresses of an IP connection, ours then the server's: which of a name's addresses
    /// was reached, and from where (what `nc -v` and `ncat -v` show). `None` on Unix sockets.
    pub fn ip_addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        let sock = match self {
            ClientSocket::Conn(Conn::Stream(s)) => socket2::SockRef::from(s),
            ClientSocket::Datagram(DatagramSocket { inner: DatagramInner::Udp(u), .. }) => socket2::SockRef::from(u),
            ClientSocket::Conn(Conn::Seqpacket(_)) | ClientSocket::Datagram(_) => return None,
        };
        let ours = sock.local_addr().ok()?.as_socket()?;
        let theirs = sock.peer_addr().ok()?.as_socket()?;
        Some((ours, theirs))
    }
}

/// Connects to `endpoint` within `timeout` (name resolution included). IP names that resolve
/// to several addresses are tried in order, as netcat does. A `tls://` server is verified
/// against the system's trusted roots; [`connect_with`] chooses otherwise.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<ClientSocket, NetError> {
    connect_with(endpoint, timeout, None).await
}

/// [`connect`], with the TLS settings for a `tls://` endpoint (`None`: the system's roots). The
/// handshake is part of the connection, within `timeout`. Other endpoints ignore `tls`.
pub async fn connect_with(
    endpoint: &Endpoint,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<ClientSocket, NetError> {
    match tokio::time::timeout(timeout, connect_inner(endpoint, tls)).await {
        Ok(r) => r,
        Err(_) => Err(NetError::TimedOut { endpoint: endpoint.to_string(), after: timeout }),
    }
}

async fn connect_inner(endpoint: &Endpoint, tls: Option<&ClientTls>) -> Result<ClientSocket, NetError> {
    let err = |e| NetError::from_io("connect to", endpoint, e);
    match endpoint {
        Endpoint::Ip { proto, family, host, port } => {
            if *port == 0 {
                return Err(NetError::PortZero { endpoint: endpoint.to_string() });
            }
            // The trust settings first: a client that cannot check a certificate connects nowhere.
            let system;
            let tls = match (proto, tls) {
                (IpProto::Tls, None) => {
                    system = ClientTls::system()?;
                    Some(&*system)
                }
                (_, tls) => tls,
            };
            let addrs = resolve(endpoint, *family, host, *port, false).await?;
            let mut last = None;
            let mut connected = None;
            for addr in addrs {
                let attempt = match proto {
                    IpProto::Tcp | IpProto::Tls => TcpStream::connect(addr).await.map(|s| {
                        let _ = s.set_nodelay(true);
                        ClientSocket::Conn(Conn::Stream(Stream::Tcp(s)))
                    }),
                    IpProto::Udp => connect_udp(addr).await,
                };
                match attempt {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let Some(socket) = connected else {
                return Err(err(last.expect("resolve returns at least one address")));
            };
            match (socket, tls) {
                (ClientSocket::Conn(Conn::Stream(Stream::Tcp(tcp))), Some(tls)) if *proto == IpProto::Tls => {
                    match tls.connect(host, tcp).await {
                        Ok(s) => Ok(ClientSocket::Conn(Conn::Stream(Stream::Tls(Box::new(s))))),
                        Err(HandshakeFailure::Untrusted { why, hint }) => {
                            Err(NetError::TlsUntrusted { endpoint: endpoint.to_string(), why, hint })
                        }
                        // Not the bare "Connection reset by peer": who does this, and why.
                        Err(HandshakeFailure::Other(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                            Err(NetError::TlsHandshake {
                                endpoint: endpoint.to_string(),
                                why: "the server reset the connection during the TLS handshake (hint: a server that does not speak TLS, access rules or a connection limit do this; the server's log says why)".into(),
                            })
                        }
                        Err(other) => {
                            Err(NetError::TlsHandshake { endpoint: endpoint.to_string(), why: other.to_string() })
                        }
                    }
                }
                (socket, _) => Ok(socket),
            }
        }
        Endpoint::Unix { kind, addr } => {
            let sockaddr = unix_sockaddr(endpoint, addr)?;
            match kind {
                UnixKind::Stream => {
                    let fd = connect_unix(endpoint, &sockaddr, Type::STREAM).await?;
                    let s = std::os::unix::net::UnixStream::from(fd);
                    Ok(ClientSocket::Conn(Conn::Stream(Stream::Unix(UnixStream::from_std(s).map_err(err)?))))
                }
                UnixKind::Seqpacket => {
                    let fd = connect_unix(endpoint, &sockaddr, Type::SEQPACKET).await?;
                    let s = UnixSeqpacket::try_from(fd).map_err(err)?;
                    mark_messages(&s).map_err(err)?;
                    Ok(ClientSocket::Conn(Conn::Seqpacket(s)))
                }
                UnixKind::Dgram => {
                    // A datagram client needs an address of its own, or the server could not
                    // answer it: an abstract name unique to this process and socket.
                    let socket = Socket::new(Domain::UNIX, Type::DGRAM.nonblocking().cloexec(), None).map_err(err)?;
                    let own = UnixAddr::Abstract(client_name().into_bytes());
                    socket.bind(&unix_sockaddr(endpoint, &own)?).map_err(err)?;
                    socket.connect(&sockaddr).map_err(err)?;
                    let fd: OwnedFd = socket.into();
                    let dup = fd.try_clone().map_err(err)?;
                    let s = UnixDatagram::from_std(fd.into()).map_err(err)?;
                    let local = format!("unix-dgram:{own}");
                    Ok(ClientSocket::Datagram(DatagramSocket {
                        inner: DatagramInner::Unix(s, dup.into()),
                        local,
                        dual_stack: false,
                        _file: None,
                    }))
                }
            }
        }
        Endpoint::Fd(r) => connect_inherited(endpoint, r),
    }
}

/// Uses an inherited connected socket as a client socket.
fn connect_inherited(endpoint: &Endpoint, r: &FdRef) -> Result<ClientSocket, NetError> {
    let err = |e| NetError::from_io("connect to", endpoint, e);
    // Checked before taking, so that a refused socket is left for another use.
    let info = crate::inherit::probe(r)?;
    let need = match (info.style, info.state) {
        (_, SockState::Listening) => Some("a client needs a connected socket (serve takes a listening one)"),
        (SocketStyle::Datagram, SockState::Unconnected) => {
            Some("a client needs a datagram socket connected to its peer (serve takes an unconnected one)")
        }
        (_, SockState::Unconnected) => Some("a client needs a connected socket"),
        _ => None,
    };
    if let Some(need) = need {
        return Err(InheritError::Unusable { endpoint: r.clone(), what: info.describe(), need }.into());
    }
    let (fd, info) = crate::inherit::take(r)?;
    if info.style == SocketStyle::Datagram {
        return Ok(ClientSocket::Datagram(inherited_datagram(fd, &info).map_err(err)?));
    }
    let (conn, _peer) = inherited_conn(fd, &info).map_err(err)?;
    Ok(ClientSocket::Conn(conn))
}

/// Connects a Unix stream or seqpacket socket without blocking the thread. A blocking connect
/// to a listener whose queue is full would sleep in the kernel, out of reach of any timeout;
/// non-blocking, it fails with `EAGAIN` instead, and is tried again after a short wait (the
/// caller's timeout bounds the whole).
async fn connect_unix(endpoint: &Endpoint, addr: &SockAddr, ty: Type) -> Result<OwnedFd, NetError> {
    let err = |e| NetError::from_io("connect to", endpoint, e);
    let mut wait = Duration::from_millis(1);
    loop {
        let socket = Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None).map_err(err)?;
        match socket.connect(addr) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

fn client_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("sockit-client-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn connect_udp(addr: SocketAddr) -> io::Result<ClientSocket> {
    let local: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local).await?;
    deepen_udp_queue(&s);
    s.connect(addr).await?;
    let local = s.local_addr().map(|a| format!("udp://{a}")).unwrap_or_default();
    Ok(ClientSocket::Datagram(DatagramSocket { inner: DatagramInner::Udp(s), local, dual_stack: false, _file: None }))
}

// ---------------------------------------------------------------------------------------------
// Streams

/// A connected byte stream: TCP, `unix:`, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain stream.
    Unix(UnixStream),
    /// TLS over TCP, after the handshake (boxed: its state is large, and rare).
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    /// Writes some of `buf`. On TLS the bytes may stay in the TLS buffer when the socket is full:
    /// [`AsyncWriteExt::flush`](tokio::io::AsyncWriteExt::flush) sends them (so does the next
    /// write), and every writer here flushes before it waits for something else. Plain sockets
    /// have no buffer, and flushing them costs nothing.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
    /// Half-closes: shuts down the sending side, so the peer reads end-of-stream while this side
    /// can still read its answer. On TLS this sends `close_notify` first.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The descriptor is the socket's: for TLS, the TCP socket under it (good for socket options
/// and for polling whether the peer hung up, never for reading or writing data).
impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.as_raw_fd(),
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.as_fd(),
        }
    }
}

/// A connected stream outside the async runtime, for work done in a plain thread: a blocking
/// socket, or a blocking TLS connection over one. Both are `Read + Write`.
#[derive(Debug)]
pub enum BlockingStream {
    /// A plain socket (TCP or Unix).
    Plain(Socket),
    /// TLS over a TCP socket.
    Tls(Box<crate::tls::BlockingTls>),
}

impl BlockingStream {
    /// The socket underneath, for its options (timeouts), `shutdown` and polling.
    pub fn socket(&self) -> socket2::SockRef<'_> {
        match self {
            BlockingStream::Plain(s) => socket2::SockRef::from(s),
            BlockingStream::Tls(t) => socket2::SockRef::from(t.socket()),
        }
    }

    /// A second handle on the socket underneath, to shut it down from another thread.
    pub fn control(&self) -> io::Result<Socket> {
        self.socket().try_clone()
    }

    /// Whether a read would find something now (data, the end or an error) without waiting.
    pub fn readable_now(&mut self) -> bool {
        match self {
            BlockingStream::Plain(s) => poll_now(s.as_raw_fd(), libc::POLLIN).is_some_and(|r| r != 0),
            BlockingStream::Tls(t) => t.readable_now(),
        }
    }

    /// Ends the connection in an orderly way where there is something to say (TLS's
    /// `close_notify`); plain sockets need nothing.
    pub fn close(&mut self) {
        if let BlockingStream::Tls(t) = self {
            let _ = t.close();
        }
    }
}

impl io::Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Tls(t) => t.read(buf),
        }
    }
}

impl io::Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Tls(t) => t.flush(),
        }
    }
}

/// What the relay's shared-reference operations say about a TLS stream, which has no such
/// operations: its two directions share one TLS state.
pub(crate) fn not_on_tls() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "not available on a TLS stream")
}

impl Stream {
    /// The uid of the process at the other end of a Unix stream (`SO_PEERCRED`); `None` on TCP
    /// and TLS.
    pub fn peer_uid(&self) -> io::Result<Option<u32>> {
        match self {
            Stream::Tcp(_) | Stream::Tls(_) => Ok(None),
            Stream::Unix(s) => Ok(Some(s.peer_cred()?.uid())),
        }
    }

    /// Whether this is a TLS stream.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Leaves the async runtime: a blocking stream, for work done in a plain thread. A TLS
    /// stream keeps what it had buffered; flush before, so that nothing written waits.
    pub fn into_blocking(self) -> io::Result<BlockingStream> {
        let fd: std::os::fd::OwnedFd = match self {
            Stream::Tcp(s) => s.into_std()?.into(),
            Stream::Unix(s) => s.into_std()?.into(),
            Stream::Tls(s) => return Ok(BlockingStream::Tls(Box::new(s.into_blocking()?))),
        };
        socket2::SockRef::from(&fd).set_nonblocking(false)?;
        Ok(BlockingStream::Plain(Socket::from(fd)))
    }

    /// Waits until the socket may be ready for `interest` (it may still turn out not to be:
    /// [`Stream::try_io`] tells). Not on TLS.
    pub async fn ready(&self, interest: tokio::io::Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.ready(interest).await.map(drop),
            Stream::Unix(s) => s.ready(interest).await.map(drop),
            Stream::Tls(_) => Err(not_on_tls()),
        }
    }

    /// Runs `f`, a non-blocking operation on the socket's descriptor; a `WouldBlock` from it
    /// clears the readiness so that [`Stream::ready`] waits for the next event. Not on TLS.
    pub fn try_io<R>(&self, interest: tokio::io::Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Stream::Tcp(s) => s.try_io(interest, f),
            Stream::Unix(s) => s.try_io(interest, f),
            Stream::Tls(_) => Err(not_on_tls()),
        }
    }

    /// Reads through a shared reference, so that one task can read and write the same stream
    /// at once (a relay's two directions). 0 is the end of the stream. Not on TLS, whose two
    /// directions share one state (the relay splits a TLS stream instead).
    pub async fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.ready(tokio::io::Interest::READABLE).await?;
            let r = match self {
                Stream::Tcp(s) => s.try_read(buf),
                Stream::Unix(s) => s.try_read(buf),
                Stream::Tls(_) => return Err(not_on_tls()),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Writes all of `data` through a shared reference (see [`Stream::read_shared`]). Not on TLS.
    pub async fn write_all_shared(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.ready(tokio::io::Interest::WRITABLE).await?;
            let r = match self {
                Stream::Tcp(s) => s.try_write(data),
                Stream::Unix(s) => s.try_write(data),
                Stream::Tls(_) => return Err(not_on_tls()),
            };
            match r {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Shuts down the sending side at once (the peer reads end-of-stream), through a shared
    /// reference. Not on TLS, where the end is a message ([`tokio::io::AsyncWriteExt::shutdown`]
    /// sends it).
    pub fn shutdown_write(&self) -> io::Result<()> {
        if self.is_tls() {
            return Err(not_on_tls());
        }
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
    }

    /// Turns on TCP keepalive: after `idle` without traffic, probes every `idle / 2`, and after
    /// three unanswered ones the connection fails. A peer that has vanished (or whose host has)
    /// is found even when nothing is being sent to it. Does nothing on a Unix socket, whose
    /// peer's closing the kernel always knows.
    pub fn set_keepalive(&self, idle: Duration) {
        if !matches!(self, Stream::Unix(_)) {
            let probes = socket2::TcpKeepalive::new().with_time(idle).with_interval(idle / 2).with_retries(3);
            let _ = socket2::SockRef::from(self).set_tcp_keepalive(&probes);
        }
    }

    /// Gets a connection whose peer broke the protocol ready to close: see [`close_after_error`].
    /// A TLS stream is reset instead ([`Stream::set_linger_zero`]): its input is encrypted
    /// records that cannot be dropped without reading them.
    pub fn close_after_error(&self) {
        match self {
            Stream::Tls(_) => self.set_linger_zero(),
            Stream::Tcp(s) => close_after_error(s),
            Stream::Unix(s) => close_after_error(s),
        }
    }

    /// Closes the connection with a TCP reset instead of an orderly close (used when the peer
    /// broke the protocol and unread data would otherwise linger). A TLS stream then sends no
    /// `close_notify` either: a reset must not read as an orderly end.
    pub fn set_linger_zero(&self) {
        if let Stream::Tls(s) = self {
            s.abort_on_drop();
        }
        if !matches!(self, Stream::Unix(_)) {
            let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
        }
    }
}

/// The most [`close_after_error`] drops, in bytes.
const DROP_ON_ERROR: usize = 1 << 20;

/// Gets a stream whose peer broke the protocol ready to be closed without losing the answers
/// already sent: shuts down the sending side (a FIN after everything written), then drops what
/// the peer has already sent and is waiting unread, up to 1 MiB, without waiting for more.
///
/// Closing a socket with unread input makes the kernel send a reset, and a reset can make the
/// peer lose what it has not read yet: netcat, say, printed none of the answers to the lines
/// before a line too long. What arrives after the close still gets a reset, as it should.
pub fn close_after_error(sock: impl std::os::fd::AsFd) {
    let _ = rustix::net::shutdown(&sock, rustix::net::Shutdown::Write);
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut dropped = 0;
    while dropped < DROP_ON_ERROR {
        match rustix::net::recv(&sock, &mut scratch[..], rustix::net::RecvFlags::DONTWAIT) {
            Ok((_, n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_of_a_dual_stack_socket_is_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(PeerAddr::Inet(mapped).to_string(), "127.0.0.1:5000");
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(PeerAddr::Inet(v6).to_string(), "[::1]:5000");
    }

    /// Empty packets queued behind the peer's shutdown are messages; only an empty queue after
    /// it is the end, which then stays the end.
    #[tokio::test]
    async fn recv_packet_tells_empty_messages_from_the_end() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        mark_messages(&b).unwrap();
        for m in [&b"one"[..], b"", b"", b"two", b""] {
            a.send(m).await.unwrap();
        }
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(recv_packet(&b, &mut buf).await.unwrap());
        }
        let msg = |len| Packet::Message { len, truncated: false };
        assert_eq!(got, [msg(3), msg(0), msg(0), msg(3), msg(0), Packet::End, Packet::End]);
        // A packet longer than the buffer says so.
        let (a, b) = UnixSeqpacket::pair().unwrap();
        mark_messages(&b).unwrap();
        a.send(&[7; 40]).await.unwrap();
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), Packet::Message { len: 16, truncated: true });
    }

    /// A peer that closes with our packets unread resets the connection, and the kernel says so
    /// before the packets it sent first: those still come, and the reset only when none did.
    #[tokio::test]
    async fn recv_packet_takes_the_packets_queued_before_a_reset() {
        let mut buf = [0u8; 16];
        let (a, b) = UnixSeqpacket::pair().unwrap();
        mark_messages(&b).unwrap();
        b.send(b"unread").await.unwrap();
        a.send(b"one").await.unwrap();
        a.send(b"").await.unwrap();
        drop(a);
        let msg = |len| Packet::Message { len, truncated: false };
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), msg(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), msg(0));
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), Packet::End);
        // Nothing queued: the reset.
        let (a, b) = UnixSeqpacket::pair().unwrap();
        mark_messages(&b).unwrap();
        b.send(b"unread").await.unwrap();
        drop(a);
        let e = recv_packet(&b, &mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    /// On a socket nobody prepared, an empty message while the peer is still there is a message
    /// (the best that can be told without `SO_TIMESTAMP`), and the end is the end.
    #[tokio::test]
    async fn recv_packet_on_an_unprepared_socket_falls_back_to_the_peer_state() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        a.send(b"").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), Packet::Message { len: 0, truncated: false });
        drop(a);
        assert_eq!(recv_packet(&b, &mut buf).await.unwrap(), Packet::End);
    }

    /// Every seqpacket connection this module makes, accepted or connected, is prepared.
    #[tokio::test]
    async fn seqpacket_connections_are_prepared_to_tell_empty_messages_from_the_end() {
        let name = format!("unix-seqpacket:@sockit-net-test-{}-marks", std::process::id());
        let ServerSocket::Listener(mut l) = bind(&name.parse().unwrap(), &BindOptions::default()).await.unwrap() else {
            panic!("a seqpacket endpoint binds a listener");
        };
        let ep: Endpoint = l.local_endpoint().parse().unwrap();
        let client = connect(&ep, Duration::from_secs(5)).await.unwrap();
        let (Conn::Seqpacket(server), _) = l.accept().await.unwrap() else { panic!("a seqpacket connection") };
        let ClientSocket::Conn(Conn::Seqpacket(client)) = client else { panic!("a seqpacket connection") };
        assert!(messages_marked(&server) && messages_marked(&client));
    }

    /// The dual-stack endpoint used to read `tcp://:PORT (IPv4 and IPv6)`, which does not parse.
    #[tokio::test]
    async fn local_endpoints_parse_back() {
        for text in ["tcp://127.0.0.1:0", ":0", "udp://127.0.0.1:0", "unix:@sockit-net-test"] {
            let socket = bind(&text.parse().unwrap(), &BindOptions::default()).await.unwrap();
            let local = socket.local_endpoint();
            let parsed: Endpoint = local.parse().unwrap_or_else(|e| panic!("{text} -> {local}: {e}"));
            assert_eq!(parsed.style(), text.parse::<Endpoint>().unwrap().style());
        }
    }

    /// A socket as a parent passes it, named by an `fd://` endpoint.
    fn passed(socket: Socket) -> Endpoint {
        Endpoint::Fd(FdRef::Number(crate::inherit::passed(socket)))
    }

    fn tcp_listener() -> (Endpoint, SocketAddr) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        s.listen(8).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        (passed(s), addr)
    }

    /// An inherited socket's local endpoint names its real address, then where it came from; the
    /// first word parses back to an endpoint of the same style.
    #[tokio::test]
    async fn inherited_local_endpoints_name_the_address_and_parse_back() {
        let (ep, addr) = tcp_listener();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        let (pair, _other) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let cases = [
            (ep.clone(), format!("tcp://{addr} ({ep})")),
            (passed(udp.into()), format!("udp://{udp_addr} (fd://")),
            (passed(pair), "fd://".to_owned()),
        ];
        for (ep, want) in cases {
            let socket = bind(&ep, &BindOptions::default()).await.unwrap();
            let local = socket.local_endpoint().to_owned();
            assert!(local.starts_with(&want), "{ep}: {local}, want {want}…");
            let first = local.split(' ').next().unwrap();
            let parsed: Endpoint = first.parse().unwrap_or_else(|e| panic!("{ep} -> {local}: {e}"));
            assert_eq!(parsed.style(), ep.style(), "{local}");
        }
    }

    #[tokio::test]
    async fn an_inherited_listener_accepts_and_is_not_single() {
        let (ep, addr) = tcp_listener();
        let socket = bind(&ep, &BindOptions::default()).await.unwrap();
        assert!(!socket.is_single() && ep.is_local() && ep.style() == crate::endpoint::SocketStyle::Stream);
        let ServerSocket::Listener(mut l) = socket else { panic!("not a listener") };
        let client = TcpStream::connect(addr).await.unwrap();
        let (_conn, peer) = l.accept().await.unwrap();
        assert_eq!(peer, PeerAddr::Inet(client.local_addr().unwrap()));
    }

    /// Every accepted TCP connection has `TCP_NODELAY`: from a listener sockit bound, because
    /// the listener passes it on (no system call per connection); from an inherited listener that
    /// does not, because it is set on each.
    #[tokio::test]
    async fn accepted_connections_have_nodelay_whether_or_not_the_listener_passes_it_on() {
        let (inherited, _) = tcp_listener();
        for (ep, passes_it_on) in [("tcp://127.0.0.1:0".parse().unwrap(), true), (inherited, false)] {
            let ServerSocket::Listener(mut l) = bind(&ep, &BindOptions::default()).await.unwrap() else {
                panic!("not a listener")
            };
            let ListenerInner::Tcp(tcp, _) = &l.inner else { panic!("not TCP") };
            let addr = tcp.local_addr().unwrap();
            for _ in 0..2 {
                let _client = TcpStream::connect(addr).await.unwrap();
                let (conn, _) = l.accept().await.unwrap();
                let Conn::Stream(Stream::Tcp(s)) = conn else { panic!("not TCP") };
                assert!(s.nodelay().unwrap(), "{ep}: an accepted connection without TCP_NODELAY");
            }
            let ListenerInner::Tcp(_, nodelay) = &l.inner else { panic!("not TCP") };
            assert_eq!(nodelay.inherited, Some(passes_it_on), "{ep}");
        }
    }

    /// inetd's way: a connected socket is one connection, with its real peer, and then no more.
    #[tokio::test]
    async fn an_inherited_connected_socket_is_a_listener_of_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let ep = passed(accepted.into());
        let socket = bind(&ep, &BindOptions::default()).await.unwrap();
        assert!(socket.is_single());
        let ServerSocket::Listener(mut l) = socket else { panic!("not a listener") };
        let (_conn, peer) = l.accept().await.unwrap();
        assert_eq!(peer, PeerAddr::Inet(client.local_addr().unwrap()));
        let again = tokio::time::timeout(Duration::from_millis(50), l.accept()).await;
        assert!(again.is_err(), "a second connection from a single listener");
    }

    #[tokio::test]
    async fn an_inherited_socket_is_used_once_and_the_wrong_kind_is_refused() {
        let (ep, _) = tcp_listener();
        bind(&ep, &BindOptions::default()).await.unwrap();
        let e = bind(&ep, &BindOptions::default()).await.unwrap_err();
        assert!(e.to_string().ends_with("is already in use: an inherited socket can be used only once"), "{e}");

        // A listening socket is no client; refused before it is taken, so serving it still works.
        let (ep, _) = tcp_listener();
        let e = connect(&ep, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{ep} is a listening tcp socket; a client needs a connected socket (serve takes a listening one)")
        );
        bind(&ep, &BindOptions::default()).await.unwrap();

        // A stream socket that neither listens nor is connected serves nobody.
        let ep = passed(Socket::new(Domain::UNIX, Type::STREAM, None).unwrap());
        let e = bind(&ep, &BindOptions::default()).await.unwrap_err();
        assert!(e.to_string().contains("is an unconnected unix stream socket that neither listens nor is connected"));
    }

    /// `connect fd://N`: a connected socket the parent passed is a client socket.
    #[tokio::test]
    async fn an_inherited_connected_socket_is_a_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ep = passed(ours.into());
        let ClientSocket::Conn(Conn::Stream(mut s)) = connect(&ep, Duration::from_secs(1)).await.unwrap() else {
            panic!("not a stream")
        };
        s.write_all(b"hi").await.unwrap();
        let mut theirs = UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        let mut got = [0u8; 2];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
    }
}
