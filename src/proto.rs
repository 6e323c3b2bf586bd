//! The message protocol of the `exec` and `files` services, and of the handshake `spawn` uses too
//! (PROTOCOL.md, sections 5 to 7 and 9).
//!
//! Every message is one `len` frame (a 4-byte big-endian length, then that many bytes) whose
//! first byte says what it is. File contents are the one exception: after a `FILE` or `FROM`
//! message the announced number of raw bytes follows, unframed, so that both ends can move them
//! with `sendfile` and `splice`. This module only turns messages into bytes and back; reading and
//! writing them is in [`read_msg`] and [`write_msg`] (async) and their `_sync` twins (blocking),
//! which read exactly one frame and never a byte further.

use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::fsroot::{Entry, EntryKind};

/// The protocol version a sockit server announces in `HELLO`.
pub const VERSION: u8 = 1;
/// The largest message either side accepts (file contents are not messages).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How much process output one `STDOUT` or `STDERR` message carries at most.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// The length of nonces, MACs and BLAKE3 hashes.
pub const HASH_LEN: usize = 32;

/// The length of a `HELLO` frame's payload: type, version, service and auth bytes, and the
/// nonce (what its length prefix says).
pub(crate) const HELLO_LEN: usize = 4 + HASH_LEN;

/// A 32-byte value: a nonce, a MAC or a BLAKE3 hash.
pub type Hash = [u8; HASH_LEN];

/// The message type bytes.
pub mod kind {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0x01;
    pub const AUTH: u8 = 0x02;
    pub const WELCOME: u8 = 0x03;
    pub const EXEC: u8 = 0x10;
    pub const STDIN: u8 = 0x11;
    pub const STDIN_EOF: u8 = 0x12;
    pub const SIGNAL: u8 = 0x13;
    pub const STARTED: u8 = 0x20;
    pub const STDOUT: u8 = 0x21;
    pub const STDERR: u8 = 0x22;
    pub const EXIT: u8 = 0x23;
    pub const LIST: u8 = 0x30;
    pub const ENTRIES: u8 = 0x31;
    pub const END: u8 = 0x32;
    pub const GET: u8 = 0x40;
    pub const FILE: u8 = 0x41;
    pub const DONE: u8 = 0x43;
    pub const PUT: u8 = 0x50;
    pub const READY: u8 = 0x51;
    pub const FROM: u8 = 0x52;
    pub const STORED: u8 = 0x53;
    pub const ERROR: u8 = 0x7F;
}

/// Which service a server runs, as `HELLO` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Remote commands.
    Exec = 1,
    /// File transfer.
    Files = 2,
    /// A program wired to the connection; only the handshake is in messages.
    Spawn = 3,
}

impl ServiceKind {
    fn from_byte(b: u8) -> Option<ServiceKind> {
        match b {
            1 => Some(ServiceKind::Exec),
            2 => Some(ServiceKind::Files),
            3 => Some(ServiceKind::Spawn),
            _ => None,
        }
    }

    /// The service's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Exec => "exec",
            ServiceKind::Files => "files",
            ServiceKind::Spawn => "spawn",
        }
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// The time limit ran out and the server killed it.
    TimedOut,
}

impl ExitStatus {
    /// The exit code a shell would give: the code, 128 + the signal, or 124 for a timeout (as
    /// `timeout(1)` does).
    pub fn shell_code(self) -> u8 {
        match self {
            ExitStatus::Code(c) => (c & 0xff) as u8,
            ExitStatus::Signal(s) => 128i32.saturating_add(s).clamp(0, 255) as u8,
            ExitStatus::TimedOut => 124,
        }
    }
}

/// Error codes carried by `ERROR`. Codes from 16 on are file-system errors
/// ([`crate::fsroot::FsError::code`]).
pub mod code {
    #![allow(missing_docs)]
    /// Anything else; the message says what.
    pub const FAILED: u8 = 1;
    /// The token or the peer's uid was refused.
    pub const AUTH: u8 = 2;
    /// A message that is malformed, unknown or out of turn.
    pub const PROTOCOL: u8 = 3;
    /// The command could not be started because it was not found.
    pub const NOT_FOUND: u8 = 4;
    /// The command could not be started because it is not executable.
    pub const NOT_EXECUTABLE: u8 = 5;
    /// The whole file did not hash to the announced BLAKE3 value.
    pub const CORRUPT: u8 = 6;
}

/// One protocol message. Each variant's line says what its fields hold; PROTOCOL.md gives
/// their encoding, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Msg {
    /// Server, first: who it is, whether it wants a token, and a fresh nonce.
    Hello { version: u8, service: ServiceKind, auth: bool, nonce: Hash },
    /// Client: its own nonce and the MAC proving it holds the token.
    Auth { nonce: Hash, mac: Hash },
    /// Server: the client is in; the proof that the server holds the token too. (Not sent when
    /// `HELLO` asked for no token.)
    Welcome { proof: Hash },
    /// Client: run a command.
    Exec { argv: Vec<Vec<u8>>, timeout_ms: u32, stdin: bool },
    /// Client: bytes for the command's standard input.
    Stdin(Bytes),
    /// Client: the command's standard input ends.
    StdinEof,
    /// Client: deliver a signal to the command's process group.
    Signal(u8),
    /// Server: the command runs, with this process id.
    Started { pid: u32 },
    /// Server: bytes the command wrote to standard output.
    Stdout(Bytes),
    /// Server: bytes the command wrote to standard error.
    Stderr(Bytes),
    /// Server: the command is over, and all its output has been sent.
    Exit(ExitStatus),
    /// Client: list a directory.
    List { path: String },
    /// Server: some entries of the directory; more may follow until `END`.
    Entries(Vec<Entry>),
    /// Server: the listing is complete.
    End,
    /// Client: send me a file, from `offset` if my first `offset` bytes hash to `prefix`.
    Get { path: String, offset: u64, prefix: Hash },
    /// Server: the file has `size` bytes; bytes `start..size` follow raw, then `DONE`.
    File { size: u64, start: u64 },
    /// Either side, after the raw bytes: the BLAKE3 hash of the whole file.
    Done { hash: Hash },
    /// Client: I will store a file of `size` bytes under `path`.
    Put { path: String, size: u64, resume: bool },
    /// Server: I already hold `have` bytes of it, hashing to `prefix`.
    Ready { have: u64, prefix: Hash },
    /// Client: bytes `start..size` follow raw, then `DONE`.
    From { start: u64 },
    /// Server: the file is verified and published.
    Stored,
    /// Either side: the request failed (the connection stays usable unless said otherwise).
    Error { code: u8, message: String },
}

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer closed in the middle of a message.
    #[error("the peer closed the connection in the middle of a message")]
    Truncated,
    /// The frame was longer than [`MAX_MESSAGE`].
    #[error("a {0}-byte message exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(u32),
    /// The frame was not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> ProtoError {
    ProtoError::Malformed(what.into())
}

impl Msg {
    /// Appends the message, with its length prefix, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Msg::Hello { version, service, auth, nonce } => {
                out.put_u8(kind::HELLO);
                out.put_u8(*version);
                out.put_u8(*service as u8);
                out.put_u8(u8::from(*auth));
                out.put_slice(nonce);
            }
            Msg::Auth { nonce, mac } => {
                out.put_u8(kind::AUTH);
                out.put_slice(nonce);
                out.put_slice(mac);
            }
            Msg::Welcome { proof } => {
                out.put_u8(kind::WELCOME);
                out.put_slice(proof);
            }
            Msg::Exec { argv, timeout_ms, stdin } => {
                out.put_u8(kind::EXEC);
                out.put_u32(*timeout_ms);
                out.put_u8(u8::from(*stdin));
                for (i, arg) in argv.iter().enumerate() {
                    if i > 0 {
                        out.put_u8(0);
                    }
                    out.put_slice(arg);
                }
            }
            Msg::Stdin(data) => {
                out.put_u8(kind::STDIN);
                out.put_slice(data);
            }
            Msg::StdinEof => out.put_u8(kind::STDIN_EOF),
            Msg::Signal(sig) => {
                out.put_u8(kind::SIGNAL);
                out.put_u8(*sig);
            }
            Msg::Started { pid } => {
                out.put_u8(kind::STARTED);
                out.put_u32(*pid);
            }
            Msg::Stdout(data) => {
                out.put_u8(kind::STDOUT);
                out.put_slice(data);
            }
            Msg::Stderr(data) => {
                out.put_u8(kind::STDERR);
                out.put_slice(data);
            }
            Msg::Exit(status) => {
                out.put_u8(kind::EXIT);
                let (how, value) = match status {
                    ExitStatus::Code(c) => (0, *c),
                    ExitStatus::Signal(s) => (1, *s),
                    ExitStatus::TimedOut => (2, 0),
                };
                out.put_u8(how);
                out.put_i32(value);
            }
            Msg::List { path } => {
                out.put_u8(kind::LIST);
                out.put_slice(path.as_bytes());
            }
            Msg::Entries(entries) => {
                out.put_u8(kind::ENTRIES);
                for e in entries {
                    out.put_u8(match e.kind {
                        EntryKind::File => b'f',
                        EntryKind::Dir => b'd',
                        EntryKind::Symlink => b'l',
                        EntryKind::Other => b'o',
                    });
                    out.put_u64(e.size);
                    out.put_i64(e.mtime);
                    let name = e.name.as_bytes();
                    let len = name.len().min(u16::MAX as usize);
                    out.put_u16(len as u16);
                    out.put_slice(&name[..len]);
                }
            }
            Msg::End => out.put_u8(kind::END),
            Msg::Get { path, offset, prefix } => {
                out.put_u8(kind::GET);
                out.put_u64(*offset);
                out.put_slice(prefix);
                out.put_slice(path.as_bytes());
            }
            Msg::File { size, start } => {
                out.put_u8(kind::FILE);
                out.put_u64(*size);
                out.put_u64(*start);
            }
            Msg::Done { hash } => {
                out.put_u8(kind::DONE);
                out.put_slice(hash);
            }
            Msg::Put { path, size, resume } => {
                out.put_u8(kind::PUT);
                out.put_u64(*size);
                out.put_u8(u8::from(*resume));
                out.put_slice(path.as_bytes());
            }
            Msg::Ready { have, prefix } => {
                out.put_u8(kind::READY);
                out.put_u64(*have);
                out.put_slice(prefix);
            }
            Msg::From { start } => {
                out.put_u8(kind::FROM);
                out.put_u64(*start);
            }
            Msg::Stored => out.put_u8(kind::STORED),
            Msg::Error { code, message } => {
                out.put_u8(kind::ERROR);
                out.put_u8(*code);
                out.put_slice(message.as_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Parses one frame's payload (without its length prefix).
    pub fn decode(frame: &[u8]) -> Result<Msg, ProtoError> {
        let (&kind, body) = frame.split_first().ok_or_else(|| malformed("an empty message"))?;
        let mut r = Body { rest: body };
        let msg = match kind {
            kind::HELLO => {
                let version = r.u8()?;
                let service = ServiceKind::from_byte(r.u8()?).ok_or_else(|| malformed("unknown service in HELLO"))?;
                let auth = r.flag()?;
                Msg::Hello { version, service, auth, nonce: r.hash()? }
            }
            kind::AUTH => Msg::Auth { nonce: r.hash()?, mac: r.hash()? },
            kind::WELCOME => Msg::Welcome { proof: r.hash()? },
            kind::EXEC => {
                let timeout_ms = r.u32()?;
                let stdin = r.flag()?;
                let rest = r.take_rest();
                if rest.is_empty() {
                    return Err(malformed("EXEC without a command"));
                }
                Msg::Exec { argv: rest.split(|&b| b == 0).map(<[u8]>::to_vec).collect(), timeout_ms, stdin }
            }
            kind::STDIN => Msg::Stdin(Bytes::copy_from_slice(r.take_rest())),
            kind::STDIN_EOF => Msg::StdinEof,
            kind::SIGNAL => Msg::Signal(r.u8()?),
            kind::STARTED => Msg::Started { pid: r.u32()? },
            kind::STDOUT => Msg::Stdout(Bytes::copy_from_slice(r.take_rest())),
            kind::STDERR => Msg::Stderr(Bytes::copy_from_slice(r.take_rest())),
            kind::EXIT => {
                let how = r.u8()?;
                let value = r.u32()? as i32;
                Msg::Exit(match how {
                    0 => ExitStatus::Code(value),
                    1 => ExitStatus::Signal(value),
                    2 => ExitStatus::TimedOut,
                    _ => return Err(malformed("unknown kind of EXIT")),
                })
            }
            kind::LIST => Msg::List { path: r.text()? },
            kind::ENTRIES => {
                let mut entries = Vec::new();
                while !r.rest.is_empty() {
                    let kind = match r.u8()? {
                        b'f' => EntryKind::File,
                        b'd' => EntryKind::Dir,
                        b'l' => EntryKind::Symlink,
                        _ => EntryKind::Other,
                    };
                    let size = r.u64()?;
                    let mtime = r.u64()? as i64;
                    let len = r.u16()? as usize;
                    let name = String::from_utf8_lossy(r.bytes(len)?).into_owned();
                    entries.push(Entry { name, kind, size, mtime });
                }
                Msg::Entries(entries)
            }
            kind::END => Msg::End,
            kind::GET => {
                let offset = r.u64()?;
                let prefix = r.hash()?;
                Msg::Get { offset, prefix, path: r.text()? }
            }
            kind::FILE => Msg::File { size: r.u64()?, start: r.u64()? },
            kind::DONE => Msg::Done { hash: r.hash()? },
            kind::PUT => {
                let size = r.u64()?;
                let resume = r.flag()?;
                Msg::Put { size, resume, path: r.text()? }
            }
            kind::READY => Msg::Ready { have: r.u64()?, prefix: r.hash()? },
            kind::FROM => Msg::From { start: r.u64()? },
            kind::STORED => Msg::Stored,
            kind::ERROR => {
                let code = r.u8()?;
                Msg::Error { code, message: String::from_utf8_lossy(r.take_rest()).into_owned() }
            }
            other => return Err(malformed(format!("unknown message type 0x{other:02x}"))),
        };
        if !r.rest.is_empty() {
            return Err(malformed(format!("{} stray bytes after a message of type 0x{kind:02x}", r.rest.len())));
        }
        Ok(msg)
    }

    /// The message's name, for errors such as "expected FILE, got ERROR".
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "HELLO",
            Msg::Auth { .. } => "AUTH",
            Msg::Welcome { .. } => "WELCOME",
            Msg::Exec { .. } => "EXEC",
            Msg::Stdin(_) => "STDIN",
            Msg::StdinEof => "STDIN_EOF",
            Msg::Signal(_) => "SIGNAL",
            Msg::Started { .. } => "STARTED",
            Msg::Stdout(_) => "STDOUT",
            Msg::Stderr(_) => "STDERR",
            Msg::Exit(_) => "EXIT",
            Msg::List { .. } => "LIST",
            Msg::Entries(_) => "ENTRIES",
            Msg::End => "END",
            Msg::Get { .. } => "GET",
            Msg::File { .. } => "FILE",
            Msg::Done { .. } => "DONE",
            Msg::Put { .. } => "PUT",
            Msg::Ready { .. } => "READY",
            Msg::From { .. } => "FROM",
            Msg::Stored => "STORED",
            Msg::Error { .. } => "ERROR",
        }
    }

    /// An `ERROR` message.
    pub fn error(code: u8, message: impl Into<String>) -> Msg {
        Msg::Error { code, message: message.into() }
    }
}

/// A cursor over a message body.
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.rest.len() < n {
            return Err(malformed("a message ends too early"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.bytes(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format!("a flag byte of {b}, not 0 or 1"))),
        }
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }
    fn hash(&mut self) -> Result<Hash, ProtoError> {
        Ok(self.bytes(HASH_LEN)?.try_into().expect("32 bytes"))
    }
    fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
    fn text(&mut self) -> Result<String, ProtoError> {
        String::from_utf8(self.take_rest().to_vec()).map_err(|_| malformed("a path that is not UTF-8"))
    }
}

fn check_len(header: [u8; 4], max: usize) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(header);
    if len as usize > max {
        return Err(ProtoError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Reads exactly one message. `Ok(None)` is a clean end of the stream before a message began.
/// Not cancel-safe: a read dropped halfway loses its bytes (use [`MsgReader`] where a read may be
/// abandoned).
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<Msg>, ProtoError> {
    read_msg_max(r, buf, MAX_MESSAGE).await
}

/// [`read_msg`] with a smaller size limit, for the handshake, where no message is large and a
/// stranger must not make the server hold a megabyte.
pub async fn read_msg_max<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<Msg>, ProtoError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(ProtoError::Truncated) };
        }
        got += n;
    }
    let len = check_len(header, max)?;
    buf.clear();
    // The buffer grows as the bytes arrive (`read_to_end` doubles it), not to the length
    // announced: a header announcing a megabyte that never comes costs no megabyte.
    if r.take(len as u64).read_to_end(buf).await? < len {
        return Err(ProtoError::Truncated);
    }
    Msg::decode(buf).map(Some)
}

/// How far ahead of the bytes received [`MsgReader`] makes room for a message, so that room
/// grows with what really arrives rather than with what a header announced.
const GROW_AHEAD: usize = 64 * 1024;

/// Reads messages from a stream through a buffer of its own, so that a read abandoned halfway
/// (in a `select!`) loses nothing: the next call goes on where it stopped. It may read past the
/// end of a message, so it is for streams that carry only messages (not raw file bytes).
#[derive(Debug, Default)]
pub struct MsgReader {
    buf: bytes::BytesMut,
    read: u64,
}

impl MsgReader {
    /// How many bytes it has read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The next message; `Ok(None)` at a clean end of the stream. Cancel-safe.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Msg>, ProtoError> {
        loop {
            if self.buf.len() >= 4 {
                let len = check_len(self.buf[..4].try_into().expect("4 bytes"), MAX_MESSAGE)?;
                if self.buf.len() >= 4 + len {
                    let frame = self.buf.split_to(4 + len);
                    return Msg::decode(&frame[4..]).map(Some);
                }
                self.buf.reserve((4 + len - self.buf.len()).min(GROW_AHEAD));
            }
            // `read_buf` is cancel-safe: bytes are kept only when it completes.
            let n = r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ProtoError::Truncated) };
            }
            self.read += n as u64;
        }
    }
}

/// Writes one message and flushes it (a TLS stream may otherwise keep its end in a buffer);
/// returns how many bytes that took.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> io::Result<usize> {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(out.len())
}

/// [`read_msg`] on a blocking reader.
pub fn read_msg_sync<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<Msg>, ProtoError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = match r.read(&mut header[got..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(ProtoError::Truncated) };
        }
        got += n;
    }
    let len = check_len(header, MAX_MESSAGE)?;
    buf.clear();
    // As in `read_msg_max`: room grows with the bytes that arrive.
    if r.take(len as u64).read_to_end(buf)? < len {
        return Err(ProtoError::Truncated);
    }
    Msg::decode(buf).map(Some)
}

/// [`write_msg`] on a blocking writer.
pub fn write_msg_sync<W: Write>(w: &mut W, msg: &Msg) -> io::Result<()> {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    w.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Msg) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4, "length prefix of {msg:?}");
        assert_eq!(Msg::decode(&out[4..]).unwrap(), msg);
        let mut reader = &out[..];
        let mut buf = Vec::new();
        assert_eq!(read_msg_sync(&mut reader, &mut buf).unwrap(), Some(msg));
        assert_eq!(read_msg_sync(&mut reader, &mut buf).unwrap(), None);
    }

    #[test]
    fn every_message_round_trips() {
        let h = [7u8; 32];
        for msg in [
            Msg::Hello { version: VERSION, service: ServiceKind::Files, auth: true, nonce: h },
            Msg::Hello { version: VERSION, service: ServiceKind::Spawn, auth: true, nonce: h },
            Msg::Auth { nonce: h, mac: [9; 32] },
            Msg::Welcome { proof: h },
            Msg::Exec {
                argv: vec![b"ls".to_vec(), b"-l".to_vec(), b"".to_vec(), b"a b;c".to_vec()],
                timeout_ms: 5,
                stdin: true,
            },
            Msg::Stdin(Bytes::from_static(b"in")),
            Msg::Stdin(Bytes::new()),
            Msg::StdinEof,
            Msg::Signal(15),
            Msg::Started { pid: 42 },
            Msg::Stdout(Bytes::from_static(b"\0\xff")),
            Msg::Stderr(Bytes::from_static(b"err")),
            Msg::Exit(ExitStatus::Code(3)),
            Msg::Exit(ExitStatus::Signal(9)),
            Msg::Exit(ExitStatus::TimedOut),
            Msg::List { path: "a/b".into() },
            Msg::Entries(vec![
                Entry { name: "x".into(), kind: EntryKind::File, size: 5, mtime: -1 },
                Entry { name: "dir".into(), kind: EntryKind::Dir, size: 0, mtime: 1_700_000_000 },
            ]),
            Msg::Entries(vec![]),
            Msg::End,
            Msg::Get { path: "f".into(), offset: 10, prefix: h },
            Msg::File { size: 1 << 40, start: 3 },
            Msg::Done { hash: h },
            Msg::Put { path: "p/q".into(), size: 0, resume: false },
            Msg::Ready { have: 7, prefix: h },
            Msg::From { start: 0 },
            Msg::Stored,
            Msg::error(code::AUTH, "no"),
        ] {
            round_trip(msg);
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for (frame, why) in [
            (&b""[..], "empty"),
            (b"\x01\x01", "short HELLO"),
            (b"\x01\x01\x09\x00", "unknown service"),
            (b"\x10\x00\x00\x00\x00\x00", "EXEC without argv"),
            (b"\x10\x00\x00\x00\x00\x02ls", "bad flag"),
            (b"\x23\x07\x00\x00\x00\x00", "unknown exit kind"),
            (b"\x32x", "stray byte after END"),
            (b"\x30\xff", "path not UTF-8"),
            (b"\x31f\x00", "truncated entry"),
            (b"\x66", "unknown type"),
        ] {
            assert!(Msg::decode(frame).is_err(), "{why}: {frame:?} was accepted");
        }
    }

    #[test]
    fn oversized_and_truncated_frames() {
        let mut r = &b"\xff\xff\xff\xff"[..];
        assert!(matches!(read_msg_sync(&mut r, &mut Vec::new()), Err(ProtoError::TooLarge(u32::MAX))));
        let mut r = &b"\x00\x00\x00\x05\x21ab"[..];
        assert!(matches!(read_msg_sync(&mut r, &mut Vec::new()), Err(ProtoError::Truncated)));
        let mut r = &b"\x00\x00"[..];
        assert!(matches!(read_msg_sync(&mut r, &mut Vec::new()), Err(ProtoError::Truncated)));
    }

    #[tokio::test]
    async fn the_buffered_reader_loses_nothing_when_a_read_is_abandoned() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut reader = MsgReader::default();
        let mut whole = BytesMut::new();
        Msg::Stdin(Bytes::from(vec![7u8; 1000])).encode(&mut whole);
        Msg::StdinEof.encode(&mut whole);
        // Half of the first message, then a read that gives up waiting for the rest.
        a.write_all(&whole[..500]).await.unwrap();
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), reader.next(&mut b)).await;
        assert!(gave_up.is_err());
        a.write_all(&whole[500..]).await.unwrap();
        drop(a);
        assert_eq!(reader.next(&mut b).await.unwrap(), Some(Msg::Stdin(Bytes::from(vec![7u8; 1000]))));
        assert_eq!(reader.next(&mut b).await.unwrap(), Some(Msg::StdinEof));
        assert_eq!(reader.next(&mut b).await.unwrap(), None);
    }

    /// A header announcing the largest message, then a few bytes and the end: every reader
    /// says the message was cut short, and none made room for the megabyte announced.
    #[tokio::test]
    async fn an_announced_length_is_not_allocated_before_its_bytes_arrive() {
        let mut frame = (MAX_MESSAGE as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0x21; 100]);
        let small = |cap: usize| assert!(cap < MAX_MESSAGE / 4, "{cap} bytes of room for 104 received");

        let mut buf = Vec::new();
        assert!(matches!(read_msg_sync(&mut &frame[..], &mut buf), Err(ProtoError::Truncated)));
        small(buf.capacity());
        let mut buf = Vec::new();
        assert!(matches!(read_msg(&mut &frame[..], &mut buf).await, Err(ProtoError::Truncated)));
        small(buf.capacity());
        let mut reader = MsgReader::default();
        assert!(matches!(reader.next(&mut &frame[..]).await, Err(ProtoError::Truncated)));
        small(reader.buf.capacity());
    }

    #[tokio::test]
    async fn the_handshake_limit_refuses_big_frames_before_reading_them() {
        let mut r = &b"\x00\x10\x00\x00"[..];
        let got = read_msg_max(&mut r, &mut Vec::new(), 128).await;
        assert!(matches!(got, Err(ProtoError::TooLarge(0x100000))));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::TimedOut.shell_code(), 124);
        assert_eq!(ExitStatus::Signal(i32::MAX).shell_code(), 255, "a hostile value neither panics nor wraps");
    }
}
