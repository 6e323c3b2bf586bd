//! Access control: `--allow`, `--deny` (deny wins), files of rules, and `--max-per-source`, on
//! TCP, UDP and the relay. Clients come from different loopback addresses (127.0.0.2, …) by
//! binding their socket before they connect. Each refusal is checked against a positive
//! control: the same exchange from an allowed address works.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use support::{Server, sockit_run, temp_dir};

const WAIT: Duration = Duration::from_secs(20);

/// A TCP connection to `server` from the loopback address `from`.
fn connect_from(from: &str, server: &str) -> TcpStream {
    try_connect_from(from, server).unwrap_or_else(|e| panic!("connect {server} from {from}: {e}"))
}

/// As `connect_from`, with the connect's error given back.
fn try_connect_from(from: &str, server: &str) -> std::io::Result<TcpStream> {
    let to: SocketAddr = server.parse().unwrap();
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    let local = SocketAddr::new(from.parse::<std::net::IpAddr>().unwrap(), 0);
    s.bind(&local.into()).unwrap();
    s.connect(&to.into())?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    Ok(s)
}

/// Whether an exchange from `from` is served: an echo comes back (`true`), or the connection is
/// reset or closed with nothing (`false`).
fn served(from: &str, server: &str) -> bool {
    // A refused client is reset at once, which can happen before `connect` returns.
    let mut s = match try_connect_from(from, server) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
        Err(e) => panic!("connect {server} from {from}: {e}"),
    };
    // The write may already fail if the reset came first.
    if s.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    match s.read(&mut buf) {
        Ok(5) => {
            assert_eq!(&buf, b"ping\n");
            true
        }
        Ok(0) => false,
        Ok(n) => panic!("a partial answer of {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn allow_lets_in_only_its_ranges() {
    let srv = Server::start(&["127.0.0.1:0", "echo", "--allow", "127.0.0.1,127.0.0.4/31"]);
    assert!(served("127.0.0.1", &srv.addr()));
    assert!(served("127.0.0.5", &srv.addr()));
    assert!(!served("127.0.0.2", &srv.addr()));
    let done = srv.stop();
    let log = done.stderr.join("\n");
    assert!(log.contains("127.0.0.2:") && log.contains("refused, not in any --allow range"), "{log}");
    assert!(done.summary().contains("2 connections, 1 refused"), "{log}");
}

#[test]
fn deny_wins_over_allow() {
    let srv = Server::start(&["127.0.0.1:0", "echo", "--allow", "127.0.0.0/8", "--deny", "127.0.0.3"]);
    assert!(served("127.0.0.2", &srv.addr()));
    assert!(!served("127.0.0.3", &srv.addr()));
    let done = srv.stop();
    assert!(done.stderr.iter().any(|l| l.contains("refused, denied by --deny 127.0.0.3/32")));
}

#[test]
fn rules_from_files_and_a_dual_stack_socket() {
    let dir = temp_dir();
    let allow = dir.path().join("allow.txt");
    let deny = dir.path().join("deny.txt");
    std::fs::write(&allow, "# the office\n127.0.0.0/24, ::1\n").unwrap();
    std::fs::write(&deny, "127.0.0.9 # that one machine\n").unwrap();
    // `:0` is one IPv6 socket for both families: IPv4 clients arrive as ::ffff:127.0.0.x and are
    // still matched by IPv4 rules.
    let srv =
        Server::start(&[":0", "echo", "--allow-file", allow.to_str().unwrap(), "--deny-file", deny.to_str().unwrap()]);
    let port = srv.port();
    assert!(served("127.0.0.1", &format!("127.0.0.1:{port}")));
    assert!(!served("127.0.0.9", &format!("127.0.0.1:{port}")));
    assert!(served("::1", &format!("[::1]:{port}")));
    srv.stop();
}

#[test]
fn max_per_source_counts_open_connections() {
    let srv = Server::start(&["127.0.0.1:0", "echo", "--max-per-source", "2"]);
    let a = connect_from("127.0.0.1", &srv.addr());
    let b = connect_from("127.0.0.1", &srv.addr());
    for mut s in [&a, &b] {
        s.write_all(b"x").unwrap();
        s.read_exact(&mut [0u8; 1]).unwrap();
    }
    assert!(!served("127.0.0.1", &srv.addr()), "a third from the same address is reset");
    assert!(served("127.0.0.2", &srv.addr()), "another address has its own count");
    drop(a);
    // The server notices the close; then there is room again.
    let mut ok = false;
    for _ in 0..100 {
        if served("127.0.0.1", &srv.addr()) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "a slot is given back when a connection ends");
    let done = srv.stop();
    assert!(done.stderr.iter().any(|l| l.contains("over --max-per-source 2 from 127.0.0.1")));
}

#[test]
fn udp_datagrams_from_denied_addresses_are_dropped() {
    let srv = Server::start(&["udp://127.0.0.1:0", "upper", "--deny", "127.0.0.2"]);
    let ask = |from: &str| -> Option<Vec<u8>> {
        let s = UdpSocket::bind(format!("{from}:0")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s.send_to(b"hi", srv.addr()).unwrap();
        let mut buf = [0u8; 16];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    };
    assert_eq!(ask("127.0.0.1"), Some(b"HI".to_vec()));
    assert_eq!(ask("127.0.0.2"), None);
    let done = srv.stop();
    assert!(done.stderr.iter().any(|l| l.contains("datagram dropped: denied by --deny 127.0.0.2/32")));
}

#[test]
fn the_relay_obeys_the_rules_too() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let relay = Server::relay(&["127.0.0.1:0", &echo.endpoint, "--deny", "127.0.0.7"]);
    assert!(served("127.0.0.1", &relay.addr()));
    assert!(!served("127.0.0.7", &relay.addr()));
    relay.stop();
}

#[test]
fn bad_rules_are_usage_errors() {
    let dir = temp_dir();
    let bad_file = dir.path().join("bad.txt");
    std::fs::write(&bad_file, "10.0.0.0/8\nnot-an-address\n").unwrap();
    let sock = format!("unix:{}/s.sock", dir.path().display());
    let bad_file_arg = bad_file.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "127.0.0.1:0", "--allow", "bogus"], "'bogus' is not an address or range"),
        (&["serve", "127.0.0.1:0", "--deny", "10.0.0.0/33"], "from 0 to 32"),
        (&["serve", "127.0.0.1:0", "--allow", "::1/200"], "from 0 to 128"),
        (&["serve", "127.0.0.1:0", "--allow-file", "/nonexistent/rules"], "cannot read --allow-file"),
        (&["serve", "127.0.0.1:0", "--deny-file", bad_file_arg], "line 2: 'not-an-address'"),
        (&["serve", &sock, "--allow", "127.0.0.1"], "match IP addresses"),
        (&["serve", "127.0.0.1:0", "--max-per-source", "0"], "--max-per-source"),
        (&["serve", "udp://127.0.0.1:0", "--max-per-source", "3"], "counts connections"),
        (&["relay", &sock, "127.0.0.1:9", "--deny", "127.0.0.1"], "match IP addresses"),
    ];
    for (args, want) in cases {
        let ran = sockit_run(args, b"");
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        let lines: Vec<&str> = ran.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(ran.stderr.contains(want), "{args:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{args:?}");
        // clap's own errors add a usage line and a --help hint; ours are exactly one line.
        assert!(lines[0].contains(want) || lines[0].starts_with("error:"), "{args:?}: {}", ran.stderr);
    }
    assert!(!dir.path().join("s.sock").exists(), "nothing was bound");
}

/// A client turned away is told, in one line, that the server reset it and where to look.
#[test]
fn a_refused_client_is_told_it_was_reset_with_a_hint() {
    let srv = Server::start(&["127.0.0.1:0", "echo", "--deny", "127.0.0.1"]);
    let ran = sockit_run(&["send", &srv.addr(), "hi"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(ran.stderr.contains("the server reset the connection"), "{}", ran.stderr);
    assert!(ran.stderr.contains("access rules, a connection limit"), "{}", ran.stderr);
    // `connect` too, however the reset meets it: at the connect, on the read, or on the send
    // (which takes the kernel's one report of it, so that the read then sees a plain end).
    for framing in ["raw", "line"] {
        for _ in 0..20 {
            let ran = sockit_run(&["connect", &srv.addr(), "--framing", framing], b"hi\n");
            assert_eq!(ran.code, Some(1), "{framing}: {}", ran.stderr);
            assert!(ran.stderr.contains("the server reset the connection"), "{framing}: {}", ran.stderr);
        }
    }
    srv.stop();
}
