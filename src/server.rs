//! The server: many clients at once on any bound socket, each message answered by a
//! [`Service`], with limits, timeouts and an orderly shutdown.
//!
//! [`run`] takes a socket the caller bound ([`crate::net::bind`]) and a cancellation token, and
//! returns a [`Summary`] once the token is cancelled (or after the first client with `once`, or
//! on a listener of one inherited connection, [`Listener::is_single`]).
//! On a listener, every connection runs in its own task, or, for the message services on the
//! server's own threads, as its own state machine in an event loop (`server/evloop.rs`); either
//! way a client that leaves, resets or stalls only ever blocks itself. On a datagram socket,
//! each datagram is answered to its sender. Shutdown is signal, then drain, then a deadline:
//! cancelling the token stops the accepting, each connection finishes the message it is on and
//! closes, and whatever is still running after [`ServerConfig::grace`] is cut.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::acl::AccessList;
use crate::framing::{DEFAULT_MAX_FRAME, FrameCodec, FrameError, Framing, find_text_line, text_lines};
use crate::net::{Conn, DatagramSocket, Listener, MAX_DATAGRAM, Packet, PeerAddr, ServerSocket, Stream};
use crate::service::{Flow, Service};
use crate::stop::{Stage, StopSignal, Watch};

mod evloop;

/// How a server behaves. [`ServerConfig::new`] gives the defaults for a service.
#[derive(Clone)]
pub struct ServerConfig {
    /// What to do with each message.
    pub service: Service,
    /// How messages are delimited on stream sockets (ignored on packet sockets, whose every
    /// packet is one message).
    pub framing: Framing,
    /// The largest frame a client may send under `line` or `len` framing.
    pub max_frame: usize,
    /// At most this many clients at once; more are told so and closed at once.
    pub max_conns: Option<usize>,
    /// Close a connection when it has been silent this long (reading or being unable to write).
    pub idle_timeout: Option<Duration>,
    /// Serve one client (or one datagram) and stop.
    pub once: bool,
    /// After shutdown is asked for, how long connections get to finish the message they are on
    /// (or a command, a transfer) before they are cut. One waiting for a new message ends at once.
    pub grace: Duration,
    /// Which peer addresses may connect (or send datagrams); deny wins.
    pub access: Arc<AccessList>,
    /// At most this many connections at once from one IP address.
    pub max_per_source: Option<usize>,
    /// Told about every connection and problem; the library itself never prints.
    pub monitor: Arc<dyn Monitor>,
    /// Serve a TCP listener on threads of its own, one per listening socket
    /// ([`crate::net::BindOptions::listeners`]), instead of on the caller's runtime: each runs
    /// an epoll loop of its own for the message services on plain TCP, and a single-threaded
    /// runtime for the rest. A connection's work then never crosses threads. A listener of
    /// several sockets is always served this way, whatever this says.
    pub own_threads: bool,
}

impl ServerConfig {
    /// A configuration with the defaults: raw framing, 1 MiB frames, no connection limit, no
    /// idle timeout, a 5-second grace period and no monitor.
    pub fn new(service: Service) -> ServerConfig {
        ServerConfig {
            service,
            framing: Framing::Raw,
            max_frame: DEFAULT_MAX_FRAME,
            max_conns: None,
            idle_timeout: None,
            once: false,
            grace: Duration::from_secs(5),
            access: Arc::new(AccessList::default()),
            max_per_source: None,
            monitor: Arc::new(Silent),
            own_threads: false,
        }
    }
}

/// Observes a running server. Every method has an empty default.
pub trait Monitor: Send + Sync {
    /// A connection was accepted and admitted (past the access list and the limits); on a
    /// connected family only, before its service starts.
    fn opened(&self, _peer: &PeerAddr) {}
    /// A connection ended.
    fn closed(&self, _report: &ConnReport) {}
    /// A client was turned away.
    fn refused(&self, _peer: &PeerAddr, _reason: &str) {}
    /// Something went wrong that did not stop the server (an accept error, a datagram that could
    /// not be answered).
    fn problem(&self, _peer: Option<&PeerAddr>, _what: &str) {}
}

/// A monitor that ignores everything.
#[derive(Debug, Clone, Copy)]
pub struct Silent;
impl Monitor for Silent {}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client closed its side.
    PeerClosed,
    /// A relay's target closed its side first (the client closed after).
    TargetClosed,
    /// The service ended the session (`qa` after `bye`).
    SessionEnded,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// The server was shutting down.
    Shutdown,
    /// The server's grace period ran out while the connection was still busy.
    Cut,
    /// The time limit on what the session ran (`spawn --timeout`) ran out.
    TimedOut,
    /// The client broke the framing (an oversized or truncated frame).
    Protocol(String),
    /// The socket failed (a reset, for instance).
    Io(String),
    /// A fault the relay was asked to inject ended it (`--reset-after`).
    Injected(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::PeerClosed => f.write_str("closed by client"),
            End::TargetClosed => f.write_str("closed by target"),
            End::SessionEnded => f.write_str("session ended"),
            End::IdleTimeout => f.write_str("idle timeout"),
            End::Shutdown => f.write_str("server shutting down"),
            End::Cut => f.write_str("cut at shutdown deadline"),
            End::TimedOut => f.write_str("time limit reached"),
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::Io(e) => write!(f, "error: {e}"),
            End::Injected(what) => write!(f, "injected fault: {what}"),
        }
    }
}

/// What happened on one connection.
#[derive(Debug, Clone)]
pub struct ConnReport {
    /// Who it was.
    pub peer: PeerAddr,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// How long it lasted.
    pub duration: Duration,
    /// Why it ended.
    pub end: End,
}

/// Totals over a server's life, returned by [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections turned away (over `max_conns`).
    pub refused: u64,
    /// Connections cut at the shutdown deadline.
    pub cut: u64,
    /// Datagrams received (datagram sockets).
    pub datagrams_in: u64,
    /// Datagrams sent (datagram sockets).
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// How long the server ran.
    pub uptime: Duration,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    fn summary(&self, uptime: Duration) -> Summary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Summary {
            connections: get(&self.connections),
            refused: get(&self.refused),
            cut: get(&self.cut),
            datagrams_in: get(&self.datagrams_in),
            datagrams_out: get(&self.datagrams_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            uptime,
        }
    }
}

/// What every connection task shares.
struct Shared {
    config: ServerConfig,
    counters: Counters,
    /// Cancelled when shutdown is asked for: stop reading, finish, close. A child of the
    /// caller's token, so that [`StopOnDrop`] can cancel it without cancelling theirs.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: stop even in the middle of a write.
    cut: CancellationToken,
    /// Runs the TLS handshake of each connection on a `tls://` listener.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `shutdown` and `cut` as the message loops wait on them, without a lock per wait.
    stop: Arc<StopSignal>,
}

/// Runs a server on `socket` until `shutdown` is cancelled (or, with `once` or on a
/// [single](Listener::is_single) listener, until the first client is done), then drains
/// connections for up to `config.grace` and returns the totals.
///
/// The socket is dropped before this returns, which removes a Unix socket file it created.
///
/// Dropping the future before it returns (a `select!` that took another branch, a `timeout`,
/// an aborted task) stops the server at once, as at the end of the grace period: it stops
/// accepting, and every connection it was serving is closed, on its own threads too.
pub async fn run(socket: ServerSocket, config: ServerConfig, shutdown: CancellationToken) -> Summary {
    let started = Instant::now();
    let tls = match &socket {
        ServerSocket::Listener(l) => l.tls().map(|t| t.acceptor()),
        ServerSocket::Datagram(_) => None,
    };
    let shared = Arc::new(Shared {
        config,
        counters: Counters::default(),
        shutdown: shutdown.child_token(),
        cut: CancellationToken::new(),
        tls,
        stop: Arc::default(),
    });
    let _stop_on_drop = StopOnDrop(shared.clone());
    let serve = async {
        match (socket, &shared.config.service) {
            // A listener of several sockets has no other way to serve them all at once.
            (ServerSocket::Listener(listener), _)
                if listener.sockets() > 1 || (shared.config.own_threads && listener.is_tcp()) =>
            {
                serve_on_threads(listener, &shared).await
            }
            (ServerSocket::Listener(listener), _) => accept_loop(listener, &shared).await,
            (ServerSocket::Datagram(socket), Service::Relay(relay)) => {
                let totals = Arc::new(crate::relay::DatagramTotals::default());
                let run = crate::relay::DatagramRelay {
                    shutdown: &shared.shutdown,
                    monitor: shared.config.monitor.clone(),
                    max_sessions: shared.config.max_conns,
                    access: shared.config.access.clone(),
                    idle: shared.config.idle_timeout,
                    totals: totals.clone(),
                };
                crate::relay::datagram_relay(socket, relay.clone(), run).await;
                let c = &shared.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                c.connections.fetch_add(get(&totals.sessions), Ordering::Relaxed);
                c.refused.fetch_add(get(&totals.refused), Ordering::Relaxed);
                c.datagrams_in.fetch_add(get(&totals.datagrams_in), Ordering::Relaxed);
                c.datagrams_out.fetch_add(get(&totals.datagrams_out), Ordering::Relaxed);
                c.bytes_in.fetch_add(get(&totals.bytes_in), Ordering::Relaxed);
                c.bytes_out.fetch_add(get(&totals.bytes_out), Ordering::Relaxed);
            }
            (ServerSocket::Datagram(socket), _) => datagram_loop(socket, &shared).await,
        }
    };
    // The token is the caller's; the message loops watch `stop`, raised from it here.
    let relay_shutdown = async {
        shared.shutdown.cancelled().await;
        shared.stop.raise(Stage::Shutdown);
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = serve => {}
        () = relay_shutdown => {}
    }
    shared.counters.summary(started.elapsed())
}

/// What the accept loops of one server share: its connections, and the limits on them.
struct Accepting {
    tracker: TaskTracker,
    limit: Option<Arc<Semaphore>>,
    per_source: PerSource,
}

impl Accepting {
    fn new(config: &ServerConfig) -> Accepting {
        Accepting {
            tracker: TaskTracker::new(),
            limit: config.max_conns.map(|n| Arc::new(Semaphore::new(n))),
            per_source: PerSource::default(),
        }
    }
}

/// Serves one listener on the caller's runtime, and drains its connections.
async fn accept_loop(listener: Listener, shared: &Arc<Shared>) {
    let accepting = Accepting::new(&shared.config);
    let once_done = accept_until_stopped(listener, shared, &accepting).await;
    let tracker = &accepting.tracker;
    tracker.close();
    if once_done {
        // With --once the one client is served to its end; shutdown still bounds it.
        tokio::select! {
            _ = tracker.wait() => return,
            _ = shared.shutdown.cancelled() => {}
        }
    }
    drain(tracker, shared).await;
}

/// Stops whatever a server still runs when [`run`] ends. After a normal return nothing is left
/// to stop; when `run`'s future is dropped early, the connection tasks it spawned and its own
/// threads would otherwise serve on with nobody to stop them.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let shared = &self.0;
        shared.shutdown.cancel();
        shared.stop.raise(Stage::Shutdown);
        shared.cut.cancel();
        shared.stop.raise(Stage::Cut);
    }
}

/// What one of [`serve_on_threads`]'s threads runs, made before the thread starts.
enum ThreadLoop {
    /// The server's own event loop ([`evloop`]).
    Events(evloop::Setup),
    /// A single-threaded runtime, and the listening socket to register with it there.
    Tokio(tokio::runtime::Runtime, crate::net::Unregistered),
}

/// Serves a TCP listener with a thread and a single-threaded runtime for each of its sockets
/// ([`crate::net::BindOptions::listeners`]), so that a connection's work never crosses threads:
/// the kernel spreads new connections over the sockets, and each thread accepts from its own
/// and runs what it accepted. Returns once every thread has drained its connections.
async fn serve_on_threads(listener: Listener, shared: &Arc<Shared>) {
    let parts = match listener.into_parts() {
        Ok(parts) => parts,
        Err(e) => {
            shared.config.monitor.problem(None, &format!("cannot share out the listening sockets: {e}"));
            return;
        }
    };
    let accepting = Arc::new(Accepting::new(&shared.config));
    let event_loop = evloop::serves(shared);
    // Every thread's own descriptors are made here, before any thread accepts: once the
    // connections have used the descriptors up, a thread that still had to make its own could
    // not start, and the clients queued on its listener would be reset.
    let loops: Vec<ThreadLoop> = parts
        .into_iter()
        .filter_map(|part| {
            let made = match event_loop {
                true => evloop::setup(part.into_socket()).map(ThreadLoop::Events),
                false => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| ThreadLoop::Tokio(runtime, part)),
            };
            made.map_err(|e| shared.config.monitor.problem(None, &format!("cannot start a server thread: {e}"))).ok()
        })
        .collect();
    // The tracker is closed when the last accept loop stops: only then can no task be added.
    let accepting_loops = Arc::new(AtomicU64::new(loops.len() as u64));
    let mut done = Vec::with_capacity(loops.len());
    for (i, thread_loop) in loops.into_iter().enumerate() {
        let (t_shared, t_accepting, loops) = (shared.clone(), accepting.clone(), accepting_loops.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let worker = move || {
            let (shared, accepting) = (t_shared, t_accepting);
            let _done = tx;
            let stopped = || {
                if loops.fetch_sub(1, Ordering::AcqRel) == 1 {
                    accepting.tracker.close();
                }
            };
            let (runtime, part) = match thread_loop {
                ThreadLoop::Events(setup) => {
                    evloop::run(setup, &shared, &accepting);
                    return stopped();
                }
                ThreadLoop::Tokio(runtime, part) => (runtime, part),
            };
            runtime.block_on(async {
                match part.register() {
                    Ok(listener) => {
                        accept_until_stopped(listener, &shared, &accepting).await;
                    }
                    Err(e) => shared.config.monitor.problem(None, &format!("cannot listen on a server thread: {e}")),
                }
                stopped();
                // Runs this thread's connections until every thread's are done.
                drain(&accepting.tracker, &shared).await;
            });
        };
        match std::thread::Builder::new().name(format!("sockit-server-{i}")).spawn(worker) {
            Ok(_) => done.push(rx),
            Err(e) => {
                // The closure, and with it this part's socket, is gone: count its loop as stopped.
                shared.config.monitor.problem(None, &format!("cannot start a server thread: {e}"));
                if accepting_loops.fetch_sub(1, Ordering::AcqRel) == 1 {
                    accepting.tracker.close();
                }
            }
        }
    }
    // Each thread drops its sender when it ends, whether it ran or failed.
    for rx in done {
        let _ = rx.await;
    }
}

/// Accepts connections and spawns a task for each until shutdown (or, with `once` or on a
/// single listener, after the first). Returns whether it stopped for `once`.
async fn accept_until_stopped(mut listener: Listener, shared: &Arc<Shared>, accepting: &Accepting) -> bool {
    let tracker = &accepting.tracker;
    let mut backoff = Duration::from_millis(10);
    // An inherited connected socket is the only client there will be.
    let once = shared.config.once || listener.is_single();
    let mut once_done = false;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (conn, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of descriptors or memory: say so, wait a little, and go on; the clients
                // already connected keep being served.
                shared.config.monitor.problem(None, &format!("accept failed: {e}"));
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let held = match admit(&peer, shared, accepting) {
            Admission::Admitted(held) => held,
            Admission::Denied => {
                // Nothing is said to a client turned away by address: the connection is reset.
                if let Conn::Stream(s) = &conn {
                    s.set_linger_zero();
                }
                continue;
            }
            Admission::Busy(max) => {
                let shared = shared.clone();
                tracker.spawn(async move { refuse(conn, max, &shared).await });
                continue;
            }
        };
        let span = tracing::debug_span!("conn", %peer);
        let task_shared = shared.clone();
        let task = async move {
            let report = serve_conn(conn, peer, &task_shared).await;
            drop(held);
            task_shared.config.monitor.closed(&report);
        };
        // A span costs on every poll even when nothing records it: attach it only when debug
        // logging is on.
        if span.is_disabled() {
            tracker.spawn(task);
        } else {
            tracker.spawn(task.instrument(span));
        }
        if once {
            once_done = true;
            break;
        }
    }
    // Stop accepting: closing the listener now makes new clients fail fast instead of waiting
    // in a backlog nobody will drain, and removes the socket file.
    drop(listener);
    once_done
}

/// What a new connection holds while it lives: its seat under `max_conns` and its count
/// against its source address.
struct Held {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _source: Option<SourceSlot>,
}

/// Whether a new connection may stay.
enum Admission {
    Admitted(Held),
    /// Refused by its address (the access list or `max_per_source`): reset it.
    Denied,
    /// Over `max_conns`, which is given: tell the client the server is busy, then close.
    Busy(usize),
}

/// Decides on a new connection, counts it and tells the monitor of a refusal.
fn admit(peer: &PeerAddr, shared: &Shared, accepting: &Accepting) -> Admission {
    if let Err(why) = admit_peer(peer, shared, &accepting.per_source) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        shared.config.monitor.refused(peer, &why);
        return Admission::Denied;
    }
    // Counted only when limited: the table costs a lock and a hash per connection.
    let source = shared.config.max_per_source.and_then(|_| SourceSlot::take(peer, &accepting.per_source));
    let permit = match &accepting.limit {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                let max = shared.config.max_conns.unwrap_or(0);
                shared.config.monitor.refused(peer, &format!("over --max-conns {max}"));
                return Admission::Busy(max);
            }
        },
    };
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    shared.config.monitor.opened(peer);
    Admission::Admitted(Held { _permit: permit, _source: source })
}

/// Connections open now per source address, for `max_per_source`.
type PerSource = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// Checks a new connection's address against the access list and the per-source limit.
fn admit_peer(peer: &PeerAddr, shared: &Shared, per_source: &PerSource) -> Result<(), String> {
    let PeerAddr::Inet(addr) = peer else { return Ok(()) };
    let ip = canonical_ip(addr.ip());
    shared.config.access.check(ip).map_err(|r| r.to_string())?;
    if let Some(max) = shared.config.max_per_source {
        let open = per_source.lock().unwrap_or_else(|e| e.into_inner()).get(&ip).copied().unwrap_or(0);
        if open >= max {
            return Err(format!("over --max-per-source {max} from {ip}"));
        }
    }
    Ok(())
}

fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One connection counted against its source address while it lives.
struct SourceSlot {
    ip: std::net::IpAddr,
    table: PerSource,
}

impl SourceSlot {
    fn take(peer: &PeerAddr, table: &PerSource) -> Option<SourceSlot> {
        let PeerAddr::Inet(addr) = peer else { return None };
        let ip = canonical_ip(addr.ip());
        *table.lock().unwrap_or_else(|e| e.into_inner()).entry(ip).or_insert(0) += 1;
        Some(SourceSlot { ip, table: table.clone() })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Whether a datagram's sender passes the access list. Refusals are reported at most once a
/// second, so that a flood of datagrams does not become a flood of log lines.
pub(crate) fn datagram_admitted(
    peer: Option<&PeerAddr>,
    access: &AccessList,
    monitor: &dyn Monitor,
    last_report: &mut Option<Instant>,
) -> bool {
    let Some(PeerAddr::Inet(addr)) = peer else { return true };
    match access.check(canonical_ip(addr.ip())) {
        Ok(()) => true,
        Err(why) => {
            if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last_report = Some(Instant::now());
                monitor.refused(peer.expect("matched above"), &format!("datagram dropped: {why}"));
            }
            false
        }
    }
}

/// Waits for the connections to finish, cutting them when the grace period runs out.
async fn drain(tracker: &TaskTracker, shared: &Shared) {
    if tokio::time::timeout(shared.config.grace, tracker.wait()).await.is_err() {
        shared.cut.cancel();
        shared.stop.raise(Stage::Cut);
        tracker.wait().await;
    }
}

/// Tells a client over the limit that the server is busy, in the connection's framing, and
/// closes. Bounded: a client that does not read is dropped after a second.
async fn refuse(conn: Conn, max: usize, shared: &Shared) {
    let text = busy_text(max);
    let send = async {
        // A TLS client can read the refusal only after a handshake (within the same second).
        let conn = match (conn, &shared.tls) {
            (Conn::Stream(Stream::Tcp(s)), Some(acceptor)) if !matches!(shared.config.service, Service::Relay(_)) => {
                match crate::tls::accept(acceptor, s).await {
                    Ok(s) => Conn::Stream(Stream::Tls(Box::new(s))),
                    Err(_) => return,
                }
            }
            (conn, _) => conn,
        };
        match conn {
            // A relay's clients speak the target's protocol, into which no text of ours fits:
            // they get a reset, as from a target that is not there.
            Conn::Stream(s) if matches!(shared.config.service, Service::Relay(_)) => s.set_linger_zero(),
            Conn::Seqpacket(_) if matches!(shared.config.service, Service::Relay(_)) => {}
            // A client that expects a HELLO gets an ERROR it can read in its place.
            Conn::Stream(mut s) if shared.config.service.greets_with_hello() => {
                let _ =
                    crate::proto::write_msg(&mut s, &crate::proto::Msg::error(crate::proto::code::FAILED, text)).await;
                let _ = s.shutdown().await;
            }
            Conn::Stream(mut s) => {
                let _ = s.write_all(&busy_message(&text, shared.config.framing)).await;
                let _ = s.shutdown().await;
            }
            Conn::Seqpacket(s) => {
                let _ = s.send(text.as_bytes()).await;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
}

/// How the notice to a client over `max_conns` begins.
const BUSY_NOTICE: &str = "sockit: server busy";

/// What a client over `max_conns` is told.
fn busy_text(max: usize) -> String {
    format!("{BUSY_NOTICE} ({} connected), try again later", crate::render::count(max as u64, "client"))
}

/// The notice at the start of `bytes`, as `refuse` sends it on a stream (a line, or a frame of
/// `len` framing): its text without the `sockit: ` opening, and the bytes it took. Exact, so
/// that sockit's clients can say it as an error instead of printing it as an answer.
pub(crate) fn busy_notice_in(bytes: &[u8]) -> Option<(&str, usize)> {
    let framed = bytes
        .split_first_chunk::<4>()
        .and_then(|(len, rest)| rest.get(..u32::from_be_bytes(*len) as usize))
        .map(|text| (text, 4 + text.len()));
    let line = bytes.iter().position(|&b| b == b'\n').map(|end| (&bytes[..end], end + 1));
    [framed, line].into_iter().flatten().find_map(|(text, took)| Some((busy_text_exact(text)?, took)))
}

/// `text` without its `sockit: ` opening, when it is exactly a notice `busy_text` makes (a
/// seqpacket client gets it as a packet of its own, an exec/files/spawn client in an ERROR).
pub(crate) fn busy_text_exact(text: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(text).ok()?;
    let count = text.strip_prefix(BUSY_NOTICE)?.strip_prefix(" (")?;
    let digits = count.find(|c: char| !c.is_ascii_digit())?;
    let max = count[..digits].parse().ok()?;
    (text == busy_text(max)).then(|| text.strip_prefix("sockit: ").unwrap_or(text))
}

/// `text` as one message in `framing` (under raw framing, a line).
fn busy_message(text: &str, framing: Framing) -> BytesMut {
    let mut buf = BytesMut::new();
    let _ = FrameCodec::new(framing, usize::MAX).encode_into(text.as_bytes(), &mut buf);
    if framing == Framing::Raw {
        buf.extend_from_slice(b"\n");
    }
    buf
}

/// What a session moved, for the server's report.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// The stop signals and idle limit the server hands a session.
pub struct SessionLimits<'a> {
    /// Stop taking new requests.
    pub shutdown: &'a CancellationToken,
    /// Kill whatever runs and end now.
    pub cut: &'a CancellationToken,
    /// How long to wait for the next request, or for a client that takes none of the output.
    pub idle_timeout: Option<Duration>,
}

impl SessionLimits<'_> {
    /// Runs the server's side of the handshake ([`crate::auth`]) within these limits: `Ok` once
    /// the client is in, else how the session ended.
    pub async fn admit(
        &self,
        stream: &mut Stream,
        service: crate::proto::ServiceKind,
        policy: &crate::auth::Policy,
    ) -> Result<(), End> {
        let uid = stream.peer_uid().map_err(|e| End::Io(format!("cannot read the peer's credentials: {e}")))?;
        match self.between_requests(crate::auth::server_handshake(stream, service, policy, uid)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Protocol(format!("authentication failed: {e}"))),
            Err(end) => Err(end),
        }
    }

    /// Waits for `fut` unless the session should end first (shutdown, cut, or idle between
    /// requests).
    pub async fn between_requests<F: Future>(&self, fut: F) -> Result<F::Output, End> {
        let idle = async {
            match self.idle_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = fut => Ok(v),
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
            _ = idle => Err(End::IdleTimeout),
        }
    }
}

impl Shared {
    fn session_limits(&self) -> SessionLimits<'_> {
        SessionLimits { shutdown: &self.shutdown, cut: &self.cut, idle_timeout: self.config.idle_timeout }
    }

    /// Adds a finished connection, which lasted `duration`, to the totals, and reports it.
    fn finished(&self, peer: PeerAddr, duration: Duration, io: &Traffic, end: End) -> ConnReport {
        if end == End::Cut {
            self.counters.cut.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.bytes_in.fetch_add(io.bytes_in, Ordering::Relaxed);
        self.counters.bytes_out.fetch_add(io.bytes_out, Ordering::Relaxed);
        ConnReport { peer, bytes_in: io.bytes_in, bytes_out: io.bytes_out, duration, end }
    }
}

async fn serve_conn(conn: Conn, peer: PeerAddr, shared: &Shared) -> ConnReport {
    let started = Instant::now();
    let mut io = Traffic::default();
    let conn = match (conn, &shared.tls) {
        (Conn::Stream(Stream::Tcp(s)), Some(acceptor)) => match Box::pin(tls_handshake(acceptor, s, shared)).await {
            Ok(s) => Conn::Stream(Stream::Tls(Box::new(s))),
            Err(end) => return ConnReport { peer, bytes_in: 0, bytes_out: 0, duration: started.elapsed(), end },
        },
        (conn, _) => conn,
    };
    // The message session on a stream is the common case and is kept inline; the others are
    // boxed, so that their larger state does not make every connection's task bigger.
    let end = match (conn, &shared.config.service) {
        (Conn::Stream(s), Service::Discard) => Box::pin(discard_session(s, shared, &mut io)).await,
        (Conn::Stream(s), Service::Source) => Box::pin(source_session(Sink::Stream(s), shared, &mut io)).await,
        (Conn::Seqpacket(s), Service::Source) => Box::pin(source_session(Sink::Packets(s), shared, &mut io)).await,
        (Conn::Stream(s), Service::Exec(cfg)) => {
            Box::pin(crate::exec::session(s, cfg, shared.session_limits(), &mut io)).await
        }
        (Conn::Stream(s), Service::Files(cfg)) => {
            Box::pin(crate::files::session(s, cfg.clone(), shared.session_limits(), &mut io)).await
        }
        (Conn::Stream(s), Service::Spawn(cfg)) => {
            Box::pin(crate::spawn::session(s, cfg, shared.session_limits(), &mut io)).await
        }
        (Conn::Stream(s), Service::Chat(room)) => {
            Box::pin(crate::chat::session(s, room.clone(), shared.session_limits(), &mut io)).await
        }
        (conn, Service::Relay(cfg)) => {
            Box::pin(crate::relay::session(conn, &peer, cfg, shared.session_limits(), &mut io)).await
        }
        (Conn::Stream(s), _) => stream_session(s, &peer, shared, &mut io).await,
        (Conn::Seqpacket(s), _) => Box::pin(seqpacket_session(s, &peer, shared, &mut io)).await,
    };
    shared.finished(peer, started.elapsed(), &io, end)
}

/// The server's side of a TLS handshake, in the connection's own task: bounded by
/// [`crate::tls::HANDSHAKE_DEADLINE`] and by shutdown, so that a client that stalls in the
/// middle of it holds only its own connection, and not for long.
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    shared: &Shared,
) -> Result<crate::tls::TlsStream, End> {
    let deadline = crate::tls::HANDSHAKE_DEADLINE;
    tokio::select! {
        r = tokio::time::timeout(deadline, crate::tls::accept(acceptor, tcp)) => match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(End::Protocol(crate::tls::accept_error(&e))),
            Err(_) => Err(End::Protocol(format!("no TLS handshake within {}s", deadline.as_secs()))),
        },
        _ = shared.shutdown.cancelled() => Err(End::Shutdown),
    }
}

/// The most answer bytes one received packet may produce: a datagram of 65,536 newlines to a
/// service with a long reply would otherwise multiply into gigabytes.
const PACKET_ANSWER_BUDGET: usize = 1 << 20;

/// Answers one received packet (datagram or seqpacket message): a service that thinks in lines
/// gets each line separately, its answers carrying the line's own terminator, each answer one
/// packet in `answers`. Stops early when the answers pass [`PACKET_ANSWER_BUDGET`], and says so
/// with `true` in the second place.
fn answer_packet(service: &Service, peer: &PeerAddr, msg: &mut [u8], answers: &mut Vec<Vec<u8>>) -> (Flow, bool) {
    let total = std::cell::Cell::new(0usize);
    let mut emit = |a: &[u8], term: &[u8]| {
        total.set(total.get() + a.len() + term.len());
        answers.push([a, term].concat());
    };
    // An empty message has no lines but is still a message.
    if !service.thinks_in_lines() || msg.is_empty() {
        return (service.respond(peer, msg, &mut |a| emit(a, b"")), false);
    }
    let lines: Vec<_> = text_lines(msg).collect();
    for (range, term) in lines {
        if service.respond(peer, &mut msg[range], &mut |a| emit(a, term)) == Flow::End {
            return (Flow::End, false);
        }
        if total.get() > PACKET_ANSWER_BUDGET {
            return (Flow::Continue, true);
        }
    }
    (Flow::Continue, false)
}

/// The limits on a session's waits: its idle timer and the server's stop signals.
///
/// The timer exists only when an idle timeout is configured, is boxed so that it takes no room
/// in every connection's task, and is reset for each wait rather than created anew. The waits
/// are [`Limited`] futures rather than `select!` inside an `async fn`, which would store the
/// wrapped future several times over and make every idle connection's task much larger.
struct Bounds<'a> {
    shared: &'a Shared,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The server's stop signal, registered once for the session (see [`crate::stop`]).
    stop: Watch,
}

impl<'a> Bounds<'a> {
    fn new(shared: &'a Shared) -> Bounds<'a> {
        Bounds {
            shared,
            idle: shared.config.idle_timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            stop: shared.stop.watch(),
        }
    }

    fn limit<F: Future>(&mut self, fut: F, stage: Stage) -> Limited<'_, F> {
        if let (Some(timer), Some(t)) = (&mut self.idle, self.shared.config.idle_timeout) {
            timer.as_mut().reset(crate::later(tokio::time::Instant::now(), t));
        }
        Limited { fut, idle: self.idle.as_mut(), stop: &self.stop, stage }
    }

    /// A read: ends at shutdown (a connection stops at a message boundary) or when idle.
    fn read<F: Future>(&mut self, fut: F) -> Limited<'_, F> {
        self.limit(fut, Stage::Shutdown)
    }

    /// A read of the rest of a message: ends only when the grace period is over, or when idle.
    fn read_rest<F: Future>(&mut self, fut: F) -> Limited<'_, F> {
        self.limit(fut, Stage::Cut)
    }

    /// A write: ends when the grace period is over (an answer is finished if there is time) or
    /// when idle (a client that stopped reading).
    fn write<F: Future>(&mut self, fut: F) -> Limited<'_, F> {
        self.limit(fut, Stage::Cut)
    }
}

pin_project_lite::pin_project! {
    /// A future that finishes with `fut`'s output, or with the reason it was stopped first.
    /// Cancel-safe exactly when `fut` is.
    struct Limited<'a, F> {
        #[pin]
        fut: F,
        idle: Option<&'a mut Pin<Box<tokio::time::Sleep>>>,
        stop: &'a Watch,
        stage: Stage,
    }
}

impl<F: Future> Future for Limited<'_, F> {
    type Output = Result<F::Output, End>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if let Some(timer) = this.idle
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(End::IdleTimeout));
        }
        if this.stop.poll_reached(*this.stage, cx).is_ready() {
            return Poll::Ready(Err(match this.stage {
                Stage::Cut => End::Cut,
                _ => End::Shutdown,
            }));
        }
        Poll::Pending
    }
}

/// Whether `service` answers messages one by one ([`Service::respond`]) in the session that
/// [`Messages`] keeps, rather than running a session of its own.
fn answers_messages(service: &Service) -> bool {
    match service {
        Service::Echo | Service::Upper | Service::Reply(_) | Service::Qa(_) | Service::Print(_) => true,
        Service::Discard
        | Service::Source
        | Service::Exec(_)
        | Service::Files(_)
        | Service::Chat(_)
        | Service::Relay(_)
        | Service::Spawn(_) => false,
    }
}

/// A message session's state apart from its socket: the framing, what came in and is not
/// answered yet, and the answers not yet written. [`stream_session`] drives it on tokio, and
/// [`evloop`] from its own event loop, so both answer exactly alike.
struct Messages {
    codec: FrameCodec,
    /// Under raw framing, services that think in lines answer each line of a chunk.
    text_lines: bool,
    /// Starts empty and grows only when a client sends something ([`read_some`]), so an idle
    /// connection costs no buffer memory.
    inbuf: BytesMut,
    /// Like `inbuf`, taken from the thread's spares when there is an answer to write.
    out: BytesMut,
    /// The client has closed its side.
    eof: bool,
}

/// What a message session does once the answers in its buffer are written out.
#[derive(Debug)]
enum Step {
    /// Read more: every complete message is answered.
    Read,
    /// Answer more: the answers reached the high-water mark first.
    AnswerMore,
    /// End the session.
    End(End),
}

impl Messages {
    fn new(config: &ServerConfig) -> Messages {
        Messages {
            codec: FrameCodec::new(config.framing, config.max_frame),
            text_lines: config.framing == Framing::Raw && config.service.thinks_in_lines(),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            eof: false,
        }
    }

    /// Answers what is buffered into `out`, stopping once the answers pass the high-water mark
    /// so that a burst of questions with long answers never piles up in memory. Each message
    /// is answered where it lies in the buffer and then stepped over, so a message costs no
    /// allocation.
    /// The room for answers is taken from `spares` when the first answer comes.
    fn answer(&mut self, service: &Service, peer: &PeerAddr, spares: &mut Spares) -> Step {
        let Messages { codec, text_lines, inbuf, out, eof } = self;
        while out.len() < OUT_HIGH_WATER {
            let next = if *text_lines {
                Ok(find_text_line(inbuf))
            } else {
                codec.find(inbuf, *eof).map(|m| m.map(|m| (m, &b""[..])))
            };
            match next {
                Ok(Some((found, term))) => {
                    let flow = service.respond(peer, &mut inbuf[found.msg], &mut |a| {
                        if out.capacity() == 0 {
                            *out = spares.take();
                        }
                        // Encoding fails only for an answer over max_frame under len framing;
                        // such an answer is dropped rather than sent malformed.
                        if codec.encode_into(a, out).is_ok() {
                            out.extend_from_slice(term);
                        }
                    });
                    inbuf.advance(found.consumed);
                    if flow == Flow::End {
                        return Step::End(End::SessionEnded);
                    }
                }
                Ok(None) if *eof => return Step::End(End::PeerClosed),
                Ok(None) => return Step::Read,
                Err(FrameError::Io(e)) => return Step::End(End::Io(e.to_string())),
                Err(e) => return Step::End(End::Protocol(e.to_string())),
            }
        }
        Step::AnswerMore
    }

    /// Whether part of a message has come in and waits for the rest. Once a session has answered
    /// what it could, its input buffer holds nothing else, so this is the whole test. At shutdown
    /// such a session reads on until its message is whole (or the grace period is over).
    fn mid_message(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Gives the buffers that hold nothing back to `spares`, for a session that waits: an idle
    /// connection keeps no buffer, and the next one to wake takes them without an allocation.
    fn park(&mut self, spares: &mut Spares) {
        for buf in [&mut self.inbuf, &mut self.out] {
            if buf.is_empty() && buf.capacity() > 0 {
                spares.give_back(std::mem::take(buf));
            }
        }
    }

    /// Gives both buffers back to `spares` at the end of a session, whatever they held.
    fn release(&mut self, spares: &mut Spares) {
        self.inbuf.clear();
        self.out.clear();
        self.park(spares);
    }

    /// Makes room to read into the input buffer, which is taken with `take` (from the
    /// thread's spares) when it has none.
    fn make_read_room(&mut self, take: impl FnOnce() -> BytesMut) {
        let buf = &mut self.inbuf;
        if buf.capacity() == 0 {
            *buf = take();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
    }
}

async fn stream_session(mut stream: Stream, peer: &PeerAddr, shared: &Shared, io: &mut Traffic) -> End {
    let mut msgs = Messages::new(&shared.config);
    let mut bounds = Bounds::new(shared);
    let end = loop {
        let step = Spares::on_thread(|spares| msgs.answer(&shared.config.service, peer, spares));
        if let Err(end) = write_out(&mut stream, &mut msgs.out, &mut bounds, io).await {
            break end;
        }
        match step {
            Step::Read => {}
            Step::AnswerMore => continue,
            Step::End(end) => break end,
        }
        let read = match msgs.mid_message() {
            true => bounds.read_rest(read_some(&mut stream, &mut msgs)),
            false => bounds.read(read_some(&mut stream, &mut msgs)),
        };
        match read.await {
            Ok(Ok(0)) => msgs.eof = true,
            Ok(Ok(n)) => io.bytes_in += n as u64,
            Ok(Err(e)) => break End::Io(e.to_string()),
            Err(end) => break end,
        }
    };
    Spares::on_thread(|spares| msgs.release(spares));
    match &end {
        End::Protocol(_) => stream.close_after_error(),
        // The client has closed: dropping the socket sends our FIN after everything written,
        // so a shutdown call would only cost a system call per connection. TLS says goodbye
        // with a message first (bounded, as below).
        End::PeerClosed if !stream.is_tls() => {}
        // An orderly close, bounded: a client that stopped reading must not hold us.
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
    }
    end
}

/// How many answer bytes a session buffers before it writes them out.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Writes out all of `out` and clears it. Each partial write resets the idle timer, so a slow
/// reader that keeps taking data is not "idle"; one that takes nothing is.
async fn write_out(
    stream: &mut Stream,
    out: &mut BytesMut,
    bounds: &mut Bounds<'_>,
    io: &mut Traffic,
) -> Result<(), End> {
    let mut pos = 0;
    while pos < out.len() {
        match bounds.write(stream.write(&out[pos..])).await {
            Ok(Ok(0)) => return Err(End::Io("the connection took no more bytes".into())),
            Ok(Ok(n)) => {
                pos += n;
                io.bytes_out += n as u64;
            }
            Ok(Err(e)) => return Err(End::Io(e.to_string())),
            Err(end) => return Err(end),
        }
    }
    out.clear();
    // On TLS the last bytes may still be in its buffer; on a plain socket this costs nothing.
    if stream.is_tls() {
        match bounds.write(stream.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(End::Io(e.to_string())),
            Err(end) => return Err(end),
        }
    }
    Ok(())
}

/// Reads what is available into the session's input buffer, allocating room only once the
/// socket is readable.
/// Returns 0 at end of stream. Cancel-safe: nothing is read unless the future completes.
///
/// Two costs per message are avoided here. The read goes through `poll_read`, not `try_read`:
/// a read that leaves room in the buffer proves the socket drained, and tokio then forgets the
/// readiness, so the next wait parks at once instead of costing a `recv` that would block (with
/// `try_read` every message took two `recv` calls). And the buffers are given back only when
/// the connection really parks with nothing in them ([`Messages::park`]), so an idle connection
/// holds no buffer while a busy one keeps its own. A buffer given back goes to a small pool on
/// the thread ([`Spares::on_thread`]), so a connection that parks after every message, as an echo
/// client's does, costs no allocation per message either.
async fn read_some(stream: &mut Stream, msgs: &mut Messages) -> std::io::Result<usize> {
    use std::task::Poll;
    if stream.is_tls() {
        // Readiness of the socket says little about TLS (a record may be incomplete); the TLS
        // state keeps buffers of its own anyway. The answer buffer, written out by now, goes
        // back while the read waits.
        if msgs.out.capacity() > 0 {
            Spares::on_thread(|spares| spares.give_back(std::mem::take(&mut msgs.out)));
        }
        msgs.make_read_room(BytesMut::new);
        return tokio::io::AsyncReadExt::read_buf(stream, &mut msgs.inbuf).await;
    }
    std::future::poll_fn(|cx| {
        loop {
            let ready = match &*stream {
                Stream::Tcp(s) => s.poll_read_ready(cx),
                Stream::Unix(s) => s.poll_read_ready(cx),
                Stream::Tls(_) => unreachable!("handled above"),
            };
            match ready {
                Poll::Pending => {
                    Spares::on_thread(|spares| msgs.park(spares));
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            msgs.make_read_room(|| Spares::on_thread(Spares::take));
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut msgs.inbuf) {
                Poll::Ready(r) => return Poll::Ready(r),
                // The readiness was stale (a new socket often reports it once); it is cleared
                // now, so asking again parks.
                Poll::Pending => continue,
            }
        }
    })
    .await
}

/// How much room a read is given.
const READ_BUFFER: usize = 8192;

/// Buffers that sessions gave back, kept for the next session that needs one: at most
/// [`Spares::MAX`], each of a modest size. Each server thread has its own: the event loop keeps
/// one, and sessions on tokio use their thread's ([`Spares::on_thread`]).
#[derive(Default)]
struct Spares(Vec<BytesMut>);

impl Spares {
    const MAX: usize = 64;
    const MAX_SIZE: usize = 64 * 1024;

    /// A spare buffer, or an empty one (which allocates when first reserved).
    fn take(&mut self) -> BytesMut {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps an empty buffer for later, or frees it when there are enough or it is large.
    fn give_back(&mut self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() <= Self::MAX_SIZE && self.0.len() < Self::MAX {
            self.0.push(buf);
        }
    }

    /// Runs `f` with this thread's spares, for sessions on tokio.
    fn on_thread<R>(f: impl FnOnce(&mut Spares) -> R) -> R {
        thread_local! {
            static SPARES: std::cell::RefCell<Spares> = const { std::cell::RefCell::new(Spares(Vec::new())) };
        }
        SPARES.with_borrow_mut(f)
    }
}

/// The `discard` service on a stream: read and drop everything until the client closes. On
/// TCP the kernel drops the bytes itself (`recv` with `MSG_TRUNC`), so nothing is copied; TLS
/// must decrypt them, into a buffer of the session's own.
async fn discard_session(mut stream: Stream, shared: &Shared, io: &mut Traffic) -> End {
    let mut bounds = Bounds::new(shared);
    let mut scratch = if stream.is_tls() { vec![0u8; 64 * 1024] } else { Vec::new() };
    loop {
        let read = async {
            if stream.is_tls() {
                tokio::io::AsyncReadExt::read(&mut stream, &mut scratch).await
            } else {
                discard_some(&mut stream).await
            }
        };
        match bounds.read(read).await {
            Ok(Ok(0)) => return End::PeerClosed,
            Ok(Ok(n)) => io.bytes_in += n as u64,
            Ok(Err(e)) => return End::Io(e.to_string()),
            Err(end) => return end,
        }
    }
}

/// How much one `discard` read may take at once.
const DISCARD_CHUNK: usize = 1 << 20;

/// Reads and drops what is available; returns 0 at end of stream. Cancel-safe.
async fn discard_some(stream: &mut Stream) -> std::io::Result<usize> {
    match stream {
        Stream::Tcp(s) => loop {
            s.readable().await?;
            let r = s.try_io(tokio::io::Interest::READABLE, || {
                use std::os::fd::AsRawFd;
                // SAFETY: with MSG_TRUNC, TCP discards up to DISCARD_CHUNK bytes without
                // writing to the buffer, so a null buffer is never touched (tcp(7)).
                let n = unsafe {
                    libc::recv(s.as_raw_fd(), std::ptr::null_mut(), DISCARD_CHUNK, libc::MSG_TRUNC | libc::MSG_DONTWAIT)
                };
                if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
            });
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        },
        Stream::Unix(s) => loop {
            s.readable().await?;
            // One scratch buffer per thread, used only between two awaits: a connection keeps
            // no buffer of its own.
            thread_local! {
                static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 * 1024]);
            }
            match SCRATCH.with(|b| s.try_read(&mut b.borrow_mut())) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        },
        Stream::Tls(_) => Err(crate::net::not_on_tls()),
    }
}

/// Where the `source` service writes.
enum Sink {
    Stream(Stream),
    Packets(UnixSeqpacket),
}

/// The bytes `source` sends, over and over: a fixed pattern, made once per process.
fn source_pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..256 * 1024).map(|i| (i % 251) as u8).collect())
}

/// The `source` service: write the pattern until the client goes away.
async fn source_session(mut sink: Sink, shared: &Shared, io: &mut Traffic) -> End {
    let pattern = source_pattern();
    let mut bounds = Bounds::new(shared);
    loop {
        let write = async {
            match &mut sink {
                Sink::Stream(s) => s.write(pattern).await,
                Sink::Packets(s) => s.send(&pattern[..MAX_DATAGRAM / 2]).await,
            }
        };
        // An endless answer is cut at shutdown, not at the end of the grace period.
        match bounds.read(write).await {
            Ok(Ok(n)) => io.bytes_out += n as u64,
            // A client of an endless source ends by closing: that is its normal goodbye.
            Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {
                return End::PeerClosed;
            }
            Ok(Err(e)) => return End::Io(e.to_string()),
            Err(end) => return end,
        }
    }
}

async fn seqpacket_session(sock: UnixSeqpacket, peer: &PeerAddr, shared: &Shared, io: &mut Traffic) -> End {
    let config = &shared.config;
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let mut bounds = Bounds::new(shared);
    loop {
        // The receive buffer exists only while a packet is waiting: an idle connection holds
        // no buffer memory.
        match bounds.read(sock.as_async_fd().readable()).await {
            Ok(Ok(guard)) => drop(guard),
            Ok(Err(e)) => return End::Io(e.to_string()),
            Err(end) => return end,
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = match bounds.read(crate::net::recv_packet(&sock, &mut buf)).await {
            Ok(Ok(Packet::End)) => return End::PeerClosed,
            Ok(Ok(Packet::Message { truncated: true, .. })) => {
                return End::Protocol(format!("packet larger than the {MAX_DATAGRAM}-byte maximum"));
            }
            Ok(Ok(Packet::Message { len, .. })) => len,
            Ok(Err(e)) => return End::Io(e.to_string()),
            Err(end) => return end,
        };
        io.bytes_in += n as u64;
        let (flow, cut_short) = answer_packet(&config.service, peer, &mut buf[..n], &mut answers);
        if cut_short {
            config
                .monitor
                .problem(Some(peer), "answers to one packet passed 1 MiB; the rest of its lines were dropped");
        }
        for a in answers.drain(..) {
            match bounds.write(sock.send(&a)).await {
                Ok(Ok(sent)) => io.bytes_out += sent as u64,
                Ok(Err(e)) => return End::Io(e.to_string()),
                Err(end) => return end,
            }
        }
        if flow == Flow::End {
            return End::SessionEnded;
        }
    }
}

async fn datagram_loop(socket: DatagramSocket, shared: &Shared) {
    let config = &shared.config;
    let counters = &shared.counters;
    // One byte more than a datagram may hold, so that a longer one (a Unix datagram can be as
    // long as its sender's buffer) shows as too long instead of being answered cut short.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let mut last_refusal = None;
    let stop = shared.stop.watch();
    loop {
        let received = tokio::select! {
            () = std::future::poll_fn(|cx| stop.poll_reached(Stage::Shutdown, cx)) => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                // A UDP socket reports an earlier answer's ICMP "port unreachable" here; that
                // concerns one peer, never the server.
                config.monitor.problem(None, &format!("receive failed: {e}"));
                continue;
            }
        };
        counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if !datagram_admitted(peer.as_ref(), &config.access, config.monitor.as_ref(), &mut last_refusal) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if n > MAX_DATAGRAM {
            config.monitor.problem(
                peer.as_ref(),
                &format!("a datagram longer than {MAX_DATAGRAM} bytes was dropped unanswered (that is the most a sockit server takes)"),
            );
            continue;
        }
        let peer_for_service = peer.clone().unwrap_or(PeerAddr::UnixUnnamed { pid: None, uid: None });
        let (_, cut_short) = answer_packet(&config.service, &peer_for_service, &mut buf[..n], &mut answers);
        if cut_short {
            config
                .monitor
                .problem(peer.as_ref(), "answers to one datagram passed 1 MiB; the rest of its lines were dropped");
        }
        let mut dropped = 0;
        for a in answers.drain(..) {
            let Some(peer) = &peer else {
                config
                    .monitor
                    .problem(None, "cannot answer a unix-dgram client that has no address (bind the client socket)");
                continue;
            };
            // Never wait for one peer: a Unix datagram client that stops reading fills its queue,
            // and waiting for room would stop the server for everyone. Its answers are dropped,
            // as a network would drop them.
            match socket.try_send_to(&a, peer) {
                Ok(sent) => {
                    counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => dropped += 1,
                Err(e) => config.monitor.problem(Some(peer), &format!("answer not sent: {e}")),
            }
        }
        if dropped > 0 {
            config.monitor.problem(
                peer.as_ref(),
                &format!("{dropped} answer(s) dropped: the peer's receive queue was full (the server never waits for one peer)"),
            );
        }
        if config.once {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::net::{BindOptions, bind};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<End>>);
    impl Monitor for Recorder {
        fn closed(&self, r: &ConnReport) {
            self.0.lock().unwrap().push(r.end.clone());
        }
    }

    async fn start(config: ServerConfig) -> (String, CancellationToken, tokio::task::JoinHandle<Summary>) {
        start_with(config, false).await
    }

    /// Starts a server on one socket; with `own_threads`, a message service runs on the event
    /// loop ([`evloop`]), else on the caller's runtime.
    async fn start_with(
        mut config: ServerConfig,
        own_threads: bool,
    ) -> (String, CancellationToken, tokio::task::JoinHandle<Summary>) {
        config.own_threads = own_threads;
        let endpoint: Endpoint = "tcp://127.0.0.1:0".parse().unwrap();
        let socket = bind(&endpoint, &BindOptions::default()).await.unwrap();
        let addr = socket.local_endpoint().trim_start_matches("tcp://").to_owned();
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(socket, config, token.clone()));
        (addr, token, handle)
    }

    /// Connections land on every socket of a shared address (the kernel picks by the source
    /// port), so each must be served, whether or not the caller asked for threads.
    #[tokio::test]
    async fn every_socket_of_a_shared_address_is_served_with_or_without_threads() {
        for own_threads in [false, true] {
            let endpoint: Endpoint = "tcp://127.0.0.1:0".parse().unwrap();
            let socket = bind(&endpoint, &BindOptions { listeners: 3, ..BindOptions::default() }).await.unwrap();
            let ServerSocket::Listener(l) = &socket else { panic!("a listener") };
            assert_eq!(l.sockets(), 3);
            let addr = socket.local_endpoint().trim_start_matches("tcp://").to_owned();
            let token = CancellationToken::new();
            let config = ServerConfig { own_threads, ..ServerConfig::new(Service::Echo) };
            let handle = tokio::spawn(run(socket, config, token.clone()));
            let mut clients = tokio::task::JoinSet::new();
            for i in 0..30u32 {
                let addr = addr.clone();
                clients.spawn(async move {
                    let mut s = TcpStream::connect(&addr).await.unwrap();
                    s.write_all(&i.to_be_bytes()).await.unwrap();
                    let mut back = [0u8; 4];
                    s.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, i.to_be_bytes());
                });
            }
            let all = async {
                while let Some(c) = clients.join_next().await {
                    c.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(10), all).await.expect("every client answered");
            token.cancel();
            let summary = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("stops").unwrap();
            assert_eq!(summary.connections, 30, "own_threads {own_threads}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes_a_silent_client() {
        let rec = Arc::new(Recorder::default());
        let mut config = ServerConfig::new(Service::Echo);
        config.idle_timeout = Some(Duration::from_secs(30));
        config.monitor = rec.clone();
        let (addr, token, handle) = start(config).await;
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        // The paused clock jumps ahead while everything waits on the socket, so this read
        // returns when the server's 30-second timer fires, not after 30 real seconds.
        let mut buf = [0u8; 8];
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0);
        token.cancel();
        let summary = handle.await.unwrap();
        assert_eq!(summary.connections, 1);
        assert_eq!(*rec.0.lock().unwrap(), vec![End::IdleTimeout]);
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_counts_bytes() {
        for own_threads in [false, true] {
            let rec = Arc::new(Recorder::default());
            let config = ServerConfig { monitor: rec.clone(), ..ServerConfig::new(Service::Upper) };
            let (addr, token, handle) = start_with(config, own_threads).await;
            let mut c = TcpStream::connect(&addr).await.unwrap();
            c.write_all(b"abc").await.unwrap();
            let mut buf = [0u8; 3];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ABC");
            token.cancel();
            // The server closes our idle connection on its own.
            assert_eq!(c.read(&mut [0u8; 1]).await.unwrap(), 0);
            let s = handle.await.unwrap();
            assert_eq!((s.connections, s.bytes_in, s.bytes_out, s.cut), (1, 3, 3, 0), "own_threads {own_threads}");
            assert_eq!(*rec.0.lock().unwrap(), vec![End::Shutdown]);
            // And new clients are turned away at once.
            assert!(TcpStream::connect(&addr).await.is_err(), "own_threads {own_threads}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grace_period_cuts_a_client_that_never_reads() {
        let rec = Arc::new(Recorder::default());
        let mut config = ServerConfig::new(Service::Echo);
        config.grace = Duration::from_secs(2);
        config.monitor = rec.clone();
        let (addr, token, handle) = start(config).await;
        let mut c = TcpStream::connect(&addr).await.unwrap();
        // Keep sending without reading until the echoes fill every buffer on the way back and
        // the server blocks writing to us.
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(100), c.write_all(&chunk)).await {
            sent += chunk.len();
            assert!(sent < 512 << 20, "buffers never filled");
        }
        token.cancel();
        let s = handle.await.unwrap();
        assert_eq!(s.cut, 1);
        assert_eq!(*rec.0.lock().unwrap(), vec![End::Cut]);
    }

    #[tokio::test]
    async fn once_returns_after_the_first_client() {
        let mut config = ServerConfig::new(Service::Echo);
        config.once = true;
        let (addr, _token, handle) = start(config).await;
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        c.shutdown().await.unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"x");
        assert_eq!(handle.await.unwrap().connections, 1);
    }

    /// inetd's way: the server is handed one connected socket, serves it, and returns by itself.
    #[tokio::test]
    async fn a_single_inherited_connection_is_served_and_the_server_returns() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let endpoint = Endpoint::Fd(crate::endpoint::FdRef::Number(crate::inherit::passed(ours)));
        let socket = bind(&endpoint, &BindOptions::default()).await.unwrap();
        assert!(socket.is_single());
        let handle = tokio::spawn(run(socket, ServerConfig::new(Service::Upper), CancellationToken::new()));
        theirs.set_nonblocking(true).unwrap();
        let mut c = tokio::net::UnixStream::from_std(theirs).unwrap();
        c.write_all(b"inetd").await.unwrap();
        c.shutdown().await.unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"INETD");
        let summary = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("run returned").unwrap();
        assert_eq!((summary.connections, summary.bytes_in), (1, 5));
    }

    #[tokio::test]
    async fn max_conns_refuses_with_a_message_in_the_framing() {
        for own_threads in [false, true] {
            max_conns_refuses(own_threads).await;
        }
    }

    async fn max_conns_refuses(own_threads: bool) {
        let mut config = ServerConfig::new(Service::Echo);
        config.max_conns = Some(1);
        config.framing = Framing::Len;
        let (addr, token, handle) = start_with(config, own_threads).await;
        let mut first = TcpStream::connect(&addr).await.unwrap();
        first.write_all(b"\0\0\0\x01a").await.unwrap();
        let mut echo = [0u8; 5];
        first.read_exact(&mut echo).await.unwrap();
        let mut second = TcpStream::connect(&addr).await.unwrap();
        let mut refusal = Vec::new();
        second.read_to_end(&mut refusal).await.unwrap();
        let len = u32::from_be_bytes(refusal[..4].try_into().unwrap()) as usize;
        assert_eq!(len, refusal.len() - 4);
        assert!(String::from_utf8_lossy(&refusal[4..]).contains("server busy (1 client connected)"));
        token.cancel();
        let s = handle.await.unwrap();
        assert_eq!((s.connections, s.refused), (1, 1));
    }

    /// The event loop keeps the idle timeout in real time: a silent client is closed, one that
    /// keeps talking is not.
    #[tokio::test]
    async fn event_loop_closes_a_silent_client_and_keeps_a_talking_one() {
        let rec = Arc::new(Recorder::default());
        let config = ServerConfig {
            idle_timeout: Some(Duration::from_millis(400)),
            monitor: rec.clone(),
            ..ServerConfig::new(Service::Echo)
        };
        let (addr, token, handle) = start_with(config, true).await;
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        let mut talking = TcpStream::connect(&addr).await.unwrap();
        let started = Instant::now();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            talking.write_all(b"hi").await.unwrap();
            let mut back = [0u8; 2];
            talking.read_exact(&mut back).await.unwrap();
        }
        // 800 ms on, the talking client is still served; the silent one was closed on time.
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("closed");
        assert_eq!(closed.unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(*rec.0.lock().unwrap(), vec![End::IdleTimeout]);
        token.cancel();
        let s = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("stops").unwrap();
        assert_eq!((s.connections, s.bytes_in, s.bytes_out), (2, 16, 16));
    }

    /// A client that sends without reading fills the buffers back to itself; the event loop then
    /// stops reading from it (nothing piles up), and cuts it when the grace period runs out.
    #[tokio::test]
    async fn event_loop_cuts_a_client_that_never_reads_after_the_grace_period() {
        let rec = Arc::new(Recorder::default());
        let config = ServerConfig {
            grace: Duration::from_millis(300),
            monitor: rec.clone(),
            ..ServerConfig::new(Service::Echo)
        };
        let (addr, token, handle) = start_with(config, true).await;
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(200), c.write_all(&chunk)).await {
            sent += chunk.len();
            assert!(sent < 512 << 20, "buffers never filled");
        }
        let started = Instant::now();
        token.cancel();
        let s = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("stops").unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300), "cut only after the grace period");
        assert_eq!(s.cut, 1);
        assert_eq!(*rec.0.lock().unwrap(), vec![End::Cut]);
    }

    /// At shutdown a connection between messages ends at once, but one in the middle of a
    /// message is given the grace period to finish it, and its answer, on both paths.
    #[tokio::test]
    async fn shutdown_waits_for_a_message_begun_and_not_for_the_next() {
        for own_threads in [false, true] {
            let rec = Arc::new(Recorder::default());
            let config = ServerConfig {
                framing: Framing::Len,
                grace: Duration::from_secs(10),
                monitor: rec.clone(),
                ..ServerConfig::new(Service::Echo)
            };
            let (addr, token, handle) = start_with(config, own_threads).await;
            let mut idle = TcpStream::connect(&addr).await.unwrap();
            let mut busy = TcpStream::connect(&addr).await.unwrap();
            busy.write_all(b"\0\0\0\x0ahello").await.unwrap();
            // Both are in: the idle one answered, the busy one halfway through its message.
            idle.write_all(b"\0\0\0\x01x").await.unwrap();
            let mut one = [0u8; 5];
            idle.read_exact(&mut one).await.unwrap();
            // Time for the busy one's half to be read too (it came first, so it is, but its task
            // is another one's on tokio's path).
            tokio::time::sleep(Duration::from_millis(100)).await;
            token.cancel();
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
            assert!(matches!(closed, Ok(Ok(0))), "the idle one is closed at once, own_threads {own_threads}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            busy.write_all(b"world").await.unwrap();
            let mut answer = Vec::new();
            let done = tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer)).await;
            assert!(matches!(done, Ok(Ok(_))), "own_threads {own_threads}");
            assert_eq!(answer, b"\0\0\0\x0ahelloworld", "own_threads {own_threads}");
            let s = tokio::time::timeout(Duration::from_secs(5), handle).await.expect("stops").unwrap();
            assert_eq!(s.cut, 0, "own_threads {own_threads}");
            assert_eq!(*rec.0.lock().unwrap(), vec![End::Shutdown, End::Shutdown], "own_threads {own_threads}");
        }
    }

    /// A broken frame ends the connection on the event loop as on tokio: the answers before it
    /// are delivered and the connection closed in order, not reset, even when more of the
    /// client's bytes wait unread (netcat lost the answers to a reset). `qa` ends its session
    /// after `bye` on both.
    #[tokio::test]
    async fn protocol_errors_and_session_ends_are_the_same_on_both_paths() {
        for own_threads in [false, true] {
            let rec = Arc::new(Recorder::default());
            let config = ServerConfig {
                framing: Framing::Len,
                max_frame: 16,
                monitor: rec.clone(),
                ..ServerConfig::new(Service::Echo)
            };
            let (addr, token, handle) = start_with(config, own_threads).await;
            let mut c = TcpStream::connect(&addr).await.unwrap();
            let mut sent = b"\0\0\0\x02ok\0\0\x10\0".to_vec();
            // More than one read takes, and less than one loopback segment: it all arrives at
            // once, so none of it comes after the close.
            sent.extend_from_slice(&[b'x'; 30_000]);
            c.write_all(&sent).await.unwrap();
            let mut ok = [0u8; 6];
            c.read_exact(&mut ok).await.unwrap();
            assert_eq!(&ok, b"\0\0\0\x02ok");
            assert_eq!(c.read(&mut [0u8; 1]).await.unwrap(), 0, "closed, own_threads {own_threads}");
            // The close comes right after the FIN: a reset would be here by now.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(c.take_error().unwrap().is_none(), "not reset, own_threads {own_threads}");
            token.cancel();
            handle.await.unwrap();
            let ends = rec.0.lock().unwrap().clone();
            assert!(matches!(ends.as_slice(), [End::Protocol(_)]), "{ends:?}, own_threads {own_threads}");

            let dict = crate::service::QaDict::parse("hello = hi\n", "?").unwrap();
            let config = ServerConfig { monitor: rec.clone(), ..ServerConfig::new(Service::Qa(Arc::new(dict))) };
            let (addr, token, handle) = start_with(config, own_threads).await;
            let mut c = TcpStream::connect(&addr).await.unwrap();
            c.write_all(b"hello\nbye\nhello\n").await.unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).await.unwrap();
            let text = String::from_utf8(all).unwrap();
            assert!(text.starts_with("hi\n") && text.lines().count() == 2, "{text:?}");
            token.cancel();
            handle.await.unwrap();
            assert_eq!(rec.0.lock().unwrap().last(), Some(&End::SessionEnded), "own_threads {own_threads}");
        }
    }
}
#[cfg(test)]
mod size {
    use super::*;

    /// Every idle connection costs its task's future, so its size is the server's memory per
    /// connection (BENCHMARKS.md: at most 2 KiB resident per connection, the task included).
    /// This failed at 1,544 bytes before waits became `Limited` futures and rare sessions boxed.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let shared = Shared {
            config: ServerConfig::new(Service::Echo),
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            cut: CancellationToken::new(),
            tls: None,
            stop: Arc::default(),
        };
        let peer = PeerAddr::UnixUnnamed { pid: None, uid: None };
        let task = serve_conn(Conn::Stream(Stream::Unix(a)), peer, &shared);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "a connection's future is {size} bytes; keep it at most 1024");
    }
}
