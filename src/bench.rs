//! The load generator behind `sockit bench`: echo latency and rate, bulk throughput, connection
//! rate and UDP rate, against any server on any endpoint.
//!
//! [`run`] takes a [`BenchConfig`] and a cancellation token and returns a [`BenchResult`];
//! while it runs it sends a [`Progress`] every interval to an optional channel. It never prints.
//! Every echo answer is checked byte for byte, and latencies go into HdrHistograms (one per
//! connection, merged at the end). With a rate, the echo test runs open loop and measures each
//! request from the moment it was scheduled, not from when it was sent, so a stalled server
//! cannot hide its stall by slowing the generator down (coordinated omission); the generator's
//! own lateness (a timer that woke late) is left out.
//!
//! A server of the wrong kind is an error, not a figure: a bulk stream into a server that sends
//! bytes back or stops reading, a reversed one that receives nothing, connections or datagrams
//! that are never answered end the run with [`BenchError::WrongServer`], which says what the
//! server did and which server the mode needs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Endpoint, Host, IpProto, SocketStyle};
use crate::net::{self, ClientSocket, Conn, DatagramSocket, NetError, Stream};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Request/answer round trips against an echo server, over `connections` connections.
    Echo,
    /// One-way throughput into a `discard` server (or out of a `source` server with `reverse`).
    Bulk,
    /// New connections per second: connect, one echo exchange, close.
    Connect,
    /// Datagrams per second and loss against a datagram echo server.
    Udp,
}

impl Mode {
    /// Every mode with its name, for help texts and parsing.
    pub const ALL: [(Mode, &'static str); 4] =
        [(Mode::Echo, "echo"), (Mode::Bulk, "bulk"), (Mode::Connect, "connect"), (Mode::Udp, "udp")];
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = Mode::ALL.iter().find(|(m, _)| m == self).map(|(_, n)| *n).unwrap_or("?");
        f.write_str(name)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(m, _)| *m)
            .ok_or_else(|| format!("unknown mode '{s}' (choose echo, bulk, connect or udp)"))
    }
}

/// How to run a benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server.
    pub endpoint: Endpoint,
    /// What to measure.
    pub mode: Mode,
    /// Concurrent connections (echo, connect) or sockets (udp).
    pub connections: usize,
    /// Parallel streams (bulk).
    pub streams: usize,
    /// Message size (echo, connect, udp) or write size (bulk), in bytes.
    pub size: usize,
    /// How long to run.
    pub duration: Duration,
    /// Open loop: requests (or datagrams) per second in total, spread over the connections.
    pub rate: Option<f64>,
    /// Bulk: receive from a `source` server instead of sending to a `discard` server.
    pub reverse: bool,
    /// Echo: idle connections to open (and keep) before measuring.
    pub hold: usize,
    /// How often to report progress and record an interval (at least [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// The limit on each connect.
    pub connect_timeout: Duration,
    /// How a `tls://` server's certificate is checked (`None`: the system's roots).
    pub tls: Option<Arc<crate::tls::ClientTls>>,
}

impl BenchConfig {
    /// A configuration with the usual defaults for `mode`: 50 connections (4 sockets for udp),
    /// one stream, 64-byte messages or 128 KiB writes, 10 seconds.
    pub fn new(endpoint: Endpoint, mode: Mode) -> BenchConfig {
        BenchConfig {
            endpoint,
            mode,
            connections: if mode == Mode::Udp { 4 } else { 50 },
            streams: 1,
            size: if mode == Mode::Bulk { 128 * 1024 } else { 64 },
            duration: Duration::from_secs(10),
            rate: None,
            reverse: false,
            hold: 0,
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A live report, sent every interval.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Time since the measurement started.
    pub elapsed: Duration,
    /// Requests (or datagrams, or connections) per second in the last interval.
    pub requests_per_s: f64,
    /// Payload throughput in the last interval.
    pub gbit_per_s: f64,
    /// Errors so far.
    pub errors: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

/// One interval of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Seconds since the start, at the end of the interval.
    pub t: f64,
    /// Requests completed in the interval.
    pub requests: u64,
    /// Payload throughput in the interval.
    pub gbit_per_s: f64,
}

/// Datagram counts for `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UdpCounts {
    /// Datagrams sent.
    pub sent: u64,
    /// Answers received.
    pub received: u64,
    /// The fraction of datagrams without an answer.
    pub loss: f64,
}

/// Idle connections held during an echo run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    /// How many were asked for.
    pub requested: usize,
    /// How many were open when the measurement started.
    pub established: usize,
    /// The last reason a connection could not be opened, if any failed.
    pub error: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// What was measured.
    pub mode: Mode,
    /// The server.
    pub endpoint: String,
    /// Concurrent connections or sockets.
    pub connections: usize,
    /// Parallel streams (bulk).
    pub streams: usize,
    /// Message or write size.
    pub size: usize,
    /// How long the measurement ran.
    pub duration_s: f64,
    /// Requests (echo), connections (connect), answered datagrams (udp), writes or reads (bulk).
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Payload bytes moved (each direction counted once: what was sent, or for reverse bulk,
    /// what was received).
    pub bytes: u64,
    /// Payload throughput.
    pub gbit_per_s: f64,
    /// Failed requests or connections (wrong answers, resets, timeouts).
    pub errors: u64,
    /// Round-trip latency (echo, connect, udp).
    pub latency_us: Option<Latency>,
    /// Per-interval figures.
    pub intervals: Vec<Interval>,
    /// Datagram counts (udp).
    pub udp: Option<UdpCounts>,
    /// Held idle connections (echo with `hold`).
    pub hold: Option<Held>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration does not fit the endpoint or the mode.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached at the start.
    #[error(transparent)]
    Connect(#[from] NetError),
    /// Every connection failed during the run (in bulk: every stream).
    #[error("every connection failed; the last error: {0}")]
    AllFailed(String),
    /// The run was cancelled while connecting, before it began: there are no figures.
    #[error("cancelled while connecting, before the run began")]
    Cancelled,
    /// The server is not the kind the mode measures: what it did, and which server to use.
    #[error("{mode}: {misfit} (hint: {hint})")]
    WrongServer {
        /// The mode that was running.
        mode: Mode,
        /// What the server did.
        misfit: Misfit,
        /// The server the mode needs, as a command to start one.
        hint: String,
    },
}

/// How a server showed that it is not the kind the mode measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    /// bulk: bytes came back on a stream into the server, the bytes that were sent (an `echo`
    /// server).
    Echoes,
    /// bulk: bytes of the server's own came back (a `source` server, say).
    Sends,
    /// bulk: the stream took nothing for this long, neither a write nor a byte off the send
    /// queue.
    StoppedReading(Duration),
    /// bulk, reversed: not one byte arrived in this long, since the start.
    SentNothing(Duration),
    /// bulk, reversed: bytes arrived, then none for this long.
    StoppedSending(Duration),
    /// echo, connect: the server took the message and did not answer within this long.
    NoAnswer(Duration),
    /// connect, udp: every answer differed from what was sent.
    WrongAnswers,
    /// echo: an answer differed from what was sent.
    WrongAnswer,
    /// udp: not one of this many datagrams was answered.
    Unanswered(u64),
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::Echoes => f.write_str("the server echoes what it gets"),
            Misfit::Sends => f.write_str("the server sends data of its own"),
            Misfit::StoppedReading(d) => {
                write!(f, "the stream took no bytes for {} (the server does not read, or reads very slowly)", secs(*d))
            }
            Misfit::SentNothing(d) => write!(f, "the server sent nothing in {}", secs(*d)),
            Misfit::StoppedSending(d) => write!(f, "the server stopped sending: nothing arrived for {}", secs(*d)),
            Misfit::NoAnswer(d) => write!(f, "no answer within {}", secs(*d)),
            Misfit::WrongAnswers => f.write_str("every answer differs from the message sent"),
            Misfit::WrongAnswer => f.write_str("the answer differs from the message sent"),
            Misfit::Unanswered(n) => write!(f, "not one of {n} datagrams was answered"),
        }
    }
}

/// A duration as people write it: `2s`, `1.5s`.
fn secs(d: Duration) -> String {
    let tenths = (d.as_secs_f64() * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 { format!("{tenths:.0}s") } else { format!("{tenths:.1}s") }
}

/// The server `config` needs, for the hint after `misfit`.
fn server_hint(config: &BenchConfig, misfit: Misfit) -> String {
    let ep = &config.endpoint;
    match (config.mode, config.reverse) {
        (Mode::Bulk, true) => format!("--reverse needs a `source` server, e.g. `sockit serve {ep} source`"),
        (Mode::Bulk, false) if misfit == Misfit::Sends => format!(
            "bulk needs a `discard` server, e.g. `sockit serve {ep} discard`; --reverse reads from a `source` server"
        ),
        (Mode::Bulk, false) => format!("bulk needs a `discard` server, e.g. `sockit serve {ep} discard`"),
        (Mode::Udp, _) => format!("udp needs a datagram `echo` server, e.g. `sockit serve {ep} echo`"),
        (mode, _) => format!("{mode} needs an `echo` server, e.g. `sockit serve {ep} echo`"),
    }
}

/// Counters shared by the workers and the interval sampler.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// UDP only.
    sent: AtomicU64,
}

/// What a worker gives back: its latencies and its last error, if any.
struct WorkerOutcome {
    hist: Histogram<u64>,
    error: Option<Failure>,
}

/// What went wrong in a worker.
enum Failure {
    /// A socket error, a timeout, a wrong answer: said as the message of `AllFailed`.
    Other(String),
    /// udp: the datagrams were refused (an ICMP port unreachable): nothing listens there.
    Refused,
    /// The server is the wrong kind.
    Misfit(Misfit),
}

/// A stream of bytes unlike a `source` server's (which counts 0, 1, 2, … modulo 251), so that
/// its stream is never taken for an echo of them.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ 0xa5).collect()
}

fn new_histogram() -> Histogram<u64> {
    // Nanoseconds from 1 ns to 100 s, three significant figures.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn record(hist: &mut Histogram<u64>, d: Duration) {
    let _ = hist.record((d.as_nanos() as u64).clamp(1, 100_000_000_000));
}

/// How long one request may take before the worker counts it as an error and gives up on the
/// connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest echo or connect message: one that even a slow TLS connection moves both ways
/// well within [`REQUEST_TIMEOUT`].
const MAX_MESSAGE: usize = 64 << 20;

/// The most that the messages of all echo or connect connections may take together.
const MAX_MESSAGES: usize = 1 << 30;

/// Runs a benchmark. Cancelling `cancel` ends it early with the figures so far.
pub async fn run(
    config: BenchConfig,
    progress: Option<mpsc::Sender<Progress>>,
    cancel: CancellationToken,
) -> Result<BenchResult, BenchError> {
    check(&config)?;
    let config = Arc::new(config);
    let counters = Arc::new(Counters::default());

    // Connect everything first, so that connection set-up is not part of the measurement.
    let connecting = async {
        let (held, hold_error) = if config.hold > 0 { hold_connections(&config).await? } else { (Vec::new(), None) };
        let sockets = match config.mode {
            Mode::Connect => Vec::new(),
            Mode::Bulk => connect_all(&config, config.streams).await?,
            Mode::Echo | Mode::Udp => connect_all(&config, config.connections).await?,
        };
        Ok::<_, BenchError>((held, hold_error, sockets))
    };
    let (held, hold_error, sockets) = tokio::select! {
        connected = connecting => connected?,
        () = cancel.cancelled() => return Err(BenchError::Cancelled),
    };

    let start = Instant::now();
    let deadline = crate::later(start, config.duration);
    let stop = cancel.child_token();
    let mut workers = tokio::task::JoinSet::new();
    let worker_count = match config.mode {
        Mode::Connect => config.connections,
        _ => sockets.len(),
    };
    let mut sockets = sockets.into_iter();
    for i in 0..worker_count {
        let (config, counters, stop) = (config.clone(), counters.clone(), stop.clone());
        let socket = sockets.next();
        let per_worker_rate = config.rate.map(|r| r / worker_count as f64);
        workers.spawn(async move {
            let ctx = Worker { config: &config, counters: &counters, stop: &stop, deadline, start };
            match (config.mode, socket) {
                (Mode::Echo, Some(s)) => ctx.echo(s, per_worker_rate, i as u64).await,
                (Mode::Bulk, Some(s)) => ctx.bulk(s).await,
                (Mode::Connect, _) => ctx.connect_loop(i).await,
                (Mode::Udp, Some(s)) => ctx.udp(s, per_worker_rate).await,
                _ => unreachable!("every worker but connect's has a socket"),
            }
        });
    }

    let intervals = sample(&config, &counters, start, deadline, &stop, progress).await;
    stop.cancel();
    let mut hist = new_histogram();
    let (mut last_error, mut misfit, mut refused, mut failed) = (None, None, false, 0);
    while let Some(done) = workers.join_next().await {
        if let Ok(outcome) = done {
            let _ = hist.add(&outcome.hist);
            match outcome.error {
                Some(Failure::Other(e)) => {
                    last_error = Some(e);
                    failed += 1;
                }
                Some(Failure::Refused) => refused = true,
                Some(Failure::Misfit(m)) => misfit = Some(m),
                None => {}
            }
        }
    }
    let held = held.len();
    let elapsed = start.elapsed().min(config.duration.max(Duration::from_millis(1))).as_secs_f64().max(1e-9);

    let requests = counters.requests.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let sent = counters.sent.load(Ordering::Relaxed);
    if config.mode == Mode::Udp && requests == 0 {
        if refused {
            return Err(NetError::Refused { endpoint: config.endpoint.to_string() }.into());
        }
        if last_error.is_none() && sent > 0 {
            // Answers that all failed the check were counted as errors; none at all, not.
            misfit = Some(if errors > 0 { Misfit::WrongAnswers } else { Misfit::Unanswered(sent) });
        }
    }
    // A bulk stream that met the wrong server ends the run, whatever the other streams did; in
    // the other modes a few unanswered requests are a loaded server, and only a run with no
    // answer at all says the server is the wrong kind.
    if let Some(misfit) = misfit
        && (config.mode == Mode::Bulk || (requests == 0 && bytes == 0))
    {
        let hint = server_hint(&config, misfit);
        return Err(BenchError::WrongServer { mode: config.mode, misfit, hint });
    }
    // A bulk stream counts the bytes its socket took before the server was found gone; its end
    // says whether they arrived.
    let all_failed = match config.mode {
        Mode::Bulk => failed == worker_count,
        _ => requests == 0 && bytes == 0,
    };
    if all_failed && let Some(e) = last_error {
        return Err(BenchError::AllFailed(e));
    }
    let latency = (!hist.is_empty()).then(|| {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    });
    let udp = (config.mode == Mode::Udp).then(|| {
        let received = requests.min(sent);
        UdpCounts { sent, received, loss: if sent == 0 { 0.0 } else { (sent - received) as f64 / sent as f64 } }
    });
    Ok(BenchResult {
        mode: config.mode,
        endpoint: config.endpoint.to_string(),
        connections: if config.mode == Mode::Bulk { 0 } else { config.connections },
        streams: if config.mode == Mode::Bulk { config.streams } else { 0 },
        size: config.size,
        duration_s: elapsed,
        requests,
        requests_per_s: requests as f64 / elapsed,
        bytes,
        gbit_per_s: bytes as f64 * 8.0 / elapsed / 1e9,
        errors,
        latency_us: latency.filter(|_| config.mode != Mode::Bulk),
        intervals,
        udp,
        hold: (config.hold > 0).then_some(Held { requested: config.hold, established: held, error: hold_error }),
    })
}

/// The shortest [`BenchConfig::interval`]: each interval is a record and a progress report.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn check(config: &BenchConfig) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Config(m.to_owned()));
    let style = config.endpoint.style();
    match (config.mode, style) {
        (Mode::Udp, SocketStyle::Datagram) => {}
        (Mode::Udp, _) => return bad("udp mode needs a datagram endpoint (udp://… or unix-dgram:…)"),
        (_, SocketStyle::Datagram) => {
            return bad("echo, bulk and connect need a connected endpoint; use the udp mode for datagrams");
        }
        _ => {}
    }
    if config.connections == 0 || config.streams == 0 {
        return bad("connections and streams must be at least 1");
    }
    if config.size == 0 {
        return bad("the size must be at least 1 byte");
    }
    if config.mode == Mode::Udp && config.size < UDP_HEADER {
        return bad("udp datagrams carry a 16-byte header: the size must be at least 16");
    }
    if config.mode == Mode::Udp && config.size > net::MAX_DATAGRAM - 1024 {
        return bad("udp datagrams are at most 64 KiB");
    }
    if matches!(config.mode, Mode::Echo | Mode::Connect) {
        // Each connection holds its message and the answer, and an answer must come within
        // REQUEST_TIMEOUT.
        if config.size > MAX_MESSAGE {
            return bad("echo and connect messages are at most 64 MiB (bulk moves any amount)");
        }
        if config.size.saturating_mul(config.connections) > MAX_MESSAGES {
            return bad(
                "echo and connect keep each connection's message and answer in memory: the size times the connections must be at most 1 GiB",
            );
        }
    }
    if config.hold > 0 && config.mode != Mode::Echo {
        return bad("holding idle connections is for the echo mode");
    }
    if let Some(r) = config.rate
        && !(r.is_finite() && r >= MIN_RATE)
    {
        return bad("the rate must be at least 0.001 per second");
    }
    if config.duration > crate::MAX_DURATION {
        return bad("the duration must be at most a year");
    }
    if config.interval < MIN_INTERVAL {
        return bad("the interval must be at least 100ms");
    }
    Ok(())
}

async fn connect_all(config: &BenchConfig, n: usize) -> Result<Vec<ClientSocket>, BenchError> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(net::connect_with(&config.endpoint, config.connect_timeout, config.tls.as_deref()).await?);
    }
    Ok(all)
}

/// How many connections to put on one 127.0.0.x source address: below the ephemeral port
/// range (28,232 ports on Linux by default).
const HOLD_PER_SOURCE: usize = 25_000;

/// Opens `config.hold` idle connections. On a 127.0.0.0/8 TCP endpoint they are spread over
/// source addresses 127.0.0.2, 127.0.0.3, … so that more than one address's worth of ephemeral
/// ports can be held.
async fn hold_connections(config: &BenchConfig) -> Result<(Vec<ClientSocket>, Option<String>), BenchError> {
    let target = loopback_tcp_target(&config.endpoint);
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.hold {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let endpoint = config.endpoint.clone();
        let timeout = config.connect_timeout;
        let tls = config.tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match target {
                Some(addr) => {
                    let source = Ipv4Addr::new(127, 0, 0, 2 + (i / HOLD_PER_SOURCE) as u8);
                    let s = tokio::time::timeout(timeout, connect_from(source, addr))
                        .await
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                    Ok(ClientSocket::Conn(Conn::Stream(Stream::Tcp(s))))
                }
                None => net::connect_with(&endpoint, timeout, tls.as_deref()).await.map_err(std::io::Error::other),
            }
        });
    }
    let mut held = Vec::with_capacity(config.hold);
    let mut last_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => last_error = Some(e.to_string()),
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if held.is_empty()
        && let Some(e) = last_error
    {
        return Err(BenchError::AllFailed(e));
    }
    Ok((held, last_error))
}

/// How many loopback source addresses the connect mode spreads its workers over.
const CONNECT_SOURCES: usize = 8;

/// The address of a plain TCP endpoint on 127.0.0.0/8, which can be reached from other loopback
/// source addresses (127.0.0.2, …) than the usual one.
fn loopback_tcp_target(endpoint: &Endpoint) -> Option<SocketAddr> {
    match endpoint {
        Endpoint::Ip { proto: IpProto::Tcp, host: Host::Ip(ip @ IpAddr::V4(v4)), port, .. } if v4.is_loopback() => {
            Some(SocketAddr::new(*ip, *port))
        }
        _ => None,
    }
}

/// Connects to `target` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    // Let connect() pick the port by the whole address 4-tuple: bind() alone would reserve a
    // port per source address, which TIME-WAIT sockets from an earlier run also hold.
    set_bind_address_no_port(&sock)?;
    sock.bind(SocketAddr::new(source.into(), 0))?;
    sock.connect(target).await
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+), which socket2 does not wrap.
fn set_bind_address_no_port(sock: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid descriptor and a pointer to a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Samples the counters every interval until the deadline (or cancellation), reporting
/// progress and recording the intervals.
async fn sample(
    config: &BenchConfig,
    counters: &Counters,
    start: Instant,
    deadline: Instant,
    stop: &CancellationToken,
    progress: Option<mpsc::Sender<Progress>>,
) -> Vec<Interval> {
    let mut intervals = Vec::new();
    let mut last = (start, 0u64, 0u64);
    loop {
        let next = crate::later(last.0, config.interval).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        let requests = counters.requests.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let gbit_per_s = (bytes - last.2) as f64 * 8.0 / secs / 1e9;
        intervals.push(Interval {
            t: now.duration_since(start).as_secs_f64(),
            requests: requests - last.1,
            gbit_per_s,
        });
        if let Some(tx) = &progress {
            let _ = tx.try_send(Progress {
                elapsed: now.duration_since(start),
                requests_per_s: (requests - last.1) as f64 / secs,
                gbit_per_s,
                errors: counters.errors.load(Ordering::Relaxed),
            });
        }
        last = (now, requests, bytes);
        if now >= deadline {
            break;
        }
    }
    intervals
}

/// One worker's view of the run.
struct Worker<'a> {
    config: &'a BenchConfig,
    counters: &'a Counters,
    stop: &'a CancellationToken,
    deadline: Instant,
    start: Instant,
}

impl Worker<'_> {
    fn running(&self) -> bool {
        !self.stop.is_cancelled() && Instant::now() < self.deadline
    }

    fn failed(&self, hist: Histogram<u64>, e: impl std::fmt::Display) -> WorkerOutcome {
        self.ended(hist, Failure::Other(e.to_string()))
    }

    /// Ends this connection's part of the run with `failure`, counted as an error.
    fn ended(&self, hist: Histogram<u64>, failure: Failure) -> WorkerOutcome {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        WorkerOutcome { hist, error: Some(failure) }
    }

    /// Ends the whole run: the server is the wrong kind, and more of it would measure nothing.
    fn misfit(&self, hist: Histogram<u64>, misfit: Misfit) -> WorkerOutcome {
        self.stop.cancel();
        self.ended(hist, Failure::Misfit(misfit))
    }

    /// Closed loop (or, with a rate, open loop): send a message, read the whole answer, check
    /// it, record the latency.
    async fn echo(&self, socket: ClientSocket, rate: Option<f64>, worker: u64) -> WorkerOutcome {
        let mut hist = new_histogram();
        let ClientSocket::Conn(conn) = socket else { unreachable!("checked: connected endpoint") };
        let size = self.config.size;
        let mut msg: Vec<u8> = (0..size).map(|i| (i as u64 * 7 + worker) as u8).collect();
        let mut answer = vec![0u8; size];
        let period = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let mut seq: u64 = 0;
        let mut conn = conn;
        // When the previous answer would have been in had every request left on time: see below.
        let mut ideal_free = self.start;
        while self.running() {
            seq += 1;
            // Each request differs, so a server answering the previous one is caught.
            let stamp = seq.to_le_bytes();
            let n = stamp.len().min(size);
            msg[..n].copy_from_slice(&stamp[..n]);
            let scheduled = match period {
                Some(p) => {
                    let at = self.start + p.mul_f64(seq as f64 - 1.0);
                    if at >= self.deadline {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = self.stop.cancelled() => break,
                    }
                    at
                }
                None => Instant::now(),
            };
            let sent = Instant::now();
            let exchange = async {
                match &mut conn {
                    Conn::Stream(s) => {
                        stream_exchange(s, &msg, &mut answer).await?;
                    }
                    Conn::Seqpacket(s) => {
                        s.send(&msg).await?;
                        let got = s.recv(&mut answer).await?.bytes_read();
                        if got != size {
                            return Err(std::io::Error::other(format!("answer of {got} bytes, expected {size}")));
                        }
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok(())) if answer == msg => {}
                // This connection's end: a busy notice in place of the answer says why, and a
                // wrong answer says what kind of server this may be, if no connection gets a
                // right one (others may: the run goes on).
                Ok(Ok(())) => return self.ended(hist, not_the_answer(&answer, Misfit::WrongAnswer)),
                Ok(Err(e)) => return self.failed(hist, e),
                // A server that takes messages and answers none (discard, print) is the likely
                // cause: the hint names the server echo needs.
                Err(_) => return self.ended(hist, Failure::Misfit(Misfit::NoAnswer(REQUEST_TIMEOUT))),
            }
            let latency;
            (latency, ideal_free) = latency_on_time(scheduled, ideal_free, sent.elapsed());
            record(&mut hist, latency);
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(size as u64, Ordering::Relaxed);
        }
        WorkerOutcome { hist, error: None }
    }

    /// Writes (or, reversed, reads) as fast as the connection takes it. Writing, it also watches
    /// for bytes coming back, which a `discard` server never sends; either way it checks every
    /// [`MOTION_CHECK`] that the stream still moves, and ends the run with a [`Misfit`] when
    /// the server is the wrong kind.
    async fn bulk(&self, socket: ClientSocket) -> WorkerOutcome {
        let hist = new_histogram();
        let ClientSocket::Conn(Conn::Stream(mut s)) = socket else {
            return self.failed(hist, "bulk needs a stream endpoint");
        };
        let reverse = self.config.reverse;
        let mut buf = pattern(self.config.size);
        let mut incoming = [0u8; 64];
        // Until the server ends its sending side (which a sink may do at once), nothing should
        // arrive on a stream that only writes.
        let mut watch_incoming = !reverse;
        let (mut steps, mut moved) = (0u64, 0u64);
        let mut motion = Motion { steps: 0, queued: None, since: self.start };
        // One timer for the deadline and the checks, reset four times a second, not per step.
        let check = tokio::time::sleep_until(self.next_check(self.start).into());
        tokio::pin!(check);
        while self.running() {
            let step = std::future::poll_fn(|cx| {
                if reverse {
                    let mut rb = ReadBuf::new(&mut buf);
                    return Pin::new(&mut s).poll_read(cx, &mut rb).map_ok(|()| Step::Read(rb.filled().len()));
                }
                if watch_incoming {
                    // Readiness is kept by tokio: while nothing arrives this costs no syscall.
                    let mut rb = ReadBuf::new(&mut incoming);
                    if let std::task::Poll::Ready(r) = Pin::new(&mut s).poll_read(cx, &mut rb) {
                        return std::task::Poll::Ready(r.map(|()| Step::Incoming(rb.filled().len())));
                    }
                }
                Pin::new(&mut s).poll_write(cx, &buf).map_ok(Step::Wrote)
            });
            let step = tokio::select! {
                r = step => r,
                _ = &mut check => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        break;
                    }
                    let still = motion.check(now, steps, (!reverse).then(|| unsent(&s)).flatten());
                    if still >= STALL_LIMIT {
                        return self.misfit(hist, stall(reverse, moved, still));
                    }
                    check.as_mut().reset(self.next_check(now).into());
                    continue;
                }
                _ = self.stop.cancelled() => break,
            };
            match step {
                Ok(Step::Read(0)) => return self.failed(hist, "the server closed the stream"),
                Ok(Step::Read(n) | Step::Wrote(n)) => {
                    steps += 1;
                    moved += n as u64;
                    self.counters.requests.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Step::Incoming(0)) => watch_incoming = false,
                Ok(Step::Incoming(n)) => {
                    // A server at its --max-conns turns the stream away with a line: a busy
                    // server, not one of the wrong kind.
                    if let Some(busy) = busy_notice(&incoming[..n]) {
                        return self.failed(hist, busy);
                    }
                    // An echo server sends back the stream's first bytes, which are the buffer's.
                    let echoed = incoming[..n].iter().zip(buf.iter().cycle()).all(|(a, b)| a == b);
                    return self.misfit(hist, if echoed { Misfit::Echoes } else { Misfit::Sends });
                }
                Err(e) => return self.failed(hist, e),
            }
        }
        // A stream stalled for the later half of the run measured the server's buffers, not
        // its speed; a reversed one that got nothing measured nothing.
        let now = Instant::now();
        let still = motion.check(now, steps, (!reverse).then(|| unsent(&s)).flatten());
        let ran = now.duration_since(self.start);
        if (reverse && moved == 0) || (still >= STALL_AT_END && still * 2 >= ran) {
            return self.misfit(hist, stall(reverse, moved, if moved == 0 { ran } else { still }));
        }
        // Bounded: a TLS stream flushes its last bytes here, into a server that may be slow.
        let _ = tokio::time::timeout(STREAM_CLOSE_LIMIT, s.shutdown()).await;
        WorkerOutcome { hist, error: None }
    }

    /// When a bulk worker next looks at its stream's motion: a check from now, or the deadline.
    fn next_check(&self, now: Instant) -> Instant {
        (now + MOTION_CHECK).min(self.deadline)
    }

    /// Connect, exchange one message, close; over and over.
    async fn connect_loop(&self, worker: usize) -> WorkerOutcome {
        let mut hist = new_histogram();
        let size = self.config.size;
        let msg = pattern(size);
        let mut answer = vec![0u8; size];
        let mut last_error = None;
        // Each worker connects from its own loopback address: from one address, the kernel's
        // search for a free port among tens of thousands of TIME-WAIT connections becomes the
        // limit on the rate, whatever the server does.
        let from_loopback = loopback_tcp_target(&self.config.endpoint)
            .map(|target| (Ipv4Addr::new(127, 0, 0, 2 + (worker % CONNECT_SOURCES) as u8), target));
        while self.running() {
            let t0 = Instant::now();
            let mut connected = false;
            let cycle = async {
                let socket = if let Some((source, target)) = from_loopback {
                    let s = connect_from(source, target).await?;
                    let _ = s.set_nodelay(true);
                    ClientSocket::Conn(Conn::Stream(Stream::Tcp(s)))
                } else {
                    net::connect_with(&self.config.endpoint, self.config.connect_timeout, self.config.tls.as_deref())
                        .await
                        .map_err(std::io::Error::other)?
                };
                connected = true;
                match socket {
                    ClientSocket::Conn(Conn::Stream(mut s)) => {
                        stream_exchange(&mut s, &msg, &mut answer).await?;
                    }
                    ClientSocket::Conn(Conn::Seqpacket(s)) => {
                        s.send(&msg).await?;
                        s.recv(&mut answer).await?;
                    }
                    ClientSocket::Datagram(_) => unreachable!("checked: connected endpoint"),
                }
                Ok::<(), std::io::Error>(())
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, cycle).await {
                Ok(Ok(())) if answer == msg => {
                    record(&mut hist, t0.elapsed());
                    self.counters.requests.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(size as u64, Ordering::Relaxed);
                }
                // A failed connection is a data point, not the end: count it and go on. If none
                // succeeds, the last failure is the run's error.
                Ok(Ok(())) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(not_the_answer(&answer, Misfit::WrongAnswers));
                }
                Ok(Err(e)) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    // Said as every other command says it.
                    let said = if e.kind() == std::io::ErrorKind::ConnectionRefused && !connected {
                        NetError::Refused { endpoint: self.config.endpoint.to_string() }.to_string()
                    } else {
                        e.to_string()
                    };
                    last_error = Some(Failure::Other(said));
                }
                Err(_) if connected => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(Failure::Misfit(Misfit::NoAnswer(REQUEST_TIMEOUT)));
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(Failure::Other("connecting took over 5s".to_owned()));
                }
            }
        }
        WorkerOutcome { hist, error: last_error }
    }

    /// Sends datagrams (a window of them at a time, or paced at the rate) and counts the answers;
    /// each carries its send time, so every answer gives a round-trip time.
    async fn udp(&self, socket: ClientSocket, rate: Option<f64>) -> WorkerOutcome {
        let mut hist = new_histogram();
        let ClientSocket::Datagram(sock) = socket else { unreachable!("checked: datagram endpoint") };
        let size = self.config.size;
        let mut msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; net::MAX_DATAGRAM];
        let period = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let mut in_flight = 0usize;
        let mut seq = 0u64;
        let mut next_send = Instant::now();
        let send_more = |in_flight: usize, next: Instant| match period {
            Some(_) => Instant::now() >= next,
            None => in_flight < UDP_WINDOW,
        };
        while self.running() {
            if send_more(in_flight, next_send) {
                seq += 1;
                let sent_at = self.start.elapsed().as_nanos() as u64;
                msg[..8].copy_from_slice(&sent_at.to_le_bytes());
                msg[8..16].copy_from_slice(&seq.to_le_bytes());
                match sock.send(&msg).await {
                    Ok(_) => {
                        in_flight += 1;
                        self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return self.udp_failed(hist, e),
                }
                if let Some(p) = period {
                    next_send += p;
                }
                continue;
            }
            // Wait for an answer, the next send time, or a lull that says the window was lost.
            let wait_until = match period {
                Some(_) => next_send,
                None => Instant::now() + UDP_LOSS_WAIT,
            };
            tokio::select! {
                r = sock.recv(&mut buf) => match r {
                    Ok(n) => self.udp_answer(&buf[..n], &msg, &mut hist, &mut in_flight),
                    Err(e) => return self.udp_failed(hist, e),
                },
                _ = tokio::time::sleep_until(wait_until.into()) => {
                    if period.is_none() {
                        in_flight = 0;
                    }
                }
                _ = self.stop.cancelled() => break,
            }
        }
        // Answers still on their way count.
        let drain_until = Instant::now() + UDP_LOSS_WAIT;
        while let Ok(Ok(n)) = tokio::time::timeout_at(drain_until.into(), sock.recv(&mut buf)).await {
            self.udp_answer(&buf[..n], &msg, &mut hist, &mut in_flight);
        }
        drop::<DatagramSocket>(sock);
        WorkerOutcome { hist, error: None }
    }

    /// A datagram socket's error; a refusal (an ICMP port unreachable for an earlier datagram)
    /// says nothing listens there, and becomes the run's error if nothing was answered.
    fn udp_failed(&self, hist: Histogram<u64>, e: std::io::Error) -> WorkerOutcome {
        if e.kind() != std::io::ErrorKind::ConnectionRefused {
            return self.failed(hist, e);
        }
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        WorkerOutcome { hist, error: Some(Failure::Refused) }
    }

    fn udp_answer(&self, answer: &[u8], msg: &[u8], hist: &mut Histogram<u64>, in_flight: &mut usize) {
        if answer.len() != msg.len() || answer[UDP_HEADER..] != msg[UDP_HEADER..] {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent_at = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
        let now = self.start.elapsed().as_nanos() as u64;
        record(hist, Duration::from_nanos(now.saturating_sub(sent_at)));
        *in_flight = in_flight.saturating_sub(1);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(answer.len() as u64, Ordering::Relaxed);
    }
}

/// One step of a bulk stream.
enum Step {
    /// Reversed: this many bytes read (0: the end of the stream).
    Read(usize),
    /// This many bytes written.
    Wrote(usize),
    /// Writing: this many bytes arrived from the server (0: it ended its sending side).
    Incoming(usize),
}

/// Whether a bulk stream still moves: it has taken a step (a write or a read) since the last
/// check, or, writing, the server has taken bytes off the send queue (a slow reader can take
/// them for seconds before a write completes again).
struct Motion {
    /// The steps at the last check.
    steps: u64,
    /// The bytes queued at the last check.
    queued: Option<u32>,
    /// When the stream last moved, as far as the checks tell.
    since: Instant,
}

impl Motion {
    /// Takes the stream's state at `now` and returns how long it has stood still.
    fn check(&mut self, now: Instant, steps: u64, queued: Option<u32>) -> Duration {
        let drained = matches!((queued, self.queued), (Some(q), Some(before)) if q < before);
        if steps != self.steps || drained {
            self.since = now;
        }
        (self.steps, self.queued) = (steps, queued);
        now.duration_since(self.since)
    }
}

/// The misfit of a bulk stream that stood still for `still`, having moved `moved` bytes.
fn stall(reverse: bool, moved: u64, still: Duration) -> Misfit {
    match (reverse, moved) {
        (true, 0) => Misfit::SentNothing(still),
        (true, _) => Misfit::StoppedSending(still),
        (false, _) => Misfit::StoppedReading(still),
    }
}

/// The bytes written to `stream` that the peer has not taken yet (`SIOCOUTQ`: for TCP, not yet
/// acknowledged; for a Unix stream, not yet read); `None` if the kernel does not say.
fn unsent(stream: &Stream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer; the descriptor is open, the stream owns it.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (r == 0).then(|| queued.max(0) as u32)
}

/// The latency of a request due at `scheduled` whose exchange took `took`, as a generator with a
/// perfect timer would have measured it, and when its answer would have been in: the request
/// leaves at its time or when the previous answer would have been in (`ideal_free`), whichever
/// is later. Waiting for a server still busy with earlier requests counts (coordinated
/// omission); a timer that woke late (tokio's tick is a millisecond, and several requests may
/// then leave at once) is the generator's own, and does not. In a closed loop `scheduled` is
/// when the request was sent, and the latency is `took`.
fn latency_on_time(scheduled: Instant, ideal_free: Instant, took: Duration) -> (Duration, Instant) {
    let done = scheduled.max(ideal_free) + took;
    (done.saturating_duration_since(scheduled), done)
}

/// Above this size a message is written while its answer is read: an echo server sends the
/// start back before the end has arrived, and once the socket buffers both ways are full, a
/// client that only writes would wait for it forever, and it for the client. Below, the
/// buffers always hold it, and the plain order costs less.
const WRITE_WHILE_READING: usize = 64 * 1024;

/// Writes `msg` and reads exactly `answer.len()` bytes back: read_exact, but an early end says
/// why when the server said it (its busy notice), from the bytes that came before it.
async fn stream_exchange(s: &mut Stream, msg: &[u8], answer: &mut [u8]) -> std::io::Result<()> {
    if msg.len() <= WRITE_WHILE_READING {
        s.write_all(msg).await?;
        s.flush().await?;
        return read_answer(s, answer).await;
    }
    let (mut rd, mut wr) = tokio::io::split(&mut *s);
    let write = async {
        wr.write_all(msg).await?;
        wr.flush().await
    };
    tokio::try_join!(write, read_answer(&mut rd, answer)).map(|_| ())
}

/// Reads exactly `answer.len()` bytes; see [`stream_exchange`].
async fn read_answer<R: AsyncRead + Unpin>(s: &mut R, answer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < answer.len() {
        match s.read(&mut answer[filled..]).await? {
            0 => {
                let why = busy_notice(&answer[..filled])
                    .unwrap_or_else(|| "the server closed before it answered in full".into());
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why));
            }
            n => filled += n,
        }
    }
    Ok(())
}

/// The notice a sockit server at its `--max-conns` sends before it closes, when `bytes` begin
/// with it: a reason for this connection's failure, not a sign of the wrong kind of server.
fn busy_notice(bytes: &[u8]) -> Option<String> {
    crate::server::busy_notice_in(bytes).map(|(notice, _)| format!("turned away: {notice}"))
}

/// What an answer that differs from the message says: the busy notice it may be, or else that
/// the server may be the wrong kind (`misfit`).
fn not_the_answer(answer: &[u8], misfit: Misfit) -> Failure {
    match busy_notice(answer) {
        Some(busy) => Failure::Other(busy),
        None => Failure::Misfit(misfit),
    }
}

/// How often a bulk stream's motion is checked.
const MOTION_CHECK: Duration = Duration::from_millis(250);
/// How long a bulk stream may stand still before the run ends with an error.
const STALL_LIMIT: Duration = REQUEST_TIMEOUT;
/// At the end of a run, a stream that stood still for the later half of it, and at least this
/// long, is an error too (shorter runs are taken as they are). Long enough that a reader that
/// is slow but reads, whose window reopens only in steps of tens of KiB, is not taken for one
/// that stopped.
const STALL_AT_END: Duration = Duration::from_millis(1500);
/// How long a bulk stream may take to close at the end.
const STREAM_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// The slowest open-loop rate: one request in about 17 minutes.
const MIN_RATE: f64 = 0.001;

/// Each UDP datagram starts with its send time and sequence number.
const UDP_HEADER: usize = 16;
/// Datagrams in flight per socket when no rate is given.
const UDP_WINDOW: usize = 32;
/// How long a UDP worker waits before taking the datagrams in flight as lost.
const UDP_LOSS_WAIT: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Requests every 200 µs, each answered in 30 µs, but the timer woke 1 ms late and sent the
    /// first five at once, each after the one before: every latency is still 30 µs.
    #[test]
    fn a_late_timer_is_not_the_servers_latency() {
        let start = Instant::now();
        let mut free = start;
        for i in 0..5 {
            let latency;
            (latency, free) = latency_on_time(start + us(200 * i), free, us(30));
            assert_eq!(latency, us(30), "request {i}");
        }
    }

    /// A server that stalls for 1 ms on one request delays the ones due meanwhile: they count
    /// the wait (coordinated omission), until the queue has drained.
    #[test]
    fn waiting_for_a_stalled_server_counts() {
        let start = Instant::now();
        let mut free = start;
        let took = [us(1000), us(30), us(30), us(30), us(30), us(30), us(30)];
        let want = [1000, 830, 660, 490, 320, 150, 30].map(us);
        for (i, (took, want)) in took.into_iter().zip(want).enumerate() {
            let latency;
            (latency, free) = latency_on_time(start + us(200 * i as u64), free, took);
            assert_eq!(latency, want, "request {i}");
        }
    }
}
