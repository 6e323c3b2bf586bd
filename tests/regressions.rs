//! Regression tests, each named after a bug found in review: the trigger that exposed it, and
//! the behaviour that is right.

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// A `unix-dgram` client that stops reading fills its receive queue; the server used to wait
/// for room there and stop answering everyone.
#[test]
fn a_unix_dgram_client_that_never_reads_does_not_freeze_the_server() {
    let dir = temp_dir();
    let path = dir.path().join("d.sock");
    let server = Server::start(&[&format!("unix-dgram:{}", path.display()), "echo"]);
    let deaf = UnixDatagram::bind(dir.path().join("deaf.sock")).unwrap();
    for _ in 0..200 {
        deaf.send_to(b"answer me, I will not read", &path).unwrap();
    }
    let good = UnixDatagram::bind(dir.path().join("good.sock")).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    good.send_to(b"hello", &path).unwrap();
    let mut buf = [0u8; 64];
    let n = good.recv(&mut buf).expect("the server still answers others");
    assert_eq!(&buf[..n], b"hello");
    server
        .stderr
        .wait_for("a note about dropped answers", |l| l.contains("dropped: the peer's receive queue was full"));
    let done = server.stop();
    assert!(done.status.success());
}

/// `connect` sent a line and waited for room before reading answers; with a server that was
/// itself waiting to send answers, both sides stopped for good.
#[test]
fn a_pipe_keeps_reading_answers_while_it_sends() {
    let dir = temp_dir();
    let ep = format!("unix-dgram:{}/d.sock", dir.path().display());
    let _server = Server::start(&[&ep, "echo"]);
    let input: Vec<u8> = (0..30_000).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    let ran = run_within(sockit().args(["connect", &ep, "--timeout", "1s"]), &input, Duration::from_secs(60))
        .expect("the pipe finished");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(!ran.stdout.is_empty());

    // The same over a stream: a long answer to every line, more than the socket buffers hold.
    let long = "x".repeat(4096);
    let server = Server::start(&["127.0.0.1:0", "reply", &long, "--framing", "line"]);
    let lines = "q\n".repeat(2000);
    let ran = run_within(sockit().args(["connect", &server.addr(), "--framing", "line"]), lines.as_bytes(), LIMIT)
        .expect("the pipe finished");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.len(), 2000 * 4097);
}

/// `eprintln!` panicked once stderr was a closed pipe (`sockit serve … 2>&1 | head -1`); the
/// signal task died with it and Ctrl-C was ignored from then on.
#[test]
fn a_server_with_a_closed_stderr_still_stops_on_sigint() {
    let mut child = sockit()
        .args(["serve", "127.0.0.1:0", "echo"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while !banner.ends_with(b"\n") {
        assert_eq!(err.read(&mut byte).unwrap(), 1, "the server exited before its banner");
        banner.push(byte[0]);
    }
    let banner = String::from_utf8(banner).unwrap();
    let addr = banner.split("tcp://").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    drop(err); // The reader goes away, as `head -1` does.
    // A connection makes the server log to the closed stderr.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("the server stopped on SIGINT");
    assert!(status.success(), "{status:?}");
}

/// A Unix connect to a listener with a full queue blocked the thread in the kernel, out of
/// reach of `--connect-timeout`.
#[test]
fn connect_timeout_holds_when_a_unix_listen_queue_is_full() {
    let dir = temp_dir();
    let ep = format!("unix:{}/s.sock", dir.path().display());
    let server = Server::start(&[&ep, "echo", "--backlog", "1"]);
    server.signal(libc::SIGSTOP);
    let started = Instant::now();
    let mut last = None;
    for _ in 0..4 {
        let ran = run_within(
            sockit().args(["send", &ep, "hi", "--connect-timeout", "500ms", "--timeout", "300ms"]),
            b"",
            Duration::from_secs(10),
        )
        .expect("send gave up by itself");
        last = Some(ran);
    }
    server.signal(libc::SIGCONT);
    let last = last.unwrap();
    assert_eq!(last.code, Some(1), "{}", last.stderr);
    assert!(last.stderr.contains("timed out") || last.stderr.contains("no answer"), "{}", last.stderr);
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Packets over the 64 KiB receive buffer were cut short without a word.
#[test]
fn an_oversized_seqpacket_packet_is_a_protocol_error() {
    let dir = temp_dir();
    let path = dir.path().join("q.sock");
    let server = Server::start(&[&format!("unix-seqpacket:{}", path.display()), "echo"]);
    let code = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(sys.argv[1])
s.send(b"x" * 100000)
print(repr(s.recv(200000)))
"#;
    let ran = python(code, &[path.to_str().unwrap()], b"");
    assert_eq!(ran.stdout_text().trim(), "b''", "{}", ran.stderr);
    server.stderr.wait_for("the protocol error", |l| l.contains("packet larger than the 65536-byte maximum"));
}

/// A raw chunk of newlines to a `reply` with a long text built every answer in memory before
/// writing any (8 KiB of newlines times the text). Answers are now written out whenever 64 KiB
/// pile up; this checks that they still all arrive, whole and in order, through that path.
#[test]
fn many_lines_to_a_long_reply_are_all_answered() {
    let long = "y".repeat(10_000);
    let server = Server::start(&["127.0.0.1:0", "reply", &long]);
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&[b'\n'; 5000]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 5000 * 10_001);
    assert!(all.chunks(10_001).all(|a| a[..10_000].iter().all(|&b| b == b'y') && a[10_000] == b'\n'));
}

/// `connect` buffered an input line of any length; now a line over `--max-frame` is refused.
#[test]
fn an_input_line_over_max_frame_is_refused() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let line = format!("{}\n", "z".repeat(100));
    let ran = sockit_run(&["connect", &server.addr(), "--framing", "len", "--max-frame", "16"], line.as_bytes());
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("longer than the 16-byte limit"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

/// A failure to read stdin was swallowed: the server never saw the end of input and the pipe
/// hung, or exited 0.
#[test]
fn an_unreadable_input_is_an_error() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let dir = temp_dir();
    let stdin = std::fs::File::open(dir.path()).unwrap(); // a directory: read() fails with EISDIR
    let mut child = sockit()
        .args(["connect", &server.addr()])
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("connect ended by itself");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read input"), "{err}");
}

/// A message too large for `--max-frame` was reported as "connection failed".
#[test]
fn a_message_too_large_to_send_says_so() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let ran = sockit_run(&["send", &server.addr(), "more than ten", "--framing", "len", "--max-frame", "10"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("cannot send: frame of 13 bytes exceeds the maximum of 10 bytes"), "{}", ran.stderr);
    assert!(ran.stderr.contains("--max-frame"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("connection failed"), "{}", ran.stderr);
}

/// A UDP message longer than a datagram was "connection failed: Message too long".
#[test]
fn a_message_too_long_for_a_datagram_says_so() {
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ep = format!("udp://{}", quiet.local_addr().unwrap());
    let ran = sockit_run(&["send", &ep, &"a".repeat(70_000)], b"");
    assert_fails(&ran, 1, &["longer than one datagram can carry", "65,507"]);
    assert!(!ran.stderr.contains("connection failed"), "{}", ran.stderr);
}

/// Durations too large to add to a clock panicked every connection (`--idle-timeout 1e19`).
#[test]
fn absurd_durations_are_usage_errors() {
    for args in [
        &["serve", "127.0.0.1:0", "--idle-timeout", "1e19"][..],
        &["bench", "127.0.0.1:9", "-d", "1e19"],
        &["bench", "127.0.0.1:9", "--rate", "1e-20"],
    ] {
        let ran = sockit_run(args, b"");
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{args:?}: {}", ran.stderr);
    }
}

/// `connect` sends an empty line as a zero-length packet; the server took such a packet for the
/// client's close whenever the client had already shut down its side (`POLLRDHUP`), with the
/// rest of the input still queued, and dropped it. The client made the same mistake with an
/// empty answer after the server closed, so the loss could end in exit status 0.
#[test]
fn empty_lines_over_unix_seqpacket_do_not_lose_the_rest_of_the_input() {
    let dir = temp_dir();
    let ep = format!("unix-seqpacket:{}/sp.sock", dir.path().display());
    let _server = Server::start(&[&ep, "echo"]);
    let input: Vec<u8> = (0..5_000).flat_map(|i| format!("line{i}\n\n").into_bytes()).collect();
    for _ in 0..2 {
        let ran = run(sockit().args(["connect", &ep]), &input);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(ran.stdout.len(), input.len(), "{}", ran.stderr);
        assert!(ran.stdout == input, "the echoed bytes differ");
    }
    // Trailing empty lines are the last packets before the half-close, and the last answers
    // before the server's close.
    let ran = run(sockit().args(["connect", &ep]), b"a\n\n\n\n");
    assert_eq!((ran.code, ran.stdout_text().as_str()), (Some(0), "a\n\n\n\n"), "{}", ran.stderr);
}

/// Random binary input over `unix-seqpacket` was cut to half, at times with exit status 0: its
/// runs of newlines are empty lines, so empty packets.
#[test]
fn binary_input_over_unix_seqpacket_comes_back_byte_exact() {
    let dir = temp_dir();
    let ep = format!("unix-seqpacket:{}/sp.sock", dir.path().display());
    let _server = Server::start(&[&ep, "echo"]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut input: Vec<u8> = (0..100_000)
        .map(|_| {
            // xorshift64*, with newlines made common so that runs of them are many.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
            if r < 16 { b'\n' } else { r }
        })
        .collect();
    // Each line is a message and comes back with a newline: the input ends with one, so the
    // output is the input exactly.
    input.push(b'\n');
    for _ in 0..3 {
        let ran = run(sockit().args(["connect", &ep]), &input);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(ran.stdout.len(), input.len(), "{}", ran.stderr);
        assert!(ran.stdout == input, "the echoed bytes differ");
    }
}

/// The server side alone: packets queued behind an empty one when the client shuts down are
/// still answered, and the empty ones are messages (`qa` answers them with its default).
#[test]
fn a_unix_seqpacket_server_answers_every_packet_queued_before_the_close() {
    let dir = temp_dir();
    let path = dir.path().join("q.sock");
    let _server = Server::start(&[&format!("unix-seqpacket:{}", path.display()), "qa"]);
    let code = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)
s.connect(sys.argv[1])
for q in [b"how are u", b"", b"", b"how are u", b""] * 20:
    s.send(q)
s.shutdown(socket.SHUT_WR)
answers = []
while True:
    a = s.recv(1024)
    if not a:
        break
    answers.append(a)
print(len(answers), answers[:5])
"#;
    let ran = python(code, &[path.to_str().unwrap()], b"");
    assert_eq!(ran.stdout_text().trim(), "100 [b'fine', b'no', b'no', b'fine', b'no']", "{}", ran.stderr);
}

/// Empty lines on datagram sockets are empty datagrams, a message each, never an end.
#[test]
fn empty_lines_over_datagram_sockets_are_messages() {
    let dir = temp_dir();
    let unix = Server::start(&[&format!("unix-dgram:{}/d.sock", dir.path().display()), "echo"]);
    let udp = Server::start(&["udp://127.0.0.1:0", "echo"]);
    for ep in [unix.endpoint.clone(), udp.endpoint.clone()] {
        let ran = run(sockit().args(["connect", &ep, "--timeout", "1s"]), b"a\n\nb\n\n\n");
        assert_eq!((ran.code, ran.stdout_text().as_str()), (Some(0), "a\n\nb\n\n\n"), "{ep}: {}", ran.stderr);
    }
}

/// `seq 1 1000 | sockit connect udp://…` to an echo server got exactly 256 answers: the burst
/// outran the default receive queues (256 small datagrams), the client's and the server's.
/// Both now ask for a 4 MiB queue; the kernel grants it up to `net.core.rmem_max`.
#[test]
fn a_burst_of_a_thousand_datagrams_gets_every_answer() {
    let rmem_max: usize =
        std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if rmem_max < sockit::net::UDP_RECV_BUFFER {
        eprintln!("skipping: net.core.rmem_max is {rmem_max}, below the 4 MiB this burst needs");
        return;
    }
    let udp = Server::start(&["udp://127.0.0.1:0", "echo"]);
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let ran = run(sockit().args(["connect", &udp.endpoint, "--timeout", "2s"]), input.as_bytes());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let mut got: Vec<u32> = ran.stdout_text().lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=1000).collect::<Vec<u32>>(), "{} answers", got.len());
}

/// The relay read a zero-length packet the same way, as the end when the client had shut down,
/// and dropped what was queued behind it.
#[test]
fn a_unix_seqpacket_relay_passes_empty_packets_and_what_follows_them() {
    let dir = temp_dir();
    let target = format!("unix-seqpacket:{}/t.sock", dir.path().display());
    let front = format!("unix-seqpacket:{}/r.sock", dir.path().display());
    let _server = Server::start(&[&target, "echo"]);
    let _relay = Server::relay(&[&front, &target]);
    let input: Vec<u8> = (0..5_000).flat_map(|i| format!("line{i}\n\n").into_bytes()).collect();
    for _ in 0..2 {
        let ran = run(sockit().args(["connect", &front]), &input);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(ran.stdout.len(), input.len(), "{}", ran.stderr);
        assert!(ran.stdout == input, "the relayed bytes differ");
    }
}

/// `send` to a server that never stops (`source`) kept the whole answer in memory until the
/// timeout (4.4 GB in one run) and printed nothing before it. The answer now streams out as
/// it comes: the first bytes are there long before the timeout, and the timeout still ends it.
#[test]
fn send_streams_an_endless_answer_instead_of_keeping_it() {
    let server = Server::start(&["127.0.0.1:0", "source"]);
    let started = Instant::now();
    let mut child = sockit()
        .args(["send", &server.addr(), "hi", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 4096];
    out.read_exact(&mut first).expect("the answer's first bytes");
    assert!(started.elapsed() < Duration::from_secs(10), "first bytes after {:?}", started.elapsed());
    assert_eq!(first[..4], [0, 1, 2, 3], "source's pattern");
    // Closing our end of the pipe ends it, quietly.
    drop(out);
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("send ends when its reader goes");
    assert!(status.success(), "{status:?}");
}
