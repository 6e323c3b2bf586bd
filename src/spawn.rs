//! Programs wired to clients: the `spawn` service (PROTOCOL.md, section 9), like `ncat -e`.
//!
//! Every client gets a fresh process of one configured program: what the client sends is the
//! program's stdin, what the program writes to its stdout is what the client receives, raw bytes
//! both ways; its stderr is the server's. The session pumps both pipes itself rather than handing
//! the socket to the program, so that the idle timeout, the byte counts and the server's
//! shutdown apply as on every other service.
//!
//! Who may connect follows `exec`'s rules ([`crate::auth`]). With a token, the client first
//! completes the sockit handshake and the raw bytes begin after `WELCOME`. Without one (only on a
//! Unix socket) there is no handshake at all, so that `nc -U` and any program that can open a
//! socket are clients: the peer's uid alone decides, and a refused peer reads one line saying
//! why. Nothing is started before the client is in. The program is confined as `exec`'s commands
//! are ([`crate::child`]), and its process group is killed and reaped whenever the session ends.
//!
//! Both directions end on their own, as with a pipe. The client half-closing its connection
//! closes the program's stdin while its output still flows back; the program closing its stdout
//! (or exiting) half-closes the connection after the last byte. The session ends once the program
//! has exited and its output is sent; or when the client leaves (its input still reaches the
//! program, which is killed at its first write or after a short last chance to exit), resets the
//! connection, the idle timeout or the time limit runs out, or the server is cut.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rustix::process::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, HandshakeError, Policy, Token};
use crate::child::{self, Running};
use crate::net::Stream;
use crate::proto::ServiceKind;
use crate::server::{End, SessionLimits, Traffic};

/// How a `spawn` server behaves.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// The file to execute, found once when the server starts ([`resolve_program`]).
    pub program: PathBuf,
    /// The program's argv; `argv[0]` is the name as given, which the program sees.
    pub argv: Vec<OsString>,
    /// Who may connect.
    pub policy: Policy,
    /// The longest a program may run; it is killed then, and the session ends.
    pub timeout: Option<Duration>,
    /// The soft limit on open files programs get (`None`: whatever the server has).
    pub child_nofile: Option<u64>,
}

/// A program that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// No such file, in the `PATH` or at the path given.
    #[error("{0}: command not found")]
    NotFound(String),
    /// There is such a file, but it cannot be executed.
    #[error("{name}: cannot execute: {why}")]
    NotExecutable {
        /// The program as given.
        name: String,
        /// Why.
        why: io::Error,
    },
}

/// Finds the file that `execvp` would run for `name`: `name` itself if it holds a `/`, else the
/// first executable regular file `DIR/name` for the directories of `$PATH` (an empty entry is the
/// current directory; without `PATH`, `/bin:/usr/bin`). A server checks its program once with
/// this at start, rather than failing for every client.
pub fn resolve_program(name: &OsStr) -> Result<PathBuf, ProgramError> {
    let shown = name.to_string_lossy().into_owned();
    if name.is_empty() {
        return Err(ProgramError::NotFound(shown));
    }
    if name.as_bytes().contains(&b'/') {
        let path = Path::new(name);
        return runnable(path, &shown).map(|()| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    // As execvp does: a file found but not executable is reported if nothing better turns up.
    let mut refused = None;
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(name);
        match runnable(&candidate, &shown) {
            Ok(()) => return Ok(candidate),
            Err(e @ ProgramError::NotExecutable { .. }) => refused = refused.or(Some(e)),
            Err(ProgramError::NotFound(_)) => {}
        }
    }
    Err(refused.unwrap_or(ProgramError::NotFound(shown)))
}

/// Whether `path` is a regular file this process may execute.
fn runnable(path: &Path, shown: &str) -> Result<(), ProgramError> {
    let refused = |why| ProgramError::NotExecutable { name: shown.to_owned(), why };
    match std::fs::metadata(path) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            Err(ProgramError::NotFound(shown.to_owned()))
        }
        Err(e) => Err(refused(e)),
        Ok(m) if m.is_dir() => Err(refused(io::Error::from_raw_os_error(libc::EISDIR))),
        Ok(m) if !m.is_file() => Err(refused(io::Error::from_raw_os_error(libc::EACCES))),
        Ok(_) => rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|e| refused(e.into())),
    }
}

/// How long output is still read after the program has exited and its group was killed; and how
/// long a program whose input and output have both ended gets to exit by itself before it is
/// killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How often a session that is not reading from its client checks that the client is still there.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long a finished session goes on reading (and dropping) what the client still sends
/// before it closes: closing with unread bytes would reset the connection, and a reset can
/// destroy the end of the output before the client has read it.
const LINGER: Duration = Duration::from_secs(1);

/// When a TCP client's connection is first probed with keepalives after it went quiet.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// How much one read from the client or from the program moves at most.
const CHUNK: usize = 64 * 1024;

/// Serves one `spawn` connection: admits the client, starts the program, and wires the two
/// together until the session ends.
pub async fn session(
    mut stream: Stream,
    config: &SpawnConfig,
    limits: SessionLimits<'_>,
    traffic: &mut Traffic,
) -> End {
    if let Err(end) = admit(&mut stream, config, &limits).await {
        return end;
    }
    let mut running = match start(config) {
        Ok(c) => Running::new(c),
        // The program vanished since the server started: the client is closed on, and the
        // server's log says why.
        Err(e) => return End::Io(format!("cannot run {}: {e}", config.program.display())),
    };
    // On TCP a client that closed entirely looks like one that only half-closed, until something
    // is sent to it. Keepalive probes find it gone even while the program is silent.
    stream.set_keepalive(KEEPALIVE);
    let end = wire(&mut stream, &mut running, config, &limits, traffic).await;
    // The group is killed before the program is reaped, never after (see `Running`).
    running.finish().await;
    end
}

/// Lets the client in or says why not: the handshake with a token, the peer's uid without one.
async fn admit(stream: &mut Stream, config: &SpawnConfig, limits: &SessionLimits<'_>) -> Result<(), End> {
    if config.policy.token.is_some() {
        return limits.admit(stream, ServiceKind::Spawn, &config.policy).await;
    }
    let uid = stream.peer_uid().map_err(|e| End::Io(format!("cannot read the peer's credentials: {e}")))?;
    let why = match uid {
        Some(uid) if config.policy.uid_allowed(uid) => return Ok(()),
        Some(uid) => format!("uid {uid} may not use this server (--allow-uid)"),
        // Only a Unix socket, where the kernel names the peer, may go without a token.
        None => "this server has no token, and on TCP it needs one".to_owned(),
    };
    // The client speaks raw bytes: the refusal is a line of text, as a busy server's is.
    let line = format!("sockit: {why}\n");
    let refuse = async {
        stream.write_all(line.as_bytes()).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), refuse).await;
    Err(End::Protocol(format!("authentication failed: {why}")))
}

/// Starts the program, confined, with pipes for stdin and stdout.
fn start(config: &SpawnConfig) -> io::Result<Child> {
    let mut cmd = tokio::process::Command::new(&config.program);
    cmd.arg0(&config.argv[0])
        .args(&config.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Like ncat's, the program's diagnostics go to the server's stderr, not to the client.
        .stderr(Stdio::inherit());
    child::confine(&mut cmd, config.child_nofile);
    cmd.spawn()
}

/// How the client-to-program direction ended.
enum Input {
    /// The client half-closed its side; the program's stdin is closed.
    Eof,
    /// The server is shutting down and takes no more input; the program's stdin is closed.
    Stopped,
    /// The client closed the whole connection; the program's stdin is closed.
    HungUp,
    /// Reading from the client failed (a reset).
    Failed(io::Error),
}

/// Moves bytes between the client and the program until the session ends, and says how it
/// ended. The caller finishes `running` (kills its group, then reaps it).
async fn wire(
    stream: &mut Stream,
    running: &mut Running,
    config: &SpawnConfig,
    limits: &SessionLimits<'_>,
    traffic: &mut Traffic,
) -> End {
    let fd = stream.as_raw_fd();
    let stdin = running.child().stdin.take();
    let stdout = running.child().stdout.take();
    let running = &*running;
    let started = Instant::now();
    // When bytes last moved either way (milliseconds after `started`), for the idle timeout.
    let last_moved = AtomicU64::new(0);
    let moved = || last_moved.store(started.elapsed().as_millis() as u64, Relaxed);
    let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
    // Set while a write to the program's stdin is pending (its pipe may be full): nothing is
    // read from the client meanwhile.
    let stdin_full = AtomicBool::new(false);
    // Set once the connection is half-closed toward the client (the output has ended).
    let output_closed = AtomicBool::new(false);
    let stop_input = CancellationToken::new();
    let stop_output = CancellationToken::new();
    let mut client_eof = false;
    let (mut rd, mut wr) = tokio::io::split(&mut *stream);

    // Client to program. The program's stdin closes when this returns.
    let input = async {
        let mut stdin = stdin;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::select! {
                n = rd.read(&mut buf) => n,
                _ = stop_input.cancelled() => return Input::Stopped,
            };
            let n = match n {
                // A whole close and a half-close both read as the end; the kernel tells them
                // apart (on TCP, only once the connection is reset).
                Ok(0) if !output_closed.load(Relaxed) && hung_up(fd) => return Input::HungUp,
                Ok(0) => return Input::Eof,
                Ok(n) => n,
                Err(e) => return Input::Failed(e),
            };
            bytes_in.fetch_add(n as u64, Relaxed);
            moved();
            let Some(pipe) = stdin.as_mut() else { continue };
            stdin_full.store(true, Relaxed);
            let written = tokio::select! {
                r = pipe.write_all(&buf[..n]) => r,
                _ = stop_input.cancelled() => return Input::Stopped,
            };
            stdin_full.store(false, Relaxed);
            match written {
                Ok(()) => moved(),
                // The program closed its stdin: the rest is dropped, as a pipe would.
                Err(_) => stdin = None,
            }
        }
    };
    // Program to client, then a half-close. Only reading from the program stops early (after
    // it has exited); what was read is all written.
    let output = async {
        if let Some(mut pipe) = stdout {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = tokio::select! {
                    n = pipe.read(&mut buf) => n,
                    _ = stop_output.cancelled() => break,
                };
                let n = match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut at = 0;
                while at < n {
                    // Each partial write is progress: a client that reads slowly is not idle.
                    let w = wr.write(&buf[at..n]).await?;
                    if w == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    at += w;
                    bytes_out.fetch_add(w as u64, Relaxed);
                    moved();
                }
                // On TLS the last bytes may wait in its buffer while the program is silent.
                wr.flush().await?;
            }
        }
        wr.shutdown().await?;
        output_closed.store(true, Relaxed);
        io::Result::Ok(())
    };

    let idle = limits.idle_timeout;
    let time_limit = config.timeout.map(|t| crate::later(started, t));
    let mut input_done = false;
    let mut output_done = false;
    let mut exited = false;
    let mut timed_out = false;
    let mut shutting_down = false;
    let mut last_chance_over = false;
    // The client closed the whole connection: its input has ended and the output has nowhere
    // to go.
    let mut client_left = false;
    // Armed at the program's exit (the output drain), or when both directions have ended or the
    // client has left (the program's last chance to exit by itself).
    let after = tokio::time::sleep(crate::MAX_DURATION);
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // In a block, so that the futures (and their borrows of the socket) end with it.
    let end = {
        tokio::pin!(input, output, after);
        loop {
            if exited && output_done {
                break if client_left {
                    End::PeerClosed
                } else if timed_out {
                    End::TimedOut
                } else {
                    End::SessionEnded
                };
            }
            let idle_at = idle.map(|t| crate::later(started + Duration::from_millis(last_moved.load(Relaxed)), t));
            let last_chance = !exited && !last_chance_over && ((input_done && output_done) || client_left);
            // A client that is not being read could leave unnoticed; ask the kernel now and then.
            let watch = !client_left && !output_closed.load(Relaxed) && (input_done || stdin_full.load(Relaxed));
            tokio::select! {
                r = &mut input, if !input_done => {
                    input_done = true;
                    match r {
                        Input::Eof => client_eof = true,
                        Input::Stopped => {}
                        // What the client sent before it left still reaches the program, which
                        // may be a sink that only needs its input to end (`cat >> log`).
                        Input::HungUp => (client_eof, client_left) = (true, true),
                        // A reset is an abort: nothing is waited for.
                        Input::Failed(e) => break client_gone(e),
                    }
                    if (output_done || client_left) && !exited {
                        after.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                }
                r = &mut output, if !output_done => {
                    output_done = true;
                    if let Err(e) = r {
                        break client_gone(e);
                    }
                    if input_done && !exited {
                        after.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                }
                () = running.exited(), if !exited => {
                    exited = true;
                    // Whatever the program left running in its group goes with it, so that
                    // background children holding the pipes cannot keep the session open.
                    running.signal(Signal::KILL);
                    after.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = &mut after, if (exited && !stop_output.is_cancelled()) || last_chance => {
                    if exited {
                        // A process that left the group holds the stdout pipe: stop reading it.
                        stop_output.cancel();
                    } else {
                        // Nothing can reach the program or come from it any more, and it did
                        // not end by itself.
                        last_chance_over = true;
                        running.signal(Signal::KILL);
                    }
                }
                _ = sleep_until(time_limit), if !timed_out && !exited => {
                    timed_out = true;
                    running.signal(Signal::KILL);
                }
                _ = sleep_until(idle_at) => {
                    // Bytes may have moved since the timer was set; then it is set again.
                    let last = started + Duration::from_millis(last_moved.load(Relaxed));
                    if idle.is_some_and(|t| last + t <= Instant::now()) {
                        break End::IdleTimeout;
                    }
                }
                _ = probe.tick(), if watch => if hung_up(fd) {
                    // As if read: the program's input ends (whatever it has not taken yet is
                    // dropped), and it gets its last chance.
                    client_left = true;
                    stop_input.cancel();
                    if !exited {
                        after.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                },
                // The program's input ends, as a message session's reading does; its output
                // still flows until it exits or the grace period is over.
                _ = limits.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    stop_input.cancel();
                }
                _ = limits.cut.cancelled() => break End::Cut,
            }
        }
    };
    traffic.bytes_in += bytes_in.load(Relaxed);
    traffic.bytes_out += bytes_out.load(Relaxed);
    match end {
        End::SessionEnded | End::TimedOut if !client_eof => {
            running.signal(Signal::KILL);
            linger(stream).await;
        }
        End::Cut | End::IdleTimeout => {
            running.signal(Signal::KILL);
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        _ => {}
    }
    end
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the client has closed the connection entirely (not just its sending side) or it was
/// reset. Meaningful only while this side has not shut down its own sending side.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    crate::net::poll_now(fd, 0).is_none_or(|r| r & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// The end of a session whose client connection failed: a client that leaves is the normal end
/// of a pipe, not an error.
fn client_gone(e: io::Error) -> End {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected => End::PeerClosed,
        _ => End::Io(e.to_string()),
    }
}

/// Reads and drops what the client still sends, until it closes its side or [`LINGER`] passes.
async fn linger(stream: &mut Stream) {
    let mut buf = vec![0u8; CHUNK];
    let drain = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

// ---------------------------------------------------------------------------------------------
// The client

/// The client's side of a `spawn` server that has a token: the handshake ([`auth`]), after which
/// `stream` carries the program's raw bytes. A server without a token takes no handshake; its
/// clients just send.
pub async fn authenticate(stream: &mut Stream, token: &Token) -> Result<(), HandshakeError> {
    let server_uid = stream.peer_uid()?;
    auth::client_handshake(stream, ServiceKind::Spawn, Some(token), server_uid).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        let sh = resolve_program(OsStr::new("sh")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(resolve_program(OsStr::new("/bin/sh")).unwrap(), Path::new("/bin/sh"));
        for missing in ["no-such-program-e7x", "/nonexistent/prog", ""] {
            let e = resolve_program(OsStr::new(missing)).unwrap_err();
            assert!(matches!(e, ProgramError::NotFound(_)), "{missing}: {e}");
        }
        let e = resolve_program(OsStr::new("/tmp")).unwrap_err();
        assert_eq!(e.to_string(), format!("/tmp: cannot execute: {}", io::Error::from_raw_os_error(libc::EISDIR)));
        assert!(matches!(resolve_program(OsStr::new("/etc/passwd")), Err(ProgramError::NotExecutable { .. })));
    }
}
