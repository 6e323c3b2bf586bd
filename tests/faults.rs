//! The relay's injected faults, measured from outside with real sockets: `--delay` and
//! `--jitter` stretch round trips by what they say (per direction, `--faults-on`) without
//! limiting throughput or reordering a stream; `--rate` caps the bytes per second; `--chunk`
//! cuts what a seqpacket peer receives into small messages; `--reset-after` resets both
//! connections after so many bytes; `--drop`, `--duplicate` and `--reorder` lose, repeat and
//! swap about the share of datagrams they say; `--seed` makes a run repeatable; data a fault
//! holds back outlives the idle timeout; and flags that do not fit the sockets are refused
//! before anything is bound.
//!
//! This kernel has no netem: these tests are how the project shows that loss and delay work.
//! Lower bounds on time are strict (a fault never acts early); upper bounds are generous, as
//! the machine is shared. Every server listens on port 0 or on a path in a temporary
//! directory, and every wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use support::*;

/// How long something that should happen at once (a reset, a refusal) may take on a loaded
/// machine. Well under [`LIMIT`], so a relay that never does it fails within a test's budget.
const PROMPT: Duration = Duration::from_secs(5);

/// How long the datagram tests wait after the last echo before they count: well past
/// [`REORDER_WAIT`](sockit::fault::REORDER_WAIT) (100 ms), so a held datagram has been sent.
const QUIET: Duration = Duration::from_millis(500);

/// The longest one run of numbered datagrams may take (about a second is usual).
const DATAGRAM_BUDGET: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A `sockit serve` echo server on TCP port 0.
fn tcp_echo() -> Server {
    Server::start(&["127.0.0.1:0", "echo"])
}

/// A `sockit serve` echo server on UDP port 0.
fn udp_echo() -> Server {
    Server::start(&["udp://127.0.0.1:0", "echo"])
}

/// `sockit relay 127.0.0.1:0 TARGET FLAGS…`.
fn tcp_relay(target: &str, flags: &[&str]) -> Server {
    Server::relay(&[&["127.0.0.1:0", target], flags].concat())
}

/// `sockit relay udp://127.0.0.1:0 TARGET FLAGS…`.
fn udp_relay(target: &Server, flags: &[&str]) -> Server {
    Server::relay(&[&["udp://127.0.0.1:0", target.endpoint.as_str()], flags].concat())
}

/// `n` bytes that repeat only every 251 bytes, so a lost, doubled or misplaced piece of any
/// power-of-two size shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The time each of `n` small round trips through `addr` (an echo, maybe behind a relay)
/// takes, one after another on one connection; failing if they take more than `budget` in all.
fn round_trip_times(addr: &str, n: usize, budget: Duration) -> Vec<Duration> {
    let mut s = tcp_within(addr, budget);
    let deadline = Instant::now() + budget;
    (0..n)
        .map(|i| {
            let msg = format!("ping {i:04}\n");
            let started = Instant::now();
            s.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0; msg.len()];
            s.read_exact(&mut back).unwrap_or_else(|e| panic!("round trip {i}: {e}"));
            let took = started.elapsed();
            assert_eq!(back, msg.as_bytes(), "round trip {i}");
            assert!(Instant::now() < deadline, "{n} round trips took over {budget:?}: round trip {i} took {took:?}");
            took
        })
        .collect()
}

/// Reads `s` to its end, giving `check` the total after every read; failing if `check` fails
/// or reading takes longer than `budget` in all. On failure the socket is shut down first, so
/// that a writer blocked on it stops too.
fn read_to_end_within(
    s: &mut TcpStream,
    budget: Duration,
    mut check: impl FnMut(usize) -> Result<(), String>,
) -> Vec<u8> {
    let deadline = Instant::now() + budget;
    s.set_read_timeout(Some(budget)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let failure = match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if Instant::now() >= deadline {
                    Err(format!("only {} bytes within {budget:?}", got.len()))
                } else {
                    check(got.len())
                }
            }
            Err(e) => Err(format!("reading after {} bytes: {e}", got.len())),
        };
        if let Err(why) = failure {
            let _ = s.shutdown(Shutdown::Both);
            panic!("{why}");
        }
    }
}

/// Writes `data` to a stream and shuts down its sending side: run in a thread while another
/// reads. The error, if any, is returned for the reader to report.
fn write_then_shut(mut s: TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Calls `attempt` (a non-blocking accept) until it gives a connection, for at most [`PROMPT`].
fn accept_within<T>(mut attempt: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + PROMPT;
    loop {
        match attempt() {
            Ok(c) => return c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nothing connected within {PROMPT:?}");
                thread::sleep(ms(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// What a peer read, and how its reading ended: `None` for an orderly end, else the error.
type Received = (Vec<u8>, Option<ErrorKind>);

/// Reads until the end of the stream or an error.
fn read_until_error(s: &mut impl Read) -> Received {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

/// Whether `k` successes in `n` trials is within five standard deviations of `p`.
fn plausible(k: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (k as f64 - mean).abs() <= 5.0 * sd + 1.0
}

/// Sends the numbers `0..n` through a datagram relay (to an echo) from one socket, as 4-byte
/// datagrams, `burst` at a time 1 ms apart, and returns every echo in the order it came, once
/// none has come for [`QUIET`] after the last was sent. The pace is gentle enough that no
/// socket buffer overflows on a loaded machine: a datagram missing here was lost by the relay.
fn numbered_datagrams(relay: &Server, n: u32, burst: u32) -> Vec<u32> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(relay.addr()).unwrap();
    sock.set_read_timeout(Some(ms(20))).unwrap();
    let sent = AtomicBool::new(false);
    thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let deadline = Instant::now() + DATAGRAM_BUDGET;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            let mut last = Instant::now();
            let mut all_sent: Option<Instant> = None;
            loop {
                match sock.recv(&mut buf) {
                    Ok(4) => {
                        got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                        last = Instant::now();
                    }
                    Ok(len) => panic!("an echo of {len} bytes; every datagram sent has 4"),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("receiving echoes: {e}"),
                }
                if all_sent.is_none() && sent.load(Ordering::Acquire) {
                    all_sent = Some(Instant::now());
                }
                if let Some(t) = all_sent
                    && last.max(t).elapsed() >= QUIET
                {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "echoes still coming after {DATAGRAM_BUDGET:?}: {} so far",
                    got.len()
                );
            }
        });
        for i in 0..n {
            sock.send(&i.to_be_bytes()).unwrap();
            if (i + 1) % burst == 0 {
                thread::sleep(ms(1));
            }
        }
        sent.store(true, Ordering::Release);
        receiver.join().expect("the receiver failed")
    })
}

/// How many times each number came back.
fn counts(got: &[u32]) -> BTreeMap<u32, usize> {
    let mut c = BTreeMap::new();
    for &i in got {
        *c.entry(i).or_insert(0) += 1;
    }
    c
}

/// The numbers below `n` missing from `got`.
fn lost(got: &[u32], n: u32) -> Vec<u32> {
    let c = counts(got);
    (0..n).filter(|i| !c.contains_key(i)).collect()
}

/// A seqpacket server on `path` for one client, in a thread: echoes every message and returns
/// the size of each and all the bytes, once the client has shut down its sending side.
fn seqpacket_echo(path: &Path) -> thread::JoinHandle<(Vec<usize>, Vec<u8>)> {
    let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    listener.bind(&SockAddr::unix(path).unwrap()).unwrap();
    listener.listen(8).unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let (mut conn, _) = accept_within(|| listener.accept());
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(PROMPT)).unwrap();
        let (mut sizes, mut data) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap_or_else(|e| panic!("seqpacket target: {e}"));
            if n == 0 {
                return (sizes, data);
            }
            sizes.push(n);
            data.extend_from_slice(&buf[..n]);
            conn.write_all(&buf[..n]).unwrap();
        }
    })
}

/// A TCP server for one client, in a thread: reads until end or error, and returns what came
/// and how it ended.
fn tcp_reader() -> (String, thread::JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut conn, _) = accept_within(|| listener.accept());
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(PROMPT)).unwrap();
        read_until_error(&mut conn)
    });
    (addr, handle)
}

// ---------------------------------------------------------------------------------------------
// Delay and jitter

#[test]
fn delay_adds_twice_the_delay_to_a_round_trip() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "100"]);
    let times = round_trip_times(&relay.addr(), 10, ms(6000));
    for (i, t) in times.iter().enumerate() {
        assert!(*t >= ms(190), "round trip {i} took {t:?}, under 2 × 100 ms: {times:?}");
    }
    let m = median(&times);
    eprintln!("--delay 100: round trips {times:?}");
    assert!(m <= ms(200 + 150), "median round trip {m:?}, far over 2 × 100 ms: {times:?}");
    assert!(times.iter().all(|t| *t <= ms(200 + 1000)), "{times:?}");
}

#[test]
fn delay_on_one_direction_adds_it_once() {
    let echo = tcp_echo();
    for way in ["up", "down"] {
        let relay = tcp_relay(&echo.endpoint, &["--delay", "100", "--faults-on", way]);
        let times = round_trip_times(&relay.addr(), 10, ms(4000));
        for (i, t) in times.iter().enumerate() {
            assert!(*t >= ms(95), "--faults-on {way}: round trip {i} took {t:?}, under 100 ms: {times:?}");
        }
        let m = median(&times);
        eprintln!("--delay 100 --faults-on {way}: round trips {times:?}");
        // Under 2 × 95 ms: the delay was not applied both ways.
        assert!(m < ms(190), "--faults-on {way}: median round trip {m:?}, as if delayed both ways: {times:?}");
        assert!(times.iter().all(|t| *t <= ms(100 + 1000)), "--faults-on {way}: {times:?}");
    }
}

#[test]
fn delay_is_pipelined_and_does_not_limit_throughput() {
    const SIZE: usize = 8 << 20;
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "50"]);
    let sent = pattern(SIZE);
    let mut s = tcp(&relay.addr());
    let writer = s.try_clone().unwrap();
    let started = Instant::now();
    let (got, took, wrote) = thread::scope(|scope| {
        let w = scope.spawn(|| write_then_shut(writer, &sent));
        // One 64 KiB buffer per 50 ms would take 6.4 s each way: allow half of that for both.
        let got = read_to_end_within(&mut s, ms(3200), |_| Ok(()));
        (got, started.elapsed(), w.join().unwrap())
    });
    wrote.expect("writing 8 MiB");
    assert!(got == sent, "the echo differs: {} bytes back of {SIZE}", got.len());
    assert!(took >= ms(95), "8 MiB came back through 2 × 50 ms of delay in {took:?}");
    eprintln!("8 MiB each way through --delay 50 in {took:?}");
}

#[test]
fn delay_holds_datagrams_back_too() {
    let echo = udp_echo();
    let relay = udp_relay(&echo, &["--delay", "50"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(relay.addr()).unwrap();
    sock.set_read_timeout(Some(PROMPT)).unwrap();
    let mut times = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0u32..10 {
        let started = Instant::now();
        sock.send(&i.to_be_bytes()).unwrap();
        let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("round trip {i}: {e}"));
        times.push(started.elapsed());
        assert_eq!(buf[..n], i.to_be_bytes(), "round trip {i}");
    }
    eprintln!("udp --delay 50: round trips {times:?}");
    for (i, t) in times.iter().enumerate() {
        assert!(*t >= ms(95), "round trip {i} took {t:?}, under 2 × 50 ms: {times:?}");
    }
    let m = median(&times);
    assert!(m <= ms(100 + 150), "median round trip {m:?}, far over 2 × 50 ms: {times:?}");
}

#[test]
fn jitter_varies_each_round_trip_within_its_bounds() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "50", "--jitter", "30"]);
    let times = round_trip_times(&relay.addr(), 30, ms(9000));
    let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    eprintln!("--delay 50 --jitter 30: round trips from {min:?} to {max:?}, median {:?}", median(&times));
    // Each way 20 to 80 ms: a round trip 40 to 160 ms, plus whatever the machine adds.
    assert!(min >= ms(38), "a round trip of {min:?}, under 2 × (50 − 30) ms: {times:?}");
    assert!(max <= ms(160 + 400), "a round trip of {max:?}, far over 2 × (50 + 30) ms: {times:?}");
    // Jitter takes away as well as adds: some round trips beat the plain delay (each has a
    // chance of about 0.4 to beat it by 5 ms; all 30 failing to is a one-in-ten-million event).
    assert!(min < ms(95), "no round trip under 2 × 50 ms: the jitter only adds: {times:?}");
    assert!(max - min >= ms(20), "round trips hardly vary ({min:?} to {max:?}): {times:?}");
}

#[test]
fn jitter_keeps_a_stream_complete_and_in_order() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "20", "--jitter", "20"]);
    let mut s = tcp(&relay.addr());
    let mut writer = s.try_clone().unwrap();
    let lines: Vec<String> = (0..1000).map(|i| format!("{i:06}\n")).collect();
    let (got, wrote) = thread::scope(|scope| {
        let w = scope.spawn(|| {
            // One write each, 1 ms apart, so the relay reads them as separate pieces and gives
            // each its own delay of 0 to 40 ms: far more than the gap between them.
            for line in &lines {
                writer.write_all(line.as_bytes())?;
                thread::sleep(ms(1));
            }
            writer.shutdown(Shutdown::Write)
        });
        let got = read_to_end_within(&mut s, ms(10_000), |_| Ok(()));
        (got, w.join().unwrap())
    });
    wrote.expect("writing the lines");
    let got = String::from_utf8(got).expect("text back");
    let got: Vec<&str> = got.split_inclusive('\n').collect();
    assert_eq!(got.len(), lines.len(), "lines back");
    for (i, (g, want)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(g, want, "line {i} (the stream was reordered or damaged)");
    }
}

// ---------------------------------------------------------------------------------------------
// Rate

#[test]
fn rate_caps_the_bytes_per_second_and_keeps_them_intact() {
    const SIZE: usize = 600 * 1024;
    const RATE: f64 = 200.0 * 1024.0;
    // The relay writes in pieces of a fiftieth of a second's worth: allow two ahead.
    const SLACK: f64 = 2.0 * RATE / 50.0;
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--rate", "200K", "--faults-on", "up"]);
    let sent = pattern(SIZE);
    let mut s = tcp(&relay.addr());
    let writer = s.try_clone().unwrap();
    let started = Instant::now();
    let (got, took, wrote) = thread::scope(|scope| {
        let w = scope.spawn(|| write_then_shut(writer, &sent));
        let got = read_to_end_within(&mut s, ms(8000), |total| {
            let t = started.elapsed().as_secs_f64();
            if total as f64 <= RATE * t + SLACK {
                Ok(())
            } else {
                Err(format!("{total} bytes back after {t:.3}s: faster than 200 KiB/s"))
            }
        });
        (got, started.elapsed(), w.join().unwrap())
    });
    wrote.expect("writing 600 KiB");
    assert!(got == sent, "the bytes back differ from those sent: {} of {SIZE}", got.len());
    eprintln!("600 KiB through --rate 200K in {took:?}");
    assert!(took >= ms(2700), "600 KiB at 200 KiB/s took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Chunk

#[test]
fn chunk_cuts_what_a_seqpacket_target_receives_into_small_messages() {
    let dir = temp_dir();
    let target = dir.path().join("target.sock");
    let server = seqpacket_echo(&target);
    let relay = tcp_relay(&format!("unix-seqpacket:{}", target.display()), &["--chunk", "7"]);
    let sent = pattern(100);
    let mut s = tcp_within(&relay.addr(), PROMPT);
    s.write_all(&sent).unwrap();
    let mut back = vec![0u8; sent.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, sent, "the echo back through the relay");
    s.shutdown(Shutdown::Write).unwrap();
    let (rest, how) = read_until_error(&mut s);
    assert_eq!((rest.len(), how), (0, None), "after the echo, an orderly end");
    let (sizes, data) = server.join().expect("the seqpacket target failed");
    assert_eq!(data, sent, "what the target received");
    eprintln!("--chunk 7: the seqpacket target received {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 7), "messages over 7 bytes: {sizes:?}");
    // 100 bytes read at once are 14 pieces of 7 and one of 2; a read split in two adds one.
    assert!(sizes.len() <= 15 + 3, "more pieces than --chunk 7 asks for: {sizes:?}");
}

#[test]
fn chunk_cuts_what_a_seqpacket_client_receives_into_small_messages() {
    let dir = temp_dir();
    let from = dir.path().join("relay.sock");
    let echo = tcp_echo();
    let _relay = Server::relay(&[&format!("unix-seqpacket:{}", from.display()), &echo.endpoint, "--chunk", "7"]);
    let client = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    client.connect(&SockAddr::unix(&from).unwrap()).unwrap();
    client.set_read_timeout(Some(PROMPT)).unwrap();
    let sent = pattern(100);
    (&client).write_all(&sent).unwrap();
    let (mut sizes, mut back) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    while back.len() < sent.len() {
        let n = (&client).read(&mut buf).unwrap_or_else(|e| panic!("after {} bytes: {e}", back.len()));
        assert!(n > 0, "the relay closed after {} bytes", back.len());
        sizes.push(n);
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(back, sent, "the echo back through the relay");
    eprintln!("--chunk 7: the seqpacket client received {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 7), "messages over 7 bytes: {sizes:?}");
}

// ---------------------------------------------------------------------------------------------
// Reset

#[test]
fn reset_after_passes_that_many_bytes_then_resets_both_sides() {
    let (target, server) = tcp_reader();
    let relay = tcp_relay(&target, &["--reset-after", "100", "--faults-on", "up"]);
    let mut s = tcp_within(&relay.addr(), PROMPT);
    let sent = pattern(1000);
    s.write_all(&sent).unwrap();
    let started = Instant::now();
    let (back, how) = read_until_error(&mut s);
    assert_eq!((back.len(), how), (0, Some(ErrorKind::ConnectionReset)), "the client's end");
    assert!(started.elapsed() < PROMPT);
    let (got, how) = server.join().expect("the target failed");
    assert_eq!(how, Some(ErrorKind::ConnectionReset), "the target's end, after {} bytes", got.len());
    assert_eq!(got, sent[..100], "the target receives exactly the first 100 bytes");
    // The totals are what was delivered: 1000 bytes were read, 100 written.
    relay
        .stderr
        .wait_for("the connection's line", |l| l.contains(": 100 B in, 0 B out, ") && l.contains("reset after"));
}

#[test]
fn reset_after_counts_both_directions_together() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--reset-after", "100"]);
    let mut s = tcp_within(&relay.addr(), PROMPT);
    // 60 bytes up leave 40 of the budget for the echo coming down.
    let sent = pattern(60);
    s.write_all(&sent).unwrap();
    let (back, how) = read_until_error(&mut s);
    assert_eq!(back, sent[..40], "the client gets the first 40 bytes of its echo");
    assert_eq!(how, Some(ErrorKind::ConnectionReset), "and then a reset");
}

/// With a delay queue both ways, the totals are still what was delivered: the bytes read and
/// queued when the reset came are cut off, not counted (it logged 1001 KiB in and 959 KiB out
/// against a shared budget of 1,000,000 bytes).
#[test]
fn reset_after_with_a_delay_counts_only_what_was_delivered() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "50", "--reset-after", "100000"]);
    let s = tcp_within(&relay.addr(), PROMPT);
    let mut reader = s.try_clone().unwrap();
    let reading = std::thread::spawn(move || read_until_error(&mut reader));
    let mut writer = &s;
    // Until the reset: far more than the budget, both ways.
    for _ in 0..100 {
        if writer.write_all(&pattern(10_000)).is_err() {
            break;
        }
    }
    let (back, _) = reading.join().unwrap();
    let line = relay.stderr.wait_for("the connection's line", |l| l.contains("reset after 100000 bytes"));
    let total = |word: &str| -> f64 {
        let at = line.find(&format!(" B {word}")).or_else(|| line.find(&format!(" KiB {word}"))).unwrap();
        let kib = line[at..].starts_with(" KiB");
        let n: f64 = line[..at].rsplit([' ', ':']).next().unwrap().parse().unwrap();
        if kib { n * 1024.0 } else { n }
    };
    let (up, down) = (total("in"), total("out"));
    assert!(up + down <= 100_000.0 + 1024.0, "{line}");
    assert!(down >= back.len() as f64 - 1024.0, "{} bytes came back: {line}", back.len());
}

#[test]
fn reset_after_zero_resets_both_sides_at_once() {
    let (target, server) = tcp_reader();
    let relay = tcp_relay(&target, &["--reset-after", "0"]);
    // The reset can come so soon that the client's connect already finds it: then the
    // connect itself reports it (std's connect with a timeout reads the socket's error once
    // the connection is up). Either way the client is reset and gets nothing.
    let addr: std::net::SocketAddr = relay.addr().parse().unwrap();
    let (back, how) = match std::net::TcpStream::connect_timeout(&addr, PROMPT) {
        Ok(mut s) => {
            s.set_read_timeout(Some(PROMPT)).unwrap();
            read_until_error(&mut s)
        }
        Err(e) => (Vec::new(), Some(e.kind())),
    };
    assert_eq!((back.len(), how), (0, Some(ErrorKind::ConnectionReset)), "the client's end");
    let (got, how) = server.join().expect("the target failed");
    assert_eq!((got.len(), how), (0, Some(ErrorKind::ConnectionReset)), "the target's end");
}

// ---------------------------------------------------------------------------------------------
// Datagrams: drop, duplicate, reorder, seed

#[test]
fn drop_loses_about_that_share_of_datagrams() {
    const N: u32 = 1000;
    let echo = udp_echo();

    let relay = udp_relay(&echo, &["--drop", "0"]);
    let got = numbered_datagrams(&relay, N, 2);
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "--drop 0 loses nothing");

    let relay = udp_relay(&echo, &["--drop", "30%", "--faults-on", "up"]);
    let got = numbered_datagrams(&relay, N, 2);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "what survives comes once and in order: {got:?}");
    eprintln!("--drop 30%: {} of {N} came back", got.len());
    assert!(plausible(got.len(), N as usize, 0.7), "--drop 30%: {} of {N} came back", got.len());

    let relay = udp_relay(&echo, &["--drop", "1", "--faults-on", "up"]);
    let got = numbered_datagrams(&relay, N, 2);
    assert!(got.is_empty(), "--drop 1: {} came back", got.len());
}

#[test]
fn duplicate_sends_about_that_share_twice() {
    const N: u32 = 1000;
    let echo = udp_echo();
    let relay = udp_relay(&echo, &["--duplicate", "0.2", "--faults-on", "up"]);
    let got = numbered_datagrams(&relay, N, 2);
    let c = counts(&got);
    assert_eq!(lost(&got, N), Vec::<u32>::new(), "duplication loses nothing");
    assert!(c.values().all(|&k| k <= 2), "some number came back more than twice");
    let twice = c.values().filter(|&&k| k == 2).count();
    eprintln!("--duplicate 0.2: {twice} of {N} came back twice");
    assert!(plausible(twice, N as usize, 0.2), "--duplicate 0.2: {twice} of {N} came back twice");
    let adjacent = got.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(adjacent, twice, "a copy follows its original at once");
}

#[test]
fn reorder_swaps_neighbours_and_loses_nothing() {
    const N: u32 = 500;
    const P: f64 = 0.1;
    let echo = udp_echo();
    let relay = udp_relay(&echo, &["--reorder", "0.1", "--faults-on", "up"]);
    // One a millisecond: each held datagram's successor comes long before REORDER_WAIT.
    let got = numbered_datagrams(&relay, N, 1);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "nothing lost or added");
    let inversions: Vec<(u32, u32)> = got.windows(2).filter(|w| w[0] > w[1]).map(|w| (w[0], w[1])).collect();
    assert!(inversions.iter().all(|&(a, b)| a == b + 1), "a held datagram goes right after the next: {inversions:?}");
    eprintln!("--reorder 0.1: {} of {N} swapped", inversions.len());
    // A datagram is held only while none is, so about p / (1 + p) of them are.
    assert!(
        !inversions.is_empty() && plausible(inversions.len(), N as usize, P / (1.0 + P)),
        "--reorder 0.1: {} of {N} swapped",
        inversions.len()
    );
}

#[test]
fn reorder_sends_a_held_datagram_anyway_when_nothing_follows() {
    let echo = udp_echo();
    let relay = udp_relay(&echo, &["--reorder", "1", "--faults-on", "up"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(relay.addr()).unwrap();
    sock.set_read_timeout(Some(PROMPT)).unwrap();
    let started = Instant::now();
    sock.send(b"alone").unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("the held datagram comes after all");
    let took = started.elapsed();
    assert_eq!(&buf[..n], b"alone");
    // REORDER_WAIT is 100 ms.
    assert!(took >= ms(95) && took <= ms(100 + 500), "the lone datagram was held {took:?}");
}

#[test]
fn the_same_seed_meets_the_same_fate_and_another_seed_another() {
    const N: u32 = 400;
    let echo = udp_echo();
    let run = |seed: &str| {
        // A fresh relay each time, so the one client is session 1 every time.
        let relay = udp_relay(&echo, &["--drop", "0.3", "--duplicate", "0.2", "--faults-on", "up", "--seed", seed]);
        let banner = relay.stderr.snapshot().join("\n");
        assert!(banner.contains(&format!("seed {seed})")), "the banner shows the seed: {banner}");
        let mut got = numbered_datagrams(&relay, N, 2);
        got.sort();
        got
    };
    let first = run("7");
    assert!(!lost(&first, N).is_empty() && first.windows(2).any(|w| w[0] == w[1]), "the faults did something");
    let again = run("7");
    assert_eq!(lost(&first, N), lost(&again, N), "seed 7 twice: the same datagrams lost");
    assert_eq!(first, again, "seed 7 twice: the same datagrams lost and doubled");
    let other = run("8");
    assert_ne!(lost(&first, N), lost(&other, N), "seed 8 loses other datagrams than seed 7");
}

/// The numbers below `n` that a fresh relay with `--drop 0.3 --faults-on up --seed 7` and
/// `extra` faults loses.
fn lost_with_seed_7(echo: &Server, n: u32, extra: &[&str]) -> Vec<u32> {
    let relay = udp_relay(echo, &[&["--drop", "0.3", "--faults-on", "up", "--seed", "7"], extra].concat());
    lost(&numbered_datagrams(&relay, n, 2), n)
}

#[test]
fn one_faults_setting_does_not_change_which_datagrams_another_loses() {
    const N: u32 = 300;
    let echo = udp_echo();
    let base = lost_with_seed_7(&echo, N, &[]);
    assert!(!base.is_empty());
    for extra in [&["--duplicate", "0.2"], &["--duplicate", "0.9"], &["--reorder", "0.3"], &["--delay", "5"]] {
        let other = lost_with_seed_7(&echo, N, extra);
        assert_eq!(other, base, "with {extra:?} added, seed 7 loses other datagrams");
    }
}

#[test]
fn jitter_or_a_certain_fault_does_not_change_which_datagrams_drop_loses() {
    const N: u32 = 300;
    let echo = udp_echo();
    let base = lost_with_seed_7(&echo, N, &[]);
    let changed: Vec<&[&str]> = [&["--jitter", "1"][..], &["--duplicate", "1"], &["--reorder", "1"]]
        .into_iter()
        .filter(|extra| lost_with_seed_7(&echo, N, extra) != base)
        .collect();
    assert!(changed.is_empty(), "with these added, seed 7 loses other datagrams: {changed:?}");
}

#[test]
fn a_random_seed_is_shown_and_repeats_the_run() {
    const N: u32 = 400;
    let echo = udp_echo();
    let relay = udp_relay(&echo, &["--drop", "0.3", "--faults-on", "up"]);
    let lines = relay.stderr.snapshot();
    let banner = lines.iter().find(|l| l.starts_with("sockit: relaying ")).expect("a banner");
    let seed = banner
        .rsplit_once(", seed ")
        .and_then(|(_, rest)| rest.split(')').next())
        .unwrap_or_else(|| panic!("no seed in the banner: {banner}"));
    assert!(seed.parse::<u64>().is_ok(), "seed {seed:?} in {banner}");
    let first = lost(&numbered_datagrams(&relay, N, 2), N);
    let again = udp_relay(&echo, &["--drop", "0.3", "--faults-on", "up", "--seed", seed]);
    assert_eq!(first, lost(&numbered_datagrams(&again, N, 2), N), "--seed {seed} repeats the run");
}

// ---------------------------------------------------------------------------------------------
// Faults and the idle timeout

#[test]
fn idle_timeout_waits_for_stream_data_the_delay_holds() {
    let echo = tcp_echo();
    let relay = tcp_relay(&echo.endpoint, &["--delay", "600", "--idle-timeout", "300ms"]);
    let mut s = tcp_within(&relay.addr(), PROMPT);
    let started = Instant::now();
    s.write_all(b"hello\n").unwrap();
    let (back, how) = read_until_error(&mut s);
    let took = started.elapsed();
    assert_eq!((String::from_utf8_lossy(&back).as_ref(), how), ("hello\n", None), "after {took:?}");
    assert!(took >= ms(1200 + 300), "the connection ended {took:?} after the write");
}

#[test]
fn idle_timeout_waits_for_datagrams_the_delay_holds() {
    // A target that answers 50 ms after the question (well within the idle timeout of the
    // session, counted from when the relay forwarded the question).
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target.set_read_timeout(Some(PROMPT)).unwrap();
    let target_ep = format!("udp://{}", target.local_addr().unwrap());
    let answerer = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = target.recv_from(&mut buf).expect("the question reaches the target");
        thread::sleep(ms(50));
        target.send_to(&buf[..n], from).unwrap();
    });
    let relay = Server::relay(&["udp://127.0.0.1:0", &target_ep, "--delay", "600", "--idle-timeout", "300ms"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(relay.addr()).unwrap();
    sock.set_read_timeout(Some(PROMPT)).unwrap();
    let started = Instant::now();
    sock.send(b"hello").unwrap();
    answerer.join().expect("the target failed");
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("the answer comes after both delays, idle timeout or not");
    assert_eq!(&buf[..n], b"hello");
    assert!(started.elapsed() >= ms(1140), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// Asserts a usage error from the relay itself: exit 2, one `sockit: ` line on stderr with
/// every needle, nothing on stdout, no panic.
#[track_caller]
fn assert_usage_error(ran: &Ran, needles: &[&str]) {
    let what = format!("stderr: {:?}, stdout: {:?}", ran.stderr, ran.stdout_text());
    assert!(!ran.stderr.contains("panicked"), "panic! {what}");
    assert_eq!(ran.code, Some(2), "exit code; {what}");
    assert_eq!(ran.stderr.lines().count(), 1, "one line; {what}");
    assert!(ran.stderr.starts_with("sockit: "), "{what}");
    for n in needles {
        assert!(ran.stderr.contains(n), "expected {n:?}; {what}");
    }
    assert!(ran.stdout.is_empty(), "{what}");
}

/// Asserts a usage error from the argument parser (a value a flag cannot take): exit 2 and one
/// `sockit:` line with every needle, ending with the help to see, no panic.
#[track_caller]
fn assert_parser_error(ran: &Ran, needles: &[&str]) {
    let what = format!("stderr: {:?}", ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "panic! {what}");
    assert_eq!(ran.code, Some(2), "exit code; {what}");
    assert_eq!(ran.stderr.lines().count(), 1, "expected one line; {what}");
    assert!(ran.stderr.starts_with("sockit: ") && ran.stderr.trim_end().ends_with(" --help`)"), "{what}");
    for n in needles {
        assert!(ran.stderr.contains(n), "expected {n:?}; {what}");
    }
    assert!(ran.stdout.is_empty(), "{what}");
}

#[test]
fn faults_that_do_not_fit_are_refused_before_anything_is_bound() {
    // FROM is a port this test holds: a relay that bound before checking would fail with
    // "address already in use" (exit 1) instead of the usage error.
    let held_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = held_tcp.local_addr().unwrap().to_string();
    let udp = format!("udp://{}", held_udp.local_addr().unwrap());
    let dir = temp_dir();
    let missing_log = dir.path().join("missing").join("traffic.log");
    let missing_log = missing_log.to_str().unwrap();
    let (tcp_to, udp_to) = ("127.0.0.1:9", "udp://127.0.0.1:9");

    let control = sockit_run(&["relay", &tcp, tcp_to, "--delay", "5"], b"");
    assert_eq!(control.code, Some(1), "the held port is noticed by a relay that binds: {}", control.stderr);
    assert!(control.stderr.contains("already in use"), "{}", control.stderr);

    let cases: &[(&[&str], &[&str])] = &[
        (&[&tcp, tcp_to, "--drop", "0.1"], &["--drop", "datagrams", "--reset-after"]),
        (&[&tcp, tcp_to, "--duplicate", "0.1"], &["--duplicate", "datagrams"]),
        (&[&tcp, tcp_to, "--reorder", "0.1"], &["--reorder", "datagrams"]),
        (&[&udp, udp_to, "--chunk", "7"], &["--chunk", "connections"]),
        (&[&udp, udp_to, "--reset-after", "100"], &["--reset-after", "connections"]),
        (&[&tcp, tcp_to, "--seed", "7"], &["--seed", "with a fault"]),
        (&[&tcp, tcp_to, "--faults-on", "up"], &["--faults-on", "with a fault"]),
        (&[&tcp, udp_to], &["cannot relay", "(connections)", "(datagrams)"]),
        (&[&udp, tcp_to], &["cannot relay", "(datagrams)", "(connections)"]),
        (&[&tcp, tcp_to, "--log", missing_log], &["--log", "no such file or directory"]),
    ];
    for (args, needles) in cases {
        let ran = sockit_run(&[&["relay"], *args].concat(), b"");
        assert_usage_error(&ran, needles);
    }
    assert!(!Path::new(missing_log).parent().unwrap().exists(), "--log made a directory");
}

#[test]
fn fault_values_out_of_range_are_refused_by_the_parser() {
    // FROM is held here too: nothing may be bound (a relay that bound would exit 1).
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let from = held.local_addr().unwrap().to_string();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_from = format!("udp://{}", udp.local_addr().unwrap());
    let cases: &[(&[&str], &[&str])] = &[
        (&[&udp_from, "udp://127.0.0.1:9", "--drop", "1.5"], &["--drop", "probability"]),
        (&[&udp_from, "udp://127.0.0.1:9", "--drop", "101%"], &["--drop", "probability"]),
        (&[&udp_from, "udp://127.0.0.1:9", "--drop=-1"], &["--drop", "probability"]),
        // The parser takes a bare `-1` for a flag, and says so; still a usage error.
        (&[&udp_from, "udp://127.0.0.1:9", "--drop", "-1"], &["'-1'"]),
        (&[&udp_from, "udp://127.0.0.1:9", "--reorder", "often"], &["--reorder", "probability"]),
        (&[&from, "127.0.0.1:9", "--delay=-5"], &["--delay", "milliseconds"]),
        (&[&from, "127.0.0.1:9", "--delay", "-5"], &["'-5'"]),
        (&[&from, "127.0.0.1:9", "--delay", "soon"], &["--delay", "not a duration"]),
        (&[&from, "127.0.0.1:9", "--jitter", "NaN"], &["--jitter"]),
        (&[&from, "127.0.0.1:9", "--rate", "0"], &["--rate", "must be from 1 byte"]),
        (&[&from, "127.0.0.1:9", "--chunk", "0"], &["--chunk", "must be from 1 byte"]),
        (&[&from, "127.0.0.1:9", "--reset-after", "lots"], &["--reset-after", "not a size"]),
        (&[&from, "127.0.0.1:9", "--delay", "5", "--faults-on", "sideways"], &["--faults-on", "not a direction"]),
    ];
    for (args, needles) in cases {
        let ran = sockit_run(&[&["relay"], *args].concat(), b"");
        assert_parser_error(&ran, needles);
    }
}
