//! What every integration test shares: starting the real `sockit` binary and the seed programs
//! on port 0 (or a temporary Unix path), learning the address they bound from what they print,
//! and running commands with a bound on every wait. No fixed ports, no sleeps to wait for a
//! server: a server is ready when it says so.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The `sockit` binary under test.
pub fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// The directory of the Python peers (seed programs and helpers).
pub fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// A seed program's path.
pub fn seed(name: &str) -> PathBuf {
    peers().join("seeds").join(name)
}

/// Whether a command is installed.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Skips the test (returning early) with a printed reason when `tool` is missing.
#[macro_export]
macro_rules! require {
    ($tool:expr) => {
        if !$crate::support::have($tool) {
            eprintln!("skipping: {} is not installed (.ci/run installs it)", $tool);
            return;
        }
    };
}

/// Lines a child process writes, collected by a thread as they arrive.
#[derive(Clone)]
pub struct Lines {
    all: Arc<Mutex<Vec<String>>>,
    rx: Arc<Mutex<Receiver<String>>>,
    reader: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Lines {
    /// Starts collecting the lines of `stream` (a child's stdout or stderr).
    pub fn collect(stream: impl Read + Send + 'static) -> Lines {
        let all = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = all.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { all, rx: Arc::new(Mutex::new(rx)), reader: Arc::new(Mutex::new(Some(reader))) }
    }

    /// Waits until the process's end of the pipe is closed and every line is collected.
    pub fn finish(&self) -> Vec<String> {
        if let Some(reader) = self.reader.lock().unwrap().take() {
            let _ = reader.join();
        }
        self.snapshot()
    }

    /// Waits for the next line that satisfies `pred`, failing the test after [`LIMIT`].
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        let rx = self.rx.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line {what} within {LIMIT:?}; saw: {:#?}", self.all.lock().unwrap()),
            }
        }
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }
}

/// A running `sockit serve`.
pub struct Server {
    child: Option<Child>,
    /// The endpoint it reported, e.g. `tcp://127.0.0.1:43210` or `unix:///tmp/x/s.sock`.
    pub endpoint: String,
    pub stderr: Lines,
    pub stdout: Lines,
}

/// How a process ended and what it wrote.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: Vec<String>,
    pub stdout: Vec<String>,
}

impl Finished {
    /// The summary line (`sockit: stopped after …`). Not always the last line: the notice that
    /// shutdown began is written by another thread and may come after it.
    pub fn summary(&self) -> &str {
        self.stderr
            .iter()
            .rev()
            .find(|l| l.starts_with("sockit: stopped"))
            .unwrap_or_else(|| panic!("no summary line in {:#?}", self.stderr))
    }
}

impl Server {
    /// Starts `sockit serve ARGS…` and waits until it reports where it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = sockit();
        cmd.arg("serve").args(args);
        Server::start_cmd(cmd)
    }

    /// Starts a server from a prepared command (`sockit serve …` with its own environment or
    /// other settings) and waits until it reports where it listens.
    pub fn start_cmd(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::piped());
        Server::launch(cmd)
    }

    /// Starts a server whose stdout goes to `file` (for bytes that are not lines), and waits
    /// until it reports where it listens; its `stdout` collects nothing.
    pub fn start_writing_to(mut cmd: Command, file: std::fs::File) -> Server {
        cmd.stdout(file);
        Server::launch(cmd)
    }

    fn launch(mut cmd: Command) -> Server {
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn sockit serve");
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let stdout = match child.stdout.take() {
            Some(out) => Lines::collect(out),
            None => Lines::collect(std::io::empty()),
        };
        // From here on a guard owns the child, so a failed start (a panic below) still kills
        // it instead of leaving a server running after the test.
        let mut guard = Server { child: Some(child), endpoint: String::new(), stderr, stdout };
        let banner = guard.stderr.wait_for("'sockit: serving …'", |l| l.starts_with("sockit: "));
        let on = if let Some(rest) = banner.strip_prefix("sockit: relaying ") {
            rest
        } else {
            assert!(banner.starts_with("sockit: serving "), "server failed to start: {banner}");
            banner.split(" on ").nth(1).expect("banner names the endpoint")
        };
        guard.endpoint = on.split(' ').next().unwrap().to_owned();
        guard
    }

    /// Starts `sockit relay ARGS…` and waits until it reports where it listens.
    pub fn relay(args: &[&str]) -> Server {
        let mut cmd = sockit();
        cmd.arg("relay").args(args);
        Server::start_cmd(cmd)
    }

    /// `HOST:PORT` of an IP server (the `tcp://` or `udp://` stripped).
    pub fn addr(&self) -> String {
        self.endpoint.split("://").nth(1).expect("an IP endpoint").to_owned()
    }

    /// The port of an IP server.
    pub fn port(&self) -> u16 {
        self.addr().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Asks for an orderly shutdown (SIGINT) and waits for the server to exit.
    pub fn stop(mut self) -> Finished {
        self.signal(libc::SIGINT);
        self.wait()
    }

    /// Waits for the server to exit by itself (e.g. with --once).
    pub fn wait(&mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let status = wait_bounded(&mut child, LIMIT).expect("server did not exit in time");
        Finished { status, stderr: self.stderr.finish(), stdout: self.stdout.finish() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child for at most `limit`; kills it and returns `None` when time runs out.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts a failure with `code` and exactly one line on stderr containing every needle.
#[track_caller]
pub fn assert_fails(ran: &Ran, code: i32, needles: &[&str]) {
    let what = format!("stdout {:?}, stderr {:?}", ran.stdout_text(), ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "panic! {what}");
    assert_eq!(ran.code, Some(code), "exit code; {what}");
    assert_eq!(ran.stderr.lines().count(), 1, "expected one line on stderr; {what}");
    for n in needles {
        assert!(ran.stderr.contains(n), "expected {n:?}; {what}");
    }
}

/// The result of a bounded command run.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Ran {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` with `input` on stdin, failing the test if it takes longer than [`LIMIT`].
pub fn run(cmd: &mut Command, input: &[u8]) -> Ran {
    run_within(cmd, input, LIMIT).unwrap_or_else(|| panic!("{cmd:?} did not finish within {LIMIT:?}"))
}

/// Runs `cmd` with `input` on stdin for at most `limit`; `None` if it had to be killed.
pub fn run_within(cmd: &mut Command, input: &[u8], limit: Duration) -> Option<Ran> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, limit)?;
    let _ = writer.join();
    Some(Ran { code: status.code(), stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() })
}

/// `sockit ARGS…` with `input` on stdin.
pub fn sockit_run(args: &[&str], input: &[u8]) -> Ran {
    run(sockit().args(args), input)
}

/// A seed server (Python) running on port 0 through `launch.py`.
pub struct PythonServer {
    child: Child,
    pub port: u16,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl PythonServer {
    /// Starts `python3 launch.py SEED 127.0.0.1 ARGS…` and waits for its `READY port`.
    pub fn start(seed_name: &str, args: &[&str]) -> PythonServer {
        let mut child = Command::new("python3")
            .arg(peers().join("launch.py"))
            .arg(seed(seed_name))
            .arg("127.0.0.1")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let mut guard = PythonServer { child, port: 0, stdout, stderr };
        let ready = guard.stderr.wait_for("READY", |l| l.starts_with("READY "));
        guard.port = ready[6..].trim().parse().unwrap();
        guard
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for the server to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        wait_bounded(&mut self.child, LIMIT).expect("python server did not exit in time")
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a seed client: `python3 SEED 127.0.0.1 PORT ARGS…` with `input` on stdin.
pub fn python_client(seed_name: &str, host: &str, port: u16, args: &[&str], input: &[u8]) -> Ran {
    run(Command::new("python3").arg(seed(seed_name)).arg(host).arg(port.to_string()).args(args), input)
}

/// Runs inline Python code with `ARGS…` as sys.argv[1:].
pub fn python(code: &str, args: &[&str], input: &[u8]) -> Ran {
    run(Command::new("python3").arg("-c").arg(code).args(args), input)
}

/// Connects to an IP server at `addr` (`HOST:PORT`), Nagle off, with `timeout` on the connect
/// and on every read and write, so that no test can hang on it.
pub fn tcp_within(addr: &str, timeout: Duration) -> std::net::TcpStream {
    let sa: std::net::SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let s = std::net::TcpStream::connect_timeout(&sa, LIMIT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// [`tcp_within`] with [`LIMIT`].
pub fn tcp(addr: &str) -> std::net::TcpStream {
    tcp_within(addr, LIMIT)
}

/// Connects to a Unix stream server at `path`, with [`LIMIT`] on every read and write.
pub fn unix(path: &Path) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Reads exactly `n` bytes (bounded by the stream's read timeout).
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// A fresh temporary directory (removed when dropped).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sockit-test-").tempdir().expect("temp dir")
}

// ---------------------------------------------------------------------------------------------
// Timing and tokens

/// How long something that should happen at once (a refusal, a close, a kill) may take on a
/// loaded machine. Well under [`LIMIT`] and well under the sleeps of the commands that must not
/// be waited for.
pub const PROMPT: Duration = Duration::from_secs(5);

/// The environment variable a token may come from; tests clear it unless they test it.
pub const TOKEN_ENV: &str = "SOCKIT_TOKEN";

/// A token no other test uses, at least 16 bytes.
pub fn fresh_token() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("test-token-{}-{}-0123456789abcdef", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Writes `content` (and a final newline, which the token loses) to `dir/name` with `mode`.
pub fn write_token(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.write_all(b"\n").unwrap();
    // The umask may have taken bits away; the mode is part of what some tests test.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `sockit serve ARGS…` with no token in its environment.
pub fn serve_cmd(args: &[&str]) -> Command {
    let mut c = sockit();
    c.env_remove(TOKEN_ENV).arg("serve").args(args);
    c
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Spawns `cmd` with stdin, stdout and stderr piped.
pub fn spawn_piped(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// Reads one line from `r` within `within` (on a thread, so a silent peer cannot hang the test).
pub fn read_line_within(r: impl Read + Send + 'static, within: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(r).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within).unwrap_or_else(|_| panic!("no line within {within:?}"))
}

/// Reads the rest of `r` on a thread.
pub fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// A number no other test and no other run of this file uses, to find a command's processes by
/// their command line: `base`, then this test process's id.
pub fn marker(base: u64) -> String {
    format!("{base}{:07}", std::process::id())
}

/// Polls `done` until it holds, failing the test with `what` after `within`.
#[track_caller]
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes, as /proc shows them

/// A process as /proc shows it.
#[derive(Debug)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub comm: String,
    pub cmdline: String,
}

/// Every process on the machine (those that vanish while we look are skipped).
pub fn processes() -> Vec<Proc> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses; it ends at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        all.push(Proc { pid, ppid, state, comm, cmdline });
    }
    all
}

/// Live (not zombie) processes named `comm` whose command line contains `marker`.
pub fn live_with(comm: &str, marker: &str) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.comm == comm && p.state != 'Z' && p.cmdline.contains(marker)).collect()
}

/// Zombie children of `pid`.
pub fn zombie_children(pid: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.ppid == pid && p.state == 'Z').collect()
}

// ---------------------------------------------------------------------------------------------
// Careless parents: what a server's programs must not inherit

/// Starts the server with an extra descriptor (fd 9, not close-on-exec) and SIGPIPE, SIGINT,
/// SIGQUIT and SIGHUP ignored, as a careless parent might: the command must get none of it.
pub fn careless_parent(cmd: &mut Command) {
    // SAFETY: dup2, signal and sigprocmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::dup2(2, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
}

/// Starts the server with SIGUSR1 blocked and the real-time signal SIGRTMIN+1 ignored.
pub fn blocking_parent(cmd: &mut Command) {
    // SAFETY: signal and sigprocmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGRTMIN() + 1, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// The `SigBlk` and `SigIgn` masks in a /proc/PID/status text.
pub fn signal_masks(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status:?}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (field("SigBlk:"), field("SigIgn:"))
}

/// Signals 1 to 31, the standard ones (bit N-1 is signal N).
pub const STANDARD_SIGNALS: u64 = 0x7fff_ffff;

/// A small file system mounted for a test, unmounted when dropped, even when the test fails.
pub struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Mounts a 4 MiB tmpfs on `dir` (created here), to fill it. `None`, with the reason printed
/// for `test`, when that cannot be done (not root, or mount fails): the test then skips.
pub fn small_tmpfs(test: &str, dir: &Path) -> Option<Mounted> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: mounting a small tmpfs needs root");
        return None;
    }
    std::fs::create_dir(dir).unwrap();
    let target = dir.to_str().expect("a UTF-8 path");
    match Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", target]).output() {
        Ok(out) if out.status.success() => Some(Mounted(dir.to_path_buf())),
        Ok(out) => {
            eprintln!("skipping {test}: mount failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            None
        }
        Err(e) => {
            eprintln!("skipping {test}: cannot run mount: {e}");
            None
        }
    }
}

/// The message kinds and error codes of the `files` protocol (PROTOCOL.md sections 5 and 7), for
/// tests that speak it by hand.
pub mod files_wire {
    pub const HELLO: u8 = 0x01;
    pub const LIST: u8 = 0x30;
    pub const ENTRIES: u8 = 0x31;
    pub const END: u8 = 0x32;
    pub const GET: u8 = 0x40;
    pub const FILE: u8 = 0x41;
    pub const DONE: u8 = 0x43;
    pub const PUT: u8 = 0x50;
    pub const READY: u8 = 0x51;
    pub const FROM: u8 = 0x52;
    pub const STORED: u8 = 0x53;
    pub const ERROR: u8 = 0x7F;
    /// ERROR codes: a protocol error, and file-system errors (16 + the error's own code).
    pub const PROTOCOL_ERROR: u8 = 3;
    pub const BAD_PATH: u8 = 16 + 1;
    pub const OUTSIDE: u8 = 16 + 2;
    pub const NOT_FOUND: u8 = 16 + 3;
    pub const NOT_A_FILE: u8 = 16 + 6;
    pub const BUSY: u8 = 16 + 9;
}
