//! The event loop that serves the message services (echo, upper, reply, qa, print) on plain TCP
//! when the server has threads of its own: per thread, one epoll set driven by hand through mio,
//! and every connection a small state machine in a slab instead of a task.
//!
//! Why: a message session needs none of tokio's generality. It reads, answers at once
//! ([`Service::respond`](crate::service::Service::respond) is synchronous) and writes. A task
//! per connection costs a task allocation, a readiness record, and an `epoll_ctl` to deregister
//! before the socket is closed, and every message goes through a wake-up and the scheduler.
//! Profiled, that was about 8 µs of user time per connection against under 1 µs for a
//! hand-written epoll server in C, and 1 µs per message against 0.2 µs (BENCHMARKS.md). Here a
//! message costs what it costs the C server: the readiness event, one `recv`, one `send`.
//!
//! The loop drives the same [`Messages`] state as the tokio session, so both answer alike, and
//! keeps the server's promises the same way:
//! - admission: the access list, `max_per_source`, and `max_conns` with its busy message;
//! - backpressure: while answers wait to be written, nothing more is read;
//! - the idle timeout: a map of deadlines, touched only when a deadline passes (progress just
//!   notes the time);
//! - shutdown: the listening socket is closed at once; a connection ends where it would wait
//!   for the next message, once what its client sent before is answered and written; after the
//!   grace period the rest are cut.
//!
//! TLS, the services with sessions of their own, Unix sockets, `once`, and servers on the
//! caller's runtime stay on tokio ([`serves`]).

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use crate::later;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::{
    Accepting, Admission, End, Held, Messages, Shared, Spares, Step, Traffic, admit, answers_messages, busy_message,
    busy_text,
};
use crate::net::{NoDelay, PeerAddr};
use crate::stop::Stage;

const LISTENER: Token = Token(usize::MAX);
const WAKE: Token = Token(usize::MAX - 1);

/// Whether this loop serves the server's connections: a message service on plain TCP, not
/// `once`.
pub(super) fn serves(shared: &Shared) -> bool {
    shared.tls.is_none() && !shared.config.once && answers_messages(&shared.config.service)
}

/// A loop's own descriptors, its epoll set and its waker, with its listening socket registered:
/// made by [`setup`] before any of the server's threads accepts, since a thread that found the
/// descriptors used up by the connections of the others could not start, and its listener's
/// queued clients would be reset.
pub(super) struct Setup {
    poll: Poll,
    listener: TcpListener,
    /// Wakes the loop for the server's stop signal.
    waker: Arc<WakeLoop>,
}

/// Makes a loop's descriptors for `socket`; see [`Setup`].
pub(super) fn setup(socket: std::net::TcpListener) -> io::Result<Setup> {
    socket.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let waker = Arc::new(WakeLoop(mio::Waker::new(poll.registry(), WAKE)?));
    let mut listener = TcpListener::from_std(socket);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    Ok(Setup { poll, listener, waker })
}

/// Serves one listening socket on this thread until shutdown, then finishes its connections.
pub(super) fn run(setup: Setup, shared: &Shared, accepting: &Accepting) {
    let Setup { poll, listener, waker } = setup;
    let waker = Waker::from(waker);
    let stop = shared.stop.watch();
    let mut cx = Context::from_waker(&waker);
    let mut events = Events::with_capacity(1024);
    let mut turn = Vec::new();
    let mut l = Loop {
        shared,
        accepting,
        poll,
        listener: Some(listener),
        conns: Slab::new(),
        timers: BTreeMap::new(),
        serial: 0,
        backoff: FIRST_BACKOFF,
        accept_retry: None,
        drain_until: None,
        again: Vec::new(),
        spares: Spares::default(),
        nodelay: NoDelay::default(),
        now: Instant::now(),
    };
    loop {
        let now = l.now;
        if l.drain_until.is_none() && stop.poll_reached(Stage::Shutdown, &mut cx).is_ready() {
            l.stop_accepting(now);
        }
        if let Some(until) = l.drain_until {
            if stop.poll_reached(Stage::Cut, &mut cx).is_ready() || now >= until {
                // The first loop whose grace runs out cuts every thread's connections.
                shared.cut.cancel();
                shared.stop.raise(Stage::Cut);
                l.cut_all();
            }
            if l.conns.is_empty() {
                return;
            }
        }
        if l.accept_retry.is_some_and(|at| now >= at) {
            l.accept_retry = None;
            l.accept_all();
        }
        l.expire_idle(now);
        // Connections that used up their turn go on at once, after the others' events.
        let timeout = match l.again.is_empty() {
            true => l.next_deadline().map(|at| at.saturating_duration_since(now)),
            false => Some(Duration::ZERO),
        };
        let polled = l.poll.poll(&mut events, timeout);
        // Before anything else, an interrupted wait included: the timers go by it next.
        l.now = Instant::now();
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Nothing here can wait any more: end every connection and say why.
                shared.config.monitor.problem(None, &format!("the event loop failed: {e}"));
                l.listener = None;
                l.cut_all();
                return;
            }
        }
        std::mem::swap(&mut l.again, &mut turn);
        for key in turn.drain(..) {
            // A key ended since may have been given to a new connection: driving that one
            // finds nothing to do.
            if l.conns.contains(key) {
                l.drive(key);
            }
        }
        for event in events.iter() {
            match event.token() {
                // While accepting is backed off, new connections wait in the backlog.
                LISTENER if l.accept_retry.is_none() => l.accept_all(),
                LISTENER | WAKE => {}
                Token(key) => l.on_event(key, event),
            }
        }
    }
}

/// Wakes the loop from another thread (when the stop signal is raised).
struct WakeLoop(mio::Waker);

impl Wake for WakeLoop {
    fn wake(self: Arc<Self>) {
        let _ = self.0.wake();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.wake();
    }
}

/// How long the loop waits before accepting again after a failed accept, at first.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

struct Loop<'a> {
    shared: &'a Shared,
    accepting: &'a Accepting,
    poll: Poll,
    /// Gone once shutdown is asked for.
    listener: Option<TcpListener>,
    conns: Slab<Session>,
    /// Idle deadlines, as (when, serial) of each connection, only under an idle timeout.
    timers: BTreeMap<(Instant, u64), usize>,
    /// The last serial given to a connection: keys in `timers` are unique even at one instant.
    serial: u64,
    /// The wait before accepting again after a failed accept (out of descriptors, say).
    backoff: Duration,
    accept_retry: Option<Instant>,
    /// Set at shutdown: when the grace period ends.
    drain_until: Option<Instant>,
    /// Connections that stopped with bytes still to read, so that one busy client cannot keep
    /// the others waiting ([`READS_PER_TURN`]).
    again: Vec<usize>,
    /// The buffers of connections that wait, for the next to read or answer.
    spares: Spares,
    nodelay: NoDelay,
    /// The time the last poll returned: what the turn's events go by (when a connection
    /// started, ended, or last moved) and the timers are checked against after it. One clock
    /// read per turn instead of several per connection, as nginx keeps its time; a turn takes
    /// microseconds, far below the granularity of any timeout.
    now: Instant,
}

impl Loop<'_> {
    /// Accepts every connection waiting, or stops for a while if accepting fails.
    fn accept_all(&mut self) {
        while let Some(listener) = &self.listener {
            match sys::accept(listener) {
                Ok((sock, addr)) => {
                    self.backoff = FIRST_BACKOFF;
                    // The kernel gives a TCP connection's address with it; if not, ask once,
                    // and a connection already gone is simply not served.
                    let Some(addr) = addr.or_else(|| sock.peer_addr().ok()) else { continue };
                    self.add(sock, PeerAddr::Inet(addr));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory: say so, wait a little, and go on; the
                    // clients already connected keep being served.
                    self.shared.config.monitor.problem(None, &format!("accept failed: {e}"));
                    self.accept_retry = Some(self.now + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                    return;
                }
            }
        }
    }

    /// Admits a new connection and starts watching it.
    fn add(&mut self, mut sock: TcpStream, peer: PeerAddr) {
        let held = match admit(&peer, self.shared, self.accepting) {
            Admission::Admitted(held) => held,
            Admission::Denied => {
                // Nothing is said to a client turned away by address: the connection is reset.
                let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                return;
            }
            Admission::Busy(max) => {
                // A new connection's send buffer takes the short message whole.
                let _ = sock.write(&busy_message(&busy_text(max), self.shared.config.framing));
                let _ = sock.shutdown(Shutdown::Write);
                return;
            }
        };
        self.nodelay.ensure(&sock);
        let started = self.now;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE) {
            drop((sock, held));
            let report = self.shared.finished(peer, Duration::ZERO, &Traffic::default(), End::Io(e.to_string()));
            self.shared.config.monitor.closed(&report);
            return;
        }
        let timer = self.shared.config.idle_timeout.map(|t| {
            self.serial += 1;
            let at = (later(started, t), self.serial);
            self.timers.insert(at, key);
            at
        });
        entry.insert(Session {
            sock,
            peer,
            msgs: Messages::new(&self.shared.config),
            step: Step::Read,
            written: 0,
            readable: false,
            read_closed: false,
            writable_watched: false,
            io: Traffic::default(),
            started,
            active: started,
            timer,
            held,
        });
    }

    fn on_event(&mut self, key: usize, event: &Event) {
        let Some(s) = self.conns.get_mut(key) else { return };
        // An error shows on the next read or write.
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            s.readable = true;
        }
        if event.is_read_closed() {
            s.read_closed = true;
        }
        self.drive(key);
    }

    /// Moves a connection on as far as its socket allows.
    fn drive(&mut self, key: usize) {
        let turn = Turn { shared: self.shared, stopping: self.drain_until.is_some(), now: self.now };
        let s = &mut self.conns[key];
        match s.drive(&turn, &mut self.spares) {
            Progress::Waiting => {}
            Progress::Yielded => self.again.push(key),
            Progress::WaitingToWrite if s.writable_watched => {}
            Progress::WaitingToWrite => {
                s.writable_watched = true;
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self.poll.registry().reregister(&mut s.sock, Token(key), interest) {
                    self.finish(key, End::Io(e.to_string()));
                }
            }
            Progress::Ended(end) => self.finish(key, end),
        }
    }

    /// Ends a connection: closes it, counts it, and reports it.
    fn finish(&mut self, key: usize, end: End) {
        let Session { sock, peer, mut msgs, io, started, timer, held, .. } = self.conns.remove(key);
        if let Some(at) = timer {
            self.timers.remove(&at);
        }
        match &end {
            End::Protocol(_) => crate::net::close_after_error(&sock),
            // The client has closed: closing sends our FIN after everything written.
            End::PeerClosed => {}
            _ => {
                let _ = sock.shutdown(Shutdown::Write);
            }
        }
        msgs.release(&mut self.spares);
        // Closing the socket takes it out of the epoll set.
        sys::close(sock);
        drop(held);
        let report = self.shared.finished(peer, self.now.saturating_duration_since(started), &io, end);
        self.shared.config.monitor.closed(&report);
    }

    /// Stops accepting at shutdown, and ends every connection that is waiting for a new message.
    fn stop_accepting(&mut self, now: Instant) {
        // Closing it makes new clients fail fast instead of waiting in a backlog.
        self.listener = None;
        self.accept_retry = None;
        self.drain_until = Some(later(now, self.shared.config.grace));
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drive(key);
        }
    }

    fn cut_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.finish(key, End::Cut);
        }
    }

    /// Ends the connections whose idle deadline has passed.
    fn expire_idle(&mut self, now: Instant) {
        let Some(t) = self.shared.config.idle_timeout else { return };
        while let Some((&(at, serial), &key)) = self.timers.first_key_value() {
            if at > now {
                return;
            }
            self.timers.pop_first();
            // A connection's entry goes when it ends, so the key is live.
            let s = &mut self.conns[key];
            let due = later(s.active, t);
            if due <= now {
                s.timer = None;
                self.finish(key, End::IdleTimeout);
            } else {
                // It moved since: its deadline is later now.
                s.timer = Some((due, serial));
                self.timers.insert((due, serial), key);
            }
        }
    }

    /// When the loop must look at its timers next, if ever.
    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.timers.first_key_value().map(|(&(at, _), _)| at);
        [idle, self.accept_retry, self.drain_until].into_iter().flatten().min()
    }
}

/// How many reads a connection makes before the others get their turn.
const READS_PER_TURN: usize = 16;

/// One connection: its socket and its message session.
struct Session {
    sock: TcpStream,
    peer: PeerAddr,
    msgs: Messages,
    /// What answering last decided, to act on once its answers are written.
    step: Step,
    /// How much of `msgs.out` is written.
    written: usize,
    /// The socket may have bytes, its end or an error to read.
    readable: bool,
    /// The peer's end was seen: after a short read, read on to find it.
    read_closed: bool,
    /// The socket is watched for room to write as well (after a write would have blocked).
    writable_watched: bool,
    io: Traffic,
    started: Instant,
    /// When bytes last moved (kept current only under an idle timeout).
    active: Instant,
    /// Its entry in [`Loop::timers`].
    timer: Option<(Instant, u64)>,
    held: Held,
}

/// What a connection is driven by in one turn of the loop.
struct Turn<'a> {
    shared: &'a Shared,
    /// Shutdown is asked for: end where the connection would wait for a message.
    stopping: bool,
    /// When the turn's poll returned ([`Loop::now`]).
    now: Instant,
}

/// Where a connection stopped.
enum Progress {
    /// Waiting for a message.
    Waiting,
    /// Waiting for room to write its answers.
    WaitingToWrite,
    /// It read its share of a turn and has more to read.
    Yielded,
    Ended(End),
}

impl Session {
    /// Writes what is answered, then reads and answers, until the socket would block.
    fn drive(&mut self, turn: &Turn<'_>, spares: &mut Spares) -> Progress {
        let shared = turn.shared;
        let timed = shared.config.idle_timeout.is_some();
        let mut reads = 0;
        loop {
            // Answers go out before anything more is read.
            while self.written < self.msgs.out.len() {
                match sys::send(&self.sock, &self.msgs.out[self.written..]) {
                    Ok(0) => return Progress::Ended(End::Io("the connection took no more bytes".into())),
                    Ok(n) => {
                        self.written += n;
                        self.io.bytes_out += n as u64;
                        if timed {
                            self.active = turn.now;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::WaitingToWrite,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Ended(End::Io(e.to_string())),
                }
            }
            self.msgs.out.clear();
            self.written = 0;
            match std::mem::replace(&mut self.step, Step::Read) {
                Step::Read => {}
                Step::AnswerMore => {
                    self.step = self.msgs.answer(&shared.config.service, &self.peer, spares);
                    continue;
                }
                Step::End(end) => return Progress::Ended(end),
            }
            if !self.readable {
                // At shutdown a connection ends where it would wait for a message, as on tokio:
                // what its client sent before is answered first, and a message begun is awaited.
                if turn.stopping && !self.msgs.mid_message() {
                    return Progress::Ended(End::Shutdown);
                }
                self.msgs.park(spares);
                return Progress::Waiting;
            }
            if reads == READS_PER_TURN {
                return Progress::Yielded;
            }
            reads += 1;
            match self.read(spares) {
                Ok(0) => {
                    self.msgs.eof = true;
                    self.readable = false;
                }
                Ok(n) => {
                    self.io.bytes_in += n as u64;
                    if timed {
                        self.active = turn.now;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Progress::Ended(End::Io(e.to_string())),
            }
            self.step = self.msgs.answer(&shared.config.service, &self.peer, spares);
        }
    }

    /// One `recv` into the input buffer, which is taken from `spares` when it has none.
    fn read(&mut self, spares: &mut Spares) -> io::Result<usize> {
        self.msgs.make_read_room(|| spares.take());
        let buf = &mut self.msgs.inbuf;
        let room = buf.capacity() - buf.len();
        let n = sys::recv(&self.sock, buf.spare_capacity_mut())?;
        // SAFETY: recv initialized the first n bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        // With edge-triggered readiness, a read that leaves room proves the socket drained: the
        // next bytes bring a new event. Its end does not, once seen, so it is read on to.
        if n > 0 && n < room && !self.read_closed {
            self.readable = false;
        }
        Ok(n)
    }
}

/// The loop's system calls on its connections, made directly through rustix's raw Linux backend
/// rather than glibc's wrappers. In a multi-threaded process glibc brackets each cancellable call
/// (`accept4`, `recv`, `send`, `close`) with pthread cancellation bookkeeping, two atomic
/// operations each; nothing here uses cancellation, and under callgrind the bookkeeping was 180
/// instructions per connection (BENCHMARKS.md).
mod sys {
    use std::io;
    use std::mem::MaybeUninit;
    use std::net::SocketAddr;
    use std::os::fd::IntoRawFd;

    use mio::net::{TcpListener, TcpStream};
    use rustix::net::{RecvFlags, SendFlags, SocketFlags};

    /// `accept4`, non-blocking and close-on-exec, with the peer's address when the kernel gives it.
    pub(super) fn accept(listener: &TcpListener) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (fd, addr) = rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
        let addr = addr.and_then(|a| SocketAddr::try_from(a).ok());
        Ok((TcpStream::from_std(std::net::TcpStream::from(fd)), addr))
    }

    pub(super) fn recv(sock: &TcpStream, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        Ok(rustix::net::recv(sock, buf, RecvFlags::empty())?.1)
    }

    /// `send`, without SIGPIPE if the peer is gone (as std's `write` on a socket).
    pub(super) fn send(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(sock, buf, SendFlags::NOSIGNAL)?)
    }

    pub(super) fn close(sock: TcpStream) {
        // SAFETY: the descriptor is this socket's own, and nothing else holds or closes it.
        unsafe { rustix::io::close(sock.into_raw_fd()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Counters, READ_BUFFER, ServerConfig};
    use crate::service::{MessageSink, Service};
    use tokio_util::sync::CancellationToken;

    /// Takes every message and answers none, so no full send buffer ever stops the reading.
    struct Ignore;
    impl MessageSink for Ignore {
        fn message(&self, _: &PeerAddr, _: std::time::SystemTime, _: &[u8]) {}
        fn wants_lines(&self) -> bool {
            false
        }
    }

    fn shared(service: Service) -> Shared {
        Shared {
            config: ServerConfig::new(service),
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            cut: CancellationToken::new(),
            tls: None,
            stop: Arc::default(),
        }
    }

    fn turn(shared: &Shared, stopping: bool) -> Turn<'_> {
        Turn { shared, stopping, now: Instant::now() }
    }

    /// A session on the server's side of an accepted connection, with its socket readable.
    fn session(server: std::net::TcpStream, peer: std::net::SocketAddr, shared: &Shared) -> Session {
        server.set_nonblocking(true).unwrap();
        Session {
            sock: TcpStream::from_std(server),
            peer: PeerAddr::Inet(peer),
            msgs: Messages::new(&shared.config),
            step: Step::Read,
            written: 0,
            readable: true,
            read_closed: false,
            writable_watched: false,
            io: Traffic::default(),
            started: Instant::now(),
            active: Instant::now(),
            timer: None,
            held: Held { _permit: None, _source: None },
        }
    }

    /// A connection that has been answered and waits for its next message holds no buffer:
    /// both go back to the loop's spares, and the next exchange takes them from there.
    #[test]
    fn a_waiting_connection_keeps_no_buffer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let shared = shared(Service::Echo);
        let mut session = session(server, peer, &shared);
        let mut spares = Spares::default();
        for round in 0..3 {
            client.write_all(b"hello\n").unwrap();
            // Loopback delivers at once, but wait for the bytes rather than assume it.
            let want = 6 * (round + 1);
            for _ in 0..1000 {
                session.readable = true;
                assert!(matches!(session.drive(&turn(&shared, false), &mut spares), Progress::Waiting));
                if session.io.bytes_in == want {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(session.io.bytes_in, want);
            let mut answer = [0u8; 6];
            std::io::Read::read_exact(&mut client, &mut answer).unwrap();
            assert_eq!(&answer, b"hello\n");
            assert_eq!(session.msgs.inbuf.capacity(), 0, "round {round}: the input buffer is kept");
            assert_eq!(session.msgs.out.capacity(), 0, "round {round}: the answer buffer is kept");
            assert_eq!(spares.0.len(), 2, "round {round}: both buffers are spare");
        }
    }

    /// The direct system calls do what std's would: accept gives the client's address and a
    /// non-blocking socket, send and recv move the bytes, close ends the connection with a FIN.
    #[test]
    fn the_direct_system_calls_accept_move_bytes_and_close() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(std_listener);
        let err = sys::accept(&listener).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "nobody has connected yet");
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, addr) = loop {
            match sys::accept(&listener) {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_eq!(addr, Some(client.local_addr().unwrap()));
        let mut buf = [std::mem::MaybeUninit::new(0u8); 16];
        assert_eq!(sys::recv(&sock, &mut buf).unwrap_err().kind(), ErrorKind::WouldBlock, "non-blocking");
        client.write_all(b"ping").unwrap();
        let n = loop {
            match sys::recv(&sock, &mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(n, 4);
        assert_eq!(sys::send(&sock, b"pong").unwrap(), 4);
        sys::close(sock);
        // Left open, the socket would never end the read: fail instead of waiting for ever.
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).unwrap();
        assert_eq!(got, b"pong", "the answer, then the end");
    }

    /// A client that keeps a connection's socket full gets a bounded turn, then the others get
    /// theirs: its drive stops after [`READS_PER_TURN`] reads with bytes still waiting.
    #[test]
    fn a_flooding_client_yields_after_its_turn() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        // Fill the way to the server: far more than a turn's reads can take.
        client.set_nonblocking(true).unwrap();
        let chunk = vec![b'f'; 64 * 1024];
        let mut queued = 0;
        while let Ok(n) = client.write(&chunk) {
            queued += n;
        }
        assert!(queued > 4 * READS_PER_TURN * READ_BUFFER, "only {queued} bytes queued");
        let shared = shared(Service::Print(Arc::new(Ignore)));
        let mut session = session(server, peer, &shared);
        assert!(matches!(session.drive(&turn(&shared, false), &mut Spares::default()), Progress::Yielded));
        let read = session.io.bytes_in as usize;
        assert!(read < queued, "a turn read {read} of {queued} bytes");
        assert!(session.readable, "more is waiting");
        // At shutdown it reads on, a turn at a time, and ends where it would wait.
        let mut turns = 0;
        let end = loop {
            match session.drive(&turn(&shared, true), &mut Spares::default()) {
                Progress::Yielded => turns += 1,
                Progress::Ended(end) => break end,
                other => panic!("{:?} at shutdown", std::mem::discriminant(&other)),
            }
            assert!(turns < 100_000, "never ended");
        };
        assert_eq!(end, End::Shutdown);
        assert!(session.io.bytes_in as usize > read && session.io.bytes_in as usize <= queued);
    }
}

#[cfg(test)]
mod size {
    /// An idle connection on the event loop costs its slab entry (and no buffer), so its size
    /// is the server's memory per idle connection there: 320 bytes when written, against the
    /// target of 2 KiB (BENCHMARKS.md).
    #[test]
    fn a_connection_stays_small() {
        let size = std::mem::size_of::<super::Session>();
        assert!(size <= 512, "a connection's slab entry is {size} bytes; keep it at most 512");
    }
}
