//! `sockit serve` under load and abuse, with real processes on real sockets: many clients at
//! once, clients that stall, reset or never read, connection limits, `--once`, idle timeouts,
//! address reuse, orderly shutdown with a deadline, per-connection logging, Unix socket files
//! (mode, clean-up, stale and live sockets), framing limits, and IPv6.
//!
//! Every server listens on port 0 or on a path in a fresh temporary directory; every wait is
//! bounded; sleeps only let a timeout elapse, never wait for a server.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::*;

/// How long a well-behaved client may wait for an answer while bad clients are connected, or
/// for a refusal or a close that should come at once. Well under [`LIMIT`] and under how long
/// the bad clients stay connected, so a server that waits on them fails; generous enough for a
/// loaded test machine.
const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Connects to an IP server, with read and write timeouts so no test can hang.
fn connect(server: &Server) -> TcpStream {
    tcp(&server.addr())
}

/// Sends `msg` and expects `want` back.
fn round_trip(s: &mut (impl Read + Write), msg: &[u8], want: &[u8]) {
    s.write_all(msg).unwrap();
    let got = read_n(s, want.len());
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A `len` frame: 4-byte big-endian length, then the bytes.
fn len_frame(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// What a read on a connection the server should have closed returns: end of stream, or a reset
/// (the server resets connections that broke the framing).
fn expect_closed(s: &mut impl Read, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("expected the server to close the connection, got {e} after {:?}", started.elapsed()),
        }
    }
    let took = started.elapsed();
    assert!(took < within, "the server took {took:?} to close the connection (bound {within:?})");
    took
}

/// A client that sends and never reads, until the server is blocked writing answers to it: its
/// own send then stalls because the server no longer reads. Returns the open socket once that
/// state is reached.
fn never_reading_client(server: &Server, frame: &[u8]) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // Small buffers reach the stalled state after little data.
    sock.set_recv_buffer_size(4096).unwrap();
    sock.set_send_buffer_size(4096).unwrap();
    let addr: SocketAddr = server.addr().parse().unwrap();
    sock.connect_timeout(&addr.into(), LIMIT).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let chunk = frame.repeat((64 * 1024 / frame.len()).max(1));
    let deadline = Instant::now() + LIMIT;
    // Stalled means no progress for two write timeouts in a row, not one slow moment.
    let mut stalls = 0;
    while stalls < 2 {
        assert!(Instant::now() < deadline, "the server kept reading from a client that never reads");
        match s.write(&chunk) {
            Ok(_) => stalls = 0,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => stalls += 1,
            Err(e) => panic!("never-reading client: {e}"),
        }
    }
    s
}

/// The stderr line a server wrote about the connection whose client end is `local`.
fn conn_line(server: &Server, local: SocketAddr) -> String {
    let prefix = format!("{local}: ");
    server.stderr.wait_for(&format!("about {local}"), |l| l.starts_with(&prefix))
}

/// Whether `::1` can be used on this machine.
fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------------------------
// Many clients, and clients that misbehave

#[test]
fn fifty_concurrent_clients_each_get_their_own_echo_and_upper_answers() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let upper = Server::start(&["127.0.0.1:0", "upper"]);
    const N: usize = 50;
    // Everyone connects first, then all talk at once.
    let barrier = Arc::new(Barrier::new(2 * N));
    let mut threads = Vec::new();
    for (addr, is_upper) in [(echo.addr(), false), (upper.addr(), true)] {
        for i in 0..N {
            let barrier = barrier.clone();
            let addr = addr.clone();
            threads.push(std::thread::spawn(move || {
                let mut s = tcp(&addr);
                barrier.wait();
                for round in 0..5 {
                    let msg = format!("client {i} round {round} says hello");
                    let want = if is_upper { msg.to_ascii_uppercase() } else { msg.clone() };
                    round_trip(&mut s, msg.as_bytes(), want.as_bytes());
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "unexpected extra bytes {rest:?}");
            }));
        }
    }
    for t in threads {
        t.join().expect("a client thread failed");
    }
    let done = upper.stop();
    assert!(done.status.success());
    let closed = done.stderr.iter().filter(|l| l.contains("closed by client")).count();
    assert_eq!(closed, N, "{:#?}", done.stderr);
    assert!(done.stderr.iter().any(|l| l.contains("50 connections")), "{:#?}", done.stderr);
}

/// The listening TCP sockets on `port`, from the kernel's table.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    // Columns: sl, local_address, rem_address, st (0A is LISTEN), …
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&local) && cols[3] == "0A"
        })
        .count()
}

#[test]
fn threads_each_listen_on_the_one_port_and_keep_it_from_other_programs() {
    for threads in [1usize, 3] {
        let server = Server::start(&["127.0.0.1:0", "echo", "--threads", &threads.to_string()]);
        assert_eq!(listeners_on(server.port()), threads, "one listening socket per thread");
        // The port stays refused to another server, and to a program that does not share.
        let again = sockit_run(&["serve", &server.addr(), "echo"], b"");
        assert_eq!(again.code, Some(1), "{}", again.stderr);
        assert!(again.stderr.contains("address already in use"), "{}", again.stderr);
        let err = std::net::TcpListener::bind(server.addr()).expect_err("the port is taken");
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        // Clients from many source ports, so the kernel spreads them over every socket; each is
        // answered, and the summary counts them all whichever thread took them.
        const N: usize = 60;
        let clients: Vec<_> = (0..N)
            .map(|i| {
                let addr = server.addr();
                std::thread::spawn(move || {
                    let mut s = tcp(&addr);
                    let msg = format!("client {i}");
                    round_trip(&mut s, msg.as_bytes(), msg.as_bytes());
                })
            })
            .collect();
        for c in clients {
            c.join().expect("a client failed");
        }
        let done = server.stop();
        assert!(done.status.success());
        assert!(done.summary().contains(&format!("{N} connections")), "{}", done.summary());
    }
}

#[test]
fn silent_stalled_resetting_and_non_reading_clients_do_not_delay_others() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len", "--grace", "500ms"]);

    // Connects and says nothing.
    let _silent = connect(&server);
    // Sends half a frame (a header for 100 bytes, then 50) and stalls.
    let mut half = connect(&server);
    half.write_all(&(100u32).to_be_bytes()).unwrap();
    half.write_all(&[b'h'; 50]).unwrap();
    // Sends part of a frame, then resets the connection.
    let reset = connect(&server);
    let reset_addr = reset.local_addr().unwrap();
    (&reset).write_all(&(10u32).to_be_bytes()).unwrap();
    // Linger zero, then close: the kernel sends a reset instead of an orderly end.
    let reset = Socket::from(reset);
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);
    // Sends frame after frame and never reads the echoes, until the server is stuck writing.
    let _hog = never_reading_client(&server, &len_frame(&[b'x'; 1000]));

    // The reset was noticed and logged, and did not stop the server.
    let line = conn_line(&server, reset_addr);
    assert!(line.contains("error"), "{line}");

    for i in 0..10 {
        let started = Instant::now();
        let mut s = connect(&server);
        let msg = format!("good client {i}");
        round_trip(&mut s, &len_frame(msg.as_bytes()), &len_frame(msg.as_bytes()));
        let took = started.elapsed();
        assert!(took < PROMPT, "good client {i} waited {took:?} while bad clients were connected");
    }
    // The stalled half-frame client is still connected and can finish its frame.
    half.write_all(&[b'h'; 50]).unwrap();
    assert_eq!(read_n(&mut half, 104), len_frame(&[b'h'; 100]));
}

// ---------------------------------------------------------------------------------------------
// Limits and modes

#[test]
fn max_conns_refuses_the_extra_client_at_once_and_serves_again_after_one_leaves() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--max-conns", "2"]);
    let mut first = connect(&server);
    round_trip(&mut first, b"one", b"one");
    let mut second = connect(&server);
    round_trip(&mut second, b"two", b"two");

    let mut third = connect(&server);
    let started = Instant::now();
    let mut told = String::new();
    third.read_to_string(&mut told).expect("the refused client is told and closed");
    assert!(started.elapsed() < PROMPT, "refusal took {:?}", started.elapsed());
    assert!(told.contains("server busy"), "{told:?}");
    let line = server.stderr.wait_for("'refused'", |l| l.contains("refused"));
    assert!(line.starts_with(&third.local_addr().unwrap().to_string()), "{line}");

    // The first leaves; once the server has seen it go, a new client is served.
    let first_addr = first.local_addr().unwrap();
    drop(first);
    assert!(conn_line(&server, first_addr).contains("closed by client"));
    let mut fourth = connect(&server);
    round_trip(&mut fourth, b"four", b"four");
    round_trip(&mut second, b"still here", b"still here");
    drop((second, fourth));

    let done = server.stop();
    assert!(done.status.success());
    let summary = done.stderr.iter().find(|l| l.starts_with("sockit: stopped after")).expect("summary");
    assert!(summary.contains("3 connections") && summary.contains("1 refused"), "{summary}");
}

/// `sockit connect` and `send` turned away by a server at its --max-conns say so on stderr and
/// exit 1, under every framing and on seqpacket, instead of printing the notice as an answer.
#[test]
fn a_sockit_client_over_max_conns_says_the_server_is_busy_and_fails() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let seq = format!("unix-seqpacket:{}", path.display());
    for (endpoint, framing) in [("127.0.0.1:0", "raw"), ("127.0.0.1:0", "line"), ("127.0.0.1:0", "len"), (&seq, "raw")]
    {
        let server = Server::start(&[endpoint, "echo", "--max-conns", "1", "--framing", framing]);
        // One client holds the only place, and is served before the others try.
        let held = if endpoint == seq {
            let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
            s.connect(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
            s.set_read_timeout(Some(PROMPT)).unwrap();
            s.send(b"in").unwrap();
            let mut buf = [std::mem::MaybeUninit::new(0u8); 8];
            assert_eq!(s.recv(&mut buf).unwrap(), 2);
            s
        } else {
            let mut c = connect(&server);
            let (msg, want): (&[u8], &[u8]) = match framing {
                "len" => (b"\0\0\0\x02in", b"\0\0\0\x02in"),
                _ => (b"in\n", b"in\n"),
            };
            round_trip(&mut c, msg, want);
            c.into()
        };
        let ep = if endpoint == seq { seq.clone() } else { server.addr() };
        for args in [vec!["connect", &ep, "--framing", framing], vec!["send", &ep, "hi", "--framing", framing]] {
            let ran = sockit_run(&args, b"hi\n");
            assert_fails(&ran, 1, &["server busy (1 client connected), try again later"]);
            assert!(ran.stdout.is_empty(), "{args:?}: {:?}", ran.stdout_text());
        }
        drop(held);
    }
}

#[test]
fn once_serves_one_tcp_client_then_exits_by_itself() {
    let mut server = Server::start(&["127.0.0.1:0", "upper", "--once"]);
    let mut c = connect(&server);
    round_trip(&mut c, b"only me", b"ONLY ME");
    drop(c);
    let done = server.wait();
    assert_eq!(done.status.code(), Some(0), "{:#?}", done.stderr);
    assert!(done.stderr.iter().any(|l| l.starts_with("sockit: stopped after") && l.contains("1 connection,")));
    // The banner said so from the start.
    assert!(done.stderr[0].ends_with("; one client, then exit"), "{:#?}", done.stderr);
}

/// With --once the exit status says how the one connection went: a receiver whose client reset
/// mid-transfer (`print --raw --once > FILE`) must not look as if it had the whole file.
#[test]
fn once_exits_1_when_its_one_connection_ends_in_an_error() {
    let mut server = Server::start(&["127.0.0.1:0", "print", "--raw", "--once"]);
    let mut c = connect(&server);
    c.write_all(b"half a file").unwrap();
    // Closing with a reset, as a client that crashed or was killed by the kernel leaves.
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    let done = server.wait();
    assert_eq!(done.status.code(), Some(1), "{:#?}", done.stderr);
    let last = done.stderr.last().unwrap();
    assert!(last.starts_with("sockit: its one client's connection failed: error: "), "{:#?}", done.stderr);

    // Closed in order: 0.
    let mut server = Server::start(&["127.0.0.1:0", "print", "--raw", "--once"]);
    connect(&server).write_all(b"a whole file").unwrap();
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn once_on_udp_answers_one_datagram_then_exits_by_itself() {
    let mut server = Server::start(&["udp://127.0.0.1:0", "echo", "--once"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    sock.send_to(b"ping", server.addr()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).expect("an answer");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.to_string(), server.addr());
    let done = server.wait();
    assert_eq!(done.status.code(), Some(0), "{:#?}", done.stderr);
    assert!(done.stderr.iter().any(|l| l.contains("1 datagram in")), "{:#?}", done.stderr);
    assert!(done.stderr[0].ends_with("; one datagram, then exit"), "{:#?}", done.stderr);
}

#[test]
fn idle_timeout_closes_a_silent_client_but_not_an_active_one() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--idle-timeout", "300ms"]);
    let active_addr = server.addr();
    // Talks every 50 ms or so for about a second: never idle for 300 ms.
    let active = std::thread::spawn(move || {
        let mut s = tcp(&active_addr);
        for i in 0..20 {
            let msg = format!("tick {i}");
            round_trip(&mut s, msg.as_bytes(), msg.as_bytes());
            std::thread::sleep(Duration::from_millis(50));
        }
        round_trip(&mut s, b"still open", b"still open");
        s.local_addr().unwrap()
    });

    let mut silent = connect(&server);
    let silent_addr = silent.local_addr().unwrap();
    let took = expect_closed(&mut silent, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(200), "closed after only {took:?}");
    assert!(conn_line(&server, silent_addr).contains("idle timeout"));

    let active_addr = active.join().expect("the active client was served throughout");
    let done = server.stop();
    let line = done.stderr.iter().find(|l| l.starts_with(&format!("{active_addr}: "))).expect("active's line");
    assert!(!line.contains("idle timeout"), "{line}");
}

#[test]
fn backlog_flag_is_accepted_and_the_server_serves() {
    let server = Server::start(&["127.0.0.1:0", "upper", "--backlog", "1"]);
    for i in 0..3 {
        let mut c = connect(&server);
        let msg = format!("client {i}");
        round_trip(&mut c, msg.as_bytes(), msg.to_uppercase().as_bytes());
    }
    assert!(server.stop().status.success());
}

/// Whether a TCP socket with local port `port` is in TIME-WAIT (from /proc/net/tcp).
fn time_wait_on(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&format!(":{port:04X}")) && f[3] == "06"
    })
}

#[test]
fn restart_on_the_same_port_succeeds_while_time_wait_connections_linger() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let port = server.port();
    let mut c = connect(&server);
    round_trip(&mut c, b"before", b"before");
    // The server closes first (it is shutting down), so its side ends in TIME-WAIT.
    server.signal(libc::SIGINT);
    expect_closed(&mut c, PROMPT);
    drop(c);
    let mut server = server;
    assert!(server.wait().status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !time_wait_on(port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(time_wait_on(port), "expected a TIME-WAIT socket on port {port}");

    let again = Server::start(&[&format!("127.0.0.1:{port}"), "echo"]);
    assert_eq!(again.port(), port);
    let mut c = connect(&again);
    round_trip(&mut c, b"after", b"after");
}

// ---------------------------------------------------------------------------------------------
// Shutdown

fn stops_on(sig: i32) {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let mut idle = connect(&server);
    round_trip(&mut idle, b"hi", b"hi");
    let idle_addr = idle.local_addr().unwrap();
    let started = Instant::now();
    server.signal(sig);
    expect_closed(&mut idle, PROMPT);
    let mut server = server;
    let done = server.wait();
    assert!(started.elapsed() < PROMPT, "shutdown took {:?}", started.elapsed());
    assert_eq!(done.status.code(), Some(0), "{:#?}", done.stderr);
    let line = done.stderr.iter().find(|l| l.starts_with(&format!("{idle_addr}: "))).expect("a line");
    assert!(line.contains("server shutting down"), "{line}");
    let last = done.summary();
    assert!(last.starts_with("sockit: stopped after ") && last.contains("1 connection,"), "{:#?}", done.stderr);
}

#[test]
fn sigint_closes_idle_clients_and_exits_zero_with_a_summary() {
    stops_on(libc::SIGINT);
}

#[test]
fn sigterm_closes_idle_clients_and_exits_zero_with_a_summary() {
    stops_on(libc::SIGTERM);
}

#[test]
fn a_signal_right_after_the_banner_still_stops_the_server_cleanly() {
    // The banner says the server is ready; from then on Ctrl-C must mean an orderly stop (exit
    // 0, summary, socket file removed), never death by the default signal action.
    let dir = temp_dir();
    let path = dir.path().join("early.sock");
    for attempt in 0..50 {
        let server = Server::start(&[&unix_arg(&path), "echo"]);
        let done = server.stop();
        assert_eq!(
            done.status.code(),
            Some(0),
            "attempt {attempt}: SIGINT right after the banner ended the server with {:?}; stderr: {:#?}",
            done.status,
            done.stderr
        );
        assert!(done.stderr.iter().any(|l| l.starts_with("sockit: stopped after")), "{:#?}", done.stderr);
        assert!(!path.exists(), "attempt {attempt}: the socket file was left behind");
    }
}

#[test]
fn grace_deadline_cuts_a_client_that_never_reads_a_big_pending_write() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--grace", "300ms"]);
    let hog = never_reading_client(&server, b"0123456789abcdef");
    let hog_addr = hog.local_addr().unwrap();
    let started = Instant::now();
    server.signal(libc::SIGINT);
    let mut server = server;
    let done = server.wait();
    let took = started.elapsed();
    assert!(took < PROMPT, "shutdown with a 300ms grace took {took:?}");
    assert!(took >= Duration::from_millis(250), "the grace period was not given: {took:?}");
    assert_eq!(done.status.code(), Some(0), "{:#?}", done.stderr);
    let line = done.stderr.iter().find(|l| l.starts_with(&format!("{hog_addr}: "))).expect("the hog's line");
    assert!(line.contains("cut at shutdown deadline"), "{line}");
    let summary = done.stderr.iter().find(|l| l.starts_with("sockit: stopped after")).expect("summary");
    assert!(summary.contains("1 cut at the deadline"), "{summary}");
}

// ---------------------------------------------------------------------------------------------
// Logging

#[test]
fn each_connection_gets_one_log_line_with_peer_bytes_and_duration() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let mut c = connect(&server);
    let local = c.local_addr().unwrap();
    round_trip(&mut c, b"hello", b"hello");
    round_trip(&mut c, b" world", b" world");
    drop(c);
    let line = conn_line(&server, local);
    // e.g. "127.0.0.1:54321: 11 B in, 11 B out, 0.002s, closed by client"
    let fields: Vec<&str> = line.split(", ").collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!(fields[0], format!("{local}: 11 B in"), "{line}");
    assert_eq!(fields[1], "11 B out", "{line}");
    let secs = fields[2].strip_suffix('s').and_then(|s| s.parse::<f64>().ok());
    assert!(matches!(secs, Some(s) if (0.0..20.0).contains(&s)), "{line}");
    assert_eq!(fields[3], "closed by client", "{line}");
    let done = server.stop();
    let mentions = done.stderr.iter().filter(|l| l.contains(&local.to_string())).count();
    assert_eq!(mentions, 1, "{:#?}", done.stderr);
}

#[test]
fn verbose_logs_each_connection_as_it_is_accepted_too() {
    let mut cmd = sockit();
    cmd.args(["-v", "serve", "127.0.0.1:0", "echo"]);
    let server = Server::start_cmd(cmd);
    let mut c = connect(&server);
    let local = c.local_addr().unwrap();
    // The line comes while the client is still connected, as `nc -v -l` says "connection from".
    server.stderr.wait_for("a connected line", |l| l == format!("{local}: connected"));
    round_trip(&mut c, b"hi", b"hi");
    drop(c);
    server.stderr.wait_for("the end line", |l| l.starts_with(&format!("{local}: ")) && l.ends_with("by client"));
    let done = server.stop();
    let mentions: Vec<&String> = done.stderr.iter().filter(|l| l.contains(&local.to_string())).collect();
    assert_eq!(mentions.len(), 2, "{:#?}", done.stderr);
    assert!(mentions[1].ends_with("closed by client"), "{:#?}", done.stderr);
}

#[test]
fn quiet_prints_no_banner_connection_lines_or_summary() {
    let dir = temp_dir();
    let path = dir.path().join("q.sock");
    let mut child = sockit()
        .args(["-q", "serve", &format!("unix:{}", path.display()), "upper"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Quiet means no banner to wait for: the socket is ready when a connect succeeds.
    let deadline = Instant::now() + LIMIT;
    let mut c = loop {
        match UnixStream::connect(&path) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                assert!(child.try_wait().unwrap().is_none(), "quiet server exited: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("quiet server never listened: {e}"),
        }
    };
    c.set_read_timeout(Some(LIMIT)).unwrap();
    round_trip(&mut c, b"psst", b"PSST");
    drop(c);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, LIMIT).expect("quiet server exits");
    assert!(status.success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(err, "", "-q must print nothing on stderr");
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------------------------
// Unix socket files

fn unix_arg(path: &Path) -> String {
    format!("unix:{}", path.display())
}

#[test]
fn unix_socket_file_has_mode_0600_and_is_removed_on_exit() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let server = Server::start(&[&unix_arg(&path), "upper"]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let mut c = unix(&path);
    round_trip(&mut c, b"unix", b"UNIX");
    drop(c);
    assert!(server.stop().status.success());
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn unix_socket_mode_flag_is_respected() {
    let dir = temp_dir();
    let path = dir.path().join("g.sock");
    let server = Server::start(&[&unix_arg(&path), "echo", "--mode", "660"]);
    let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660, "mode {mode:o}");
    assert!(server.stop().status.success());
    assert!(!path.exists());
}

#[test]
fn stale_socket_left_by_a_killed_server_is_replaced() {
    let dir = temp_dir();
    let path = dir.path().join("stale.sock");
    let mut crashed = Server::start(&[&unix_arg(&path), "echo"]);
    crashed.signal(libc::SIGKILL);
    let done = crashed.wait();
    assert!(!done.status.success());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket(), "kill -9 leaves the file");

    let server = Server::start(&[&unix_arg(&path), "upper"]);
    let mut c = unix(&path);
    round_trip(&mut c, b"fresh", b"FRESH");
    drop(c);
    assert!(server.stop().status.success());
    assert!(!path.exists());
}

#[test]
fn stale_socket_left_by_another_program_is_replaced() {
    let dir = temp_dir();
    let path = dir.path().join("py.sock");
    let ran = python(
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\n",
        &[path.to_str().unwrap()],
        b"",
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());

    let server = Server::start(&[&unix_arg(&path), "upper"]);
    let mut c = unix(&path);
    round_trip(&mut c, b"replaced", b"REPLACED");
    drop(c);
    assert!(server.stop().status.success());
    assert!(!path.exists());
}

#[test]
fn live_unix_socket_is_not_clobbered_by_a_second_server() {
    let dir = temp_dir();
    let path = dir.path().join("live.sock");
    let first = Server::start(&[&unix_arg(&path), "upper"]);
    let ino = std::fs::symlink_metadata(&path).unwrap().ino();

    let second = sockit_run(&["serve", &unix_arg(&path), "echo"], b"");
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    assert!(second.stderr.contains("already listening"), "{}", second.stderr);
    assert_eq!(second.stderr.lines().count(), 1, "{}", second.stderr);

    assert_eq!(std::fs::symlink_metadata(&path).unwrap().ino(), ino, "the live socket file was replaced");
    let mut c = unix(&path);
    round_trip(&mut c, b"first", b"FIRST");
    drop(c);
    // The second server learned the first was live from the kernel (sock_diag), not by
    // connecting: the first served one client, ours, not a probe too.
    let done = first.stop();
    assert!(done.status.success());
    assert!(done.summary().contains(": 1 connection,"), "{:#?}", done.stderr);
}

#[test]
fn regular_file_at_the_socket_path_is_never_touched() {
    let dir = temp_dir();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, "keep me\n").unwrap();
    let ran = sockit_run(&["serve", &unix_arg(&path), "echo"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("is not a socket"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me\n");
}

// ---------------------------------------------------------------------------------------------
// Framing

#[test]
fn oversized_len_header_closes_that_connection_and_the_server_keeps_serving() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let mut bad = connect(&server);
    let bad_addr = bad.local_addr().unwrap();
    bad.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    expect_closed(&mut bad, PROMPT);
    let line = conn_line(&server, bad_addr);
    assert!(line.contains("exceeds the maximum"), "{line}");

    let mut good = connect(&server);
    round_trip(&mut good, &len_frame(b"next"), &len_frame(b"next"));
}

#[test]
fn line_longer_than_max_frame_closes_the_connection() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--max-frame", "16"]);
    // Exactly the maximum is fine.
    let mut ok = connect(&server);
    round_trip(&mut ok, b"0123456789abcdef\n", b"0123456789abcdef\n");

    let mut bad = connect(&server);
    let bad_addr = bad.local_addr().unwrap();
    bad.write_all(b"0123456789abcdefg\n").unwrap();
    expect_closed(&mut bad, PROMPT);
    assert!(conn_line(&server, bad_addr).contains("longer than the maximum"));
    round_trip(&mut ok, b"still fine\n", b"still fine\n");
}

#[test]
fn empty_len_message_is_echoed_as_an_empty_frame() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let mut c = connect(&server);
    round_trip(&mut c, &len_frame(b""), &[0, 0, 0, 0]);
    round_trip(&mut c, &len_frame(b"after"), &len_frame(b"after"));
}

#[test]
fn frames_written_one_byte_at_a_time_still_decode() {
    let len_server = Server::start(&["127.0.0.1:0", "upper", "--framing", "len"]);
    let mut wire = Vec::new();
    for m in [&b"split"[..], b"", b"every byte"] {
        wire.extend(len_frame(m));
    }
    let mut c = connect(&len_server);
    for b in &wire {
        c.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut want = Vec::new();
    for m in [&b"SPLIT"[..], b"", b"EVERY BYTE"] {
        want.extend(len_frame(m));
    }
    assert_eq!(read_n(&mut c, want.len()), want);

    let line_server = Server::start(&["127.0.0.1:0", "upper", "--framing", "line"]);
    let mut c = connect(&line_server);
    for b in b"one\n\ntwo three\n" {
        c.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(read_n(&mut c, 15), b"ONE\n\nTWO THREE\n");
}

// ---------------------------------------------------------------------------------------------
// IPv6

#[test]
fn tcp6_endpoint_serves_on_ipv6_loopback() {
    if !have_ipv6_loopback() {
        eprintln!("skipping: ::1 is not available on this machine");
        return;
    }
    let server = Server::start(&["tcp6://[::1]:0", "upper"]);
    assert!(server.endpoint.starts_with("tcp://[::1]:"), "{}", server.endpoint);
    let mut c = tcp(&format!("[::1]:{}", server.port()));
    round_trip(&mut c, b"six", b"SIX");
}

#[test]
fn dual_stack_port_is_reachable_over_ipv4_and_ipv6() {
    if !have_ipv6_loopback() {
        eprintln!("skipping: ::1 is not available on this machine");
        return;
    }
    let server = Server::start(&[":0", "echo"]);
    let port = server.port();
    let mut v4 = tcp(&format!("127.0.0.1:{port}"));
    round_trip(&mut v4, b"over v4", b"over v4");
    let mut v6 = tcp(&format!("[::1]:{port}"));
    round_trip(&mut v6, b"over v6", b"over v6");
}
