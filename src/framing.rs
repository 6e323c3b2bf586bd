//! Framing: where one message ends and the next begins on a byte stream.
//!
//! A stream socket delivers bytes, not messages; the seeds' "sticky packets" and hanging empty
//! messages come from pretending otherwise. [`FrameCodec`] makes the boundary explicit in one of
//! three ways ([`Framing`]): `raw` (whatever one read returns, as the seed programs and netcat
//! behave), `line` (up to a `\n`), and `len` (a 4-byte big-endian length, then that many bytes;
//! an empty message is legal). The codec is sans-IO: it works on a buffer and never reads or
//! writes a socket itself, and it enforces a maximum frame length before allocating anything for
//! a frame. PROTOCOL.md describes the wire formats.

use std::fmt;
use std::io;
use std::ops::Range;
use std::str::FromStr;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The default largest frame (line or `len` payload) a peer may send: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// The size of the `len` framing header.
pub const LEN_HEADER: usize = 4;

/// How messages are delimited on a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No framing: each read is a message. Binary-safe, but boundaries are only as reliable as
    /// the peer's timing (the seeds' way).
    #[default]
    Raw,
    /// A message is the bytes up to a `\n`, which is not part of it. A final line without `\n`
    /// before the end of the stream is still a message.
    Line,
    /// A 4-byte big-endian unsigned length, then that many bytes. Zero is a legal length.
    Len,
}

impl Framing {
    /// All framings with their names, for help texts and parsing.
    pub const ALL: [(Framing, &'static str); 3] =
        [(Framing::Raw, "raw"), (Framing::Line, "line"), (Framing::Len, "len")];

    /// Whether an empty message can be sent and recognised under this framing.
    pub fn carries_empty_messages(self) -> bool {
        !matches!(self, Framing::Raw)
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Framing::ALL.iter().find(|(k, _)| k == self).map(|(_, n)| *n).unwrap_or("?");
        f.write_str(name)
    }
}

impl FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Framing::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("unknown framing '{s}' (choose raw, line or len)"))
    }
}

/// Why a frame could not be decoded or encoded. Each variant ends the connection: after a bad
/// frame the stream position can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A `len` header announced more than the maximum; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// More than the maximum arrived without a `\n`.
    #[error("line longer than the maximum of {max} bytes")]
    LineTooLong {
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended part-way through a `len` frame.
    #[error("stream ended in the middle of a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        have: usize,
        /// Bytes the frame needed.
        want: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes and encodes messages under one [`Framing`], with a maximum frame length.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    framing: Framing,
    max_frame: usize,
    /// For `line`: how far the buffer was already searched for `\n`, so a long line arriving in
    /// many small reads is scanned once, not once per read.
    scanned: usize,
}

impl FrameCodec {
    /// A codec for `framing` that refuses frames longer than `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> FrameCodec {
        FrameCodec { framing, max_frame, scanned: 0 }
    }

    /// The framing this codec speaks.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Appends `msg`, framed, to `dst`. Fails only for a `len` message over the maximum.
    pub fn encode_into(&self, msg: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        match self.framing {
            Framing::Raw => dst.extend_from_slice(msg),
            Framing::Line => {
                dst.reserve(msg.len() + 1);
                dst.extend_from_slice(msg);
                dst.put_u8(b'\n');
            }
            Framing::Len => {
                if msg.len() > self.max_frame {
                    return Err(FrameError::TooLarge { len: msg.len() as u64, max: self.max_frame });
                }
                dst.reserve(LEN_HEADER + msg.len());
                dst.put_u32(msg.len() as u32);
                dst.extend_from_slice(msg);
            }
        }
        Ok(())
    }
}

/// The most a `len` frame's header makes the decoder reserve ahead of the bytes that arrived;
/// a larger frame's buffer grows as its payload comes in.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Where the next message lies in a buffer, found without moving or copying a byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The message within the buffer, without its framing.
    pub msg: Range<usize>,
    /// How much of the buffer it takes, framing included: advance past this once it is done.
    pub consumed: usize,
}

impl Found {
    /// Takes the message out of `src`, as [`Decoder::decode`] returns it.
    fn take(self, src: &mut BytesMut) -> BytesMut {
        let mut msg = src.split_to(self.consumed);
        msg.advance(self.msg.start);
        msg.truncate(self.msg.len());
        msg
    }
}

impl FrameCodec {
    /// Finds the next whole message at the start of `src` and leaves it there: `None` when more
    /// bytes are needed. With `eof` no more will come, so what is left is the last message
    /// (`raw`, and `line` without its newline) or an error (a truncated `len` frame). A server
    /// answers the message in place and then advances `src` by [`Found::consumed`], which,
    /// unlike [`Decoder::decode`], never allocates. `src` is `&mut` because a `len` header makes
    /// room for the frame it announces (at most 64 KiB ahead).
    pub fn find(&mut self, src: &mut BytesMut, eof: bool) -> Result<Option<Found>, FrameError> {
        let found = match self.framing {
            Framing::Raw => (!src.is_empty()).then(|| Found { msg: 0..src.len(), consumed: src.len() }),
            Framing::Line => {
                // A buffer that shrank is not the one scanned before (the caller cleared it, or
                // decodes another stream): search it whole.
                if self.scanned > src.len() {
                    self.scanned = 0;
                }
                if let Some(i) = src[self.scanned..].iter().position(|&b| b == b'\n') {
                    let end = self.scanned + i;
                    if end > self.max_frame {
                        return Err(FrameError::LineTooLong { max: self.max_frame });
                    }
                    self.scanned = 0;
                    return Ok(Some(Found { msg: 0..end, consumed: end + 1 }));
                }
                if src.len() > self.max_frame {
                    return Err(FrameError::LineTooLong { max: self.max_frame });
                }
                self.scanned = src.len();
                None
            }
            Framing::Len => {
                if src.len() < LEN_HEADER {
                    None
                } else {
                    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                    if len > self.max_frame {
                        return Err(FrameError::TooLarge { len: len as u64, max: self.max_frame });
                    }
                    if src.len() < LEN_HEADER + len {
                        // Room for what is likely to come next, not for everything the header
                        // promises: a header alone must not make the peer's frame ours to hold.
                        src.reserve((LEN_HEADER + len - src.len()).min(RESERVE_AHEAD));
                        None
                    } else {
                        Some(Found { msg: LEN_HEADER..LEN_HEADER + len, consumed: LEN_HEADER + len })
                    }
                }
            }
        };
        if found.is_some() || !eof || src.is_empty() {
            return Ok(found);
        }
        match self.framing {
            // A last line without its newline is still a line.
            Framing::Raw | Framing::Line => {
                self.scanned = 0;
                Ok(Some(Found { msg: 0..src.len(), consumed: src.len() }))
            }
            Framing::Len => {
                let want = if src.len() < LEN_HEADER {
                    LEN_HEADER
                } else {
                    LEN_HEADER + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                };
                Err(FrameError::Truncated { have: src.len(), want })
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    /// Returns the next whole message in `src`, `None` when more bytes are needed. For `raw`,
    /// everything buffered is one message.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        Ok(self.find(src, false)?.map(|found| found.take(src)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        Ok(self.find(src, true)?.map(|found| found.take(src)))
    }
}

/// Any bytes: `&[u8]`, `&[u8; N]`, `Vec<u8>`, `Bytes`, so that `Framed::send(b"hi")` works.
impl<T: AsRef<[u8]>> Encoder<T> for FrameCodec {
    type Error = FrameError;
    fn encode(&mut self, msg: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_into(msg.as_ref(), dst)
    }
}

/// Takes the next text message from an unframed stream buffer, for services that think in
/// lines: a whole line if the buffer holds a `\n` (returned without it, with its terminator
/// `"\n"` or `"\r\n"`), otherwise everything buffered (with no terminator), as [`text_lines`]
/// splits a chunk, but one line at a time so that answers can be written out in between.
pub fn next_text_line(src: &mut BytesMut) -> Option<(BytesMut, &'static [u8])> {
    find_text_line(src).map(|(found, term)| (found.take(src), term))
}

/// Finds the next text message in an unframed buffer as [`next_text_line`] takes it, in
/// place: the line without its terminator, and the terminator.
pub fn find_text_line(src: &[u8]) -> Option<(Found, &'static [u8])> {
    if src.is_empty() {
        return None;
    }
    Some(match src.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && src[i - 1] == b'\r' => (Found { msg: 0..i - 1, consumed: i + 1 }, b"\r\n"),
        Some(i) => (Found { msg: 0..i, consumed: i + 1 }, b"\n"),
        None => (Found { msg: 0..src.len(), consumed: src.len() }, b""),
    })
}

/// Splits a raw chunk into lines for services that think in lines (`qa`, `reply`, `print`)
/// when no framing delimits messages: each `\n`-terminated piece is one message, and a trailing
/// piece without `\n` is one more. Each item is the range of the text without its terminator and
/// the terminator (`"\r\n"`, `"\n"` or `""`), so an answer can end the way its question did:
/// netcat sends lines and gets lines back, the seed clients send bare text and get bare text.
pub fn text_lines(chunk: &[u8]) -> impl Iterator<Item = (Range<usize>, &'static [u8])> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= chunk.len() {
            return None;
        }
        let item = match chunk[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let nl = start + i;
                let (end, term): (usize, &'static [u8]) =
                    if nl > start && chunk[nl - 1] == b'\r' { (nl - 1, b"\r\n") } else { (nl, b"\n") };
                let item = (start..end, term);
                start = nl + 1;
                item
            }
            None => {
                let item = (start..chunk.len(), &b""[..]);
                start = chunk.len();
                item
            }
        };
        Some(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a fresh codec in pieces of `step` bytes and collects the messages, the
    /// way a socket delivering arbitrary splits would.
    fn decode_all(framing: Framing, max: usize, input: &[u8], step: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut codec = FrameCodec::new(framing, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(m) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
                out.push(m.to_vec());
            }
        }
        while let Some(m) = codec.decode_eof(&mut buf).map_err(|e| e.to_string())? {
            out.push(m.to_vec());
        }
        Ok(out)
    }

    /// As `decode_all`, through `find` and `advance`, the way the server reads messages in place.
    fn find_all(framing: Framing, max: usize, input: &[u8], step: usize) -> Result<Vec<Vec<u8>>, String> {
        fn take(codec: &mut FrameCodec, buf: &mut BytesMut, eof: bool, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
            while let Some(found) = codec.find(buf, eof).map_err(|e| e.to_string())? {
                out.push(buf[found.msg].to_vec());
                buf.advance(found.consumed);
            }
            Ok(())
        }
        let mut codec = FrameCodec::new(framing, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            take(&mut codec, &mut buf, false, &mut out)?;
        }
        take(&mut codec, &mut buf, true, &mut out)?;
        Ok(out)
    }

    fn check(framing: Framing, input: &[u8], expected: Result<Vec<&[u8]>, &str>) {
        // Raw framing's messages depend on how the bytes were split, so it is checked whole.
        let steps: &[usize] = if framing == Framing::Raw { &[usize::MAX] } else { &[1, 2, 3, 7, usize::MAX] };
        for &step in steps {
            let got = decode_all(framing, 16, input, step);
            assert_eq!(
                find_all(framing, 16, input, step),
                got,
                "find and decode differ: {framing} {input:?} step {step}"
            );
            match &expected {
                Ok(msgs) => {
                    let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
                    assert_eq!(got, Ok(want), "{framing} {input:?} step {step}");
                }
                Err(fragment) => {
                    let err = got.expect_err("expected an error");
                    assert!(err.contains(fragment), "{framing} {input:?} step {step}: {err}");
                }
            }
        }
    }

    #[test]
    fn line_framing() {
        check(Framing::Line, b"", Ok(vec![]));
        check(Framing::Line, b"a\nbc\n", Ok(vec![b"a", b"bc"]));
        check(Framing::Line, b"\n\n", Ok(vec![b"", b""]));
        check(Framing::Line, b"a\r\n", Ok(vec![b"a\r"]));
        check(Framing::Line, b"tail", Ok(vec![b"tail"]));
        check(Framing::Line, b"x\ntail", Ok(vec![b"x", b"tail"]));
        check(Framing::Line, b"0123456789abcdef\n", Ok(vec![b"0123456789abcdef"]));
        check(Framing::Line, b"0123456789abcdefg\n", Err("line longer than the maximum of 16 bytes"));
    }

    /// A codec handed a buffer shorter than the one it searched before (the caller cleared it
    /// after a partial line) searches the new one whole instead of slicing past its end.
    #[test]
    fn a_line_codec_survives_a_buffer_that_shrank() {
        let mut codec = FrameCodec::new(Framing::Line, 64);
        let mut buf = BytesMut::from(&b"partial line"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.clear();
        buf.extend_from_slice(b"ok\n");
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b"ok"[..]));
    }

    #[test]
    fn any_bytes_encode() {
        let mut codec = FrameCodec::new(Framing::Len, 64);
        let mut dst = BytesMut::new();
        codec.encode(b"ab", &mut dst).unwrap();
        codec.encode(vec![b'c'], &mut dst).unwrap();
        codec.encode(bytes::Bytes::from_static(b""), &mut dst).unwrap();
        assert_eq!(&dst[..], b"\0\0\0\x02ab\0\0\0\x01c\0\0\0\0");
    }

    #[test]
    fn len_framing() {
        check(Framing::Len, b"", Ok(vec![]));
        check(Framing::Len, b"\0\0\0\0", Ok(vec![b""]));
        check(Framing::Len, b"\0\0\0\x03abc\0\0\0\0\0\0\0\x01z", Ok(vec![b"abc", b"", b"z"]));
        check(Framing::Len, b"\0\0\0\x100123456789abcdef", Ok(vec![b"0123456789abcdef"]));
        check(Framing::Len, b"\0\0\0\x11", Err("frame of 17 bytes exceeds the maximum of 16 bytes"));
        check(Framing::Len, b"\xff\xff\xff\xff", Err("frame of 4294967295 bytes exceeds the maximum"));
        check(Framing::Len, b"\0\0\0\x05ab", Err("stream ended in the middle of a frame (6 of 9 bytes)"));
        check(Framing::Len, b"\0\0", Err("stream ended in the middle of a frame (2 of 4 bytes)"));
    }

    #[test]
    fn raw_framing() {
        check(Framing::Raw, b"", Ok(vec![]));
        check(Framing::Raw, b"anything\n\0at all", Ok(vec![b"anything\n\0at all"]));
    }

    #[test]
    fn oversized_len_header_allocates_nothing() {
        let mut codec = FrameCodec::new(Framing::Len, 1024);
        let mut buf = BytesMut::from(&b"\x7f\xff\xff\xff"[..]);
        let before = buf.capacity();
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { .. })));
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn encode_round_trips() {
        for framing in [Framing::Line, Framing::Len] {
            let codec = FrameCodec::new(framing, 16);
            let mut wire = BytesMut::new();
            for m in [&b"one"[..], b"", b"three"] {
                codec.encode_into(m, &mut wire).unwrap();
            }
            assert_eq!(decode_all(framing, 16, &wire, 1).unwrap(), vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        }
        let codec = FrameCodec::new(Framing::Len, 4);
        assert!(codec.encode_into(b"12345", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn text_lines_keep_terminators() {
        let lines = |chunk: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            text_lines(chunk).map(|(r, t)| (&chunk[r], t)).collect()
        };
        assert_eq!(lines(b"a\nb\r\nc"), vec![(&b"a"[..], &b"\n"[..]), (b"b", b"\r\n"), (b"c", b"")]);
        assert_eq!(lines(b"how are u"), vec![(&b"how are u"[..], &b""[..])]);
        assert_eq!(lines(b"\n"), vec![(&b""[..], &b"\n"[..])]);
        assert_eq!(lines(b"\r\n\r"), vec![(&b""[..], &b"\r\n"[..]), (b"\r", b"")]);
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn next_text_line_takes_one_line_or_the_rest() {
        let mut buf = BytesMut::from(&b"a\nb\r\ntail"[..]);
        let mut got = Vec::new();
        while let Some((line, term)) = next_text_line(&mut buf) {
            got.push((line.to_vec(), term));
        }
        assert_eq!(got, vec![(b"a".to_vec(), &b"\n"[..]), (b"b".to_vec(), &b"\r\n"[..]), (b"tail".to_vec(), &b""[..])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn framing_names() {
        for (framing, name) in Framing::ALL {
            assert_eq!(framing.to_string(), name);
            assert_eq!(name.parse::<Framing>(), Ok(framing));
        }
        assert!("bogus".parse::<Framing>().unwrap_err().contains("choose raw, line or len"));
    }
}
