//! The properties the fuzz targets check, in one place for both of their runners: the cargo-fuzz
//! targets in `fuzz/fuzz_targets/` (nightly, libFuzzer) and `tests/fuzz_corpus.rs` (stable,
//! `cargo test`), which replays the corpora and a deterministic pass of mutated inputs through
//! the same functions. Each check takes arbitrary bytes, panics when a property fails, and
//! returns quietly otherwise; an input the library rejects with an error is a pass.
//!
//! Checks that feed a stream in pieces read the split from the input: after any bytes of their
//! own, a count `k` (0 to 7) and then `k` piece sizes, taken in turn and cycled over the rest of
//! the input, which is the stream. No sizes means everything at once. A size of 0 is a pause:
//! a decode call with no new bytes, a read that is interrupted or not ready yet.

use std::future::Future;
use std::io::{self, Read};
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use sockit::acl::{AccessList, Cidr, Refusal};
use sockit::endpoint::Endpoint;
use sockit::framing::{DEFAULT_MAX_FRAME, FrameCodec, FrameError, Framing, LEN_HEADER};
use sockit::icmp::{self as icmp_wire, Echo, EchoRequest, Icmp};
use sockit::proto::{self, MAX_MESSAGE, Msg, MsgReader, ProtoError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

/// A check: takes any bytes, panics when a property fails.
pub type Check = fn(&[u8]);

/// Every check, by the name of its fuzz target (`fuzz/fuzz_targets/NAME.rs`) and corpus
/// (`fuzz/corpus/NAME/`).
pub const TARGETS: &[(&str, Check)] =
    &[("framing", framing), ("proto", proto), ("endpoint", endpoint), ("acl", acl), ("icmp", icmp)];

/// The `max_frame` values the framing check tries: the edges, small ones that long inputs
/// exceed, and the default.
const MAX_FRAMES: [usize; 7] = [0, 1, 3, 16, 1000, 65_536, DEFAULT_MAX_FRAME];

/// The smaller limit `read_msg_max` is checked with, as the handshake uses one.
const SMALL_MAX: usize = 200;

/// `FrameCodec`: the first byte picks the framing (`% 3`: raw, line, len) and `max_frame`
/// (`/ 3`, from [`MAX_FRAMES`]); then the split and the stream (see the module comment).
///
/// Properties: no panic; for `line` and `len`, feeding the stream in any pieces gives the frames
/// and the error that [`framing_model`] gives for the whole, every frame is at most `max_frame`
/// bytes (a line holds no `\n`), and the frames re-encode to the input (up to the error, and
/// with a `\n` added to a last line that had none); for `raw`, the frames are the input, none
/// empty; the buffer's capacity stays within what the stream and one maximal frame need (a
/// `len` header of 0xFFFFFFFF allocates nothing); `len` refuses to encode an oversized frame.
pub fn framing(data: &[u8]) {
    let Some((&config, rest)) = data.split_first() else { return };
    let framing = [Framing::Raw, Framing::Line, Framing::Len][usize::from(config) % 3];
    let max_frame = MAX_FRAMES[usize::from(config) / 3 % MAX_FRAMES.len()];
    let (mut pieces, stream) = Pieces::take(rest);

    let mut codec = FrameCodec::new(framing, max_frame);
    let mut buf = BytesMut::new();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut left = stream;
    // Generous on purpose (growth may double a buffer): what matters is that an announced
    // length over the maximum never reaches an allocation.
    let capacity_bound = 2 * (stream.len() + LEN_HEADER + max_frame) + 4096;
    let mut outcome = 'feed: loop {
        if let Some(n) = pieces.next() {
            let (piece, tail) = left.split_at(n.min(left.len()));
            buf.extend_from_slice(piece);
            left = tail;
        }
        loop {
            let decoded = codec.decode(&mut buf);
            assert!(buf.capacity() <= capacity_bound, "{framing} max {max_frame}: capacity {}", buf.capacity());
            match decoded {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => break 'feed Err(e.to_string()),
            }
        }
        if left.is_empty() {
            break Ok(());
        }
    };
    while outcome.is_ok() {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame.to_vec()),
            Ok(None) => break,
            Err(e) => outcome = Err(e.to_string()),
        }
    }

    if framing == Framing::Raw {
        assert_eq!(outcome, Ok(()), "raw framing has no errors");
        assert!(frames.iter().all(|f| !f.is_empty()), "raw framing gave an empty frame");
        assert_eq!(frames.concat(), stream, "raw frames are the stream");
        return;
    }
    let (want_frames, want_outcome) = framing_model(framing, max_frame, stream);
    assert_eq!(
        (&frames, &outcome),
        (&want_frames, &want_outcome),
        "{framing} max {max_frame}: pieces differ from whole"
    );
    let mut wire = BytesMut::new();
    for frame in &frames {
        assert!(frame.len() <= max_frame, "{framing}: a frame of {} bytes over the maximum {max_frame}", frame.len());
        assert!(framing != Framing::Line || !frame.contains(&b'\n'), "a line holds a newline");
        codec.encode(&frame[..], &mut wire).expect("a decoded frame encodes");
    }
    let unterminated = framing == Framing::Line && outcome.is_ok() && !stream.is_empty() && !stream.ends_with(b"\n");
    match (&outcome, unterminated) {
        (Ok(()), false) => assert_eq!(&wire[..], stream, "{framing}: frames do not re-encode to the input"),
        (Ok(()), true) => {
            assert_eq!(&wire[..], [stream, b"\n"].concat(), "line: the last line re-encodes with its newline")
        }
        (Err(_), _) => assert!(stream.starts_with(&wire), "{framing}: frames before the error are not a prefix"),
    }
    let too_big = FrameCodec::new(framing, max_frame).encode_into(stream, &mut BytesMut::new());
    assert_eq!(
        too_big.is_err(),
        framing == Framing::Len && stream.len() > max_frame,
        "{framing}: encoding {} bytes",
        stream.len()
    );
}

/// What `line` or `len` framing makes of a whole stream, from PROTOCOL.md rather than from the
/// codec: the frames up to the first error, and the error.
fn framing_model(framing: Framing, max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Result<(), String>) {
    let mut frames = Vec::new();
    let mut rest = stream;
    let error = loop {
        if rest.is_empty() {
            return (frames, Ok(()));
        }
        if framing == Framing::Line {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) if end <= max => {
                    frames.push(rest[..end].to_vec());
                    rest = &rest[end + 1..];
                }
                None if rest.len() <= max => {
                    frames.push(rest.to_vec());
                    return (frames, Ok(()));
                }
                _ => break FrameError::LineTooLong { max },
            }
        } else {
            if rest.len() < LEN_HEADER {
                break FrameError::Truncated { have: rest.len(), want: LEN_HEADER };
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if len as usize > max {
                break FrameError::TooLarge { len: len.into(), max };
            }
            let want = LEN_HEADER + len as usize;
            if rest.len() < want {
                break FrameError::Truncated { have: rest.len(), want };
            }
            frames.push(rest[LEN_HEADER..want].to_vec());
            rest = &rest[want..];
        }
    };
    (frames, Err(error.to_string()))
}

/// The `exec` and `files` messages: the whole input as one frame's payload for
/// [`Msg::decode`], then the split and a stream of `len` frames.
///
/// Properties: no panic; a message that decodes re-encodes with a correct length prefix and
/// decodes back to itself; [`MsgReader`] (with every read that is not ready abandoned, as a
/// `select!` does), `read_msg`, `read_msg_max` and `read_msg_sync` (with interrupted reads) read
/// the messages and the error that [`proto_model`] reads from the whole stream, whatever the
/// pieces.
pub fn proto(data: &[u8]) {
    message(data);
    let (pieces, stream) = Pieces::take(data);
    let want = proto_model(stream, MAX_MESSAGE);

    let mut reader = MsgReader::default();
    let mut src = PieceReader { data: stream, pieces: pieces.clone() };
    let mut got = Vec::new();
    loop {
        // Each poll is a fresh `next()`: one that is not ready is dropped, as a `select!` that
        // took another branch drops it.
        let Poll::Ready(step) = poll_once(reader.next(&mut src)) else { continue };
        let end = !matches!(step, Ok(Some(_)));
        got.push(step.map_err(|e| e.to_string()));
        if end {
            break;
        }
    }
    assert_eq!(got, want, "MsgReader");
    assert_eq!(reader.bytes_read(), (stream.len() - src.data.len()) as u64, "MsgReader::bytes_read");

    let mut src = PieceReader { data: stream, pieces: pieces.clone() };
    let got = read_all(|buf| block_on(proto::read_msg(&mut src, buf)));
    assert_eq!(got, want, "read_msg");

    let mut src = PieceReader { data: stream, pieces: pieces.clone() };
    let got = read_all(|buf| block_on(proto::read_msg_max(&mut src, buf, SMALL_MAX)));
    assert_eq!(got, proto_model(stream, SMALL_MAX), "read_msg_max");

    let mut src = PieceReader { data: stream, pieces };
    let got = read_all(|buf| proto::read_msg_sync(&mut src, buf));
    assert_eq!(got, want, "read_msg_sync");
}

/// One step of reading messages: a message, the clean end (`None`), or an error's text.
type Step = Result<Option<Msg>, String>;

/// Calls a reader of one message until the end or an error.
fn read_all(mut read: impl FnMut(&mut Vec<u8>) -> Result<Option<Msg>, ProtoError>) -> Vec<Step> {
    let mut buf = Vec::new();
    let mut steps = Vec::new();
    loop {
        let step = read(&mut buf).map_err(|e| e.to_string());
        let end = !matches!(step, Ok(Some(_)));
        steps.push(step);
        if end {
            return steps;
        }
    }
}

/// The messages of a whole stream as PROTOCOL.md sections 1 and 5 describe them, up to the end
/// or the first error; every frame's message is also put through [`message`].
fn proto_model(stream: &[u8], max: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            steps.push(Ok(None));
            return steps;
        }
        if rest.len() < 4 {
            steps.push(Err(ProtoError::Truncated.to_string()));
            return steps;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len as usize > max {
            steps.push(Err(ProtoError::TooLarge(len).to_string()));
            return steps;
        }
        let Some(frame) = rest.get(4..4 + len as usize) else {
            steps.push(Err(ProtoError::Truncated.to_string()));
            return steps;
        };
        message(frame);
        match Msg::decode(frame) {
            Ok(msg) => steps.push(Ok(Some(msg))),
            Err(e) => {
                steps.push(Err(e.to_string()));
                return steps;
            }
        }
        rest = &rest[4 + len as usize..];
    }
}

/// [`Msg::decode`] of one payload: an error, or a message that survives encoding.
fn message(frame: &[u8]) {
    let Ok(msg) = Msg::decode(frame) else { return };
    assert!(!msg.name().is_empty());
    // `encode` cuts an entry's name at 65,535 bytes by design (the u16 length; file names are
    // at most 255 bytes), and a name that was not UTF-8 can triple in length when decoded.
    if let Msg::Entries(entries) = &msg
        && entries.iter().any(|e| e.name.len() > usize::from(u16::MAX))
    {
        return;
    }
    let mut wire = BytesMut::new();
    msg.encode(&mut wire);
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(len, wire.len() - 4, "the length prefix of {}", msg.name());
    let again =
        Msg::decode(&wire[4..]).unwrap_or_else(|e| panic!("{} encodes to an undecodable frame: {e}", msg.name()));
    assert_eq!(again, msg, "decode(encode(m)) != m");
}

/// `Endpoint::parse` on the input as text (invalid UTF-8 replaced).
///
/// Properties: no panic; a parsed endpoint's Display parses back to the same endpoint, and its
/// style and locality can be asked (not for `fd://`, which asks the descriptor); an error keeps
/// the input, says what is wrong, and is one line when the input is.
pub fn endpoint(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Endpoint::parse(&text) {
        Ok(endpoint) => {
            let shown = endpoint.to_string();
            assert_eq!(Endpoint::parse(&shown), Ok(endpoint.clone()), "{text:?} is shown as {shown:?}");
            if !matches!(endpoint, Endpoint::Fd(_)) {
                let _ = (endpoint.style(), endpoint.is_local(), endpoint.is_unix());
            }
        }
        Err(e) => {
            assert_eq!(e.input, text);
            assert!(!e.problem.is_empty(), "{text:?}: an error without a problem");
            if !text.contains(['\n', '\r']) {
                assert!(!e.to_string().contains(['\n', '\r']), "{text:?}: the error is not one line");
            }
        }
    }
}

/// `Cidr` and `AccessList::parse_file` on the input as text (invalid UTF-8 replaced).
///
/// Properties: no panic; a parsed range's Display parses back equal, and the range holds its
/// first and last address and not the addresses just outside it; the rules of a file written
/// back one per line read back the same; with the rules taken alternately as allow and deny,
/// deny wins, an allowed address not denied is let in, and an IPv4 address is judged the same
/// as its IPv4-mapped IPv6 form; a file's error names the line.
pub fn acl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(cidr) = text.parse::<Cidr>() {
        range(cidr);
    }
    let rules = match AccessList::parse_file(&text) {
        Ok(rules) => rules,
        Err(e) => {
            assert!(e.starts_with("line "), "a file's error does not name the line: {e}");
            return;
        }
    };
    rules.iter().copied().for_each(range);
    let written: String = rules.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(AccessList::parse_file(&written), Ok(rules.clone()), "rules written back read back differently");

    let (allow, deny): (Vec<_>, Vec<_>) = rules.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let allow: Vec<Cidr> = allow.into_iter().map(|(_, r)| *r).collect();
    let deny: Vec<Cidr> = deny.into_iter().map(|(_, r)| *r).collect();
    let mut list = AccessList::default();
    allow.iter().for_each(|r| list.allow(*r));
    deny.iter().for_each(|r| list.deny(*r));
    assert_eq!(list.is_empty(), rules.is_empty());
    for ip in rules.iter().flat_map(|r| {
        let (first, last) = bounds(*r);
        [first, last]
    }) {
        let verdict = list.check(ip);
        if deny.iter().any(|d| d.contains(ip)) {
            assert!(
                matches!(verdict, Err(Refusal::Denied(d)) if d.contains(ip)),
                "{ip}: deny must win, got {verdict:?}"
            );
        } else if allow.iter().any(|a| a.contains(ip)) {
            assert_eq!(verdict, Ok(()), "{ip} is allowed and not denied");
        } else {
            assert_eq!(verdict, Err(Refusal::NotAllowed), "{ip} is in no allow range");
        }
        if let IpAddr::V4(v4) = ip {
            assert_eq!(list.check(IpAddr::V6(v4.to_ipv6_mapped())), verdict, "{ip} and its mapped form differ");
        }
    }
}

/// A parsed range: its Display parses back equal, and it holds its addresses and not the ones
/// just outside it. (An IPv4-mapped IPv6 address is judged as IPv4, so an IPv6 range never
/// holds one: `::/80` ends just before `::ffff:0.0.0.0`.)
fn range(cidr: Cidr) {
    let shown = cidr.to_string();
    assert_eq!(shown.parse::<Cidr>(), Ok(cidr), "{shown} does not parse back");
    let (first, last) = bounds(cidr);
    let (low, high) = (number(first), number(last));
    let top = if first.is_ipv4() { u128::from(u32::MAX) } else { u128::MAX };
    let inside = [Some(low), Some(high)];
    let outside = [low.checked_sub(1), high.checked_add(1).filter(|&a| a <= top)];
    for (addresses, held) in [(inside, true), (outside, false)] {
        for ip in addresses.into_iter().flatten().map(|a| address(a, first.is_ipv4())) {
            if let IpAddr::V6(v6) = ip
                && v6.to_ipv4_mapped().is_some()
            {
                continue;
            }
            assert_eq!(cidr.contains(ip), held, "{shown} contains {ip}");
        }
    }
}

/// The first and last address of a range, from its Display (`ADDRESS/PREFIX`).
fn bounds(cidr: Cidr) -> (IpAddr, IpAddr) {
    let shown = cidr.to_string();
    let parsed = shown.split_once('/').and_then(|(a, p)| Some((a.parse::<IpAddr>().ok()?, p.parse::<u32>().ok()?)));
    let (first, prefix) = parsed.unwrap_or_else(|| panic!("{shown} is not ADDRESS/PREFIX"));
    let bits = if first.is_ipv4() { 32 } else { 128 };
    let host_mask = u128::MAX.checked_shr(128 - (bits - prefix)).unwrap_or(0);
    (first, address(number(first) | host_mask, first.is_ipv4()))
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

fn address(n: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) }
}

/// `sockit::icmp`'s parsers: the first byte picks one (`% 3`: IPv4 as a raw socket delivers it,
/// with the IP header; IPv4 as an ICMP datagram socket does, without; ICMPv6), and the rest is
/// the datagram.
///
/// Properties: no panic (the parsers are total); a parsed message is the last `len` bytes of the
/// datagram (all of it without an IP header), at least a header long, with an IPv4 header
/// exactly when one was asked for, and with a valid checksum (IPv4); an echo's payload is the
/// datagram's tail; errors and ICMP error messages display as one line;
/// an echo request built from a parsed echo's identifier, sequence and payload has a valid
/// checksum (IPv4) and parses back to the same echo.
pub fn icmp(data: &[u8]) {
    let Some((&which, datagram)) = data.split_first() else { return };
    let (with_ip, v6) = (which % 3 == 0, which % 3 == 2);
    let parsed = if v6 { icmp_wire::parse_v6(datagram) } else { icmp_wire::parse_v4(datagram, with_ip) };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "{e:?} is not one line");
            return;
        }
    };
    assert!(icmp_wire::HEADER_LEN <= parsed.len && parsed.len <= datagram.len(), "a message of {} bytes", parsed.len);
    assert_eq!(parsed.ip.is_some(), with_ip, "an IPv4 header where none was asked for, or none where one was");
    assert!(with_ip || parsed.len == datagram.len(), "without an IP header the message is the whole datagram");
    let message = &datagram[datagram.len() - parsed.len..];
    assert!(v6 || icmp_wire::checksum(message) == 0, "an ICMP message with a bad checksum was accepted");
    match parsed.icmp {
        Icmp::EchoReply(echo) | Icmp::EchoRequest(echo) => {
            assert!(datagram.ends_with(echo.payload), "an echo's payload is not the datagram's tail");
            assert_eq!(echo.payload.len() + icmp_wire::HEADER_LEN, parsed.len);
            let request = EchoRequest { id: echo.id, seq: echo.seq, payload: echo.payload };
            let wire = if v6 { request.encode_v6() } else { request.encode_v4() };
            if !v6 {
                assert_eq!(icmp_wire::checksum(&wire), 0, "an encoded request's checksum");
            }
            let again = if v6 { icmp_wire::parse_v6(&wire) } else { icmp_wire::parse_v4(&wire, false) };
            let want = Icmp::EchoRequest(Echo { id: echo.id, seq: echo.seq, payload: echo.payload });
            assert_eq!(again.map(|p| p.icmp), Ok(want), "a request built from a parsed echo");
        }
        Icmp::Error(e) => assert!(!e.to_string().contains('\n'), "{e:?} does not display as one line"),
        Icmp::Other { .. } => {}
    }
}

/// Piece sizes for feeding a stream (see the module comment).
#[derive(Debug, Clone)]
struct Pieces<'a> {
    sizes: &'a [u8],
    next: usize,
}

impl<'a> Pieces<'a> {
    /// Takes the count and the sizes from the front of `data`; returns them and the stream.
    fn take(data: &'a [u8]) -> (Pieces<'a>, &'a [u8]) {
        let Some((&count, rest)) = data.split_first() else { return (Pieces { sizes: &[], next: 0 }, data) };
        let (sizes, stream) = rest.split_at(usize::from(count % 8).min(rest.len()));
        // Only pauses would never finish: that is everything at once too.
        let sizes = if sizes.iter().all(|&s| s == 0) { &[][..] } else { sizes };
        (Pieces { sizes, next: 0 }, stream)
    }

    /// The next piece's size; `None` is a pause.
    fn next(&mut self) -> Option<usize> {
        if self.sizes.is_empty() {
            return Some(usize::MAX);
        }
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        (size != 0).then_some(usize::from(size))
    }
}

/// A stream that delivers its bytes in pieces, blocking (a pause is `Interrupted`) or async (a
/// pause is `Pending`, with a wake-up).
struct PieceReader<'a> {
    data: &'a [u8],
    pieces: Pieces<'a>,
}

impl<'a> PieceReader<'a> {
    fn piece(&mut self, room: usize) -> Option<&'a [u8]> {
        let n = self.pieces.next()?.min(room).min(self.data.len());
        let (piece, rest) = self.data.split_at(n);
        self.data = rest;
        Some(piece)
    }
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let piece = self.piece(buf.len()).ok_or(io::ErrorKind::Interrupted)?;
        buf[..piece.len()].copy_from_slice(piece);
        Ok(piece.len())
    }
}

impl AsyncRead for PieceReader<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.piece(buf.remaining()) {
            Some(piece) => {
                buf.put_slice(piece);
                Poll::Ready(Ok(()))
            }
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// Polls a future once.
fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    pin!(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls a future until it is ready. Only for futures over [`PieceReader`], which is ready again
/// right after a pause.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return out;
        }
    }
}
