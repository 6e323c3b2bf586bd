//! The `exec` service end to end, with the real binary on real sockets: `sockit serve … exec`,
//! `sockit exec`, `sockit shell`, raw protocol clients written here (PROTOCOL.md sections 5 and
//! 6), and the Python client in tests/peers/exec_client.py, which was written from PROTOCOL.md
//! alone.
//!
//! Covered: argv without a shell, stdout and stderr apart, exit codes (code, 128 + signal, 124,
//! 127, 126, 255), stdin byte-exact and `-n`, a gibibyte in order, bounded server memory with a
//! slow reader, many sessions at once, time limits, a vanished client's process group killed and
//! reaped, what the command inherits (fds, signal dispositions, process group), authentication
//! (tokens right, wrong, missing, exposed, short, from the environment, the server's refusals),
//! replay, Unix sockets and peer uids, protocol abuse, `sockit shell`, and the Python client.
//!
//! Every server listens on port 0 or on a path in a fresh temporary directory; every wait is
//! bounded; sleeps are only the commands' own or a deliberately slow reader, never a wait for
//! readiness.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers: servers, tokens, clients

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An `exec` server on 127.0.0.1 with a fresh token file.
struct ExecServer {
    server: Server,
    dir: tempfile::TempDir,
    token: String,
    token_file: PathBuf,
}

impl ExecServer {
    fn start(extra: &[&str]) -> ExecServer {
        ExecServer::start_with(extra, |_| {})
    }

    /// Starts the server after `prepare` has had its way with the command.
    fn start_with(extra: &[&str], prepare: impl FnOnce(&mut Command)) -> ExecServer {
        let dir = temp_dir();
        let token = fresh_token();
        let token_file = write_token(dir.path(), "token", &token, 0o600);
        let mut args = vec!["127.0.0.1:0", "exec", "--token-file", s(&token_file)];
        args.extend_from_slice(extra);
        let mut cmd = serve_cmd(&args);
        prepare(&mut cmd);
        let server = Server::start_cmd(cmd);
        ExecServer { server, dir, token, token_file }
    }

    fn addr(&self) -> String {
        self.server.addr()
    }

    fn pid(&self) -> i32 {
        self.server.pid()
    }

    /// `sockit SUB ADDR --token-file TOKEN` with no token in the environment.
    fn client(&self, sub: &str) -> Command {
        let mut c = sockit();
        c.env_remove(TOKEN_ENV).arg(sub).arg(self.addr()).arg("--token-file").arg(&self.token_file);
        c
    }

    /// `sockit exec ADDR --token-file TOKEN ARGS…`.
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = self.client("exec");
        c.args(args);
        c
    }

    /// Runs `sockit exec … ARGS…` with `input` on stdin.
    fn run(&self, args: &[&str], input: &[u8]) -> Ran {
        run(&mut self.exec(args), input)
    }
}

/// Asserts a clean run: exit 0, `stdout` exactly, nothing on stderr.
#[track_caller]
fn assert_ok(ran: &Ran, stdout: &str) {
    let what = format!("stdout {:?}, stderr {:?}", ran.stdout_text(), ran.stderr);
    assert_eq!(ran.code, Some(0), "{what}");
    assert_eq!(ran.stdout_text(), stdout, "{what}");
    assert_eq!(ran.stderr, "", "{what}");
}

// ---------------------------------------------------------------------------------------------
// Helpers: /proc

/// A `kB` field of /proc/PID/status, in bytes.
fn status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A field of /proc/PID/io.
fn io_field(pid: i32, field: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers: the protocol by hand (PROTOCOL.md sections 1, 5, 6)

mod msg {
    pub const HELLO: u8 = 0x01;
    pub const AUTH: u8 = 0x02;
    pub const WELCOME: u8 = 0x03;
    pub const EXEC: u8 = 0x10;
    pub const STDIN: u8 = 0x11;
    pub const STDIN_EOF: u8 = 0x12;
    pub const SIGNAL: u8 = 0x13;
    pub const STARTED: u8 = 0x20;
    pub const STDOUT: u8 = 0x21;
    pub const STDERR: u8 = 0x22;
    pub const EXIT: u8 = 0x23;
    pub const ERROR: u8 = 0x7F;
}

/// `HMAC-SHA256(token, label ‖ 0x01 (exec) ‖ Ns ‖ Nc)`.
fn mac(token: &[u8], label: &str, ns: &[u8], nc: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token).unwrap();
    m.update(label.as_bytes());
    m.update(&[1]);
    m.update(ns);
    m.update(nc);
    m.finalize().into_bytes().into()
}

/// One frame: length, type, body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(body);
    f
}

/// The body of an EXEC.
fn exec_body(timeout_ms: u32, stdin: bool, argv: &[&str]) -> Vec<u8> {
    let mut b = timeout_ms.to_be_bytes().to_vec();
    b.push(u8::from(stdin));
    b.extend_from_slice(argv.join("\0").as_bytes());
    b
}

/// Splits bytes into (type, body) messages; a trailing partial frame is dropped.
fn parse_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        if n == 0 || bytes.len() < 4 + n {
            break;
        }
        out.push((bytes[4], bytes[5..4 + n].to_vec()));
        bytes = &bytes[4 + n..];
    }
    out
}

/// A hand-driven connection to an `exec` server.
struct Raw {
    s: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s }
    }

    fn send(&mut self, kind: u8, body: &[u8]) {
        self.send_bytes(&frame(kind, body));
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// The next message; fails the test on end of stream.
    fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; 4];
        self.s.read_exact(&mut header).unwrap_or_else(|e| panic!("reading a message: {e}"));
        let n = u32::from_be_bytes(header) as usize;
        assert!((1..=1 << 20).contains(&n), "a message of {n} bytes");
        let mut payload = vec![0; n];
        self.s.read_exact(&mut payload).unwrap();
        (payload[0], payload[1..].to_vec())
    }

    /// Reads HELLO and returns the server nonce.
    fn hello(&mut self) -> Vec<u8> {
        let (kind, body) = self.recv();
        assert_eq!(kind, msg::HELLO, "expected HELLO, got {kind:#x} {body:?}");
        assert_eq!(body.len(), 35);
        assert_eq!(&body[..3], &[1, 1, 1], "version 1, service exec, auth required");
        body[3..].to_vec()
    }

    /// The whole handshake; checks the server's proof. Returns the server's nonce and the AUTH
    /// frame sent.
    fn login(&mut self, token: &str) -> (Vec<u8>, Vec<u8>) {
        let ns = self.hello();
        let nc: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ (std::process::id() as u8));
        let mut body = nc.to_vec();
        body.extend_from_slice(&mac(token.as_bytes(), "sockit-auth-v1 client", &ns, &nc));
        let auth = frame(msg::AUTH, &body);
        self.send_bytes(&auth);
        let (kind, proof) = self.recv();
        assert_eq!(kind, msg::WELCOME, "expected WELCOME, got {kind:#x} {:?}", String::from_utf8_lossy(&proof));
        assert_eq!(proof, mac(token.as_bytes(), "sockit-auth-v1 server", &ns, &nc), "the server's proof");
        (ns, auth)
    }

    /// Runs a command to its end: (stdout, stderr, EXIT body).
    fn run(&mut self, argv: &[&str], stdin: Option<&[u8]>) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        self.send(msg::EXEC, &exec_body(0, stdin.is_some(), argv));
        let (kind, body) = self.recv();
        assert_eq!(kind, msg::STARTED, "expected STARTED, got {kind:#x} {:?}", String::from_utf8_lossy(&body));
        if let Some(input) = stdin {
            self.send(msg::STDIN, input);
            self.send(msg::STDIN_EOF, &[]);
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let (kind, body) = self.recv();
            match kind {
                msg::STDOUT => out.extend(body),
                msg::STDERR => err.extend(body),
                msg::EXIT => return (out, err, body),
                other => panic!("unexpected {other:#x} {:?}", String::from_utf8_lossy(&body)),
            }
        }
    }

    /// Reads until the server closes (end of stream or reset) within [`PROMPT`]; returns what
    /// arrived meanwhile.
    fn expect_closed(&mut self) -> Vec<u8> {
        self.s.set_read_timeout(Some(PROMPT)).unwrap();
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the server did not close the connection: {e} after {:?}", started.elapsed()),
            }
            assert!(started.elapsed() < PROMPT, "the server kept the connection open");
        }
        seen
    }
}

/// The EXIT body for "exited with `code`".
fn exited(code: u32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&code.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------------------------
// 1. The argv as given

#[test]
fn argv_runs_as_given_without_a_shell() {
    let srv = ExecServer::start(&[]);
    assert_ok(&srv.run(&["-n", "--", "echo", "$HOME;ls"], b""), "$HOME;ls\n");
    // Spaces, empty words, globs, quotes and backslashes arrive as they were sent.
    let r = srv.run(&["-n", "--", "printf", "[%s]", "a  b", "", "*", "'q'", "\"", "\\", "$(id)", ""], b"");
    assert_ok(&r, "[a  b][][*]['q'][\"][\\][$(id)][]");
}

#[test]
fn shell_flag_runs_the_line_with_sh() {
    let srv = ExecServer::start(&[]);
    assert_ok(&srv.run(&["-n", "--shell", "--", "echo a | tr a b"], b""), "b\n");
    // The words are joined with spaces into one line.
    assert_ok(&srv.run(&["-n", "--shell", "--", "echo", "$((6*7))", ";", "echo", "x"], b""), "42\nx\n");
}

// ---------------------------------------------------------------------------------------------
// 2. Output streams and exit codes

#[test]
fn stdout_and_stderr_stay_apart() {
    let srv = ExecServer::start(&[]);
    let r = srv.run(&["-n", "--", "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 7"], b"");
    assert_eq!(r.code, Some(7), "stderr {:?}", r.stderr);
    assert_eq!(r.stdout_text(), "out1\nout2\n");
    assert_eq!(r.stderr, "err1\nerr2\n");

    // Many small writes to both, interleaved: each stream whole and in its own order.
    let code = "import os\nfor i in range(20000):\n    os.write(1, b'o%06d\\n' % i)\n    os.write(2, b'e%06d\\n' % i)";
    let r = srv.run(&["-n", "--", "python3", "-c", code], b"");
    assert_eq!(r.code, Some(0), "stderr starts {:?}", &r.stderr[..r.stderr.len().min(200)]);
    let want = |c: char| (0..20000).map(|i| format!("{c}{i:06}\n")).collect::<String>();
    assert!(r.stdout_text() == want('o'), "stdout is not the 20000 o-lines in order");
    assert!(r.stderr == want('e'), "stderr is not the 20000 e-lines in order");
}

#[test]
fn exit_codes_pass_through() {
    let srv = ExecServer::start(&[]);
    for (script, code) in
        [("exit 0", 0), ("exit 7", 7), ("exit 254", 254), ("kill -TERM $$", 143), ("kill -KILL $$", 137)]
    {
        let r = srv.run(&["-n", "--", "sh", "-c", script], b"");
        assert_eq!(r.code, Some(code), "sh -c {script:?}: stderr {:?}", r.stderr);
        assert_eq!(r.stderr, "", "sh -c {script:?}");
    }
    assert_eq!(srv.run(&["-n", "--", "false"], b"").code, Some(1));
}

#[test]
fn a_command_not_found_is_127_with_one_line() {
    let srv = ExecServer::start(&[]);
    let r = srv.run(&["-n", "--", "no-such-command-e7x"], b"");
    assert_fails(&r, 127, &["no-such-command-e7x", "not found"]);
    assert!(r.stdout.is_empty());
    let r = srv.run(&["-n", "--", "/nonexistent/dir/prog"], b"");
    assert_fails(&r, 127, &["/nonexistent/dir/prog", "not found"]);
}

/// A connection that breaks while a command runs is one line that says so and that the
/// command's outcome is unknown, exit status 255 as ssh gives; it was only "Connection reset by
/// peer (os error 104)".
#[test]
fn a_connection_reset_while_a_command_runs_says_the_outcome_is_unknown() {
    let srv = ExecServer::start(&[]);
    let relay = Server::relay(&["127.0.0.1:0", &srv.addr(), "--reset-after", "300"]);
    let mut cmd = sockit();
    cmd.env_remove(TOKEN_ENV).args(["exec", &relay.addr(), "--token-file", s(&srv.token_file), "-n", "--"]);
    cmd.args(["sh", "-c", "yes | head -c 1000000"]);
    let r = run(&mut cmd, b"");
    assert_fails(&r, 255, &["the connection to the server failed", "the command's exit status is unknown"]);
    assert!(!r.stderr.contains("os error"), "{}", r.stderr);
}

#[test]
fn a_command_that_cannot_be_executed_is_126() {
    let srv = ExecServer::start(&[]);
    let plain = srv.dir.path().join("plain-file");
    std::fs::write(&plain, "echo should not run\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    for prog in [s(&plain), "/etc/passwd", "/tmp"] {
        let r = srv.run(&["-n", "--", prog], b"");
        assert_fails(&r, 126, &[prog]);
        assert!(r.stdout.is_empty(), "{prog}: {:?}", r.stdout_text());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Standard input

#[test]
fn stdin_is_forwarded_byte_exact() {
    let srv = ExecServer::start(&[]);
    // Every byte value, NULs, invalid UTF-8, no final newline, several 64 KiB messages' worth.
    let mut input = b"\0\0nul\xff\xfe\xc3\x28 not utf-8\r\n".to_vec();
    input.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    input.extend_from_slice(b"\0end\xff");
    let r = srv.run(&["--", "cat"], &input);
    assert_eq!(r.code, Some(0), "stderr {:?}", r.stderr);
    assert_eq!(r.stdout.len(), input.len());
    assert!(r.stdout == input, "cat's output differs from its input");
    // A command that never reads its input does not make the client hang.
    let r = srv.run(&["--", "true"], &vec![b'x'; 4 << 20]);
    assert_eq!(r.code, Some(0), "stderr {:?}", r.stderr);
}

/// An input that fails to read (here a directory) was taken for its end: the command finished
/// on what it had, exit 0. It is now the client's error, and the command is not told its input
/// ended.
#[test]
fn an_input_that_cannot_be_read_is_an_error_not_its_end() {
    let srv = ExecServer::start(&[]);
    let mut cmd = srv.exec(&["--", "sh", "-c", "cat >/dev/null; echo took it all"]);
    cmd.stdin(std::fs::File::open(srv.dir.path()).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (out, err) = (drain(child.stdout.take().unwrap()), drain(child.stderr.take().unwrap()));
    let status = wait_bounded(&mut child, LIMIT).expect("exec did not end");
    let r = Ran {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: String::from_utf8(err.join().unwrap()).unwrap(),
    };
    assert_fails(&r, 255, &["sockit: cannot read the input: is a directory"]);
    assert!(r.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&r.stdout));
}

#[test]
fn no_stdin_gives_dev_null() {
    let srv = ExecServer::start(&[]);
    // Our stdin stays open and silent: `cat` still ends at once, on /dev/null.
    let mut child = spawn_piped(srv.exec(&["-n", "--", "cat"]));
    let _keep_open = child.stdin.take();
    let out = drain(child.stdout.take().unwrap());
    let status = wait_bounded(&mut child, PROMPT).expect("cat with -n did not end at once");
    assert_eq!(status.code(), Some(0));
    assert!(out.join().unwrap().is_empty());
    assert_ok(&srv.run(&["-n", "--", "readlink", "/proc/self/fd/0"], b"input that must not arrive"), "/dev/null\n");
    assert_ok(&srv.run(&["--no-stdin", "--", "cat"], b"input that must not arrive"), "");
}

// ---------------------------------------------------------------------------------------------
// 4. Large output, in order; memory stays bounded

/// The stream the producer below writes: records of a 16-byte decimal counter line and a fixed
/// 100,000-byte body, cut at exactly 1 GiB. A record size that is not a power of two puts the
/// 64 KiB message boundaries everywhere within records, and the counter catches any chunk lost,
/// repeated or moved.
const GIB: u64 = 1 << 30;
const BODY: usize = 100_000;
const PRODUCER: &str = "import sys
o = sys.stdout.buffer
body = bytes((j * 7 + 3) % 251 for j in range(100000))
total = 1 << 30
i = n = 0
while n < total:
    r = (b'%015d\\n' % i + body)[:total - n]
    o.write(r)
    n += len(r)
    i += 1
o.flush()
";

/// Checks the stream incrementally with slice comparisons (memcmp), cheap even in debug builds.
struct Checker {
    record: Vec<u8>,
    pos: usize,
    index: u64,
    total: u64,
}

impl Checker {
    fn new() -> Checker {
        let mut record = vec![0u8; 16];
        record.extend((0..BODY).map(|j| ((j * 7 + 3) % 251) as u8));
        let mut c = Checker { record, pos: 0, index: 0, total: 0 };
        c.set_header();
        c
    }

    fn set_header(&mut self) {
        let digits = format!("{:015}\n", self.index);
        self.record[..16].copy_from_slice(digits.as_bytes());
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(self.record.len() - self.pos);
            if data[..n] != self.record[self.pos..self.pos + n] {
                let at = (0..n).find(|&i| data[i] != self.record[self.pos + i]).unwrap();
                panic!(
                    "output differs at byte {} (record {}, offset {}): got {:?}, want {:?}",
                    self.total + at as u64,
                    self.index,
                    self.pos + at,
                    String::from_utf8_lossy(&data[at..(at + 20).min(n)]),
                    String::from_utf8_lossy(&self.record[self.pos + at..(self.pos + at + 20).min(self.record.len())]),
                );
            }
            self.pos += n;
            self.total += n as u64;
            data = &data[n..];
            if self.pos == self.record.len() {
                self.pos = 0;
                self.index += 1;
                self.set_header();
            }
        }
    }
}

#[test]
fn a_gibibyte_of_output_arrives_whole_and_in_order() {
    let srv = ExecServer::start(&[]);
    let mut child = spawn_piped(srv.exec(&["-n", "--", "python3", "-c", PRODUCER]));
    drop(child.stdin.take());
    let err = drain(child.stderr.take().unwrap());
    let mut out = child.stdout.take().unwrap();
    // A watchdog bounds the whole transfer: killing the client ends our reads.
    let pid = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(180)).is_err() {
            // SAFETY: kill(2) on our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let started = Instant::now();
    let mut checker = Checker::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => checker.feed(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading the client's stdout: {e}"),
        }
    }
    let took = started.elapsed();
    let status = wait_bounded(&mut child, PROMPT).expect("client did not exit after its output ended");
    let _ = done_tx.send(());
    assert!(!watchdog.join().unwrap(), "the transfer did not finish within 180 s");
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(checker.total, GIB, "total length (after {took:?}); stderr {err:?}");
    assert_eq!(status.code(), Some(0), "stderr {err:?}");
    assert_eq!(err, "");
    eprintln!("1 GiB through sockit exec in {took:?}");
}

#[test]
fn a_slow_reader_keeps_server_memory_bounded() {
    // About 200 MB, a number that also marks the producer's process.
    let size = marker(20);
    let size = size.as_str();
    const MIB: u64 = 1 << 20;
    let srv = ExecServer::start(&[]);
    let mut child = spawn_piped(srv.exec(&["-n", "--", "head", "-c", size, "/dev/zero"]));
    drop(child.stdin.take());
    let mut out = child.stdout.take().unwrap();
    // Read slowly for two seconds: 64 KiB every 100 ms.
    let started = Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while started.elapsed() < Duration::from_secs(2) {
        got += out.read(&mut buf).expect("read") as u64;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got > 0, "no output at all");
    let producer = live_with("head", size);
    assert_eq!(producer.len(), 1, "the producer should still run, held back: {producer:?}");
    let written = io_field(producer[0].pid, "wchar");
    let server_peak = status_bytes(srv.pid(), "VmHWM");
    let server_now = status_bytes(srv.pid(), "VmRSS");
    let client_peak = status_bytes(child.id() as i32, "VmHWM");
    eprintln!(
        "slow reader: read {got} B; producer wrote {written} B; server RSS {server_now} B, peak {server_peak} B; \
         client peak {client_peak} B"
    );
    assert!(written < 64 * MIB, "the command was not held back: it wrote {written} B while we read {got} B");
    assert!(server_peak < 64 * MIB, "server peak RSS {server_peak} B");
    assert!(server_now < 64 * MIB, "server RSS {server_now} B");
    assert!(client_peak < 64 * MIB, "client peak RSS {client_peak} B");
    // Leaving ends it all.
    let _ = child.kill();
    let _ = child.wait();
    wait_until("the producer outlived its client", PROMPT, || live_with("head", size).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Many sessions at once

#[test]
fn many_sessions_run_at_once() {
    const N: usize = 20;
    const SLEEP: f64 = 0.5;
    let srv = Arc::new(ExecServer::start(&[]));
    let barrier = Arc::new(Barrier::new(N));
    let started = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (srv, barrier) = (srv.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                srv.run(&["-n", "--", "sh", "-c", &format!("sleep {SLEEP}; echo {i}")], b"")
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_ok(&h.join().unwrap(), &format!("{i}\n"));
    }
    let took = started.elapsed();
    let serial = Duration::from_secs_f64(N as f64 * SLEEP);
    assert!(took < serial / 2, "{N} sessions of {SLEEP}s took {took:?}: not concurrent (one by one: {serial:?})");
}

// ---------------------------------------------------------------------------------------------
// 6. Time limits

#[test]
fn client_timeout_kills_the_command_with_124() {
    let srv = ExecServer::start(&[]);
    let started = Instant::now();
    // The background sleep holds the output pipes: only killing the whole group ends this.
    let m = marker(876541);
    let r = srv.run(&["-n", "--timeout", "500ms", "--", "sh", "-c", &format!("sleep {m} & exec sleep {m}")], b"");
    let took = started.elapsed();
    assert_eq!(r.code, Some(124), "stderr {:?}", r.stderr);
    assert!(took >= Duration::from_millis(450), "ended after {took:?}, before its time limit");
    assert!(took < PROMPT, "took {took:?}");
    wait_until("the timed-out group is still running", PROMPT, || live_with("sleep", &m).is_empty());
}

#[test]
fn server_timeout_caps_every_command() {
    let srv = ExecServer::start(&["--timeout", "2s"]);
    for asked in [None, Some("30s")] {
        let mut args = vec!["-n"];
        if let Some(t) = asked {
            args.extend(["--timeout", t]);
        }
        args.extend(["--", "sleep", "30"]);
        let started = Instant::now();
        let r = srv.run(&args, b"");
        let took = started.elapsed();
        assert_eq!(r.code, Some(124), "client asked {asked:?}: stderr {:?}", r.stderr);
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(8), "asked {asked:?}: {took:?}");
    }
    // Less than the cap is honoured; a quick command is not affected.
    let started = Instant::now();
    assert_eq!(srv.run(&["-n", "--timeout", "300ms", "--", "sleep", "30"], b"").code, Some(124));
    assert!(started.elapsed() < Duration::from_millis(1800), "took {:?}", started.elapsed());
    assert_ok(&srv.run(&["-n", "--", "echo", "quick"], b""), "quick\n");
}

// ---------------------------------------------------------------------------------------------
// 7. A client that goes away

#[test]
fn client_disconnect_kills_the_process_group_and_leaves_no_zombie() {
    let srv = ExecServer::start(&[]);
    let m = marker(987654);
    let script = format!("sleep {m} & sleep {m} & echo started; wait");
    let mut child = spawn_piped(srv.exec(&["-n", "--", "sh", "-c", &script]));
    let line = read_line_within(child.stdout.take().unwrap(), PROMPT);
    assert_eq!(line, "started\n");
    // The shell forks them before it echoes, but they may not have become `sleep` yet.
    wait_until("both sleeps run", PROMPT, || live_with("sleep", &m).len() == 2);
    assert_eq!(live_with("sh", &m).len(), 1, "the shell runs");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the command's processes outlived their client", PROMPT, || {
        processes().iter().all(|p| p.state == 'Z' || !p.cmdline.contains(&m))
    });
    wait_until("the server left a zombie child", PROMPT, || zombie_children(srv.pid()).is_empty());
    // And it goes on serving.
    assert_ok(&srv.run(&["-n", "--", "echo", "still here"], b""), "still here\n");
}

#[test]
fn ctrl_c_on_the_client_interrupts_the_remote_command() {
    let srv = ExecServer::start(&[]);
    let m = marker(765432);
    let mut child = spawn_piped(srv.exec(&["-n", "--", "sh", "-c", &format!("echo ready; exec sleep {m}")]));
    let line = read_line_within(child.stdout.take().unwrap(), PROMPT);
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, PROMPT).expect("the client did not end after Ctrl-C");
    assert_eq!(status.code(), Some(130), "SIGINT killed the remote sleep: 128 + 2");
    wait_until("the interrupted sleep still runs", PROMPT, || live_with("sleep", &m).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 8. What the command inherits

#[test]
fn the_command_gets_only_fds_0_to_2() {
    let srv = ExecServer::start_with(&[], careless_parent);
    // The server does hold more (its listener, the connection, epoll, fd 9): the test can fail.
    let server_fds = std::fs::read_dir(format!("/proc/{}/fd", srv.pid())).unwrap().count();
    assert!(server_fds > 3, "the server holds {server_fds} fds");
    assert!(Path::new(&format!("/proc/{}/fd/9", srv.pid())).exists(), "the server inherited fd 9");
    // `ls` lists its parent shell's descriptors, which are exactly what the command was given:
    // ls's own directory descriptor is not among them. The `:` keeps sh from exec'ing ls.
    assert_ok(&srv.run(&["-n", "--", "sh", "-c", "ls /proc/$$/fd; :"], b""), "0\n1\n2\n");
    // And they are the pipes (stdin forwarded) or /dev/null (-n).
    let r = srv.run(&["--", "sh", "-c", "for f in 0 1 2; do readlink /proc/$$/fd/$f; done; :"], b"");
    assert_eq!(r.code, Some(0));
    let kinds: Vec<_> = r.stdout_text().lines().map(|l| l.split(':').next().unwrap().to_string()).collect();
    assert_eq!(kinds, ["pipe", "pipe", "pipe"], "{:?}", r.stdout_text());
    let r = srv.run(&["-n", "--", "sh", "-c", "readlink /proc/$$/fd/0; :"], b"");
    assert_ok(&r, "/dev/null\n");
}

#[test]
fn the_command_gets_default_signals_and_its_own_process_group() {
    let srv = ExecServer::start_with(&[], careless_parent);
    let (_, server_ignores) = signal_masks(&std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap());
    // SIGINT and SIGTERM get handlers of the server's own; SIGQUIT stays ignored in the server.
    assert_ne!(server_ignores & (1 << (libc::SIGQUIT - 1)), 0, "the server should have inherited an ignored SIGQUIT");
    let r = srv.run(&["-n", "--", "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"], b"");
    assert_eq!(r.code, Some(0), "{:?}", r.stderr);
    let (blocked, ignored) = signal_masks(&r.stdout_text());
    assert_eq!(blocked, 0, "blocked signals: {:?}", r.stdout_text());
    // Real-time signals are not for this test to judge: the environment running the tests may
    // ignore some (see the test of the signal mask below).
    assert_eq!(ignored & STANDARD_SIGNALS, 0, "ignored signals: {:?}", r.stdout_text());
    // Default SIGPIPE in practice: `yes` dies of it, silently, as soon as `head` has had enough
    // (with SIGPIPE ignored it would complain of a broken pipe on stderr).
    assert_ok(&srv.run(&["-n", "--", "sh", "-c", "yes | head -c 3; echo"], b""), "y\ny\n");
    let r = srv.run(&["-n", "--", "bash", "-c", "yes | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}"], b"");
    if r.code == Some(127) {
        eprintln!("skipping the PIPESTATUS check: bash is not installed");
    } else {
        assert_ok(&r, "141\n");
    }
    // A process group of its own: its pgid is its pid, and not the server's group.
    let r = srv.run(&["-n", "--", "sh", "-c", "echo $$; cut -d' ' -f5 /proc/$$/stat"], b"");
    assert_eq!(r.code, Some(0));
    let lines: Vec<String> = r.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], lines[1], "the command leads its own process group");
    assert_ne!(lines[1], srv.pid().to_string());
}

// ---------------------------------------------------------------------------------------------
// 9. Authentication

#[test]
fn the_right_token_gets_in() {
    let srv = ExecServer::start(&[]);
    assert_ok(&srv.run(&["-n", "--", "echo", "in"], b""), "in\n");
    // Surrounding whitespace in the file is not part of the token.
    let padded = write_token(srv.dir.path(), "padded", &format!("  \t{}\n\n", srv.token), 0o600);
    let mut cmd = sockit();
    cmd.env_remove(TOKEN_ENV).args(["exec", &srv.addr(), "--token-file", s(&padded), "-n", "--", "echo", "in"]);
    let r = run(&mut cmd, b"");
    assert_ok(&r, "in\n");
}

#[test]
fn a_wrong_token_is_refused_slowly_and_nothing_runs() {
    let srv = ExecServer::start(&[]);
    let wrong = write_token(srv.dir.path(), "wrong", &fresh_token(), 0o600);
    let marker = srv.dir.path().join("ran");
    let started = Instant::now();
    let mut cmd = sockit();
    cmd.env_remove(TOKEN_ENV).args(["exec", &srv.addr(), "--token-file", s(&wrong), "-n", "--", "touch", s(&marker)]);
    let r = run(&mut cmd, b"");
    let took = started.elapsed();
    assert_fails(&r, 255, &["token"]);
    assert!(r.stderr.contains("refused") || r.stderr.contains("wrong"), "{:?}", r.stderr);
    assert!(took >= Duration::from_millis(900), "refused after {took:?}: not slowed down");
    assert!(!marker.exists(), "the command ran with a wrong token");
    // The right token still works afterwards.
    assert_ok(&srv.run(&["-n", "--", "touch", s(&marker)], b""), "");
    assert!(marker.exists());
}

/// `serve … exec --once` serves one client; when that client fails to authenticate, the
/// server's exit status says so (it was 0).
#[test]
fn a_once_server_whose_one_client_gives_a_wrong_token_exits_1() {
    let mut srv = ExecServer::start(&["--once"]);
    let wrong = write_token(srv.dir.path(), "wrong", &fresh_token(), 0o600);
    let r =
        run(sockit().env_remove(TOKEN_ENV).args(["exec", &srv.addr(), "--token-file", s(&wrong), "--", "true"]), b"");
    assert_fails(&r, 255, &["token"]);
    let done = srv.server.wait();
    assert_eq!(done.status.code(), Some(1), "{:#?}", done.stderr);
    assert!(
        done.stderr.last().unwrap().contains("its one client's connection failed: protocol error: authentication"),
        "{:#?}",
        done.stderr
    );
}

#[test]
fn a_missing_client_token_is_255_and_says_so() {
    let srv = ExecServer::start(&[]);
    let r = run(sockit().env_remove(TOKEN_ENV).args(["exec", &srv.addr(), "-n", "--", "echo", "x"]), b"");
    assert_fails(&r, 255, &["token"]);
    assert!(r.stdout.is_empty());
}

#[test]
fn an_exposed_token_file_is_refused_by_both_ends() {
    let dir = temp_dir();
    let exposed = write_token(dir.path(), "exposed", &fresh_token(), 0o644);
    let r = run_within(&mut serve_cmd(&["127.0.0.1:0", "exec", "--token-file", s(&exposed)]), b"", PROMPT)
        .expect("the server started with a token file others can read");
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("chmod 600"), "{:?}", r.stderr);
    // The client too.
    let srv = ExecServer::start(&[]);
    let r =
        run(sockit().env_remove(TOKEN_ENV).args(["exec", &srv.addr(), "--token-file", s(&exposed), "--", "true"]), b"");
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("chmod 600"), "{:?}", r.stderr);
}

#[test]
fn the_server_refuses_unsafe_setups() {
    let dir = temp_dir();
    let token = write_token(dir.path(), "token", &fresh_token(), 0o600);
    let refused = |args: &[&str], code: i32, needle: &str| {
        let r = run_within(&mut serve_cmd(args), b"", PROMPT).unwrap_or_else(|| panic!("{args:?} started"));
        assert_eq!(r.code, Some(code), "{args:?}: {:?}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in {:?}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{:?}", r.stderr);
    };
    refused(&["127.0.0.1:0", "exec"], 2, "token");
    refused(&["0.0.0.0:0", "exec", "--token-file", s(&token)], 2, "without TLS");
    refused(&["[::]:0", "exec", "--token-file", s(&token)], 2, "serve it on tls://[::]:0");
    let short = write_token(dir.path(), "short", "tooshort", 0o600);
    let r = run_within(&mut serve_cmd(&["127.0.0.1:0", "exec", "--token-file", s(&short)]), b"", PROMPT)
        .expect("the server started with a short token");
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("16"), "the message should say how long a token must be: {:?}", r.stderr);
    let r = run_within(serve_cmd(&["127.0.0.1:0", "exec"]).env(TOKEN_ENV, "tooshort"), b"", PROMPT)
        .expect("the server started with a short $SOCKIT_TOKEN");
    assert_ne!(r.code, Some(0));
    // --insecure no longer lets plain TCP out (tests/tls.rs serves exec on tls://0.0.0.0:0).
    refused(&["0.0.0.0:0", "exec", "--insecure", "--token-file", s(&token)], 2, "--insecure is gone");
}

#[test]
fn a_token_from_the_environment_works() {
    let token = fresh_token();
    let server = Server::start_cmd({
        let mut c = serve_cmd(&["127.0.0.1:0", "exec"]);
        c.env(TOKEN_ENV, &token);
        c
    });
    let exec = |tok: Option<&str>| {
        let mut c = sockit();
        c.env_remove(TOKEN_ENV).args(["exec", &server.addr(), "-n", "--", "echo", "env"]);
        if let Some(t) = tok {
            c.env(TOKEN_ENV, t);
        }
        run(&mut c, b"")
    };
    assert_ok(&exec(Some(&token)), "env\n");
    assert_fails(&exec(None), 255, &["token"]);
    assert_fails(&exec(Some(&fresh_token())), 255, &["token"]);
}

// ---------------------------------------------------------------------------------------------
// 10. Replay

#[test]
fn a_recorded_exchange_cannot_be_replayed() {
    let srv = ExecServer::start(&[]);
    let log = srv.dir.path().join("log");
    let argv = ["sh", "-c", &format!("echo ran >> {}", s(&log))];
    // Record a good session.
    let mut first = Raw::connect(&srv.addr());
    let (first_nonce, auth) = first.login(&srv.token);
    let exec = frame(msg::EXEC, &exec_body(0, false, &argv));
    first.send_bytes(&exec);
    assert_eq!(first.recv().0, msg::STARTED);
    assert_eq!(first.recv(), (msg::EXIT, exited(0)));
    drop(first);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
    // Replay it on a new connection, all at once as a recording would be.
    let mut second = Raw::connect(&srv.addr());
    let ns = second.hello();
    assert_ne!(ns, first_nonce, "every connection gets a fresh server nonce");
    let mut replay = auth.clone();
    replay.extend_from_slice(&exec);
    second.send_bytes(&replay);
    let started = Instant::now();
    let seen = second.expect_closed();
    let frames = parse_frames(&seen);
    assert_eq!(frames.len(), 1, "expected one ERROR, got {frames:?}");
    assert_eq!(frames[0].0, msg::ERROR);
    assert_eq!(frames[0].1[0], 2, "ERROR code 2: authentication refused; {:?}", String::from_utf8_lossy(&frames[0].1));
    assert!(started.elapsed() >= Duration::from_millis(900), "refused without the delay");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n", "the replayed EXEC ran");
}

// ---------------------------------------------------------------------------------------------
// 11. Unix sockets and peer uids

/// A token-less `exec` server on a Unix socket in a directory anyone may enter.
fn unix_server(extra: &[&str]) -> (Server, tempfile::TempDir, String) {
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let endpoint = format!("unix:{}", s(&dir.path().join("x.sock")));
    let mut args = vec![endpoint.as_str(), "exec", "--mode", "666"];
    args.extend_from_slice(extra);
    let server = Server::start_cmd(serve_cmd(&args));
    (server, dir, endpoint)
}

#[test]
fn a_unix_socket_needs_no_token_for_the_same_uid() {
    let (_server, _dir, endpoint) = unix_server(&[]);
    let r = run(sockit().env_remove(TOKEN_ENV).args(["exec", &endpoint, "-n", "--", "echo", "same uid"]), b"");
    assert_ok(&r, "same uid\n");
    let r = run(sockit().env_remove(TOKEN_ENV).args(["exec", &endpoint, "--", "cat"]), b"piped\0in");
    assert_eq!(r.stdout, b"piped\0in");
}

/// `setpriv` running `sockit ARGS…` as nobody, or `None` (with the reason printed) when this
/// cannot be done here.
fn as_nobody(args: &[&str]) -> Option<Command> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: changing uid needs root");
        return None;
    }
    if !have("setpriv") {
        eprintln!("skipping: setpriv is not installed");
        return None;
    }
    let nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_sockit"))
            .args(args)
            .env_remove(TOKEN_ENV);
        c
    };
    let probe = run(&mut nobody(&["--version"]), b"");
    if probe.code != Some(0) {
        eprintln!("skipping: nobody cannot run the sockit binary here: {}", probe.stderr.trim());
        return None;
    }
    Some(nobody(args))
}

#[test]
fn a_unix_socket_refuses_another_uid_unless_allowed() {
    let (_server, dir, endpoint) = unix_server(&[]);
    let marker = dir.path().join("nobody-ran");
    let Some(mut cmd) = as_nobody(&["exec", &endpoint, "-n", "--", "touch", s(&marker)]) else {
        return;
    };
    let r = run(&mut cmd, b"");
    assert_fails(&r, 255, &["uid 65534"]);
    assert!(!marker.exists(), "a refused uid ran a command");

    let (_server, _dir, endpoint) = unix_server(&["--allow-uid", "65534"]);
    let mut cmd = as_nobody(&["exec", &endpoint, "-n", "--", "id", "-u"]).unwrap();
    // The command runs as the server's user, not the client's.
    // SAFETY: geteuid has no preconditions.
    assert_ok(&run(&mut cmd, b""), &format!("{}\n", unsafe { libc::geteuid() }));
}

// ---------------------------------------------------------------------------------------------
// 12. Protocol abuse

#[test]
fn protocol_errors_end_only_that_connection() {
    let srv = ExecServer::start(&[]);
    // A good session that stays open through all the abuse.
    let mut good = Raw::connect(&srv.addr());
    good.login(&srv.token);

    // Garbage: "GET " as a length is over 1 MiB.
    let mut c = Raw::connect(&srv.addr());
    c.hello();
    c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    c.expect_closed();

    // The largest possible length header, right away.
    let mut c = Raw::connect(&srv.addr());
    c.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    c.expect_closed();

    // EXEC before AUTH: ERROR (protocol) and close; nothing runs.
    let marker = srv.dir.path().join("unauthenticated");
    let mut c = Raw::connect(&srv.addr());
    c.hello();
    c.send(msg::EXEC, &exec_body(0, false, &["touch", s(&marker)]));
    let frames = parse_frames(&c.expect_closed());
    assert!(
        frames.iter().any(|(k, b)| *k == msg::ERROR && b.first() == Some(&3)),
        "expected ERROR code 3, got {frames:?}"
    );

    // An AUTH of the wrong length.
    let mut c = Raw::connect(&srv.addr());
    c.hello();
    c.send(msg::AUTH, &[0; 10]);
    c.expect_closed();

    // A frame cut short by the client's leaving.
    let mut c = Raw::connect(&srv.addr());
    c.hello();
    c.send_bytes(&[0, 0, 0, 65, msg::AUTH, 1, 2, 3]);
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    c.expect_closed();

    // After a good handshake: an unknown type, a message with stray bytes, a server-only message.
    for bad in [frame(0x55, b""), frame(msg::STDIN_EOF, b"x"), frame(msg::STDOUT, b"hi")] {
        let mut c = Raw::connect(&srv.addr());
        c.login(&srv.token);
        c.send_bytes(&bad);
        c.expect_closed();
    }
    // An EXEC without a command, and one with a bad stdin flag.
    for body in [exec_body(0, false, &[]), [0, 0, 0, 0, 7, b'l', b's'].to_vec()] {
        let mut c = Raw::connect(&srv.addr());
        c.login(&srv.token);
        c.send(msg::EXEC, &body);
        c.expect_closed();
    }
    assert!(!marker.exists(), "an unauthenticated EXEC ran");

    // The good session and new clients are served as before.
    let (out, err, exit) = good.run(&["echo", "fine"], None);
    assert_eq!((out, err, exit), (b"fine\n".to_vec(), vec![], exited(0)));
    assert_ok(&srv.run(&["-n", "--", "echo", "new"], b""), "new\n");
}

/// PROTOCOL.md section 5: "A message with bytes left over, an unknown type or a message out of
/// turn is a protocol error: the server answers `ERROR` and closes."
#[test]
fn protocol_errors_after_the_handshake_are_answered_with_error() {
    let srv = ExecServer::start(&[]);
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("unknown type 0x55", frame(0x55, b""), false),
        ("STDIN_EOF with a stray byte", frame(msg::STDIN_EOF, b"x"), false),
        ("STDOUT from the client", frame(msg::STDOUT, b"hi"), false),
        ("EXEC while a command runs", frame(msg::EXEC, &exec_body(0, false, &["true"])), true),
    ];
    let mut missing = Vec::new();
    for (what, bad, while_running) in cases {
        let mut c = Raw::connect(&srv.addr());
        c.login(&srv.token);
        if while_running {
            c.send(msg::EXEC, &exec_body(0, false, &["sleep", "30"]));
            assert_eq!(c.recv().0, msg::STARTED);
        }
        c.send_bytes(&bad);
        let frames = parse_frames(&c.expect_closed());
        if !frames.iter().any(|(k, b)| *k == msg::ERROR && b.first() == Some(&3)) {
            missing.push(format!("{what}: got {frames:?}"));
        }
    }
    assert!(missing.is_empty(), "no ERROR (code 3) before the close: {missing:#?}");
}

#[test]
fn a_raw_session_runs_commands_one_after_another_and_takes_signals() {
    let srv = ExecServer::start(&[]);
    let mut c = Raw::connect(&srv.addr());
    c.login(&srv.token);
    // stdin across messages.
    let (out, err, exit) = c.run(&["cat"], Some(b"through\0stdin\xff"));
    assert_eq!((out.as_slice(), err.as_slice(), exit), (&b"through\0stdin\xff"[..], &b""[..], exited(0)));
    // A command that cannot start leaves the session usable.
    c.send(msg::EXEC, &exec_body(0, false, &["no-such-command-e7x"]));
    let (kind, body) = c.recv();
    assert_eq!((kind, body[0]), (msg::ERROR, 4), "{:?}", String::from_utf8_lossy(&body));
    c.send(msg::EXEC, &exec_body(0, false, &["/etc/passwd"]));
    let (kind, body) = c.recv();
    assert_eq!((kind, body[0]), (msg::ERROR, 5), "{:?}", String::from_utf8_lossy(&body));
    // Signals: a number not on the list (19, SIGSTOP) is ignored, TERM kills.
    c.send(msg::EXEC, &exec_body(0, false, &["sh", "-c", "echo up; exec sleep 30"]));
    assert_eq!(c.recv().0, msg::STARTED);
    assert_eq!(c.recv(), (msg::STDOUT, b"up\n".to_vec()));
    c.send(msg::SIGNAL, &[19]);
    c.send(msg::SIGNAL, &[15]);
    assert_eq!(c.recv(), (msg::EXIT, [1, 0, 0, 0, 15].to_vec()), "killed by signal 15");
    // A time limit in the request.
    c.send(msg::EXEC, &exec_body(200, false, &["sleep", "30"]));
    assert_eq!(c.recv().0, msg::STARTED);
    let (kind, body) = c.recv();
    assert_eq!((kind, body[0]), (msg::EXIT, 2), "timed out");
    // Input crossing an EXIT is ignored, and the session goes on.
    c.send(msg::STDIN, b"late");
    c.send(msg::STDIN_EOF, &[]);
    c.send(msg::SIGNAL, &[15]);
    let (out, _, exit) = c.run(&["echo", "last"], None);
    assert_eq!((out, exit), (b"last\n".to_vec(), exited(0)));
}

// ---------------------------------------------------------------------------------------------
// 13. `sockit shell` without a terminal

#[test]
fn shell_reads_commands_from_stdin() {
    let srv = ExecServer::start(&[]);
    let input = b"echo one\necho \"two  words\"\n\n# a comment\nnosuchcmd-e7x\nexit\necho never\n";
    let r = run(&mut srv.client("shell"), input);
    assert_eq!(r.stdout_text(), "one\ntwo  words\n", "stderr {:?}", r.stderr);
    assert!(r.stderr.contains("nosuchcmd-e7x") && r.stderr.contains("not found"), "{:?}", r.stderr);
    assert!(!r.stderr.contains("never"), "{:?}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{:?}", r.stderr);
    // --shell: each line through sh -c; the end of input ends the session.
    let r = run(srv.client("shell").arg("--shell"), b"echo a | tr a b\necho $((1+1)) >&2\n");
    assert_eq!(r.code, Some(0), "{:?}", r.stderr);
    assert_eq!(r.stdout_text(), "b\n");
    assert_eq!(r.stderr, "2\n");
    // A line that is not UTF-8 is not guessed at: what came before ran, and the shell says
    // where it stopped (it used to stop there in silence, with status 0).
    let r = run(&mut srv.client("shell"), b"echo before\necho \xff\xfe\necho after\n");
    assert_eq!(r.stdout_text(), "before\n");
    assert_eq!(r.code, Some(1), "{:?}", r.stderr);
    assert!(r.stderr.contains("line 2 of the input is not UTF-8 text"), "{:?}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 14. A client written from PROTOCOL.md alone

fn python_exec(srv: &ExecServer, token_file: &Path, argv: &[&str]) -> Ran {
    let client = peers().join("exec_client.py");
    let mut c = Command::new("python3");
    c.arg(client).arg("127.0.0.1").arg(srv.server.port().to_string()).arg(token_file).args(argv);
    run(&mut c, b"")
}

#[test]
fn the_python_client_from_the_protocol_document_works() {
    require!("python3");
    let srv = ExecServer::start(&["--timeout", "1s"]);
    let r = python_exec(&srv, &srv.token_file, &["sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!((r.code, r.stdout_text().as_str(), r.stderr.as_str()), (Some(5), "out\n", "err\n"));
    // Output spanning many messages, in order.
    let r = python_exec(&srv, &srv.token_file, &["seq", "1", "300000"]);
    assert_eq!(r.code, Some(0), "{:?}", r.stderr);
    let want: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert!(r.stdout_text() == want, "seq output differs ({} bytes)", r.stdout.len());
    // A signal, a timeout, a command not found, a wrong token.
    assert_eq!(python_exec(&srv, &srv.token_file, &["sh", "-c", "kill -TERM $$"]).code, Some(143));
    assert_eq!(python_exec(&srv, &srv.token_file, &["sleep", "30"]).code, Some(124));
    let r = python_exec(&srv, &srv.token_file, &["no-such-command-e7x"]);
    assert_eq!(r.code, Some(127));
    assert!(r.stderr.contains("no-such-command-e7x: command not found"), "{:?}", r.stderr);
    let wrong = write_token(srv.dir.path(), "wrong", &fresh_token(), 0o600);
    let r = python_exec(&srv, &wrong, &["true"]);
    assert_eq!(r.code, Some(255), "{:?}", r.stderr);
    assert!(r.stderr.contains("authentication refused (code 2)"), "{:?}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Found while writing these tests

/// PROTOCOL.md section 6: "`EXIT` comes after the last byte of both, once the command has exited;
/// anything it left running in its process group is killed then." A command that exits while a
/// background child of its still holds the output pipes must still get its EXIT at once.
#[test]
fn a_command_that_exits_does_not_wait_for_its_background_children() {
    let srv = ExecServer::start(&[]);
    let started = Instant::now();
    let m = marker(876543);
    let r = run_within(&mut srv.exec(&["-n", "--", "sh", "-c", &format!("sleep {m} & echo hi")]), b"", PROMPT);
    let took = started.elapsed();
    for p in live_with("sleep", &m) {
        // SAFETY: kill(2) on the background sleep this test started.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
    let r = r.unwrap_or_else(|| panic!("no EXIT within {took:?}: the server waits for the background sleep"));
    assert_ok(&r, "hi\n");
    assert!(live_with("sleep", &m).is_empty(), "the background sleep was left running");
}

/// PROTOCOL.md section 6: the command gets "all signals at their default disposition", and
/// `SIGNAL` delivers 10 (SIGUSR1) to it. A server started with a signal blocked passes the block
/// on (so SIGNAL 10 would do nothing) and a real-time signal it inherited as ignored (the C
/// library's reserved ones included) would stay ignored, unless `spawn` resets both.
#[test]
fn the_command_gets_an_empty_signal_mask_and_no_ignored_realtime_signals() {
    let srv = ExecServer::start_with(&[], blocking_parent);
    let mut c = Raw::connect(&srv.addr());
    c.login(&srv.token);
    c.send(msg::EXEC, &exec_body(0, false, &["sh", "-c", "echo up; exec sleep 30"]));
    assert_eq!(c.recv().0, msg::STARTED);
    assert_eq!(c.recv(), (msg::STDOUT, b"up\n".to_vec()));
    c.send(msg::SIGNAL, &[10]);
    c.s.set_read_timeout(Some(PROMPT)).unwrap();
    let mut header = [0u8; 4];
    let killed = c.s.read_exact(&mut header).is_ok();
    drop(c);
    let r = srv.run(&["-n", "--", "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"], b"");
    let (blocked, ignored) = signal_masks(&r.stdout_text());
    assert!(
        killed && blocked == 0 && ignored == 0,
        "SIGNAL 10 killed the command: {killed}; the command's masks: {:?}",
        r.stdout_text()
    );
}

/// Output still in the pipes and the channel when the command exits is all delivered, however
/// slowly the client reads: only the pipe readers give up after the drain limit, never the
/// writing of what was read.
#[test]
fn output_left_when_the_command_exits_arrives_whole_for_a_slow_reader() {
    let srv = ExecServer::start(&[]);
    let mut child = spawn_piped(srv.exec(&["-n", "--", "head", "-c", "3000000", "/dev/zero"]));
    drop(child.stdin.take());
    // Read nothing for longer than the drain limit, then everything.
    std::thread::sleep(Duration::from_secs(3));
    let out = drain(child.stdout.take().unwrap());
    let status = support::wait_bounded(&mut child, Duration::from_secs(30)).expect("the client finished");
    assert_eq!(out.join().unwrap().len(), 3_000_000);
    assert_eq!(status.code(), Some(0));
}

/// The clients of sockit's protocols at a server of another kind: a chat server's welcome was
/// read as a length ("a 706770789-byte message exceeds the 1048576-byte limit"); an echo server,
/// which waits for its client as the client waits for its HELLO, gave "the handshake did not
/// finish within 10s" after ten seconds, with no word of why. Each kind of client, each with its
/// own exit status for a failed connection (255 for exec, as ssh; 1 for the files clients).
#[test]
fn a_client_at_a_server_of_another_kind_says_what_it_met() {
    let dir = temp_dir();
    let token = write_token(dir.path(), "token", &fresh_token(), 0o600);
    let clients = |addr: &str| -> Vec<(Vec<String>, i32)> {
        let t = s(&token);
        [
            (vec!["exec", addr, "--token-file", t, "--", "true"], 255),
            (vec!["shell", addr, "--token-file", t], 255),
            (vec!["ls", addr, "--token-file", t], 1),
            (vec!["get", addr, "--token-file", t, "file", s(&dir.path().join("got"))], 1),
        ]
        .into_iter()
        .map(|(args, code)| (args.into_iter().map(String::from).collect(), code))
        .collect()
    };
    // A server that speaks first is named at once, by its first line.
    let chat = Server::start(&["127.0.0.1:0", "chat"]);
    for (args, code) in clients(&chat.addr()) {
        let started = Instant::now();
        let ran = run(sockit().env_remove(TOKEN_ENV).args(&args), b"");
        assert_fails(&ran, code, &["is not a sockit", "it sent \"* welcome, guest"]);
        assert!(ran.stderr.contains(if args[0] == "ls" || args[0] == "get" { "files server" } else { "exec server" }));
        assert!(started.elapsed() < PROMPT, "{args:?} took {:?}", started.elapsed());
    }
    // One that waits for its client is named when the deadline passes; all at once, so that the
    // test waits ten seconds, not forty.
    let echo = Server::start(&["127.0.0.1:0", "echo"]);
    let waiting: Vec<_> = clients(&echo.addr())
        .into_iter()
        .map(|(args, code)| {
            let started = Instant::now();
            std::thread::spawn(move || (run(sockit().env_remove(TOKEN_ENV).args(&args), b""), code, started.elapsed()))
        })
        .collect();
    for w in waiting {
        let (ran, code, took) = w.join().unwrap();
        assert_fails(&ran, code, &["sent no handshake within 10s", "a plain server such as echo", "use tls://"]);
        assert!(took >= Duration::from_secs(9) && took < LIMIT, "{took:?}");
    }
    assert!(!dir.path().join("got").exists());
}

/// A server at its --max-conns limit tells an exec client so, in a message it can read.
#[test]
fn a_busy_server_refuses_with_a_readable_error() {
    let srv = ExecServer::start(&["--max-conns", "1"]);
    let mut first = spawn_piped(srv.exec(&["-n", "--", "sh", "-c", "echo up; sleep 5"]));
    let up = read_line_within(first.stdout.take().unwrap(), Duration::from_secs(10));
    assert_eq!(up, "up\n");
    let r = srv.run(&["-n", "--", "true"], b"");
    assert_fails(&r, 255, &["server busy"]);
    let _ = first.kill();
    let _ = first.wait();
}

/// The command does not see the server's token, and has no controlling terminal.
#[test]
fn the_command_gets_neither_the_token_nor_a_terminal() {
    let srv = ExecServer::start_with(&[], |cmd| {
        cmd.env("SOCKIT_TOKEN", "a-token-the-command-must-not-see");
    });
    let r = srv.run(
        &[
            "-n",
            "--",
            "sh",
            "-c",
            "echo ${SOCKIT_TOKEN:-none}; if (: </dev/tty) 2>/dev/null; then echo tty; else echo no-tty; fi",
        ],
        b"",
    );
    assert_eq!(r.stdout_text(), "none\nno-tty\n", "stderr {:?}", r.stderr);
}

/// A command that exits in time is never reported as timed out, even when its output is still
/// being written when the time limit passes.
#[test]
fn a_command_that_exits_in_time_is_not_a_timeout() {
    let srv = ExecServer::start(&[]);
    let mut child = spawn_piped(srv.exec(&["-n", "--timeout", "1s", "--", "head", "-c", "2000000", "/dev/zero"]));
    drop(child.stdin.take());
    std::thread::sleep(Duration::from_millis(1500));
    let out = drain(child.stdout.take().unwrap());
    let status = support::wait_bounded(&mut child, Duration::from_secs(30)).expect("the client finished");
    assert_eq!(out.join().unwrap().len(), 2_000_000);
    assert_eq!(status.code(), Some(0), "reported as a timeout");
}

/// With --idle-timeout, a client that stops reading a command's output is idle: the command is
/// killed and the session ends, instead of both waiting forever.
#[test]
fn a_client_that_stops_reading_output_is_idle() {
    let srv = ExecServer::start(&["--idle-timeout", "1s"]);
    let m = marker(765432);
    let mut child = spawn_piped(srv.exec(&["-n", "--", "sh", "-c", &format!("yes & exec sleep {m}")]));
    drop(child.stdin.take());
    wait_until("the command runs", Duration::from_secs(10), || !live_with("sleep", &m).is_empty());
    // Never read the client's stdout: the client blocks, the server's writes stall.
    wait_until("the command is killed", Duration::from_secs(20), || live_with("sleep", &m).is_empty());
    let _ = child.kill();
    let _ = child.wait();
}
