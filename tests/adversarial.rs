//! The adversarial suite: one test per attack on a running `sockit serve`, each in three acts.
//!
//! 1. The positive control: the same exchange, without the attack, succeeds. A test whose
//!    control fails says nothing about the attack.
//! 2. The attack, with real processes on real sockets (loopback and Unix sockets only).
//! 3. The proof that the server is unharmed: a fresh client is served promptly while the attack
//!    is in place and after it, the server's resident memory stays bounded (`VmRSS`, `VmHWM`),
//!    it does not spin while it merely holds the attack (user + system time from
//!    `/proc/PID/stat` over a window), it recovers afterwards, and the attack got what it should
//!    (a close, a log line, a refusal, an error that names the cause).
//!
//! Covered: a client that sends nothing; slowloris; more clients than `--max-conns`; a server
//! limited to 64 descriptors facing 200 clients; a `len` header of 0xFFFFFFFF; 1,000 connections
//! that each send only a maximum-length header; frames split at every byte; a chat client that
//! never reads; a 100 MB line without a newline; escapes from a `files` root (`..`, absolute
//! paths, symbolic and hard links, NUL, `.` components); `kill -9` of `sockit put` in the middle;
//! a full disk; shell metacharacters in `exec` arguments; an `exec` client that vanishes during a
//! gibibyte of output.
//!
//! Not here: a TLS client that stalls in the middle of its handshake while others connect. TLS
//! is built on its own branch, and that attack lives with it, in tests/tls.rs.
//!
//! Every wait is bounded; sleeps only hold an attack in place or let a timeout elapse, never
//! wait for a server to be ready. Every process a test starts is owned by a guard that kills it.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The share of one core a server may use while it merely holds an attack in place. An idle
/// server uses next to nothing; one that spins on a ready descriptor uses a whole core.
const MAX_HOLDING_CPU: f64 = 0.30;

/// How long the server's CPU time is measured while it holds an attack.
const CPU_WINDOW: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Helpers: the server's health, as /proc shows it

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The user + system CPU time a process has used so far (every thread), from /proc/PID/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("process {pid}: {e}"));
    // "pid (comm) state ppid …": comm may hold anything; the fields start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `fields[0]` is field 3 (the state).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The share of one core that `pid` used over `window`, while the caller's attack stays put.
fn cpu_share(pid: i32, window: Duration) -> f64 {
    let (cpu, wall) = (cpu_time(pid), Instant::now());
    std::thread::sleep(window);
    (cpu_time(pid) - cpu).as_secs_f64() / wall.elapsed().as_secs_f64()
}

/// Fails unless the server stays (nearly) idle for [`CPU_WINDOW`] while holding `attack`.
#[track_caller]
fn assert_no_spin(server: &Server, attack: &str) {
    let share = cpu_share(server.pid(), CPU_WINDOW);
    eprintln!("{attack}: the server used {:.1}% of a core while holding it", share * 100.0);
    assert!(
        share < MAX_HOLDING_CPU,
        "the server used {:.0}% of a core while merely holding {attack} (bound {:.0}%)",
        share * 100.0,
        MAX_HOLDING_CPU * 100.0
    );
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, `VmData`), in bytes.
fn status_bytes(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("process {pid}: {e}"));
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    value.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * KIB
}

fn rss(pid: i32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// Fails unless the server's resident memory (now, and at its peak) is under `bound`.
#[track_caller]
fn assert_memory_under(server: &Server, bound: u64, attack: &str) {
    let (now, peak) = (rss(server.pid()), status_bytes(server.pid(), "VmHWM"));
    eprintln!("{attack}: server RSS {} KiB, peak {} KiB", now / KIB, peak / KIB);
    assert!(now < bound, "{attack}: server RSS {now} B (bound {bound} B)");
    assert!(peak < bound, "{attack}: server peak RSS {peak} B (bound {bound} B)");
}

/// Runs a fresh client's whole exchange and fails unless it finished within [`PROMPT`].
#[track_caller]
fn promptly<T>(what: &str, exchange: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = exchange();
    let took = started.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < PROMPT, "{what} took {took:?} (bound {PROMPT:?})");
    value
}

/// How many lines of the server's log contain `needle`.
fn logged(server: &Server, needle: &str) -> usize {
    server.stderr.snapshot().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until the server's log holds at least `n` lines containing `needle`.
#[track_caller]
fn wait_logged(server: &Server, needle: &str, n: usize) {
    let what = format!("{n} log lines with {needle:?}");
    wait_until(&what, LIMIT, || logged(server, needle) >= n);
}

/// Raises this process's soft limit on open files towards the hard limit, up to `want`, and
/// returns the limit now in force.
fn raise_own_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit on a valid, owned struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------------
// Helpers: clients

/// A `len` frame: a 4-byte big-endian length, then the bytes.
fn len_frame(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// Sends `ask` and expects exactly `want` back.
#[track_caller]
fn round_trip(s: &mut (impl Read + Write), ask: &[u8], want: &[u8]) {
    s.write_all(ask).unwrap();
    let got = read_n(s, want.len());
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A fresh client of a `line` echo server asks once and gets its answer.
fn fresh_line_echo(addr: &str, msg: &str) {
    let mut c = tcp(addr);
    round_trip(&mut c, format!("{msg}\n").as_bytes(), format!("{msg}\n").as_bytes());
}

/// A fresh client of a `len` echo server asks once and gets its answer.
fn fresh_len_echo(addr: &str, msg: &[u8]) {
    let mut c = tcp(addr);
    round_trip(&mut c, &len_frame(msg), &len_frame(msg));
}

/// Waits (at most `within`) for the server to close `s`: end of stream or a reset. Returns how
/// long it took and what arrived first.
#[track_caller]
fn expect_closed(s: &mut impl Read, within: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => break,
            Err(e) => panic!("expected the server to close the connection, got {e} after {:?}", started.elapsed()),
        }
        assert!(started.elapsed() < within, "the server kept the connection open for {within:?}");
    }
    let took = started.elapsed();
    assert!(took < within, "the server took {took:?} to close the connection (bound {within:?})");
    (took, seen)
}

/// The indices of `socks` that have something to read (or are closed) within `wait`.
fn readable<S: AsRawFd>(socks: &[(usize, S)], wait: Duration) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> =
        socks.iter().map(|(_, s)| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    fds.iter().zip(socks).filter(|(p, _)| p.revents != 0).map(|(_, (i, _))| *i).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Clients that say nothing, or say it very slowly

#[test]
fn a_client_that_sends_nothing_is_cut_at_the_idle_timeout_and_delays_nobody() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--idle-timeout", "1500ms"]);
    let addr = server.addr();

    // Control: a client that talks is served.
    fresh_line_echo(&addr, "control");

    // Attack: 50 clients connect and say nothing.
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..50).map(|_| tcp(&addr)).collect();
    promptly("a fresh client among 50 silent ones", || fresh_line_echo(&addr, "during"));
    assert_no_spin(&server, "50 silent clients");

    // The idle timeout cuts each of them: not before it, and not long after it.
    for (i, c) in silent.iter_mut().enumerate() {
        expect_closed(c, PROMPT + Duration::from_secs(2));
        let at = started.elapsed();
        assert!(at >= Duration::from_millis(1200), "silent client {i} was closed after only {at:?}");
        assert!(at < Duration::from_millis(1500) + PROMPT, "silent client {i} was closed only after {at:?}");
    }
    let took = started.elapsed();
    eprintln!("50 silent clients closed within {took:?} of connecting");
    wait_logged(&server, "idle timeout", 50);

    // Afterwards: served, with memory to spare, and an orderly stop that counts everyone.
    promptly("a fresh client after the silent ones", || fresh_line_echo(&addr, "after"));
    assert_memory_under(&server, 64 * MIB, "50 silent clients");
    let done = server.stop();
    assert!(done.status.success(), "{:#?}", done.stderr);
    assert!(done.stderr.iter().any(|l| l.contains("53 connections")), "{:#?}", done.stderr);
}

/// Slowloris: clients that keep a request open by sending it a byte at a time. One that pauses
/// longer than `--idle-timeout` after a byte is cut; those that trickle faster than that are not
/// idle by definition (PROTOCOL.md section 3: "no traffic in either direction"), so they stay,
/// but they cost next to nothing and delay nobody.
#[test]
fn slowloris_clients_delay_nobody_and_the_idle_timeout_cuts_a_slow_one() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--idle-timeout", "800ms"]);
    let addr = server.addr();

    // Control: the line the slowloris clients never finish, sent whole, is answered; so is one
    // sent slowly but finished (an honest slow client).
    fresh_line_echo(&addr, "GET / HTTP/1.1");
    let mut honest = tcp(&addr);
    for b in b"slow but honest\n" {
        honest.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_n(&mut honest, 16), b"slow but honest\n");
    drop(honest);

    // Attack: 40 clients trickle a line that never ends, one byte every 200 ms (faster than
    // the idle timeout), and one sends a byte and then pauses (longer than the timeout).
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_tricklers = StopOnDrop(stop.clone());
    let tricklers: Vec<_> = (0..40)
        .map(|i| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = tcp(&addr);
                let mut sent = 0;
                while !stop.load(Ordering::SeqCst) {
                    if c.write_all(&[b'a' + (i % 26) as u8]).is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                sent
            })
        })
        .collect();
    let mut slow = tcp(&addr);
    let slow_addr = slow.local_addr().unwrap();
    slow.write_all(b"G").unwrap();
    let first_byte = Instant::now();

    std::thread::sleep(Duration::from_millis(300));
    promptly("a fresh client among 40 slowloris clients", || fresh_line_echo(&addr, "during"));
    assert_no_spin(&server, "40 slowloris clients");

    // The slow one is cut once it has been silent for the idle timeout, before its next byte.
    let (_, seen) = expect_closed(&mut slow, PROMPT);
    let silent_for = first_byte.elapsed();
    assert!(seen.is_empty(), "the unfinished line was answered: {seen:?}");
    assert!(silent_for >= Duration::from_millis(700), "cut after only {silent_for:?}");
    let line = server.stderr.wait_for("the slow client's line", |l| l.starts_with(&format!("{slow_addr}: ")));
    assert!(line.contains("idle timeout"), "{line}");

    stop.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = tricklers.into_iter().map(|t| t.join().expect("a trickler failed")).collect();
    eprintln!("the tricklers sent {} bytes each at most", sent.iter().max().unwrap());

    // Afterwards: served, memory bounded.
    promptly("a fresh client after the slowloris clients", || fresh_line_echo(&addr, "after"));
    assert_memory_under(&server, 64 * MIB, "slowloris");
}

// ---------------------------------------------------------------------------------------------
// 2. Too many clients

#[test]
fn clients_over_max_conns_are_told_busy_at_once_and_the_admitted_ones_are_served() {
    const MAX: usize = 4;
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--max-conns", "4"]);
    let addr = server.addr();

    // Control: up to the limit, everyone is served.
    let mut admitted: Vec<TcpStream> = (0..MAX).map(|_| tcp(&addr)).collect();
    for (i, c) in admitted.iter_mut().enumerate() {
        let msg = format!("admitted {i}\n");
        round_trip(c, msg.as_bytes(), msg.as_bytes());
    }

    // Attack: 40 more, all at once.
    let extra: Vec<_> = (0..40)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = tcp(&addr);
                c.write_all(b"let me in\n").ok();
                let started = Instant::now();
                let (_, told) = expect_closed(&mut c, PROMPT);
                (started.elapsed(), String::from_utf8_lossy(&told).into_owned())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for t in extra {
        let (took, told) = t.join().expect("an extra client was not refused promptly");
        assert_eq!(told, "sockit: server busy (4 clients connected), try again later\n");
        slowest = slowest.max(took);
    }
    eprintln!("40 clients over --max-conns refused, the slowest in {slowest:?}");
    wait_logged(&server, "refused, over --max-conns 4", 40);

    // The admitted clients did not notice, and an idle server at its limit does not spin.
    for (i, c) in admitted.iter_mut().enumerate() {
        let msg = format!("still served {i}\n");
        promptly("an admitted client during the flood", || round_trip(c, msg.as_bytes(), msg.as_bytes()));
    }
    assert_no_spin(&server, "a full server");

    // Recovery: once one leaves, a newcomer gets its seat; once all leave, everyone does.
    let leaver = admitted.pop().unwrap();
    let leaver_addr = leaver.local_addr().unwrap();
    drop(leaver);
    server.stderr.wait_for("the leaver's line", |l| l.starts_with(&format!("{leaver_addr}: ")));
    promptly("a newcomer in a freed seat", || fresh_line_echo(&addr, "newcomer"));
    drop(admitted);
    wait_logged(&server, "closed by client", MAX + 1);
    let again: Vec<TcpStream> = (0..MAX).map(|_| tcp(&addr)).collect();
    for mut c in again {
        round_trip(&mut c, b"again\n", b"again\n");
    }
    assert_memory_under(&server, 64 * MIB, "40 clients over --max-conns");
    let done = server.stop();
    assert!(done.status.success());
    let summary = done.stderr.iter().find(|l| l.starts_with("sockit: stopped after")).expect("a summary");
    assert!(summary.contains("40 refused"), "{summary}");
}

/// A server that may hold only 64 descriptors facing 200 clients: it serves those it can,
/// reports the accept errors at a bounded rate without spinning on the listener that stays
/// ready, serves the others as descriptors free up, and is whole afterwards.
#[test]
fn a_server_limited_to_64_descriptors_serves_200_clients_as_descriptors_free_up() {
    const CLIENTS: usize = 200;
    raise_own_fd_limit(4096);
    let mut cmd = Command::new("sh");
    // `ulimit -n` in sh sets the soft and the hard limit, so sockit cannot raise it back.
    cmd.env_remove(TOKEN_ENV).args(["-c", r#"ulimit -n 64 && exec "$0" serve 127.0.0.1:0 echo --framing line"#]);
    cmd.arg(env!("CARGO_BIN_EXE_sockit"));
    let server = Server::start_cmd(cmd);
    let addr = server.addr();
    let limits = fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    assert_eq!(nofile.split_whitespace().nth(3), Some("64"), "the limit did not hold: {nofile}");

    // Control: with descriptors to spare, a client is served.
    promptly("a client of the limited server", || fresh_line_echo(&addr, "control"));

    // Attack: 200 clients connect (the kernel completes their handshakes into the backlog) and
    // each asks one question.
    let mut pending: Vec<(usize, TcpStream)> = (0..CLIENTS)
        .map(|i| {
            let mut c = tcp(&addr);
            c.write_all(format!("client {i}\n").as_bytes()).unwrap();
            (i, c)
        })
        .collect();
    wait_logged(&server, "accept failed", 1);
    let line = server.stderr.snapshot().into_iter().find(|l| l.contains("accept failed")).unwrap();
    assert!(line.contains("Too many open files"), "{line}");

    // Holding them all: the backoff has reached its ceiling by now; a server that retried the
    // ready listener in a loop would burn a core and flood its log.
    std::thread::sleep(Duration::from_millis(1500));
    let errors_before = logged(&server, "accept failed");
    assert_no_spin(&server, "200 clients against 64 descriptors");
    let errors_in_window = logged(&server, "accept failed") - errors_before;
    assert!(errors_in_window <= 4, "{errors_in_window} accept errors logged in {CPU_WINDOW:?}");
    let first_round = readable(&pending, Duration::ZERO).len();
    eprintln!("{first_round} of {CLIENTS} served while the server was out of descriptors");
    assert!(first_round > 0 && first_round < CLIENTS, "{first_round} of {CLIENTS} served at first");

    // Recovery as descriptors free up: each client served is read and closed, which lets the
    // server accept the next ones.
    let started = Instant::now();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < LIMIT,
            "{} clients never served: {:?}",
            pending.len(),
            pending.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let ready = readable(&pending, Duration::from_millis(200));
        for i in ready {
            let at = pending.iter().position(|p| p.0 == i).unwrap();
            let (_, mut c) = pending.swap_remove(at);
            let want = format!("client {i}\n");
            assert_eq!(read_n(&mut c, want.len()), want.as_bytes());
        }
    }
    let errors = logged(&server, "accept failed");
    eprintln!("all {CLIENTS} served within {:?}; {errors} accept errors logged", started.elapsed());
    assert!(errors <= 40, "accept errors are not rate-limited: {errors} lines");

    // Afterwards: served promptly, and an orderly stop that counts everyone.
    promptly("a fresh client after the 200", || fresh_line_echo(&addr, "after"));
    assert_memory_under(&server, 64 * MIB, "200 clients against 64 descriptors");
    let done = server.stop();
    assert!(done.status.success(), "{:#?}", done.stderr);
    assert!(done.stderr.iter().any(|l| l.contains("202 connections")), "{:?}", done.stderr.last());
}

// ---------------------------------------------------------------------------------------------
// 3. Frames that lie, frames in pieces, lines without end

#[test]
fn a_len_header_of_0xffffffff_ends_that_connection_and_allocates_nothing() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let addr = server.addr();

    // Control: an honest frame is answered; a second client is left in the middle of one.
    fresh_len_echo(&addr, b"control");
    let mut midway = tcp(&addr);
    midway.write_all(&len_frame(b"across the attack")[..10]).unwrap();
    let baseline = status_bytes(server.pid(), "VmHWM");

    // Attack: 200 connections each announce a frame of 4 GiB - 1.
    for i in 0..200 {
        let mut c = tcp(&addr);
        c.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        // Some of the payload too, which the server must not wait for or buffer.
        let _ = c.write_all(&[b'x'; 1000]);
        let (took, seen) = expect_closed(&mut c, PROMPT);
        assert!(seen.is_empty(), "connection {i} got an answer: {seen:?}");
        if i == 0 {
            eprintln!("a 0xFFFFFFFF header is refused in {took:?}");
        }
        if i == 100 {
            promptly("a fresh client amid lying headers", || fresh_len_echo(&addr, b"during"));
        }
    }
    wait_logged(&server, "frame of 4294967295 bytes exceeds the maximum of 1048576 bytes", 200);

    // Unharmed: nothing was allocated for the frames, the client in the middle of an honest
    // frame finishes it, and new clients are served.
    let grew = status_bytes(server.pid(), "VmHWM").saturating_sub(baseline);
    assert!(grew < 16 * MIB, "the peak RSS grew by {grew} B");
    midway.write_all(&len_frame(b"across the attack")[10..]).unwrap();
    assert_eq!(read_n(&mut midway, 21), len_frame(b"across the attack"));
    promptly("a fresh client after 200 lying headers", || fresh_len_echo(&addr, b"after"));
    assert_no_spin(&server, "the aftermath of 200 lying headers");
    assert_memory_under(&server, 64 * MIB, "200 lying headers");
}

/// 1,000 connections each announce a frame of the maximum size (1 MiB) and never send it. The
/// server reads each header and waits for the payload; what it holds must stay far below
/// 1,000 x 1 MiB.
#[test]
fn a_thousand_maximum_length_headers_without_payload_keep_memory_bounded() {
    const CONNS: usize = 1000;
    let have = raise_own_fd_limit(4096);
    if have < 1100 {
        eprintln!("skipping: this process may open only {have} files; the test needs 1,100");
        return;
    }
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len", "--max-frame", "1M"]);
    let addr = server.addr();

    // Control: a whole frame of the maximum size goes through.
    let big: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
    let mut c = tcp(&addr);
    round_trip(&mut c, &len_frame(&big), &len_frame(&big));
    drop(c);
    let (rss_before, data_before) = (rss(server.pid()), status_bytes(server.pid(), "VmData"));

    // Attack: 1,000 headers announcing 1 MiB each, and nothing after them.
    let header = (MIB as u32).to_be_bytes();
    let started = Instant::now();
    let holders: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut c = tcp(&addr);
            c.write_all(&header).unwrap();
            c
        })
        .collect();
    eprintln!("{CONNS} headers sent in {:?}", started.elapsed());
    promptly("a fresh client among 1,000 pending frames", || fresh_len_echo(&addr, b"during"));
    assert_no_spin(&server, "1,000 pending maximum-length frames");
    let (rss_now, data_now) = (rss(server.pid()), status_bytes(server.pid(), "VmData"));
    let grew = rss_now.saturating_sub(rss_before);
    eprintln!(
        "{CONNS} pending 1 MiB frames: server RSS grew by {} KiB (to {} KiB); VmData grew by {} KiB",
        grew / KIB,
        rss_now / KIB,
        data_now.saturating_sub(data_before) / KIB
    );
    assert!(grew < 100 * MIB, "the server's RSS grew by {grew} B for {CONNS} headers");

    // A holder can still finish its frame: the server kept its place in the stream.
    let mut first = holders.into_iter();
    let mut one = first.next().unwrap();
    one.write_all(&big).unwrap();
    assert_eq!(read_n(&mut one, 4 + big.len()), len_frame(&big));
    drop(one);
    // The rest leave in the middle of their frames: each is a truncated frame in the log.
    drop(first);
    wait_logged(&server, "stream ended in the middle of a frame", CONNS - 1);
    promptly("a fresh client after 1,000 pending frames", || fresh_len_echo(&addr, b"after"));
    assert_memory_under(&server, 128 * MIB, "1,000 maximum-length headers");
}

/// Whether process `pid` (our child) is still alive: not gone, not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    !matches!(stat[stat.rfind(')').unwrap() + 1..].split_whitespace().next(), Some("Z" | "X"))
}

/// The same 1,000 headers against a server that runs under a limit on its address space
/// (`ulimit -v`, as a hosting setup or strict overcommit imposes in effect): the server must
/// hold what arrived, not what was announced, so 1,000 headers of 1 MiB must fit in a few
/// hundred MiB of spare address space.
#[test]
fn announced_frames_take_no_memory_before_their_payload_arrives() {
    const CONNS: usize = 1000;
    let have = raise_own_fd_limit(4096);
    if have < 1100 {
        eprintln!("skipping: this process may open only {have} files; the test needs 1,100");
        return;
    }
    // The address space a server of this build takes to serve a frame of the maximum size, plus
    // 384 MiB: far more than 1,000 connections need, far less than 1,000 MiB.
    let big: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
    let baseline = {
        let probe = Server::start(&["127.0.0.1:0", "echo", "--framing", "len", "--max-frame", "1M"]);
        round_trip(&mut tcp(&probe.addr()), &len_frame(&big), &len_frame(&big));
        status_bytes(probe.pid(), "VmSize")
    };
    let limit_kib = (baseline + 384 * MIB) / KIB;
    let mut cmd = Command::new("sh");
    let script = format!(r#"ulimit -v {limit_kib} && exec "$0" serve 127.0.0.1:0 echo --framing len --max-frame 1M"#);
    cmd.env_remove(TOKEN_ENV).args(["-c", &script]).arg(env!("CARGO_BIN_EXE_sockit"));
    let server = Server::start_cmd(cmd);
    let addr = server.addr();

    // Control: under the limit, a whole frame of the maximum size goes through.
    round_trip(&mut tcp(&addr), &len_frame(&big), &len_frame(&big));
    let data_before = status_bytes(server.pid(), "VmData");

    // Attack: 1,000 headers announcing 1 MiB each, and nothing after them. (Connections may
    // fail once the server is gone; the assertions below say why.)
    let target: SocketAddr = addr.parse().unwrap();
    let header = (MIB as u32).to_be_bytes();
    let holders: Vec<TcpStream> = (0..CONNS)
        .filter_map(|_| {
            let mut c = TcpStream::connect_timeout(&target, PROMPT).ok()?;
            c.write_all(&header).ok()?;
            Some(c)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(server.pid()),
        "the server died holding {} announced frames under a {limit_kib} KiB address-space limit; stderr: {:?}",
        holders.len(),
        server.stderr.snapshot()
    );
    let grew = status_bytes(server.pid(), "VmData").saturating_sub(data_before);
    eprintln!("{} announced frames: VmData grew by {} KiB", holders.len(), grew / KIB);
    assert!(grew < 100 * MIB, "{} announced frames took {grew} B of address space", holders.len());
    promptly("a fresh client among 1,000 announced frames", || fresh_len_echo(&addr, b"during"));
}

#[test]
fn frames_split_at_every_byte_arrive_whole_and_in_order() {
    // One message of every awkward kind: empty, one byte, binary with a newline and NULs, and
    // one long enough that its length header has more than one non-zero byte.
    let long: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let messages: Vec<&[u8]> = vec![b"split", b"", b"x", b"\0\n\xff binary \r\n", &long, b"last"];
    let len_wire: Vec<u8> = messages.iter().flat_map(|m| len_frame(m)).collect();
    let upper = |m: &[u8]| m.to_ascii_uppercase();
    let len_want: Vec<u8> = messages.iter().flat_map(|m| len_frame(&upper(m))).collect();
    let line_wire = b"one\n\ntwo three\r\nfour\n".to_vec();
    let line_want = b"ONE\n\nTWO THREE\r\nFOUR\n".to_vec();

    let dir = temp_dir();
    let sock = dir.path().join("line.sock");
    let len_server = Server::start(&["127.0.0.1:0", "upper", "--framing", "len"]);
    let line_server = Server::start(&[&format!("unix:{}", s(&sock)), "upper", "--framing", "line"]);

    // Control: the same bytes in one write each.
    let mut c = tcp(&len_server.addr());
    round_trip(&mut c, &len_wire, &len_want);
    let mut u = unix(&sock);
    round_trip(&mut u, &line_wire, &line_want);

    // Attack: one byte per write, each its own TCP segment (no Nagle) or Unix write, with a
    // pause after each so that the server wakes up for every byte.
    let mut c = tcp(&len_server.addr());
    let mut u = unix(&sock);
    let started = Instant::now();
    for b in &len_wire {
        c.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    for b in &line_wire {
        u.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    eprintln!("{} bytes written one at a time in {:?}", len_wire.len() + line_wire.len(), started.elapsed());
    assert_eq!(read_n(&mut c, len_want.len()), len_want, "len answers");
    assert_eq!(read_n(&mut u, line_want.len()), line_want, "line answers");

    // Nothing else came: no answer for a piece of a frame.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    u.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(expect_closed(&mut c, PROMPT).1, b"");
    assert_eq!(expect_closed(&mut u, PROMPT).1, b"");
    promptly("a fresh len client after the byte-by-byte one", || {
        let mut c = tcp(&len_server.addr());
        round_trip(&mut c, &len_frame(b"after"), &len_frame(b"AFTER"));
    });
    assert_memory_under(&len_server, 64 * MIB, "frames split at every byte (len)");
    assert_no_spin(&len_server, "the aftermath of frames split at every byte");
    assert_memory_under(&line_server, 64 * MIB, "frames split at every byte (line)");
}

/// A 100 MB line without a newline under `--framing line`: the server cuts it once it passes
/// `--max-frame`, without buffering what follows.
#[test]
fn a_100_mb_line_without_newline_is_cut_at_max_frame_without_buffering_it() {
    const LINE: u64 = 100_000_000;
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--max-frame", "1M"]);
    let addr = server.addr();

    // Control: a line of almost the maximum is answered, by a client that stays on.
    let mut bystander = tcp(&addr);
    let long = "y".repeat(MIB as usize - 1);
    round_trip(&mut bystander, format!("{long}\n").as_bytes(), format!("{long}\n").as_bytes());
    let baseline = status_bytes(server.pid(), "VmHWM");

    // Attack: 100 MB of 'x' and no newline, as fast as the server takes it.
    let mut c = tcp(&addr);
    let local = c.local_addr().unwrap();
    c.set_write_timeout(Some(PROMPT)).unwrap();
    let chunk = vec![b'x'; 64 * KIB as usize];
    let started = Instant::now();
    let mut sent = 0u64;
    let failure = loop {
        if sent >= LINE {
            break None;
        }
        match c.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let failure = failure.unwrap_or_else(|| panic!("the server took all {LINE} bytes of one line"));
    eprintln!("the server stopped the 100 MB line after {} KiB in {:?}: {failure}", sent / KIB, started.elapsed());
    assert!(
        matches!(failure.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "expected the connection to be reset, got {failure}"
    );
    // What the kernel's buffers absorbed aside, the server read little more than the maximum.
    assert!(sent < 32 * MIB, "{sent} bytes went in before the server cut the line");
    let line = server.stderr.wait_for("the long line's log line", |l| l.starts_with(&format!("{local}: ")));
    assert!(line.contains("longer than the maximum of 1048576 bytes"), "{line}");

    // Unharmed: the peak memory stayed far below 100 MB, the bystander and newcomers are served.
    let grew = status_bytes(server.pid(), "VmHWM").saturating_sub(baseline);
    eprintln!("the server's peak RSS grew by {} KiB", grew / KIB);
    assert!(grew < 16 * MIB, "the server's peak RSS grew by {grew} B for one long line");
    assert_memory_under(&server, 48 * MIB, "a 100 MB line");
    assert_no_spin(&server, "the aftermath of a 100 MB line");
    promptly("the bystander after the long line", || round_trip(&mut bystander, b"still\n", b"still\n"));
    promptly("a fresh client after the long line", || fresh_line_echo(&addr, "after"));
}

// ---------------------------------------------------------------------------------------------
// 4. Chat: a member that never reads

/// A chat member, reading with a timeout.
struct Member {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    fn join(addr: &str) -> Member {
        let s = tcp(addr);
        let mut m = Member { writer: s.try_clone().unwrap(), reader: std::io::BufReader::new(s) };
        let welcome = m.line();
        assert!(welcome.starts_with("* welcome, guest"), "{welcome:?}");
        m
    }

    fn say(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut l = String::new();
        let n = self.reader.read_line(&mut l).unwrap_or_else(|e| panic!("no chat line: {e}"));
        assert!(n > 0, "the server closed the connection");
        l.trim_end_matches('\n').to_owned()
    }

    fn until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.line();
            if pred(&l) {
                return l;
            }
        }
    }
}

/// Raises a flag when dropped: a helper thread's stop signal that a failing test still gives.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_chat_member_that_never_reads_is_dropped_and_everyone_else_keeps_up() {
    const PAD: usize = 2000;
    const WINDOW: usize = 256;
    const MAX_LINES: usize = 40_000;
    let server = Server::start(&["127.0.0.1:0", "chat"]);
    let addr = server.addr();

    // Control: two members talk.
    let mut talker = Member::join(&addr); // guest1
    let mut listener = Member::join(&addr); // guest2
    talker.until(|l| l == "* guest2 joined");
    talker.say("hello");
    assert_eq!(listener.line(), "<guest1> hello");

    // Attack: a third member with a small receive buffer never reads a byte.
    let sleeper = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&addr.parse::<SocketAddr>().unwrap().into()).unwrap();
        TcpStream::from(s)
    };
    assert_eq!(listener.line(), "* guest3 joined");

    // The talker says line after line, never more than WINDOW ahead of the listener, until the
    // sleeper is dropped; the listener measures how long each line took to reach it.
    let clock = Instant::now();
    let heard = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Stops the talker however this test ends.
    let _stop_talking = StopOnDrop(done.clone());
    let talking = {
        let (heard, done) = (heard.clone(), done.clone());
        std::thread::spawn(move || {
            let pad = "z".repeat(PAD);
            let mut k = 0;
            while !done.load(Ordering::SeqCst) && k < MAX_LINES {
                if k >= heard.load(Ordering::SeqCst) + WINDOW {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                talker.say(&format!("{k} {} {pad}", clock.elapsed().as_micros()));
                k += 1;
            }
            (talker, k)
        })
    };
    let mut worst = Duration::ZERO;
    let mut next = 0;
    let dropped_at = loop {
        assert!(next < MAX_LINES, "the sleeper was not dropped after {MAX_LINES} lines");
        let l = listener.line();
        if l == "* guest3 left" {
            break next;
        }
        if l == "* guest4 joined" || l == "* guest4 left" {
            // The newcomer below; any other notice (of lines missed, say) fails the test.
            continue;
        }
        let body = l.strip_prefix("<guest1> ").unwrap_or_else(|| panic!("unexpected line {:.60}", l));
        let mut words = body.split(' ');
        let k: usize = words.next().unwrap().parse().unwrap();
        let at: u128 = words.next().unwrap().parse().unwrap();
        assert_eq!(k, next, "line {k} came when {next} was due");
        worst = worst.max(clock.elapsed().saturating_sub(Duration::from_micros(at as u64)));
        next += 1;
        heard.store(next, Ordering::SeqCst);
        if next == 2000 {
            // Someone joins in the middle of it all, is greeted at once, and leaves.
            drop(promptly("a newcomer joining during the flood", || Member::join(&addr)));
        }
    };
    done.store(true, Ordering::SeqCst);
    let (mut talker, said) = talking.join().expect("the talker failed");
    eprintln!("the sleeper was dropped after {dropped_at} lines; the slowest line took {worst:?}");
    assert!(worst < PROMPT, "a line took {worst:?} to reach a member that reads");
    let line = server.stderr.wait_for("the sleeper's line", |l| l.contains("dropped: not reading"));
    assert!(line.starts_with(&sleeper.local_addr().unwrap().to_string()), "{line}");

    // The listener got every line said (none missed, no notice of lag) through to the end.
    while next < said {
        let l = listener.line();
        if l.starts_with("* guest4 ") {
            continue;
        }
        let k: usize = l
            .strip_prefix("<guest1> ")
            .and_then(|b| b.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("expected line {next}, got {:.60}", l));
        assert_eq!(k, next);
        next += 1;
    }

    // The sleeper's connection is closed (what is in its buffer aside).
    let mut sleeper = sleeper;
    sleeper.set_read_timeout(Some(PROMPT)).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let drained = Instant::now();
    loop {
        match sleeper.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => assert!(drained.elapsed() < PROMPT, "the sleeper's connection stays open"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the sleeper's connection stays open: {e}"),
        }
    }

    // Afterwards the room works as before, and memory stayed bounded.
    let mut newcomer = promptly("a newcomer joining after the flood", || Member::join(&addr));
    talker.say("after");
    assert_eq!(newcomer.until(|l| l.starts_with("<guest1> ")), "<guest1> after");
    assert_eq!(listener.until(|l| l.starts_with("<guest1> ")), "<guest1> after");
    assert_memory_under(&server, 128 * MIB, "a chat member that never reads");
    assert_no_spin(&server, "a quiet room after the flood");
}

// ---------------------------------------------------------------------------------------------
// 5. Files: escapes, interruptions, a full disk

use support::files_wire::*;

/// A `files` session on a Unix socket served without a token, spoken by hand (PROTOCOL.md
/// sections 5 and 7), so that paths the command line cannot carry (a NUL) reach the server.
struct Files {
    s: UnixStream,
}

impl Files {
    fn connect(socket: &Path) -> Files {
        let mut f = Files { s: unix(socket) };
        let (kind, body) = f.recv();
        assert_eq!((kind, &body[..3]), (HELLO, &[1u8, 2, 0][..]), "HELLO of a files server without a token");
        f
    }

    fn send(&mut self, kind: u8, body: &[u8]) {
        let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        frame.push(kind);
        frame.extend_from_slice(body);
        self.s.write_all(&frame).unwrap();
    }

    fn recv(&mut self) -> (u8, Vec<u8>) {
        let n = u32::from_be_bytes(read_n(&mut self.s, 4).try_into().unwrap()) as usize;
        assert!((1..=MIB as usize).contains(&n), "a message of {n} bytes");
        let mut payload = read_n(&mut self.s, n);
        let kind = payload.remove(0);
        (kind, payload)
    }

    fn list(&mut self, dir: &[u8]) -> Result<Vec<String>, u8> {
        self.send(LIST, dir);
        let mut names = Vec::new();
        loop {
            match self.recv() {
                (ENTRIES, body) => {
                    let mut b = &body[..];
                    while !b.is_empty() {
                        let n = u16::from_be_bytes(b[17..19].try_into().unwrap()) as usize;
                        names.push(String::from_utf8_lossy(&b[19..19 + n]).into_owned());
                        b = &b[19 + n..];
                    }
                }
                (END, _) => return Ok(names),
                (ERROR, body) => return Err(body[0]),
                (kind, _) => panic!("expected ENTRIES, END or ERROR, got {kind:#x}"),
            }
        }
    }

    fn get(&mut self, path: &[u8]) -> Result<Vec<u8>, u8> {
        let mut body = 0u64.to_be_bytes().to_vec();
        body.extend_from_slice(blake3::hash(b"").as_bytes());
        body.extend_from_slice(path);
        self.send(GET, &body);
        match self.recv() {
            (FILE, head) => {
                let size = u64::from_be_bytes(head[..8].try_into().unwrap()) as usize;
                let data = read_n(&mut self.s, size);
                let (kind, hash) = self.recv();
                assert_eq!((kind, &hash[..]), (DONE, &blake3::hash(&data).as_bytes()[..]));
                Ok(data)
            }
            (ERROR, body) => Err(body[0]),
            (kind, _) => panic!("expected FILE or ERROR, got {kind:#x}"),
        }
    }

    /// A whole PUT of `data`: `Ok` once STORED, the ERROR code otherwise (before or after the
    /// bytes).
    fn put(&mut self, path: &[u8], data: &[u8], resume: bool) -> Result<(), u8> {
        let mut body = (data.len() as u64).to_be_bytes().to_vec();
        body.push(u8::from(resume));
        body.extend_from_slice(path);
        self.send(PUT, &body);
        match self.recv() {
            (READY, _) => {}
            (ERROR, body) => return Err(body[0]),
            (kind, _) => panic!("expected READY or ERROR, got {kind:#x}"),
        }
        self.send(FROM, &0u64.to_be_bytes());
        self.s.write_all(data).unwrap();
        self.send(DONE, blake3::hash(data).as_bytes());
        match self.recv() {
            (STORED, _) => Ok(()),
            (ERROR, body) => Err(body[0]),
            (kind, _) => panic!("expected STORED or ERROR, got {kind:#x}"),
        }
    }
}

/// `sockit serve unix:SOCKET files --root ROOT`, without a token from the environment.
fn serve_files(root: &Path, socket: &Path) -> Server {
    Server::start_cmd(serve_cmd(&[&format!("unix:{}", s(socket)), "files", "--root", s(root)]))
}

/// `sockit ARGS…` run in `dir`, without a token from the environment.
fn client_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.env_remove(TOKEN_ENV).current_dir(dir).args(args);
    cmd
}

/// Every entry under `dir` (symbolic links not followed): relative path → what it is, with the
/// content's hash and the inode, so that a change of content or a replaced file shows.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                walk(&path, base, out);
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("file {} {} ino {}", meta.len(), blake3::hash(&fs::read(&path).unwrap()).to_hex(), meta.ino())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names in `dir` that a user sees: hidden partial files left out.
fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.starts_with('.') && n.ends_with(".sockit-part")))
        .collect();
    v.sort();
    v
}

#[test]
fn paths_out_of_a_files_root_are_refused_and_nothing_outside_changes() {
    let base = temp_dir();
    let b = base.path();
    let (root, outside) = (b.join("root"), b.join("outside"));
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"outside secret\n").unwrap();
    fs::write(outside.join("linked"), b"hard-linked from inside\n").unwrap();
    fs::write(outside.join("victim"), b"must not be truncated\n").unwrap();
    fs::write(root.join("inner.txt"), b"inside\n").unwrap();
    // What a local user with write access to the root (not a client) might plant: symbolic
    // links out, a hard link to a file outside, and a hard link under a partial file's name.
    symlink(&outside, root.join("abs_dir")).unwrap();
    symlink("../outside", root.join("rel_dir")).unwrap();
    symlink(outside.join("secret"), root.join("file_link")).unwrap();
    symlink(outside.join("secret"), root.join("doomed_link")).unwrap();
    symlink("../../outside", root.join("sub/up")).unwrap();
    fs::hard_link(outside.join("linked"), root.join("hard")).unwrap();
    fs::hard_link(outside.join("victim"), root.join(".planted.sockit-part")).unwrap();
    let socket = b.join("s.sock");
    let server = serve_files(&root, &socket);
    let outside_before = snapshot(&outside);
    let mut f = Files::connect(&socket);

    // Control: inside the root, GET, PUT and LIST work, `.` components included.
    assert_eq!(f.get(b"inner.txt"), Ok(b"inside\n".to_vec()));
    assert_eq!(f.get(b"./inner.txt"), Ok(b"inside\n".to_vec()), "a . component stays where it is");
    assert_eq!(f.put(b"sub/./new.txt", b"new\n", false), Ok(()));
    assert_eq!(fs::read(root.join("sub/new.txt")).unwrap(), b"new\n");
    assert!(f.list(b"").unwrap().contains(&"inner.txt".to_owned()));

    // Attack, by name: `..`, absolute paths, NUL, backslashes, and `.` around `..`.
    let absolute = outside.join("secret");
    let by_name: [&[u8]; 13] = [
        b"../outside/secret",
        b"sub/../inner.txt",
        b"sub/../../outside/secret",
        b"./../outside/secret",
        b"sub/./../../outside/secret",
        b"..",
        b"/etc/passwd",
        absolute.as_os_str().as_bytes(),
        b"inner.txt\0/../../outside/secret",
        b"\0",
        b"..\\outside\\secret",
        b".",
        b".planted.sockit-part",
    ];
    for path in by_name {
        let shown = String::from_utf8_lossy(path);
        assert_eq!(f.get(path), Err(BAD_PATH), "GET {shown:?}");
        assert_eq!(f.put(path, b"escaped\n", false), Err(BAD_PATH), "PUT {shown:?}");
        if path != b"." {
            assert_eq!(f.list(path), Err(BAD_PATH), "LIST {shown:?}");
        }
    }
    // Attack, by symbolic links planted inside: resolved beneath the root, so refused.
    for path in [&b"abs_dir/secret"[..], b"rel_dir/secret", b"file_link", b"sub/up/secret", b"sub/./up/secret"] {
        assert_eq!(f.get(path), Err(OUTSIDE), "GET {}", String::from_utf8_lossy(path));
    }
    for path in [&b"abs_dir/new"[..], b"rel_dir/new", b"sub/up/new"] {
        assert_eq!(f.put(path, b"escaped\n", false), Err(OUTSIDE), "PUT {}", String::from_utf8_lossy(path));
    }
    for path in [&b"abs_dir"[..], b"rel_dir", b"sub/up"] {
        assert_eq!(f.list(path), Err(OUTSIDE), "LIST {}", String::from_utf8_lossy(path));
    }
    // A PUT to the symbolic link's own name replaces the link (rename), never its target.
    let over_link = f.put(b"doomed_link", b"over the link\n", false);
    // A PUT to the hard link's name publishes a new file under that name: the file outside,
    // which shares the old inode, keeps its content.
    assert_eq!(f.put(b"hard", b"replaced inside\n", false), Ok(()));
    assert_eq!(fs::read(root.join("hard")).unwrap(), b"replaced inside\n");
    // A hard link planted under the partial name of an upload is refused, with and without
    // resume: writing (or truncating) it would change the file outside.
    for resume in [false, true] {
        assert_eq!(f.put(b"planted", b"through the partial\n", resume), Err(NOT_A_FILE), "resume {resume}");
    }

    // Nothing outside changed, nothing appeared next to the root, and the session goes on.
    assert_eq!(snapshot(&outside), outside_before, "the directory outside the root changed");
    let mut next_to_root: Vec<String> =
        fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    next_to_root.sort();
    assert_eq!(next_to_root, ["outside", "root", "s.sock"]);
    let mut in_root: Vec<String> =
        fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    in_root.sort();
    let planted =
        [".planted.sockit-part", "abs_dir", "doomed_link", "file_link", "hard", "inner.txt", "rel_dir", "sub"];
    assert_eq!(in_root, planted, "the root holds something it should not");
    eprintln!("PUT over a symbolic link's name: {over_link:?}");
    if over_link.is_ok() {
        assert!(fs::symlink_metadata(root.join("doomed_link")).unwrap().is_file(), "the link itself was replaced");
    }
    assert_eq!(f.get(b"inner.txt"), Ok(b"inside\n".to_vec()), "the session is still usable");

    // The command line refuses the same escapes with one line and leaves nothing locally.
    let client = temp_dir();
    fs::write(client.path().join("payload"), b"payload\n").unwrap();
    let ep = server.endpoint.as_str();
    for args in [
        vec!["get", ep, "../outside/secret", "out"],
        vec!["get", ep, "file_link", "out"],
        vec!["put", ep, "payload", "../escaped"],
        vec!["put", ep, "payload", "abs_dir/escaped"],
        vec!["ls", ep, "rel_dir"],
    ] {
        let ran = run(&mut client_in(client.path(), &args), b"");
        assert_eq!(ran.code, Some(1), "{args:?}: {}", ran.stderr);
        assert_eq!(ran.stderr.lines().count(), 1, "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("bad path") || ran.stderr.contains("outside the served directory"),
            "{}",
            ran.stderr
        );
    }
    assert_eq!(visible(client.path()), ["payload"]);
    assert_eq!(snapshot(&outside), outside_before, "the directory outside the root changed");
    promptly("a fresh files client after the escapes", || {
        let mut f = Files::connect(&socket);
        assert_eq!(f.get(b"inner.txt"), Ok(b"inside\n".to_vec()));
    });
    assert_no_spin(&server, "a files session after the escapes");
    assert_memory_under(&server, 64 * MIB, "escapes from the root");
}

/// A temporary directory on /dev/shm when it has room (memory: fast), else in the usual place.
fn fast_dir(need: u64) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let c = std::ffi::CString::new("/dev/shm").unwrap();
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let free =
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 { st.f_bavail as u64 * st.f_frsize as u64 } else { 0 };
    if shm.is_dir()
        && free > 2 * need
        && let Ok(dir) = tempfile::Builder::new().prefix("sockit-test-").tempdir_in(shm)
    {
        return dir;
    }
    temp_dir()
}

/// A child process, killed and reaped if the test ends before it does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_9_of_a_put_in_the_middle_leaves_no_visible_file_and_the_server_keeps_serving() {
    const SIZE: u64 = 256 * MIB;
    let dir = fast_dir(SIZE);
    let (root, client) = (dir.path().join("root"), dir.path().join("client"));
    fs::create_dir(&root).unwrap();
    fs::create_dir(&client).unwrap();
    let socket = dir.path().join("s.sock");
    let server = serve_files(&root, &socket);
    let ep = server.endpoint.clone();

    // Control: a put goes through.
    fs::write(client.join("small.bin"), vec![7u8; 100_000]).unwrap();
    let ran = run(&mut client_in(&client, &["put", &ep, "small.bin"]), b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(fs::read(root.join("small.bin")).unwrap(), vec![7u8; 100_000]);

    // Attack: a big put, frozen once its partial file has grown (so that it is surely in the
    // middle), then killed with SIGKILL.
    {
        let mut f = fs::File::create(client.join("big.bin")).unwrap();
        let block: Vec<u8> = (0..MIB as usize).map(|i| (i % 253) as u8).collect();
        for _ in 0..SIZE / MIB {
            f.write_all(&block).unwrap();
        }
    }
    let partial = root.join(".big.bin.sockit-part");
    let mut put = Guard(
        client_in(&client, &["put", &ep, "big.bin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = put.0.id() as i32;
    wait_until("the partial file grows to 4 MiB", LIMIT, || {
        fs::metadata(&partial).map(|m| m.len() >= 4 * MIB).unwrap_or(false)
    });
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert!(put.0.try_wait().unwrap().is_none(), "the put finished before it could be stopped in the middle");
    let held = fs::metadata(&partial).unwrap().len();
    assert!(held < SIZE, "the partial file is complete");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = wait_bounded(&mut put.0, PROMPT).expect("the killed put is reaped");
    assert!(!status.success());
    let line = server.stderr.wait_for("the killed put's line", |l| l.starts_with(&format!("unix(pid {pid}, ")));
    eprintln!("killed a put after {} MiB: {line}", held / MIB);

    // No file under the target's name, none listed, and the server is idle and serving.
    assert_eq!(visible(&root), ["small.bin"]);
    let ls = run(&mut client_in(&client, &["ls", &ep]), b"");
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert!(!ls.stdout_text().contains("big.bin"), "{}", ls.stdout_text());
    assert_no_spin(&server, "the aftermath of a killed put");
    assert_memory_under(&server, 64 * MIB, "a put killed in the middle");
    promptly("a fresh put after the kill", || {
        fs::write(client.join("after.bin"), b"after\n").unwrap();
        let ran = run(&mut client_in(&client, &["put", &ep, "after.bin"]), b"");
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    });
    assert_eq!(fs::read(root.join("after.bin")).unwrap(), b"after\n");
}

#[test]
fn a_put_onto_a_full_disk_fails_clearly_and_leaves_no_partial_file() {
    let test = "a_put_onto_a_full_disk_fails_clearly_and_leaves_no_partial_file";
    let base = temp_dir();
    let mnt = base.path().join("small");
    // Declared before the server, so dropped after it: the server holds the root open.
    let Some(_mounted) = small_tmpfs(test, &mnt) else { return };
    let client = base.path().join("client");
    fs::create_dir(&client).unwrap();
    let server = serve_files(&mnt, &base.path().join("s.sock"));
    let ep = server.endpoint.clone();

    // Control: what fits is stored.
    fs::write(client.join("fits.bin"), vec![1u8; MIB as usize]).unwrap();
    let ran = run(&mut client_in(&client, &["put", &ep, "fits.bin"]), b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let before = snapshot(&mnt);

    // Attack: 8 MiB onto the 3 MiB left.
    fs::write(client.join("big.bin"), vec![2u8; 8 * MIB as usize]).unwrap();
    let started = Instant::now();
    let ran = run(&mut client_in(&client, &["put", &ep, "big.bin"]), b"");
    let took = started.elapsed();
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(ran.stderr.contains("no space left"), "{}", ran.stderr);
    assert!(took < PROMPT, "the failed put took {took:?}");
    eprintln!("a put onto a full disk failed in {took:?}: {}", ran.stderr.trim());

    // Nothing left behind, not even hidden; the space is given back; the server serves on.
    wait_logged(&server, "unix(pid", 2);
    wait_until("the partial file is removed", PROMPT, || snapshot(&mnt) == before);
    assert_no_spin(&server, "the aftermath of a full disk");
    fs::write(client.join("again.bin"), vec![3u8; MIB as usize]).unwrap();
    promptly("a put that fits after the full disk", || {
        let ran = run(&mut client_in(&client, &["put", &ep, "again.bin"]), b"");
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    });
    assert_eq!(fs::read(mnt.join("again.bin")).unwrap(), vec![3u8; MIB as usize]);
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 6. Exec: shell metacharacters, and a client that vanishes mid-output

/// `sockit serve unix:DIR/exec.sock exec` (no token: the client has our uid).
fn serve_exec(dir: &Path) -> (Server, String) {
    let socket = dir.join("exec.sock");
    let server = Server::start_cmd(serve_cmd(&[&format!("unix:{}", s(&socket)), "exec"]));
    let ep = server.endpoint.clone();
    (server, ep)
}

fn exec_cmd(ep: &str, argv: &[&str]) -> Command {
    let mut c = sockit();
    c.env_remove(TOKEN_ENV).args(["exec", ep, "-n", "--"]).args(argv);
    c
}

#[test]
fn exec_arguments_full_of_shell_metacharacters_reach_argv_verbatim_and_run_nothing() {
    require!("python3");
    let dir = temp_dir();
    let d = dir.path();
    let (server, ep) = serve_exec(d);
    let victim = d.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("keep"), b"keep\n").unwrap();
    let pwned = |n: u32| d.join(format!("pwned{n}"));
    // Prints each argument as hex on its own line: what the program really got, byte for byte.
    const SHOW_ARGV: &str = "import sys\nfor a in sys.argv[1:]: print(a.encode('utf-8', 'surrogateescape').hex())";

    // Control: plain arguments arrive as they are.
    let ran = run(&mut exec_cmd(&ep, &["printf", "%s\\n", "plain", "words"]), b"");
    assert_eq!((ran.code, ran.stdout_text()), (Some(0), "plain\nwords\n".to_owned()), "{}", ran.stderr);

    // Attack: every way a shell would have run something.
    let args = [
        format!("; rm -rf {}", s(&victim)),
        format!("$(touch {})", s(&pwned(1))),
        format!("`touch {}`", s(&pwned(2))),
        format!("| touch {}", s(&pwned(3))),
        format!("&& touch {}", s(&pwned(4))),
        format!("x\ntouch {}\n", s(&pwned(5))),
        format!("> {}", s(&pwned(6))),
        format!("'; touch {} '", s(&pwned(7))),
        format!("\"; touch {}; \"", s(&pwned(8))),
        "${HOME} $PATH * ? [a] ~ {a,b} \\ # !".to_owned(),
        String::new(),
        "   spaces   ".to_owned(),
    ];
    let mut argv = vec!["python3", "-c", SHOW_ARGV];
    argv.extend(args.iter().map(String::as_str));
    let ran = run(&mut exec_cmd(&ep, &argv), b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let got: Vec<String> = ran.stdout_text().lines().map(str::to_owned).collect();
    let want: Vec<String> = args.iter().map(|a| a.bytes().map(|b| format!("{b:02x}")).collect()).collect();
    assert_eq!(got, want, "the arguments did not arrive verbatim");
    // The same through printf, whose output is easy to read in a failure.
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(args.iter().map(String::as_str));
    let ran = run(&mut exec_cmd(&ep, &argv), b"");
    let want: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(ran.stdout_text(), want);
    // A program name full of metacharacters is a name, not found, not a command line.
    let name = format!("touch {}; true", s(&pwned(9)));
    let ran = run(&mut exec_cmd(&ep, &[&name]), b"");
    assert_eq!(ran.code, Some(127), "{}", ran.stderr);

    // Nothing ran: no marker file, the victim intact, and the server as before.
    let made: Vec<u32> = (1..=9).filter(|n| pwned(*n).exists()).collect();
    assert!(made.is_empty(), "a shell ran: marker files {made:?} exist");
    assert_eq!(fs::read(victim.join("keep")).unwrap(), b"keep\n");
    promptly("a fresh exec after the metacharacters", || {
        let ran = run(&mut exec_cmd(&ep, &["echo", "fine"]), b"");
        assert_eq!(ran.stdout_text(), "fine\n");
    });
    assert_no_spin(&server, "the aftermath of metacharacters");
}

#[test]
fn an_exec_client_that_vanishes_during_a_gibibyte_of_output_takes_its_command_with_it() {
    let dir = temp_dir();
    let (server, ep) = serve_exec(dir.path());
    // About 1 GiB, a number that also finds the command among the machine's processes.
    let size = marker(107);

    // Control: a mebibyte of output arrives whole.
    let ran = run(&mut exec_cmd(&ep, &["head", "-c", "1048576", "/dev/zero"]), b"");
    assert_eq!((ran.code, ran.stdout.len()), (Some(0), MIB as usize), "{}", ran.stderr);

    // Attack: the gibibyte starts flowing, the client reads a little of it, then is killed.
    let mut child = Guard(spawn_piped(exec_cmd(&ep, &["head", "-c", &size, "/dev/zero"])));
    let mut out = child.0.stdout.take().unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * KIB as usize];
    while got < 8 * MIB as usize {
        let n = out.read(&mut buf).expect("reading the output");
        assert!(n > 0, "the output ended after {got} bytes");
        got += n;
    }
    assert_eq!(live_with("head", &size).len(), 1, "the command runs");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed = Instant::now();
    drop(out);

    // The command's process group goes with its client, and nothing is left unreaped.
    wait_until("the command outlived its client", PROMPT, || live_with("head", &size).is_empty());
    eprintln!("the command was gone {:?} after its client", killed.elapsed());
    wait_until("the server left a zombie", PROMPT, || zombie_children(server.pid()).is_empty());
    assert_memory_under(&server, 64 * MIB, "a client that vanished during 1 GiB of output");
    assert_no_spin(&server, "the aftermath of a vanished exec client");
    promptly("a fresh exec after the vanished client", || {
        let ran = run(&mut exec_cmd(&ep, &["echo", "fine"]), b"");
        assert_eq!(ran.stdout_text(), "fine\n");
    });
}
