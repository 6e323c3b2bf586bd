//! Sockets as the kernel sees them: every TCP, UDP and Unix socket of this network namespace
//! with its state, queues and addresses, read through netlink `sock_diag` as `ss` reads them;
//! which processes hold them; and the kernel's counters of listen-queue overflows and SYN
//! cookies.
//!
//! [`tcp_sockets`], [`udp_sockets`] and [`unix_sockets`] ask the kernel for a dump over a
//! `NETLINK_SOCK_DIAG` socket and return one record per socket. TCP states are the RFC 793 states
//! ([`TcpState`]); the kernel's request sockets (`TCP_NEW_SYN_RECV`, a connection between the
//! SYN and the final ACK) are reported as [`TcpState::SynReceived`], as `ss` shows them. For a
//! listener the two queue numbers the kernel reports are the accept queue and the backlog
//! ([`InetSocket::accept_queue`]), again as `ss` shows them. A socket that is closed is in no
//! table of the kernel, so [`TcpState::Closed`] is never reported for TCP; UDP and Unix sockets
//! that are not connected are reported as `Closed`, which is the state number the kernel uses
//! for them.
//!
//! The wire format is built and parsed by hand (a request is one fixed struct; a reply is a
//! fixed header and, for Unix sockets, a few attributes), sans-IO: [`inet_request`],
//! [`unix_request`] and [`parse_reply`] work on byte slices, never panic on malformed input, and
//! are tested with truncated and corrupted buffers. [`Processes::scan`] maps socket inodes to
//! the processes whose descriptors hold them by reading `/proc/*/fd`, skipping what it may not
//! read. [`ListenCounters`] parses `/proc/net/netstat`.
//!
//! Everything here describes the network namespace of the calling thread: a netlink socket
//! belongs to the namespace of the thread that opens it, and the counters are read through
//! `/proc/thread-self/net`, not `/proc/net` (which follows the process's main thread), so that a
//! thread moved into a namespace of its own sees that namespace in both. Nothing here prints or
//! changes anything.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
use serde::{Serialize, Serializer};

/// The most sockets one dump returns before it is refused as too large (a bound on memory: a
/// record is under 100 bytes, so this is at most a few hundred MiB on a host that really has
/// them).
pub const MAX_SOCKETS: usize = 4 << 20;

/// How long the kernel may take to send the next part of a dump.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The receive buffer: the kernel sends a dump in parts of at most 32 KiB when the reader's
/// buffer allows it, so 64 KiB always holds a whole part.
const RECV_BUFFER: usize = 64 * 1024;

// Netlink and sock_diag numbers (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h,
// linux/unix_diag.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_V2_LEN: usize = 56;
const INET_DIAG_MSG_LEN: usize = 72;
const UNIX_DIAG_REQ_LEN: usize = 24;
const UNIX_DIAG_MSG_LEN: usize = 16;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const AF_UNIX: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Every kernel TCP state from `TCP_ESTABLISHED` (1) to `TCP_NEW_SYN_RECV` (12). Bit 13,
/// `TCP_BOUND_INACTIVE` (sockets bound but neither listening nor connected), is left out, as
/// `ss` leaves it out unless asked.
const ALL_STATES: u32 = 0x1ffe;

/// A TCP connection's state, named as RFC 793 names it.
///
/// The kernel's numbers map one to one, except that a request socket (`TCP_NEW_SYN_RECV`: the
/// server has answered a SYN and waits for the final ACK) is [`TcpState::SynReceived`] too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    /// Waiting for a connection request from any remote TCP.
    Listen,
    /// A SYN sent, waiting for the matching one.
    SynSent,
    /// A SYN received and answered, waiting for the ACK of ours.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We closed; our FIN is not acknowledged yet.
    FinWait1,
    /// We closed and our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; waiting for our application to close.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both closed; waiting out twice the maximum segment lifetime so that late segments die.
    TimeWait,
    /// No connection.
    Closed,
}

impl TcpState {
    /// Every state, in the order RFC 793 introduces them.
    pub const ALL: [TcpState; 11] = [
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Closed,
    ];

    /// The state of the kernel's number (`include/net/tcp_states.h`), or `None` for a number
    /// this version does not know.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 | 12 => TcpState::SynReceived,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Closed,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => return None,
        })
    }

    /// The RFC 793 name: `SYN-RECEIVED`, `TIME-WAIT`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Closed => "CLOSED",
        }
    }

    /// The name `ss` prints: `ESTAB`, `SYN-RECV`, `UNCONN` for closed; the others as RFC 793.
    pub fn ss_name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynReceived => "SYN-RECV",
            TcpState::Closed => "UNCONN",
            other => other.name(),
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A name that is no TCP state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state '{0}' (one of {names})", names = state_names())]
pub struct UnknownState(pub String);

fn state_names() -> String {
    TcpState::ALL.map(TcpState::name).join(", ")
}

impl std::str::FromStr for TcpState {
    type Err = UnknownState;

    /// Parses an RFC 793 name in any case, with `-` or `_` (`time-wait`, `TIME_WAIT`), and the
    /// spellings of `ss` and the kernel (`estab`, `listening`, `syn-recv`, `fin-wait1`, `close`,
    /// `unconn`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace('_', "-");
        if let Some(state) = TcpState::ALL.into_iter().find(|st| st.name() == norm) {
            return Ok(state);
        }
        Ok(match norm.as_str() {
            "ESTAB" => TcpState::Established,
            "LISTENING" => TcpState::Listen,
            "SYN-RECV" => TcpState::SynReceived,
            "FIN-WAIT1" => TcpState::FinWait1,
            "FIN-WAIT2" => TcpState::FinWait2,
            "CLOSE" | "UNCONN" => TcpState::Closed,
            _ => return Err(UnknownState(s.to_owned())),
        })
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A TCP or UDP socket, IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InetSocket {
    /// The state. A UDP socket is `Established` when connected and `Closed` otherwise.
    pub state: TcpState,
    /// The local address; port 0 when unbound.
    pub local: SocketAddr,
    /// The peer's address; the unspecified address and port 0 when there is none.
    pub peer: SocketAddr,
    /// Bytes received and not yet read; for a listener, connections waiting to be accepted.
    pub recv_q: u32,
    /// Bytes sent and not yet acknowledged (TCP) or queued (UDP); for a listener, the backlog.
    pub send_q: u32,
    /// The owner's user id.
    pub uid: u32,
    /// The socket's inode (0 for sockets no descriptor holds: `TIME-WAIT`, request sockets).
    pub inode: u64,
}

/// A listener's accept queue: connections the kernel has completed and nobody accepted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AcceptQueue {
    /// Connections waiting.
    pub depth: u32,
    /// The backlog given to `listen` (capped by `net.core.somaxconn`).
    pub backlog: u32,
}

impl AcceptQueue {
    /// Whether the kernel refuses new connections now. It takes one more than the backlog
    /// (`sk_acceptq_is_full` is `depth > backlog`), so `backlog + 1` waiting is full.
    pub fn is_full(&self) -> bool {
        self.depth > self.backlog
    }
}

impl InetSocket {
    /// The accept queue, for a TCP listener (the kernel reports its depth and backlog in place
    /// of the two queues).
    pub fn accept_queue(&self) -> Option<AcceptQueue> {
        (self.state == TcpState::Listen).then_some(AcceptQueue { depth: self.recv_q, backlog: self.send_q })
    }
}

/// The type of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnixType {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Dgram,
    /// `SOCK_SEQPACKET`.
    Seqpacket,
}

impl fmt::Display for UnixType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            UnixType::Stream => "stream",
            UnixType::Dgram => "dgram",
            UnixType::Seqpacket => "seqpacket",
        })
    }
}

/// A Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnixSocket {
    /// Stream, datagram or seqpacket.
    #[serde(rename = "type")]
    pub kind: UnixType,
    /// `Listen`, `Established` (connected), `Closed` (not connected) or, briefly, `SynSent`.
    pub state: TcpState,
    /// The bound name: a path, or `@name` for an abstract one; `None` when unbound.
    pub name: Option<String>,
    /// The socket's inode.
    pub inode: u64,
    /// The connected peer's inode.
    pub peer_inode: Option<u64>,
    /// Bytes (or, for a listener, connections) waiting to be read.
    pub recv_q: u32,
    /// Bytes waiting to be sent; for a listener, the backlog.
    pub send_q: u32,
    /// For a socket bound to a path: the socket file it made, as the kernel keeps it.
    #[serde(skip)]
    pub file: Option<SocketFile>,
}

/// The file a Unix socket was bound to: its device and inode, for matching against `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFile {
    /// The device's major and minor numbers.
    pub dev: (u32, u32),
    /// The inode number, cut to its low 32 bits (the kernel reports no more).
    pub ino: u32,
}

impl SocketFile {
    /// Whether `meta` (from `stat`) describes this file.
    pub fn is(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dev = meta.dev();
        self.ino == meta.ino() as u32 && self.dev == (libc::major(dev), libc::minor(dev))
    }
}

impl UnixSocket {
    /// The accept queue, for a listener.
    pub fn accept_queue(&self) -> Option<AcceptQueue> {
        (self.state == TcpState::Listen).then_some(AcceptQueue { depth: self.recv_q, backlog: self.send_q })
    }
}

/// Why the kernel's socket tables or counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be opened or used.
    #[error("cannot talk to the kernel's sock_diag: {}", crate::render::io_error(.0))]
    Netlink(io::Error),
    /// The kernel answered the request with an error.
    #[error("the kernel refused the sock_diag request: {0}")]
    Refused(#[source] io::Error),
    /// The kernel did not finish the dump in time.
    #[error("the kernel sent no sock_diag reply within {RECV_TIMEOUT:?}")]
    TimedOut,
    /// A reply did not have the expected shape.
    #[error("malformed sock_diag reply: {0}")]
    Malformed(&'static str),
    /// More sockets than [`MAX_SOCKETS`].
    #[error("more than {MAX_SOCKETS} sockets in one table")]
    TooMany,
    /// `/proc/net/netstat` could not be read or lacks a counter.
    #[error("cannot read the listen counters in /proc/net/netstat: {0}")]
    Counters(String),
}

// ---------------------------------------------------------------------------------------------
// Requests

fn nlmsg_header(buf: &mut Vec<u8>, payload_len: usize, seq: u32) {
    let len = (NLMSG_HDRLEN + payload_len) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

/// Which kind of internet socket to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The IP version of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`): dual-stack sockets too, with IPv4-mapped addresses.
    V6,
}

/// A netlink request (`inet_diag_req_v2`) to dump every socket of a transport and IP version
/// in every state.
pub fn inet_request(transport: Transport, version: IpVersion, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN);
    nlmsg_header(&mut buf, INET_DIAG_REQ_V2_LEN, seq);
    buf.push(match version {
        IpVersion::V4 => AF_INET,
        IpVersion::V6 => AF_INET6,
    });
    buf.push(match transport {
        Transport::Tcp => IPPROTO_TCP,
        Transport::Udp => IPPROTO_UDP,
    });
    buf.push(0); // idiag_ext: no extensions
    buf.push(0); // pad
    buf.extend_from_slice(&ALL_STATES.to_ne_bytes());
    buf.resize(NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN, 0); // id: any socket
    buf
}

/// A netlink request (`unix_diag_req`) to dump every Unix socket in every state with its name,
/// socket file, peer and queue lengths.
pub fn unix_request(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN);
    nlmsg_header(&mut buf, UNIX_DIAG_REQ_LEN, seq);
    buf.extend_from_slice(&[AF_UNIX, 0, 0, 0]);
    buf.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    buf.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino: any
    buf.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    buf.resize(NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN, 0); // cookie: none
    buf
}

// ---------------------------------------------------------------------------------------------
// Replies

/// What one received datagram of a dump held.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<T> {
    /// Records; more datagrams follow.
    Part(Vec<T>),
    /// Records, and the end of the dump.
    Done(Vec<T>),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Parses one datagram of a dump answering the request numbered `seq`, turning each message
/// into a record with `record` (which returns `None` to skip one). Messages of other sequence
/// numbers are skipped. Never panics: a truncated or inconsistent buffer is
/// [`DiagError::Malformed`], an error message from the kernel is [`DiagError::Refused`].
pub fn parse_reply<T>(
    buf: &[u8],
    seq: u32,
    record: impl Fn(&[u8]) -> Result<Option<T>, DiagError>,
) -> Result<Reply<T>, DiagError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let (Some(len), Some(kind), Some(msg_seq)) = (u32_at(rest, 0), u16_at(rest, 4), u32_at(rest, 8)) else {
            return Err(DiagError::Malformed("truncated netlink header"));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DiagError::Malformed("netlink message length out of range"));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Reply::Done(records)),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).ok_or(DiagError::Malformed("truncated netlink error"))? as i32;
                if errno != 0 {
                    return Err(DiagError::Refused(io::Error::from_raw_os_error(errno.saturating_neg())));
                }
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(r) = record(payload)? {
                    records.push(r);
                }
            }
            _ => return Err(DiagError::Malformed("unexpected netlink message type")),
        }
    }
    Ok(Reply::Part(records))
}

/// Parses an `inet_diag_msg`. Sockets in a state this version does not know are skipped.
pub fn parse_inet(p: &[u8]) -> Result<Option<InetSocket>, DiagError> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(short_inet());
    }
    let (family, state) = (p[0], p[1]);
    let (Some(sport), Some(dport)) = (be16_at(p, 4), be16_at(p, 6)) else { return Err(short_inet()) };
    let addr = |at: usize| -> Result<IpAddr, DiagError> {
        let bytes: [u8; 16] = p.get(at..at + 16).and_then(|b| b.try_into().ok()).ok_or_else(short_inet)?;
        match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => Err(DiagError::Malformed("inet_diag_msg of a family other than IPv4 or IPv6")),
        }
    };
    let (local, peer) = (addr(8)?, addr(24)?);
    let (Some(recv_q), Some(send_q), Some(uid), Some(inode)) =
        (u32_at(p, 56), u32_at(p, 60), u32_at(p, 64), u32_at(p, 68))
    else {
        return Err(short_inet());
    };
    let Some(state) = TcpState::from_kernel(state) else { return Ok(None) };
    Ok(Some(InetSocket {
        state,
        local: SocketAddr::new(local, sport),
        peer: SocketAddr::new(peer, dport),
        recv_q,
        send_q,
        uid,
        inode: inode.into(),
    }))
}

fn short_inet() -> DiagError {
    DiagError::Malformed("inet_diag_msg shorter than 72 bytes")
}

/// Parses a `unix_diag_msg` and its attributes (name, peer, queue lengths).
pub fn parse_unix(p: &[u8]) -> Result<Option<UnixSocket>, DiagError> {
    if p.len() < UNIX_DIAG_MSG_LEN {
        return Err(DiagError::Malformed("unix_diag_msg shorter than 16 bytes"));
    }
    let (kind, state) = (p[1], p[2]);
    let inode = u32_at(p, 4).ok_or(DiagError::Malformed("unix_diag_msg shorter than 16 bytes"))?;
    let mut sock = UnixSocket {
        kind: match kind {
            1 => UnixType::Stream,
            2 => UnixType::Dgram,
            5 => UnixType::Seqpacket,
            _ => return Ok(None),
        },
        state: match TcpState::from_kernel(state) {
            Some(s) => s,
            None => return Ok(None),
        },
        name: None,
        inode: inode.into(),
        peer_inode: None,
        recv_q: 0,
        send_q: 0,
        file: None,
    };
    let mut at = UNIX_DIAG_MSG_LEN;
    while at < p.len() {
        let rest = &p[at..];
        let (Some(len), Some(kind)) = (u16_at(rest, 0), u16_at(rest, 2)) else {
            return Err(DiagError::Malformed("truncated attribute header"));
        };
        let len = len as usize;
        if len < 4 || len > rest.len() {
            return Err(DiagError::Malformed("attribute length out of range"));
        }
        let value = &rest[4..len];
        match kind {
            UNIX_DIAG_NAME => sock.name = Some(unix_name(value)),
            UNIX_DIAG_VFS => {
                // `struct unix_diag_vfs`: the inode, then the superblock's device in the kernel's
                // own encoding (major in the top 12 bits, minor in the low 20).
                let (Some(ino), Some(dev)) = (u32_at(value, 0), u32_at(value, 4)) else {
                    return Err(DiagError::Malformed("short UNIX_DIAG_VFS"));
                };
                sock.file = Some(SocketFile { dev: (dev >> 20, dev & 0xf_ffff), ino });
            }
            UNIX_DIAG_PEER => {
                let peer = u32_at(value, 0).ok_or(DiagError::Malformed("short UNIX_DIAG_PEER"))?;
                sock.peer_inode = Some(peer.into());
            }
            UNIX_DIAG_RQLEN => {
                let (Some(r), Some(w)) = (u32_at(value, 0), u32_at(value, 4)) else {
                    return Err(DiagError::Malformed("short UNIX_DIAG_RQLEN"));
                };
                (sock.recv_q, sock.send_q) = (r, w);
            }
            _ => {}
        }
        at += align4(len);
    }
    Ok(Some(sock))
}

/// A Unix socket name as people write it: a path, or `@name` for an abstract name (whose first
/// byte is NUL); bytes that are not UTF-8 are replaced. A path ends at its first NUL: the
/// kernel gives the address as it was bound, and most programs (sockit, tmux) bind with the
/// terminating NUL counted in.
fn unix_name(raw: &[u8]) -> String {
    match raw.split_first() {
        Some((0, abstract_name)) => format!("@{}", String::from_utf8_lossy(abstract_name)),
        _ => String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or_default()).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Dumps

/// Sends one dump request on a fresh netlink socket and collects the records of every reply.
fn dump<T>(
    request: &[u8],
    seq: u32,
    record: impl Fn(&[u8]) -> Result<Option<T>, DiagError>,
) -> Result<Vec<T>, DiagError> {
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .map_err(|e| DiagError::Netlink(e.into()))?;
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, Some(RECV_TIMEOUT))
        .map_err(|e| DiagError::Netlink(e.into()))?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, request, SendFlags::empty(), &kernel).map_err(|e| DiagError::Netlink(e.into()))?;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut all = Vec::new();
    loop {
        let n = match rustix::net::recv(&fd, &mut buf[..], RecvFlags::TRUNC) {
            Ok((_, n)) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Err(DiagError::TimedOut),
            Err(e) => return Err(DiagError::Netlink(e.into())),
        };
        if n > buf.len() {
            return Err(DiagError::Malformed("reply larger than the receive buffer"));
        }
        let (records, done) = match parse_reply(&buf[..n], seq, &record)? {
            Reply::Part(r) => (r, false),
            Reply::Done(r) => (r, true),
        };
        if all.len() + records.len() > MAX_SOCKETS {
            return Err(DiagError::TooMany);
        }
        all.extend(records);
        if done {
            return Ok(all);
        }
    }
}

fn inet_sockets(transport: Transport) -> Result<Vec<InetSocket>, DiagError> {
    let mut all = dump(&inet_request(transport, IpVersion::V4, 1), 1, parse_inet)?;
    all.extend(dump(&inet_request(transport, IpVersion::V6, 2), 2, parse_inet)?);
    Ok(all)
}

/// Every TCP socket of this network namespace, IPv4 then IPv6, in every state.
pub fn tcp_sockets() -> Result<Vec<InetSocket>, DiagError> {
    inet_sockets(Transport::Tcp)
}

/// Every UDP socket of this network namespace, IPv4 then IPv6.
pub fn udp_sockets() -> Result<Vec<InetSocket>, DiagError> {
    inet_sockets(Transport::Udp)
}

/// Every Unix socket of this network namespace.
pub fn unix_sockets() -> Result<Vec<UnixSocket>, DiagError> {
    dump(&unix_request(3), 3, parse_unix)
}

/// Whether a socket in this network namespace listens on the socket file `meta` describes: a
/// live server, found without connecting to it (a connection would be a client in its log).
pub fn unix_listener_on(meta: &std::fs::Metadata) -> Result<bool, DiagError> {
    Ok(unix_sockets()?.iter().any(|s| s.state == TcpState::Listen && s.file.is_some_and(|f| f.is(meta))))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process that holds a socket in one of its descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The process id.
    pub pid: u32,
    /// The command name (`/proc/PID/comm`).
    pub name: String,
    /// The descriptor number.
    pub fd: u32,
}

/// Which processes hold which sockets, by socket inode: what `ss -p` shows. Processes whose
/// descriptors may not be read (other users', without privilege) are missing.
#[derive(Debug, Default, Clone)]
pub struct Processes {
    by_inode: HashMap<u64, Vec<Owner>>,
}

impl Processes {
    /// Reads every `/proc/PID/fd` that can be read. Processes that exit meanwhile are skipped.
    pub fn scan() -> Processes {
        Processes::scan_root(Path::new("/proc"))
    }

    /// [`Processes::scan`] over another proc tree (for tests).
    pub fn scan_root(proc_root: &Path) -> Processes {
        let mut by_inode: HashMap<u64, Vec<Owner>> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(proc_root) else { return Processes { by_inode } };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
            let mut name: Option<String> = None;
            for fd in fds.flatten() {
                let Some(fd_num) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else { continue };
                let name = name
                    .get_or_insert_with(|| {
                        std::fs::read_to_string(entry.path().join("comm"))
                            .map(|s| s.trim_end_matches('\n').to_owned())
                            .unwrap_or_default()
                    })
                    .clone();
                by_inode.entry(inode).or_default().push(Owner { pid, name, fd: fd_num });
            }
        }
        for owners in by_inode.values_mut() {
            owners.sort_by_key(|o| (o.pid, o.fd));
        }
        Processes { by_inode }
    }

    /// The processes that hold the socket with this inode (none for inode 0).
    pub fn owners(&self, inode: u64) -> &[Owner] {
        if inode == 0 {
            return &[];
        }
        self.by_inode.get(&inode).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The inode of a descriptor link `socket:[12345]`.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Counters

/// The kernel's counters of what happened at full listen queues and under SYN floods, from the
/// `TcpExt` lines of `/proc/net/netstat` (this network namespace, since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListenCounters {
    /// A connection (a SYN, or the final ACK) arrived at a full accept queue and was dropped.
    #[serde(rename = "ListenOverflows")]
    pub listen_overflows: u64,
    /// A SYN or final ACK at a listener was dropped for any reason (overflows included).
    #[serde(rename = "ListenDrops")]
    pub listen_drops: u64,
    /// A SYN was dropped because the SYN queue was full and SYN cookies were off.
    #[serde(rename = "TCPReqQFullDrop")]
    pub req_q_full_drop: u64,
    /// SYN cookies sent (the SYN queue was full, or `tcp_syncookies` is 2).
    #[serde(rename = "SyncookiesSent")]
    pub syncookies_sent: u64,
    /// Valid SYN cookies that came back in final ACKs.
    #[serde(rename = "SyncookiesRecv")]
    pub syncookies_recv: u64,
    /// ACKs whose SYN cookie did not check out.
    #[serde(rename = "SyncookiesFailed")]
    pub syncookies_failed: u64,
}

impl ListenCounters {
    /// The counters' names as the kernel spells them, in the order of [`ListenCounters::values`].
    pub const NAMES: [&'static str; 6] =
        ["ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed"];

    /// Reads the counters of the calling thread's network namespace from
    /// `/proc/thread-self/net/netstat` (or `/proc/net/netstat` on kernels before 3.17, which
    /// lack `thread-self`).
    pub fn read() -> Result<ListenCounters, DiagError> {
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat")
            .or_else(|_| std::fs::read_to_string("/proc/net/netstat"))
            .map_err(|e| DiagError::Counters(e.to_string()))?;
        ListenCounters::parse(&text)
    }

    /// Parses the text of `/proc/net/netstat`: a line of `TcpExt:` names followed by a line of
    /// `TcpExt:` values. A counter this kernel does not have is an error.
    pub fn parse(text: &str) -> Result<ListenCounters, DiagError> {
        let mut lines = text.lines();
        let mut values: HashMap<&str, u64> = HashMap::new();
        while let Some(names) = lines.next() {
            let Some(names) = names.strip_prefix("TcpExt:") else { continue };
            let Some(nums) = lines.next().and_then(|l| l.strip_prefix("TcpExt:")) else {
                return Err(DiagError::Counters("a TcpExt line of names without its values".into()));
            };
            for (name, num) in names.split_whitespace().zip(nums.split_whitespace()) {
                if let Ok(v) = num.parse() {
                    values.insert(name, v);
                }
            }
        }
        let get =
            |name: &str| values.get(name).copied().ok_or_else(|| DiagError::Counters(format!("no {name} counter")));
        Ok(ListenCounters {
            listen_overflows: get("ListenOverflows")?,
            listen_drops: get("ListenDrops")?,
            req_q_full_drop: get("TCPReqQFullDrop")?,
            syncookies_sent: get("SyncookiesSent")?,
            syncookies_recv: get("SyncookiesRecv")?,
            syncookies_failed: get("SyncookiesFailed")?,
        })
    }

    /// The values, in the order of [`ListenCounters::NAMES`].
    pub fn values(&self) -> [u64; 6] {
        [
            self.listen_overflows,
            self.listen_drops,
            self.req_q_full_drop,
            self.syncookies_sent,
            self.syncookies_recv,
            self.syncookies_failed,
        ]
    }

    /// How much each counter grew since `earlier` (counters only grow; a smaller value, which a
    /// wrapped counter would give, counts as no growth).
    pub fn since(&self, earlier: &ListenCounters) -> ListenCounters {
        ListenCounters {
            listen_overflows: self.listen_overflows.saturating_sub(earlier.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(earlier.listen_drops),
            req_q_full_drop: self.req_q_full_drop.saturating_sub(earlier.req_q_full_drop),
            syncookies_sent: self.syncookies_sent.saturating_sub(earlier.syncookies_sent),
            syncookies_recv: self.syncookies_recv.saturating_sub(earlier.syncookies_recv),
            syncookies_failed: self.syncookies_failed.saturating_sub(earlier.syncookies_failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of `kind` with `payload`, padded to four bytes.
    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(payload);
        b.resize(align4(b.len()), 0);
        b
    }

    /// An `inet_diag_msg` for an IPv4 socket.
    fn inet_msg(state: u8, local: ([u8; 4], u16), peer: ([u8; 4], u16), rq: u32, wq: u32, inode: u32) -> Vec<u8> {
        let mut p = vec![AF_INET, state, 0, 0];
        p.extend_from_slice(&local.1.to_be_bytes());
        p.extend_from_slice(&peer.1.to_be_bytes());
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&local.0);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&peer.0);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0u8; 12]); // interface, cookie
        p.extend_from_slice(&0u32.to_ne_bytes()); // expires
        for v in [rq, wq, 1000, inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), INET_DIAG_MSG_LEN);
        p
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn unix_msg(kind: u8, state: u8, inode: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![AF_UNIX, kind, state, 0];
        p.extend_from_slice(&inode.to_ne_bytes());
        p.extend_from_slice(&[0u8; 8]);
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    #[test]
    fn state_numbers_map_to_rfc_names() {
        let cases = [
            (1, "ESTABLISHED"),
            (2, "SYN-SENT"),
            (3, "SYN-RECEIVED"),
            (4, "FIN-WAIT-1"),
            (5, "FIN-WAIT-2"),
            (6, "TIME-WAIT"),
            (7, "CLOSED"),
            (8, "CLOSE-WAIT"),
            (9, "LAST-ACK"),
            (10, "LISTEN"),
            (11, "CLOSING"),
            (12, "SYN-RECEIVED"),
        ];
        for (n, name) in cases {
            assert_eq!(TcpState::from_kernel(n).map(TcpState::name), Some(name), "state {n}");
        }
        for n in [0, 13, 14, 255] {
            assert_eq!(TcpState::from_kernel(n), None, "state {n}");
        }
    }

    #[test]
    fn state_names_parse_in_every_spelling() {
        for state in TcpState::ALL {
            assert_eq!(state.name().parse::<TcpState>(), Ok(state));
            assert_eq!(state.name().to_lowercase().parse::<TcpState>(), Ok(state));
            assert_eq!(state.name().replace('-', "_").parse::<TcpState>(), Ok(state));
            assert_eq!(state.ss_name().parse::<TcpState>(), Ok(state));
            assert_eq!(state.to_string(), state.name());
        }
        for (alias, state) in [
            ("estab", TcpState::Established),
            ("listening", TcpState::Listen),
            ("syn-recv", TcpState::SynReceived),
            ("SYN_RECV", TcpState::SynReceived),
            ("fin-wait1", TcpState::FinWait1),
            ("FIN_WAIT2", TcpState::FinWait2),
            ("close", TcpState::Closed),
            (" time-wait ", TcpState::TimeWait),
        ] {
            assert_eq!(alias.parse::<TcpState>(), Ok(state), "{alias}");
        }
        let err = "BOGUS".parse::<TcpState>().unwrap_err().to_string();
        assert!(err.starts_with("unknown state 'BOGUS' (one of LISTEN, SYN-SENT, SYN-RECEIVED,"), "{err}");
        assert!(err.ends_with("TIME-WAIT, CLOSED)"), "{err}");
        assert!("".parse::<TcpState>().is_err());
    }

    #[test]
    fn requests_have_the_kernel_layout() {
        let r = inet_request(Transport::Tcp, IpVersion::V6, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..20], &[AF_INET6, IPPROTO_TCP, 0, 0]);
        assert_eq!(u32_at(&r, 20), Some(ALL_STATES));
        assert!(r[24..].iter().all(|&b| b == 0));
        assert_eq!(inet_request(Transport::Udp, IpVersion::V4, 1)[16..18], [AF_INET, IPPROTO_UDP]);

        let u = unix_request(3);
        assert_eq!(u.len(), 40);
        assert_eq!(u32_at(&u, 0), Some(40));
        assert_eq!(u[16], AF_UNIX);
        assert_eq!(u32_at(&u, 20), Some(u32::MAX));
        assert_eq!(u32_at(&u, 28), Some(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN));
    }

    #[test]
    fn inet_messages_parse() {
        let listen = inet_msg(10, ([127, 0, 0, 1], 7000), ([0, 0, 0, 0], 0), 2, 128, 4242);
        let tw = inet_msg(6, ([127, 0, 0, 1], 40000), ([127, 0, 0, 1], 7000), 0, 0, 0);
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, 5, &listen);
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 5, &tw));
        let Reply::Part(socks) = parse_reply(&buf, 5, parse_inet).unwrap() else { panic!("not a part") };
        assert_eq!(socks.len(), 2);
        assert_eq!(socks[0].state, TcpState::Listen);
        assert_eq!(socks[0].local, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(socks[0].peer, "0.0.0.0:0".parse().unwrap());
        assert_eq!(socks[0].accept_queue(), Some(AcceptQueue { depth: 2, backlog: 128 }));
        assert_eq!((socks[0].uid, socks[0].inode), (1000, 4242));
        assert_eq!(socks[1].state, TcpState::TimeWait);
        assert_eq!(socks[1].peer, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(socks[1].accept_queue(), None);

        buf.extend(nlmsg(NLMSG_DONE, 5, &0u32.to_ne_bytes()));
        assert!(matches!(parse_reply(&buf, 5, parse_inet), Ok(Reply::Done(s)) if s.len() == 2));
        // Another request's messages are skipped, its DONE too.
        assert!(matches!(parse_reply(&buf, 6, parse_inet), Ok(Reply::Part(s)) if s.is_empty()));
    }

    #[test]
    fn ipv6_and_unknown_states() {
        let mut p = inet_msg(1, ([0; 4], 443), ([0; 4], 5000), 0, 0, 1);
        p[0] = AF_INET6;
        p[8 + 15] = 1; // ::1
        p[24..40].copy_from_slice(&"::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        let s = parse_inet(&p).unwrap().unwrap();
        assert_eq!(s.local.to_string(), "[::1]:443");
        assert_eq!(s.peer.to_string(), "[::ffff:127.0.0.1]:5000");

        p[1] = 13; // TCP_BOUND_INACTIVE: not asked for, skipped if it comes
        assert_eq!(parse_inet(&p).unwrap(), None);
        p[0] = 99;
        p[1] = 1;
        assert!(matches!(parse_inet(&p), Err(DiagError::Malformed(_))));
    }

    #[test]
    fn kernel_errors_are_refusals() {
        let mut payload = (-(libc::EACCES)).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let buf = nlmsg(NLMSG_ERROR, 1, &payload);
        match parse_reply(&buf, 1, parse_inet) {
            Err(DiagError::Refused(e)) => assert_eq!(e.raw_os_error(), Some(libc::EACCES)),
            other => panic!("{other:?}"),
        }
        // An error of 0 is an acknowledgement, not an error.
        let ack = nlmsg(NLMSG_ERROR, 1, &[0u8; 20]);
        assert!(matches!(parse_reply(&ack, 1, parse_inet), Ok(Reply::Part(s)) if s.is_empty()));
        assert!(matches!(parse_reply(&nlmsg(77, 1, &[]), 1, parse_inet), Err(DiagError::Malformed(_))));
    }

    /// The kernel names the file a listener is bound to, and only while it listens.
    #[test]
    fn a_listener_is_found_by_its_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(unix_listener_on(&meta).unwrap());
        drop(listener);
        assert!(!unix_listener_on(&meta).unwrap(), "a closed listener's file is stale");
        let other = dir.path().join("dgram.sock");
        let _dgram = std::os::unix::net::UnixDatagram::bind(&other).unwrap();
        assert!(
            !unix_listener_on(&std::fs::symlink_metadata(&other).unwrap()).unwrap(),
            "a datagram socket listens not"
        );
    }

    #[test]
    fn unix_messages_parse() {
        let mut rq = 3u32.to_ne_bytes().to_vec();
        rq.extend_from_slice(&16u32.to_ne_bytes());
        // The socket file: inode 4242 on device 259:3, in the kernel's encoding.
        let vfs = [4242u32.to_ne_bytes(), ((259u32 << 20) | 3).to_ne_bytes()].concat();
        let listener = unix_msg(
            1,
            10,
            100,
            &[attr(UNIX_DIAG_NAME, b"/tmp/s.sock\0"), attr(UNIX_DIAG_VFS, &vfs), attr(UNIX_DIAG_RQLEN, &rq)],
        );
        let s = parse_unix(&listener).unwrap().unwrap();
        assert_eq!(s.kind, UnixType::Stream);
        assert_eq!(s.state, TcpState::Listen);
        assert_eq!(s.name.as_deref(), Some("/tmp/s.sock"));
        assert_eq!(s.accept_queue(), Some(AcceptQueue { depth: 3, backlog: 16 }));
        assert_eq!(s.file, Some(SocketFile { dev: (259, 3), ino: 4242 }));
        let short = unix_msg(1, 10, 100, &[attr(UNIX_DIAG_VFS, &[0; 4])]);
        assert!(matches!(parse_unix(&short), Err(DiagError::Malformed("short UNIX_DIAG_VFS"))));

        let abs =
            unix_msg(5, 1, 101, &[attr(UNIX_DIAG_NAME, b"\0hidden"), attr(UNIX_DIAG_PEER, &102u32.to_ne_bytes())]);
        let s = parse_unix(&abs).unwrap().unwrap();
        assert_eq!((s.kind, s.state), (UnixType::Seqpacket, TcpState::Established));
        assert_eq!(s.name.as_deref(), Some("@hidden"));
        assert_eq!(s.peer_inode, Some(102));

        let unnamed = unix_msg(2, 7, 103, &[attr(9, b"unknown attribute")]);
        let s = parse_unix(&unnamed).unwrap().unwrap();
        assert_eq!((s.kind, s.state, s.name), (UnixType::Dgram, TcpState::Closed, None));
        assert_eq!(parse_unix(&unix_msg(3, 7, 1, &[])).unwrap(), None, "SOCK_RAW is no Unix type we show");
    }

    /// Every prefix of a valid reply, and every reply with one byte changed, parses to a result
    /// or an error: never a panic.
    #[test]
    fn malformed_replies_never_panic() {
        let mut rq = 1u32.to_ne_bytes().to_vec();
        rq.extend_from_slice(&2u32.to_ne_bytes());
        let mut inet = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &inet_msg(1, ([127, 0, 0, 1], 1), ([127, 0, 0, 1], 2), 0, 0, 9));
        inet.extend(nlmsg(NLMSG_DONE, 1, &[0; 4]));
        let mut unix = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &unix_msg(
                1,
                10,
                5,
                &[attr(UNIX_DIAG_NAME, b"\0x"), attr(UNIX_DIAG_PEER, &[1, 2]), attr(UNIX_DIAG_RQLEN, &rq)],
            ),
        );
        unix.extend(nlmsg(NLMSG_ERROR, 1, &[0xff; 4]));
        for buf in [&inet, &unix] {
            for cut in 0..buf.len() {
                let _ = parse_reply(&buf[..cut], 1, parse_inet);
                let _ = parse_reply(&buf[..cut], 1, parse_unix);
            }
            for at in 0..buf.len() {
                for byte in [0x00, 0x01, 0x03, 0x7f, 0xff] {
                    let mut b = buf.clone();
                    b[at] = byte;
                    let _ = parse_reply(&b, 1, parse_inet);
                    let _ = parse_reply(&b, 1, parse_unix);
                }
            }
        }
        // Truncations inside a message are errors, not silently shorter records.
        let msg_len = NLMSG_HDRLEN + INET_DIAG_MSG_LEN;
        assert!(matches!(parse_reply(&inet[..msg_len - 1], 1, parse_inet), Err(DiagError::Malformed(_))));
        assert!(matches!(parse_reply(&inet[..3], 1, parse_inet), Err(DiagError::Malformed(_))));
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[0u8; 40]);
        assert!(matches!(parse_reply(&short, 1, parse_inet), Err(DiagError::Malformed(_))));
        // A short peer attribute is an error.
        assert!(matches!(parse_reply(&unix, 1, parse_unix), Err(DiagError::Malformed("short UNIX_DIAG_PEER"))));
        // An attribute longer than its message.
        let mut bad = unix_msg(1, 10, 5, &[attr(UNIX_DIAG_NAME, b"/x")]);
        bad[UNIX_DIAG_MSG_LEN] = 200;
        assert!(matches!(parse_unix(&bad), Err(DiagError::Malformed("attribute length out of range"))));
        // A message length shorter than the header cannot make the parser loop forever.
        let mut zero = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[]);
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(parse_reply(&zero, 1, parse_inet), Err(DiagError::Malformed(_))));
    }

    #[test]
    fn socket_inodes_from_fd_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn this_process_owns_its_socket() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let procs = Processes::scan();
        let owners = procs.owners(inode);
        assert!(
            owners.iter().any(|o| o.pid == std::process::id() && o.fd == fd as u32),
            "owners of {inode}: {owners:?}"
        );
        assert!(procs.owners(0).is_empty());
        assert!(Processes::scan_root(Path::new("/nonexistent")).owners(inode).is_empty());
    }

    #[test]
    fn counters_parse_from_netstat() {
        let text = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed ListenOverflows ListenDrops TCPReqQFullDrop Other
TcpExt: 1 2 3 4 5 6 7
IpExt: InNoRoutes
IpExt: 0
";
        let c = ListenCounters::parse(text).unwrap();
        assert_eq!(c.values(), [4, 5, 6, 1, 2, 3]);
        let later = ListenCounters { listen_overflows: 10, ..c };
        assert_eq!(later.since(&c).values(), [6, 0, 0, 0, 0, 0]);
        assert_eq!(c.since(&later).listen_overflows, 0);

        assert!(ListenCounters::parse("TcpExt: ListenOverflows\n").is_err());
        assert!(ListenCounters::parse("IpExt: A\nIpExt: 1\n").is_err());
        let err = ListenCounters::parse("TcpExt: ListenOverflows\nTcpExt: 1\n").unwrap_err().to_string();
        assert!(err.contains("no ListenDrops counter"), "{err}");
        // The real file of this machine.
        ListenCounters::read().unwrap();
    }

    /// A thread moved into a namespace of its own sees that namespace's sockets and counters,
    /// not the process's (root only; skipped otherwise).
    #[test]
    fn a_thread_in_its_own_namespace_sees_that_namespace() {
        let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_addr = host_listener.local_addr().unwrap();
        let seen = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some((tcp_sockets().unwrap(), ListenCounters::read().unwrap()))
        })
        .join()
        .unwrap();
        let Some((socks, counters)) = seen else {
            eprintln!("skipping: cannot make a network namespace (not root)");
            return;
        };
        assert!(socks.iter().all(|s| s.local != host_addr), "{socks:?}");
        assert!(socks.is_empty(), "a new namespace has no TCP sockets: {socks:?}");
        assert_eq!(counters, ListenCounters::default());
    }

    #[test]
    fn the_kernel_answers_a_dump() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socks = tcp_sockets().unwrap();
        let found = socks.iter().find(|s| s.local == addr).expect("our listener in the dump");
        assert_eq!(found.state, TcpState::Listen);
        assert!(found.inode != 0);

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uaddr = udp.local_addr().unwrap();
        assert!(udp_sockets().unwrap().iter().any(|s| s.local == uaddr && s.state == TcpState::Closed));

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sockit-diag-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _unix = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let want = format!("@{name}");
        assert!(unix_sockets().unwrap().iter().any(|s| s.name.as_deref() == Some(want.as_str())));
    }
}
