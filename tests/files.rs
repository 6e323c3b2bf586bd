//! The `files` service and its clients `sockit put`, `get` and `ls`, end to end through the real
//! binary: byte-exact round trips, gigabyte transfers in constant memory, confinement to the
//! served directory, clear errors that leave nothing behind, a full disk, atomic publication
//! under concurrency, `kill -9` of either side in the middle of a transfer and `--resume` after
//! it, resuming over a damaged partial file, authentication, and a server that keeps serving
//! whatever one connection does.
//!
//! Big files are made on /dev/shm when it has room (it is memory, so fast), and the tests that
//! move hundreds of MiB take one lock so that they never run at the same time. The middle of a
//! transfer is found by watching its partial file grow, never by sleeping; a client that must
//! stay in the middle is stopped with SIGSTOP. The wire-level tests speak PROTOCOL.md section 5
//! with their own encoder, not sockit's.

mod support;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// How long one big transfer may take (a debug build on a busy machine).
const BIG_LIMIT: Duration = Duration::from_secs(180);

/// The size of the transfers that are interrupted in the middle, and how far they get first.
const MIDDLE_SIZE: u64 = 512 * MIB + 4321;
const MIDDLE_AT: u64 = 64 * MIB;

// ---------------------------------------------------------------------------------------------
// Helpers: places, processes, files

/// Tests that move hundreds of MiB hold this lock, so that their files (on /dev/shm, which is
/// memory) and their CPU time do not add up when the harness runs tests in parallel.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A working directory: `root/` is served, `client/` is where the clients run, `s.sock` is the
/// server's socket.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place::with(temp_dir())
    }

    fn with(dir: tempfile::TempDir) -> Place {
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("client")).unwrap();
        Place { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn client(&self) -> PathBuf {
        self.path("client")
    }

    fn socket(&self) -> PathBuf {
        self.path("s.sock")
    }

    fn serve(&self, extra: &[&str]) -> Server {
        serve_files(&self.root(), &self.socket(), extra)
    }
}

/// `sockit serve unix:SOCKET files --root ROOT EXTRA…`, without a token from the environment.
fn serve_files(root: &Path, socket: &Path, extra: &[&str]) -> Server {
    let mut cmd = sockit();
    cmd.env_remove("SOCKIT_TOKEN").arg("serve").arg(format!("unix:{}", s(socket)));
    cmd.args(["files", "--root", s(root)]).args(extra);
    Server::start_cmd(cmd)
}

/// `sockit ARGS…` to run in `dir`, without a token from the environment.
fn client(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.env_remove("SOCKIT_TOKEN").current_dir(dir).args(args);
    cmd
}

/// A running process whose output is collected; killed if dropped unfinished.
struct Proc {
    child: Child,
    pid: u32,
    started: Instant,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<String>>,
}

/// How a [`Proc`] ended.
struct Done {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    pid: u32,
    took: Duration,
}

fn start(mut cmd: Command) -> Proc {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    Proc { child, pid, started, out: Some(out), err: Some(err) }
}

impl Proc {
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped before `finish`.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Waits for the end, failing the test after `limit`.
    fn finish(mut self, limit: Duration) -> Done {
        let status = wait_bounded(&mut self.child, limit)
            .unwrap_or_else(|| panic!("process {} did not finish within {limit:?}", self.pid));
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr = self.err.take().unwrap().join().unwrap();
        Done {
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
            pid: self.pid,
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sockit ARGS…` in `dir` to its end (within [`LIMIT`]).
fn run_in(dir: &Path, args: &[&str]) -> Done {
    start(client(dir, args)).finish(LIMIT)
}

#[track_caller]
fn assert_ok(d: &Done) {
    assert!(!d.stderr.contains("panicked"), "panic! stderr: {}", d.stderr);
    assert_eq!(d.code, Some(0), "expected success; stderr: {:?}", d.stderr);
}

/// Asserts a runtime failure: exit 1, one line `sockit: …` on stderr that contains one of
/// `any`, nothing on stdout, no panic.
#[track_caller]
fn assert_fails(d: &Done, any: &[&str]) {
    let what = format!("stderr: {:?}, stdout: {:?}", d.stderr, String::from_utf8_lossy(&d.stdout));
    assert!(!d.stderr.contains("panicked"), "panic! {what}");
    assert_eq!(d.code, Some(1), "exit code; {what}");
    assert_eq!(d.stderr.lines().count(), 1, "expected one line; {what}");
    assert!(d.stderr.starts_with("sockit: "), "{what}");
    assert!(any.iter().any(|n| d.stderr.contains(n)), "expected one of {any:?}; {what}");
    assert!(d.stdout.is_empty(), "{what}");
}

/// The server's log line for the connection of client process `pid` (a Unix peer is logged as
/// `unix(pid N, uid U): …`), waiting for it: it is written once the server is done with that
/// connection, so it is also the signal that the connection's partial file is closed.
fn conn_line(server: &Server, pid: u32) -> String {
    let prefix = format!("unix(pid {pid}, ");
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(line) = server.stderr.snapshot().into_iter().rev().find(|l| l.starts_with(&prefix)) {
            return line;
        }
        assert!(Instant::now() < deadline, "no log line for pid {pid}; saw {:#?}", server.stderr.snapshot());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The byte count a log line gives for `dir` ("in" or "out"), e.g. 1.5 MiB: exact below 1 KiB,
/// otherwise to within 0.05 of the unit shown.
fn logged(line: &str, dir: &str) -> u64 {
    let (_, fields) = line.split_once("): ").unwrap_or_else(|| panic!("not a connection line: {line}"));
    let suffix = format!(" {dir}");
    let field =
        fields.split(", ").find_map(|f| f.strip_suffix(&suffix)).unwrap_or_else(|| panic!("no bytes {dir} in {line}"));
    let (number, unit) = field.split_once(' ').unwrap();
    let scale = match unit {
        "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => panic!("unknown unit in {line}"),
    };
    (number.parse::<f64>().unwrap() * scale as f64) as u64
}

/// Everything under `dir`, hidden entries too, symbolic links not followed: relative path →
/// `dir`, `link -> TARGET`, or `file SIZE HASH`.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                walk(&path, base, out);
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_file() {
                format!("file {} {}", meta.len(), blake3::hash(&fs::read(&path).unwrap()).to_hex())
            } else {
                "other".to_owned()
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names in `dir`, hidden ones too (`ls -A`), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".sockit-part")
}

/// The names in `dir` other than hidden partial files.
fn visible(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| !is_partial(n)).collect()
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[track_caller]
fn assert_file(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!("{}: {} bytes, expected {}; first difference at {at:?}", path.display(), got.len(), want.len());
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new().update(b"bytes").update(&seed.to_le_bytes()).finalize_xof().fill(&mut v);
    v
}

/// File contents that are random but reproducible from a seed, and cheap to make and check at
/// gigabyte sizes: one random MiB, repeated, with each block's index written into its first 8
/// bytes so that no two blocks are alike (a misplaced, lost or repeated block shows).
struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        Pattern { block: random_bytes(MIB as usize, seed) }
    }

    fn fill(&self, index: u64, buf: &mut [u8]) {
        buf.copy_from_slice(&self.block);
        buf[..8].copy_from_slice(&index.to_le_bytes());
    }

    /// Writes the first `size` bytes of the pattern to `path`.
    fn write(&self, path: &Path, size: u64) {
        let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut buf = vec![0u8; MIB as usize];
        let (mut pos, mut index) = (0, 0);
        while pos < size {
            self.fill(index, &mut buf);
            let n = (size - pos).min(MIB) as usize;
            f.write_all(&buf[..n]).unwrap();
            pos += n as u64;
            index += 1;
        }
    }

    fn bytes(&self, size: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(size as usize);
        let mut buf = vec![0u8; MIB as usize];
        let mut index = 0;
        while (out.len() as u64) < size {
            self.fill(index, &mut buf);
            let n = (size - out.len() as u64).min(MIB) as usize;
            out.extend_from_slice(&buf[..n]);
            index += 1;
        }
        out
    }

    /// Why `path` is not exactly the first `size` bytes of the pattern, if it is not.
    fn difference(&self, path: &Path, size: u64) -> Option<String> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let have = f.metadata().unwrap().len();
        if have != size {
            return Some(format!("{}: {have} bytes, expected {size}", path.display()));
        }
        let (mut want, mut got) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        let (mut pos, mut index) = (0, 0);
        while pos < size {
            let n = (size - pos).min(MIB) as usize;
            self.fill(index, &mut want);
            if let Err(e) = f.read_exact(&mut got[..n]) {
                return Some(format!("{}: reading at {pos}: {e}", path.display()));
            }
            if got[..n] != want[..n] {
                let at = pos + got.iter().zip(&want).position(|(a, b)| a != b).unwrap() as u64;
                return Some(format!("{}: first difference at byte {at}", path.display()));
            }
            pos += n as u64;
            index += 1;
        }
        None
    }

    #[track_caller]
    fn check(&self, path: &Path, size: u64) {
        if let Some(why) = self.difference(path, size) {
            panic!("content is not exact: {why}");
        }
    }
}

/// Flips `n` bytes of `path` at `offset`.
fn damage(path: &Path, offset: u64, n: usize) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf.iter_mut().for_each(|b| *b ^= 0xA5);
    f.write_all_at(&buf, offset).unwrap();
}

/// Waits until `path` holds at least `at_least` bytes while the transfer `proc` still runs: its
/// middle. Fails if the transfer ends first.
#[track_caller]
fn wait_for_size(path: &Path, at_least: u64, proc: &mut Proc) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if len(path) >= at_least {
            return;
        }
        assert!(proc.running(), "the transfer ended before {} held {at_least} bytes", path.display());
        assert!(Instant::now() < deadline, "{} did not reach {at_least} bytes within {LIMIT:?}", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn free_space(dir: &Path) -> u64 {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

fn mem_available() -> u64 {
    let info = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(u64::MAX, |k| k * KIB)
}

/// A temporary directory for a test whose files come to `size` bytes each and that keeps at
/// most three at once: on /dev/shm when it (and memory, which it uses) has room for three; on
/// disk for files up to 1 GiB otherwise; `None`, with the reason printed, when neither has room.
fn big_dir(size: u64, test: &str) -> Option<tempfile::TempDir> {
    let need = 3 * size;
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && free_space(shm) >= need
        && mem_available() >= need
        && let Ok(dir) = tempfile::Builder::new().prefix("sockit-test-").tempdir_in(shm)
    {
        return Some(dir);
    }
    let tmp = std::env::temp_dir();
    if size <= GIB && free_space(&tmp) >= need {
        eprintln!("{test}: /dev/shm lacks room for {need} bytes; using {}", tmp.display());
        return Some(temp_dir());
    }
    eprintln!(
        "skipping {test}: it needs {need} bytes (3 x {size}) free; /dev/shm has {}, memory {}, {} has {}",
        free_space(shm),
        mem_available(),
        tmp.display(),
        free_space(&tmp)
    );
    None
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`); `None` once the process is gone.
fn status_bytes(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * KIB)
}

/// Samples a process's resident memory every 10 ms until stopped or the process is gone.
struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u32)>,
}

impl RssWatch {
    fn start(pid: i32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::SeqCst) {
                let Some(rss) = status_bytes(pid, "VmRSS") else { break };
                peak = peak.max(rss);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, samples)
        });
        RssWatch { stop, thread }
    }

    /// The highest sample and how many were taken.
    fn stop(self) -> (u64, u32) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Puts a fresh small file and checks it arrived: the server still serves.
#[track_caller]
fn assert_serves(ep: &str, client_dir: &Path, root: &Path, name: &str) {
    let data = random_bytes(10_000, name.len() as u64);
    fs::write(client_dir.join(name), &data).unwrap();
    assert_ok(&run_in(client_dir, &["put", ep, name]));
    assert_file(&root.join(name), &data);
}

/// `sockit ls` lines as (name with its `/` or `@` suffix, size).
fn ls_lines(stdout: &[u8]) -> Vec<(String, u64)> {
    let text = String::from_utf8(stdout.to_vec()).expect("ls output is UTF-8");
    text.lines()
        .map(|line| {
            // "{size:>12}  YYYY-MM-DD HH:MM:SS  NAME"
            let mut parts = line.trim_start().splitn(3, "  ");
            let size = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("no size in {line:?}"));
            let when = parts.next().unwrap_or_else(|| panic!("no time in {line:?}"));
            assert_eq!(when.len(), 19, "time in {line:?}");
            (parts.next().unwrap_or_else(|| panic!("no name in {line:?}")).to_owned(), size)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A client of the wire protocol (PROTOCOL.md section 5), written from the document

use support::files_wire::*;

/// A `files` session on a Unix socket served without a token.
struct Raw {
    s: UnixStream,
}

impl Raw {
    fn connect(socket: &Path) -> Raw {
        let s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        let mut raw = Raw { s };
        let (kind, body) = raw.recv().expect("HELLO");
        assert_eq!(kind, HELLO, "{body:?}");
        // version 1, service 2 (files), auth 0, a 32-byte nonce
        assert_eq!(body.len(), 35, "{body:?}");
        assert_eq!(&body[..3], &[1, 2, 0]);
        raw
    }

    fn send(&mut self, kind: u8, body: &[u8]) {
        let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        frame.push(kind);
        frame.extend_from_slice(body);
        self.s.write_all(&frame).unwrap();
    }

    /// The next message; `None` at the end of the connection.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        match self.s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => return None,
            Err(e) => panic!("reading a message: {e}"),
        }
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut payload).expect("a whole message");
        assert!(!payload.is_empty(), "an empty message");
        let kind = payload.remove(0);
        Some((kind, payload))
    }

    #[track_caller]
    fn expect(&mut self, want: u8) -> Vec<u8> {
        match self.recv() {
            Some((kind, body)) if kind == want => body,
            Some((ERROR, body)) => {
                panic!("expected {want:#x}, got ERROR {} {}", body[0], String::from_utf8_lossy(&body[1..]))
            }
            other => panic!("expected {want:#x}, got {other:?}"),
        }
    }

    /// The code and text of the ERROR that must come next.
    #[track_caller]
    fn expect_error(&mut self) -> (u8, String) {
        let body = self.expect(ERROR);
        (body[0], String::from_utf8(body[1..].to_vec()).unwrap())
    }

    /// Lists `dir`: (kind, size, name) of each entry.
    fn list(&mut self, dir: &[u8]) -> Vec<(u8, u64, String)> {
        self.send(LIST, dir);
        let mut out = Vec::new();
        loop {
            let (kind, body) = self.recv().expect("ENTRIES or END");
            match kind {
                ENTRIES => {
                    let mut b = &body[..];
                    while !b.is_empty() {
                        let size = u64::from_be_bytes(b[1..9].try_into().unwrap());
                        let n = u16::from_be_bytes(b[17..19].try_into().unwrap()) as usize;
                        out.push((b[0], size, String::from_utf8(b[19..19 + n].to_vec()).unwrap()));
                        b = &b[19 + n..];
                    }
                }
                END => return out,
                _ => panic!("expected ENTRIES or END, got {kind:#x} {body:?}"),
            }
        }
    }

    fn get(&mut self, path: &[u8]) {
        let mut body = 0u64.to_be_bytes().to_vec();
        body.extend_from_slice(blake3::hash(b"").as_bytes());
        body.extend_from_slice(path);
        self.send(GET, &body);
    }

    fn put(&mut self, path: &[u8], size: u64, resume: bool) {
        let mut body = size.to_be_bytes().to_vec();
        body.push(u8::from(resume));
        body.extend_from_slice(path);
        self.send(PUT, &body);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips

#[test]
fn put_get_and_ls_round_trip_binary_files_byte_exact() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    fs::create_dir(root.join("sub")).unwrap();

    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one-byte", vec![0]),
        ("small.bin", random_bytes(1000, 1)),
        ("two-mebibytes.bin", Pattern::new(2).bytes(2 * MIB)),
        ("odd.bin", Pattern::new(3).bytes(3 * MIB + 12_345)),
        ("grüße und spaß.bin", random_bytes(70_001, 4)),
    ];
    for (name, data) in &files {
        fs::write(c.join(name), data).unwrap();
    }
    for (name, data) in &files {
        // No REMOTE: the local file's name, in the root.
        assert_ok(&run_in(&c, &["put", ep, name]));
        assert_file(&root.join(name), data);
        // A REMOTE ending in '/': that directory, under the local name (LOCAL given as a path).
        assert_ok(&run_in(&c, &["put", ep, s(&c.join(name)), "sub/"]));
        assert_file(&root.join("sub").join(name), data);
    }
    // A REMOTE name; then a second put replaces it.
    assert_ok(&run_in(&c, &["put", ep, "odd.bin", "sub/renamed.bin"]));
    assert_file(&root.join("sub/renamed.bin"), &files[4].1);
    assert_ok(&run_in(&c, &["put", ep, "small.bin", "sub/renamed.bin"]));
    assert_file(&root.join("sub/renamed.bin"), &files[2].1);

    let (dl, dl2) = (c.join("dl"), c.join("dl2"));
    fs::create_dir(&dl).unwrap();
    fs::create_dir(&dl2).unwrap();
    for (name, data) in &files {
        fs::remove_file(c.join(name)).unwrap();
        // No LOCAL: its name, in the current directory.
        assert_ok(&run_in(&c, &["get", ep, name]));
        assert_file(&c.join(name), data);
        // LOCAL an existing directory, with and without a trailing '/'.
        assert_ok(&run_in(&c, &["get", ep, &format!("sub/{name}"), "dl"]));
        assert_file(&dl.join(name), data);
        assert_ok(&run_in(&c, &["get", ep, &format!("sub/{name}"), "dl2/"]));
        assert_file(&dl2.join(name), data);
    }
    // LOCAL a file name, replacing what is there.
    fs::write(c.join("got.bin"), b"something else, longer than the file it will become").unwrap();
    assert_ok(&run_in(&c, &["get", ep, "sub/renamed.bin", "got.bin"]));
    assert_file(&c.join("got.bin"), &files[2].1);
    for dir in [&root, &root.join("sub"), &c, &dl, &dl2] {
        assert!(
            !names(dir).iter().any(|n| is_partial(n)),
            "a partial file is left in {}: {:?}",
            dir.display(),
            names(dir)
        );
    }

    // ls: names, sizes, directories with '/', partial files hidden.
    fs::write(root.join(".planted.sockit-part"), b"an upload in progress").unwrap();
    fs::write(root.join("sub/.odd.bin.sockit-part"), b"another").unwrap();
    let mut want: Vec<(String, u64)> = files.iter().map(|(n, d)| (n.to_string(), d.len() as u64)).collect();
    want.push(("sub".into(), 0));
    want.sort();
    let want: Vec<(String, u64)> =
        want.into_iter().map(|(n, size)| if n == "sub" { ("sub/".into(), 0) } else { (n, size) }).collect();
    let ls = run_in(&c, &["ls", ep]);
    assert_ok(&ls);
    assert_eq!(ls_lines(&ls.stdout), want, "{}", String::from_utf8_lossy(&ls.stdout));
    let ls_dot = run_in(&c, &["ls", ep, "."]);
    assert_ok(&ls_dot);
    assert_eq!(ls_dot.stdout, ls.stdout);
    let ls_sub = run_in(&c, &["ls", ep, "sub"]);
    assert_ok(&ls_sub);
    let mut want_sub: Vec<(String, u64)> = files.iter().map(|(n, d)| (n.to_string(), d.len() as u64)).collect();
    want_sub.push(("renamed.bin".into(), 1000));
    want_sub.sort();
    assert_eq!(ls_lines(&ls_sub.stdout), want_sub);

    // ls --json parses, with kinds and plausible times.
    let json = run_in(&c, &["ls", ep, "--json"]);
    assert_ok(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&json.stdout)));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let entries = v.as_array().expect("a JSON array");
    let got: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            let mtime = e["mtime"].as_i64().expect("mtime");
            assert!((now - 86_400..now + 86_400).contains(&mtime), "{e}");
            (
                e["name"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want_json: Vec<(String, String, u64)> =
        files.iter().map(|(n, d)| (n.to_string(), "file".to_owned(), d.len() as u64)).collect();
    want_json.push(("sub".into(), "dir".into(), 0));
    want_json.sort();
    assert_eq!(got, want_json);

    // A partial file cannot be fetched either.
    let refused = run_in(&c, &["get", ep, ".planted.sockit-part", "x"]);
    assert_fails(&refused, &["bad path"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Gigabytes in constant memory

#[test]
fn three_gibibytes_go_up_and_come_back_in_constant_memory() {
    const SIZE: u64 = 3 * GIB + 12_345;
    const MAX_RSS: u64 = 64 * MIB;
    let _heavy = heavy();
    let Some(dir) = big_dir(SIZE, "three_gibibytes_go_up_and_come_back_in_constant_memory") else { return };
    let p = Place::with(dir);
    let server = p.serve(&[]);
    let ep = server.endpoint.clone();
    let pat = Pattern::new(30);
    let began = Instant::now();
    pat.write(&p.client().join("big.bin"), SIZE);
    let made = began.elapsed();

    let server_rss = RssWatch::start(server.pid());
    let put = start(client(&p.client(), &["put", &ep, "big.bin"]));
    let put_rss = RssWatch::start(put.pid as i32);
    let put = put.finish(BIG_LIMIT);
    let (put_peak, _) = put_rss.stop();
    assert_ok(&put);
    pat.check(&p.root().join("big.bin"), SIZE);
    // Room for the download: the source is no longer needed.
    fs::remove_file(p.client().join("big.bin")).unwrap();

    let get = start(client(&p.client(), &["get", &ep, "big.bin"]));
    let get_rss = RssWatch::start(get.pid as i32);
    let get = get.finish(BIG_LIMIT);
    let (get_peak, _) = get_rss.stop();
    let (server_peak, samples) = server_rss.stop();
    let server_hwm = status_bytes(server.pid(), "VmHWM").expect("the server's VmHWM");
    assert_ok(&get);
    pat.check(&p.client().join("big.bin"), SIZE);
    eprintln!(
        "{SIZE} bytes: made in {made:.1?}, put in {:.1?}, get in {:.1?}; peak RSS: server {} KiB \
         (VmHWM {} KiB, {samples} samples), put {} KiB, get {} KiB",
        put.took,
        get.took,
        server_peak / KIB,
        server_hwm / KIB,
        put_peak / KIB,
        get_peak / KIB
    );
    assert!(samples >= 10, "too few samples of the server's memory: {samples}");
    assert!(server_peak < MAX_RSS, "server VmRSS reached {server_peak} bytes");
    assert!(server_hwm < MAX_RSS, "server VmHWM reached {server_hwm} bytes");
    assert!(put_peak < MAX_RSS, "put client VmRSS reached {put_peak} bytes");
    assert!(get_peak < MAX_RSS, "get client VmRSS reached {get_peak} bytes");
    let line = conn_line(&server, put.pid);
    assert!(logged(&line, "in") >= SIZE - SIZE / 50, "{line}");
    let line = conn_line(&server, get.pid);
    assert!(logged(&line, "out") >= SIZE - SIZE / 50, "{line}");
}

// ---------------------------------------------------------------------------------------------
// 3. Confinement

/// A served root with symbolic links out of it, next to `outside/` that must never change.
struct Escapes {
    base: tempfile::TempDir,
    client: tempfile::TempDir,
    server: Server,
}

impl Escapes {
    fn new() -> Escapes {
        let base = temp_dir();
        let b = base.path();
        let root = b.join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(b.join("outside/dir")).unwrap();
        fs::write(b.join("outside/secret"), b"outside secret\n").unwrap();
        fs::write(root.join("inner.txt"), b"inside\n").unwrap();
        // A file whose name has a backslash: refused by name, not because it is missing.
        fs::write(root.join("a\\b"), b"backslash\n").unwrap();
        symlink(b.join("outside"), root.join("abs_dir")).unwrap();
        symlink("../outside", root.join("rel_dir")).unwrap();
        symlink(b.join("outside/secret"), root.join("abs_file")).unwrap();
        symlink("../outside/secret", root.join("rel_file")).unwrap();
        symlink("../../outside", root.join("sub/up")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        // Links that stay inside, which must work.
        symlink("inner.txt", root.join("in_link")).unwrap();
        symlink("sub", root.join("sub_link")).unwrap();
        let server = serve_files(&root, &b.join("s.sock"), &[]);
        Escapes { base, client: temp_dir(), server }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self) -> String {
        s(&self.base.path().join("outside")).to_owned()
    }
}

const REFUSED: &[&str] = &["bad path", "outside the served directory"];

#[test]
fn paths_out_of_the_root_are_refused_for_get_put_and_ls_and_touch_nothing() {
    let e = Escapes::new();
    let ep = e.server.endpoint.as_str();
    let c = e.client.path();
    fs::write(c.join("payload"), b"must not land outside\n").unwrap();
    let before = snapshot(e.base.path());
    let outside = e.outside();

    let gets = [
        "../outside/secret".to_owned(),
        "sub/../../outside/secret".into(),
        "/etc/passwd".into(),
        format!("{outside}/secret"),
        "a\\b".into(),
        "..\\outside\\secret".into(),
        "abs_dir/secret".into(),
        "rel_dir/secret".into(),
        "abs_file".into(),
        "rel_file".into(),
        "sub/up/secret".into(),
        "etc/passwd".into(),
        "loop".into(),
    ];
    for remote in &gets {
        let d = run_in(c, &["get", ep, remote, "out"]);
        assert_fails(&d, REFUSED);
        let quoted = remote.replace('\\', "\\\\");
        assert!(d.stderr.contains(&quoted), "the error names the path: {}", d.stderr);
        assert!(!c.join("out").exists(), "get {remote:?} created a local file");
    }

    let puts = [
        "../escaped".to_owned(),
        "sub/../../escaped".into(),
        format!("{outside}/escaped"),
        "/tmp/sockit-escaped".into(),
        "..\\escaped".into(),
        "a\\new".into(),
        "abs_dir/escaped".into(),
        "rel_dir/escaped".into(),
        "abs_dir/dir/escaped".into(),
        "sub/up/escaped".into(),
        "etc/sockit-escaped".into(),
        "rel_dir/".into(),
        "loop/x".into(),
    ];
    for remote in &puts {
        assert_fails(&run_in(c, &["put", ep, "payload", remote]), REFUSED);
    }

    let lists = [
        "..".to_owned(),
        "../outside".into(),
        "sub/../..".into(),
        outside.clone(),
        "/".into(),
        "/etc".into(),
        "a\\b".into(),
        "abs_dir".into(),
        "rel_dir".into(),
        "abs_dir/dir".into(),
        "sub/up".into(),
        "etc".into(),
        "loop".into(),
    ];
    for dir in &lists {
        let d = run_in(c, &["ls", ep, dir]);
        assert_fails(&d, REFUSED);
    }

    assert_eq!(snapshot(e.base.path()), before, "something changed in or next to the root");
    assert!(!Path::new("/tmp/sockit-escaped").exists());
    assert!(!Path::new("/etc/sockit-escaped").exists());
    assert_eq!(visible(c), ["payload"]);

    // Links that stay inside still work, and the server still serves.
    assert_ok(&run_in(c, &["get", ep, "in_link", "via-link"]));
    assert_file(&c.join("via-link"), b"inside\n");
    assert_ok(&run_in(c, &["put", ep, "payload", "sub_link/via-link"]));
    assert_file(&e.root().join("sub/via-link"), b"must not land outside\n");
    assert_serves(ep, c, &e.root(), "after-escapes.txt");
    assert_file(&e.base.path().join("outside/secret"), b"outside secret\n");
}

#[test]
fn nul_bytes_and_escapes_are_refused_on_the_wire_and_the_session_goes_on() {
    let e = Escapes::new();
    let socket = e.base.path().join("s.sock");
    let before = snapshot(e.base.path());
    let mut raw = Raw::connect(&socket);

    raw.send(LIST, b"sub\0../..");
    let (code, text) = raw.expect_error();
    assert_eq!(code, BAD_PATH, "{text}");
    assert!(text.contains("NUL"), "{text}");
    raw.get(b"inner.txt\0/../../outside/secret");
    let (code, text) = raw.expect_error();
    assert_eq!(code, BAD_PATH, "{text}");
    raw.put(b"sub\0escaped", 5, false);
    let (code, text) = raw.expect_error();
    assert_eq!(code, BAD_PATH, "{text}");
    raw.put(b"x\0", 5, true);
    assert_eq!(raw.expect_error().0, BAD_PATH);

    // The other escapes, at the protocol level: refused by name, or as outside.
    for path in [&b"../outside/secret"[..], b"/etc/passwd", b"a\\b", b".x.sockit-part"] {
        raw.get(path);
        assert_eq!(raw.expect_error().0, BAD_PATH, "GET {}", String::from_utf8_lossy(path));
    }
    for path in [&b"abs_file"[..], b"rel_file", b"rel_dir/secret", b"sub/up/secret", b"etc/passwd"] {
        raw.get(path);
        let (code, text) = raw.expect_error();
        assert_eq!(code, OUTSIDE, "GET {}: {text}", String::from_utf8_lossy(path));
    }
    for path in [&b"abs_dir/x"[..], b"rel_dir/x", b"sub/up/x"] {
        raw.put(path, 5, false);
        assert_eq!(raw.expect_error().0, OUTSIDE, "PUT {}", String::from_utf8_lossy(path));
    }
    raw.get(b"missing");
    assert_eq!(raw.expect_error().0, NOT_FOUND);

    // The same session still works: a listing (without the refused names), a whole PUT and GET.
    let listed: Vec<String> = raw.list(b"").into_iter().map(|(_, _, n)| n).collect();
    assert!(listed.contains(&"inner.txt".to_owned()), "{listed:?}");
    assert!(!listed.iter().any(|n| n.contains("escaped") || n.contains('\0')), "{listed:?}");
    assert_eq!(snapshot(e.base.path()), before, "something changed in or next to the root");

    raw.put(b"wire.txt", 5, false);
    let ready = raw.expect(READY);
    assert_eq!(u64::from_be_bytes(ready[..8].try_into().unwrap()), 0);
    assert_eq!(&ready[8..], blake3::hash(b"").as_bytes());
    raw.send(FROM, &0u64.to_be_bytes());
    raw.s.write_all(b"hello").unwrap();
    raw.send(DONE, blake3::hash(b"hello").as_bytes());
    raw.expect(STORED);
    assert_file(&e.root().join("wire.txt"), b"hello");
    raw.get(b"wire.txt");
    let file = raw.expect(FILE);
    assert_eq!(file, [5u64.to_be_bytes(), 0u64.to_be_bytes()].concat());
    let mut data = [0u8; 5];
    raw.s.read_exact(&mut data).unwrap();
    assert_eq!(&data, b"hello");
    assert_eq!(raw.expect(DONE), blake3::hash(b"hello").as_bytes());
}

#[test]
fn content_that_does_not_match_its_hash_is_never_published() {
    let p = Place::new();
    let server = p.serve(&[]);
    // To the real server: a PUT whose DONE carries another hash is refused (code 6), nothing is
    // published, no partial file stays, and the session goes on.
    let mut raw = Raw::connect(&p.socket());
    raw.put(b"tampered.txt", 5, false);
    raw.expect(READY);
    raw.send(FROM, &0u64.to_be_bytes());
    raw.s.write_all(b"hello").unwrap();
    raw.send(DONE, blake3::hash(b"HELLO").as_bytes());
    let (code, text) = raw.expect_error();
    assert_eq!(code, 6, "{text}");
    assert_eq!(names(&p.root()), Vec::<String>::new());
    assert_eq!(raw.list(b""), []);
    drop(raw);
    assert_serves(&server.endpoint, &p.client(), &p.root(), "after-tampering.txt");

    // From a server that sends damaged content: `sockit get` refuses it and keeps nothing.
    let fake = p.path("fake.sock");
    let fake_server = damaging_server(&fake, b"hello", b"HELLO");
    let d = run_in(&p.client(), &["get", &format!("unix:{}", s(&fake)), "x.txt"]);
    fake_server.join().unwrap();
    assert_fails(&d, &["damaged"]);
    assert_eq!(names(&p.client()), ["after-tampering.txt"], "a damaged download was kept");
}

/// A fake `files` server on `socket` for one client: it answers a GET with `sent`, then a DONE
/// that carries the hash of `hashed`.
fn damaging_server(socket: &Path, sent: &'static [u8], hashed: &'static [u8]) -> JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let frame = |kind: u8, body: &[u8]| [&((body.len() + 1) as u32).to_be_bytes()[..], &[kind], body].concat();
        s.write_all(&frame(HELLO, &[&[1, 2, 0][..], &[0; 32]].concat())).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut get = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut get).unwrap();
        assert_eq!(get[0], GET);
        let size = sent.len() as u64;
        s.write_all(&frame(FILE, &[size.to_be_bytes(), 0u64.to_be_bytes()].concat())).unwrap();
        s.write_all(sent).unwrap();
        s.write_all(&frame(DONE, blake3::hash(hashed).as_bytes())).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    })
}

// ---------------------------------------------------------------------------------------------
// 4. Errors

#[test]
fn missing_files_directories_and_bad_targets_are_one_line_errors_that_leave_nothing() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("dir/inner"), b"inner").unwrap();
    fs::write(root.join("file.txt"), b"a file").unwrap();
    fs::write(c.join("local.txt"), b"local").unwrap();
    fs::create_dir(c.join("localdir")).unwrap();
    let before = snapshot(&root);

    // Each message says whose file it is: the server's ("server: …", "the server has no file")
    // or a local one ("cannot read …", "cannot write …"). An earlier version said
    // `"missing": no such file or directory` for both.
    let cases: &[(&[&str], &str)] = &[
        (&["get", ep, "missing"], "sockit: the server has no file \"missing\""),
        (&["get", ep, "dir/missing", "x"], "sockit: the server has no file \"dir/missing\""),
        (&["get", ep, "dir"], "sockit: server: \"dir\" is a directory"),
        (&["get", ep, "file.txt", "nodir/x"], "sockit: cannot write nodir/x: no such directory"),
        (&["get", ep, "file.txt", "local.txt/x"], "sockit: cannot write local.txt/x: no such directory"),
        (&["put", ep, "local.txt", "dir"], "sockit: server: \"dir\" is a directory"),
        (&["put", ep, "local.txt", "nodir/x"], "sockit: server: \"nodir\": no such file"),
        (&["put", ep, "local.txt", "nodir/"], "sockit: server: \"nodir\": no such file"),
        (&["put", ep, "local.txt", "file.txt/x"], "sockit: server: \"file.txt\": not a directory"),
        (&["ls", ep, "missing"], "sockit: server: \"missing\": no such file"),
        (&["ls", ep, "file.txt/"], "sockit: server: \"file.txt\": not a directory"),
        (&["put", ep, "no-such-local-file"], "sockit: cannot read no-such-local-file: no such file"),
        (&["put", ep, "localdir", "x"], "sockit: cannot read localdir: it is a directory"),
    ];
    for (args, needle) in cases {
        let d = run_in(&c, args);
        assert_fails(&d, &[needle]);
        assert_eq!(snapshot(&root), before, "{args:?} changed the root");
        assert_eq!(visible(&c), ["local.txt", "localdir"], "{args:?} left a local file");
    }
    assert_serves(ep, &c, &root, "after-errors.txt");
    // As ls(1), a file is shown by itself, under the name it was asked by.
    let d = run_in(&c, &["ls", ep, "dir/inner"]);
    assert_ok(&d);
    assert_eq!(ls_lines(&d.stdout), [("dir/inner".to_owned(), 5)]);
}

// `sockit get` makes its hidden partial file (`.NAME.sockit-part`) before it asks the server; a
// request refused before any data arrived must not leave it behind (an earlier version did,
// littering the target directory with an empty hidden file on every refused get).
#[test]
fn a_refused_get_leaves_no_local_partial_file() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    fs::create_dir(p.root().join("dir")).unwrap();
    for remote in ["missing", "dir", "../escape"] {
        assert_fails(&run_in(&p.client(), &["get", ep, remote, "out"]), &["has no file", "is a directory", "bad path"]);
        assert_eq!(names(&p.client()), Vec::<String>::new(), "after get {remote:?}");
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

// `sockit get` used to rename its download over whatever the target was: a FIFO became a regular
// file, a symbolic link was replaced instead of written through, a read-only file was replaced,
// all with exit status 0 (and, run as root against /dev/null, destroyed it). Now anything but a
// writable regular file is refused before data moves, and left exactly as it was.
#[test]
fn get_refuses_to_replace_a_fifo_a_socket_a_dangling_link_or_a_read_only_file() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let c = p.client();
    fs::write(p.root().join("small.txt"), b"from the server\n").unwrap();
    mkfifo(&c.join("fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(c.join("sock")).unwrap();
    fs::write(c.join("ro.txt"), b"read-only\n").unwrap();
    fs::set_permissions(c.join("ro.txt"), fs::Permissions::from_mode(0o444)).unwrap();
    symlink("nowhere", c.join("dangling")).unwrap();
    symlink("fifo", c.join("to-fifo")).unwrap();
    symlink("loop-b", c.join("loop-a")).unwrap();
    symlink("loop-a", c.join("loop-b")).unwrap();
    let before = snapshot(&c);
    let cases: &[(&str, &str)] = &[
        ("fifo", "cannot write fifo: it is a FIFO, not a regular file"),
        ("sock", "cannot write sock: it is a socket, not a regular file"),
        ("ro.txt", "cannot write ro.txt: it is read-only; remove it or choose another name"),
        ("dangling", "cannot write dangling: it is a symbolic link to nowhere, which does not exist"),
        ("to-fifo", "cannot write to-fifo: it is a symbolic link to "),
        ("loop-a", "cannot write loop-a: it is a symbolic link that loops"),
    ];
    for (target, message) in cases {
        let d = run_in(&c, &["get", ep, "small.txt", target]);
        assert_fails(&d, &[message]);
        assert_eq!(snapshot(&c), before, "get into {target} changed the client's directory");
    }
    assert!(fs::symlink_metadata(c.join("fifo")).unwrap().file_type().is_fifo());
    assert_file(&c.join("ro.txt"), b"read-only\n");
    assert_eq!(fs::metadata(c.join("ro.txt")).unwrap().permissions().mode() & 0o777, 0o444);
    assert_serves(ep, &c, &p.root(), "after-refusals.txt");
}

// A symbolic link is written through: the file it leads to is replaced in its own directory and
// the link stays. A replaced file keeps its permission bits (a 0600 secret used to come back
// 0644, readable by everyone), and its owner when root replaces it. A directory gets the file
// inside it, as before.
#[test]
fn get_writes_through_a_symlink_and_keeps_the_mode_of_the_file_it_replaces() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let c = p.client();
    fs::write(p.root().join("small.txt"), b"from the server\n").unwrap();
    fs::create_dir(c.join("real")).unwrap();
    fs::write(c.join("real/target.txt"), b"old\n").unwrap();
    symlink("real/target.txt", c.join("link")).unwrap();
    fs::write(c.join("secret.txt"), b"old secret\n").unwrap();
    fs::set_permissions(c.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        std::os::unix::fs::chown(c.join("secret.txt"), Some(65534), Some(65534)).unwrap();
    }
    fs::create_dir(c.join("into")).unwrap();

    assert_ok(&run_in(&c, &["get", ep, "small.txt", "link"]));
    assert_eq!(fs::read_link(c.join("link")).unwrap(), Path::new("real/target.txt"), "the link was replaced");
    assert_file(&c.join("real/target.txt"), b"from the server\n");
    assert_eq!(names(&c.join("real")), ["target.txt"]);

    assert_ok(&run_in(&c, &["get", ep, "small.txt", "secret.txt"]));
    assert_file(&c.join("secret.txt"), b"from the server\n");
    let meta = fs::metadata(c.join("secret.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    if as_root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "the owner was not kept");
    }

    assert_ok(&run_in(&c, &["get", ep, "small.txt", "into"]));
    assert_file(&c.join("into/small.txt"), b"from the server\n");
    assert_eq!(visible(&c), ["into", "link", "real", "secret.txt"]);
}

// `-` used to be a file name; now `get REMOTE -` streams to stdout, and `put -` is a usage error
// (a PUT states the size before the data, so a stream of unknown length cannot be sent).
#[test]
fn get_to_dash_writes_stdout_and_put_dash_is_a_usage_error() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let c = p.client();
    let data = random_bytes((3 * MIB + 17) as usize, 7);
    fs::write(p.root().join("data.bin"), &data).unwrap();
    fs::write(p.root().join("-"), b"not this").unwrap();

    let d = run_in(&c, &["get", ep, "data.bin", "-"]);
    assert_ok(&d);
    assert!(d.stdout == data, "stdout: {} bytes, expected {}", d.stdout.len(), data.len());
    assert_eq!(names(&c), Vec::<String>::new(), "get to - left a file");

    // A missing file writes nothing and says so.
    assert_fails(&run_in(&c, &["get", ep, "missing", "-"]), &["the server has no file \"missing\""]);

    // The reader leaves early (`| head -c 10`): a quiet, successful end, as for every command.
    let mut cmd = client(&c, &["get", ep, "data.bin", "-"]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    assert_eq!(head, data[..10]);
    let status = wait_bounded(&mut child, LIMIT).expect("get to a closed pipe finished");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!((status.code(), err.as_str()), (Some(0), ""));

    // Usage errors: exit 2, one line, nothing written anywhere.
    for (args, needle) in [
        (&["get", ep, "data.bin", "-", "--resume"][..], "--resume"),
        (&["put", ep, "-"], "./-"),
        (&["put", ep, "-", "x.bin"], "./-"),
    ] {
        let d = run_in(&c, args);
        assert_eq!(d.code, Some(2), "{args:?}: {}", d.stderr);
        assert_eq!(d.stderr.lines().count(), 1, "{args:?}: {}", d.stderr);
        assert!(d.stderr.contains(needle), "{args:?}: {}", d.stderr);
        assert!(d.stdout.is_empty());
    }
    assert_eq!(visible(&p.root()), ["-", "data.bin"]);
    assert_eq!(names(&c), Vec::<String>::new());

    // `./-` is the file named -, both ways.
    assert_ok(&run_in(&c, &["get", ep, "-", "./-"]));
    assert_file(&c.join("-"), b"not this");
    assert_ok(&run_in(&c, &["put", ep, "./-", "dash-copy"]));
    assert_file(&p.root().join("dash-copy"), b"not this");

    // Damaged content is found only after it was written out: exit 1, and the message says
    // that what was written is not the file.
    let fake = p.path("fake.sock");
    let fake_server = damaging_server(&fake, b"hello", b"HELLO");
    let d = run_in(&c, &["get", &format!("unix:{}", s(&fake)), "x.txt", "-"]);
    fake_server.join().unwrap();
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    assert_eq!(d.stdout, b"hello");
    assert_eq!(d.stderr.lines().count(), 1, "{}", d.stderr);
    assert!(d.stderr.contains("damaged") && d.stderr.contains("what was written out is not the file"), "{}", d.stderr);
}

// `sockit put FIFO` used to block in open(2) until something wrote to the FIFO.
#[test]
fn put_of_a_fifo_is_refused_at_once() {
    let p = Place::new();
    let server = p.serve(&[]);
    let c = p.client();
    mkfifo(&c.join("fifo"));
    let d = run_in(&c, &["put", server.endpoint.as_str(), "fifo"]);
    assert_fails(&d, &["cannot read fifo: it is a FIFO, not a regular file"]);
    assert_eq!(names(&p.root()), Vec::<String>::new());
}

// procfs says /proc/version is 0 bytes long and sysfs says an attribute is 4096: put sent an
// empty file for the first and failed with "changed while it was being sent" on the second. A
// kernel file is now read whole first and what was read is sent.
#[test]
fn put_of_a_kernel_file_sends_what_it_reads() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let mut sent = 0;
    for file in ["/proc/version", "/proc/sys/kernel/ostype", "/sys/kernel/mm/transparent_hugepage/enabled"] {
        let Ok(want) = fs::read(file) else {
            eprintln!("skipping {file}: this machine has none to read");
            continue;
        };
        let name = file.rsplit('/').next().unwrap();
        assert_ok(&run_in(&p.client(), &["put", ep, file]));
        assert_file(&p.root().join(name), &want);
        sent += 1;
    }
    assert!(sent > 0, "no kernel file to try");
}

// A put renamed its file over whatever had the name in the root: a FIFO or socket became a
// regular file, and a symbolic link was replaced by one. Only a regular file is replaced now; the
// rest is refused before any data moves and left as it was.
#[test]
fn put_refuses_to_replace_a_fifo_a_socket_or_a_symbolic_link_in_the_root() {
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    fs::write(c.join("local.txt"), b"local\n").unwrap();
    fs::write(root.join("file.txt"), b"the server's file\n").unwrap();
    mkfifo(&root.join("fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    symlink("file.txt", root.join("link")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    let before = snapshot(&root);
    for target in ["fifo", "sock", "link", "dangling"] {
        let d = run_in(&c, &["put", ep, "local.txt", target]);
        assert_fails(&d, &[&format!("sockit: server: \"{target}\" is not a regular file")]);
        assert_eq!(snapshot(&root), before, "put to {target} changed the root");
    }
    assert!(fs::symlink_metadata(root.join("fifo")).unwrap().file_type().is_fifo());
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("file.txt"));
    assert_file(&root.join("file.txt"), b"the server's file\n");
    // A regular file is still replaced.
    assert_ok(&run_in(&c, &["put", ep, "local.txt", "file.txt"]));
    assert_file(&root.join("file.txt"), b"local\n");
}

#[test]
fn a_read_only_server_refuses_put_and_still_serves_get_and_ls() {
    let p = Place::new();
    fs::write(p.root().join("there.txt"), b"already there").unwrap();
    let server = p.serve(&["--read-only"]);
    let ep = server.endpoint.as_str();
    let c = p.client();
    fs::write(c.join("new.txt"), b"new").unwrap();
    let before = snapshot(&p.root());
    for args in [&["put", ep, "new.txt"][..], &["put", ep, "new.txt", "there.txt"], &["put", ep, "new.txt", "--resume"]]
    {
        let d = run_in(&c, args);
        assert_fails(&d, &["read-only"]);
        assert!(d.stderr.contains("permission denied"), "{}", d.stderr);
        assert_eq!(snapshot(&p.root()), before, "{args:?} changed the root");
    }
    assert_ok(&run_in(&c, &["get", ep, "there.txt"]));
    assert_file(&c.join("there.txt"), b"already there");
    let ls = run_in(&c, &["ls", ep]);
    assert_ok(&ls);
    assert_eq!(ls_lines(&ls.stdout), [("there.txt".to_owned(), 13)]);
}

/// Puts modes back when dropped, so that a temporary directory can be removed.
struct RestoreModes(Vec<(PathBuf, u32)>);

impl Drop for RestoreModes {
    fn drop(&mut self) {
        for (path, mode) in &self.0 {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(*mode));
        }
    }
}

#[test]
fn permission_denied_is_one_clear_error_and_leaves_nothing() {
    const NOBODY: u32 = 65534;
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root && !have("setpriv") {
        eprintln!(
            "skipping permission_denied_is_one_clear_error_and_leaves_nothing: as root, file modes do not \
             apply, and setpriv (util-linux), needed to serve as nobody, is missing"
        );
        return;
    }
    let base = temp_dir();
    let b = base.path();
    let root = b.join("root");
    let run = b.join("run");
    fs::create_dir_all(root.join("private")).unwrap();
    fs::create_dir_all(root.join("pub")).unwrap();
    fs::create_dir(&run).unwrap();
    fs::write(root.join("secret.txt"), b"secret").unwrap();
    fs::write(root.join("private/inner"), b"inner").unwrap();
    let before = snapshot(&root);
    let client_dir = temp_dir();
    let c = client_dir.path();
    fs::write(c.join("x.txt"), b"x").unwrap();

    let set = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    let mut restore = RestoreModes(Vec::new());
    let mut cmd;
    if as_root {
        // Served by nobody: the root stays root's and 0755, so nobody can read but not write.
        set(b, 0o755);
        set(&root, 0o755);
        set(&root.join("secret.txt"), 0o600);
        set(&root.join("private"), 0o700);
        std::os::unix::fs::chown(root.join("pub"), Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
        cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_sockit")]);
    } else {
        restore.0 = vec![(root.clone(), 0o755), (root.join("secret.txt"), 0o644), (root.join("private"), 0o755)];
        set(&root.join("secret.txt"), 0o000);
        set(&root.join("private"), 0o000);
        set(&root, 0o555);
        cmd = sockit();
    }
    cmd.env_remove("SOCKIT_TOKEN").arg("serve").arg(format!("unix:{}", s(&run.join("s.sock"))));
    cmd.args(["files", "--root", s(&root)]);
    // A client trusts a server of another uid only if it proves the token.
    let token_file = b.join("token");
    let mut with_token: Vec<&str> = Vec::new();
    if as_root {
        cmd.args(["--allow-uid", "0"]).env("SOCKIT_TOKEN", "a-token-for-the-nobody-server");
        fs::write(&token_file, "a-token-for-the-nobody-server").unwrap();
        set(&token_file, 0o600);
        with_token = vec!["--token-file", s(&token_file)];
    }
    let server = Server::start_cmd(cmd);
    let ep = server.endpoint.as_str();
    let run_in = |c: &Path, args: &[&str]| {
        let args: Vec<&str> = args.iter().chain(&with_token).copied().collect();
        run_in(c, &args)
    };

    for args in [
        &["put", ep, "x.txt"][..],
        &["put", ep, "x.txt", "--resume"],
        &["put", ep, "x.txt", "private/x.txt"],
        &["get", ep, "secret.txt"],
        &["get", ep, "private/inner"],
        &["ls", ep, "private"],
    ] {
        let d = run_in(c, args);
        assert_fails(&d, &["permission denied"]);
        assert_eq!(visible(c), ["x.txt"], "{args:?} left a local file");
        assert!(!root.join("x.txt").exists() && !root.join(".x.txt.sockit-part").exists(), "{args:?}");
    }
    // Still serving, where it may write.
    assert_ok(&run_in(c, &["put", ep, "x.txt", "pub/"]));
    assert_file(&root.join("pub/x.txt"), b"x");
    drop(restore);
    let mut after = snapshot(&root);
    after.remove("pub/x.txt");
    assert_eq!(after, before, "a refused request changed the root");
}

// ---------------------------------------------------------------------------------------------
// 5. A full disk

#[test]
fn a_full_disk_fails_the_put_promptly_and_leaves_nothing() {
    let base = temp_dir();
    let mnt = base.path().join("small");
    // Declared before the server, so dropped after it: the server holds the root open.
    let Some(_mounted) = small_tmpfs("a_full_disk_fails_the_put_promptly_and_leaves_nothing", &mnt) else { return };
    fs::write(mnt.join("kept.txt"), b"was here before\n").unwrap();
    let before = snapshot(&mnt);
    let free_before = free_space(&mnt);
    let c = base.path().join("client");
    fs::create_dir(&c).unwrap();
    Pattern::new(50).write(&c.join("big.bin"), 16 * MIB);
    let server = serve_files(&mnt, &base.path().join("s.sock"), &[]);
    let ep = server.endpoint.as_str();

    for round in 0..2 {
        let d = run_in(&c, &["put", ep, "big.bin"]);
        assert_fails(&d, &["no space left"]);
        assert!(d.took < Duration::from_secs(10), "the failed put took {:?}", d.took);
        // The server has finished with the connection (and its partial file) once it logs it.
        conn_line(&server, d.pid);
        assert_eq!(snapshot(&mnt), before, "round {round}: the full disk is left with {:?}", names(&mnt));
        assert!(free_space(&mnt) >= free_before, "round {round}: the partial file's space was not given back");
    }
    // Still serving: what fits is stored.
    let small = random_bytes(512 * KIB as usize, 51);
    fs::write(c.join("small.bin"), &small).unwrap();
    assert_ok(&run_in(&c, &["put", ep, "small.bin"]));
    assert_file(&mnt.join("small.bin"), &small);
    assert_eq!(names(&mnt), ["kept.txt", "small.bin"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Atomicity and concurrency

#[test]
fn a_put_in_progress_never_shows_a_partial_target_and_a_second_put_is_refused() {
    const SIZE: u64 = 256 * MIB + 1;
    let _heavy = heavy();
    let Some(dir) = big_dir(SIZE, "a_put_in_progress_never_shows_a_partial_target_and_a_second_put_is_refused") else {
        return;
    };
    let p = Place::with(dir);
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    let old = b"the old content\n";
    let target = root.join("t.bin");
    fs::write(&target, old).unwrap();
    let pat = Pattern::new(60);
    pat.write(&c.join("new.bin"), SIZE);
    fs::write(c.join("other.bin"), b"a competing upload").unwrap();

    let mut put = start(client(&c, &["put", ep, "new.bin", "t.bin"]));
    wait_for_size(&root.join(".t.bin.sockit-part"), 32 * MIB, &mut put);
    // Held in the middle of the transfer.
    put.signal(libc::SIGSTOP);
    assert_file(&target, old);
    let got = run_in(&c, &["get", ep, "t.bin", "seen.bin"]);
    assert_ok(&got);
    assert_file(&c.join("seen.bin"), old);
    let ls = run_in(&c, &["ls", ep]);
    assert_ok(&ls);
    assert_eq!(ls_lines(&ls.stdout), [("t.bin".to_owned(), old.len() as u64)]);
    // A second upload to the name is refused and disturbs neither the target nor the first.
    for args in [&["put", ep, "other.bin", "t.bin"][..], &["put", ep, "other.bin", "t.bin", "--resume"]] {
        let second = run_in(&c, args);
        assert_fails(&second, &["being written by another upload"]);
        assert_file(&target, old);
    }
    assert!(len(&root.join(".t.bin.sockit-part")) >= 32 * MIB, "the competing put truncated the partial file");
    put.signal(libc::SIGCONT);

    // Until it is published, the target is the old file; afterwards the whole new one.
    let mut looks = 0;
    while put.running() {
        let Ok(mut f) = File::open(&target) else { panic!("the target disappeared during the put") };
        let n = f.metadata().unwrap().len();
        if n == old.len() as u64 {
            let mut seen = Vec::new();
            f.read_to_end(&mut seen).unwrap();
            assert_eq!(seen, old, "the target changed before the put was published");
            looks += 1;
        } else {
            assert_eq!(n, SIZE, "the target is neither the old file nor the whole new one");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = put.finish(BIG_LIMIT);
    assert_ok(&done);
    pat.check(&target, SIZE);
    assert_eq!(names(&root), ["t.bin"]);
    eprintln!("the target was looked at {looks} times while the put finished");
}

#[test]
fn concurrent_puts_to_one_name_leave_exactly_one_whole_file() {
    const SIZE: u64 = 24 * MIB + 3;
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    let (a, b) = (Pattern::new(61), Pattern::new(62));
    a.write(&c.join("a.bin"), SIZE);
    b.write(&c.join("b.bin"), SIZE);
    let target = root.join("same.bin");
    let (mut both_won, mut one_won) = (0, 0);
    for round in 0..4 {
        let pa = start(client(&c, &["put", ep, "a.bin", "same.bin"]));
        let pb = start(client(&c, &["put", ep, "b.bin", "same.bin"]));
        let (da, db) = (pa.finish(LIMIT), pb.finish(LIMIT));
        for d in [&da, &db] {
            if d.code != Some(0) {
                assert_fails(d, &["being written by another upload"]);
            }
        }
        let winner = match (da.code == Some(0), db.code == Some(0)) {
            (true, true) => {
                both_won += 1;
                None
            }
            (true, false) => Some(&a),
            (false, true) => Some(&b),
            (false, false) => panic!("round {round}: both puts failed: {:?} / {:?}", da.stderr, db.stderr),
        };
        match winner {
            Some(w) => {
                one_won += 1;
                w.check(&target, SIZE);
            }
            None => assert!(
                a.difference(&target, SIZE).is_none() || b.difference(&target, SIZE).is_none(),
                "round {round}: the file is neither upload, whole"
            ),
        }
        assert_eq!(names(&root), ["same.bin"], "round {round}");
    }
    eprintln!("both puts succeeded {both_won} times, one was refused {one_won} times");
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9 in the middle, and --resume

/// A put whose connection is reset says how far it got and that --resume continues (it printed
/// "Connection reset by peer (os error 104)" twice), whether the reset comes while the bytes go
/// out or after the last one, before the server's STORED; `put --resume` then finishes.
#[test]
fn a_put_cut_by_a_reset_says_how_far_it_got_and_put_resume_finishes() {
    let p = Place::new();
    let server = p.serve(&[]);
    let (c, root) = (p.client(), p.root());
    // Relayed through a connection that is reset after 1 MiB from the client.
    let relayed = format!("unix:{}", s(&p.path("relay.sock")));
    let _relay = Server::relay(&[&relayed, &server.endpoint, "--reset-after", "1M"]);
    for (name, size, words) in [
        // Far more than the socket buffers hold: the reset comes while it is sent.
        ("long.bin", 24 << 20, "were sent; try again with --resume to continue"),
        // The last 16 KiB beyond the reset fit in the socket buffers: the reset comes while
        // STORED is awaited.
        (
            "short.bin",
            (1 << 20) + (16 << 10),
            "before the server confirmed the upload; try again with --resume to finish",
        ),
    ] {
        let data = random_bytes(size, size as u64);
        fs::write(c.join(name), &data).unwrap();
        let d = run_in(&c, &["put", &relayed, name]);
        assert_fails(&d, &[words]);
        assert!(!d.stderr.contains("os error"), "{}", d.stderr);
        // The server's session may still hold the partial file's lock for a moment after the
        // reset: "being written by another upload" then, and the next try resumes.
        let deadline = Instant::now() + PROMPT;
        let resumed = loop {
            let d = run_in(&c, &["put", &server.endpoint, name, "--resume"]);
            if !d.stderr.contains("is being written by another upload") || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_ok(&resumed);
        assert_file(&root.join(name), &data);
    }
}

#[test]
fn killing_the_client_mid_put_keeps_the_old_file_and_put_resume_finishes() {
    let _heavy = heavy();
    let Some(dir) = big_dir(MIDDLE_SIZE, "killing_the_client_mid_put_keeps_the_old_file_and_put_resume_finishes")
    else {
        return;
    };
    let p = Place::with(dir);
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    let old = b"old content\n";
    fs::write(root.join("big.bin"), old).unwrap();
    let pat = Pattern::new(70);
    pat.write(&c.join("big.bin"), MIDDLE_SIZE);
    let partial = root.join(".big.bin.sockit-part");

    let mut put = start(client(&c, &["put", ep, "big.bin"]));
    wait_for_size(&partial, MIDDLE_AT, &mut put);
    put.signal(libc::SIGKILL);
    let killed = put.finish(LIMIT);
    assert_eq!(killed.signal, Some(libc::SIGKILL));
    conn_line(&server, killed.pid);

    assert_file(&root.join("big.bin"), old);
    assert_eq!(names(&root), [".big.bin.sockit-part", "big.bin"]);
    let have = len(&partial);
    assert!((MIDDLE_AT..MIDDLE_SIZE).contains(&have), "partial holds {have} bytes");
    let ls = run_in(&c, &["ls", ep]);
    assert_ok(&ls);
    assert_eq!(ls_lines(&ls.stdout), [("big.bin".to_owned(), old.len() as u64)]);

    let resumed = start(client(&c, &["put", ep, "big.bin", "--resume"])).finish(BIG_LIMIT);
    assert_ok(&resumed);
    pat.check(&root.join("big.bin"), MIDDLE_SIZE);
    assert_eq!(names(&root), ["big.bin"]);
    let line = conn_line(&server, resumed.pid);
    let sent = logged(&line, "in");
    assert!(sent <= MIDDLE_SIZE - have + MIB, "the resumed put sent {sent} bytes; {have} were there: {line}");
    assert!(sent + MIB >= MIDDLE_SIZE - have, "{line}");
}

#[test]
fn killing_the_server_mid_put_publishes_nothing_and_put_resume_after_a_restart_finishes() {
    let _heavy = heavy();
    let test = "killing_the_server_mid_put_publishes_nothing_and_put_resume_after_a_restart_finishes";
    let Some(dir) = big_dir(MIDDLE_SIZE, test) else { return };
    let p = Place::with(dir);
    let (c, root) = (p.client(), p.root());
    let pat = Pattern::new(71);
    pat.write(&c.join("up.bin"), MIDDLE_SIZE);
    let partial = root.join(".up.bin.sockit-part");

    let server = p.serve(&[]);
    let mut put = start(client(&c, &["put", &server.endpoint, "up.bin"]));
    wait_for_size(&partial, MIDDLE_AT, &mut put);
    server.signal(libc::SIGKILL);
    drop(server);
    let failed = put.finish(LIMIT);
    assert_fails(&failed, &["sockit: "]);

    assert_eq!(names(&root), [".up.bin.sockit-part"], "something was published");
    let have = len(&partial);
    assert!((MIDDLE_AT..MIDDLE_SIZE).contains(&have), "partial holds {have} bytes");

    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let ls = run_in(&c, &["ls", ep]);
    assert_ok(&ls);
    assert!(ls.stdout.is_empty(), "{}", String::from_utf8_lossy(&ls.stdout));
    let resumed = start(client(&c, &["put", ep, "up.bin", "--resume"])).finish(BIG_LIMIT);
    assert_ok(&resumed);
    pat.check(&root.join("up.bin"), MIDDLE_SIZE);
    assert_eq!(names(&root), ["up.bin"]);
    let line = conn_line(&server, resumed.pid);
    let sent = logged(&line, "in");
    assert!(sent <= MIDDLE_SIZE - have + MIB, "the resumed put sent {sent} bytes; {have} were there: {line}");
}

#[test]
fn killing_the_client_mid_get_leaves_a_hidden_partial_and_get_resume_finishes() {
    let _heavy = heavy();
    let test = "killing_the_client_mid_get_leaves_a_hidden_partial_and_get_resume_finishes";
    let Some(dir) = big_dir(MIDDLE_SIZE, test) else { return };
    let p = Place::with(dir);
    let (c, root) = (p.client(), p.root());
    let pat = Pattern::new(72);
    pat.write(&root.join("dl.bin"), MIDDLE_SIZE);
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let partial = c.join(".dl.bin.sockit-part");

    let mut get = start(client(&c, &["get", ep, "dl.bin"]));
    wait_for_size(&partial, MIDDLE_AT, &mut get);
    get.signal(libc::SIGKILL);
    let killed = get.finish(LIMIT);
    assert_eq!(killed.signal, Some(libc::SIGKILL));
    conn_line(&server, killed.pid);

    assert_eq!(names(&c), [".dl.bin.sockit-part"], "the target is visible before it is whole");
    let have = len(&partial);
    assert!((MIDDLE_AT..MIDDLE_SIZE).contains(&have), "partial holds {have} bytes");

    let resumed = start(client(&c, &["get", ep, "dl.bin", "--resume"])).finish(BIG_LIMIT);
    assert_ok(&resumed);
    pat.check(&c.join("dl.bin"), MIDDLE_SIZE);
    assert_eq!(names(&c), ["dl.bin"]);
    let line = conn_line(&server, resumed.pid);
    let sent = logged(&line, "out");
    assert!(sent <= MIDDLE_SIZE - have + MIB, "the resumed get was sent {sent} bytes; {have} were there: {line}");
    assert!(sent + MIB >= MIDDLE_SIZE - have, "{line}");
}

// ---------------------------------------------------------------------------------------------
// 8. Resume over a partial file that does not match

#[test]
fn resume_over_a_damaged_or_oversized_partial_starts_again_and_is_exact() {
    const SIZE: u64 = 48 * MIB + 5;
    const PART: u64 = 20 * MIB;
    let p = Place::new();
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    let pat = Pattern::new(80);
    pat.write(&c.join("f.bin"), SIZE);
    let partial = root.join(".f.bin.sockit-part");
    let put_resume = |what: &str| -> u64 {
        let d = run_in(&c, &["put", ep, "f.bin", "--resume"]);
        assert_ok(&d);
        pat.check(&root.join("f.bin"), SIZE);
        assert_eq!(names(&root), ["f.bin"], "{what}");
        logged(&conn_line(&server, d.pid), "in")
    };

    // A sound partial file: only the rest is sent.
    pat.write(&partial, PART);
    let sent = put_resume("sound");
    assert!(sent <= SIZE - PART + MIB, "a sound partial: {sent} bytes sent");

    // Its first bytes damaged, or its last: the transfer starts again from 0 and is exact.
    for at in [0, PART - 16] {
        pat.write(&partial, PART);
        damage(&partial, at, 16);
        let sent = put_resume("damaged");
        assert!(sent + MIB >= SIZE, "damaged at {at}: only {sent} bytes sent");
    }
    // Longer than the file: the same.
    let mut long = pat.bytes(SIZE);
    long.extend_from_slice(&random_bytes(MIB as usize, 81));
    fs::write(&partial, &long).unwrap();
    let sent = put_resume("oversized");
    assert!(sent + MIB >= SIZE, "oversized: only {sent} bytes sent");

    // The same on the client's side of a get.
    let local_partial = c.join(".g.bin.sockit-part");
    pat.write(&local_partial, PART);
    damage(&local_partial, 0, 16);
    let d = run_in(&c, &["get", ep, "f.bin", "g.bin", "--resume"]);
    assert_ok(&d);
    pat.check(&c.join("g.bin"), SIZE);
    assert!(!local_partial.exists());
    let sent = logged(&conn_line(&server, d.pid), "out");
    assert!(sent + MIB >= SIZE, "get over a damaged partial: only {sent} bytes sent");
}

// ---------------------------------------------------------------------------------------------
// 9. Authentication

fn write_token(path: &Path, token: &str) {
    fs::write(path, format!("{token}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn files_over_tcp_needs_a_token_and_a_wrong_one_is_refused_without_effect() {
    let p = Place::new();
    let (c, root) = (p.client(), p.root());
    let no_token = start({
        let mut cmd = sockit();
        cmd.env_remove("SOCKIT_TOKEN").args(["serve", "127.0.0.1:0", "files", "--root", s(&root)]);
        cmd
    })
    .finish(LIMIT);
    assert_eq!(no_token.code, Some(2), "{}", no_token.stderr);
    assert_eq!(no_token.stderr.lines().count(), 1, "{}", no_token.stderr);
    assert!(no_token.stderr.contains("needs a token"), "{}", no_token.stderr);

    let good = p.path("good.token");
    let bad = p.path("bad.token");
    write_token(&good, "correct-horse-battery-staple-0123456789");
    write_token(&bad, "wrong-horse-battery-staple-9876543210");
    let mut cmd = sockit();
    cmd.env_remove("SOCKIT_TOKEN").args(["serve", "127.0.0.1:0", "files", "--root", s(&root)]);
    cmd.args(["--token-file", s(&good)]);
    let server = Server::start_cmd(cmd);
    let ep = server.endpoint.as_str();
    assert!(ep.starts_with("tcp://127.0.0.1:"), "{ep}");
    fs::write(c.join("f.txt"), b"content").unwrap();
    fs::write(root.join("there.txt"), b"there").unwrap();
    let before = snapshot(&root);

    // A wrong token waits a second before it is refused: the three run at once.
    let tries: Vec<Proc> = [
        &["put", ep, "f.txt", "--token-file", s(&bad)][..],
        &["get", ep, "there.txt", "--token-file", s(&bad)],
        &["ls", ep, "--token-file", s(&bad)],
    ]
    .into_iter()
    .map(|args| start(client(&c, args)))
    .collect();
    for t in tries {
        assert_fails(&t.finish(LIMIT), &["refused the token"]);
    }
    assert_fails(&run_in(&c, &["put", ep, "f.txt"]), &["wants a token"]);
    assert_eq!(snapshot(&root), before, "a refused client changed the root");
    assert_eq!(visible(&c), ["f.txt"]);

    // The right token, from the file or the environment.
    assert_ok(&run_in(&c, &["put", ep, "f.txt", "--token-file", s(&good)]));
    assert_file(&root.join("f.txt"), b"content");
    let mut ls = client(&c, &["ls", ep]);
    ls.env("SOCKIT_TOKEN", "correct-horse-battery-staple-0123456789");
    let ls = start(ls).finish(LIMIT);
    assert_ok(&ls);
    assert_eq!(ls_lines(&ls.stdout), [("f.txt".to_owned(), 7), ("there.txt".to_owned(), 5)]);
}

// ---------------------------------------------------------------------------------------------
// 10. One connection's bad requests do not disturb another's transfer

/// One round of bad requests, each on a connection of its own; `busy` is the name another
/// connection is uploading, if it is sure to be still at it.
fn bad_requests(socket: &Path, busy: Option<&str>, round: u32) {
    // An unknown message type: ERROR (protocol), then the end of the connection.
    let mut r = Raw::connect(socket);
    r.send(0x99, b"?");
    assert_eq!(r.expect_error().0, PROTOCOL_ERROR);
    assert!(r.recv().is_none());
    // A message out of turn.
    let mut r = Raw::connect(socket);
    r.send(FROM, &0u64.to_be_bytes());
    assert_eq!(r.expect_error().0, PROTOCOL_ERROR);
    assert!(r.recv().is_none());
    // A message with bytes left over.
    let mut r = Raw::connect(socket);
    r.send(STORED, b"extra");
    assert_eq!(r.expect_error().0, PROTOCOL_ERROR);
    // A frame over the limit: the connection ends.
    let mut r = Raw::connect(socket);
    r.s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let mut messages = 0;
    while r.recv().is_some() {
        messages += 1;
        assert!(messages < 3, "the connection did not end after an oversized frame");
    }
    // A truncated frame, then the client leaves.
    let mut r = Raw::connect(socket);
    r.s.write_all(&[0, 0, 0, 100, LIST, b'a']).unwrap();
    drop(r);
    // Refused paths and a busy name: errors, but this connection goes on.
    let mut r = Raw::connect(socket);
    r.get(b"../../etc/passwd");
    assert_eq!(r.expect_error().0, BAD_PATH);
    r.send(LIST, b"a\0b");
    assert_eq!(r.expect_error().0, BAD_PATH);
    if let Some(busy) = busy {
        r.put(busy.as_bytes(), 10, false);
        let (code, text) = r.expect_error();
        assert_eq!(code, BUSY, "{text}");
        r.put(busy.as_bytes(), 10, true);
        assert_eq!(r.expect_error().0, BUSY);
        let listed = r.list(b"");
        assert!(!listed.iter().any(|(_, _, n)| is_partial(n) || n == busy), "{listed:?}");
    }
    // An upload abandoned after 1 MiB of 100.
    r.put(format!("abandoned-{round}.bin").as_bytes(), 100 * MIB, false);
    r.expect(READY);
    r.send(FROM, &0u64.to_be_bytes());
    r.s.write_all(&vec![7u8; MIB as usize]).unwrap();
    drop(r);
}

#[test]
fn bad_requests_on_other_connections_do_not_disturb_a_transfer() {
    const SIZE: u64 = 256 * MIB + 99;
    let _heavy = heavy();
    let Some(dir) = big_dir(SIZE, "bad_requests_on_other_connections_do_not_disturb_a_transfer") else { return };
    let p = Place::with(dir);
    let server = p.serve(&[]);
    let ep = server.endpoint.as_str();
    let (c, root) = (p.client(), p.root());
    let pat = Pattern::new(100);
    pat.write(&c.join("good.bin"), SIZE);
    fs::write(root.join("small.txt"), b"small").unwrap();

    let mut put = start(client(&c, &["put", ep, "good.bin"]));
    wait_for_size(&root.join(".good.bin.sockit-part"), 16 * MIB, &mut put);
    put.signal(libc::SIGSTOP);
    bad_requests(&p.socket(), Some("good.bin"), 0);
    assert_fails(&run_in(&c, &["get", ep, "../../etc/passwd", "x"]), REFUSED);
    assert_fails(&run_in(&c, &["ls", ep, "/"]), REFUSED);
    // Others are served meanwhile.
    assert_ok(&run_in(&c, &["get", ep, "small.txt"]));
    assert_file(&c.join("small.txt"), b"small");
    put.signal(libc::SIGCONT);
    let mut rounds = 1;
    while put.running() && rounds < 20 {
        bad_requests(&p.socket(), None, rounds);
        rounds += 1;
    }
    let done = put.finish(BIG_LIMIT);
    assert_ok(&done);
    pat.check(&root.join("good.bin"), SIZE);
    let line = conn_line(&server, done.pid);
    assert!(line.ends_with("closed by client"), "{line}");
    eprintln!("{rounds} rounds of bad requests during the transfer");
    assert_serves(ep, &c, &root, "after-bad-requests.txt");
}
