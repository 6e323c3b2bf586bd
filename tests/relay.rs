//! `sockit relay`: every family to every family, data intact both ways at once with splice and
//! without, half-close and resets carried across, a target that is down, limits, datagram
//! sessions, the traffic log, and seed peers through the relay. Every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::{Server, python, python_client, tcp, temp_dir};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `data` and reads back as many bytes (an echo), writing and reading at once so that
/// large amounts cannot deadlock on full buffers.
fn echo_through<S: Read + Write + Send + 'static>(mut s: S, clone: S, data: Vec<u8>, half_close: impl FnOnce(&S)) {
    let len = data.len();
    let writer = std::thread::spawn(move || {
        let mut w = clone;
        w.write_all(&data).unwrap();
        (w, data)
    });
    let mut got = vec![0u8; len];
    s.read_exact(&mut got).unwrap();
    let (w, data) = writer.join().unwrap();
    assert!(got == data, "the echo differs from what was sent");
    half_close(&w);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the echo, then end-of-stream");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 10) as u8)).collect()
}

#[test]
fn tcp_to_tcp_both_ways_at_once_with_and_without_splice() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    for extra in [&[][..], &["--no-splice"][..]] {
        let mut args = vec!["127.0.0.1:0", &echo.endpoint];
        args.extend_from_slice(extra);
        let relay = Server::relay(&args);
        let banner = relay.stderr.snapshot().join("\n");
        let engine = if extra.is_empty() { "(splice)" } else { "(copying)" };
        assert!(banner.contains(engine), "{banner}");
        let s = tcp(&relay.addr());
        echo_through(s.try_clone().unwrap(), s, pattern(32 << 20, 7), |w| w.shutdown(Shutdown::Write).unwrap());
        let done = relay.stop();
        assert!(done.status.success());
        let summary = done.summary().to_owned();
        assert!(summary.contains("1 connection, 32.0 MiB in, 32.0 MiB out"), "{summary}");
    }
}

/// Each pair of connected families relays an echo both ways, with its end-of-stream.
#[test]
fn every_connected_family_to_every_other() {
    let dir = temp_dir();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let targets = [
        ("tcp", Server::start(&["127.0.0.1:0", "echo"])),
        ("tcp6", Server::start(&["tcp6://[::1]:0", "echo"])),
        ("unix", Server::start(&[&format!("unix:{}", path("echo.sock")), "echo"])),
        ("seqpacket", Server::start(&[&format!("unix-seqpacket:{}", path("echo.seq")), "echo"])),
    ];
    let froms = [
        ("tcp", "127.0.0.1:0".to_string()),
        ("tcp6", "tcp6://[::1]:0".to_string()),
        ("unix", format!("unix:{}", path("relay.sock"))),
        ("seqpacket", format!("unix-seqpacket:{}", path("relay.seq"))),
    ];
    for (from_name, from) in &froms {
        for (to_name, target) in &targets {
            let relay = Server::relay(&[from, &target.endpoint]);
            let message = format!("from {from_name} to {to_name}\n");
            let got = match *from_name {
                "seqpacket" => python(
                    "import socket,sys\n\
                     s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(20)\n\
                     s.connect(sys.argv[1]); s.send(sys.argv[2].encode())\n\
                     got=b''\n\
                     while len(got) < len(sys.argv[2]): got += s.recv(65536)\n\
                     s.shutdown(socket.SHUT_WR); assert s.recv(10) == b''\n\
                     sys.stdout.write(got.decode())",
                    &[relay.endpoint.trim_start_matches("unix-seqpacket:"), &message],
                    b"",
                )
                .stdout_text(),
                "unix" => {
                    let mut s = UnixStream::connect(relay.endpoint.trim_start_matches("unix:")).unwrap();
                    s.set_read_timeout(Some(WAIT)).unwrap();
                    s.write_all(message.as_bytes()).unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut got = String::new();
                    s.read_to_string(&mut got).unwrap();
                    got
                }
                _ => {
                    let mut s = tcp(&relay.addr());
                    s.write_all(message.as_bytes()).unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut got = String::new();
                    s.read_to_string(&mut got).unwrap();
                    got
                }
            };
            assert_eq!(got, message, "{from_name} -> {to_name}");
            let done = relay.stop();
            assert!(done.status.success(), "{from_name} -> {to_name}: {:?}", done.stderr);
        }
    }
}

/// The client half-closes; the target reads to the end, then answers; the answer still
/// arrives. Then the other way round: the target half-closes first and still reads.
#[test]
fn half_close_is_carried_both_ways() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap().to_string();
    let relay = Server::relay(&["127.0.0.1:0", &taddr]);

    let server = std::thread::spawn(move || {
        let (mut s, _) = target.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        s.write_all(format!("got {} bytes", all.len()).as_bytes()).unwrap();
        drop(s);
        // Second connection: the target speaks first, half-closes, and then listens.
        let (mut s, _) = target.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"hello, then silence").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all
    });

    let mut c = tcp(&relay.addr());
    c.write_all(&vec![b'x'; 100_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 100000 bytes");

    let mut c = tcp(&relay.addr());
    let mut first = String::new();
    c.read_to_string(&mut first).unwrap();
    assert_eq!(first, "hello, then silence", "the target's end-of-stream arrives");
    c.write_all(b"still heard").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"still heard");
    relay.stop();
}

/// A target that resets: the client is reset too, rather than seeing an orderly end.
#[test]
fn a_reset_on_one_side_resets_the_other() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap().to_string();
    let relay = Server::relay(&["127.0.0.1:0", &taddr]);
    let mut c = tcp(&relay.addr());
    let (s, _) = target.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut s4 = [0u8; 4];
    (&s).read_exact(&mut s4).unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).expect_err("a reset, not an orderly end");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let done = relay.stop();
    assert!(done.stderr.iter().any(|l| l.contains("error: target:")), "{:?}", done.stderr);
}

/// Connects and reads once. A relay that resets a client at once can do it before `connect` has
/// returned, which then reports the reset; otherwise the read does.
fn connect_and_read(addr: &str) -> std::io::Result<usize> {
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read(&mut [0u8; 8])
}

/// Nobody listens at the target: each client is reset at once, the relay says why and keeps
/// running, and relays as soon as the target is there.
#[test]
fn a_target_that_is_down_resets_the_client_and_the_relay_goes_on() {
    let spot = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = spot.local_addr().unwrap().to_string();
    drop(spot);
    let relay = Server::relay(&["127.0.0.1:0", &taddr]);
    let started = Instant::now();
    let r = connect_and_read(&relay.addr());
    assert!(matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    relay.stderr.wait_for("the refusal", |l| l.contains("nothing is listening") || l.contains("refused"));

    let target = Server::start(&[&taddr, "upper"]);
    let mut c = tcp(&relay.addr());
    c.write_all(b"back\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "BACK\n");
    drop(target);
    relay.stop();
}

#[test]
fn idle_timeout_and_max_conns() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let relay = Server::relay(&["127.0.0.1:0", &echo.endpoint, "--idle-timeout", "500ms", "--max-conns", "2"]);
    let mut a = tcp(&relay.addr());
    let mut b = tcp(&relay.addr());
    a.write_all(b"a").unwrap();
    b.write_all(b"b").unwrap();
    let mut one = [0u8; 1];
    a.read_exact(&mut one).unwrap();
    b.read_exact(&mut one).unwrap();
    // A third is over the limit and reset.
    let r = connect_and_read(&relay.addr());
    assert!(matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset) || matches!(r, Ok(0)), "{r:?}");
    // Silent for longer than the idle timeout: closed.
    let started = Instant::now();
    assert_eq!(a.read(&mut one).unwrap(), 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(10), "{waited:?}");
    let done = relay.stop();
    let log = done.stderr.join("\n");
    assert!(log.contains("refused, over --max-conns 2"), "{log}");
    assert!(log.contains("idle timeout"), "{log}");
}

#[test]
fn many_clients_at_once_each_get_their_own_bytes() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let relay = Server::relay(&["127.0.0.1:0", &echo.endpoint]);
    let addr = relay.addr();
    let clients: Vec<_> = (0..50u8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let s = tcp(&addr);
                echo_through(s.try_clone().unwrap(), s, pattern(200_000, i), |w| w.shutdown(Shutdown::Write).unwrap());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let done = relay.stop();
    assert!(done.summary().contains("50 connections"), "{:?}", done.stderr);
}

/// UDP: each client address has its own session (its own socket toward the target), so the
/// answers find their way back; a session ends after the idle timeout, and the next datagram
/// starts a new one.
#[test]
fn udp_sessions_per_client() {
    let target = Server::start(&["udp://127.0.0.1:0", "upper"]);
    let relay = Server::relay(&["udp://127.0.0.1:0", &target.endpoint, "--idle-timeout", "400ms"]);
    let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.connect(relay.addr()).unwrap();
        c.send(format!("client {i}").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 100];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("CLIENT {i}").as_bytes());
    }
    relay.stderr.wait_for("a session's end", |l| l.contains("idle timeout"));
    clients[0].send(b"again").unwrap();
    let mut buf = [0u8; 100];
    let n = clients[0].recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"AGAIN");
    let done = relay.stop();
    let summary = done.summary();
    assert!(summary.contains("4 datagrams in, 4 out"), "{summary}");
}

/// The side that closed first is the one named: a `qa` target that ends the session after "bye"
/// closes before its client, which the relay used to log as "closed by client".
#[test]
fn the_side_that_closed_first_is_named() {
    let target = Server::start(&["127.0.0.1:0", "qa"]);
    let relay = Server::relay(&["127.0.0.1:0", &target.endpoint]);
    let mut c = tcp(&relay.addr());
    c.write_all(b"bye\n").unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    // The client closes only after it has read the target's end.
    drop(c);
    relay.stderr.wait_for("the connection's line", |l| l.ends_with("closed by target"));
    let mut c = tcp(&relay.addr());
    c.shutdown(Shutdown::Write).unwrap();
    let _ = c.read_to_end(&mut all);
    relay.stderr.wait_for("the second connection's line", |l| l.ends_with("closed by client"));
}

/// A UDP target where nothing listens is said once per session, as a stream relay says it
/// cannot connect; the datagrams used to vanish without a word until the idle timeout.
#[test]
fn a_udp_target_that_refuses_is_said_once_per_session() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = Server::relay(&["udp://127.0.0.1:0", &format!("udp://{dead}")]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(relay.addr()).unwrap();
    // Each datagram after the first may find the refusal of the one before.
    for word in ["one", "two", "three"] {
        client.send(word.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = format!("the target refused a datagram: nothing is listening on udp://{dead}");
    relay.stderr.wait_for("the refusal", |l| l.contains(&said));
    let done = relay.stop();
    assert_eq!(done.stderr.iter().filter(|l| l.contains(&said)).count(), 1, "{:#?}", done.stderr);
}

#[test]
fn unix_datagrams_to_udp_and_back() {
    let dir = temp_dir();
    let target = Server::start(&["udp://127.0.0.1:0", "echo"]);
    let from = format!("unix-dgram:{}/relay.dgram", dir.path().display());
    let relay = Server::relay(&[&from, &target.endpoint]);
    let got = python(
        "import socket,sys,os\n\
         s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.settimeout(20)\n\
         s.bind(os.path.join(sys.argv[2], 'client.dgram'))\n\
         for m in (b'one', b'', b'three'):\n\
         \x20   s.sendto(m, sys.argv[1]); sys.stdout.write(repr(s.recv(100)) + ' ')",
        &[relay.endpoint.trim_start_matches("unix-dgram:"), &dir.path().display().to_string()],
        b"",
    );
    assert_eq!(got.stdout_text(), "b'one' b'' b'three' ", "{}", got.stderr);
    relay.stop();
}

#[test]
fn the_traffic_log_shows_time_direction_and_bytes() {
    let dir = temp_dir();
    let log = dir.path().join("traffic.log");
    let target = Server::start(&["127.0.0.1:0", "upper"]);
    let relay = Server::relay(&["127.0.0.1:0", &target.endpoint, "--log", log.to_str().unwrap()]);
    assert!(relay.stderr.snapshot()[0].contains("(copying)"), "a log needs to see the bytes");
    let mut c = tcp(&relay.addr());
    c.write_all(b"hi\tthere\n").unwrap();
    let mut answer = [0u8; 9];
    c.read_exact(&mut answer).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let _ = c.read(&mut answer);
    relay.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains(" #1 open 127.0.0.1:") && lines[0].ends_with(&format!("-> {}", target.endpoint)));
    assert!(lines[1].ends_with(" #1 > 9 bytes: hi\\tthere\\n"), "{}", lines[1]);
    assert!(lines[2].ends_with(" #1 < 9 bytes: HI\\tTHERE\\n"), "{}", lines[2]);
    assert!(lines[3].contains(" #1 close (closed by client), 9 B up, 9 B down"), "{}", lines[3]);
    // Every line starts with an RFC 3339 time.
    for l in &lines {
        assert!(l.len() > 27 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T', "{l}");
    }

    // --hex alone: a hex dump on stderr.
    let relay = Server::relay(&["127.0.0.1:0", &target.endpoint, "--hex"]);
    let mut c = tcp(&relay.addr());
    c.write_all(b"hex me").unwrap();
    c.read_exact(&mut [0u8; 6]).unwrap();
    relay.stderr.wait_for("the dump", |l| l.starts_with("00000000  68 65 78 20 6d 65") && l.ends_with("|hex me|"));
    relay.stderr.wait_for("the answer's dump", |l| l.ends_with("|HEX ME|"));
    relay.stop();
}

/// `--log -` into a stderr whose reader went away (`2>&1 | head -1`): the first write failed,
/// tracing-subscriber reported that with `eprintln!`, which panicked on the same stderr, and the
/// session that logged was reset. Every client is now relayed, log or no log.
#[test]
fn a_traffic_log_on_a_closed_stderr_loses_no_client() {
    let target = Server::start(&["127.0.0.1:0", "upper"]);
    let mut relay = support::sockit()
        .args(["relay", "127.0.0.1:0", &target.endpoint, "--log", "-", "-v"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(relay.stderr.take().unwrap()), &mut banner).unwrap();
    // The reader was dropped with the BufReader: stderr is now a pipe with no reader.
    let addr = banner.split("tcp://").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    for i in 0..3 {
        let mut c = tcp(&addr);
        c.write_all(format!("client {i}\n").as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(answer, format!("CLIENT {i}\n"));
    }
    assert!(relay.try_wait().unwrap().is_none(), "the relay stopped");
    let _ = relay.kill();
    let _ = relay.wait();
}

/// A log that cannot be written stops with one warning, in words and without terminal colours
/// on a stderr that is no terminal; the relaying goes on.
#[test]
fn a_traffic_log_that_cannot_be_written_warns_once_in_plain_words() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipping: this machine has no /dev/full");
        return;
    }
    let target = Server::start(&["127.0.0.1:0", "upper"]);
    let relay = Server::relay(&["127.0.0.1:0", &target.endpoint, "--log", "/dev/full"]);
    for i in 0..2 {
        let mut c = tcp(&relay.addr());
        c.write_all(format!("client {i}\n").as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("CLIENT {i}\n"));
    }
    let done = relay.stop();
    let warned: Vec<_> = done.stderr.iter().filter(|l| l.contains("traffic log")).collect();
    assert_eq!(warned.len(), 1, "{:#?}", done.stderr);
    assert!(
        warned[0].ends_with("WARN the traffic log cannot be written, and stops: no space left on device"),
        "{warned:?}"
    );
    assert!(!done.stderr.iter().any(|l| l.contains('\x1b')), "{:#?}", done.stderr);
}

/// The seed programs through the relay: their upper-case client and server, and a UDP
/// sender, unchanged.
#[test]
fn seed_programs_through_the_relay() {
    let target = support::PythonServer::start("tcp_upper_server.py", &[]);
    let relay = Server::relay(&["127.0.0.1:0", &target.addr()]);
    let ran = python_client("tcp_upper_client.py", "127.0.0.1", relay.port(), &[], b"helloworld\n");
    assert!(ran.stdout_text().contains("HELLOWORLD"), "{} / {}", ran.stdout_text(), ran.stderr);
    relay.stop();
}

#[test]
fn ctrl_c_stops_with_a_summary_and_removes_the_socket_file() {
    let dir = temp_dir();
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let path = dir.path().join("r.sock");
    let relay = Server::relay(&[&format!("unix:{}", path.display()), &echo.endpoint]);
    assert!(path.exists());
    let done = relay.stop();
    assert!(done.status.success());
    assert!(done.summary().starts_with("sockit: stopped after"), "{:?}", done.stderr);
    assert!(!path.exists(), "the relay's socket file is removed");
}

/// The check for a relay to its own address refuses only that: another loopback address on the
/// same port, a multicast group, or the other family's loopback are targets like any other.
#[test]
fn a_relay_to_the_same_port_elsewhere_starts() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (from, to) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")),
        (format!("udp://0.0.0.0:{port}"), format!("udp://239.1.2.3:{port}")),
        (format!("tcp6://[::1]:{port}"), format!("127.0.0.1:{port}")),
    ] {
        if from.contains("[::1]") && std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped {from}: no IPv6 loopback here");
            continue;
        }
        let relay = Server::relay(&[&from, &to]);
        let done = relay.stop();
        assert!(!done.stderr.iter().any(|l| l.contains("own address")), "{from} -> {to}: {:?}", done.stderr);
    }
}
