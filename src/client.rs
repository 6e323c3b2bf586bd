//! The client side: a netcat-style pipe between any reader/writer pair and a connected socket,
//! and the one-shot "send a message, return the answer" exchange.
//!
//! [`pipe`] is what `sockit connect` does when stdin is not a terminal: binary-safe in both
//! directions under `raw` framing, half-closing the sending side when the input ends and
//! returning when the server closes. Under `line` and `len` framing, and on packet sockets, each
//! input line is one message and each received message is written out followed by a newline.
//! [`send`] is `sockit send`. Neither touches the process's stdin or stdout; the caller passes
//! them in.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio_seqpacket::UnixSeqpacket;
use tokio_util::codec::Decoder;

use crate::framing::{FrameCodec, FrameError, Framing};
use crate::net::{ClientSocket, Conn, DatagramSocket, MAX_DATAGRAM, Packet, Stream};

/// How a client frames and waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Framing on stream sockets.
    pub framing: Framing,
    /// The largest frame accepted from the server.
    pub max_frame: usize,
    /// How long to wait for an answer: in [`send`], for the reply; in [`pipe`], after the input
    /// ended, for the server to finish (`None`: as long as it takes on streams). On datagram
    /// sockets, where no close marks the end, `None` means one second.
    pub answer_timeout: Option<Duration>,
    /// On datagram and seqpacket sockets, [`pipe`] sends each read of its input as one message,
    /// bytes as they are, and writes each message received as it came, with no newline added:
    /// binary-safe, as `nc -u` and socat send. Otherwise each input line is one message (its
    /// newline not sent) and each message received one output line. Streams ignore it.
    pub packet_per_read: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            framing: Framing::Raw,
            max_frame: crate::framing::DEFAULT_MAX_FRAME,
            answer_timeout: None,
            packet_per_read: false,
        }
    }
}

/// How long a datagram client waits for answers after its input ended, when not told.
pub const DEFAULT_DATAGRAM_WAIT: Duration = Duration::from_secs(1);

/// Why a client exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server sent a frame the framing rejects.
    #[error("bad answer from server: {0}")]
    Frame(FrameError),
    /// The server closed the connection without sending anything back.
    #[error("no answer: the server closed the connection without answering")]
    ClosedWithoutAnswer,
    /// No answer arrived in time.
    #[error("no answer within {} (the message was sent; hint: --timeout waits longer)", humantime::format_duration(*.0))]
    NoAnswer(Duration),
    /// Nothing listens at a datagram endpoint: the kernel reported ICMP port unreachable.
    #[error("nothing is listening there (the datagram was refused)")]
    DatagramRefused,
    /// The connection failed.
    #[error("connection failed")]
    Io(#[from] io::Error),
    /// A message is longer than the framing allows (`--max-frame`).
    #[error("cannot send: {0} (hint: --max-frame raises the limit)")]
    MessageTooLarge(FrameError),
    /// The server closed the connection, after answering, before it had read everything sent:
    /// the rest of the input was not delivered.
    #[error(
        "the server closed the connection before it had read everything sent; the rest of the input was not delivered"
    )]
    Unread,
    /// Reading our own input failed.
    #[error("cannot read input: {}", crate::render::io_error(.0))]
    Input(io::Error),
    /// Writing our own output failed.
    #[error("cannot write output: {}", crate::render::io_error(.0))]
    Output(io::Error),
    /// A plain client met a TLS server, which answered its bytes with an alert.
    #[error("the server speaks TLS: it answered with a TLS alert (hint: connect to tls://HOST:PORT)")]
    SpeaksTls,
    /// A sockit server at its `--max-conns` turned us away with its notice.
    #[error("{0}")]
    Busy(String),
    /// A plain client met one of sockit's own services, which begin with a handshake.
    #[error("the server runs sockit's {0} service, which begins with a handshake (hint: {hint})", hint = handshake_hint(.0))]
    SpeaksSockit(&'static str),
}

fn handshake_hint(service: &str) -> &'static str {
    match service {
        "exec" => "use `sockit exec` or `sockit shell`",
        "files" => "use `sockit put`, `get` or `ls`",
        _ => "pass the token with --token-file FILE",
    }
}

/// What the first bytes from a stream server show when it speaks something other than plain
/// bytes, or turns us away, as a plain client would otherwise print them as an answer and exit
/// 0. The signatures are exact, so that a server of plain bytes is never taken for one of these:
/// - a TLS alert record and nothing else (type 21, version 3.x, length 2), which is how a TLS
///   server answers bytes that are not a handshake, before it closes;
/// - the `HELLO` frame of `exec`, `files` or `spawn` (PROTOCOL.md section 5): length 36, type
///   1, version 1, service 1 to 3, auth 0 or 1, and its 32-byte nonce;
/// - a sockit server's busy notice and nothing else: as a line, as a length-prefixed frame, or
///   in the ERROR an `exec`, `files` or tokened `spawn` server sends in place of its `HELLO`.
///
/// Only the first read is looked at (each of these comes in one write, so in one read), and an
/// echo server that sends back exactly one of them is taken for what it echoes.
fn foreign_protocol(first: &[u8]) -> Option<ClientError> {
    use crate::proto::{HELLO_LEN, Msg};
    if let Some((notice, took)) = crate::server::busy_notice_in(first)
        && took == first.len()
    {
        return Some(ClientError::Busy(notice.to_owned()));
    }
    if let Some((len, frame)) = first.split_first_chunk::<4>()
        && u32::from_be_bytes(*len) as usize == frame.len()
        && let Ok(Msg::Error { message, .. }) = Msg::decode(frame)
        && let Some(notice) = crate::server::busy_text_exact(message.as_bytes())
    {
        return Some(ClientError::Busy(notice.to_owned()));
    }
    match first {
        [0x15, 0x03, 0..=0x04, 0x00, 0x02, _, _] => Some(ClientError::SpeaksTls),
        [0, 0, 0, len, frame @ ..] if usize::from(*len) == HELLO_LEN && frame.len() >= HELLO_LEN => {
            match Msg::decode(&frame[..HELLO_LEN]) {
                Ok(Msg::Hello { version: crate::proto::VERSION, service, .. }) => {
                    Some(ClientError::SpeaksSockit(service.name()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Frame(other),
        }
    }
}

fn recv_error(e: io::Error) -> ClientError {
    if e.raw_os_error() == Some(libc::ECONNREFUSED) { ClientError::DatagramRefused } else { ClientError::Io(e) }
}

/// What a pipe moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeReport {
    /// Bytes (or message bytes) sent to the server.
    pub sent: u64,
    /// Bytes (or message bytes) received from the server.
    pub received: u64,
}

/// Connects `input` to the socket and the socket to `output` until the server closes (streams,
/// seqpacket) or, after the input ended, until the answer timeout (datagrams).
pub async fn pipe<R, W>(
    socket: ClientSocket,
    input: R,
    output: W,
    opts: &ClientOptions,
) -> Result<PipeReport, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match socket {
        ClientSocket::Conn(Conn::Stream(s)) if opts.framing == Framing::Raw => pipe_raw(s, input, output, opts).await,
        other => pipe_messages(other, input, output, opts).await,
    }
}

/// Waits for `fut`, for at most `limit` when there is one.
async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(t) => tokio::time::timeout(t, fut).await.ok(),
        None => Some(fut.await),
    }
}

async fn pipe_raw<R, W>(
    stream: Stream,
    mut input: R,
    mut output: W,
    opts: &ClientOptions,
) -> Result<PipeReport, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tcp_fd = tcp_fd(&stream);
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Shared by the two directions; atomics rather than cells keep the future `Send`.
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let reset = OnceLock::new();
    // Set once the server has closed its side (or the receiving side stopped).
    let server_closed = AtomicBool::new(false);
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buf).await.map_err(ClientError::Input)?;
            if n == 0 {
                break;
            }
            // The server may close while we are still sending; its answer, if any, is still
            // worth reading, so a failed send only ends the sending.
            // Flushed: on TLS the bytes may otherwise wait in its buffer for the next input.
            let wrote = match wr.write_all(&buf[..n]).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = wrote {
                reset_by_peer(&reset, e);
                return Ok(());
            }
            sent.fetch_add(n as u64, Relaxed);
        }
        let _ = wr.shutdown().await;
        check_delivery(tcp_fd, &server_closed, &reset).await;
        Ok(())
    };
    let downstream = async {
        let _closed_when_done = SetOnDrop(&server_closed);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = rd.read(&mut buf).await.map_err(ClientError::Io)?;
            if n == 0 {
                return Ok(());
            }
            if received.load(Relaxed) == 0
                && let Some(e) = foreign_protocol(&buf[..n])
            {
                return Err(e);
            }
            output.write_all(&buf[..n]).await.map_err(ClientError::Output)?;
            output.flush().await.map_err(ClientError::Output)?;
            received.fetch_add(n as u64, Relaxed);
        }
    };
    both_directions(upstream, downstream, opts.answer_timeout, true).await?;
    let received = received.into_inner();
    unanswered_reset(reset.into_inner(), received)?;
    Ok(PipeReport { sent: sent.into_inner(), received })
}

/// Whether a failed send says that the peer closed.
fn closed_by_peer(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected)
}

/// Keeps `e` in `reset` if it says the peer has gone (a reset, or a broken pipe after one).
fn reset_by_peer(reset: &OnceLock<io::Error>, e: io::Error) {
    if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
        let _ = reset.set(e);
    }
}

/// A reset that a send ran into (or that the delivery check found) means input was lost: an
/// error, as ncat and socat make it. The kernel reports a reset once, to whichever call comes
/// first; when the send takes it, the receive then just sees the end, and a client the server
/// turned away at once would seem to have ended well. With nothing back it is the reset itself
/// (the server refused us); after an answer, [`ClientError::Unread`].
fn unanswered_reset(reset: Option<io::Error>, received: u64) -> Result<(), ClientError> {
    match reset {
        Some(e) if received == 0 => Err(ClientError::Io(e)),
        Some(_) => Err(ClientError::Unread),
        None => Ok(()),
    }
}

/// [`MessageWriter::delivered`] on a TCP socket's descriptor, which must stay open for the
/// call; `None` (not TCP) is delivered.
async fn tcp_delivered(fd: Option<std::os::fd::RawFd>, limit: Duration) -> io::Result<()> {
    let Some(fd) = fd else { return Ok(()) };
    // SAFETY: the caller's stream owns the descriptor and outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        let mut unacked: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer.
        if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::TIOCOUTQ, &mut unacked) } != 0
            || unacked == 0
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Once a pipe's input ended and its sending side is closed: when the server had closed first,
/// it may have gone without reading what followed. Its TCP answers that with a reset, which no
/// send saw if it came after the send returned; found, it is kept as a broken pipe (the server
/// closed before reading what we sent, as a send after its close would have said), not as a
/// refusal.
async fn check_delivery(tcp_fd: Option<std::os::fd::RawFd>, server_closed: &AtomicBool, reset: &OnceLock<io::Error>) {
    if !server_closed.load(Relaxed) {
        return;
    }
    match tcp_delivered(tcp_fd, DELIVERY_WAIT).await {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => reset_by_peer(reset, io::ErrorKind::BrokenPipe.into()),
        Err(e) => reset_by_peer(reset, e),
        Ok(()) => {}
    }
}

/// The TCP socket under a TCP or TLS stream; `None` for a Unix one.
fn tcp_fd(stream: &Stream) -> Option<std::os::fd::RawFd> {
    (!matches!(stream, Stream::Unix(_))).then(|| std::os::fd::AsRawFd::as_raw_fd(stream))
}

/// Sets its flag when dropped: when the future that holds it ends, however it ends.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// How long a pipe whose server closed first waits, after the input ended, for the server's TCP
/// to take what was sent (or to refuse it with a reset).
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// Runs a pipe's two directions together until both are done. A server that closes its side
/// first may still be reading (it half-closed, as `shutdown(SHUT_WR)` does), so the rest of the
/// input still goes to it, as netcat sends it, until the input ends or a send fails because the
/// server has gone. Once the input has ended, the server gets at most `wait` to finish: one
/// that can close and does not within `wait` is an error; one that cannot (datagrams) has simply
/// said all it had to say.
async fn both_directions(
    upstream: impl Future<Output = Result<(), ClientError>>,
    downstream: impl Future<Output = Result<(), ClientError>>,
    wait: Option<Duration>,
    peer_can_close: bool,
) -> Result<(), ClientError> {
    tokio::pin!(upstream, downstream);
    tokio::select! {
        down = &mut downstream => {
            down?;
            return upstream.await;
        }
        up = &mut upstream => up?,
    }
    match within(wait, downstream).await {
        Some(down) => down,
        None if !peer_can_close => Ok(()),
        None => Err(ClientError::NoAnswer(wait.unwrap_or_default())),
    }
}

/// The sending half of a connected client socket: one message at a time, framed as the
/// options say (streams) or as one packet (seqpacket, datagram).
pub struct MessageWriter {
    inner: WriterInner,
    codec: FrameCodec,
    frame: BytesMut,
    /// The TCP socket under a TCP or TLS stream, for [`MessageWriter::delivered`]; it is owned
    /// by `inner` and lives as long as this writer.
    tcp_fd: Option<std::os::fd::RawFd>,
}

enum WriterInner {
    Stream(WriteHalf<Stream>),
    Packets(Arc<Packets>),
}

/// The receiving half of a connected client socket.
pub struct MessageReader {
    inner: ReaderInner,
    codec: FrameCodec,
    buf: BytesMut,
    eof: bool,
    /// Whether the first bytes are still to be read: a stream's are checked with
    /// `foreign_protocol` before any framing reads them, a seqpacket's for a busy notice.
    first: bool,
}

enum ReaderInner {
    Stream(ReadHalf<Stream>),
    Packets(Arc<Packets>),
}

/// Splits a connected socket into a message writer and reader that can be used at once.
pub fn split(socket: ClientSocket, opts: &ClientOptions) -> (MessageWriter, MessageReader) {
    let codec = FrameCodec::new(opts.framing, opts.max_frame);
    let mut tcp_fd = None;
    let (w, r) = match socket {
        ClientSocket::Conn(Conn::Stream(s)) => {
            tcp_fd = self::tcp_fd(&s);
            let (r, w) = tokio::io::split(s);
            (WriterInner::Stream(w), ReaderInner::Stream(r))
        }
        ClientSocket::Conn(Conn::Seqpacket(s)) => {
            let p = Arc::new(Packets::Seq(s));
            (WriterInner::Packets(p.clone()), ReaderInner::Packets(p))
        }
        ClientSocket::Datagram(d) => {
            let p = Arc::new(Packets::Dgram(d));
            (WriterInner::Packets(p.clone()), ReaderInner::Packets(p))
        }
    };
    (
        MessageWriter { inner: w, codec: codec.clone(), frame: BytesMut::new(), tcp_fd },
        MessageReader { inner: r, codec, buf: BytesMut::new(), eof: false, first: true },
    )
}

impl MessageWriter {
    /// Sends one message. Under `raw` framing on a stream the bytes go as they are.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        match &mut self.inner {
            WriterInner::Stream(w) => {
                self.frame.clear();
                self.codec.encode_into(msg, &mut self.frame).map_err(ClientError::MessageTooLarge)?;
                w.write_all(&self.frame).await?;
                w.flush().await?;
            }
            WriterInner::Packets(p) => {
                p.send(msg).await.map_err(recv_error)?;
            }
        }
        Ok(())
    }

    /// Says that no more messages follow: a half-close on streams and seqpacket, so the server
    /// reads end-of-stream and can answer and close. Nothing on datagram sockets.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        match &mut self.inner {
            WriterInner::Stream(w) => w.shutdown().await?,
            WriterInner::Packets(p) => p.close()?,
        }
        Ok(())
    }

    /// Waits, at most `limit`, until the server's TCP has acknowledged everything sent, and
    /// returns the reset if it refused it instead. A server that has closed its socket answers
    /// data that arrives afterwards with a reset, and so does one that closes with our data
    /// unread; when that comes after the send returned, no send reports it. Call it once the
    /// sending side is closed. `Ok` on a socket that cannot tell (Unix, datagrams) and when
    /// `limit` passes undecided.
    pub async fn delivered(&self, limit: Duration) -> io::Result<()> {
        tcp_delivered(self.tcp_fd, limit).await
    }

    /// Whether the peer can signal the end of the exchange by closing (not so for datagrams).
    pub fn peer_can_close(&self) -> bool {
        !matches!(&self.inner, WriterInner::Packets(p) if p.is_datagram())
    }
}

impl MessageReader {
    /// Receives the next message, `None` once the server closed. Under `raw` framing a message
    /// is whatever one read returned. Cancel-safe: a message is never half-consumed. A stream
    /// whose first bytes are a TLS alert, a sockit handshake or a busy notice is an error under
    /// any framing (`foreign_protocol`): a line would print them, and a length prefix would read
    /// them as a huge length. So is a seqpacket whose first packet is a busy notice.
    pub async fn recv(&mut self) -> Result<Option<BytesMut>, ClientError> {
        match &mut self.inner {
            ReaderInner::Packets(p) => {
                self.buf.resize(MAX_DATAGRAM, 0);
                match p.recv(&mut self.buf).await.map_err(recv_error)? {
                    // A seqpacket server's busy notice is a packet of its own.
                    Some(n) if std::mem::take(&mut self.first) && !p.is_datagram() => {
                        match crate::server::busy_text_exact(&self.buf[..n]) {
                            Some(notice) => Err(ClientError::Busy(notice.to_owned())),
                            None => Ok(Some(BytesMut::from(&self.buf[..n]))),
                        }
                    }
                    Some(n) => Ok(Some(BytesMut::from(&self.buf[..n]))),
                    None => Ok(None),
                }
            }
            ReaderInner::Stream(r) => loop {
                let next =
                    if self.eof { self.codec.decode_eof(&mut self.buf)? } else { self.codec.decode(&mut self.buf)? };
                if next.is_some() || self.eof {
                    return Ok(next);
                }
                if self.buf.capacity() - self.buf.len() < 1024 {
                    self.buf.reserve(8192);
                }
                if r.read_buf(&mut self.buf).await? == 0 {
                    self.eof = true;
                } else if std::mem::take(&mut self.first)
                    && let Some(e) = foreign_protocol(&self.buf)
                {
                    return Err(e);
                }
            },
        }
    }
}

/// A connected socket that keeps message boundaries.
enum Packets {
    Seq(UnixSeqpacket),
    Dgram(DatagramSocket),
}

impl Packets {
    async fn send(&self, msg: &[u8]) -> io::Result<usize> {
        match self {
            Packets::Seq(s) => s.send(msg).await,
            Packets::Dgram(d) => d.send(msg).await,
        }
    }
    /// Receives one message; `Ok(None)` when a seqpacket peer closed (an empty packet is a
    /// message, and so is an empty datagram). Cancel-safe.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Packets::Seq(s) => match crate::net::recv_packet(s, buf).await? {
                // Said, not printed cut short.
                Packet::Message { truncated: true, .. } => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the server sent a packet longer than {} bytes", buf.len()),
                )),
                Packet::Message { len, .. } => Ok(Some(len)),
                Packet::End => Ok(None),
            },
            Packets::Dgram(d) => d.recv(buf).await.map(Some),
        }
    }
    fn close(&self) -> io::Result<()> {
        match self {
            Packets::Seq(s) => s.shutdown(std::net::Shutdown::Write),
            Packets::Dgram(_) => Ok(()),
        }
    }
    fn is_datagram(&self) -> bool {
        matches!(self, Packets::Dgram(_))
    }
}

/// Writes one received message and a newline unless it ends with one.
async fn write_message<W: AsyncWrite + Unpin>(output: &mut W, msg: &[u8]) -> Result<(), ClientError> {
    output.write_all(msg).await.map_err(ClientError::Output)?;
    if !msg.ends_with(b"\n") {
        output.write_all(b"\n").await.map_err(ClientError::Output)?;
    }
    output.flush().await.map_err(ClientError::Output)
}

/// The pipe for framed streams and packet sockets: each input line is one message (on packet
/// sockets with [`ClientOptions::packet_per_read`], each read). Sending and
/// receiving run at the same time, so a server that answers while we still send never waits
/// for us (nor we for it).
async fn pipe_messages<R, W>(
    socket: ClientSocket,
    input: R,
    mut output: W,
    opts: &ClientOptions,
) -> Result<PipeReport, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut writer, mut reader) = split(socket, opts);
    let peer_can_close = writer.peer_can_close();
    let limit = if matches!(writer.inner, WriterInner::Stream(_)) {
        (opts.max_frame, "--max-frame")
    } else {
        (MAX_DATAGRAM, "the datagram size")
    };
    // Shared by the two directions; atomics rather than cells keep the future `Send`.
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let reset = OnceLock::new();
    // Set once the server has closed its side (or the receiving side stopped).
    let server_closed = AtomicBool::new(false);
    // Each read is one message only where messages keep their boundaries.
    let per_read = opts.packet_per_read && !matches!(writer.inner, WriterInner::Stream(_));
    let upstream = async {
        let mut lines = BufReader::new(input);
        let mut line = Vec::new();
        // A read is cut at what one UDP datagram carries, as netcat's are at its buffer: the
        // rest is the next message.
        let mut chunk = if per_read { vec![0u8; crate::net::MAX_UDP_PAYLOAD] } else { Vec::new() };
        loop {
            line.clear();
            let body = if per_read {
                let n = lines.read(&mut chunk).await.map_err(ClientError::Input)?;
                if n == 0 {
                    break;
                }
                &chunk[..n]
            } else {
                if read_line_limited(&mut lines, &mut line, limit).await.map_err(ClientError::Input)? == 0 {
                    break;
                }
                line.strip_suffix(b"\n").unwrap_or(&line)
            };
            match writer.send(body).await {
                Ok(()) => _ = sent.fetch_add(body.len() as u64, Relaxed),
                // Nothing listens, or our own input is at fault: say so.
                Err(e @ (ClientError::DatagramRefused | ClientError::MessageTooLarge(_))) => return Err(e),
                Err(ClientError::Io(e)) if e.raw_os_error() == Some(libc::EMSGSIZE) => return Err(ClientError::Io(e)),
                // The server went away; what it sent before is still read below.
                Err(ClientError::Io(e)) => {
                    reset_by_peer(&reset, e);
                    return Ok(());
                }
                Err(_) => return Ok(()),
            }
        }
        // The input ended. A stream or seqpacket server sees the half-close and closes when
        // done; a datagram server cannot say it is done, so its answers get a bounded wait.
        let _ = writer.close().await;
        check_delivery(writer.tcp_fd, &server_closed, &reset).await;
        Ok::<(), ClientError>(())
    };
    let downstream = async {
        let _closed_when_done = SetOnDrop(&server_closed);
        while let Some(msg) = reader.recv().await? {
            received.fetch_add(msg.len() as u64, Relaxed);
            if per_read {
                output.write_all(&msg).await.map_err(ClientError::Output)?;
                output.flush().await.map_err(ClientError::Output)?;
            } else {
                write_message(&mut output, &msg).await?;
            }
        }
        Ok::<(), ClientError>(())
    };
    let wait =
        if peer_can_close { opts.answer_timeout } else { Some(opts.answer_timeout.unwrap_or(DEFAULT_DATAGRAM_WAIT)) };
    both_directions(upstream, downstream, wait, peer_can_close).await?;
    let received = received.into_inner();
    unanswered_reset(reset.into_inner(), received)?;
    Ok(PipeReport { sent: sent.into_inner(), received })
}

/// Reads one line (up to and including `\n`) into `line`, refusing lines longer than `limit`
/// bytes (the newline aside, the limit named by `what`) instead of buffering them without end.
/// Returns 0 at end of input.
async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    (limit, what): (usize, &str),
) -> io::Result<usize> {
    let n = (&mut *input).take(limit as u64 + 1).read_until(b'\n', line).await?;
    if line.len() > limit && !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a line is longer than the {limit}-byte limit ({what})"),
        ));
    }
    Ok(n)
}

/// Sends one message and writes the answer to `output`: on a stream under `raw` framing,
/// everything the server sends until it closes (or, if it keeps the connection open, what
/// arrived before the timeout), as it arrives, so an endless answer costs no memory; otherwise
/// the first message. With `wait_for_answer` false, returns once sent. Returns the answer's
/// length in bytes.
pub async fn send<W: AsyncWrite + Unpin>(
    socket: ClientSocket,
    msg: &[u8],
    opts: &ClientOptions,
    wait_for_answer: bool,
    output: &mut W,
) -> Result<u64, ClientError> {
    let limit = opts.answer_timeout.unwrap_or(Duration::from_secs(5));
    let raw_stream = matches!(socket, ClientSocket::Conn(Conn::Stream(_))) && opts.framing == Framing::Raw;
    let (mut writer, mut reader) = split(socket, opts);
    let peer_can_close = writer.peer_can_close();
    match writer.send(msg).await {
        Ok(()) => {}
        // A server that closed at once may have said why (a busy notice, a TLS alert), which
        // tells the user more than the failed send. It has closed: what it said is there now.
        Err(ClientError::Io(e)) if peer_can_close && closed_by_peer(&e) => {
            let e = ClientError::Io(e);
            return Err(match tokio::time::timeout(limit.min(Duration::from_secs(1)), reader.recv()).await {
                Ok(Err(said @ (ClientError::Busy(_) | ClientError::SpeaksTls | ClientError::SpeaksSockit(_)))) => said,
                _ => e,
            });
        }
        Err(e) => return Err(e),
    }
    // Half-close: the server reads end-of-stream after our message, answers, and closes.
    writer.close().await?;
    if !wait_for_answer {
        return Ok(0);
    }
    let mut received = 0u64;
    let mut answered = false;
    let read_answer = async {
        while let Some(m) = reader.recv().await? {
            answered = true;
            received += m.len() as u64;
            output.write_all(&m).await.map_err(ClientError::Output)?;
            if !raw_stream {
                break;
            }
        }
        Ok::<(), ClientError>(())
    };
    let outcome = tokio::time::timeout(limit, read_answer).await;
    output.flush().await.map_err(ClientError::Output)?;
    match outcome {
        Ok(Ok(())) if !answered => Err(ClientError::ClosedWithoutAnswer),
        Ok(r) => r.map(|()| received),
        Err(_) if raw_stream && answered => Ok(received),
        Err(_) => Err(ClientError::NoAnswer(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::net::{BindOptions, bind, connect};
    use crate::server::{ServerConfig, run};
    use crate::service::Service;
    use tokio_util::sync::CancellationToken;

    /// Starts a server on `endpoint` and returns the endpoint to connect to and its stop token.
    async fn serve(endpoint: &str, service: Service, framing: Framing) -> (Endpoint, CancellationToken) {
        let socket = bind(&endpoint.parse().unwrap(), &BindOptions::default()).await.unwrap();
        let local: Endpoint = socket.local_endpoint().parse().unwrap();
        let mut config = ServerConfig::new(service);
        config.framing = framing;
        let token = CancellationToken::new();
        tokio::spawn(run(socket, config, token.clone()));
        (local, token)
    }

    #[tokio::test]
    async fn raw_pipe_is_binary_safe_and_half_closes() {
        let (ep, stop) = serve("tcp://127.0.0.1:0", Service::Echo, Framing::Raw).await;
        let input: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let mut output = Vec::new();
        let sock = connect(&ep, Duration::from_secs(5)).await.unwrap();
        let report = pipe(sock, &input[..], &mut output, &ClientOptions::default()).await.unwrap();
        assert_eq!(output.len(), input.len());
        assert!(output == input, "echoed bytes differ");
        assert_eq!((report.sent, report.received), (input.len() as u64, input.len() as u64));
        stop.cancel();
    }

    #[tokio::test]
    async fn len_pipe_sends_each_line_as_a_frame() {
        let (ep, stop) = serve("tcp://127.0.0.1:0", Service::Upper, Framing::Len).await;
        let opts = ClientOptions { framing: Framing::Len, ..ClientOptions::default() };
        let mut output = Vec::new();
        let sock = connect(&ep, Duration::from_secs(5)).await.unwrap();
        pipe(sock, &b"one\n\nthree"[..], &mut output, &opts).await.unwrap();
        assert_eq!(output, b"ONE\n\nTHREE\n");
        stop.cancel();
    }

    /// Empty answers that wait in the queue when the server closes are messages: each is an
    /// empty line, and only what follows them is the end.
    #[tokio::test]
    async fn seqpacket_pipe_prints_empty_answers_queued_before_the_close() {
        let (ours, server) = UnixSeqpacket::pair().unwrap();
        crate::net::mark_messages(&ours).unwrap();
        for m in [&b"x"[..], b"", b"y", b"", b""] {
            server.send(m).await.unwrap();
        }
        drop(server);
        let mut output = Vec::new();
        let socket = ClientSocket::Conn(Conn::Seqpacket(ours));
        let report = pipe(socket, &b""[..], &mut output, &ClientOptions::default()).await.unwrap();
        assert_eq!(output, b"x\n\ny\n\n\n");
        assert_eq!(report.received, 2);
    }

    /// An answer packet longer than the client takes is an error, not a line cut short.
    #[tokio::test]
    async fn seqpacket_answer_longer_than_the_buffer_is_an_error() {
        let (ours, server) = UnixSeqpacket::pair().unwrap();
        crate::net::mark_messages(&ours).unwrap();
        server.send(&vec![b'a'; MAX_DATAGRAM + 1]).await.unwrap();
        drop(server);
        let mut output = Vec::new();
        let socket = ClientSocket::Conn(Conn::Seqpacket(ours));
        let err = pipe(socket, &b""[..], &mut output, &ClientOptions::default()).await.unwrap_err();
        let ClientError::Io(e) = &err else { panic!("{err:?}") };
        assert!(e.to_string().contains("longer than 65536 bytes"), "{e}");
        assert!(output.is_empty());
    }

    #[tokio::test]
    async fn unix_datagram_client_gets_answers_at_its_own_address() {
        let name = format!("unix-dgram:@sockit-test-{}-dgram", std::process::id());
        let (ep, stop) = serve(&name, Service::Upper, Framing::Raw).await;
        let opts = ClientOptions { answer_timeout: Some(Duration::from_secs(2)), ..ClientOptions::default() };
        let sock = connect(&ep, Duration::from_secs(5)).await.unwrap();
        let mut answer = Vec::new();
        assert_eq!(send(sock, b"hello", &opts, true, &mut answer).await.unwrap(), 5);
        assert_eq!(answer, b"HELLO");
        stop.cancel();
    }

    #[tokio::test]
    async fn send_times_out_when_no_answer_comes() {
        struct Quiet;
        impl crate::service::MessageSink for Quiet {
            fn message(&self, _: &crate::net::PeerAddr, _: std::time::SystemTime, _: &[u8]) {}
        }
        let (ep, stop) = serve("udp://127.0.0.1:0", Service::Print(Arc::new(Quiet)), Framing::Raw).await;
        let opts = ClientOptions { answer_timeout: Some(Duration::from_millis(100)), ..ClientOptions::default() };
        let sock = connect(&ep, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(send(sock, b"hi", &opts, true, &mut Vec::new()).await, Err(ClientError::NoAnswer(_))));
        stop.cancel();
    }

    /// The busy notice is recognised exactly, as a line or a frame, and only as a whole: a
    /// server whose answer merely resembles it is printed as usual.
    #[test]
    fn a_busy_notice_is_recognised_exactly() {
        let notice = b"sockit: server busy (3 clients connected), try again later";
        let busy =
            |b: &[u8]| matches!(foreign_protocol(b), Some(ClientError::Busy(n)) if n.starts_with("server busy (3"));
        assert!(busy(&[&notice[..], b"\n"].concat()));
        assert!(busy(&[&(notice.len() as u32).to_be_bytes()[..], notice].concat()));
        // In the ERROR an exec, files or tokened spawn server sends in place of its HELLO.
        let mut error = bytes::BytesMut::new();
        crate::proto::Msg::error(crate::proto::code::FAILED, String::from_utf8_lossy(notice)).encode(&mut error);
        assert!(busy(&error), "{error:?}");
        for near in [
            &b"sockit: server busy (3 client connected), try again later\n"[..],
            b"sockit: server busy (3 clients connected), try again later\nmore\n",
            b"sockit: server busy (x clients connected), try again later\n",
            b"sockit: server busy\n",
            &[&((notice.len() + 1) as u32).to_be_bytes()[..], notice].concat(),
            notice,
        ] {
            assert!(foreign_protocol(near).is_none(), "{:?}", String::from_utf8_lossy(near));
        }
    }

    /// A seqpacket server at its limit sends its notice and closes. Whichever way that meets
    /// the client, the notice is what it says: before its send (which then fails with a broken
    /// pipe), or after it (the peer closed with our packet unread: a reset, reported before
    /// the packet it sent).
    #[tokio::test]
    async fn a_seqpacket_busy_notice_is_said_however_the_close_meets_the_send() {
        let notice = b"sockit: server busy (1 client connected), try again later";
        let opts = ClientOptions::default();
        let pair = || {
            let (ours, theirs) = tokio_seqpacket::UnixSeqpacket::pair().unwrap();
            crate::net::mark_messages(&ours).unwrap();
            (ClientSocket::Conn(Conn::Seqpacket(ours)), theirs)
        };
        // Closed before we send.
        let (ours, theirs) = pair();
        theirs.send(notice).await.unwrap();
        drop(theirs);
        let got = send(ours, b"hi", &opts, true, &mut Vec::new()).await;
        assert!(matches!(&got, Err(ClientError::Busy(n)) if n.starts_with("server busy")), "{got:?}");
        // Closed after we sent, with our packet unread.
        let (ours, theirs) = pair();
        let (mut writer, mut reader) = split(ours, &opts);
        writer.send(b"hi").await.unwrap();
        theirs.send(notice).await.unwrap();
        drop(theirs);
        let got = reader.recv().await;
        assert!(matches!(&got, Err(ClientError::Busy(_))), "{got:?}");
    }

    /// A send that fails for a reason of its own is said at once: there is no answer to wait for.
    #[tokio::test]
    async fn a_datagram_too_long_to_send_fails_at_once() {
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ep: Endpoint = format!("udp://{}", quiet.local_addr().unwrap()).parse().unwrap();
        let opts = ClientOptions { answer_timeout: Some(Duration::from_secs(30)), ..ClientOptions::default() };
        let sock = connect(&ep, Duration::from_secs(5)).await.unwrap();
        let started = std::time::Instant::now();
        let got = send(sock, &[b'a'; 70_000], &opts, true, &mut Vec::new()).await;
        assert!(matches!(&got, Err(ClientError::Io(e)) if e.raw_os_error() == Some(libc::EMSGSIZE)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}
