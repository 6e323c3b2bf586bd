//! `sockit states`: sockets put on loopback into every TCP state they can reach, each read back
//! through `sockit states --json` and compared with what `ss -tanH` says at the same moment;
//! accept-queue depths and backlogs; the listen-overflow and SYN-cookie counters; the filters,
//! the UDP and Unix tables, and the text output.
//!
//! Each test runs on a thread of its own in a network namespace it creates (`unshare`, which
//! needs root), so that its sockets are the only ones there, its counters start from zero, and
//! the sysctls it sets (`tcp_syncookies`) leave the host untouched. Without root the tests are
//! skipped with a reason. Every wait is bounded.
//!
//! How each state is reached, deterministically, on loopback:
//! - LISTEN, ESTABLISHED: a listener and a connection.
//! - CLOSE-WAIT and FIN-WAIT-2: the client shuts down its sending side, the server does not.
//! - TIME-WAIT: the client closes first, then the server.
//! - FIN-WAIT-1: the client fills the server's receive window (the server does not read), then
//!   shuts down: its FIN waits behind the data.
//! - LAST-ACK: the server fills the client's window, the client shuts down (CLOSE-WAIT on the
//!   server), the server closes: its FIN waits behind the data.
//! - CLOSING: as FIN-WAIT-1, then the server shuts down too: the client gets the server's FIN
//!   while its own is still unacknowledged (a simultaneous close).
//! - SYN-SENT: a listener's accept queue is full (backlog 0 and one connection nobody accepted),
//!   so the kernel drops the next client's SYN and the client waits for an answer.
//! - SYN-RECEIVED: a listener with `TCP_DEFER_ACCEPT` keeps a completed handshake as a request
//!   socket until data arrives; with SYN cookies off, more of them than the backlog fill the SYN
//!   queue and further SYNs are dropped (`TCPReqQFullDrop`), with cookies on they are answered
//!   with cookies (`SyncookiesSent`): a SYN flood in miniature.
//! - CLOSED is never reported: a closed TCP socket is in no table of the kernel.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::{LIMIT, run, sockit};

// ---------------------------------------------------------------------------------------------
// A network namespace per test

/// Runs `f` on a new thread in a new network namespace with its loopback up, and returns
/// whether it ran: without the privilege to make namespaces it prints why and returns false. A
/// panic in `f` fails the test.
fn in_netns(f: impl FnOnce() + Send + 'static) -> bool {
    if !support::have("ss") || !support::have("ip") {
        eprintln!("skipping: ss and ip (iproute2) are needed to compare with and to set up a namespace");
        return false;
    }
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new namespace; sockets it
        // makes and processes it starts belong to that namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("run ip");
        assert!(up.success(), "ip link set lo up failed");
        f();
        Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            eprintln!("skipping: cannot make a network namespace ({e}); run the tests as root");
            false
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Sets a sysctl of the current namespace (through a child process, which is in it).
fn sysctl(path: &str, value: &str) {
    let ran =
        run(Command::new("sh").arg("-c").arg(format!("echo {value} > /proc/sys/{path} && cat /proc/sys/{path}")), b"");
    assert_eq!(ran.stdout_text().trim(), value, "setting {path}: {}", ran.stderr);
}

// ---------------------------------------------------------------------------------------------
// Reading the tables

/// One TCP socket as both tools describe it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    state: String,
    local: String,
    peer: String,
    recv_q: u64,
    send_q: u64,
}

/// `sockit states ARGS… --json`, parsed.
fn states_json(args: &[&str]) -> Value {
    let ran = run(sockit().arg("states").args(args).arg("--json"), b"");
    assert_eq!(ran.code, Some(0), "sockit states {args:?}: {}", ran.stderr);
    serde_json::from_slice(&ran.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {}", ran.stdout_text()))
}

fn rows_of(doc: &Value, table: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = doc[table]
        .as_array()
        .unwrap_or_else(|| panic!("no {table} array in {doc}"))
        .iter()
        .map(|s| Row {
            state: s["state"].as_str().unwrap().to_owned(),
            local: s["local"].as_str().unwrap().to_owned(),
            peer: s["peer"].as_str().unwrap().to_owned(),
            recv_q: s["recv_q"].as_u64().unwrap(),
            send_q: s["send_q"].as_u64().unwrap(),
        })
        .collect();
    rows.sort();
    rows
}

/// `ss -HnaOPTION` parsed into rows with RFC 793 state names and addresses as `SocketAddr`
/// writes them (`*` for port 0 becomes `0`).
fn ss_rows(option: &str) -> Vec<Row> {
    let ran = run(Command::new("ss").args(["-Hna", option]), b"");
    assert_eq!(ran.code, Some(0), "ss: {}", ran.stderr);
    let addr = |a: &str| match a.strip_suffix(":*") {
        Some(ip) => format!("{ip}:0"),
        None => a.to_owned(),
    };
    let mut rows: Vec<Row> = ran
        .stdout_text()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 5, "ss line {line:?}");
            let state = match f[0] {
                "ESTAB" => "ESTABLISHED",
                "SYN-RECV" => "SYN-RECEIVED",
                "UNCONN" => "CLOSED",
                other => other,
            };
            Row {
                state: state.to_owned(),
                recv_q: f[1].parse().unwrap(),
                send_q: f[2].parse().unwrap(),
                local: addr(f[3]),
                peer: addr(f[4]),
            }
        })
        .collect();
    rows.sort();
    rows
}

/// Compares `sockit states` with `ss` on the whole table (the namespace holds only this test's
/// sockets). ss runs before and after; a comparison counts only when those two agree, so that a
/// queue that moved in between cannot fail the test.
#[track_caller]
fn assert_same_as_ss(table: &str, ss_option: &str, extra: &[&str]) -> Vec<Row> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let before = ss_rows(ss_option);
        let ours = rows_of(&states_json(extra), table);
        let after = ss_rows(ss_option);
        if before == after {
            assert_eq!(ours, before, "sockit states --{table} and ss {ss_option} differ");
            return ours;
        }
        assert!(Instant::now() < deadline, "ss never gave the same table twice in a row: {before:#?} {after:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `sockit states` shows every `(local, peer, state)`.
#[track_caller]
fn wait_for_states(want: &[(SocketAddr, SocketAddr, &str)]) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let doc = states_json(&[]);
        let rows = rows_of(&doc, "tcp");
        let missing: Vec<_> = want
            .iter()
            .filter(|(l, p, st)| {
                !rows.iter().any(|r| r.local == l.to_string() && r.peer == p.to_string() && r.state == *st)
            })
            .collect();
        if missing.is_empty() {
            return doc;
        }
        assert!(Instant::now() < deadline, "never saw {missing:?}; last: {rows:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn counter(doc: &Value, name: &str) -> u64 {
    doc["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {doc}"))
}

fn count(doc: &Value, state: &str) -> u64 {
    doc["counts"][state].as_u64().unwrap_or_else(|| panic!("no count for {state} in {doc}"))
}

// ---------------------------------------------------------------------------------------------
// Making sockets

/// A listener on `addr` with `backlog`, built with socket2 so the backlog is exactly this.
fn listener(addr: &str, backlog: i32, setup: impl FnOnce(&Socket)) -> (TcpListener, SocketAddr) {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    setup(&s);
    s.bind(&addr.into()).unwrap();
    s.listen(backlog).unwrap();
    let l: TcpListener = s.into();
    let local = l.local_addr().unwrap();
    (l, local)
}

fn connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, LIMIT).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// A connection with a small receive buffer, so that a peer that writes fills its window soon.
fn connect_small_window(to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(&to.into(), LIMIT).unwrap();
    s.into()
}

/// A connect that is not waited for (the SYN goes out; the socket stays in SYN-SENT if nobody
/// answers).
fn connect_nonblocking(to: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect {to}: {e}"),
    }
    s
}

/// Writes until the kernel takes no more: the peer's window and our send buffer are full.
fn fill(s: &TcpStream) {
    s.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let deadline = Instant::now() + LIMIT;
    let mut w = s;
    loop {
        match w.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("fill: {e}"),
        }
        assert!(Instant::now() < deadline, "the send buffer never filled");
    }
}

fn local(s: &TcpStream) -> SocketAddr {
    s.local_addr().unwrap()
}

fn any_peer(of: SocketAddr) -> SocketAddr {
    match of {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// States

#[test]
fn listen_and_established_on_ipv4_and_ipv6_match_ss_with_backlog_and_process() {
    in_netns(|| {
        let (l4, a4) = listener("127.0.0.1:0", 7, |_| {});
        let (l6, a6) = listener("[::1]:0", 9, |_| {});
        let c4 = connect(a4);
        let c6 = connect(a6);
        let (s4, _) = l4.accept().unwrap();
        let (s6, _) = l6.accept().unwrap();
        let doc = wait_for_states(&[
            (a4, any_peer(a4), "LISTEN"),
            (a6, any_peer(a6), "LISTEN"),
            (local(&c4), a4, "ESTABLISHED"),
            (a4, local(&c4), "ESTABLISHED"),
            (local(&c6), a6, "ESTABLISHED"),
            (a6, local(&c6), "ESTABLISHED"),
        ]);
        assert_eq!((count(&doc, "LISTEN"), count(&doc, "ESTABLISHED")), (2, 4), "{doc}");
        // The backlogs are what listen() was given; the process is this one, with its fd.
        let listeners = doc["listeners"].as_array().unwrap();
        for (addr, backlog, fd) in [(a4, 7, l4.as_raw_fd()), (a6, 9, l6.as_raw_fd())] {
            let l = listeners.iter().find(|l| l["local"] == addr.to_string()).unwrap_or_else(|| panic!("{doc}"));
            assert_eq!(
                (l["depth"].as_u64(), l["backlog"].as_u64(), l["full"].as_bool()),
                (Some(0), Some(backlog), Some(false))
            );
            let procs = l["processes"].as_array().unwrap();
            assert!(
                procs.iter().any(|p| p["pid"] == std::process::id() && p["fd"] == fd),
                "listener {addr} should be ours: {procs:?}"
            );
        }
        assert_same_as_ss("tcp", "-t", &[]);
        drop((s4, s6, c4, c6));
    });
}

#[test]
fn closing_one_side_gives_close_wait_and_fin_wait_2_then_time_wait() {
    in_netns(|| {
        let (l, addr) = listener("127.0.0.1:0", 8, |_| {});
        // The client stops sending; the server has not closed yet.
        let half = connect(addr);
        let (half_server, _) = l.accept().unwrap();
        half.shutdown(Shutdown::Write).unwrap();
        // The client closes first, then the server: the client waits in TIME-WAIT.
        let gone = connect(addr);
        let gone_addr = local(&gone);
        let (gone_server, _) = l.accept().unwrap();
        drop(gone);
        wait_for_states(&[(addr, gone_addr, "CLOSE-WAIT")]);
        drop(gone_server);
        let doc = wait_for_states(&[
            (local(&half), addr, "FIN-WAIT-2"),
            (addr, local(&half), "CLOSE-WAIT"),
            (gone_addr, addr, "TIME-WAIT"),
        ]);
        assert_eq!(count(&doc, "TIME-WAIT"), 1, "the server side, which closed last, is gone: {doc}");
        // The end-of-stream counts as a byte in CLOSE-WAIT's receive queue, for ss as for us.
        let rows = assert_same_as_ss("tcp", "-t", &[]);
        let tw = rows.iter().find(|r| r.state == "TIME-WAIT").unwrap();
        assert_eq!((tw.recv_q, tw.send_q), (0, 0));
        // A TIME-WAIT socket belongs to no process.
        let tcp = doc["tcp"].as_array().unwrap();
        let tw = tcp.iter().find(|s| s["state"] == "TIME-WAIT").unwrap();
        assert_eq!(tw["processes"].as_array().map(Vec::len), Some(0), "{tw}");
        drop((half, half_server));
    });
}

#[test]
fn fins_stuck_behind_full_windows_give_fin_wait_1_last_ack_and_closing() {
    in_netns(|| {
        // FIN-WAIT-1: the server's window is full and it does not read; the client's FIN waits.
        let (l1, a1) = listener("127.0.0.1:0", 8, |s| s.set_recv_buffer_size(4096).unwrap());
        let fw1 = connect(a1);
        let (fw1_server, _) = l1.accept().unwrap();
        fill(&fw1);
        fw1.shutdown(Shutdown::Write).unwrap();

        // LAST-ACK: the client's window is full; the client shuts down, the server closes.
        let (l2, a2) = listener("127.0.0.1:0", 8, |_| {});
        let la_client = connect_small_window(a2);
        let (la, _) = l2.accept().unwrap();
        fill(&la);
        la_client.shutdown(Shutdown::Write).unwrap();
        wait_for_states(&[(a2, local(&la_client), "CLOSE-WAIT")]);
        drop(la);

        // CLOSING: as FIN-WAIT-1, then the server shuts down too.
        let (l3, a3) = listener("127.0.0.1:0", 8, |s| s.set_recv_buffer_size(4096).unwrap());
        let closing = connect(a3);
        let (closing_server, _) = l3.accept().unwrap();
        fill(&closing);
        closing.shutdown(Shutdown::Write).unwrap();
        wait_for_states(&[(local(&closing), a3, "FIN-WAIT-1")]);
        closing_server.shutdown(Shutdown::Write).unwrap();

        let doc = wait_for_states(&[
            (local(&fw1), a1, "FIN-WAIT-1"),
            (a1, local(&fw1), "ESTABLISHED"),
            (a2, local(&la_client), "LAST-ACK"),
            (local(&la_client), a2, "FIN-WAIT-2"),
            (local(&closing), a3, "CLOSING"),
            (a3, local(&closing), "FIN-WAIT-2"),
        ]);
        for state in ["FIN-WAIT-1", "LAST-ACK", "CLOSING"] {
            assert_eq!(count(&doc, state), 1, "{state}: {doc}");
        }
        // Each stuck FIN sits behind unacknowledged data.
        let rows = assert_same_as_ss("tcp", "-t", &[]);
        for state in ["FIN-WAIT-1", "LAST-ACK", "CLOSING"] {
            let r = rows.iter().find(|r| r.state == state).unwrap();
            assert!(r.send_q > 0, "{r:?}");
        }
        drop((fw1_server, la_client, closing, l1, l2, l3));
    });
}

#[test]
fn a_full_accept_queue_leaves_clients_in_syn_sent_and_counts_listen_overflows() {
    in_netns(|| {
        let start = states_json(&[]);
        assert_eq!(counter(&start, "ListenOverflows"), 0, "a new namespace starts at zero: {start}");
        // Backlog 0: the queue takes one connection, then is full.
        let (l, addr) = listener("127.0.0.1:0", 0, |_| {});
        let first = connect(addr);
        let waiting: Vec<Socket> = (0..2).map(|_| connect_nonblocking(addr)).collect();
        let waiting_addrs: Vec<SocketAddr> =
            waiting.iter().map(|s| s.local_addr().unwrap().as_socket().unwrap()).collect();
        let doc = wait_for_states(&[
            (waiting_addrs[0], addr, "SYN-SENT"),
            (waiting_addrs[1], addr, "SYN-SENT"),
            (local(&first), addr, "ESTABLISHED"),
        ]);
        let listener_doc = &doc["listeners"][0];
        assert_eq!(listener_doc["local"], addr.to_string());
        assert_eq!((listener_doc["depth"].as_u64(), listener_doc["backlog"].as_u64()), (Some(1), Some(0)), "{doc}");
        assert_eq!(listener_doc["full"], true, "{doc}");
        // Each dropped SYN (and each retransmission) is an overflow and a drop.
        assert!(counter(&doc, "ListenOverflows") >= 2, "{doc}");
        assert!(counter(&doc, "ListenDrops") >= counter(&doc, "ListenOverflows"), "{doc}");
        let rows = assert_same_as_ss("tcp", "-t", &[]);
        assert!(
            rows.iter().filter(|r| r.state == "SYN-SENT").all(|r| r.send_q == 1),
            "the SYN is the unacknowledged byte: {rows:#?}"
        );

        // The text output flags the listener as full.
        let ran = run(sockit().args(["states", "--listening"]), b"");
        let out = ran.stdout_text();
        assert!(out.lines().any(|l| l.contains(&addr.to_string()) && l.contains("1/0 full")), "{out}");
        drop((l, first, waiting));
    });
}

/// Five clients at a `TCP_DEFER_ACCEPT` listener of backlog 2 that send nothing, with
/// `tcp_syncookies` set to `cookies`; returns the document once they have all left SYN-SENT or
/// given up there.
fn syn_queue_flood(cookies: &str) -> (Value, SocketAddr, Vec<Socket>, TcpListener) {
    sysctl("net/ipv4/tcp_syncookies", cookies);
    let (l, addr) = listener("127.0.0.1:0", 2, |s| {
        let secs: libc::c_int = 30;
        // SAFETY: setsockopt with a valid fd and a pointer to an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "TCP_DEFER_ACCEPT");
    });
    let clients: Vec<Socket> = (0..5).map(|_| connect_nonblocking(addr)).collect();
    // Settled when the server side accounts for every client: a request socket, an accepted
    // connection in the queue, or a client still waiting in SYN-SENT.
    let deadline = Instant::now() + LIMIT;
    loop {
        let doc = states_json(&[]);
        let settled =
            count(&doc, "SYN-RECEIVED") + count(&doc, "SYN-SENT") + doc["listeners"][0]["depth"].as_u64().unwrap();
        if settled == 5 {
            return (doc, addr, clients, l);
        }
        assert!(Instant::now() < deadline, "never settled: {doc}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_sockets_show_as_syn_received_and_a_full_syn_queue_drops_without_cookies() {
    in_netns(|| {
        let (doc, addr, clients, l) = syn_queue_flood("0");
        let syn_received = count(&doc, "SYN-RECEIVED");
        assert!(syn_received >= 1, "{doc}");
        assert!(count(&doc, "SYN-SENT") >= 1, "the SYN queue filled and later SYNs were dropped: {doc}");
        let rows = rows_of(&doc, "tcp");
        assert!(rows.iter().filter(|r| r.state == "SYN-RECEIVED").all(|r| r.local == addr.to_string()), "{rows:#?}");
        assert!(counter(&doc, "TCPReqQFullDrop") >= 1, "{doc}");
        assert_eq!(counter(&doc, "SyncookiesSent"), 0, "{doc}");
        assert_same_as_ss("tcp", "-t", &[]);
        // The filter takes ss's spelling.
        let only = rows_of(&states_json(&["--state", "syn-recv"]), "tcp");
        assert_eq!(only.len() as u64, syn_received, "{only:#?}");
        assert!(only.iter().all(|r| r.state == "SYN-RECEIVED"));
        drop((clients, l));
    });
}

#[test]
fn a_full_syn_queue_answers_with_cookies_when_they_are_on() {
    in_netns(|| {
        let (doc, _addr, clients, l) = syn_queue_flood("1");
        assert!(count(&doc, "SYN-RECEIVED") >= 1, "{doc}");
        assert!(counter(&doc, "SyncookiesSent") >= 1, "{doc}");
        assert!(counter(&doc, "SyncookiesRecv") >= 1, "{doc}");
        assert_eq!(counter(&doc, "TCPReqQFullDrop"), 0, "{doc}");
        assert_same_as_ss("tcp", "-t", &[]);
        drop((clients, l));
    });
}

#[test]
fn accept_queue_depth_counts_unaccepted_connections_against_the_backlog() {
    in_netns(|| {
        let (l, addr) = listener("127.0.0.1:0", 5, |_| {});
        let queue = |doc: &Value| {
            let l = &doc["listeners"][0];
            (l["depth"].as_u64().unwrap(), l["backlog"].as_u64().unwrap(), l["full"].as_bool().unwrap())
        };
        let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        assert_eq!(queue(&states_json(&["--listening"])), (3, 5, false));
        // The kernel takes backlog + 1 before it is full.
        clients.extend((0..3).map(|_| connect(addr)));
        assert_eq!(queue(&states_json(&["--listening"])), (6, 5, true));
        // Accepting empties it again.
        let accepted: Vec<_> = (0..6).map(|_| l.accept().unwrap()).collect();
        assert_eq!(queue(&states_json(&["--listening"])), (0, 5, false));
        drop((clients, accepted));
    });
}

// ---------------------------------------------------------------------------------------------
// Filters, other tables, text

#[test]
fn port_state_and_listening_filters() {
    in_netns(|| {
        let (l1, a1) = listener("127.0.0.1:0", 4, |_| {});
        let (_l2, a2) = listener("127.0.0.1:0", 4, |_| {});
        let c = connect(a1);
        let (s, _) = l1.accept().unwrap();
        wait_for_states(&[(a1, local(&c), "ESTABLISHED")]);
        let port = a1.port().to_string();

        let rows = rows_of(&states_json(&["--port", &port]), "tcp");
        assert_eq!(rows.len(), 3, "the listener and both ends: {rows:#?}");
        assert!(rows.iter().all(|r| r.local.ends_with(&format!(":{port}")) || r.peer.ends_with(&format!(":{port}"))));
        let other = rows_of(&states_json(&["--port", &a2.port().to_string()]), "tcp");
        assert_eq!(
            other.iter().map(|r| (r.state.as_str(), r.local.clone())).collect::<Vec<_>>(),
            [("LISTEN", a2.to_string())]
        );

        let listening = rows_of(&states_json(&["--listening"]), "tcp");
        assert_eq!(listening.len(), 2, "{listening:#?}");
        assert!(listening.iter().all(|r| r.state == "LISTEN"));

        for spelling in ["ESTABLISHED", "established", "estab"] {
            let rows = rows_of(&states_json(&["--state", spelling]), "tcp");
            assert_eq!(rows.len(), 2, "{spelling}: {rows:#?}");
        }
        let both = rows_of(&states_json(&["--state", "listen", "--state", "established", "--port", &port]), "tcp");
        assert_eq!(both.len(), 3, "{both:#?}");
        let doc = states_json(&["--state", "time-wait"]);
        assert_eq!(rows_of(&doc, "tcp"), vec![]);
        assert_eq!(count(&doc, "ESTABLISHED"), 0, "counts are of what is shown: {doc}");
        drop((c, s));
    });
}

#[test]
fn the_text_table_reads_like_ss_and_a_closed_pipe_is_quiet() {
    in_netns(|| {
        let (l, addr) = listener("127.0.0.1:0", 3, |_| {});
        let c = connect(addr);
        let ran = run(sockit().args(["states", "--port", &addr.port().to_string()]), b"");
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let out = ran.stdout_text();
        let lines: Vec<&str> = out.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, ["State", "Recv-Q", "Send-Q", "Local", "Peer", "Process"], "{out}");
        let listen: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(listen[..5], ["LISTEN", "1", "3", &addr.to_string(), "0.0.0.0:*"], "{out}");
        assert!(listen[5].starts_with(&format!("{}/", std::process::id())), "{out}");
        assert!(out.contains("TCP states: LISTEN 1, ESTABLISHED 2 (3 sockets)"), "{out}");
        assert!(out.contains(&format!("{addr}  1/3")), "{out}");
        for name in [
            "ListenOverflows",
            "ListenDrops",
            "TCPReqQFullDrop",
            "SyncookiesSent",
            "SyncookiesRecv",
            "SyncookiesFailed",
        ] {
            assert!(out.lines().any(|l| l.starts_with(name)), "{name}: {out}");
        }

        let ran = run(
            Command::new("bash")
                .arg("-c")
                .arg(r#"set -o pipefail; "$0" states --udp --unix --tcp | head -1"#)
                .arg(env!("CARGO_BIN_EXE_sockit")),
            b"",
        );
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(ran.stdout_text(), "TCP\n");
        assert_eq!(ran.stderr, "");
        drop((l, c));
    });
}

#[test]
fn udp_sockets_match_ss() {
    in_netns(|| {
        let unconnected = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("[::1]:0").unwrap();
        let target = UdpSocket::bind("[::1]:0").unwrap();
        connected.connect(target.local_addr().unwrap()).unwrap();
        connected.send(b"queued").unwrap();
        let rows = assert_same_as_ss("udp", "-u", &["--udp"]);
        let state_of = |a: SocketAddr| rows.iter().find(|r| r.local == a.to_string()).map(|r| r.state.clone());
        assert_eq!(state_of(unconnected.local_addr().unwrap()).as_deref(), Some("CLOSED"));
        assert_eq!(state_of(connected.local_addr().unwrap()).as_deref(), Some("ESTABLISHED"));
        let t = rows.iter().find(|r| r.local == target.local_addr().unwrap().to_string()).unwrap();
        assert!(t.recv_q > 0, "the datagram waits in the target's queue: {t:?}");

        let ran = run(sockit().args(["states", "--udp"]), b"");
        assert!(ran.stdout_text().lines().any(|l| l.starts_with("UNCONN")), "{}", ran.stdout_text());
        let listening = rows_of(&states_json(&["--udp", "--listening"]), "udp");
        assert_eq!(listening.len(), 2, "unconnected sockets are the UDP listeners: {listening:#?}");
    });
}

#[test]
fn unix_listeners_show_their_accept_queue() {
    in_netns(|| {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
        let name = format!("sockit-states-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let clients: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect_addr(&addr).unwrap()).collect();
        let doc = states_json(&["--unix"]);
        assert!(doc.get("tcp").is_none(), "--unix alone shows no TCP table: {doc}");
        let at = format!("@{name}");
        let l = doc["listeners"].as_array().unwrap().iter().find(|l| l["local"] == at.as_str()).cloned();
        let l = l.unwrap_or_else(|| panic!("{doc}"));
        assert_eq!((l["proto"].as_str(), l["depth"].as_u64()), (Some("unix"), Some(2)), "{doc}");
        assert!(l["backlog"].as_u64().unwrap() >= 2, "{l}");
        let unix = doc["unix"].as_array().unwrap();
        let row = unix.iter().find(|s| s["name"] == at.as_str()).unwrap();
        assert_eq!((row["type"].as_str(), row["state"].as_str()), (Some("stream"), Some("LISTEN")));

        // ss shows the same listener with the same queue.
        let ss = run(Command::new("ss").args(["-Hxl"]), b"").stdout_text();
        let line = ss.lines().find(|l| l.contains(&at)).unwrap_or_else(|| panic!("{ss}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[0], f[1], f[2]), ("u_str", "LISTEN", "2"), "{line}");
        assert_eq!(f[3], l["backlog"].to_string(), "{line}");
        drop((listener, clients));
    });
}
