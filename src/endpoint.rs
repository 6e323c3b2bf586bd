//! Endpoints: the one address syntax every sockit command accepts.
//!
//! An [`Endpoint`] names a socket family, a socket type and an address, written as a
//! URL-like string (`tcp://127.0.0.1:7000`, `tls://host:7000`, `unix:@name`, `udp6://[::1]:53`) or one of the
//! shorthands (`HOST:PORT`, `:PORT`, `/path`, `./path`), or `fd://N` / `fd://NAME` for a socket
//! the parent process passed down ([`crate::inherit`]). Parsing is pure: it never resolves a
//! host name, touches the file system or looks at a descriptor; that happens when the endpoint
//! is bound or connected (see [`crate::net`]). The one exception is what only a descriptor can
//! tell: [`Endpoint::style`] and [`Endpoint::is_local`] of an `fd://` endpoint ask the inherited
//! socket itself.

use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::str::FromStr;

/// The accepted forms, shown in every parse error so that a user can correct the input.
pub const FORMS: &str = "tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, udp://HOST:PORT, udp4://, udp6://, \
tls://HOST:PORT, tls4://, tls6://, unix:///abs/path, unix:rel/path, unix:@abstract, unix-dgram:…, unix-seqpacket:…, \
fd://N, fd://NAME, HOST:PORT, :PORT, /path, ./path";

/// The longest name systemd gives a passed socket (`FileDescriptorName=`).
pub const MAX_FD_NAME: usize = 255;

/// The address family an IP endpoint is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Either IPv4 or IPv6 (`tcp://`, `udp://`, `tls://`).
    Any,
    /// IPv4 only (`tcp4://`, `udp4://`, `tls4://`).
    V4,
    /// IPv6 only (`tcp6://`, `udp6://`, `tls6://`).
    V6,
}

/// The host part of an IP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// No host was given (`:7000`, `tcp://:7000`): every interface when listening, which means
    /// IPv4 and IPv6 together on one dual-stack socket; the local host when connecting.
    Unspecified,
    /// A literal address.
    Ip(IpAddr),
    /// A name to resolve when the endpoint is used.
    Name(String),
}

/// The transport protocol of an IP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProto {
    /// A TCP byte stream.
    Tcp,
    /// UDP datagrams.
    Udp,
    /// TLS over TCP: a byte stream, encrypted and authenticated ([`crate::tls`]).
    Tls,
}

/// The socket type of a Unix-domain endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixKind {
    /// `SOCK_STREAM` (`unix:`).
    Stream,
    /// `SOCK_DGRAM` (`unix-dgram:`).
    Dgram,
    /// `SOCK_SEQPACKET` (`unix-seqpacket:`): connected, reliable, message boundaries kept.
    Seqpacket,
}

/// Where a Unix-domain socket lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A file-system path, absolute or relative to the working directory.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (`unix:@name`): no file, gone with the socket.
    Abstract(Vec<u8>),
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP, UDP or TLS endpoint.
    Ip {
        /// TCP, UDP or TLS.
        proto: IpProto,
        /// Which address family the endpoint may use.
        family: Family,
        /// The host, literal or a name.
        host: Host,
        /// The port; 0 asks the kernel for a free one when listening.
        port: u16,
    },
    /// A Unix-domain endpoint.
    Unix {
        /// Stream, datagram or seqpacket.
        kind: UnixKind,
        /// The path or abstract name.
        addr: UnixAddr,
    },
    /// A socket inherited from the parent process (`fd://3`, `fd://web`): its family, type and
    /// address are whatever the descriptor is.
    Fd(FdRef),
}

/// Which inherited descriptor an `fd://` endpoint names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FdRef {
    /// A descriptor number (`fd://3`; `fd://0` is stdin, as inetd passes a connection).
    Number(RawFd),
    /// A socket systemd passed with `FileDescriptorName=NAME`, found through `LISTEN_FDNAMES`.
    Name(String),
}

/// How a socket carries messages: as a byte stream or as datagrams that keep their boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketStyle {
    /// A connected byte stream (TCP, `unix:`): messages need framing.
    Stream,
    /// Connected, message boundaries kept (`unix-seqpacket:`).
    Seqpacket,
    /// Unconnected datagrams (UDP, `unix-dgram:`): every datagram is a message.
    Datagram,
}

/// Why an endpoint string was rejected. Display is one line: the input, the problem and the
/// accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint '{}': {problem} (forms: {FORMS})", .input.escape_debug())]
pub struct ParseError {
    /// What the user wrote.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Endpoint {
    /// Parses an endpoint; the same as `s.parse()`.
    pub fn parse(s: &str) -> Result<Endpoint, ParseError> {
        parse(s).map_err(|problem| ParseError { input: s.to_owned(), problem })
    }

    /// Whether this endpoint is a byte stream, a seqpacket or a datagram socket.
    ///
    /// For an `fd://` endpoint this is the type of the inherited socket, read from the
    /// descriptor (see [`crate::inherit::probe`], which is the fallible form: call it first to
    /// report a descriptor that is not open or not a socket). Such a descriptor reports
    /// [`SocketStyle::Stream`] here, and binding or connecting it fails with the reason.
    pub fn style(&self) -> SocketStyle {
        match self {
            Endpoint::Fd(r) => crate::inherit::probe(r).map(|s| s.style()).unwrap_or(SocketStyle::Stream),
            Endpoint::Ip { proto: IpProto::Tcp | IpProto::Tls, .. } | Endpoint::Unix { kind: UnixKind::Stream, .. } => {
                SocketStyle::Stream
            }
            Endpoint::Unix { kind: UnixKind::Seqpacket, .. } => SocketStyle::Seqpacket,
            Endpoint::Ip { proto: IpProto::Udp, .. } | Endpoint::Unix { kind: UnixKind::Dgram, .. } => {
                SocketStyle::Datagram
            }
        }
    }

    /// Whether the endpoint names only this machine: a loopback address, `localhost`, or a Unix
    /// socket. Servers that run commands use this to refuse exposure by accident. An inherited
    /// socket is local when the address it is bound to is (a descriptor that cannot be read is
    /// not).
    pub fn is_local(&self) -> bool {
        match self {
            Endpoint::Fd(r) => crate::inherit::probe(r).is_ok_and(|s| s.is_local()),
            Endpoint::Unix { .. } => true,
            Endpoint::Ip { host: Host::Ip(ip), .. } => ip.is_loopback(),
            Endpoint::Ip { host: Host::Name(n), .. } => n.eq_ignore_ascii_case("localhost"),
            Endpoint::Ip { host: Host::Unspecified, .. } => false,
        }
    }

    /// Whether the endpoint is TLS (`tls://`): a server needs a certificate, a client a way to
    /// trust one.
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Ip { proto: IpProto::Tls, .. })
    }

    /// Whether the endpoint is a Unix-domain socket, where the kernel tells a server who the
    /// peer is (an inherited socket: whether it is one).
    pub fn is_unix(&self) -> bool {
        match self {
            Endpoint::Unix { .. } => true,
            Endpoint::Ip { .. } => false,
            Endpoint::Fd(r) => crate::inherit::probe(r).is_ok_and(|s| s.is_unix()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

fn parse(s: &str) -> Result<Endpoint, String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    if let Some((scheme, rest)) = split_scheme(s) {
        let scheme = scheme.to_ascii_lowercase();
        // `unix://tmp/s` would read as the relative path `tmp/s`, which is rarely what was
        // meant: after `://` a path starts with `/` (the third slash) or is an abstract `@name`.
        if scheme.starts_with("unix")
            && s[scheme.len()..].starts_with("://")
            && !rest.is_empty()
            && !rest.starts_with(['/', '@'])
        {
            return Err(format!(
                "after {scheme}:// comes an absolute path: write {scheme}:///{rest} for /{rest}, or {scheme}:{rest} for a \
                 path relative to here"
            ));
        }
        return parse_with_scheme(&scheme, rest);
    }
    // Shorthands.
    if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
        return Ok(Endpoint::Unix { kind: UnixKind::Stream, addr: UnixAddr::Path(PathBuf::from(s)) });
    }
    if let Some(problem) = socat_problem(s) {
        return Err(problem);
    }
    if let Some((word, rest)) = s.split_once(':') {
        // A scheme with one slash or none (`tcp:/host:80`, `tcp:host:80`), or a scheme we do
        // not have (`unix-stream:/tmp/s`): no host:port reading of these can work, so say what
        // went wrong rather than what a host:port parse trips over.
        let lower = word.to_ascii_lowercase();
        if SCHEMES.contains(&lower.as_str()) && (rest.starts_with('/') || rest.contains(':')) {
            return Err(format!("write {lower}://{}, with two slashes", rest.trim_start_matches('/')));
        }
        if rest.starts_with('/') && word.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(unknown_scheme(word));
        }
        return parse_ip(IpProto::Tcp, Family::Any, s);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("a bare number is ambiguous; write :{s} to listen on every interface or HOST:{s}"));
    }
    Err("no port: write HOST:PORT, or a path starting with / or ./ for a Unix socket".into())
}

/// An address written as socat writes it (`TCP-LISTEN:7000,fork`, `UNIX-CONNECT:/run/x.sock`),
/// as sockit writes it (`:7000`, `/run/x.sock`); `None` when `text` is not one. socat's options
/// after a comma are left out. (`TCP:HOST:PORT` is not here: the parser's own rule says to write
/// `tcp://HOST:PORT`.)
pub fn from_socat(text: &str) -> Option<String> {
    let (word, rest) = text.split_once(':')?;
    let addr = rest.split(',').next().unwrap_or_default();
    if addr.is_empty() {
        return None;
    }
    let word = word.to_ascii_lowercase();
    // TCP4-LISTEN, UDP6-SENDTO…: the family digit becomes the scheme's.
    let (base, family) = match word.find(['4', '6']) {
        Some(i) if word[..i] == *"tcp" || word[..i] == *"udp" => {
            (format!("{}{}", &word[..i], &word[i + 1..]), &word[i..=i])
        }
        _ => (word.clone(), ""),
    };
    let path = |kind: &str| match kind {
        "unix" if addr.starts_with('/') || addr.starts_with("./") || addr.starts_with("../") => addr.to_owned(),
        kind => format!("{kind}:{addr}"),
    };
    // A listening address is a port, a connecting one HOST:PORT: `ssl:443` stays a host called ssl.
    let port = addr.bytes().all(|b| b.is_ascii_digit());
    let host_port = addr.contains(':');
    Some(match base.as_str() {
        "tcp-listen" | "tcp-l" if port && family.is_empty() => format!(":{addr}"),
        "tcp-listen" | "tcp-l" if port => format!("tcp{family}://:{addr}"),
        "tcp-connect" if host_port => format!("tcp{family}://{addr}"),
        "udp-listen" | "udp-l" | "udp-recvfrom" | "udp-recv" if port => format!("udp{family}://:{addr}"),
        "udp-connect" | "udp-sendto" | "udp-datagram" | "udp-dgram" if host_port => format!("udp{family}://{addr}"),
        "unix-listen" | "unix-l" | "unix-connect" | "unix-client" => path("unix"),
        "unix-sendto" | "unix-recvfrom" | "unix-recv" => path("unix-dgram"),
        "abstract-listen" | "abstract-connect" | "abstract-client" => format!("unix:@{addr}"),
        "abstract-sendto" | "abstract-recvfrom" | "abstract-recv" => format!("unix-dgram:@{addr}"),
        "openssl" | "ssl" | "openssl-connect" if host_port => format!("tls://{addr}"),
        "openssl-listen" | "ssl-l" if port => format!("tls://:{addr}"),
        _ => return None,
    })
}

/// What to say about an address in socat's syntax, or about one of socat's words that is no
/// address in sockit.
fn socat_problem(s: &str) -> Option<String> {
    if let Some(ours) = from_socat(s) {
        let fork = if s.to_ascii_lowercase().split(',').any(|o| o == "fork") {
            " (a sockit server takes many clients as it is, as socat does with fork)"
        } else {
            ""
        };
        return Some(format!("that is socat's way of writing it; sockit writes {ours}{fork}"));
    }
    let (word, rest) = s.split_once(':').unwrap_or((s, ""));
    match word.to_ascii_lowercase().as_str() {
        // `exec:80` would be a host called exec.
        "exec" | "system" if !rest.bytes().all(|b| b.is_ascii_digit()) => Some(
            "socat's EXEC: is no socket; sockit runs a program for each client with: serve ENDPOINT spawn -- PROGRAM"
                .into(),
        ),
        "-" | "stdio" | "stdin" | "stdout" | "stdin-stdout" => Some(format!(
            "'{s}' is socat's stdin and stdout, which sockit connect ENDPOINT uses as they are (and serve's print writes to)"
        )),
        _ => None,
    }
}

/// Splits `scheme:rest` when the text before the first colon looks like one of our schemes, so
/// that `localhost:80` is not mistaken for a scheme called `localhost`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    if let Some(i) = s.find("://") {
        let scheme = &s[..i];
        if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+') {
            return Some((scheme, &s[i + 3..]));
        }
    }
    let (scheme, rest) = s.split_once(':')?;
    let lower = scheme.to_ascii_lowercase();
    matches!(lower.as_str(), "unix" | "unix-dgram" | "unix-seqpacket").then_some((scheme, rest))
}

fn parse_with_scheme(scheme: &str, rest: &str) -> Result<Endpoint, String> {
    let ip = |proto, family| parse_ip(proto, family, rest);
    match scheme {
        "tcp" => ip(IpProto::Tcp, Family::Any),
        "tcp4" => ip(IpProto::Tcp, Family::V4),
        "tcp6" => ip(IpProto::Tcp, Family::V6),
        "udp" => ip(IpProto::Udp, Family::Any),
        "udp4" => ip(IpProto::Udp, Family::V4),
        "udp6" => ip(IpProto::Udp, Family::V6),
        "tls" => ip(IpProto::Tls, Family::Any),
        "tls4" => ip(IpProto::Tls, Family::V4),
        "tls6" => ip(IpProto::Tls, Family::V6),
        "unix" => parse_unix(UnixKind::Stream, rest),
        "unix-dgram" => parse_unix(UnixKind::Dgram, rest),
        "unix-seqpacket" => parse_unix(UnixKind::Seqpacket, rest),
        "fd" => parse_fd(rest).map(Endpoint::Fd),
        other => Err(unknown_scheme(other)),
    }
}

/// The schemes [`parse_with_scheme`] knows, as they are written before `://`.
const SCHEMES: [&str; 13] =
    ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "tls", "tls4", "tls6", "unix", "unix-dgram", "unix-seqpacket", "fd"];

fn unknown_scheme(scheme: &str) -> String {
    format!("unknown scheme '{scheme}'")
}

/// `fd://N` with N a decimal descriptor number, or `fd://NAME` with a name as systemd gives
/// passed sockets: ASCII letters, digits and `. _ - @ \`, starting with a letter or `_` (so that
/// a number is never mistaken for a name), no `:` (the separator in `LISTEN_FDNAMES`).
fn parse_fd(rest: &str) -> Result<FdRef, String> {
    let Some(first) = rest.chars().next() else {
        return Err("no descriptor after fd://: write fd://N (a number, e.g. fd://3) or fd://NAME".into());
    };
    if first.is_ascii_digit() || first == '-' || first == '+' {
        if !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("descriptor '{rest}' is not a number from 0 to {}", RawFd::MAX));
        }
        return rest
            .parse::<RawFd>()
            .map(FdRef::Number)
            .map_err(|_| format!("descriptor {rest} is out of range (0 to {})", RawFd::MAX));
    }
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '\\');
    if !(first.is_ascii_alphabetic() || first == '_') || !rest.chars().all(valid_char) {
        return Err(format!(
            "'{rest}' is not a descriptor number or socket name (names use letters, digits and . _ - @ \\, \
             and start with a letter)"
        ));
    }
    if rest.len() > MAX_FD_NAME {
        return Err(format!("the socket name is {} bytes; systemd allows {MAX_FD_NAME}", rest.len()));
    }
    Ok(FdRef::Name(rest.to_owned()))
}

fn parse_unix(kind: UnixKind, rest: &str) -> Result<Endpoint, String> {
    // `unix:///abs` arrives here as `/abs` (the `//` went with the scheme separator); `unix:/abs`
    // and `unix:rel` arrive as they are.
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err("the abstract name after '@' is empty".into());
        }
        return Ok(Endpoint::Unix { kind, addr: UnixAddr::Abstract(name.as_bytes().to_vec()) });
    }
    if rest.is_empty() {
        return Err("the Unix socket path is empty".into());
    }
    Ok(Endpoint::Unix { kind, addr: UnixAddr::Path(PathBuf::from(rest)) })
}

fn parse_ip(proto: IpProto, family: Family, s: &str) -> Result<Endpoint, String> {
    let (host_text, port_text) = if let Some(after) = s.strip_prefix('[') {
        let (inside, tail) = after.split_once(']').ok_or("an IPv6 address opened with '[' has no closing ']'")?;
        let port = tail.strip_prefix(':').ok_or("no port after the ']': write [ADDRESS]:PORT")?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| format!("'{inside}' inside brackets is not an IPv6 address"))?;
        (HostText::V6(ip), port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or("no port: write HOST:PORT")?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets: [::1]:PORT".into());
        }
        (HostText::Plain(host), port)
    };
    let port = parse_port(port_text)?;
    let host = match host_text {
        HostText::V6(ip) => Host::Ip(IpAddr::V6(ip)),
        HostText::Plain("") | HostText::Plain("*") => Host::Unspecified,
        HostText::Plain(h) => match h.parse::<Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) => Host::Name(check_host_name(h)?),
        },
    };
    match (family, &host) {
        (Family::V4, Host::Ip(IpAddr::V6(_))) => Err("an IPv6 address in an IPv4-only endpoint".into()),
        (Family::V6, Host::Ip(IpAddr::V4(_))) => Err("an IPv4 address in an IPv6-only endpoint".into()),
        _ => Ok(Endpoint::Ip { proto, family, host, port }),
    }
}

enum HostText<'a> {
    V6(Ipv6Addr),
    Plain(&'a str),
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("the port is missing".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{p}' is not a number from 0 to 65535"));
    }
    p.parse().map_err(|_| format!("port {p} is out of range (0 to 65535)"))
}

/// Checks a host name's syntax (labels of letters, digits, `-` and `_`, at most 63 bytes each
/// and 253 in all); also used for `sockit ping`'s HOST.
pub(crate) fn check_host_name(h: &str) -> Result<String, String> {
    let ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok { Ok(h.to_owned()) } else { Err(format!("'{h}' is not a valid host name or IPv4 address")) }
}

impl IpProto {
    /// The scheme of an endpoint of this protocol with no family restriction (`tcp`, `udp`,
    /// `tls`).
    pub fn scheme(self) -> &'static str {
        match self {
            IpProto::Tcp => "tcp",
            IpProto::Udp => "udp",
            IpProto::Tls => "tls",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Any => "",
            Family::V4 => "4",
            Family::V6 => "6",
        })
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) if p.is_absolute() => write!(f, "//{}", p.display()),
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(name) => write!(f, "@{}", OsStr::from_bytes(name).to_string_lossy()),
        }
    }
}

impl fmt::Display for FdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdRef::Number(n) => write!(f, "fd://{n}"),
            FdRef::Name(name) => write!(f, "fd://{name}"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Fd(r) => write!(f, "{r}"),
            Endpoint::Ip { proto, family, host, port } => {
                write!(f, "{}{family}://", proto.scheme())?;
                match host {
                    Host::Unspecified => write!(f, ":{port}"),
                    Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{port}"),
                    Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{port}"),
                    Host::Name(n) => write!(f, "{n}:{port}"),
                }
            }
            Endpoint::Unix { kind, addr } => {
                let scheme = match kind {
                    UnixKind::Stream => "unix",
                    UnixKind::Dgram => "unix-dgram",
                    UnixKind::Seqpacket => "unix-seqpacket",
                };
                write!(f, "{scheme}:{addr}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(family: Family, host: Host, port: u16) -> Endpoint {
        Endpoint::Ip { proto: IpProto::Tcp, family, host, port }
    }
    fn tls(family: Family, host: Host, port: u16) -> Endpoint {
        Endpoint::Ip { proto: IpProto::Tls, family, host, port }
    }
    fn udp(family: Family, host: Host, port: u16) -> Endpoint {
        Endpoint::Ip { proto: IpProto::Udp, family, host, port }
    }
    fn unix(kind: UnixKind, path: &str) -> Endpoint {
        Endpoint::Unix { kind, addr: UnixAddr::Path(path.into()) }
    }
    fn abs(kind: UnixKind, name: &str) -> Endpoint {
        Endpoint::Unix { kind, addr: UnixAddr::Abstract(name.as_bytes().to_vec()) }
    }
    fn v4(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn valid_endpoints() {
        use Family::*;
        let cases: Vec<(&str, Endpoint)> = vec![
            ("tcp://127.0.0.1:7000", tcp(Any, v4("127.0.0.1"), 7000)),
            ("TCP://127.0.0.1:7000", tcp(Any, v4("127.0.0.1"), 7000)),
            ("tcp4://127.0.0.1:0", tcp(V4, v4("127.0.0.1"), 0)),
            ("tcp6://[::1]:65535", tcp(V6, v4("::1"), 65535)),
            ("tcp://[::1]:80", tcp(Any, v4("::1"), 80)),
            ("tcp://localhost:80", tcp(Any, Host::Name("localhost".into()), 80)),
            ("tcp://:7000", tcp(Any, Host::Unspecified, 7000)),
            ("tcp://*:7000", tcp(Any, Host::Unspecified, 7000)),
            ("tcp6://host.example:1", tcp(V6, Host::Name("host.example".into()), 1)),
            ("udp://127.0.0.1:53", udp(Any, v4("127.0.0.1"), 53)),
            ("udp4://:9", udp(V4, Host::Unspecified, 9)),
            ("udp6://[fe80::1]:9", udp(V6, v4("fe80::1"), 9)),
            ("localhost:7000", tcp(Any, Host::Name("localhost".into()), 7000)),
            ("127.0.0.1:7000", tcp(Any, v4("127.0.0.1"), 7000)),
            ("[::1]:7000", tcp(Any, v4("::1"), 7000)),
            (":7000", tcp(Any, Host::Unspecified, 7000)),
            ("unix:///tmp/s.sock", unix(UnixKind::Stream, "/tmp/s.sock")),
            ("unix:/tmp/s.sock", unix(UnixKind::Stream, "/tmp/s.sock")),
            ("unix:rel/s.sock", unix(UnixKind::Stream, "rel/s.sock")),
            ("unix:@name", abs(UnixKind::Stream, "name")),
            ("unix://@name", abs(UnixKind::Stream, "name")),
            ("unix-dgram:/tmp/d", unix(UnixKind::Dgram, "/tmp/d")),
            ("unix-dgram:@d", abs(UnixKind::Dgram, "d")),
            ("unix-seqpacket:///tmp/q", unix(UnixKind::Seqpacket, "/tmp/q")),
            ("unix-seqpacket:q", unix(UnixKind::Seqpacket, "q")),
            ("/tmp/s.sock", unix(UnixKind::Stream, "/tmp/s.sock")),
            ("./s.sock", unix(UnixKind::Stream, "./s.sock")),
            ("../s.sock", unix(UnixKind::Stream, "../s.sock")),
            ("fd://3", Endpoint::Fd(FdRef::Number(3))),
            ("FD://0", Endpoint::Fd(FdRef::Number(0))),
            ("fd://007", Endpoint::Fd(FdRef::Number(7))),
            ("fd://2147483647", Endpoint::Fd(FdRef::Number(i32::MAX))),
            ("fd://web", Endpoint::Fd(FdRef::Name("web".into()))),
            ("fd://echo.socket", Endpoint::Fd(FdRef::Name("echo.socket".into()))),
            ("fd://x@a\\x2db.socket", Endpoint::Fd(FdRef::Name("x@a\\x2db.socket".into()))),
            ("fd://_admin-2", Endpoint::Fd(FdRef::Name("_admin-2".into()))),
            ("tls://example.org:443", tls(Any, Host::Name("example.org".into()), 443)),
            ("TLS://127.0.0.1:7000", tls(Any, v4("127.0.0.1"), 7000)),
            ("tls4://:7000", tls(V4, Host::Unspecified, 7000)),
            ("tls6://[::1]:7000", tls(V6, v4("::1"), 7000)),
        ];
        for (input, expected) in cases {
            assert_eq!(Endpoint::parse(input), Ok(expected), "input {input:?}");
        }
    }

    /// The list the one-slash message goes by is the list the parser knows.
    #[test]
    fn every_listed_scheme_is_one_the_parser_knows() {
        for scheme in SCHEMES {
            if let Err(e) = Endpoint::parse(&format!("{scheme}://x")) {
                assert!(!e.problem.contains("unknown scheme"), "{scheme}: {}", e.problem);
            }
        }
    }

    /// Host names that are also socat's words stay host names where socat's form would not fit.
    #[test]
    fn socat_words_as_host_names_are_hosts() {
        for input in ["ssl:443", "exec:80", "openssl:8443", "system:22"] {
            let (host, port) = input.split_once(':').unwrap();
            let want = Endpoint::Ip {
                proto: IpProto::Tcp,
                family: Family::Any,
                host: Host::Name(host.into()),
                port: port.parse().unwrap(),
            };
            assert_eq!(Endpoint::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn invalid_endpoints() {
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("7000", "a bare number is ambiguous"),
            ("localhost", "no port"),
            ("localhost:", "the port is missing"),
            ("localhost:http", "port 'http' is not a number"),
            ("localhost:65536", "out of range"),
            ("localhost:-1", "is not a number"),
            ("::1:80", "needs brackets"),
            ("[::1:80", "no closing ']'"),
            ("[::1]80", "no port after the ']'"),
            ("[1.2.3.4]:80", "not an IPv6 address"),
            ("tcp4://[::1]:80", "IPv6 address in an IPv4-only"),
            ("tcp6://127.0.0.1:80", "IPv4 address in an IPv6-only"),
            ("ftp://host:21", "unknown scheme 'ftp'"),
            ("tlsv1://host:443", "unknown scheme 'tlsv1'"),
            ("tcp:/127.0.0.1:7300", "write tcp://127.0.0.1:7300, with two slashes"),
            ("UDP:127.0.0.1:53", "write udp://127.0.0.1:53, with two slashes"),
            ("tls:/[::1]:443", "write tls://[::1]:443"),
            ("unix-stream:/tmp/x", "unknown scheme 'unix-stream'"),
            ("fe80::1:80", "needs brackets"),
            ("TCP-LISTEN:7000,fork,reuseaddr", "socat's way of writing it; sockit writes :7000 (a sockit server"),
            ("tcp6-listen:7000", "sockit writes tcp6://:7000"),
            ("TCP4:127.0.0.1:80", "write tcp4://127.0.0.1:80, with two slashes"),
            ("TCP-CONNECT:host:80", "sockit writes tcp://host:80"),
            ("UDP4-RECVFROM:53,fork", "sockit writes udp4://:53 ("),
            ("UDP-SENDTO:127.0.0.1:53", "sockit writes udp://127.0.0.1:53"),
            ("UNIX-CONNECT:/run/x.sock", "sockit writes /run/x.sock"),
            ("UNIX-LISTEN:x.sock,fork", "sockit writes unix:x.sock ("),
            ("UNIX-SENDTO:/run/d.sock", "sockit writes unix-dgram:/run/d.sock"),
            ("ABSTRACT-LISTEN:name", "sockit writes unix:@name"),
            ("OPENSSL:host:443,verify=0", "sockit writes tls://host:443"),
            ("OPENSSL-LISTEN:443", "sockit writes tls://:443"),
            ("EXEC:cat", "spawn -- PROGRAM"),
            ("SYSTEM:echo hi", "spawn -- PROGRAM"),
            ("STDIO", "socat's stdin and stdout"),
            ("-", "socat's stdin and stdout"),
            ("tls4://[::1]:443", "IPv6 address in an IPv4-only"),
            ("tls://host", "no port"),
            ("tcp://bad host:80", "not a valid host name"),
            ("tcp://a..b:80", "not a valid host name"),
            ("unix:", "path is empty"),
            ("unix:@", "abstract name after '@' is empty"),
            ("unix-dgram:", "path is empty"),
            ("unix://tmp/s.sock", "write unix:///tmp/s.sock for /tmp/s.sock, or unix:tmp/s.sock for a path relative"),
            ("unix-seqpacket://run/x", "write unix-seqpacket:///run/x"),
            ("/tmp/a\0b", "NUL byte"),
            ("fd://", "no descriptor after fd://"),
            ("fd://-1", "'-1' is not a number"),
            ("fd://+3", "'+3' is not a number"),
            ("fd://3x", "'3x' is not a number"),
            ("fd://99999999999", "out of range"),
            ("fd://2147483648", "out of range"),
            ("fd://web:admin", "not a descriptor number or socket name"),
            ("fd://we b", "not a descriptor number or socket name"),
            ("fd://a/b", "not a descriptor number or socket name"),
            ("fd://.hidden", "not a descriptor number or socket name"),
            ("fd://caf\u{e9}", "not a descriptor number or socket name"),
        ];
        let long = format!("fd://{}", "n".repeat(MAX_FD_NAME + 1));
        assert!(Endpoint::parse(&long).unwrap_err().problem.contains("systemd allows 255"));
        for (input, problem) in cases {
            let err = Endpoint::parse(input).expect_err(input);
            assert!(err.problem.contains(problem), "input {input:?}: got {:?}, want {problem:?}", err.problem);
            let line = err.to_string();
            assert!(!line.contains('\n'), "error must be one line: {line}");
            assert!(line.contains("forms: tcp://HOST:PORT"), "error must show the forms: {line}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "tcp://127.0.0.1:7000",
            "tcp6://[::1]:1",
            "udp4://:9",
            "tcp://localhost:80",
            "unix:///tmp/s",
            "unix:rel",
            "unix:@abs",
            "unix-dgram:@d",
            "unix-seqpacket:///x",
            "fd://3",
            "fd://0",
            "fd://web",
            "fd://x@a\\x2db.socket",
            "tls://localhost:443",
            "tls4://127.0.0.1:1",
            "tls6://[::1]:2",
            "tls://:7000",
        ] {
            let e = Endpoint::parse(input).unwrap();
            assert_eq!(e.to_string(), input);
            assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
        }
    }

    #[test]
    fn styles_and_locality() {
        let style = |s: &str| Endpoint::parse(s).unwrap().style();
        assert_eq!(style("tcp://:1"), SocketStyle::Stream);
        assert_eq!(style("tls://:1"), SocketStyle::Stream);
        assert_eq!(style("/tmp/x"), SocketStyle::Stream);
        assert_eq!(style("unix-seqpacket:@x"), SocketStyle::Seqpacket);
        assert_eq!(style("udp://:1"), SocketStyle::Datagram);
        assert_eq!(style("unix-dgram:@x"), SocketStyle::Datagram);
        let local = |s: &str| Endpoint::parse(s).unwrap().is_local();
        assert!(local("127.0.0.2:1") && local("[::1]:1") && local("localhost:1") && local("unix:@x"));
        assert!(!local(":1") && !local("10.0.0.1:1") && !local("example.com:1"));
        // An inherited descriptor that cannot be read: a stream that is not local, until binding
        // says what is wrong with it.
        assert_eq!(style("fd://2147483647"), SocketStyle::Stream);
        assert!(!local("fd://2147483647") && !Endpoint::parse("fd://2147483647").unwrap().is_unix());
    }
}
