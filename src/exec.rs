//! Remote commands: the `exec` service and its client (PROTOCOL.md, section 6).
//!
//! A session authenticates ([`crate::auth`]), then runs one command per `EXEC` request, one after
//! another. The argv is executed as given, with no shell in between. The command gets fresh pipes
//! for fds 0 to 2 and nothing else, default signal dispositions, and its own process group, so
//! that it and everything it started can be killed together: on a timeout, when the client goes
//! away, or when the server is cut at shutdown. Output streams back as it is produced, stdout and
//! stderr kept apart, through a channel of a few 64 KiB chunks: a client that reads slowly makes
//! the server stop reading the pipes, and the command blocks on its own writes, so memory stays
//! bounded whatever the output size.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::auth::{self, HandshakeError, Policy, Token};
use crate::net::Stream;
use crate::proto::{ExitStatus, Msg, OUTPUT_CHUNK, ProtoError, ServiceKind, code, read_msg, write_msg};
use crate::server::{End, SessionLimits, Traffic};

/// How an `exec` server behaves.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Who may run commands.
    pub policy: Policy,
    /// The longest any command may run; a client may ask for less, never more.
    pub max_timeout: Option<Duration>,
}

/// How long output is still read after the command has exited and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Signals a client may deliver to its command: HUP, INT, QUIT, KILL, USR1, USR2, TERM.
const ALLOWED_SIGNALS: [u8; 7] = [1, 2, 3, 9, 10, 12, 15];

/// Serves one `exec` connection until the client leaves.
pub async fn session(mut stream: Stream, config: &ExecConfig, limits: SessionLimits<'_>, traffic: &mut Traffic) -> End {
    let uid = match stream.peer_uid() {
        Ok(uid) => uid,
        Err(e) => return End::Io(format!("cannot read the peer's credentials: {e}")),
    };
    let handshake = auth::server_handshake(&mut stream, ServiceKind::Exec, &config.policy, uid);
    match limits.between_requests(handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return End::Protocol(format!("authentication failed: {e}")),
        Err(end) => return end,
    }
    let mut buf = Vec::new();
    loop {
        let msg = match limits.between_requests(read_msg(&mut stream, &mut buf)).await {
            Err(end) => return end,
            Ok(Ok(None)) => return End::PeerClosed,
            Ok(Ok(Some(m))) => m,
            Ok(Err(ProtoError::Io(e))) => return End::Io(e.to_string()),
            Ok(Err(e)) => {
                let _ = send_counted(&mut stream, &Msg::error(code::PROTOCOL, e.to_string()), traffic).await;
                return End::Protocol(e.to_string());
            }
        };
        traffic.bytes_in += buf.len() as u64 + 4;
        let (argv, timeout_ms, stdin) = match msg {
            Msg::Exec { argv, timeout_ms, stdin } => (argv, timeout_ms, stdin),
            // Input or a signal meant for a command that has just ended crossed its EXIT.
            Msg::Stdin(_) | Msg::StdinEof | Msg::Signal(_) => continue,
            msg => {
                let why = format!("expected EXEC, got {}", msg.name());
                let _ = send_counted(&mut stream, &Msg::error(code::PROTOCOL, why.clone()), traffic).await;
                return End::Protocol(why);
            }
        };
        let asked = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()));
        let timeout = match (asked, config.max_timeout) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        };
        if let Err(end) = run(&mut stream, argv, stdin, timeout, &limits, traffic).await {
            return end;
        }
    }
}

fn proto_end(e: ProtoError) -> End {
    match e {
        ProtoError::Io(e) => End::Io(e.to_string()),
        other => End::Protocol(other.to_string()),
    }
}

/// Kills a command's whole process group when dropped, whatever path the session takes out.
struct Group(Option<Pid>);

impl Group {
    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH (everything already gone) is the expected outcome, not an error.
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

fn spawn(argv: &[Vec<u8>], stdin: bool) -> io::Result<Child> {
    use std::os::unix::ffi::OsStrExt;
    let arg = |a: &Vec<u8>| std::ffi::OsStr::from_bytes(a).to_owned();
    let mut cmd = Command::new(arg(&argv[0]));
    cmd.args(argv[1..].iter().map(arg))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and calls only close_range(2), rt_sigaction(2),
    // sigemptyset(3) and sigprocmask(2), which are async-signal-safe. std has already placed the pipes on fds 0 to 2.
    unsafe {
        cmd.pre_exec(|| {
            // Every other descriptor the server holds (a listener, other clients, anything it
            // inherited without CLOEXEC) is closed at exec. Marking them rather than closing them
            // keeps std's own pipe, which reports a failed exec, working until then.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Default dispositions for every signal and an empty signal mask, whatever the
            // server inherited (a shell starts background jobs with SIGINT and SIGQUIT ignored)
            // or set (SIGPIPE).
            // The raw system call: the C library refuses to touch the two real-time signals it
            // reserves for itself, which a parent may still have left ignored. An all-zero
            // kernel sigaction is SIG_DFL with no flags and an empty mask, whatever the layout.
            let default = [0u64; 4];
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, default.as_ptr(), 0usize, 8usize);
                }
            }
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.spawn()
}

fn spawn_error(argv0: &[u8], e: &io::Error) -> Msg {
    let name = String::from_utf8_lossy(argv0);
    match e.kind() {
        io::ErrorKind::NotFound => Msg::error(code::NOT_FOUND, format!("{name}: command not found")),
        io::ErrorKind::PermissionDenied => Msg::error(code::NOT_EXECUTABLE, format!("{name}: permission denied")),
        _ => Msg::error(code::FAILED, format!("{name}: cannot run: {e}")),
    }
}

/// Runs one command to its end. `Ok` means the session may take another request.
async fn run(
    stream: &mut Stream,
    argv: Vec<Vec<u8>>,
    stdin: bool,
    timeout: Option<Duration>,
    limits: &SessionLimits<'_>,
    traffic: &mut Traffic,
) -> Result<(), End> {
    let mut child = match spawn(&argv, stdin) {
        Ok(c) => c,
        Err(e) => {
            let msg = spawn_error(&argv[0], &e);
            return send_counted(stream, &msg, traffic).await.map_err(|e| End::Io(e.to_string()));
        }
    };
    let pid = child.id().unwrap_or(0);
    let group = Group(Pid::from_raw(pid as i32));
    send_counted(stream, &Msg::Started { pid }, traffic).await.map_err(|e| End::Io(e.to_string()))?;

    let (out_tx, mut out_rx) = mpsc::channel::<Msg>(4);
    let stdout = pump(child.stdout.take(), Msg::Stdout, out_tx.clone());
    let stderr = pump(child.stderr.take(), Msg::Stderr, out_tx);
    let mut child_stdin = child.stdin.take();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*stream);
    let (mut rd, mut wr) = tokio::io::split(&mut *stream);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);

    // Output: every chunk of both pipes, in order per pipe, until both reach their end.
    let output = async {
        let writer = async {
            while let Some(msg) = out_rx.recv().await {
                let mut b = bytes::BytesMut::new();
                msg.encode(&mut b);
                if let Err(e) = wr.write_all(&b).await {
                    // Nobody reads any more: let the pumps stop instead of waiting on a full channel.
                    out_rx.close();
                    return Err(e);
                }
                sent.fetch_add(b.len() as u64, Relaxed);
            }
            io::Result::Ok(())
        };
        let (_, _, written) = tokio::join!(stdout, stderr, writer);
        written
    };
    // Input: stdin for the command, signals, and the client going away.
    let input = async {
        let mut buf = Vec::new();
        loop {
            let msg = match read_msg(&mut rd, &mut buf).await {
                Ok(Some(m)) => m,
                Ok(None) => return End::PeerClosed,
                Err(e) => return proto_end(e),
            };
            received.fetch_add(buf.len() as u64 + 4, Relaxed);
            match msg {
                Msg::Stdin(data) => {
                    let Some(pipe) = child_stdin.as_mut() else { continue };
                    // The command may not read its input; meanwhile notice a client that left.
                    let write = pipe.write_all(&data);
                    tokio::pin!(write);
                    let mut probe = tokio::time::interval(Duration::from_millis(250));
                    let done = loop {
                        tokio::select! {
                            r = &mut write => break r.is_ok(),
                            _ = probe.tick() => if crate::net::peer_hung_up(fd) {
                                return End::PeerClosed;
                            },
                        }
                    };
                    if !done {
                        // The command closed its stdin: drop the rest, as a pipe would.
                        child_stdin = None;
                    }
                }
                Msg::StdinEof => child_stdin = None,
                Msg::Signal(sig) if ALLOWED_SIGNALS.contains(&sig) => {
                    if let Some(sig) = Signal::from_named_raw(sig.into()) {
                        group.signal(sig);
                    }
                }
                Msg::Signal(_) => {}
                other => return End::Protocol(format!("{} while a command runs", other.name())),
            }
        }
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let mut timed_out = false;
    let mut drained = false;
    let mut exited = None;
    // Once the command has exited and its group is killed, its pipes close; a process that left
    // the group (setsid) and keeps them open is not waited for beyond this.
    let drain_limit = tokio::time::sleep(crate::MAX_DURATION);
    // In a block, so that the futures (and their borrows of the socket) end with it.
    let outcome = {
        tokio::pin!(output, input, deadline, drain_limit);
        loop {
            if drained && let Some(status) = exited.take() {
                break Ok(status);
            }
            tokio::select! {
                written = &mut output, if !drained => match written {
                    Ok(()) => drained = true,
                    Err(e) => break Err(End::Io(e.to_string())),
                },
                status = child.wait(), if exited.is_none() => {
                    // Whatever the command left running in its group goes with it, so that
                    // background children holding the pipes cannot keep the session waiting.
                    group.signal(Signal::KILL);
                    exited = Some(status);
                    drain_limit.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = &mut drain_limit, if exited.is_some() => break Ok(exited.take().expect("checked")),
                // The client left or broke the protocol: nobody will read the output.
                end = &mut input => break Err(end),
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    group.signal(Signal::KILL);
                }
                _ = limits.cut.cancelled() => break Err(End::Cut),
            }
        }
    };
    traffic.bytes_in += received.load(Relaxed);
    traffic.bytes_out += sent.load(Relaxed);
    group.signal(Signal::KILL);
    let status = match outcome {
        Err(end) => {
            reap(&mut child).await;
            if let End::Protocol(why) = &end {
                let _ = send_counted(stream, &Msg::error(code::PROTOCOL, why.clone()), traffic).await;
            }
            return Err(end);
        }
        Ok(Err(e)) => return Err(End::Io(e.to_string())),
        Ok(Ok(_)) if timed_out => ExitStatus::TimedOut,
        Ok(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            (None, None) => ExitStatus::Code(255),
        },
    };
    send_counted(stream, &Msg::Exit(status), traffic).await.map_err(|e| End::Io(e.to_string()))
}

/// Writes a message and counts its bytes.
async fn send_counted(stream: &mut Stream, msg: &Msg, traffic: &mut Traffic) -> io::Result<()> {
    let mut b = bytes::BytesMut::new();
    msg.encode(&mut b);
    stream.write_all(&b).await?;
    traffic.bytes_out += b.len() as u64;
    Ok(())
}

/// Waits for a killed command to be gone, so that no zombie is left (bounded: a process stuck in
/// the kernel is left to the runtime's reaper).
async fn reap(child: &mut Child) {
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

/// Reads a pipe to its end, a chunk per message, into the bounded output channel.
async fn pump<R: AsyncRead + Unpin>(pipe: Option<R>, wrap: fn(Bytes) -> Msg, tx: mpsc::Sender<Msg>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// What went wrong on the client's side of a command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The connection or the protocol failed.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The server could not start the command; the code says why ([`code`]).
    #[error("{message}")]
    Refused {
        /// The error code.
        code: u8,
        /// The server's words.
        message: String,
    },
    /// The server closed before the command's exit status arrived.
    #[error("the server closed the connection before the command finished")]
    Lost,
    /// The server sent something out of turn.
    #[error("unexpected {0} from the server")]
    Unexpected(&'static str),
    /// Writing the output here failed.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

impl ExecError {
    /// The exit code a shell gives for this failure: 127 not found, 126 not executable, 255
    /// otherwise (as ssh does).
    pub fn shell_code(&self) -> u8 {
        match self {
            ExecError::Refused { code: code::NOT_FOUND, .. } => 127,
            ExecError::Refused { code: code::NOT_EXECUTABLE, .. } => 126,
            _ => 255,
        }
    }
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// Program and arguments.
    pub argv: Vec<Vec<u8>>,
    /// A time limit (`None`: the server's).
    pub timeout: Option<Duration>,
    /// Whether the command gets our stdin (otherwise it reads `/dev/null`).
    pub stdin: bool,
}

/// An authenticated `exec` connection that runs commands one after another.
pub struct ExecClient {
    stream: Stream,
    buf: Vec<u8>,
}

impl ExecClient {
    /// Authenticates on a connected stream.
    pub async fn handshake(mut stream: Stream, token: Option<&Token>) -> Result<ExecClient, HandshakeError> {
        auth::client_handshake(&mut stream, ServiceKind::Exec, token).await?;
        Ok(ExecClient { stream, buf: Vec::new() })
    }

    /// Runs a command: `input` feeds its stdin (when the request asks for it), its output goes to
    /// `out` and `err` as it arrives, and each signal number from `signals` is delivered to it.
    /// Returns how it ended.
    pub async fn run<I, O, E>(
        &mut self,
        req: &Request,
        mut input: I,
        mut out: O,
        mut err: E,
        signals: &mut mpsc::Receiver<u8>,
    ) -> Result<ExitStatus, ExecError>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let timeout_ms = req.timeout.map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32);
        let exec = Msg::Exec { argv: req.argv.clone(), timeout_ms, stdin: req.stdin };
        write_msg(&mut self.stream, &exec).await.map_err(ProtoError::Io)?;
        let (mut rd, mut wr) = tokio::io::split(&mut self.stream);
        let buf = &mut self.buf;
        let receive = async {
            loop {
                let msg = read_msg(&mut rd, buf).await?.ok_or(ExecError::Lost)?;
                match msg {
                    Msg::Started { .. } => {}
                    Msg::Stdout(data) => write_flush(&mut out, &data).await?,
                    Msg::Stderr(data) => write_flush(&mut err, &data).await?,
                    Msg::Exit(status) => return Ok(status),
                    Msg::Error { code, message } => return Err(ExecError::Refused { code, message }),
                    other => return Err(ExecError::Unexpected(other.name())),
                }
            }
        };
        let send = async {
            let mut chunk = vec![0u8; OUTPUT_CHUNK];
            let mut input_open = req.stdin;
            let mut signals_open = true;
            while input_open || signals_open {
                tokio::select! {
                    n = input.read(&mut chunk), if input_open => {
                        let msg = match n {
                            Ok(0) | Err(_) => { input_open = false; Msg::StdinEof }
                            Ok(n) => Msg::Stdin(Bytes::copy_from_slice(&chunk[..n])),
                        };
                        if write_msg(&mut wr, &msg).await.is_err() { break }
                    }
                    sig = signals.recv(), if signals_open => match sig {
                        Some(sig) => if write_msg(&mut wr, &Msg::Signal(sig)).await.is_err() { break },
                        None => signals_open = false,
                    },
                }
            }
            // Nothing more to send; keep the receive side going.
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = receive => r,
            _ = send => unreachable!("the sender never finishes"),
        }
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> Result<(), ExecError> {
    w.write_all(data).await.map_err(ExecError::Output)?;
    w.flush().await.map_err(ExecError::Output)
}
