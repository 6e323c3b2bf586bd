//! Remote commands: the `exec` service and its client (PROTOCOL.md, section 6).
//!
//! A session authenticates ([`crate::auth`]), then runs one command per `EXEC` request, one after
//! another. The argv is executed as given, with no shell in between. The command gets fresh pipes
//! for fds 0 to 2 and nothing else, default signal dispositions, and its own process group
//! ([`crate::child`]), so that it and everything it started can be killed together: on a
//! timeout, when the client goes away, or when the server is cut at shutdown. Output streams
//! back as it is produced, stdout and stderr kept apart, through a channel of a few 64 KiB
//! chunks: a client that reads slowly makes the server stop reading the pipes, and the command
//! blocks on its own writes, so memory stays bounded whatever the output size.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rustix::process::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, HandshakeError, Policy, Token};
use crate::child::{self, Running};
use crate::net::Stream;
use crate::proto::{ExitStatus, Msg, MsgReader, OUTPUT_CHUNK, ProtoError, ServiceKind, code, write_msg};
use crate::server::{End, SessionLimits, Traffic};

/// How an `exec` server behaves.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Who may run commands.
    pub policy: Policy,
    /// The longest any command may run; a client may ask for less, never more.
    pub max_timeout: Option<Duration>,
    /// The soft limit on open files commands get (a server usually raises its own; `None`:
    /// whatever the server has).
    pub child_nofile: Option<u64>,
}

/// How long output is still read after the command has exited and its group was killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Signals a client may deliver to its command: HUP, INT, QUIT, KILL, USR1, USR2, TERM.
const ALLOWED_SIGNALS: [u8; 7] = [1, 2, 3, 9, 10, 12, 15];

/// Serves one `exec` connection until the client leaves.
pub async fn session(mut stream: Stream, config: &ExecConfig, limits: SessionLimits<'_>, traffic: &mut Traffic) -> End {
    if let Err(end) = limits.admit(&mut stream, ServiceKind::Exec, &config.policy).await {
        return end;
    }
    // One reader for the whole session: a read abandoned when a command ends loses nothing.
    let mut reader = MsgReader::default();
    let end = requests(&mut stream, &mut reader, config, &limits, traffic).await;
    traffic.bytes_in += reader.bytes_read();
    end
}

/// Takes `EXEC` requests one after another until the session ends.
async fn requests(
    stream: &mut Stream,
    reader: &mut MsgReader,
    config: &ExecConfig,
    limits: &SessionLimits<'_>,
    traffic: &mut Traffic,
) -> End {
    loop {
        let msg = match limits.between_requests(reader.next(stream)).await {
            Err(end) => return end,
            Ok(Ok(None)) => return End::PeerClosed,
            Ok(Ok(Some(m))) => m,
            Ok(Err(e)) => return protocol_error(stream, e, traffic).await,
        };
        let (argv, timeout_ms, stdin) = match msg {
            Msg::Exec { argv, timeout_ms, stdin } => (argv, timeout_ms, stdin),
            // Input or a signal meant for a command that has just ended crossed its EXIT.
            Msg::Stdin(_) | Msg::StdinEof | Msg::Signal(_) => continue,
            msg => {
                let why = format!("expected EXEC, got {}", msg.name());
                return protocol_error(stream, ProtoError::Malformed(why), traffic).await;
            }
        };
        let asked = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()));
        let timeout = match (asked, config.max_timeout) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        };
        let command = Command { argv, stdin, timeout, child_nofile: config.child_nofile };
        if let Err(end) = run(stream, reader, command, limits, traffic).await {
            return end;
        }
    }
}

/// Ends a session that broke the protocol: says why in an `ERROR` (not for a failed socket),
/// then closes.
async fn protocol_error(stream: &mut Stream, e: ProtoError, traffic: &mut Traffic) -> End {
    match e {
        ProtoError::Io(e) => End::Io(e.to_string()),
        other => {
            let why = other.to_string();
            let _ = send_counted(stream, &Msg::error(code::PROTOCOL, why.clone()), traffic).await;
            End::Protocol(why)
        }
    }
}

/// What to run, and how.
struct Command {
    argv: Vec<Vec<u8>>,
    stdin: bool,
    timeout: Option<Duration>,
    child_nofile: Option<u64>,
}

fn spawn(command: &Command) -> io::Result<Child> {
    use std::os::unix::ffi::OsStrExt;
    let arg = |a: &Vec<u8>| std::ffi::OsStr::from_bytes(a).to_owned();
    let argv = &command.argv;
    let mut cmd = tokio::process::Command::new(arg(&argv[0]));
    cmd.args(argv[1..].iter().map(arg))
        .stdin(if command.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    child::confine(&mut cmd, command.child_nofile);
    cmd.spawn()
}

fn spawn_error(argv0: &[u8], e: &io::Error) -> Msg {
    let name = String::from_utf8_lossy(argv0);
    let not_executable = [libc::ENOEXEC, libc::EISDIR, libc::ETXTBSY, libc::EACCES, libc::EPERM];
    match e.raw_os_error() {
        Some(libc::ENOENT) => Msg::error(code::NOT_FOUND, format!("{name}: command not found")),
        Some(errno) if not_executable.contains(&errno) => {
            Msg::error(code::NOT_EXECUTABLE, format!("{name}: cannot execute: {}", io::Error::from_raw_os_error(errno)))
        }
        _ => Msg::error(code::FAILED, format!("{name}: cannot run: {e}")),
    }
}

/// Runs one command to its end. `Ok` means the session may take another request.
async fn run(
    stream: &mut Stream,
    reader: &mut MsgReader,
    command: Command,
    limits: &SessionLimits<'_>,
    traffic: &mut Traffic,
) -> Result<(), End> {
    let mut running = match spawn(&command) {
        Ok(c) => Running::new(c),
        Err(e) => {
            let msg = spawn_error(&command.argv[0], &e);
            return send_counted(stream, &msg, traffic).await.map_err(|e| End::Io(e.to_string()));
        }
    };
    let pid = running.id();
    send_counted(stream, &Msg::Started { pid }, traffic).await.map_err(|e| End::Io(e.to_string()))?;

    // Once the command has exited and its group is killed, its pipes close; a process that left
    // the group (setsid) and keeps them open is not waited for beyond DRAIN_AFTER_EXIT. Only the
    // pipe readers stop then: what they already read is all written.
    let stop_reading = CancellationToken::new();
    let (out_tx, mut out_rx) = mpsc::channel::<Msg>(4);
    let child = running.child();
    let stdout = pump(child.stdout.take(), Msg::Stdout, out_tx.clone(), &stop_reading);
    let stderr = pump(child.stderr.take(), Msg::Stderr, out_tx, &stop_reading);
    let mut child_stdin = child.stdin.take();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*stream);
    let (mut rd, mut wr) = tokio::io::split(&mut *stream);
    let sent = AtomicU64::new(0);

    // Output: every chunk of both pipes, in order per pipe, until both reach their end.
    let output = async {
        let writer = async {
            while let Some(msg) = out_rx.recv().await {
                let mut b = bytes::BytesMut::new();
                msg.encode(&mut b);
                // A client that takes nothing for the idle timeout is idle, as on every service.
                // Flushed: on TLS the end of a message may otherwise wait in a buffer.
                let write = async {
                    wr.write_all(&b).await?;
                    wr.flush().await
                };
                let written = match limits.idle_timeout {
                    Some(t) => tokio::time::timeout(t, write)
                        .await
                        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))),
                    None => write.await,
                };
                if let Err(e) = written {
                    // Nobody reads any more: the pumps stop, whether they wait on a full channel
                    // or on a pipe the command keeps open.
                    out_rx.close();
                    stop_reading.cancel();
                    return Err(e);
                }
                sent.fetch_add(b.len() as u64, Relaxed);
            }
            io::Result::Ok(())
        };
        let (_, _, written) = tokio::join!(stdout, stderr, writer);
        written
    };
    // Input: stdin for the command, signals, and the client going away. A STDIN that the command
    // does not read holds up what follows it (a SIGNAL included) until it does, or until the
    // client leaves.
    let input = async {
        loop {
            let msg = match reader.next(&mut rd).await {
                Ok(Some(m)) => m,
                Ok(None) => return End::PeerClosed,
                Err(ProtoError::Io(e)) => return End::Io(e.to_string()),
                Err(e) => return End::Protocol(e.to_string()),
            };
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
                        running.signal(sig);
                    }
                }
                Msg::Signal(_) => {}
                other => return End::Protocol(format!("{} while a command runs", other.name())),
            }
        }
    };
    let deadline = async {
        match command.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let drain_limit = tokio::time::sleep(crate::MAX_DURATION);
    let mut timed_out = false;
    let mut drained = false;
    let mut exited = false;
    // In a block, so that the futures (and their borrows of the socket) end with it.
    let outcome = {
        tokio::pin!(output, input, deadline, drain_limit);
        loop {
            if drained && exited {
                break Ok(());
            }
            tokio::select! {
                written = &mut output, if !drained => match written {
                    Ok(()) => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => break Err(End::IdleTimeout),
                    Err(e) => break Err(End::Io(e.to_string())),
                },
                () = running.exited(), if !exited => {
                    // Whatever the command left running in its group goes with it, so that
                    // background children holding the pipes cannot keep the session waiting.
                    running.signal(Signal::KILL);
                    exited = true;
                    drain_limit.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = &mut drain_limit, if exited && !stop_reading.is_cancelled() => stop_reading.cancel(),
                // The client left or broke the protocol: nobody will read the output.
                end = &mut input => break Err(end),
                _ = &mut deadline, if !timed_out && !exited => {
                    timed_out = true;
                    running.signal(Signal::KILL);
                }
                _ = limits.cut.cancelled() => break Err(End::Cut),
            }
        }
    };
    traffic.bytes_out += sent.load(Relaxed);
    // The group is killed before the command is reaped, never after (see `Running`).
    let reaped = running.finish().await;
    if let Err(end) = outcome {
        if let End::Protocol(why) = &end {
            let _ = send_counted(stream, &Msg::error(code::PROTOCOL, why.clone()), traffic).await;
        }
        return Err(end);
    }
    let status = match reaped {
        None => return Err(End::Io("cannot learn the command's exit status".into())),
        Some(_) if timed_out => ExitStatus::TimedOut,
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            (None, None) => ExitStatus::Code(255),
        },
    };
    send_counted(stream, &Msg::Exit(status), traffic).await.map_err(|e| End::Io(e.to_string()))
}

/// Writes a message and counts its bytes.
async fn send_counted(stream: &mut Stream, msg: &Msg, traffic: &mut Traffic) -> io::Result<()> {
    traffic.bytes_out += write_msg(stream, msg).await? as u64;
    Ok(())
}

/// Reads a pipe to its end (or until `stop`), a chunk per message, into the bounded output
/// channel.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    wrap: fn(Bytes) -> Msg,
    tx: mpsc::Sender<Msg>,
    stop: &CancellationToken,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        let n = tokio::select! {
            n = pipe.read(&mut buf) => n,
            _ = stop.cancelled() => return,
        };
        match n {
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
    /// The server could not start the command; the code says why ([`code`]). The message is
    /// as the server sent it; it is shown with control characters escaped.
    #[error("{}", crate::render::printable(message))]
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
    #[error("cannot write the output: {}", crate::render::io_error(.0))]
    Output(io::Error),
    /// Reading the command's input here failed. The command did not get an end of input: it
    /// would have taken what it had for all of it. The connection is left as it is; drop it, and
    /// the server stops the command.
    #[error("cannot read the input: {}", crate::render::io_error(.0))]
    Input(io::Error),
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
    reader: MsgReader,
    /// Bytes of a message not yet written when the last command ended: they go out first next
    /// time, so that the stream never carries half a message.
    unsent: bytes::BytesMut,
}

impl ExecClient {
    /// Authenticates on a connected stream.
    pub async fn handshake(mut stream: Stream, token: Option<&Token>) -> Result<ExecClient, HandshakeError> {
        let server_uid = stream.peer_uid()?;
        auth::client_handshake(&mut stream, ServiceKind::Exec, token, server_uid).await?;
        Ok(ExecClient { stream, reader: MsgReader::default(), unsent: bytes::BytesMut::new() })
    }

    /// Runs a command: `input` feeds its stdin (when the request asks for it), its output goes to
    /// `out` and `err` as it arrives, and each signal number from `signals` is delivered to it.
    /// Returns how it ended, or [`ExecError::Input`] at once if `input` fails to read (the
    /// command is not told its input ended).
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
        Msg::Exec { argv: req.argv.clone(), timeout_ms, stdin: req.stdin }.encode(&mut self.unsent);
        flush_unsent(&mut self.stream, &mut self.unsent).await.map_err(ProtoError::Io)?;
        let (mut rd, mut wr) = tokio::io::split(&mut self.stream);
        let (reader, unsent) = (&mut self.reader, &mut self.unsent);
        let receive = async {
            loop {
                let msg = reader.next(&mut rd).await?.ok_or(ExecError::Lost)?;
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
                    n = input.read(&mut chunk), if input_open => match n {
                        Ok(0) => { input_open = false; Msg::StdinEof.encode(unsent) }
                        Ok(n) => Msg::Stdin(Bytes::copy_from_slice(&chunk[..n])).encode(unsent),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return ExecError::Input(e),
                    },
                    sig = signals.recv(), if signals_open => match sig {
                        Some(sig) => Msg::Signal(sig).encode(unsent),
                        None => signals_open = false,
                    },
                }
                if flush_unsent(&mut wr, unsent).await.is_err() {
                    break;
                }
            }
            // Nothing more to send; keep the receive side going.
            std::future::pending::<ExecError>().await
        };
        tokio::select! {
            r = receive => r,
            e = send => Err(e),
        }
    }
}

/// Writes out `unsent`, removing what was written. Cancel-safe: abandoned halfway, the rest is
/// still in `unsent`.
async fn flush_unsent<W: AsyncWrite + Unpin>(w: &mut W, unsent: &mut bytes::BytesMut) -> io::Result<()> {
    use bytes::Buf;
    while !unsent.is_empty() {
        let n = w.write(unsent).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        unsent.advance(n);
    }
    w.flush().await
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> Result<(), ExecError> {
    w.write_all(data).await.map_err(ExecError::Output)?;
    w.flush().await.map_err(ExecError::Output)
}
