//! The relay: every client of one socket gets its own connection to a target, any family to
//! any (TCP, Unix streams and seqpacket among themselves; UDP and Unix datagrams among
//! themselves), like socat, with faults injected on request ([`crate::fault`]) and the traffic
//! logged on request ([`TrafficLog`]).
//!
//! The relay is a [`Service`](crate::service::Service) of the server ([`crate::server`]), which
//! gives it accepting, `--max-conns`, the idle timeout, shutdown and the per-connection report.
//! On connected sockets `session` connects to the target once per client and moves bytes both
//! ways at once. A half-close is carried across: when one side shuts down its sending side,
//! the relay shuts down its own toward the other and keeps relaying the other way. A reset or
//! error on one side resets the other. Between two byte streams with nothing to look at (no
//! faults, no log), the bytes move with `splice(2)` through a pipe, never entering user space.
//!
//! On datagram sockets `datagram_relay` keeps a session per client address: its own socket
//! connected to the target, so that answers find their way back, ended after a quiet spell.

use std::collections::HashMap;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::Endpoint;
use crate::fault::{DatagramShaper, Direction, Faults, Pacer, StreamDelay};
use crate::net::{self, ClientSocket, Conn, DatagramSocket, MAX_DATAGRAM, PeerAddr, Stream};
use crate::render;
use crate::server::{ConnReport, End, Monitor, SessionLimits, Traffic};

/// How long a datagram session lives without traffic when no idle timeout is given.
pub const DEFAULT_DATAGRAM_IDLE: Duration = Duration::from_secs(60);

/// The size of each direction's buffer when bytes are copied.
const COPY_BUFFER: usize = 64 * 1024;

/// The largest seqpacket message relayed whole (the default socket buffer is about 208 KiB, so
/// a larger message cannot be sent by a peer with default settings anyway).
const MAX_PACKET: usize = 256 * 1024;

/// The pipe each spliced direction moves its bytes through.
const PIPE_SIZE: usize = 1 << 20;

/// What a relay does.
pub struct RelayConfig {
    /// Where every client is relayed to.
    pub target: Endpoint,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
    /// Move bytes between two streams with `splice(2)` when nothing needs to see them.
    pub splice: bool,
    /// The faults to inject.
    pub faults: Faults,
    /// Where to log the traffic, if anywhere.
    pub log: Option<Arc<TrafficLog>>,
    /// How long a datagram session lives without traffic, when the server has no idle timeout.
    pub datagram_idle: Duration,
    /// How a `tls://` target's certificate is checked (`None`: the system's roots).
    pub tls: Option<Arc<crate::tls::ClientTls>>,
    sessions: AtomicU64,
}

impl RelayConfig {
    /// A relay to `target` with splice on, no faults, no log, and a 10-second connect timeout.
    pub fn new(target: Endpoint) -> RelayConfig {
        RelayConfig {
            target,
            connect_timeout: Duration::from_secs(10),
            splice: true,
            faults: Faults::default(),
            log: None,
            datagram_idle: DEFAULT_DATAGRAM_IDLE,
            tls: None,
            sessions: AtomicU64::new(0),
        }
    }

    fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn faults_for(&self, dir: Direction) -> Option<&Faults> {
        (!self.faults.is_empty() && self.faults.direction.applies(dir)).then_some(&self.faults)
    }
}

// ---------------------------------------------------------------------------------------------
// The traffic log

/// A log of everything a relay moves: one line per chunk or datagram with the time, the
/// session number and the direction (`>` client to target, `<` target to client), followed by
/// the bytes, escaped on the same line or as a hex dump; and a line when a session opens and
/// closes. Writing stops, with one warning, at the first failure.
pub struct TrafficLog {
    out: Mutex<Box<dyn Write + Send>>,
    hex: bool,
    failed: AtomicBool,
}

impl TrafficLog {
    /// A log written to `out`, the bytes as hex dumps when `hex`.
    pub fn new(out: Box<dyn Write + Send>, hex: bool) -> TrafficLog {
        TrafficLog { out: Mutex::new(out), hex, failed: AtomicBool::new(false) }
    }

    fn write(&self, text: &str) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            self.failed.store(true, Ordering::Relaxed);
            tracing::warn!("the traffic log cannot be written, and stops: {}", render::io_error(&e));
        }
    }

    fn now() -> String {
        humantime::format_rfc3339_micros(SystemTime::now()).to_string()
    }

    fn opened(&self, session: u64, peer: &PeerAddr, target: &Endpoint) {
        self.write(&format!("{} #{session} open {peer} -> {target}\n", Self::now()));
    }

    fn data(&self, session: u64, dir: Direction, data: &[u8]) {
        let head = format!("{} #{session} {} {}", Self::now(), dir.arrow(), render::count(data.len() as u64, "byte"));
        if self.hex {
            self.write(&format!("{head}\n{}", render::hex_dump(data)));
        } else {
            self.write(&format!("{head}: {}\n", render::escaped(data)));
        }
    }

    fn closed(&self, session: u64, end: &End, traffic: &Traffic) {
        self.write(&format!(
            "{} #{session} close ({end}), {} up, {} down\n",
            Self::now(),
            render::bytes(traffic.bytes_in),
            render::bytes(traffic.bytes_out)
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Connected sockets

/// One side of a relayed connection.
enum Side {
    Stream(Stream),
    Packets(UnixSeqpacket),
    /// A TLS stream, whose two directions share one TLS state: each read or write locks it for
    /// the length of one poll (never across a wait), as `tokio::io::split` does, so that one
    /// direction waiting never holds up the other.
    Tls(Mutex<Stream>),
}

/// What one read gave.
enum Read {
    /// This many bytes (for seqpacket, one message, which may be empty).
    Data(usize),
    /// The peer shut down its sending side.
    Eof,
}

impl Side {
    fn from_conn(conn: Conn) -> Side {
        match conn {
            Conn::Stream(s) if s.is_tls() => Side::Tls(Mutex::new(s)),
            Conn::Stream(s) => Side::Stream(s),
            Conn::Seqpacket(p) => Side::Packets(p),
        }
    }

    fn buffer_size(&self) -> usize {
        match self {
            Side::Stream(_) | Side::Tls(_) => COPY_BUFFER,
            Side::Packets(_) => MAX_PACKET,
        }
    }

    /// The TLS stream, for one poll.
    fn lock(tls: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
        tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<Read> {
        match self {
            Side::Stream(s) => match s.read_shared(buf).await? {
                0 => Ok(Read::Eof),
                n => Ok(Read::Data(n)),
            },
            // An empty packet is a message to relay; only the end is the end.
            Side::Packets(p) => match net::recv_packet(p, buf).await? {
                net::Packet::End => Ok(Read::Eof),
                net::Packet::Message { truncated: true, .. } => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a message larger than {MAX_PACKET} bytes cannot be relayed"),
                )),
                net::Packet::Message { len, .. } => Ok(Read::Data(len)),
            },
            Side::Tls(t) => {
                let n = std::future::poll_fn(|cx| {
                    let mut rb = tokio::io::ReadBuf::new(buf);
                    match Pin::new(&mut *Side::lock(t)).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await?;
                Ok(if n == 0 { Read::Eof } else { Read::Data(n) })
            }
        }
    }

    /// Writes `data`: all of it on a stream, as one message on seqpacket.
    async fn write(&self, mut data: &[u8]) -> io::Result<()> {
        match self {
            Side::Stream(s) => s.write_all_shared(data).await,
            Side::Packets(p) => p.send(data).await.map(drop),
            Side::Tls(t) => {
                while !data.is_empty() {
                    let n = std::future::poll_fn(|cx| Pin::new(&mut *Side::lock(t)).poll_write(cx, data)).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    data = &data[n..];
                }
                // Nothing may wait in the TLS buffer while this direction waits for more.
                std::future::poll_fn(|cx| Pin::new(&mut *Side::lock(t)).poll_flush(cx)).await
            }
        }
    }

    async fn shutdown_write(&self) {
        // The peer may be gone already; the other direction finds that out on its own.
        let _ = match self {
            Side::Stream(s) => s.shutdown_write(),
            Side::Packets(p) => p.shutdown(std::net::Shutdown::Write),
            // close_notify, then the TCP half-close.
            Side::Tls(t) => std::future::poll_fn(|cx| Pin::new(&mut *Side::lock(t)).poll_shutdown(cx)).await,
        };
    }

    /// Makes the coming close a reset where the socket type has one (TCP, and TLS over it).
    fn reset_on_close(&self) {
        match self {
            Side::Stream(s) => s.set_linger_zero(),
            Side::Tls(t) => Side::lock(t).set_linger_zero(),
            Side::Packets(_) => {}
        }
    }

    /// Waits (at most `limit`) until the peer has taken everything written, so that a reset
    /// that follows does not throw away data already written.
    async fn flushed(&self, limit: Duration) {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Side::Stream(s @ Stream::Tcp(_)) => s.as_raw_fd(),
            Side::Tls(t) => Side::lock(t).as_raw_fd(),
            _ => return,
        };
        let deadline = crate::later(Instant::now(), limit);
        while Instant::now() < deadline {
            let mut queued: libc::c_int = 0;
            // SAFETY: SIOCOUTQ writes one int to the pointer; the descriptor is open (the side
            // owns its socket for as long as this runs).
            let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
            if r != 0 || queued == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Why a relayed connection broke off.
enum Broken {
    /// Reading from the side the data comes from failed.
    Read(Direction, io::Error),
    /// Writing to the side the data goes to failed.
    Write(Direction, io::Error),
    /// `--reset-after` bytes have been relayed.
    ResetAfter(u64),
}

impl Broken {
    fn end(&self) -> End {
        let who = |dir: Direction, reading: bool| match (dir, reading) {
            (Direction::Up, true) | (Direction::Down, false) => "client",
            (Direction::Down, true) | (Direction::Up, false) => "target",
        };
        match self {
            Broken::Read(d, e) => End::Io(format!("{}: {e}", who(*d, true))),
            Broken::Write(d, e) => End::Io(format!("{}: {e}", who(*d, false))),
            Broken::ResetAfter(n) => End::Injected(format!("reset after {n} bytes")),
        }
    }
}

/// What both directions of one connection share.
struct Ctx<'a> {
    session: u64,
    config: &'a RelayConfig,
    started: Instant,
    /// When anything last moved, in nanoseconds since `started`.
    last_activity: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Bytes left before `--reset-after` resets the connection.
    budget: Option<AtomicU64>,
    /// Chunks read and not yet delivered (held back by `--delay`): the connection is not idle
    /// while there are any.
    in_flight: AtomicU64,
}

impl Ctx<'_> {
    fn touch(&self) {
        self.last_activity.store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Logs `data` read in direction `dir`.
    fn read(&self, dir: Direction, data: &[u8]) {
        self.touch();
        if let Some(log) = &self.config.log {
            log.data(self.session, dir, data);
        }
    }

    /// Counts `n` bytes written in direction `dir`. The totals are what was delivered: bytes a
    /// fault cut off (`--reset-after`, with or without a delay queue) are read but never count.
    fn delivered(&self, dir: Direction, n: usize) {
        self.touch();
        self.count(dir).fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The byte count of direction `dir`.
    fn count(&self, dir: Direction) -> &AtomicU64 {
        match dir {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// Takes up to `want` bytes from the `--reset-after` budget: how many may be written, and
    /// whether that exhausts it.
    fn take_budget(&self, want: usize) -> (usize, bool) {
        let Some(budget) = &self.budget else { return (want, false) };
        let mut granted = 0;
        let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            granted = (want as u64).min(left);
            Some(left - granted)
        });
        (granted as usize, budget.load(Ordering::Relaxed) == 0)
    }

    async fn idle(&self, limit: Option<Duration>) {
        let Some(limit) = limit else { return std::future::pending().await };
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Data is on its way: that counts as traffic.
                self.touch();
            }
            let last = self.started + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed));
            let deadline = crate::later(last, limit);
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Relays one client of a connected socket to the target, until both sides have closed, one
/// fails, the idle timeout passes or the server cuts it.
pub(crate) async fn session(
    client: Conn,
    peer: &PeerAddr,
    config: &RelayConfig,
    limits: SessionLimits<'_>,
    traffic: &mut Traffic,
) -> End {
    let session = config.next_session();
    let client = Side::from_conn(client);
    let connected = tokio::select! {
        r = net::connect_with(&config.target, config.connect_timeout, config.tls.as_deref()) => r,
        _ = limits.cut.cancelled() => return End::Cut,
    };
    let target = match connected {
        Ok(ClientSocket::Conn(c)) => Side::from_conn(c),
        Ok(ClientSocket::Datagram(_)) => {
            return End::Io(format!("{} is a datagram socket; a connection cannot be relayed to it", config.target));
        }
        Err(e) => {
            // The client learns that the way on is broken, rather than reading an orderly end.
            client.reset_on_close();
            return End::Io(e.to_string());
        }
    };
    if let Some(log) = &config.log {
        log.opened(session, peer, &config.target);
    }
    let ctx = Ctx {
        session,
        config,
        started: Instant::now(),
        last_activity: AtomicU64::new(0),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
        budget: config.faults.reset_after.map(AtomicU64::new),
        in_flight: AtomicU64::new(0),
    };
    let end = relay_both(&client, &target, &ctx, &limits).await;
    traffic.bytes_in = ctx.up.load(Ordering::Relaxed);
    traffic.bytes_out = ctx.down.load(Ordering::Relaxed);
    if let Some(log) = &config.log {
        log.closed(session, &end, traffic);
    }
    end
}

async fn relay_both(client: &Side, target: &Side, ctx: &Ctx<'_>, limits: &SessionLimits<'_>) -> End {
    let broken = if ctx.config.faults.reset_after == Some(0) {
        Err(Broken::ResetAfter(0))
    } else {
        // Which side ended its sending first: that one closed the connection.
        // (0: neither yet, 1: the client, 2: the target.)
        let first = &std::sync::atomic::AtomicU8::new(0);
        let watched = |from, to, dir| async move {
            let r = direction(from, to, dir, ctx).await;
            if r.is_ok() {
                let side = if dir == Direction::Up { 1 } else { 2 };
                let _ = first.compare_exchange(0, side, Ordering::Relaxed, Ordering::Relaxed);
            }
            r
        };
        let up = watched(client, target, Direction::Up);
        let down = watched(target, client, Direction::Down);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) if first.load(Ordering::Relaxed) == 2 => return End::TargetClosed,
                r => r.map(drop),
            },
            _ = ctx.idle(limits.idle_timeout) => return End::IdleTimeout,
            _ = limits.cut.cancelled() => return End::Cut,
        }
    };
    match broken {
        Ok(()) => End::PeerClosed,
        Err(b) => {
            // A failure on one side is passed on to the other as a reset; an injected reset
            // hits both.
            if let Broken::ResetAfter(_) = b {
                tokio::join!(client.flushed(Duration::from_secs(1)), target.flushed(Duration::from_secs(1)));
            }
            client.reset_on_close();
            target.reset_on_close();
            b.end()
        }
    }
}

/// Moves one direction to its end: the source's end-of-stream becomes the destination's.
async fn direction(src: &Side, dst: &Side, dir: Direction, ctx: &Ctx<'_>) -> Result<(), Broken> {
    if let Some(faults) = ctx.config.faults_for(dir) {
        return faulty_copy(src, dst, dir, faults, ctx).await;
    }
    if let (Side::Stream(s), Side::Stream(d)) = (src, dst)
        && ctx.config.splice
        && ctx.config.log.is_none()
    {
        match splice_copy(s, d, dir, ctx).await {
            Err(Broken::Read(_, e)) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                // This pair of sockets cannot splice (nothing has moved yet): copy instead.
            }
            other => return other,
        }
    }
    copy(src, dst, dir, ctx, None).await
}

/// Moves one direction through a buffer: each chunk read is written at once, or through the
/// pacer (pieces, rate, `--reset-after`) when faults apply without a delay.
async fn copy(
    src: &Side,
    dst: &Side,
    dir: Direction,
    ctx: &Ctx<'_>,
    mut pacer: Option<&mut Pacer>,
) -> Result<(), Broken> {
    let mut buf = vec![0u8; src.buffer_size()];
    loop {
        match src.read(&mut buf).await.map_err(|e| Broken::Read(dir, e))? {
            Read::Eof => {
                dst.shutdown_write().await;
                return Ok(());
            }
            Read::Data(n) => {
                ctx.read(dir, &buf[..n]);
                match pacer.as_deref_mut() {
                    Some(pacer) => deliver(dst, &buf[..n], dir, pacer, ctx).await?,
                    None => {
                        dst.write(&buf[..n]).await.map_err(|e| Broken::Write(dir, e))?;
                        ctx.delivered(dir, n);
                    }
                }
            }
        }
    }
}

/// Moves one direction between two streams through a pipe with `splice(2)`: the bytes go from
/// one socket's receive queue to the other's send queue without being copied to user space.
///
/// The pipe is always emptied before it is filled again, so a `WouldBlock` from filling it can
/// only mean the source has nothing, and one from emptying it that the destination is full:
/// each clears the right socket's readiness.
async fn splice_copy(src: &Stream, dst: &Stream, dir: Direction, ctx: &Ctx<'_>) -> Result<(), Broken> {
    use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
    let (pipe_out, pipe_in) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
        .map_err(|e| Broken::Read(dir, io::Error::other(format!("cannot make a pipe: {e}"))))?;
    let capacity = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_SIZE).unwrap_or(64 * 1024);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let n = loop {
            src.ready(Interest::READABLE).await.map_err(|e| Broken::Read(dir, e))?;
            match src.try_io(Interest::READABLE, || Ok(splice(src, None, &pipe_in, None, capacity, flags)?)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Broken::Read(dir, e)),
            }
        };
        if n == 0 {
            dst.shutdown_write().ok();
            return Ok(());
        }
        ctx.touch();
        let mut left = n;
        while left > 0 {
            dst.ready(Interest::WRITABLE).await.map_err(|e| Broken::Write(dir, e))?;
            match dst.try_io(Interest::WRITABLE, || Ok(splice(&pipe_out, None, dst, None, left, flags)?)) {
                Ok(m) => {
                    left -= m;
                    ctx.delivered(dir, m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Broken::Write(dir, e)),
            }
        }
        ctx.touch();
    }
}

/// Moves one direction through the faults. With a delay, reading and writing are decoupled by
/// a bounded queue, so the delay adds latency without limiting throughput.
async fn faulty_copy(src: &Side, dst: &Side, dir: Direction, faults: &Faults, ctx: &Ctx<'_>) -> Result<(), Broken> {
    let mut delay = StreamDelay::new(faults, ctx.session, dir);
    let mut pacer = Pacer::new(faults);
    if !delay.delays() {
        return copy(src, dst, dir, ctx, Some(&mut pacer)).await;
    }
    let mut buf = vec![0u8; src.buffer_size()];
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>(64);
    let reader = async {
        loop {
            let read = src.read(&mut buf).await.map_err(|e| Broken::Read(dir, e))?;
            let at = delay.deliver_at(Instant::now());
            let item = match read {
                Read::Eof => None,
                Read::Data(n) => {
                    ctx.read(dir, &buf[..n]);
                    Some(Bytes::copy_from_slice(&buf[..n]))
                }
            };
            let eof = item.is_none();
            ctx.in_flight.fetch_add(1, Ordering::Relaxed);
            if tx.send((at, item)).await.is_err() || eof {
                return Ok(());
            }
        }
    };
    let writer = async {
        while let Some((at, item)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let delivered = match item {
                Some(data) => deliver(dst, &data, dir, &mut pacer, ctx).await,
                None => {
                    dst.shutdown_write().await;
                    ctx.in_flight.fetch_sub(1, Ordering::Relaxed);
                    return Ok(());
                }
            };
            ctx.in_flight.fetch_sub(1, Ordering::Relaxed);
            ctx.touch();
            delivered?;
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(drop)
}

/// Writes `data` in pieces under the rate limit and the `--reset-after` budget.
async fn deliver(dst: &Side, data: &[u8], dir: Direction, pacer: &mut Pacer, ctx: &Ctx<'_>) -> Result<(), Broken> {
    for piece in data.chunks(pacer.piece_size()) {
        let (allowed, exhausted) = ctx.take_budget(piece.len());
        let piece = &piece[..allowed];
        if !piece.is_empty() {
            tokio::time::sleep_until(pacer.pace(Instant::now(), piece.len())).await;
            dst.write(piece).await.map_err(|e| Broken::Write(dir, e))?;
            ctx.delivered(dir, piece.len());
        }
        if exhausted {
            return Err(Broken::ResetAfter(ctx.config.faults.reset_after.unwrap_or(0)));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Datagram sockets

/// What a datagram relay moved, for the server's summary.
#[derive(Debug, Default)]
pub(crate) struct DatagramTotals {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub sessions: AtomicU64,
    pub refused: AtomicU64,
}

/// How the server runs a datagram relay.
pub(crate) struct DatagramRelay<'a> {
    pub shutdown: &'a CancellationToken,
    pub monitor: Arc<dyn Monitor>,
    pub max_sessions: Option<usize>,
    pub access: Arc<crate::acl::AccessList>,
    pub idle: Option<Duration>,
    pub totals: Arc<DatagramTotals>,
}

/// The most datagrams from one client waiting for its session to take them; past it they are
/// dropped, as a full socket buffer would drop them.
const SESSION_QUEUE: usize = 1024;

/// Relays every client of a datagram socket to the target, each client address with a socket
/// of its own, until shutdown.
pub(crate) async fn datagram_relay(socket: DatagramSocket, config: Arc<RelayConfig>, run: DatagramRelay<'_>) {
    let socket = Arc::new(socket);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let idle = run.idle.unwrap_or(config.datagram_idle);
    let mut sessions: HashMap<Option<PeerAddr>, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_refusal = None;
    loop {
        let received = tokio::select! {
            _ = run.shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                run.monitor.problem(None, &format!("receive failed: {e}"));
                continue;
            }
        };
        run.totals.datagrams_in.fetch_add(1, Ordering::Relaxed);
        run.totals.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if !crate::server::datagram_admitted(peer.as_ref(), &run.access, run.monitor.as_ref(), &mut last_refusal) {
            run.totals.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        if let Some(tx) = sessions.get(&peer)
            && !tx.is_closed()
        {
            // A full queue loses the datagram, as a full socket buffer would.
            let _ = tx.try_send(datagram);
            continue;
        }
        sessions.retain(|_, tx| !tx.is_closed());
        if let Some(max) = run.max_sessions
            && sessions.len() >= max
        {
            run.totals.refused.fetch_add(1, Ordering::Relaxed);
            let who = peer.clone().unwrap_or(PeerAddr::UnixUnnamed { pid: None, uid: None });
            run.monitor.refused(&who, &format!("over --max-conns {max} sessions"));
            continue;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = tx.try_send(datagram);
        sessions.insert(peer.clone(), tx);
        run.totals.sessions.fetch_add(1, Ordering::Relaxed);
        let session = DatagramSession {
            id: config.next_session(),
            peer,
            socket: socket.clone(),
            config: config.clone(),
            idle,
            monitor: run.monitor.clone(),
            totals: run.totals.clone(),
        };
        tracker.spawn(session.run(rx, stop.clone()));
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

struct DatagramSession {
    id: u64,
    peer: Option<PeerAddr>,
    socket: Arc<DatagramSocket>,
    config: Arc<RelayConfig>,
    idle: Duration,
    monitor: Arc<dyn Monitor>,
    totals: Arc<DatagramTotals>,
}

impl DatagramSession {
    /// Says once that the target refused this client's datagrams (nothing listens there: the
    /// kernel got an ICMP port unreachable), as a stream relay says it failed to connect.
    fn refused(&self, e: &io::Error, peer: &PeerAddr, said: &mut bool) {
        if e.kind() == io::ErrorKind::ConnectionRefused && !std::mem::replace(said, true) {
            let why = format!("the target refused a datagram: nothing is listening on {}", self.config.target);
            self.monitor.problem(Some(peer), &why);
        }
    }

    async fn run(self, mut from_client: mpsc::Receiver<Bytes>, stop: CancellationToken) {
        let started = Instant::now();
        let shown_peer = self.peer.clone().unwrap_or(PeerAddr::UnixUnnamed { pid: None, uid: None });
        let mut traffic = Traffic::default();
        let upstream = tokio::select! {
            r = net::connect(&self.config.target, self.config.connect_timeout) => r,
            _ = stop.cancelled() => return,
        };
        let upstream = match upstream {
            Ok(ClientSocket::Datagram(d)) => d,
            Ok(ClientSocket::Conn(_)) => {
                let why = format!("{} is not a datagram socket", self.config.target);
                self.monitor.problem(Some(&shown_peer), &why);
                return;
            }
            Err(e) => {
                self.monitor.problem(Some(&shown_peer), &e.to_string());
                return;
            }
        };
        if let Some(log) = &self.config.log {
            log.opened(self.id, &shown_peer, &self.config.target);
        }
        let none = Faults::default();
        let faults = |dir| self.config.faults_for(dir).unwrap_or(&none);
        let mut up = DatagramShaper::new(faults(Direction::Up), self.id, Direction::Up);
        let mut down = DatagramShaper::new(faults(Direction::Down), self.id, Direction::Down);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut due = Vec::new();
        let mut last_activity = Instant::now();
        let mut unanswerable = false;
        // Whether a refusal by the target (ICMP port unreachable) was said for this session: once
        // is enough, and an answer from the target clears it.
        let mut refusal_said = false;
        let end = loop {
            let now = Instant::now();
            up.pop_due(now, &mut due);
            if !due.is_empty() {
                last_activity = now;
            }
            for d in due.drain(..) {
                // A refusal reported by ICMP concerns an earlier datagram; the target may be
                // back by the next one.
                if let Err(e) = upstream.send(&d).await {
                    tracing::debug!("relay session {}: send to target failed: {e}", self.id);
                    self.refused(&e, &shown_peer, &mut refusal_said);
                }
            }
            down.pop_due(now, &mut due);
            if !due.is_empty() {
                last_activity = now;
            }
            for d in due.drain(..) {
                let Some(peer) = &self.peer else {
                    if !unanswerable {
                        unanswerable = true;
                        self.monitor.problem(None, "cannot answer a unix-dgram client that has no address");
                    }
                    continue;
                };
                match self.socket.try_send_to(&d, peer) {
                    Ok(sent) => {
                        traffic.bytes_out += sent as u64;
                        self.totals.datagrams_out.fetch_add(1, Ordering::Relaxed);
                        self.totals.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!("relay session {}: answer to {peer} lost: {e}", self.id),
                }
            }
            let quiet_until = crate::later(last_activity, self.idle);
            let wake = [up.next_wake(), down.next_wake(), Some(quiet_until)].into_iter().flatten().min();
            let wake = wake.unwrap_or(quiet_until);
            tokio::select! {
                m = from_client.recv() => match m {
                    Some(d) => {
                        last_activity = Instant::now();
                        traffic.bytes_in += d.len() as u64;
                        if let Some(log) = &self.config.log {
                            log.data(self.id, Direction::Up, &d);
                        }
                        up.push(last_activity, d);
                    }
                    None => break End::Shutdown,
                },
                r = upstream.recv(&mut buf) => match r {
                    Ok(n) => {
                        last_activity = Instant::now();
                        refusal_said = false;
                        if let Some(log) = &self.config.log {
                            log.data(self.id, Direction::Down, &buf[..n]);
                        }
                        down.push(last_activity, Bytes::copy_from_slice(&buf[..n]));
                    }
                    Err(e) => {
                        tracing::debug!("relay session {}: receive from target failed: {e}", self.id);
                        self.refused(&e, &shown_peer, &mut refusal_said);
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= crate::later(last_activity, self.idle) && up.is_idle() && down.is_idle() {
                        break End::IdleTimeout;
                    }
                }
                _ = stop.cancelled() => break End::Shutdown,
            }
        };
        // Close the queue first, so that the accepting loop starts a new session for this
        // client rather than handing datagrams to one that is gone.
        drop(from_client);
        let stats = [up.stats, down.stats];
        let (dropped, duplicated, reordered): (u64, u64, u64) =
            stats.iter().fold((0, 0, 0), |a, s| (a.0 + s.dropped, a.1 + s.duplicated, a.2 + s.reordered));
        if dropped + duplicated + reordered > 0 {
            tracing::info!(
                "relay session {}: faults: {dropped} dropped, {duplicated} duplicated, {reordered} reordered",
                self.id
            );
        }
        if let Some(log) = &self.config.log {
            log.closed(self.id, &end, &traffic);
        }
        self.monitor.closed(&ConnReport {
            peer: shown_peer,
            bytes_in: traffic.bytes_in,
            bytes_out: traffic.bytes_out,
            duration: started.elapsed(),
            end,
        });
    }
}
