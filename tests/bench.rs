//! `sockit bench` against real sockit servers, with short runs: every mode produces sane
//! figures, every answer is checked, and bad input is refused. These check function, not
//! speed: performance is measured by bench/compare and written down in BENCHMARKS.md.

mod support;
use std::io::{Read, Write};

use serde_json::Value;
use support::*;

/// Runs `sockit bench ARGS… --json` and returns the parsed result.
fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let ran = sockit_run(&all, b"");
    assert_eq!(ran.code, Some(0), "bench {args:?} failed: {}", ran.stderr);
    serde_json::from_slice(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.stdout_text()))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

#[test]
fn echo_closed_loop_checks_answers_and_reports_latency() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let r = bench(&[&server.endpoint, "-c", "4", "--size", "100", "-d", "400ms", "--interval", "100ms"]);
    assert_eq!(r["mode"], "echo");
    assert!(num(&r, "requests") > 10.0, "{r}");
    assert_eq!(num(&r, "errors"), 0.0);
    assert_eq!(num(&r, "bytes"), num(&r, "requests") * 100.0);
    let lat = &r["latency_us"];
    assert!(num(lat, "p50") > 0.0 && num(lat, "p50") <= num(lat, "p99") && num(lat, "p99") <= num(lat, "max"));
    assert!(r["intervals"].as_array().unwrap().len() >= 3, "{r}");
}

/// A message larger than the socket buffers both ways hold: the generator reads the answer
/// while it writes, as the echo sends the start back before the end arrived. Writing all of it
/// first deadlocked from about 8 MiB ("no answer within 5s").
#[test]
fn echo_messages_larger_than_the_socket_buffers_come_back_whole() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    // One request a second, so that the test does not load the machine for the others; 3 s is
    // long enough for a debug build on a loaded machine to move 2 × 12 MiB at least once.
    let r = bench(&[&server.endpoint, "-c", "1", "--size", "12M", "--rate", "1", "-d", "3s"]);
    assert!(num(&r, "requests") >= 1.0, "{r}");
    assert_eq!(num(&r, "errors"), 0.0, "{r}");
}

#[test]
fn echo_open_loop_keeps_to_the_rate() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let r = bench(&[&server.endpoint, "-c", "2", "--rate", "1000", "-d", "500ms"]);
    let n = num(&r, "requests");
    // 1000/s for half a second: about 500, never more.
    assert!((300.0..=501.0).contains(&n), "requests {n}");
}

#[test]
fn echo_detects_a_server_that_answers_wrongly() {
    // `upper` changes the lower-case letters in the benchmark's messages.
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let ran = sockit_run(&["bench", &server.endpoint, "-c", "2", "-d", "300ms"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("the answer differs from the message sent"), "{}", ran.stderr);
    assert!(ran.stderr.contains("(hint: echo needs an `echo` server, e.g. `sockit serve "), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

#[test]
fn echo_over_unix_seqpacket() {
    let dir = temp_dir();
    let ep = format!("unix-seqpacket:{}/e.sock", dir.path().display());
    let _server = Server::start(&[&ep, "echo"]);
    let r = bench(&[&ep, "-c", "2", "-d", "300ms"]);
    assert!(num(&r, "requests") > 10.0 && num(&r, "errors") == 0.0, "{r}");
}

#[test]
fn echo_holds_idle_connections_while_measuring() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let r = bench(&[&server.endpoint, "-c", "1", "--hold", "300", "-d", "300ms"]);
    assert_eq!(r["hold"]["established"], 300, "{r}");
    assert!(r["hold"]["error"].is_null(), "{r}");
    assert!(num(&r, "requests") > 10.0);
}

#[test]
fn bulk_into_discard_and_out_of_source() {
    let sink = Server::start(&["127.0.0.1:0", "discard"]);
    let r = bench(&[&sink.endpoint, "bulk", "-P", "2", "-d", "300ms"]);
    assert!(num(&r, "gbit_per_s") > 0.01 && num(&r, "bytes") > 0.0, "{r}");
    assert_eq!(num(&r, "streams"), 2.0);
    assert!(r["latency_us"].is_null());
    let done = sink.stop();
    // The server saw what the benchmark says it sent (it counts bytes, the bench counts writes
    // accepted by the kernel, which all arrive before the close).
    let summary = done.stderr.iter().find(|l| l.starts_with("sockit: stopped")).cloned().unwrap_or_default();
    assert!(summary.contains("2 connections"), "{summary}");

    let source = Server::start(&["127.0.0.1:0", "source"]);
    let r = bench(&[&source.endpoint, "bulk", "--reverse", "-d", "300ms"]);
    assert!(num(&r, "gbit_per_s") > 0.01, "{r}");
}

#[test]
fn connect_rate_opens_a_connection_per_exchange() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let r = bench(&[&server.endpoint, "connect", "-c", "4", "-d", "300ms"]);
    let n = num(&r, "requests");
    assert!(n > 10.0 && num(&r, "errors") == 0.0, "{r}");
    let done = server.stop();
    let logged = done.stderr.iter().filter(|l| l.contains("closed by client")).count() as f64;
    assert!(logged >= n, "{logged} connections logged, {n} counted");
}

#[test]
fn udp_rate_and_loss_against_a_datagram_echo() {
    let server = Server::start(&["udp://127.0.0.1:0", "echo"]);
    let r = bench(&[&server.endpoint, "udp", "-c", "2", "-d", "300ms"]);
    let udp = &r["udp"];
    assert!(num(udp, "sent") > 10.0 && num(udp, "received") > 0.0, "{r}");
    assert!(num(udp, "loss") < 0.5, "{r}");
    assert_eq!(num(&r, "errors"), 0.0);
    // Without --json, the summary names what -c counts here: sockets, not connections.
    let ran = sockit_run(&["bench", &server.endpoint, "udp", "-c", "2", "-d", "200ms"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let first = ran.stdout_text().lines().next().unwrap_or_default().to_owned();
    assert!(first.ends_with(", 2 sockets, 64 B datagrams"), "{first}");

    let dir = temp_dir();
    let ep = format!("unix-dgram:{}/d.sock", dir.path().display());
    let _unix = Server::start(&[&ep, "echo"]);
    let r = bench(&[&ep, "udp", "-c", "1", "--rate", "500", "-d", "300ms"]);
    assert!(num(&r["udp"], "received") > 50.0, "{r}");
}

#[test]
fn bench_refuses_modes_that_do_not_fit_the_endpoint() {
    let cases: &[(&[&str], &str)] = &[
        (&["127.0.0.1:9", "udp"], "udp mode needs a datagram endpoint"),
        (&["udp://127.0.0.1:9", "echo"], "need a connected endpoint"),
        (&["udp://127.0.0.1:9", "udp", "--size", "8"], "at least 16"),
        (&["127.0.0.1:9", "--rate", "0"], "the rate must be at least 0.001 per second"),
        (&["127.0.0.1:9", "bulk", "--hold", "5"], "holding idle connections is for the echo mode"),
        (&["127.0.0.1:9", "-d", "0s"], "--duration must be longer than zero"),
        (&["127.0.0.1:9", "sideways"], "invalid value 'sideways'"),
        // Options for another mode are pointed out, not ignored.
        (&["127.0.0.1:9", "-P", "4"], "-P applies to bulk; echo, connect and udp take -c (this is echo)"),
        (&["127.0.0.1:9", "--reverse"], "--reverse applies to bulk (this is echo)"),
        (&["127.0.0.1:9", "bulk", "-c", "4"], "-c applies to echo, connect and udp; bulk takes -P (this is bulk)"),
        (&["127.0.0.1:9", "connect", "--rate", "10"], "--rate applies to echo and udp (this is connect)"),
        (&["127.0.0.1:9", "--interval", "0s"], "--interval must be at least 100ms"),
        // Messages are held in memory, and must be answered within the request timeout.
        (&["127.0.0.1:9", "-s", "65M"], "echo and connect messages are at most 64 MiB"),
        (&["127.0.0.1:9", "connect", "-s", "64M", "-c", "17"], "the size times the connections must be at most 1 GiB"),
        (&["nonsense"], "invalid endpoint"),
    ];
    for (args, want) in cases {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let ran = sockit_run(&all, b"");
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(want), "{args:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"));
    }
}

#[test]
fn bench_against_nothing_is_a_runtime_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Every mode in the same words (connect said "Connection refused (os error 111)").
    for mode in ["echo", "connect", "bulk"] {
        let ran = sockit_run(&["bench", &format!("127.0.0.1:{port}"), mode, "-d", "200ms"], b"");
        assert_eq!(ran.code, Some(1), "{mode}: {}", ran.stderr);
        assert!(ran.stderr.contains("nothing is listening"), "{mode}: {}", ran.stderr);
        assert_eq!(ran.stderr.lines().count(), 1, "{mode}: {}", ran.stderr);
    }
}

// A server of the wrong kind is a one-line error with a hint and exit status 1, never a table
// of zeros: each case below once printed figures and exited 0.

/// Runs `sockit bench ARGS…`, which must fail with one line on stderr that holds every string
/// of `want`, and nothing on stdout (with `--json` too: a failed run has no figures).
fn bench_fails(args: &[&str], want: &[&str]) {
    for json in [false, true] {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        if json {
            all.push("--json");
        }
        let ran = sockit_run(&all, b"");
        assert_eq!(ran.code, Some(1), "{all:?}: {} / {}", ran.stdout_text(), ran.stderr);
        for w in want {
            assert!(ran.stderr.contains(w), "{all:?}: want '{w}' in {}", ran.stderr);
        }
        assert_eq!(ran.stderr.lines().count(), 1, "{all:?}: {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{all:?}: {}", ran.stdout_text());
    }
}

#[test]
fn bulk_reverse_from_a_server_that_sends_nothing_is_an_error() {
    for service in ["discard", "echo"] {
        let server = Server::start(&["127.0.0.1:0", service]);
        bench_fails(
            &[&server.endpoint, "bulk", "--reverse", "-d", "1s"],
            // (How long "nothing" lasted is measured: 1s, or more on a loaded machine.)
            &["bulk: the server sent nothing in ", "hint: --reverse needs a `source` server", "source`"],
        );
    }
}

/// Streams into a server that accepts and closes at once: the first writes fill the socket
/// buffers, so some bytes count as sent, but every stream fails. It printed 0.00 Gbit/s and
/// exited 0.
#[test]
fn bulk_where_every_stream_fails_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Closes each connection unread (a reset to the sender), for both runs of bench_fails.
        for c in listener.incoming().take(6) {
            drop(c);
        }
    });
    bench_fails(&[&endpoint, "bulk", "-P", "3", "-d", "2s"], &["every connection failed; the last error:"]);
}

#[test]
fn bulk_into_a_server_that_sends_back_is_an_error() {
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let started = std::time::Instant::now();
    bench_fails(
        &[&echo.endpoint, "bulk", "-P", "2", "-d", "5s"],
        &["bulk: the server echoes what it gets", "hint: bulk needs a `discard` server"],
    );
    // Found as the first bytes come back, not at the end of the run (twice: with --json too).
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());

    let source = Server::start(&["127.0.0.1:0", "source"]);
    bench_fails(
        &[&source.endpoint, "bulk", "-d", "1s"],
        &["bulk: the server sends data of its own", "bulk needs a `discard` server", "--reverse reads from a `source`"],
    );
}

#[test]
fn bulk_into_a_server_that_stops_reading_is_an_error() {
    // Listening sockets that never accept: the kernel takes the connection and a receive
    // buffer's worth of bytes, then the stream stands still.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", tcp.local_addr().unwrap().port());
    bench_fails(&[&ep, "bulk", "-d", "3s"], &["bulk: the stream took no bytes for", "reads very slowly", "discard"]);

    let dir = temp_dir();
    let path = dir.path().join("still.sock");
    let _unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let ep = format!("unix:{}", path.display());
    bench_fails(&[&ep, "bulk", "-d", "3s"], &["bulk: the stream took no bytes for"]);
}

/// A server at its --max-conns turns the extra streams away with a line: that is a busy server,
/// not one of the wrong kind, and the streams it took are measured.
#[test]
fn a_busy_notice_is_not_taken_for_the_wrong_kind_of_server() {
    let discard = Server::start(&["127.0.0.1:0", "discard", "--max-conns", "1"]);
    let ran = sockit_run(&["bench", &discard.endpoint, "bulk", "-P", "3", "-d", "1s"], b"");
    assert!(!ran.stderr.contains("sends data of its own"), "{}", ran.stderr);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Every connection turned away: the run fails with the server's own reason.
    let echo = Server::start(&["127.0.0.1:0", "echo", "--max-conns", "1"]);
    // Held, and answered once: the server has taken it.
    let mut held = std::net::TcpStream::connect(echo.addr()).unwrap();
    held.write_all(b"x").unwrap();
    held.read_exact(&mut [0u8; 1]).unwrap();
    let ran = sockit_run(&["bench", &echo.endpoint, "connect", "-c", "1", "-d", "1s"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("server busy"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("every answer differs"), "{}", ran.stderr);
    drop(held);
    // Echo, one of two connections turned away with messages shorter than the notice: the
    // other measures for the whole run (a wrong answer on one connection once ended the run
    // for all, with exit status 0).
    let one = Server::start(&["127.0.0.1:0", "echo", "--max-conns", "1"]);
    let r = bench(&[&one.endpoint, "-c", "2", "-s", "8", "-d", "1s"]);
    assert!(num(&r, "duration_s") > 0.9, "{r}");
    assert_eq!(num(&r, "errors"), 1.0, "{r}");
    assert!(num(&r, "requests") > 0.0, "{r}");
}

#[test]
fn echo_against_a_server_that_answers_nothing_names_the_server_it_needs() {
    let discard = Server::start(&["127.0.0.1:0", "discard"]);
    let ran = sockit_run(&["bench", &discard.endpoint, "echo", "-c", "1", "-d", "1s"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("echo: no answer within 5s (hint: echo needs an `echo` server"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

#[test]
fn connect_against_a_server_that_does_not_echo_is_an_error() {
    // A source server's stream once matched the benchmark's message byte for byte.
    let source = Server::start(&["127.0.0.1:0", "source"]);
    bench_fails(
        &[&source.endpoint, "connect", "-c", "2", "-d", "1s"],
        &["connect: every answer differs from the message sent", "hint: connect needs an `echo` server"],
    );
    let discard = Server::start(&["127.0.0.1:0", "discard"]);
    let ran = sockit_run(&["bench", &discard.endpoint, "connect", "-c", "1", "-d", "1s"], b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("connect: no answer within 5s (hint: connect needs an `echo` server"),
        "{}",
        ran.stderr
    );
}

#[test]
fn udp_against_a_server_that_does_not_answer_is_an_error() {
    let discard = Server::start(&["udp://127.0.0.1:0", "discard"]);
    bench_fails(
        &[&discard.endpoint, "udp", "-c", "2", "-d", "1s"],
        &["udp: not one of", "datagrams was answered", "hint: udp needs a datagram `echo` server"],
    );
    // A port with nothing on UDP (a TCP server's, say) refuses the datagrams.
    let tcp_only = Server::start(&["127.0.0.1:0", "echo"]);
    bench_fails(
        &[&format!("udp://{}", tcp_only.addr()), "udp", "-c", "2", "-d", "1s"],
        &["cannot connect to udp://", "nothing is listening there"],
    );
}
