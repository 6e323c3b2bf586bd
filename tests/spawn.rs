//! The `spawn` service end to end, with the real binary on real sockets: `sockit serve … spawn --
//! PROG ARGS…` with clients that speak raw bytes (Rust sockets, `nc -U`, Python) on a Unix socket
//! without a token, and `sockit connect --token-file` / `--auth` on TCP with one.
//!
//! Covered: bytes both ways, byte-exact; half-closes both ways; authentication (no token on TCP
//! refused at start, wrong tokens, raw garbage, other uids, nothing started before a client is
//! in); what the program inherits (fds, signals, process group, environment); a client that goes
//! away, the time limit, the idle timeout, shutdown, the program exiting or vanishing; many clients
//! at once; a busy server, with and without a token.
//!
//! Every server listens on port 0 or on a path in a fresh temporary directory; every wait is
//! bounded; sleeps are only the programs' own, never a wait for readiness.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `spawn` server on a Unix socket without a token, in a fresh directory.
struct UnixSpawn {
    server: Server,
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl UnixSpawn {
    /// `sockit serve unix:DIR/s.sock spawn OPTIONS… -- PROG…`.
    fn start(options: &[&str], prog: &[&str]) -> UnixSpawn {
        UnixSpawn::start_with(options, prog, |_| {})
    }

    fn start_with(options: &[&str], prog: &[&str], prepare: impl FnOnce(&mut Command)) -> UnixSpawn {
        let dir = temp_dir();
        let path = dir.path().join("s.sock");
        let endpoint = format!("unix:{}", s(&path));
        let mut args = vec![endpoint.as_str(), "spawn"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(prog);
        let mut cmd = serve_cmd(&args);
        prepare(&mut cmd);
        UnixSpawn { server: Server::start_cmd(cmd), dir, path }
    }

    fn endpoint(&self) -> String {
        format!("unix:{}", s(&self.path))
    }

    /// A connected client socket with every wait bounded.
    fn connect(&self) -> UnixStream {
        let c = UnixStream::connect(&self.path).expect("connect");
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.set_write_timeout(Some(LIMIT)).unwrap();
        c
    }

    /// Sends `input`, half-closes, and returns everything until the server closes.
    fn exchange(&self, input: &[u8]) -> Vec<u8> {
        let mut c = self.connect();
        c.write_all(input).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        read_all(&mut c)
    }
}

/// Reads until the end of the stream, failing the test on anything else.
fn read_all(r: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap_or_else(|e| panic!("reading to the end: {e}; got {all:?}"));
    all
}

/// A `spawn` server on 127.0.0.1 with a fresh token file.
struct TcpSpawn {
    server: Server,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl TcpSpawn {
    fn start(options: &[&str], prog: &[&str]) -> TcpSpawn {
        let dir = temp_dir();
        let token_file = write_token(dir.path(), "token", &fresh_token(), 0o600);
        let mut args = vec!["127.0.0.1:0", "spawn", "--token-file", s(&token_file)];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(prog);
        TcpSpawn { server: Server::start_cmd(serve_cmd(&args)), dir, token_file }
    }

    /// `sockit connect ADDR --token-file TOKEN` with no token in the environment.
    fn connect(&self, token_file: &Path) -> Command {
        let mut c = sockit();
        c.env_remove(TOKEN_ENV).args(["connect", &self.server.addr(), "--token-file", s(token_file)]);
        c
    }
}

/// Asserts a clean run: exit 0, `stdout` exactly, nothing on stderr.
#[track_caller]
fn assert_ok(ran: &Ran, stdout: &[u8]) {
    let what = format!("stdout {:?}, stderr {:?}", ran.stdout_text(), ran.stderr);
    assert_eq!(ran.code, Some(0), "{what}");
    assert!(ran.stdout == stdout, "{what}; wanted {:?}", String::from_utf8_lossy(stdout));
    assert_eq!(ran.stderr, "", "{what}");
}

/// Whether nothing whose command line holds `marker` runs any more, except the server whose
/// command line it is (and zombies).
fn all_gone(server: &Server, marker: &str) -> bool {
    processes().iter().all(|p| p.state == 'Z' || p.pid == server.pid() || !p.cmdline.contains(marker))
}

/// Waits until the server's log has a line containing every needle.
fn logged(server: &Server, needles: &[&str]) -> String {
    server.stderr.wait_for(&format!("with {needles:?}"), |l| needles.iter().all(|n| l.contains(n)))
}

// ---------------------------------------------------------------------------------------------
// 1. Raw bytes, without a token, on a Unix socket

#[test]
fn a_unix_client_without_a_token_gets_the_programs_output() {
    let srv = UnixSpawn::start(&[], &["tr", "a-z", "A-Z"]);
    assert_eq!(srv.exchange(b"hello, world\n"), b"HELLO, WORLD\n");
    // Each client its own process: a second one starts from scratch.
    assert_eq!(srv.exchange(b"again"), b"AGAIN");
    logged(&srv.server, &["13 B in, 13 B out", "session ended"]);
}

#[test]
fn bytes_pass_both_ways_unchanged() {
    let srv = UnixSpawn::start(&[], &["cat"]);
    // Every byte value, several chunks' worth, through sockit connect's pipe.
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let r = run(sockit().args(["connect", &srv.endpoint()]), &input);
    assert_eq!(r.code, Some(0), "stderr {:?}", r.stderr);
    assert_eq!(r.stdout.len(), input.len());
    assert!(r.stdout == input, "cat's output differs from its input");
}

#[test]
fn a_half_close_ends_the_programs_input_and_its_output_still_arrives() {
    let srv =
        UnixSpawn::start(&[], &["sh", "-c", "n=$(wc -c | tr -d ' '); sleep 0.2; echo \"got $n bytes, then EOF\""]);
    assert_eq!(srv.exchange(b"12345"), b"got 5 bytes, then EOF\n");
}

#[test]
fn the_program_closing_its_output_half_closes_the_connection() {
    // The program shuts its stdout and goes on reading: the client reads the end of the stream
    // while what it sends still reaches the program.
    let dir = temp_dir();
    let got = dir.path().join("got");
    let srv = UnixSpawn::start(&[], &["sh", "-c", "echo bye; exec >&-; cat > \"$0\"", s(&got)]);
    let mut c = srv.connect();
    assert_eq!(read_all(&mut c), b"bye\n", "the output ended with the program's stdout");
    c.write_all(b"still flowing").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    logged(&srv.server, &["13 B in, 4 B out", "session ended"]);
    assert_eq!(std::fs::read(&got).unwrap(), b"still flowing");
}

#[test]
fn nc_is_a_client() {
    require!("nc");
    let srv = UnixSpawn::start(&[], &["tr", "a-z", "A-Z"]);
    let r = run(Command::new("nc").args(["-U", "-N", s(&srv.path)]), b"from nc\n");
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "FROM NC\n"), "stderr {:?}", r.stderr);
}

#[test]
fn a_python_client_talks_to_cat() {
    require!("python3");
    let srv = UnixSpawn::start(&[], &["cat"]);
    // What a program written from PROTOCOL.md section 9 does: connect, send, half-close, read.
    let code = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b"line one\n\x00\xffline two\n")
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
sys.stdout.write(repr(got))
"#;
    let r = python(code, &[s(&srv.path)], b"");
    assert_eq!(r.code, Some(0), "{:?}", r.stderr);
    assert_eq!(r.stdout_text(), r"b'line one\n\x00\xffline two\n'");
}

// ---------------------------------------------------------------------------------------------
// 2. A token, on TCP

#[test]
fn tcp_with_a_token_through_sockit_connect() {
    let srv = TcpSpawn::start(&[], &["tr", "a-z", "A-Z"]);
    assert_ok(&run(&mut srv.connect(&srv.token_file), b"through the handshake\n"), b"THROUGH THE HANDSHAKE\n");
    // --auth takes the token from the environment.
    let token = std::fs::read_to_string(&srv.token_file).unwrap();
    let mut c = sockit();
    c.env(TOKEN_ENV, token.trim()).args(["connect", &srv.server.addr(), "--auth"]);
    assert_ok(&run(&mut c, b"from the environment"), b"FROM THE ENVIRONMENT");
    // --send works after the handshake too.
    let mut c = srv.connect(&srv.token_file);
    c.args(["--send", "one shot"]);
    assert_ok(&run(&mut c, b""), b"ONE SHOT");
}

#[test]
fn a_wrong_token_is_refused_and_nothing_is_started() {
    let dir = temp_dir();
    let marker = dir.path().join("started");
    let srv = TcpSpawn::start(&[], &["touch", s(&marker)]);
    let wrong = write_token(srv.dir.path(), "wrong", &fresh_token(), 0o600);
    let started = Instant::now();
    let r = run(&mut srv.connect(&wrong), b"");
    assert_fails(&r, 1, &["refused the token", "wrong token"]);
    assert!(started.elapsed() >= Duration::from_millis(900), "refused without the delay");
    // A client that sends raw bytes instead of the handshake gets HELLO and an ERROR.
    let mut raw = TcpStream::connect(srv.server.addr()).unwrap();
    raw.set_read_timeout(Some(LIMIT)).unwrap();
    raw.write_all(b"ls -l\n").unwrap();
    let mut seen = Vec::new();
    let _ = raw.read_to_end(&mut seen);
    assert_eq!(&seen[..8], &[0, 0, 0, 36, 1, 1, 3, 1], "HELLO: version 1, service 3 (spawn), auth required");
    assert_eq!(seen.get(40 + 4), Some(&0x7f), "an ERROR after the HELLO: {seen:?}");
    logged(&srv.server, &["authentication failed"]);
    assert!(!marker.exists(), "the program was started for a client that was not let in");
    // The right token does start it.
    assert_ok(&run(&mut srv.connect(&srv.token_file), b""), b"");
    assert!(marker.exists());
}

#[test]
fn the_server_refuses_unsafe_setups_at_start() {
    let dir = temp_dir();
    let token = write_token(dir.path(), "token", &fresh_token(), 0o600);
    let refused = |args: &[&str], needle: &str| {
        let r = run_within(&mut serve_cmd(args), b"", PROMPT).unwrap_or_else(|| panic!("{args:?} started"));
        assert_eq!(r.code, Some(2), "{args:?}: {:?}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {:?}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in {:?}", r.stderr);
    };
    refused(&["127.0.0.1:0", "spawn", "--", "cat"], "needs a token");
    refused(&["0.0.0.0:0", "spawn", "--token-file", s(&token), "--", "cat"], "without TLS");
    refused(&["[::]:0", "spawn", "--token-file", s(&token), "--", "cat"], "serve it on tls://[::]:0");
    // --insecure no longer lets plain TCP out (tests/tls.rs serves spawn on TLS).
    refused(&["0.0.0.0:0", "spawn", "--insecure", "--token-file", s(&token), "--", "cat"], "--insecure is gone");
}

#[test]
fn auth_without_a_token_is_a_usage_error() {
    let r = run(sockit().env_remove(TOKEN_ENV).args(["connect", "127.0.0.1:9", "--auth"]), b"");
    assert_fails(&r, 2, &["--auth", "SOCKIT_TOKEN"]);
}

#[test]
fn a_client_that_handshakes_with_a_server_that_takes_none_gets_a_hint() {
    let srv = UnixSpawn::start(&[], &["echo", "not a HELLO, a program's output"]);
    let dir = temp_dir();
    let token = write_token(dir.path(), "token", &fresh_token(), 0o600);
    let r = run(sockit().env_remove(TOKEN_ENV).args(["connect", &srv.endpoint(), "--token-file", s(&token)]), b"");
    assert_fails(&r, 1, &["without a token takes no handshake"]);
    // What it sent is shown, not taken for the length of a message.
    assert!(
        r.stderr.contains("not a sockit spawn server: it sent \"not a HELLO, a program's output\""),
        "{:?}",
        r.stderr
    );
}

/// `setpriv` running `nc -U -N PATH` as nobody, or `None` (with the reason printed) when this
/// cannot be done here.
fn nc_as_nobody(path: &Path) -> Option<Command> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("setpriv") || !have("nc") {
        eprintln!("skipping: needs root, setpriv and nc");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "nc", "-U", "-N", s(path)]);
    Some(c)
}

#[test]
fn another_uid_is_refused_on_a_unix_socket_unless_allowed() {
    let marker = temp_dir();
    let touched = marker.path().join("started");
    for (allow, want) in [(None, "sockit: uid 65534 may not use this server (--allow-uid)\n"), (Some("65534"), "")] {
        let mut options = vec!["--mode", "666"];
        options.extend(allow.map(|uid| ["--allow-uid", uid]).into_iter().flatten());
        let srv = UnixSpawn::start(&options, &["touch", s(&touched)]);
        std::fs::set_permissions(srv.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let Some(mut cmd) = nc_as_nobody(&srv.path) else { return };
        let r = run(&mut cmd, b"");
        assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), want), "allow {allow:?}: {:?}", r.stderr);
        if allow.is_none() {
            logged(&srv.server, &["authentication failed: uid 65534"]);
        }
        drop(srv);
        assert_eq!(touched.exists(), allow.is_some(), "allow {allow:?}: started the program?");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. What the program inherits

#[test]
fn the_program_gets_only_fds_0_to_2_default_signals_and_its_own_group() {
    // The shell's own signal mask changes while it waits for a child: grep reads its own, as the
    // shell hands it on.
    let script = "echo \"group $(cut -d' ' -f5 /proc/$$/stat) pid $$\"; ls /proc/$$/fd; \
                  exec grep -E '^Sig(Blk|Ign):' /proc/self/status";
    let srv = UnixSpawn::start_with(&[], &["sh", "-c", script], careless_parent);
    assert!(Path::new(&format!("/proc/{}/fd/9", srv.server.pid())).exists(), "the server inherited fd 9");
    let out = String::from_utf8(srv.exchange(b"")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[1..4], ["0", "1", "2"], "{out}");
    let (blocked, ignored) = signal_masks(&out);
    assert_eq!(blocked, 0, "{out}");
    assert_eq!(ignored & STANDARD_SIGNALS, 0, "{out}");
    let group: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(group[1], group[3], "the program leads its own process group: {out}");
}

#[test]
fn the_program_gets_neither_the_token_nor_socket_activation_variables() {
    let token = fresh_token();
    let mut cmd = serve_cmd(&[
        "127.0.0.1:0",
        "spawn",
        "--",
        "sh",
        "-c",
        "echo ${SOCKIT_TOKEN:-none} ${LISTEN_PID:-none} ${LISTEN_FDS:-none} ${LISTEN_FDNAMES:-none} $KEPT",
    ]);
    cmd.env(TOKEN_ENV, &token).env("LISTEN_PID", "1").env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "x");
    cmd.env("KEPT", "kept");
    let server = Server::start_cmd(cmd);
    let mut c = sockit();
    c.env(TOKEN_ENV, &token).args(["connect", &server.addr(), "--auth"]);
    assert_ok(&run(&mut c, b""), b"none none none none kept\n");
}

// ---------------------------------------------------------------------------------------------
// 4. How sessions end

#[test]
fn a_client_that_leaves_takes_the_process_group_with_it() {
    let m = marker(91);
    let srv = UnixSpawn::start(&[], &["sh", "-c", &format!("sleep {m} & sleep {m} & echo started; wait")]);
    let mut client = spawn_piped({
        let mut c = sockit();
        c.args(["connect", &srv.endpoint()]);
        c
    });
    assert_eq!(read_line_within(client.stdout.take().unwrap(), PROMPT), "started\n");
    // The shell forks them before it echoes, but they may not have become `sleep` yet.
    wait_until("both sleeps run", PROMPT, || live_with("sleep", &m).len() == 2);
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until("the program's group outlived its client", PROMPT, || all_gone(&srv.server, &m));
    wait_until("the server left a zombie child", PROMPT, || zombie_children(srv.server.pid()).is_empty());
    logged(&srv.server, &["closed by client"]);
}

/// Runs tests/peers/spawn_client.py, a client with the handshake written from PROTOCOL.md.
fn python_client(srv: &TcpSpawn, extra: &[&str], input: &[u8]) -> Ran {
    let mut c = Command::new("python3");
    c.arg(peers().join("spawn_client.py")).arg("127.0.0.1").arg(srv.server.port().to_string());
    run(c.arg(&srv.token_file).args(extra), input)
}

#[test]
fn the_python_client_from_the_protocol_document_works() {
    require!("python3");
    let srv = TcpSpawn::start(&[], &["tr", "a-z", "A-Z"]);
    let r = python_client(&srv, &[], b"python over tcp\n");
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "PYTHON OVER TCP\n"), "{:?}", r.stderr);
}

/// A client that sends and closes at once (no half-close, no reading) still gets its input to
/// the program: a sink like `cat >> log` is not killed before it has read it.
#[test]
fn what_a_client_sent_before_closing_still_reaches_the_program() {
    let dir = temp_dir();
    let log = dir.path().join("log");
    let srv = UnixSpawn::start(&[], &["sh", "-c", "sleep 0.3; cat >> \"$0\"", s(&log)]);
    for line in ["one\n", "two\n"] {
        let mut c = srv.connect();
        c.write_all(line.as_bytes()).unwrap();
        drop(c);
        logged(&srv.server, &["closed by client"]);
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
}

#[test]
fn a_tcp_client_that_resets_takes_the_process_group_with_it() {
    require!("python3");
    let m = marker(92);
    let srv = TcpSpawn::start(&[], &["sh", "-c", &format!("echo started; exec sleep {m}")]);
    let r = python_client(&srv, &["--reset-after-line"], b"");
    assert_eq!((r.code, r.stdout_text().as_str()), (Some(0), "started\n"), "{:?}", r.stderr);
    wait_until("the program outlived its client", PROMPT, || all_gone(&srv.server, &m));
    logged(&srv.server, &["closed by client"]);
}

#[test]
fn killing_sockit_connect_kills_the_program_on_tcp_too() {
    let m = marker(98);
    let srv = TcpSpawn::start(&[], &["sh", "-c", &format!("echo started; exec sleep {m}")]);
    let mut client = spawn_piped(srv.connect(&srv.token_file));
    assert_eq!(read_line_within(client.stdout.take().unwrap(), PROMPT), "started\n");
    // With nothing unread on either side, a plain close would look like a half-close.
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until("the program outlived its client", PROMPT, || all_gone(&srv.server, &m));
}

#[test]
fn the_time_limit_kills_the_program_and_ends_the_session() {
    let m = marker(93);
    let srv = UnixSpawn::start(&["--timeout", "500ms"], &["sh", "-c", &format!("echo up; sleep {m} & exec sleep {m}")]);
    let started = Instant::now();
    let mut c = srv.connect();
    // The client sends nothing and never half-closes: the server ends it all the same.
    let got = read_all(&mut c);
    let took = started.elapsed();
    assert_eq!(got, b"up\n");
    assert!(took >= Duration::from_millis(450) && took < PROMPT, "ended after {took:?}");
    wait_until("the timed-out group still runs", PROMPT, || all_gone(&srv.server, &m));
    logged(&srv.server, &["time limit reached"]);
}

#[test]
fn the_idle_timeout_ends_a_silent_session() {
    let m = marker(94);
    let srv = UnixSpawn::start(&["--idle-timeout", "500ms"], &["sleep", &m]);
    let mut c = srv.connect();
    let started = Instant::now();
    assert_eq!(read_all(&mut c), b"");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    wait_until("the idle program still runs", PROMPT, || all_gone(&srv.server, &m));
    logged(&srv.server, &["idle timeout"]);
}

#[test]
fn a_program_that_exits_ends_the_session_without_waiting_for_the_client_or_its_children() {
    let m = marker(95);
    let srv = UnixSpawn::start(&[], &["sh", "-c", &format!("sleep {m} & echo hi; exit 3")]);
    let mut c = srv.connect();
    let started = Instant::now();
    assert_eq!(read_all(&mut c), b"hi\n");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(live_with("sleep", &m).is_empty(), "the background sleep was left running");
}

#[test]
fn shutdown_closes_the_programs_input_and_lets_it_finish() {
    let mut srv = UnixSpawn::start(&[], &["sh", "-c", "cat; echo finished"]);
    let mut c = srv.connect();
    c.write_all(b"before the shutdown\n").unwrap();
    let mut first = [0u8; 20];
    c.read_exact(&mut first).unwrap();
    srv.server.signal(libc::SIGINT);
    assert_eq!(read_all(&mut c), b"finished\n");
    let done = srv.server.wait();
    assert_eq!(done.status.code(), Some(0), "{:?}", done.stderr);
}

#[test]
fn a_program_that_vanished_since_the_start_closes_the_client_and_is_logged() {
    let dir = temp_dir();
    let prog = dir.path().join("my-cat");
    std::fs::copy("/bin/cat", &prog).unwrap();
    let srv = UnixSpawn::start(&[], &[s(&prog)]);
    assert_eq!(srv.exchange(b"still here"), b"still here");
    std::fs::remove_file(&prog).unwrap();
    let mut c = srv.connect();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    logged(&srv.server, &["cannot run", "my-cat"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Many clients, and too many

#[test]
fn many_clients_at_once_each_get_their_own_process() {
    const N: usize = 20;
    let srv = Arc::new(UnixSpawn::start(&[], &["sh", "-c", "echo $$; sleep 0.3; cat"]));
    let barrier = Arc::new(Barrier::new(N));
    let started = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (srv, barrier) = (srv.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                String::from_utf8(srv.exchange(format!("client {i}\n").as_bytes())).unwrap()
            })
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().unwrap();
        let (pid, rest) = out.split_once('\n').unwrap_or_else(|| panic!("client {i}: {out:?}"));
        assert_eq!(rest, format!("client {i}\n"));
        assert!(pids.insert(pid.to_owned()), "pid {pid} served two clients");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(N as u64 * 3 / 10) / 2, "{N} sessions took {took:?}: not concurrent");
}

#[test]
fn a_busy_server_says_so_in_the_clients_language() {
    let m = marker(96);
    // Without a token, a line of text.
    let srv = UnixSpawn::start(&["--max-conns", "1"], &["sh", "-c", &format!("echo up; exec sleep {m}")]);
    let mut first = srv.connect();
    let mut up = [0u8; 3];
    first.read_exact(&mut up).unwrap();
    assert_eq!(srv.exchange(b""), b"sockit: server busy (1 client connected), try again later\n");
    drop(first);
    // With one, an ERROR that sockit connect reads.
    let m = marker(97);
    let srv = TcpSpawn::start(&["--max-conns", "1"], &["sh", "-c", &format!("echo up; exec sleep {m}")]);
    let mut first = spawn_piped(srv.connect(&srv.token_file));
    assert_eq!(read_line_within(first.stdout.take().unwrap(), PROMPT), "up\n");
    let r = run(&mut srv.connect(&srv.token_file), b"");
    assert_fails(&r, 1, &["server busy"]);
    let _ = first.kill();
    let _ = first.wait();
    wait_until("the sleeps outlived their clients", PROMPT, || all_gone(&srv.server, &m));
}
