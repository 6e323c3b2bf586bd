//! ICMP and ICMPv6 echo messages on the wire: encoding requests and parsing whatever a socket
//! receives, sans-IO.
//!
//! [`EchoRequest::encode_v4`] and [`EchoRequest::encode_v6`] build the bytes to send.
//! [`parse_v4`] and [`parse_v6`] take one received datagram and return a [`Parsed`] message: an
//! echo reply or request, an error that quotes the request it is about ([`ErrorMessage`], e.g.
//! destination unreachable or time exceeded), or any other type. What a datagram starts with
//! depends on the socket: an IPv4 raw socket delivers the IP header first, an ICMP datagram
//! ("ping") socket and every ICMPv6 socket deliver the ICMP message alone.
//!
//! The parsers are total: any input, however short or malformed, gives `Ok` or a
//! [`ParseError`], never a panic, and they read nothing outside the slice they are given. They
//! allocate nothing; a parsed message borrows its payload from the input.
//!
//! ```
//! use sockit::icmp::{self, EchoRequest, Icmp};
//!
//! let request = EchoRequest { id: 7, seq: 1, payload: b"hello" }.encode_v4();
//! // What a peer sends back: type 0, the checksum adjusted by the difference in type.
//! let mut reply = request.clone();
//! reply[0] = 0;
//! let sum = u16::from_be_bytes([reply[2], reply[3]]).wrapping_add(0x0800);
//! reply[2..4].copy_from_slice(&sum.to_be_bytes());
//! let parsed = icmp::parse_v4(&reply, false).unwrap();
//! let Icmp::EchoReply(echo) = parsed.icmp else { panic!("a reply") };
//! assert_eq!((echo.id, echo.seq, echo.payload), (7, 1, &b"hello"[..]));
//! assert!(icmp::parse_v4(&reply[..5], false).is_err());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The length of an ICMP or ICMPv6 header: type, code, checksum and four bytes that echo
/// messages split into identifier and sequence number.
pub const HEADER_LEN: usize = 8;

/// The shortest IPv4 header (no options).
pub const IPV4_MIN_HEADER_LEN: usize = 20;

/// The IPv6 header, which has a fixed length.
pub const IPV6_HEADER_LEN: usize = 40;

/// ICMP (IPv4) message types that ping cares about.
pub mod v4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still parsed).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// ICMPv6 message types that ping cares about.
pub mod v6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
}

/// The IP protocol numbers of ICMP and ICMPv6.
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// IPv4 or IPv6: which of the two ICMPs a message belongs to (their type numbers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

/// An echo request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest<'a> {
    /// The identifier. On an ICMP datagram socket the kernel replaces it with the socket's own.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
    /// The data after the header, sent back unchanged by the peer.
    pub payload: &'a [u8],
}

impl EchoRequest<'_> {
    /// The ICMP message: type 8, code 0, a valid checksum, identifier, sequence and payload.
    /// The payload should be at most 65507 bytes, what fits in an IPv4 packet; longer ones are
    /// encoded, but no socket sends them.
    pub fn encode_v4(&self) -> Vec<u8> {
        let mut out = self.encode(v4_type::ECHO_REQUEST);
        let sum = checksum(&out);
        out[2..4].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// The ICMPv6 message: type 128, code 0, identifier, sequence and payload, with the
    /// checksum left zero: it covers a pseudo-header with the source address, which the kernel
    /// knows and fills in on raw and datagram sockets alike (RFC 3542, `IPV6_CHECKSUM`).
    pub fn encode_v6(&self) -> Vec<u8> {
        self.encode(v6_type::ECHO_REQUEST)
    }

    fn encode(&self, ty: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&[ty, 0, 0, 0]);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of the
/// data as big-endian 16-bit words, an odd last byte padded with zero. Over a message that
/// carries its checksum, the result is 0 when the message is intact.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request or reply: identifier, sequence number and the payload after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    /// The identifier.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
    /// Everything after the 8-byte header.
    pub payload: &'a [u8],
}

/// The echo request an ICMP error quotes: where it was going and its identifier and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// The destination of the quoted packet.
    pub dst: IpAddr,
    /// The quoted echo request's identifier.
    pub id: u16,
    /// The quoted echo request's sequence number.
    pub seq: u16,
}

/// An ICMP error message (destination unreachable, time exceeded, …), with the echo request it
/// is about when it quotes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorMessage {
    /// ICMP or ICMPv6: the numbering of `ty` and `code`.
    pub version: IpVersion,
    /// The message type.
    pub ty: u8,
    /// The message code.
    pub code: u8,
    /// The four bytes after the checksum: the MTU of "fragmentation needed" and "packet too
    /// big", the pointer of "parameter problem" (IPv4: in the top byte), the gateway of a
    /// redirect; unused otherwise.
    pub info: u32,
    /// The echo request the error is about, when the quoted packet is one.
    pub original: Option<Quoted>,
}

/// What a received ICMP message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp<'a> {
    /// An echo reply.
    EchoReply(Echo<'a>),
    /// An echo request (a raw socket sees its own on loopback, and everyone else's).
    EchoRequest(Echo<'a>),
    /// An error about a packet sent earlier.
    Error(ErrorMessage),
    /// Any other message.
    Other {
        /// The type.
        ty: u8,
        /// The code.
        code: u8,
    },
}

/// The fields of an IPv4 header that ping shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Time to live.
    pub ttl: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
}

/// A parsed datagram: the IP header where the socket delivers one, and the ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The IPv4 header, from a raw IPv4 socket; `None` otherwise.
    pub ip: Option<Ipv4Header>,
    /// The ICMP message.
    pub icmp: Icmp<'a>,
    /// The ICMP message's length in bytes, header included (what ping calls "bytes from").
    pub len: usize,
}

/// Why a datagram could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the headers it must hold.
    #[error("truncated: {got} bytes, at least {needed} needed")]
    Truncated {
        /// The shortest acceptable length.
        needed: usize,
        /// The length received.
        got: usize,
    },
    /// The IP header is not a valid IPv4 header.
    #[error("bad IPv4 header: {0}")]
    BadIpHeader(&'static str),
    /// The IP packet carries another protocol than ICMP.
    #[error("not ICMP: IP protocol {0}")]
    NotIcmp(u8),
    /// The ICMP checksum does not match the message (IPv4 only: the kernel checks ICMPv6's).
    #[error("bad ICMP checksum")]
    BadChecksum {
        /// The identifier and sequence number, when the message claims to be an echo reply:
        /// ping reports a damaged reply to its own request rather than ignoring it.
        echo_reply: Option<(u16, u16)>,
        /// The ICMP message's length, header included.
        len: usize,
    },
}

/// Parses one datagram received on an ICMP (IPv4) socket. With `has_ip_header` (raw sockets)
/// the datagram starts with the IPv4 header, whose length is taken from its IHL field; without
/// it (ICMP datagram sockets) it is the ICMP message alone. The ICMP checksum is verified.
pub fn parse_v4(buf: &[u8], has_ip_header: bool) -> Result<Parsed<'_>, ParseError> {
    let (ip, msg) = if has_ip_header {
        let (header, rest) = ipv4_header(buf)?;
        if header.protocol != PROTO_ICMP {
            return Err(ParseError::NotIcmp(header.protocol));
        }
        (Some(Ipv4Header { ttl: header.ttl, src: header.src, dst: header.dst }), rest)
    } else {
        (None, buf)
    };
    let Header { ty, code, rest: rest_of_header, body } = icmp_header(msg)?;
    if checksum(msg) != 0 {
        let echo_reply = (ty == v4_type::ECHO_REPLY).then(|| split_id_seq(rest_of_header));
        return Err(ParseError::BadChecksum { echo_reply, len: msg.len() });
    }
    let (id, seq) = split_id_seq(rest_of_header);
    let icmp = match ty {
        v4_type::ECHO_REPLY => Icmp::EchoReply(Echo { id, seq, payload: body }),
        v4_type::ECHO_REQUEST => Icmp::EchoRequest(Echo { id, seq, payload: body }),
        v4_type::DEST_UNREACHABLE
        | v4_type::SOURCE_QUENCH
        | v4_type::REDIRECT
        | v4_type::TIME_EXCEEDED
        | v4_type::PARAMETER_PROBLEM => Icmp::Error(ErrorMessage {
            version: IpVersion::V4,
            ty,
            code,
            info: u32::from_be_bytes(rest_of_header),
            original: quoted_v4(body),
        }),
        _ => Icmp::Other { ty, code },
    };
    Ok(Parsed { ip, icmp, len: msg.len() })
}

/// Parses one datagram received on an ICMPv6 socket, raw or datagram: the ICMPv6 message alone
/// (IPv6 sockets never deliver the IP header). The checksum is not verified here: it covers a
/// pseudo-header this function does not see, and the kernel has verified it already.
pub fn parse_v6(buf: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let Header { ty, code, rest: rest_of_header, body } = icmp_header(buf)?;
    let (id, seq) = split_id_seq(rest_of_header);
    let icmp = match ty {
        v6_type::ECHO_REPLY => Icmp::EchoReply(Echo { id, seq, payload: body }),
        v6_type::ECHO_REQUEST => Icmp::EchoRequest(Echo { id, seq, payload: body }),
        v6_type::DEST_UNREACHABLE | v6_type::PACKET_TOO_BIG | v6_type::TIME_EXCEEDED | v6_type::PARAMETER_PROBLEM => {
            Icmp::Error(ErrorMessage {
                version: IpVersion::V6,
                ty,
                code,
                info: u32::from_be_bytes(rest_of_header),
                original: quoted_v6(body),
            })
        }
        _ => Icmp::Other { ty, code },
    };
    Ok(Parsed { ip: None, icmp, len: buf.len() })
}

/// The identifier and sequence number of an echo request's header at the start of `buf`, if
/// it is one: what the kernel's error queue hands back about a request an ICMP error quoted
/// (the quoted ICMP header and whatever followed it).
pub fn quoted_echo_request(version: IpVersion, buf: &[u8]) -> Option<(u16, u16)> {
    let request = match version {
        IpVersion::V4 => v4_type::ECHO_REQUEST,
        IpVersion::V6 => v6_type::ECHO_REQUEST,
    };
    let header = icmp_header(buf).ok()?;
    (header.ty == request && header.code == 0).then(|| split_id_seq(header.rest))
}

struct RawIpv4Header {
    protocol: u8,
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Splits an IPv4 header off `buf`. Only what a header must be is checked (version 4, an IHL
/// of at least five words that fits in the buffer); the total-length field is not trusted,
/// since the buffer is what arrived.
fn ipv4_header(buf: &[u8]) -> Result<(RawIpv4Header, &[u8]), ParseError> {
    let first = *buf.first().ok_or(ParseError::Truncated { needed: IPV4_MIN_HEADER_LEN, got: 0 })?;
    if first >> 4 != 4 {
        return Err(ParseError::BadIpHeader("version is not 4"));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < IPV4_MIN_HEADER_LEN {
        return Err(ParseError::BadIpHeader("header length below 20 bytes"));
    }
    if buf.len() < ihl {
        return Err(ParseError::Truncated { needed: ihl, got: buf.len() });
    }
    let (header, rest) = buf.split_at(ihl);
    let addr = |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
    Ok((RawIpv4Header { protocol: header[9], ttl: header[8], src: addr(12), dst: addr(16) }, rest))
}

/// An ICMP header split into its fields, and the body after it.
struct Header<'a> {
    ty: u8,
    code: u8,
    /// The four bytes after the checksum.
    rest: [u8; 4],
    body: &'a [u8],
}

fn icmp_header(buf: &[u8]) -> Result<Header<'_>, ParseError> {
    match buf {
        [ty, code, _, _, a, b, c, d, body @ ..] => Ok(Header { ty: *ty, code: *code, rest: [*a, *b, *c, *d], body }),
        _ => Err(ParseError::Truncated { needed: HEADER_LEN, got: buf.len() }),
    }
}

fn split_id_seq(b: [u8; 4]) -> (u16, u16) {
    (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]))
}

/// The echo request quoted in an ICMP error's body: the original IPv4 header and at least the
/// first 8 bytes of what it carried (RFC 792).
fn quoted_v4(body: &[u8]) -> Option<Quoted> {
    let (header, rest) = ipv4_header(body).ok()?;
    if header.protocol != PROTO_ICMP {
        return None;
    }
    let (id, seq) = quoted_echo_request(IpVersion::V4, rest)?;
    Some(Quoted { dst: IpAddr::V4(header.dst), id, seq })
}

/// The echo request quoted in an ICMPv6 error's body: the original IPv6 header and as much of
/// the packet as fits (RFC 4443). A request behind extension headers is not looked for: ping
/// sends none.
fn quoted_v6(body: &[u8]) -> Option<Quoted> {
    let header = body.get(..IPV6_HEADER_LEN)?;
    if header[0] >> 4 != 6 || header[6] != PROTO_ICMPV6 {
        return None;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    let (id, seq) = quoted_echo_request(IpVersion::V6, &body[IPV6_HEADER_LEN..])?;
    Some(Quoted { dst: IpAddr::V6(Ipv6Addr::from(dst)), id, seq })
}

impl fmt::Display for ErrorMessage {
    /// The words iputils ping uses, e.g. "Destination Host Unreachable" or "Time exceeded: Hop
    /// limit", so that the output reads the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            IpVersion::V4 => describe_v4(self, f),
            IpVersion::V6 => describe_v6(self, f),
        }
    }
}

fn describe_v4(e: &ErrorMessage, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    use v4_type::*;
    match (e.ty, e.code) {
        (DEST_UNREACHABLE, 4) => write!(f, "Frag needed and DF set (mtu = {})", e.info & 0xffff),
        (DEST_UNREACHABLE, code) => {
            const TEXT: [&str; 16] = [
                "Destination Net Unreachable",
                "Destination Host Unreachable",
                "Destination Protocol Unreachable",
                "Destination Port Unreachable",
                "",
                "Source Route Failed",
                "Destination Net Unknown",
                "Destination Host Unknown",
                "Source Host Isolated",
                "Destination Net Prohibited",
                "Destination Host Prohibited",
                "Destination Net Unreachable for Type of Service",
                "Destination Host Unreachable for Type of Service",
                "Packet filtered",
                "Precedence Violation",
                "Precedence Cutoff",
            ];
            match TEXT.get(usize::from(code)) {
                Some(text) => f.write_str(text),
                None => write!(f, "Dest Unreachable, Bad Code: {code}"),
            }
        }
        (SOURCE_QUENCH, _) => f.write_str("Source Quench"),
        (REDIRECT, code) => {
            let what = match code {
                0 => "Redirect Network",
                1 => "Redirect Host",
                2 => "Redirect Type of Service and Network",
                3 => "Redirect Type of Service and Host",
                _ => "Redirect, Bad Code",
            };
            write!(f, "{what}(New nexthop: {})", Ipv4Addr::from(e.info))
        }
        (TIME_EXCEEDED, 0) => f.write_str("Time to live exceeded"),
        (TIME_EXCEEDED, 1) => f.write_str("Frag reassembly time exceeded"),
        (TIME_EXCEEDED, code) => write!(f, "Time exceeded, Bad Code: {code}"),
        (PARAMETER_PROBLEM, _) => write!(f, "Parameter problem: pointer = {}", e.info >> 24),
        (ty, code) => write!(f, "ICMP type {ty} code {code}"),
    }
}

fn describe_v6(e: &ErrorMessage, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    use v6_type::*;
    match (e.ty, e.code) {
        (DEST_UNREACHABLE, code) => {
            const TEXT: [&str; 7] = [
                "No route",
                "Administratively prohibited",
                "Beyond scope of source address",
                "Address unreachable",
                "Port unreachable",
                "Source address failed ingress/egress policy",
                "Reject route to destination",
            ];
            match TEXT.get(usize::from(code)) {
                Some(text) => write!(f, "Destination unreachable: {text}"),
                None => write!(f, "Destination unreachable: Unknown code {code}"),
            }
        }
        (PACKET_TOO_BIG, _) => write!(f, "Packet too big: mtu={}", e.info),
        (TIME_EXCEEDED, 0) => f.write_str("Time exceeded: Hop limit"),
        (TIME_EXCEEDED, 1) => f.write_str("Time exceeded: Defragmentation failure"),
        (TIME_EXCEEDED, code) => write!(f, "Time exceeded: Unknown code {code}"),
        (PARAMETER_PROBLEM, code) => {
            let what = match code {
                0 => "Wrong header field",
                1 => "Unknown header",
                2 => "Unknown option",
                _ => "Unknown code",
            };
            write!(f, "Parameter problem: {what} at {}", e.info)
        }
        (ty, code) => write!(f, "ICMPv6 type {ty} code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv4 header around `payload`, with protocol `proto`.
    fn ipv4(proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = (IPV4_MIN_HEADER_LEN + payload.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    /// An IPv6 header around `payload` with next header `next`.
    fn ipv6(next: u8, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    /// An ICMP message of any type with a valid checksum.
    fn icmp_v4(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty, code, 0, 0];
        m.extend_from_slice(&rest);
        m.extend_from_slice(body);
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    fn reply_v4(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        icmp_v4(v4_type::ECHO_REPLY, 0, rest, payload)
    }

    #[test]
    fn checksum_matches_rfc_1071_and_verifies_to_zero() {
        // RFC 1071 section 3's example: the sum of these words is 0xddf2, its complement 0x220d.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        assert_eq!(checksum(&[]), 0xffff);
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
        let request = EchoRequest { id: 0x1234, seq: 7, payload: b"odd" }.encode_v4();
        assert_eq!(checksum(&request), 0);
    }

    #[test]
    fn requests_encode_as_the_wire_format() {
        let r = EchoRequest { id: 0xabcd, seq: 0x0102, payload: b"hi" };
        let v4 = r.encode_v4();
        assert_eq!(&v4[..2], &[8, 0]);
        assert_eq!(&v4[4..], &[0xab, 0xcd, 0x01, 0x02, b'h', b'i']);
        assert_eq!(checksum(&v4), 0);
        assert_eq!(r.encode_v6(), vec![128, 0, 0, 0, 0xab, 0xcd, 0x01, 0x02, b'h', b'i']);
        // The largest payload that fits an IPv4 packet still encodes.
        let big = vec![0x5a; 65507];
        assert_eq!(EchoRequest { id: 1, seq: 1, payload: &big }.encode_v4().len(), 65515);
    }

    #[test]
    fn a_request_parses_back_as_itself() {
        let payload: Vec<u8> = (0..=255).collect();
        let r = EchoRequest { id: 9, seq: 65535, payload: &payload };
        let v4 = r.encode_v4();
        let parsed = parse_v4(&v4, false).unwrap();
        assert_eq!(parsed.icmp, Icmp::EchoRequest(Echo { id: 9, seq: 65535, payload: &payload }));
        assert_eq!(parsed.len, 8 + 256);
        let v6 = r.encode_v6();
        let parsed = parse_v6(&v6).unwrap();
        assert_eq!(parsed.icmp, Icmp::EchoRequest(Echo { id: 9, seq: 65535, payload: &payload }));
    }

    #[test]
    fn replies_parse_with_and_without_the_ip_header() {
        let msg = reply_v4(0x4242, 3, b"payload");
        let want = Icmp::EchoReply(Echo { id: 0x4242, seq: 3, payload: b"payload" });
        let bare = parse_v4(&msg, false).unwrap();
        assert_eq!((bare.ip, bare.icmp, bare.len), (None, want, 15));

        let packet = ipv4(1, 63, [10, 0, 0, 2], [10, 0, 0, 1], &msg);
        let raw = parse_v4(&packet, true).unwrap();
        assert_eq!(raw.icmp, want);
        assert_eq!(raw.len, 15, "the length is the ICMP message's, without the IP header");
        let ip = raw.ip.unwrap();
        assert_eq!((ip.ttl, ip.src, ip.dst), (63, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)));

        // IP options: the header is as long as its IHL says.
        let mut with_options = packet.clone();
        with_options[0] = 0x46;
        with_options.splice(20..20, [1, 1, 1, 0]);
        assert_eq!(parse_v4(&with_options, true).unwrap().icmp, want);

        let v6 = [129, 0, 0xde, 0xad, 0, 5, 0, 6, b'x'];
        assert_eq!(parse_v6(&v6).unwrap().icmp, Icmp::EchoReply(Echo { id: 5, seq: 6, payload: b"x" }));
    }

    #[test]
    fn a_damaged_reply_is_a_checksum_error_that_names_it() {
        let mut msg = reply_v4(77, 12, b"0123456789");
        msg[10] ^= 0x40;
        assert_eq!(parse_v4(&msg, false), Err(ParseError::BadChecksum { echo_reply: Some((77, 12)), len: 18 }));
        let mut other = icmp_v4(13, 0, [0; 4], b"timestamp");
        other[9] ^= 1;
        assert_eq!(parse_v4(&other, false), Err(ParseError::BadChecksum { echo_reply: None, len: 17 }));
    }

    #[test]
    fn errors_quote_the_request_they_are_about() {
        let request = EchoRequest { id: 0x0bad, seq: 41, payload: &[0u8; 56] }.encode_v4();
        // A router quotes the IP header and the first 8 bytes of the ICMP message.
        let quote = ipv4(1, 1, [10, 0, 0, 1], [10, 9, 9, 9], &request[..8]);
        let cases: &[(u8, u8, [u8; 4], &str)] = &[
            (3, 1, [0; 4], "Destination Host Unreachable"),
            (3, 0, [0; 4], "Destination Net Unreachable"),
            (3, 3, [0; 4], "Destination Port Unreachable"),
            (3, 4, [0, 0, 0x05, 0xdc], "Frag needed and DF set (mtu = 1500)"),
            (3, 13, [0; 4], "Packet filtered"),
            (3, 99, [0; 4], "Dest Unreachable, Bad Code: 99"),
            (11, 0, [0; 4], "Time to live exceeded"),
            (11, 1, [0; 4], "Frag reassembly time exceeded"),
            (12, 0, [20, 0, 0, 0], "Parameter problem: pointer = 20"),
            (4, 0, [0; 4], "Source Quench"),
            (5, 1, [10, 0, 0, 254], "Redirect Host(New nexthop: 10.0.0.254)"),
        ];
        for &(ty, code, rest, text) in cases {
            let msg = icmp_v4(ty, code, rest, &quote);
            let packet = ipv4(1, 64, [10, 0, 0, 1], [10, 0, 0, 5], &msg);
            let Icmp::Error(e) = parse_v4(&packet, true).unwrap().icmp else { panic!("type {ty} is an error") };
            assert_eq!(e.original, Some(Quoted { dst: "10.9.9.9".parse().unwrap(), id: 0x0bad, seq: 41 }));
            assert_eq!(e.to_string(), text);
        }

        let request6 = EchoRequest { id: 7, seq: 8, payload: b"data" }.encode_v6();
        let dst: Ipv6Addr = "fd53::99".parse().unwrap();
        let quote6 = ipv6(58, dst, &request6);
        let cases6: &[(u8, u8, [u8; 4], &str)] = &[
            (1, 3, [0; 4], "Destination unreachable: Address unreachable"),
            (1, 0, [0; 4], "Destination unreachable: No route"),
            (1, 200, [0; 4], "Destination unreachable: Unknown code 200"),
            (2, 0, [0, 0, 0x05, 0x00], "Packet too big: mtu=1280"),
            (3, 0, [0; 4], "Time exceeded: Hop limit"),
            (4, 1, [0, 0, 0, 40], "Parameter problem: Unknown header at 40"),
        ];
        for &(ty, code, rest, text) in cases6 {
            let mut msg = vec![ty, code, 0, 0];
            msg.extend_from_slice(&rest);
            msg.extend_from_slice(&quote6);
            let Icmp::Error(e) = parse_v6(&msg).unwrap().icmp else { panic!("type {ty} is an error") };
            assert_eq!(e.original, Some(Quoted { dst: IpAddr::V6(dst), id: 7, seq: 8 }));
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn errors_that_quote_something_else_have_no_original() {
        // A UDP datagram's header quoted, not ICMP.
        let udp_quote = ipv4(17, 1, [10, 0, 0, 1], [10, 9, 9, 9], &[0, 53, 0, 53, 0, 8, 0, 0]);
        // An ICMP echo reply quoted, not a request.
        let reply_quote = ipv4(1, 1, [10, 0, 0, 1], [10, 9, 9, 9], &reply_v4(1, 2, b"")[..8]);
        // Too short to hold the quoted ICMP header.
        let short_quote = ipv4(1, 1, [10, 0, 0, 1], [10, 9, 9, 9], &[8, 0, 0, 0]);
        for quote in [udp_quote, reply_quote, short_quote, vec![], vec![0x45; 7], vec![0x4f; 24]] {
            let msg = icmp_v4(3, 1, [0; 4], &quote);
            let Icmp::Error(e) = parse_v4(&msg, false).unwrap().icmp else { panic!("an error") };
            assert_eq!(e.original, None, "quote {quote:?}");
        }
        let dst: Ipv6Addr = "::1".parse().unwrap();
        for quote in [ipv6(17, dst, &[0; 8]), ipv6(58, dst, &[129, 0, 0, 0, 0, 1, 0, 2]), ipv6(58, dst, &[128])] {
            let mut msg = vec![1, 3, 0, 0, 0, 0, 0, 0];
            msg.extend_from_slice(&quote);
            let Icmp::Error(e) = parse_v6(&msg).unwrap().icmp else { panic!("an error") };
            assert_eq!(e.original, None, "quote {quote:?}");
        }
    }

    #[test]
    fn other_types_are_reported_as_such() {
        let ts = icmp_v4(13, 0, [0; 4], &[0; 12]);
        assert_eq!(parse_v4(&ts, false).unwrap().icmp, Icmp::Other { ty: 13, code: 0 });
        // Neighbour solicitation.
        assert_eq!(parse_v6(&[135, 0, 0, 0, 0, 0, 0, 0]).unwrap().icmp, Icmp::Other { ty: 135, code: 0 });
    }

    #[test]
    fn malformed_ip_headers_are_errors() {
        let msg = reply_v4(1, 1, b"abc");
        let good = ipv4(1, 64, [127, 0, 0, 1], [127, 0, 0, 1], &msg);
        let with = |i: usize, v: u8| {
            let mut p = good.clone();
            p[i] = v;
            p
        };
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (vec![], ParseError::Truncated { needed: 20, got: 0 }),
            (good[..19].to_vec(), ParseError::Truncated { needed: 20, got: 19 }),
            (with(0, 0x65), ParseError::BadIpHeader("version is not 4")),
            (with(0, 0x44), ParseError::BadIpHeader("header length below 20 bytes")),
            (with(0, 0x4f), ParseError::Truncated { needed: 60, got: good.len() }),
            (with(9, 6), ParseError::NotIcmp(6)),
            (good[..27].to_vec(), ParseError::Truncated { needed: 8, got: 7 }),
        ];
        for (input, want) in cases {
            assert_eq!(parse_v4(&input, true), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error_or_a_shorter_message() {
        let request = EchoRequest { id: 3, seq: 4, payload: &[7u8; 30] };
        let quote = ipv4(1, 1, [10, 0, 0, 1], [10, 9, 9, 9], &request.encode_v4()[..8]);
        let v4_messages = [
            ipv4(1, 64, [1, 2, 3, 4], [5, 6, 7, 8], &reply_v4(3, 4, &[7; 30])),
            ipv4(1, 64, [1, 2, 3, 4], [5, 6, 7, 8], &icmp_v4(3, 1, [0; 4], &quote)),
        ];
        for msg in &v4_messages {
            for cut in 0..msg.len() {
                for has_ip_header in [true, false] {
                    // Cut messages fail the checksum or the length checks; none may panic.
                    let _ = parse_v4(&msg[..cut], has_ip_header);
                }
                assert!(parse_v4(&msg[..cut], true).is_err(), "cut at {cut} of {msg:?}");
            }
        }
        let dst: Ipv6Addr = "::1".parse().unwrap();
        let mut err6 = vec![1, 3, 0, 0, 0, 0, 0, 0];
        err6.extend_from_slice(&ipv6(58, dst, &request.encode_v6()));
        for cut in 0..err6.len() {
            match parse_v6(&err6[..cut]) {
                Err(ParseError::Truncated { needed: 8, got }) => assert_eq!(got, cut),
                Err(e) => panic!("cut at {cut}: {e}"),
                Ok(p) => {
                    let Icmp::Error(e) = p.icmp else { panic!("cut at {cut}: {p:?}") };
                    // The quote needs the IPv6 header and the quoted ICMPv6 header.
                    assert_eq!(e.original.is_some(), cut >= 8 + 40 + 8, "cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A fixed xorshift sequence: the same inputs on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            let len = (next() % 120) as usize;
            buf.clear();
            buf.extend((0..len).map(|_| next() as u8));
            // Half the time, make it look like an IPv4 packet carrying ICMP, to get past the
            // first checks.
            if len > 20 && next() % 2 == 0 {
                buf[0] = 0x45;
                buf[9] = 1;
            }
            let _ = parse_v4(&buf, true);
            let _ = parse_v4(&buf, false);
            let _ = parse_v6(&buf);
            let _ = quoted_echo_request(IpVersion::V4, &buf);
            let _ = quoted_echo_request(IpVersion::V6, &buf);
        }
    }

    #[test]
    fn quoted_requests_from_the_error_queue() {
        let v4 = EchoRequest { id: 10, seq: 11, payload: b"" }.encode_v4();
        assert_eq!(quoted_echo_request(IpVersion::V4, &v4), Some((10, 11)));
        assert_eq!(quoted_echo_request(IpVersion::V6, &v4), None);
        let v6 = EchoRequest { id: 12, seq: 13, payload: b"abc" }.encode_v6();
        assert_eq!(quoted_echo_request(IpVersion::V6, &v6), Some((12, 13)));
        assert_eq!(quoted_echo_request(IpVersion::V6, &v6[..7]), None);
    }
}
