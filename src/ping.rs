//! Ping: ICMP echo requests to one host, and what comes back, over whichever ICMP socket the
//! system allows.
//!
//! [`Pinger::open`] prefers an unprivileged ICMP datagram socket (`SOCK_DGRAM`,
//! `IPPROTO_ICMP`/`IPPROTO_ICMPV6`, a "ping socket"), which Linux allows to the groups in
//! `net.ipv4.ping_group_range` (for IPv6 too): the kernel picks the identifier (the socket's
//! "port"), hands it only the replies to it, and reports ICMP errors through the socket's error
//! queue. Otherwise it takes a raw socket, which needs `CAP_NET_RAW` and sees every ICMP
//! message on the host: it filters by a random identifier itself and reads errors from the
//! messages. [`PingError::NotPermitted`] says what to change when neither is allowed.
//!
//! [`Pinger::run`] sends a request every interval and reports each [`Event`] to a callback as it
//! happens; it returns the [`Statistics`] when the count is done (every request answered or
//! the timeout after the last one over) or when the cancellation token fires. Replies are
//! matched by identifier, sequence number and payload: each payload is a send timestamp and a
//! random pattern chosen per run, and one that comes back different is reported as corrupt,
//! not counted as received. Round-trip times come from this side's own record of when each
//! request left (the kernel's receive timestamp where it is plausible), never from the
//! payload, which the peer could change.
//!
//! The wire format lives in [`crate::icmp`], sans-IO; the private `Tracker` is the matching and
//! the statistics, also without IO.
//!
//! ```no_run
//! use sockit::endpoint::Family;
//! use sockit::ping::{self, Event, PingConfig, Pinger};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target = ping::resolve(&ping::parse_host("::1")?, Family::Any).await?;
//! let pinger = Pinger::open(target)?; // a datagram socket if allowed, else a raw one
//! let config = PingConfig { count: Some(3), ..PingConfig::default() };
//! let stats = pinger
//!     .run(&config, |event| if let Event::Reply(r) = event { println!("seq {} in {:?}", r.seq, r.rtt) }, &CancellationToken::new())
//!     .await?;
//! println!("{} of {} answered over a {}", stats.received, stats.transmitted, pinger.kind());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Family, Host};
use crate::icmp::{self, EchoRequest, Icmp, IpVersion, ParseError, Parsed};
use crate::net::NetError;

/// The payload size when none is given: 56 bytes, 64 with the ICMP header (as iputils).
pub const DEFAULT_SIZE: usize = 56;
/// The largest payload in an IPv4 packet: 65535 minus a 20-byte IP header and the 8-byte ICMP
/// header.
pub const MAX_SIZE_V4: usize = 65507;
/// The largest payload in an IPv6 packet: 65535 (the payload length field, which excludes the
/// IPv6 header) minus the 8-byte ICMPv6 header.
pub const MAX_SIZE_V6: usize = 65527;
/// The shortest interval between requests. There is no flood mode.
pub const MIN_INTERVAL: Duration = Duration::from_millis(2);
/// The shortest interval the command allows to a user other than root (iputils' classic
/// rule; the library itself only enforces [`MIN_INTERVAL`]).
pub const MIN_USER_INTERVAL: Duration = Duration::from_millis(200);
/// How long to wait for replies after the last request of a count, when not told.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a host name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many datagrams one wake-up handles at most, so that a flood of arriving packets cannot
/// hold back the next request or the cancellation.
const BATCH: usize = 64;
/// The send timestamp at the start of every payload: nanoseconds since the run started.
const STAMP_LEN: usize = 8;
/// Room for control messages: a timestamp, a TTL and an extended error with its address.
const CONTROL_LEN: usize = 256;

/// Which kind of ICMP socket a pinger uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// An unprivileged ICMP datagram socket ("ping socket").
    Datagram,
    /// A raw socket (needs `CAP_NET_RAW`).
    Raw,
}

impl SocketKind {
    /// A one-word name: `datagram` or `raw`.
    pub fn name(self) -> &'static str {
        match self {
            SocketKind::Datagram => "datagram",
            SocketKind::Raw => "raw",
        }
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Datagram => "ICMP datagram socket",
            SocketKind::Raw => "raw socket",
        })
    }
}

/// What to send and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingConfig {
    /// Stop after this many requests (and their replies); `None` runs until cancelled.
    pub count: Option<u64>,
    /// The time between requests; at least [`MIN_INTERVAL`].
    pub interval: Duration,
    /// After the last request of a count, how long to wait for the replies still missing.
    pub timeout: Duration,
    /// The payload size in bytes, after the 8-byte ICMP header.
    pub size: usize,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig { count: None, interval: Duration::from_secs(1), timeout: DEFAULT_TIMEOUT, size: DEFAULT_SIZE }
    }
}

/// The largest payload size for a target's address family.
pub fn max_size(target: IpAddr) -> usize {
    if target.is_ipv4() { MAX_SIZE_V4 } else { MAX_SIZE_V6 }
}

/// Why pinging failed or could not start. Each message is one lower-case line.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The host argument is not a host (a usage error).
    #[error("invalid host '{input}': {problem}")]
    BadHost {
        /// What was written.
        input: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The host did not resolve.
    #[error(transparent)]
    Resolve(#[from] NetError),
    /// The name lookup did not finish in time.
    #[error("looking up '{host}' took longer than {}s", RESOLVE_TIMEOUT.as_secs())]
    ResolveTimedOut {
        /// The name.
        host: String,
    },
    /// A setting is out of range (a usage error).
    #[error("{0}")]
    Config(String),
    /// Neither kind of ICMP socket is allowed to this process.
    #[error(
        "cannot ping: ICMP datagram sockets are not allowed for group {gid} (net.ipv4.ping_group_range is '{range}') and raw sockets need CAP_NET_RAW (hint: sysctl -w net.ipv4.ping_group_range='0 2147483647', or run as root)"
    )]
    NotPermitted {
        /// The effective group id.
        gid: u32,
        /// The sysctl's value, as read.
        range: String,
    },
    /// The address family is not available (e.g. IPv6 disabled).
    #[error("cannot ping {target}: {family} is not available on this machine")]
    FamilyUnavailable {
        /// The address.
        target: IpAddr,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// Opening an ICMP socket failed for another reason.
    #[error("cannot open an ICMP socket: datagram: {datagram}; raw: {raw}")]
    Socket {
        /// Why the datagram socket failed.
        datagram: io::Error,
        /// Why the raw socket failed.
        raw: io::Error,
    },
    /// A system call on the open socket failed.
    #[error("cannot {action} the ICMP socket: {error}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
}

impl PingError {
    /// Whether the error is a mistake in how ping was called rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, PingError::BadHost { .. } | PingError::Config(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Hosts

/// Parses the host argument: an IPv4 or IPv6 address (brackets allowed), or a host name.
/// Endpoints (`tcp://…`), ports and anything else are refused with a reason.
pub fn parse_host(text: &str) -> Result<Host, PingError> {
    let bad = |problem: &str| PingError::BadHost { input: text.to_owned(), problem: problem.to_owned() };
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.contains("://") || text.starts_with("unix") && text.contains(':') || text.starts_with('/') {
        return Err(bad("that is an endpoint; ping takes a host: an address such as 127.0.0.1 or ::1, or a name"));
    }
    let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if let Ok(ip) = inner.parse::<IpAddr>() {
        return Ok(Host::Ip(ip.to_canonical()));
    }
    if text.contains(':') {
        return Err(bad("ping takes a host without a port (ICMP has none)"));
    }
    match crate::endpoint::check_host_name(text) {
        Ok(name) => Ok(Host::Name(name)),
        Err(_) => Err(bad("not an IP address or a valid host name")),
    }
}

/// Whether a name is `localhost` or under it: such names are the loopback address and are
/// never looked up (RFC 6761), so that pinging them cannot leave the machine.
fn is_localhost(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost")
}

/// Turns a host into the address to ping: a literal as it is (checked against `family`),
/// `localhost` as 127.0.0.1 (::1 for [`Family::V6`]), other names through the system resolver,
/// the first address of the family, within [`RESOLVE_TIMEOUT`].
pub async fn resolve(host: &Host, family: Family) -> Result<IpAddr, PingError> {
    let name = match host {
        Host::Ip(ip) => {
            return match (family, ip) {
                (Family::V4, IpAddr::V6(_)) => Err(PingError::Config(format!("-4 with the IPv6 address {ip}"))),
                (Family::V6, IpAddr::V4(_)) => Err(PingError::Config(format!("-6 with the IPv4 address {ip}"))),
                _ => Ok(*ip),
            };
        }
        Host::Unspecified => return Err(PingError::Config("no host given".into())),
        Host::Name(name) => name,
    };
    if is_localhost(name) {
        return Ok(match family {
            Family::V6 => Ipv6Addr::LOCALHOST.into(),
            Family::V4 | Family::Any => Ipv4Addr::LOCALHOST.into(),
        });
    }
    let lookup = tokio::net::lookup_host((name.as_str(), 0));
    let addrs: Vec<IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Err(_) => return Err(PingError::ResolveTimedOut { host: name.clone() }),
        Ok(Err(_)) => return Err(NetError::UnknownHost { host: name.clone() }.into()),
        Ok(Ok(it)) => it.map(|a| a.ip().to_canonical()).collect(),
    };
    let wanted = addrs.iter().find(|ip| match family {
        Family::Any => true,
        Family::V4 => ip.is_ipv4(),
        Family::V6 => ip.is_ipv6(),
    });
    match wanted {
        Some(ip) => Ok(*ip),
        None if addrs.is_empty() => Err(NetError::UnknownHost { host: name.clone() }.into()),
        None => {
            let family = if family == Family::V6 { "IPv6" } else { "IPv4" };
            Err(NetError::NoAddressOfFamily { host: name.clone(), family }.into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and statistics

/// A reply to one of our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The sequence number.
    pub seq: u16,
    /// Who answered.
    pub from: IpAddr,
    /// The ICMP message's length, header included.
    pub bytes: usize,
    /// The reply's TTL (IPv4) or hop limit (IPv6), where the socket reports it.
    pub ttl: Option<u8>,
    /// The round-trip time.
    pub rtt: Duration,
    /// Whether this sequence number was answered before.
    pub duplicate: bool,
}

/// What is wrong with a reply whose identifier and sequence number are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The ICMP checksum does not match (raw IPv4 sockets; the kernel drops such replies
    /// before they reach a datagram socket).
    BadChecksum,
    /// The payload's length differs from the request's.
    WrongLength {
        /// The length sent.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A payload byte differs from the request's (the first one that does).
    WrongByte {
        /// Its index in the payload.
        index: usize,
        /// The byte sent.
        expected: u8,
        /// The byte received.
        got: u8,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadChecksum => f.write_str("BAD CHECKSUM!"),
            Corruption::WrongLength { expected, got } => {
                write!(f, "wrong length: {got} data bytes, {expected} sent")
            }
            Corruption::WrongByte { index, expected, got } => {
                write!(f, "wrong data byte #{index} should be 0x{expected:x} but was 0x{got:x}")
            }
        }
    }
}

/// Something that happened during a run, reported as it happens.
#[derive(Debug)]
pub enum Event {
    /// A reply (or a duplicate of one).
    Reply(Reply),
    /// A reply to one of our requests that did not come back intact; not counted as received.
    Corrupt {
        /// The reply as it arrived.
        reply: Reply,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// An ICMP error about one of our requests (or a local error the kernel reported for it).
    Error {
        /// The request's sequence number.
        seq: u16,
        /// Who sent the error; `None` for a local error.
        from: Option<IpAddr>,
        /// What happened, in iputils' words ("Destination Host Unreachable").
        message: String,
    },
    /// A request could not be sent.
    SendFailed {
        /// Its sequence number.
        seq: u16,
        /// Why.
        error: io::Error,
    },
}

/// The round-trip times of the replies received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttSummary {
    /// The shortest.
    pub min: Duration,
    /// The mean.
    pub avg: Duration,
    /// The longest.
    pub max: Duration,
    /// The mean deviation as iputils computes it: the standard deviation.
    pub mdev: Duration,
}

/// What a run adds up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    /// Requests sent (or attempted: a failed send counts, and as an error).
    pub transmitted: u64,
    /// Requests answered intact, each counted once.
    pub received: u64,
    /// Replies beyond the first for a request.
    pub duplicates: u64,
    /// Replies to our requests that came back damaged.
    pub corrupted: u64,
    /// ICMP errors about our requests, and failed sends.
    pub errors: u64,
    /// From the first request to the end of the run.
    pub elapsed: Duration,
    /// Round-trip times, when anything was received.
    pub rtt: Option<RttSummary>,
}

impl Statistics {
    /// The share of requests not answered intact, in percent.
    pub fn loss_percent(&self) -> f64 {
        if self.transmitted == 0 {
            return 0.0;
        }
        (self.transmitted.saturating_sub(self.received)) as f64 * 100.0 / self.transmitted as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Matching and statistics, without IO

/// A request sent and what has come back for it.
struct Sent {
    at: Instant,
    wall: SystemTime,
    stamp: [u8; STAMP_LEN],
    replies: u32,
    /// Answered, corrupt, errored or failed to send: nothing more is waited for.
    settled: bool,
}

/// What a received datagram says besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    from: Option<IpAddr>,
    ttl: Option<u8>,
    kernel_time: Option<SystemTime>,
}

/// One run's requests, their matching replies, and the counts. At most one record per
/// sequence number, so at most 65536 records however long the run.
struct Tracker {
    version: IpVersion,
    target: IpAddr,
    id: u16,
    /// The payload's bytes after the timestamp (the first [`STAMP_LEN`] are unused): random,
    /// chosen per run. Its length is the payload size.
    pattern: Vec<u8>,
    start: Instant,
    next_seq: u16,
    sent: HashMap<u16, Sent>,
    transmitted: u64,
    received: u64,
    duplicates: u64,
    corrupted: u64,
    errors: u64,
    settled: u64,
    rtt_sum: f64,
    rtt_sum_sq: f64,
    rtt_min: Duration,
    rtt_max: Duration,
}

impl Tracker {
    /// A tracker for requests with payloads of `pattern.len()` bytes.
    fn new(target: IpAddr, id: u16, pattern: Vec<u8>, start: Instant) -> Tracker {
        Tracker {
            version: if target.is_ipv4() { IpVersion::V4 } else { IpVersion::V6 },
            target,
            id,
            pattern,
            start,
            next_seq: 1,
            sent: HashMap::new(),
            transmitted: 0,
            received: 0,
            duplicates: 0,
            corrupted: 0,
            errors: 0,
            settled: 0,
            rtt_sum: 0.0,
            rtt_sum_sq: 0.0,
            rtt_min: Duration::MAX,
            rtt_max: Duration::ZERO,
        }
    }

    /// The payload of the request stamped `stamp`: the stamp, then the pattern.
    fn payload(&self, stamp: &[u8; STAMP_LEN]) -> Vec<u8> {
        let mut p = self.pattern.clone();
        let n = p.len().min(STAMP_LEN);
        p[..n].copy_from_slice(&stamp[..n]);
        p
    }

    /// The next request, recorded as sent at `at`: its sequence number and its bytes.
    fn request(&mut self, at: Instant, wall: SystemTime) -> (u16, Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let nanos = u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let stamp = nanos.to_be_bytes();
        let payload = self.payload(&stamp);
        let request = EchoRequest { id: self.id, seq, payload: &payload };
        let bytes = match self.version {
            IpVersion::V4 => request.encode_v4(),
            IpVersion::V6 => request.encode_v6(),
        };
        // A record left from 65536 requests ago is replaced; it can no longer be told apart.
        if let Some(old) = self.sent.insert(seq, Sent { at, wall, stamp, replies: 0, settled: false })
            && old.settled
        {
            self.settled -= 1;
        }
        self.transmitted += 1;
        (seq, bytes)
    }

    fn settle(&mut self, seq: u16) {
        if let Some(s) = self.sent.get_mut(&seq)
            && !s.settled
        {
            s.settled = true;
            self.settled += 1;
        }
    }

    /// Whether every request of `count` was sent and has an outcome.
    fn done(&self, count: Option<u64>) -> bool {
        count.is_some_and(|c| self.transmitted >= c && self.settled >= c)
    }

    fn send_failed(&mut self, seq: u16) {
        self.errors += 1;
        self.settle(seq);
    }

    /// Handles one parsed datagram; returns the event it makes, if it concerns us.
    fn on_datagram(&mut self, parsed: Result<Parsed<'_>, ParseError>, meta: Meta, now: Instant) -> Option<Event> {
        let parsed = match parsed {
            Ok(p) => p,
            Err(ParseError::BadChecksum { echo_reply: Some((id, seq)), len }) if id == self.id => {
                let sent = self.sent.get(&seq)?;
                let reply = Reply {
                    seq,
                    from: meta.from.unwrap_or(self.target),
                    bytes: len,
                    ttl: meta.ttl,
                    rtt: rtt(sent, now, meta.kernel_time),
                    duplicate: sent.replies > 0,
                };
                self.corrupted += 1;
                self.settle(seq);
                return Some(Event::Corrupt { reply, problem: Corruption::BadChecksum });
            }
            Err(_) => return None,
        };
        let from = parsed.ip.map(|h| IpAddr::V4(h.src)).or(meta.from).unwrap_or(self.target);
        let ttl = parsed.ip.map(|h| h.ttl).or(meta.ttl);
        match parsed.icmp {
            Icmp::EchoReply(echo) if echo.id == self.id => {
                let sent = self.sent.get(&echo.seq)?;
                let reply = Reply {
                    seq: echo.seq,
                    from,
                    bytes: parsed.len,
                    ttl,
                    rtt: rtt(sent, now, meta.kernel_time),
                    duplicate: sent.replies > 0,
                };
                if let Some(problem) = compare(&self.payload(&sent.stamp), echo.payload) {
                    self.corrupted += 1;
                    self.settle(echo.seq);
                    return Some(Event::Corrupt { reply, problem });
                }
                if let Some(sent) = self.sent.get_mut(&echo.seq) {
                    sent.replies += 1;
                }
                if reply.duplicate {
                    self.duplicates += 1;
                } else {
                    self.received += 1;
                    self.settle(echo.seq);
                    let secs = reply.rtt.as_secs_f64();
                    self.rtt_sum += secs;
                    self.rtt_sum_sq += secs * secs;
                    self.rtt_min = self.rtt_min.min(reply.rtt);
                    self.rtt_max = self.rtt_max.max(reply.rtt);
                }
                Some(Event::Reply(reply))
            }
            Icmp::Error(e) => {
                let q = e.original?;
                if q.id != self.id || q.dst != self.target {
                    return None;
                }
                self.on_error(q.seq, Some(from), e.to_string())
            }
            _ => None,
        }
    }

    /// Handles an error about the request with sequence number `seq`.
    fn on_error(&mut self, seq: u16, from: Option<IpAddr>, message: String) -> Option<Event> {
        self.sent.get(&seq)?;
        self.errors += 1;
        self.settle(seq);
        Some(Event::Error { seq, from, message })
    }

    fn statistics(&self, elapsed: Duration) -> Statistics {
        let rtt = (self.received > 0).then(|| {
            let n = self.received as f64;
            let avg = self.rtt_sum / n;
            let variance = (self.rtt_sum_sq / n - avg * avg).max(0.0);
            RttSummary {
                min: self.rtt_min,
                avg: Duration::from_secs_f64(avg),
                max: self.rtt_max,
                mdev: Duration::from_secs_f64(variance.sqrt()),
            }
        });
        Statistics {
            transmitted: self.transmitted,
            received: self.received,
            duplicates: self.duplicates,
            corrupted: self.corrupted,
            errors: self.errors,
            elapsed,
            rtt,
        }
    }
}

/// The round-trip time of a reply to `sent` that arrived at `now`: the kernel's receive time
/// where it is plausible (after the send and not after `now`; the wall clock can jump),
/// otherwise the monotonic clock's.
fn rtt(sent: &Sent, now: Instant, kernel_time: Option<SystemTime>) -> Duration {
    let monotonic = now.saturating_duration_since(sent.at);
    match kernel_time.and_then(|k| k.duration_since(sent.wall).ok()) {
        Some(k) if k <= monotonic => k,
        _ => monotonic,
    }
}

/// The first difference between the payload sent and the one received.
fn compare(expected: &[u8], got: &[u8]) -> Option<Corruption> {
    if expected.len() != got.len() {
        return Some(Corruption::WrongLength { expected: expected.len(), got: got.len() });
    }
    let index = expected.iter().zip(got).position(|(a, b)| a != b)?;
    Some(Corruption::WrongByte { index, expected: expected[index], got: got[index] })
}

// ---------------------------------------------------------------------------------------------
// The socket

/// An open ICMP socket aimed at one address.
#[derive(Debug)]
pub struct Pinger {
    fd: AsyncFd<Socket>,
    kind: SocketKind,
    target: IpAddr,
    dest: SockAddr,
    id: u16,
}

impl Pinger {
    /// Opens an ICMP datagram socket for `target`, or a raw socket when datagram sockets are
    /// not allowed. Must be called within a tokio runtime with IO enabled.
    pub fn open(target: IpAddr) -> Result<Pinger, PingError> {
        let datagram = match open_socket(target, SocketKind::Datagram) {
            Ok(s) => return Pinger::new(s, SocketKind::Datagram, target),
            Err(e) => e,
        };
        let raw = match open_socket(target, SocketKind::Raw) {
            Ok(s) => return Pinger::new(s, SocketKind::Raw, target),
            Err(e) => e,
        };
        let is = |e: &io::Error, codes: &[i32]| e.raw_os_error().is_some_and(|c| codes.contains(&c));
        Err(if is(&datagram, &[libc::EACCES, libc::EPERM]) && is(&raw, &[libc::EACCES, libc::EPERM]) {
            PingError::NotPermitted { gid: rustix::process::getegid().as_raw(), range: ping_group_range() }
        } else if is(&datagram, &[libc::EAFNOSUPPORT]) && is(&raw, &[libc::EAFNOSUPPORT]) {
            PingError::FamilyUnavailable { target, family: if target.is_ipv4() { "IPv4" } else { "IPv6" } }
        } else {
            PingError::Socket { datagram, raw }
        })
    }

    /// Opens a socket of the given kind, with no fallback.
    pub fn open_kind(target: IpAddr, kind: SocketKind) -> Result<Pinger, PingError> {
        let socket = open_socket(target, kind).map_err(|error| PingError::Io { action: "open", error })?;
        Pinger::new(socket, kind, target)
    }

    fn new(socket: Socket, kind: SocketKind, target: IpAddr) -> Result<Pinger, PingError> {
        let io = |action| move |error| PingError::Io { action, error };
        configure(&socket, kind, target).map_err(io("set options on"))?;
        let id = match kind {
            // The kernel puts the socket's "port" in the identifier field of every request, and
            // delivers only replies that carry it. Binding picks a free one now.
            SocketKind::Datagram => {
                let any: IpAddr =
                    if target.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
                socket.bind(&SocketAddr::new(any, 0).into()).map_err(io("bind"))?;
                let local = socket.local_addr().map_err(io("inspect"))?;
                local.as_socket().map(|a| a.port()).unwrap_or(0)
            }
            // A raw socket sees every echo reply on the host: a random identifier keeps ours
            // apart from other pings', even in other PID namespaces.
            SocketKind::Raw => getrandom::u32().map(|r| r as u16).unwrap_or(std::process::id() as u16),
        };
        let dest = SockAddr::from(SocketAddr::new(target, 0));
        // SAFETY: the socket owns its descriptor, which stays open and the same until the
        // `AsyncFd` that owns the socket is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }
            .map_err(|e| PingError::Io { action: "register", error: e.into() })?;
        Ok(Pinger { fd, kind, target, dest, id })
    }

    /// The kind of socket in use.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The address pinged.
    pub fn target(&self) -> IpAddr {
        self.target
    }

    /// The identifier in our requests.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Pings until `config.count` requests are sent and settled (answered, failed, or the
    /// timeout after the last one over) or until `cancel` fires, calling `on_event` for each
    /// reply, error and failed send as it happens. The first request leaves at once.
    pub async fn run(
        &self,
        config: &PingConfig,
        mut on_event: impl FnMut(Event),
        cancel: &CancellationToken,
    ) -> Result<Statistics, PingError> {
        check_config(config, self.target)?;
        let mut seed = [0u8; 64];
        if getrandom::fill(&mut seed).is_err() {
            // Without the kernel's random source, any varied pattern still tells replies
            // apart from other data; iputils uses a fixed one.
            seed.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        }
        let pattern = (0..config.size).map(|i| seed[i % seed.len()]).collect();
        let start = Instant::now();
        let mut tracker = Tracker::new(self.target, self.id, pattern, start);
        let mut buf = vec![0u8; receive_buffer_len(config.size)];
        let mut next_send = tokio::time::Instant::from_std(start);
        let mut linger_until: Option<tokio::time::Instant> = None;
        while !tracker.done(config.count) {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                ready = self.fd.ready(Interest::READABLE | Interest::ERROR) => {
                    let mut guard = ready.map_err(|error| PingError::Io { action: "wait on", error })?;
                    if self.drain(&mut tracker, &mut buf, &mut on_event)? {
                        guard.clear_ready();
                    }
                }
                () = tokio::time::sleep_until(next_send), if linger_until.is_none() => {
                    let (seq, bytes) = tracker.request(Instant::now(), SystemTime::now());
                    if let Err(error) = self.fd.get_ref().send_to(&bytes, &self.dest) {
                        tracker.send_failed(seq);
                        on_event(Event::SendFailed { seq, error });
                    }
                    let now = tokio::time::Instant::now();
                    // Keep to the schedule, but never send a burst to catch up.
                    next_send = crate::later(next_send, config.interval).max(now);
                    if config.count.is_some_and(|c| tracker.transmitted >= c) {
                        linger_until = Some(crate::later(now, config.timeout));
                    }
                }
                () = tokio::time::sleep_until(linger_until.unwrap_or(next_send)), if linger_until.is_some() => break,
            }
        }
        Ok(tracker.statistics(start.elapsed()))
    }

    /// Reads what the socket has (errors first), at most [`BATCH`] datagrams of each kind;
    /// returns whether it read until the socket had nothing more.
    fn drain(
        &self,
        tracker: &mut Tracker,
        buf: &mut [u8],
        on_event: &mut impl FnMut(Event),
    ) -> Result<bool, PingError> {
        let fd = self.fd.get_ref().as_raw_fd();
        let mut control = [0u8; CONTROL_LEN];
        let mut drained = true;
        if self.kind == SocketKind::Datagram {
            drained = false;
            for _ in 0..BATCH {
                match recv_msg(fd, buf, &mut control, libc::MSG_ERRQUEUE) {
                    Ok(got) => {
                        if let Some(event) = self.queued_error(tracker, &buf[..got.len], &control[..got.control_len]) {
                            on_event(event);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(error) => return Err(PingError::Io { action: "read errors from", error }),
                }
            }
        }
        for _ in 0..BATCH {
            let got = match recv_msg(fd, buf, &mut control, 0) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(drained),
                // A pending error the kernel reports once (the error queue has the details).
                Err(e) if is_soft_error(&e) => continue,
                Err(error) => return Err(PingError::Io { action: "receive from", error }),
            };
            if got.truncated {
                // Larger than anything we sent: not a reply of ours.
                continue;
            }
            let data = &buf[..got.len];
            let parsed = match self.target {
                IpAddr::V4(_) => icmp::parse_v4(data, self.kind == SocketKind::Raw),
                IpAddr::V6(_) => icmp::parse_v6(data),
            };
            let mut meta = control_meta(&control[..got.control_len], got.from);
            if self.kind == SocketKind::Raw && self.target.is_ipv4() && data.first().is_some_and(|b| b >> 4 == 4) {
                // The TTL of a datagram that fails to parse (a damaged reply is still shown).
                meta.ttl = meta.ttl.or(data.get(8).copied());
            }
            if let Some(event) = tracker.on_datagram(parsed, meta, Instant::now()) {
                on_event(event);
            }
        }
        Ok(false)
    }

    /// Turns a message from a datagram socket's error queue into an event: the data is our
    /// request's ICMP header as the error quoted it, the control message says what happened.
    fn queued_error(&self, tracker: &mut Tracker, data: &[u8], control: &[u8]) -> Option<Event> {
        let (_, seq) = icmp::quoted_echo_request(tracker.version, data)?;
        let err = control_messages(control).find_map(|(level, ty, d)| {
            let ours = (level == libc::SOL_IP && ty == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR);
            ours.then(|| ExtendedError::parse(d)).flatten()
        })?;
        let message = match err.origin {
            libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6 => icmp::ErrorMessage {
                version: tracker.version,
                ty: err.ty,
                code: err.code,
                info: err.info,
                original: None,
            }
            .to_string(),
            _ => {
                let mut m = format!("local error: {}", io::Error::from_raw_os_error(err.errno as i32));
                if err.errno as i32 == libc::EMSGSIZE {
                    m += &format!(", mtu={}", err.info);
                }
                m
            }
        };
        tracker.on_error(seq, err.offender, message)
    }
}

impl PingConfig {
    /// Checks the configuration against the library's bounds for pinging `target`:
    /// [`PingError::Config`] says what is out of range. [`Pinger::run`] checks too.
    pub fn check(&self, target: IpAddr) -> Result<(), PingError> {
        check_config(self, target)
    }
}

fn check_config(config: &PingConfig, target: IpAddr) -> Result<(), PingError> {
    if config.count == Some(0) {
        return Err(PingError::Config("the count must be at least 1".into()));
    }
    if config.interval < MIN_INTERVAL {
        return Err(PingError::Config(format!(
            "the interval must be at least {}ms (there is no flood mode)",
            MIN_INTERVAL.as_millis()
        )));
    }
    if config.timeout.is_zero() {
        return Err(PingError::Config("the timeout must be longer than zero".into()));
    }
    if config.size > max_size(target) {
        let family = if target.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(PingError::Config(format!(
            "a payload of {} bytes does not fit in an {family} packet (at most {})",
            config.size,
            max_size(target)
        )));
    }
    Ok(())
}

/// Large enough for a reply to the largest request and the IPv4 header before it, and for
/// any ICMP error (at most 576 bytes in IPv4, 1280 in IPv6).
fn receive_buffer_len(size: usize) -> usize {
    (size + icmp::HEADER_LEN + 60).max(1500)
}

/// Whether a receive error is one the kernel reports once for an ICMP error that arrived
/// (`sk_err`), rather than a failure of the socket.
fn is_soft_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ECONNREFUSED
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EMSGSIZE
                | libc::EPROTO
                | libc::ETIMEDOUT
                | libc::EINTR
                | libc::ENOBUFS
        )
    )
}

fn ping_group_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into())
}

fn open_socket(target: IpAddr, kind: SocketKind) -> io::Result<Socket> {
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let ty = match kind {
        SocketKind::Datagram => Type::DGRAM,
        SocketKind::Raw => Type::RAW,
    };
    let socket = Socket::new(domain, ty.nonblocking().cloexec(), Some(protocol))?;
    Ok(socket)
}

/// `ICMP_FILTER` (level `SOL_RAW`) and `ICMP6_FILTER` (level `IPPROTO_ICMPV6`) have the same
/// option number, 1.
const ICMP_FILTER: libc::c_int = 1;

fn configure(socket: &Socket, kind: SocketKind, target: IpAddr) -> io::Result<()> {
    let on: libc::c_int = 1;
    set_option(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on)?;
    match (target, kind) {
        (IpAddr::V4(_), SocketKind::Datagram) => {
            set_option(socket, libc::SOL_IP, libc::IP_RECVTTL, &on)?;
            set_option(socket, libc::SOL_IP, libc::IP_RECVERR, &on)?;
        }
        (IpAddr::V4(_), SocketKind::Raw) => {
            // Let through only what ping reads: replies and the errors that quote requests.
            // A set bit blocks its type.
            use icmp::v4_type::*;
            let pass = [ECHO_REPLY, DEST_UNREACHABLE, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM];
            let blocked: u32 = !pass.iter().fold(0u32, |m, t| m | 1 << t);
            set_option(socket, libc::SOL_RAW, ICMP_FILTER, &blocked)?;
        }
        (IpAddr::V6(_), kind) => {
            set_option(socket, libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, &on)?;
            if kind == SocketKind::Datagram {
                set_option(socket, libc::SOL_IPV6, libc::IPV6_RECVERR, &on)?;
            } else {
                use icmp::v6_type::*;
                let mut blocked = [u32::MAX; 8];
                for t in [ECHO_REPLY, DEST_UNREACHABLE, PACKET_TOO_BIG, TIME_EXCEEDED, PARAMETER_PROBLEM] {
                    blocked[usize::from(t >> 5)] &= !(1 << (t & 31));
                }
                set_option(socket, libc::IPPROTO_ICMPV6, ICMP_FILTER, &blocked)?;
            }
        }
    }
    Ok(())
}

fn set_option<T: Copy>(socket: &Socket, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of the length passed.
    let rc = unsafe {
        libc::setsockopt(socket.as_raw_fd(), level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// What `recvmsg` returned besides the data.
struct Received {
    len: usize,
    control_len: usize,
    truncated: bool,
    from: Option<IpAddr>,
}

/// One non-blocking `recvmsg` into `buf`, with control messages into `control`.
fn recv_msg(fd: RawFd, buf: &mut [u8], control: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
    // SAFETY: an all-zero sockaddr_storage and msghdr are valid values of these C structs.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: every pointer in `msg` points to a live buffer of the length given beside it,
    // borrowed mutably for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Received {
        len: n as usize,
        control_len: (msg.msg_controllen as usize).min(control.len()),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        from: sockaddr_ip(&name, msg.msg_namelen),
    })
}

/// The IP address in a socket address the kernel filled in.
fn sockaddr_ip(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is large and aligned enough for any socket address, and
            // the family says the kernel wrote a sockaddr_in.
            let sin = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)).to_canonical())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Control messages, parsed from bytes

/// The control messages in a `recvmsg` control buffer as (level, type, data), read from the
/// bytes without trusting their lengths: a length that runs past the buffer ends the walk.
fn control_messages(control: &[u8]) -> impl Iterator<Item = (libc::c_int, libc::c_int, &[u8])> {
    const WORD: usize = size_of::<usize>();
    let align = |n: usize| n.div_ceil(WORD) * WORD;
    let header = size_of::<libc::cmsghdr>();
    let mut at: usize = 0;
    std::iter::from_fn(move || {
        let h = control.get(at..at.checked_add(header)?)?;
        let len = usize::from_ne_bytes(h[..WORD].try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(h[WORD..WORD + 4].try_into().ok()?);
        let ty = libc::c_int::from_ne_bytes(h[WORD + 4..WORD + 8].try_into().ok()?);
        if len < header {
            return None;
        }
        let data = control.get(at + align(header)..at.checked_add(len)?)?;
        at = at.checked_add(align(len))?;
        Some((level, ty, data))
    })
}

/// The TTL, kernel receive time and sender from a datagram's control messages.
fn control_meta(control: &[u8], from: Option<IpAddr>) -> Meta {
    let mut meta = Meta { from, ..Meta::default() };
    for (level, ty, data) in control_messages(control) {
        match (level, ty) {
            (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) => {
                if let Some(v) = data.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes) {
                    meta.ttl = u8::try_from(v).ok();
                }
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => meta.kernel_time = timespec(data),
            _ => {}
        }
    }
    meta
}

/// A `struct timespec` as the time it names.
fn timespec(data: &[u8]) -> Option<SystemTime> {
    let (secs, nanos) = match data.len() {
        16.. => (i64::from_ne_bytes(data[..8].try_into().ok()?), i64::from_ne_bytes(data[8..16].try_into().ok()?)),
        8.. => (
            i64::from(i32::from_ne_bytes(data[..4].try_into().ok()?)),
            i64::from(i32::from_ne_bytes(data[4..8].try_into().ok()?)),
        ),
        _ => return None,
    };
    let d = Duration::new(u64::try_from(secs).ok()?, u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?);
    SystemTime::UNIX_EPOCH.checked_add(d)
}

/// A `struct sock_extended_err` and the address after it (`SO_EE_OFFENDER`).
#[derive(Debug, PartialEq, Eq)]
struct ExtendedError {
    errno: u32,
    origin: u8,
    ty: u8,
    code: u8,
    info: u32,
    offender: Option<IpAddr>,
}

impl ExtendedError {
    fn parse(d: &[u8]) -> Option<ExtendedError> {
        if d.len() < size_of::<libc::sock_extended_err>() {
            return None;
        }
        let u32_at = |i: usize| d.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        let (errno, info) = (u32_at(0)?, u32_at(8)?);
        let (origin, ty, code) = (*d.get(4)?, *d.get(5)?, *d.get(6)?);
        let addr = d.get(16..).unwrap_or_default();
        let family = addr.get(..2).map(|f| libc::c_int::from(u16::from_ne_bytes([f[0], f[1]])));
        let offender = match family {
            Some(libc::AF_INET) => {
                addr.get(4..8).map(|a| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).expect("4 bytes"))))
            }
            Some(libc::AF_INET6) => addr
                .get(8..24)
                .map(|a| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).expect("16 bytes"))).to_canonical()),
            _ => None,
        };
        Some(ExtendedError { errno, origin, ty, code, info, offender })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn tracker(size: usize) -> Tracker {
        Tracker::new(TARGET, 0x1234, (0..size).map(|i| (i * 7) as u8).collect(), Instant::now())
    }

    /// The reply a well-behaved peer sends to `request`.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = 0;
        r[2..4].copy_from_slice(&[0, 0]);
        let sum = icmp::checksum(&r);
        r[2..4].copy_from_slice(&sum.to_be_bytes());
        r
    }

    fn deliver(t: &mut Tracker, datagram: &[u8]) -> Option<Event> {
        let meta = Meta { from: Some(TARGET), ttl: Some(64), kernel_time: None };
        t.on_datagram(icmp::parse_v4(datagram, false), meta, Instant::now())
    }

    #[test]
    fn replies_are_matched_by_id_sequence_and_payload() {
        let mut t = tracker(DEFAULT_SIZE);
        let (seq1, req1) = t.request(Instant::now(), SystemTime::now());
        let (seq2, req2) = t.request(Instant::now(), SystemTime::now());
        assert_eq!((seq1, seq2), (1, 2));
        assert_ne!(req1[8..], req2[8..], "each payload carries its own send time");

        let Some(Event::Reply(r)) = deliver(&mut t, &reply_to(&req2)) else { panic!("a reply") };
        assert_eq!((r.seq, r.bytes, r.ttl, r.duplicate, r.from), (2, 64, Some(64), false, TARGET));

        // The same reply again is a duplicate.
        let Some(Event::Reply(r)) = deliver(&mut t, &reply_to(&req2)) else { panic!("a duplicate") };
        assert!(r.duplicate);

        // Another identifier: not ours, ignored.
        let mut foreign = reply_to(&req1);
        foreign[4] ^= 0xff;
        foreign[2..4].copy_from_slice(&[0, 0]);
        let sum = icmp::checksum(&foreign);
        foreign[2..4].copy_from_slice(&sum.to_be_bytes());
        assert!(deliver(&mut t, &foreign).is_none());

        // A sequence number never sent: ignored.
        let mut unsent = reply_to(&req1);
        unsent[7] = 99;
        unsent[2..4].copy_from_slice(&[0, 0]);
        let sum = icmp::checksum(&unsent);
        unsent[2..4].copy_from_slice(&sum.to_be_bytes());
        assert!(deliver(&mut t, &unsent).is_none());

        let s = t.statistics(Duration::from_millis(5));
        assert_eq!((s.transmitted, s.received, s.duplicates, s.corrupted, s.errors), (2, 1, 1, 0, 0));
        assert_eq!(s.loss_percent(), 50.0);
        assert!(!t.done(Some(2)), "request 1 is still open");
        deliver(&mut t, &reply_to(&req1));
        assert!(t.done(Some(2)));
    }

    #[test]
    fn a_changed_payload_is_corrupt_and_not_received() {
        let mut t = tracker(DEFAULT_SIZE);
        let (_, req) = t.request(Instant::now(), SystemTime::now());
        let mut bad = req.clone();
        bad[8 + 20] ^= 0x01;
        let expected = req[8 + 20];
        let Some(Event::Corrupt { problem, .. }) = deliver(&mut t, &reply_to(&bad)) else { panic!("corrupt") };
        assert_eq!(problem, Corruption::WrongByte { index: 20, expected, got: expected ^ 1 });
        assert_eq!(
            problem.to_string(),
            format!("wrong data byte #20 should be 0x{expected:x} but was 0x{:x}", expected ^ 1)
        );

        let (_, req) = t.request(Instant::now(), SystemTime::now());
        let Some(Event::Corrupt { problem, .. }) = deliver(&mut t, &reply_to(&req[..30])) else { panic!() };
        assert_eq!(problem, Corruption::WrongLength { expected: 56, got: 22 });

        let (_, req) = t.request(Instant::now(), SystemTime::now());
        let mut damaged = reply_to(&req);
        damaged[40] ^= 0x10;
        let Some(Event::Corrupt { problem, reply }) = deliver(&mut t, &damaged) else { panic!() };
        assert_eq!((problem, reply.seq), (Corruption::BadChecksum, 3));

        let s = t.statistics(Duration::ZERO);
        assert_eq!((s.transmitted, s.received, s.corrupted), (3, 0, 3));
        assert_eq!(s.rtt, None);
        assert!(t.done(Some(3)), "a corrupt reply settles its request");
    }

    #[test]
    fn errors_that_quote_our_request_are_reported() {
        let mut t = tracker(16);
        let (seq, req) = t.request(Instant::now(), SystemTime::now());
        let quote = |dst: [u8; 4], req: &[u8]| {
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1];
            ip.extend_from_slice(&dst);
            ip.extend_from_slice(&req[..8]);
            let mut m = vec![3, 1, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&ip);
            let sum = icmp::checksum(&m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            m
        };
        // About a request to another address: not ours.
        assert!(deliver(&mut t, &quote([10, 0, 0, 3], &req)).is_none());
        let Some(Event::Error { seq: s, from, message }) = deliver(&mut t, &quote([10, 0, 0, 2], &req)) else {
            panic!("an error")
        };
        assert_eq!((s, from, message.as_str()), (seq, Some(TARGET), "Destination Host Unreachable"));
        let stats = t.statistics(Duration::ZERO);
        assert_eq!((stats.errors, stats.received), (1, 0));
        assert_eq!(stats.loss_percent(), 100.0);
        assert!(t.done(Some(1)));
    }

    #[test]
    fn tiny_payloads_still_match() {
        for size in [0, 1, 7, 8, 9] {
            let mut t = tracker(size);
            let (_, req) = t.request(Instant::now(), SystemTime::now());
            assert_eq!(req.len(), 8 + size);
            assert!(matches!(deliver(&mut t, &reply_to(&req)), Some(Event::Reply(_))), "size {size}");
        }
    }

    #[test]
    fn round_trip_statistics_follow_iputils() {
        let mut t = tracker(8);
        let start = t.start;
        for ms in [1u64, 2, 3, 6] {
            let (_, req) = t.request(start, SystemTime::now());
            let meta = Meta { from: Some(TARGET), ttl: None, kernel_time: None };
            let at = start + Duration::from_millis(ms);
            t.on_datagram(icmp::parse_v4(&reply_to(&req), false), meta, at);
        }
        let rtt = t.statistics(Duration::ZERO).rtt.unwrap();
        assert_eq!((rtt.min, rtt.max), (Duration::from_millis(1), Duration::from_millis(6)));
        assert!((rtt.avg.as_secs_f64() - 0.003).abs() < 1e-9);
        // sqrt(mean(x²) - mean(x)²) = sqrt(12.5 - 9) ms
        assert!((rtt.mdev.as_secs_f64() * 1000.0 - 3.5f64.sqrt()).abs() < 1e-6, "{:?}", rtt.mdev);
    }

    #[test]
    fn kernel_receive_times_are_used_only_when_plausible() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let sent = Sent { at: now, wall, stamp: [0; 8], replies: 0, settled: false };
        let later = now + Duration::from_millis(10);
        assert_eq!(rtt(&sent, later, Some(wall + Duration::from_millis(4))), Duration::from_millis(4));
        assert_eq!(rtt(&sent, later, Some(wall + Duration::from_secs(60))), Duration::from_millis(10));
        assert_eq!(rtt(&sent, later, Some(wall - Duration::from_secs(1))), Duration::from_millis(10));
        assert_eq!(rtt(&sent, later, None), Duration::from_millis(10));
    }

    #[test]
    fn sequence_numbers_wrap_and_records_stay_bounded() {
        let mut t = tracker(0);
        let now = Instant::now();
        for _ in 0..70_000 {
            t.request(now, SystemTime::now());
        }
        assert_eq!(t.sent.len(), 65536);
        assert_eq!(t.next_seq, (70_001u32 % 65536) as u16);
    }

    #[test]
    fn hosts_parse_or_say_why_not() {
        assert_eq!(parse_host("127.0.0.1").unwrap(), Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(parse_host("::1").unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(parse_host("[::1]").unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(parse_host("::ffff:127.0.0.1").unwrap(), Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(parse_host("localhost").unwrap(), Host::Name("localhost".into()));
        for (input, problem) in [
            ("", "empty"),
            ("tcp://127.0.0.1:80", "endpoint"),
            ("unix:/tmp/x", "endpoint"),
            ("/tmp/x", "endpoint"),
            ("127.0.0.1:80", "without a port"),
            ("[::1]:80", "without a port"),
            ("bad host", "not an IP address"),
            ("a..b", "not an IP address"),
        ] {
            let e = parse_host(input).unwrap_err();
            assert!(e.is_usage(), "{input}");
            assert!(e.to_string().contains(problem), "{input}: {e}");
        }
    }

    #[tokio::test]
    async fn localhost_is_never_looked_up() {
        let host = Host::Name("LocalHost".into());
        assert_eq!(resolve(&host, Family::Any).await.unwrap(), IpAddr::from(Ipv4Addr::LOCALHOST));
        assert_eq!(resolve(&host, Family::V6).await.unwrap(), IpAddr::from(Ipv6Addr::LOCALHOST));
        let sub = Host::Name("db.localhost".into());
        assert_eq!(resolve(&sub, Family::V4).await.unwrap(), IpAddr::from(Ipv4Addr::LOCALHOST));
        let v6 = Host::Ip("::1".parse().unwrap());
        assert!(resolve(&v6, Family::V4).await.unwrap_err().is_usage());
    }

    #[test]
    fn configurations_out_of_bounds_are_refused() {
        let ok = PingConfig::default();
        assert!(check_config(&ok, TARGET).is_ok());
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        for (config, target, needle) in [
            (PingConfig { count: Some(0), ..ok.clone() }, TARGET, "at least 1"),
            (PingConfig { interval: Duration::from_millis(1), ..ok.clone() }, TARGET, "2ms"),
            (PingConfig { timeout: Duration::ZERO, ..ok.clone() }, TARGET, "timeout"),
            (PingConfig { size: MAX_SIZE_V4 + 1, ..ok.clone() }, TARGET, "at most 65507"),
            (PingConfig { size: MAX_SIZE_V6 + 1, ..ok.clone() }, v6, "at most 65527"),
        ] {
            let e = check_config(&config, target).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(needle), "{e}");
        }
        assert!(check_config(&PingConfig { size: MAX_SIZE_V4 + 1, ..ok }, v6).is_ok());
    }

    /// Builds a control buffer the way the kernel lays it out.
    fn cmsg(level: libc::c_int, ty: libc::c_int, data: &[u8]) -> Vec<u8> {
        let header = size_of::<libc::cmsghdr>();
        let mut out = Vec::new();
        out.extend_from_slice(&(header + data.len()).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.resize(header, 0);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    #[test]
    fn control_messages_give_ttl_time_and_errors() {
        let mut control =
            cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &[5i64.to_ne_bytes(), 7i64.to_ne_bytes()].concat());
        control.extend(cmsg(libc::SOL_IP, libc::IP_TTL, &63i32.to_ne_bytes()));
        let meta = control_meta(&control, Some(TARGET));
        assert_eq!(meta.ttl, Some(63));
        assert_eq!(meta.kernel_time, Some(SystemTime::UNIX_EPOCH + Duration::new(5, 7)));

        // sock_extended_err, then a sockaddr_in naming who sent the ICMP error.
        let mut ee = Vec::new();
        ee.extend_from_slice(&(libc::EHOSTUNREACH as u32).to_ne_bytes());
        ee.extend_from_slice(&[libc::SO_EE_ORIGIN_ICMP, 3, 1, 0]);
        ee.extend_from_slice(&0u32.to_ne_bytes());
        ee.extend_from_slice(&0u32.to_ne_bytes());
        ee.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        ee.extend_from_slice(&[0, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let parsed = ExtendedError::parse(&ee).unwrap();
        assert_eq!(
            parsed,
            ExtendedError {
                errno: libc::EHOSTUNREACH as u32,
                origin: libc::SO_EE_ORIGIN_ICMP,
                ty: 3,
                code: 1,
                info: 0,
                offender: Some("10.0.0.1".parse().unwrap()),
            }
        );
        assert_eq!(ExtendedError::parse(&ee[..15]), None);
        assert_eq!(ExtendedError::parse(&ee[..16]).unwrap().offender, None);
    }

    #[test]
    fn malformed_control_buffers_end_the_walk() {
        let good = cmsg(libc::SOL_IP, libc::IP_TTL, &1i32.to_ne_bytes());
        for cut in 0..good.len() {
            let _ = control_messages(&good[..cut]).count();
        }
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(control_messages(&huge).count(), 0);
        let mut tiny = good.clone();
        tiny[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(control_messages(&tiny).count(), 0);
        assert_eq!(control_messages(&good).count(), 1);
        assert_eq!(timespec(&[1, 2, 3]), None);
        assert_eq!(timespec(&[(-1i64).to_ne_bytes(), 0i64.to_ne_bytes()].concat()), None);
    }
}
