//! File transfer: the `files` service and its client (PROTOCOL.md, section 7).
//!
//! After the handshake ([`crate::auth`]), which is async, a connection leaves the runtime and
//! runs in a blocking thread of its own: a transfer is a plain loop of `read` (or `sendfile`),
//! hash and `write` on a blocking socket, the fastest way to move a file through a socket, split
//! over two threads while a file moves (the number of sessions is bounded by `--max-conns`).
//! Memory is a few buffers per transfer, whatever the file's size. A peer that stalls in the
//! middle of a request for [`STALL_LIMIT`] (or the idle timeout) is dropped.
//!
//! Every file is hashed with BLAKE3 end to end: the sender hashes what it reads, the receiver
//! what it writes, and the receiver publishes only when the two agree. Publishing is atomic on
//! both sides: the data goes to a hidden partial file in the target's directory, which is
//! fsynced and renamed over the target ([`crate::fsroot::Upload`]; on the client,
//! [`crate::fsroot::LocalUpload`], which replaces only a writable regular file). An interrupted transfer leaves
//! its partial file, which `--resume` continues after checking that its prefix hashes the same
//! on both sides. All paths on the server are confined to its root ([`crate::fsroot::Root`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::auth::{self, HandshakeError, Policy, Token};
use crate::fsroot::{Entry, FsError, LocalError, LocalUpload, Problem, Root};
use crate::net::{BlockingStream, Stream};
use crate::proto::{Hash, Msg, ProtoError, ServiceKind, code, read_msg_sync, write_msg_sync};
use crate::server::{End, SessionLimits, Traffic};

/// How a `files` server behaves.
#[derive(Debug)]
pub struct FilesConfig {
    /// Who may use it.
    pub policy: Policy,
    /// The directory served; nothing outside it is ever opened or created.
    pub root: Root,
    /// Refuse every `PUT`.
    pub read_only: bool,
}

/// ERROR codes from this value on carry a file-system error: `FS_CODES + FsError::code()`.
pub const FS_CODES: u8 = 16;

/// How long a session waits for a peer that stops in the middle of a request (sending or
/// reading), when no idle timeout is set.
pub const STALL_LIMIT: Duration = Duration::from_secs(120);

/// The size of the buffer each transfer moves data through.
const CHUNK: usize = 1 << 20;

/// How many bytes a sender moves between two looks for an early `ERROR` from the receiver.
const ERROR_CHECK_EVERY: u64 = 8 << 20;

/// How many buffers a receiving transfer rotates between its two threads.
const PIPELINE_BUFFERS: usize = 4;

/// How many directory entries one `ENTRIES` message carries at most.
const ENTRIES_PER_MESSAGE: usize = 1000;

fn fs_error_msg(e: &FsError) -> Msg {
    Msg::error(FS_CODES + e.code(), e.to_string())
}

/// What went wrong on either side of a transfer.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The connection failed or the peer broke the protocol.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A local file could not be read (put) or written (get).
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The server refused the request with a file-system error (its message names the path).
    #[error("server: {0}")]
    Server(FsError),
    /// The file asked for does not exist on the server.
    #[error("the server has no file {0:?}")]
    NoRemoteFile(String),
    /// The server refused the request for another reason (its words, shown with control
    /// characters escaped).
    #[error("server: {}", crate::render::printable(.0))]
    Refused(String),
    /// What arrived does not hash to what was sent; nothing was published.
    #[error("{0}: the content arrived damaged (BLAKE3 mismatch); nothing was published")]
    Corrupt(String),
    /// What was streamed out ([`FilesClient::get_to`]) does not hash to what the server sent:
    /// the bytes are already written and must not be trusted.
    #[error("{0}: the content arrived damaged (BLAKE3 mismatch); what was written out is not the file")]
    CorruptOutput(String),
    /// The connection ended in the middle of the file's bytes.
    #[error("the connection ended after {done} of {size} bytes; try again with --resume to continue")]
    Interrupted {
        /// Bytes of the file that had arrived.
        done: u64,
        /// The file's size.
        size: u64,
    },
    /// The connection failed while the file was sent (the server keeps what reached it).
    #[error("the connection ended after {sent} of {size} bytes were sent; try again with --resume to continue")]
    SendInterrupted {
        /// Bytes of the file handed to the connection (not all of them may have arrived).
        sent: u64,
        /// The file's size.
        size: u64,
    },
    /// The connection ended after the whole file was sent, before the server said it stored it.
    #[error("the connection ended before the server confirmed the upload; try again with --resume to finish")]
    Unconfirmed,
    /// The connection ended in the middle of a file that was streamed out
    /// ([`FilesClient::get_to`]): what was written is incomplete.
    #[error("the connection ended after {done} of {size} bytes; what was written out is incomplete")]
    InterruptedOutput {
        /// Bytes of the file that had arrived.
        done: u64,
        /// The file's size.
        size: u64,
    },
    /// Writing a streamed-out file failed ([`FilesClient::get_to`]); a closed pipe is
    /// `BrokenPipe`.
    #[error("cannot write the output: {}", crate::render::io_error(.0))]
    Output(io::Error),
    /// The local file changed while it was being sent.
    #[error("{0} changed size while it was being sent")]
    Changed(String),
    /// A message out of turn.
    #[error("unexpected {0} from the server")]
    Unexpected(&'static str),
}

fn refused(code: u8, message: String) -> FilesError {
    if code >= FS_CODES {
        FilesError::Server(FsError::from_code(code - FS_CODES, message))
    } else {
        FilesError::Refused(message)
    }
}

// ---------------------------------------------------------------------------------------------
// Moving bytes

/// The BLAKE3 state after the first `len` bytes of `file`.
fn hash_prefix(file: &File, len: u64) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    match hash_range(file, (0, len), &mut hasher, &AtomicBool::new(false)) {
        Ok(()) => Ok(hasher),
        Err(SendStop::Read(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected")),
    }
}

/// What stopped [`send_range`].
enum SendStop {
    /// The file ended early (it shrank).
    Shrank,
    /// Reading the file failed.
    Read(io::Error),
    /// Writing to the socket failed.
    Socket(io::Error),
    /// The receiver said something while we sent (an `ERROR`, usually).
    Answer(Msg),
}

/// The most of a kernel file that `put` reads before sending it.
pub const KERNEL_FILE_MAX: u64 = 64 << 20;

/// Why a kernel file could not be copied.
enum KernelFile {
    TooBig,
    Io(io::Error),
}

/// A file whose size the kernel makes up rather than stores: procfs gives 0 for `/proc/version`,
/// sysfs 4096 for a six-byte attribute. PUT announces a size before the data, so such a file is
/// read whole first (at most [`KERNEL_FILE_MAX`], into a memory file) and the copy is sent.
/// `None` for an ordinary file, sent as it is; an empty one is read too, to learn it is empty.
fn kernel_file_copy(file: &File, size: u64) -> Result<Option<(File, u64)>, KernelFile> {
    let made_up = size == 0
        || rustix::fs::fstatfs(file).is_ok_and(|fs| {
            [
                libc::PROC_SUPER_MAGIC,
                libc::SYSFS_MAGIC,
                libc::DEBUGFS_MAGIC,
                libc::TRACEFS_MAGIC,
                libc::SECURITYFS_MAGIC,
                libc::CGROUP_SUPER_MAGIC,
                libc::CGROUP2_SUPER_MAGIC,
            ]
            .contains(&(fs.f_type as libc::c_long))
        });
    if !made_up {
        return Ok(None);
    }
    let copy: File = rustix::fs::memfd_create(c"sockit-put", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| KernelFile::Io(e.into()))?
        .into();
    let copied = io::copy(&mut file.take(KERNEL_FILE_MAX + 1), &mut &copy).map_err(KernelFile::Io)?;
    if copied > KERNEL_FILE_MAX {
        return Err(KernelFile::TooBig);
    }
    Ok(Some((copy, copied)))
}

/// Sends bytes `start..size` of `file`, hashing them into `hasher`. With `watch`, looks every few
/// MiB whether the receiver has sent something (an `ERROR`), and stops if so.
///
/// The bytes go to the socket with `sendfile`, which hands the kernel the file's pages without
/// copying them through user space, while a second thread reads and hashes the same range: the
/// two halves of the work run on two cores. (If the file changes meanwhile, what was sent and
/// what was hashed may differ; the receiver then finds a mismatch and publishes nothing.) A TLS
/// connection must encrypt the bytes, so they are read and written through it instead.
fn send_range(
    sock: &mut BlockingStream,
    file: &File,
    (start, size): (u64, u64),
    hasher: &mut blake3::Hasher,
    watch: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SendStop> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| hash_range(file, (start, size), hasher, &stop));
        let sent = sendfile_range(sock, file, (start, size), watch, progress);
        if sent.is_err() {
            stop.store(true, SeqCst);
        }
        let hashed =
            hashing.join().unwrap_or_else(|_| Err(SendStop::Read(io::Error::other("the hashing thread failed"))));
        sent.and(hashed)
    })
}

fn hash_range(
    file: &File,
    (start, size): (u64, u64),
    hasher: &mut blake3::Hasher,
    stop: &AtomicBool,
) -> Result<(), SendStop> {
    let mut buf = vec![0u8; CHUNK.min((size - start) as usize).max(1)];
    let mut pos = start;
    while pos < size && !stop.load(Relaxed) {
        let want = (size - pos).min(buf.len() as u64) as usize;
        match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(SendStop::Shrank),
            Ok(n) => {
                hasher.update(&buf[..n]);
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SendStop::Read(e)),
        }
    }
    Ok(())
}

fn sendfile_range(
    sock: &mut BlockingStream,
    file: &File,
    (start, size): (u64, u64),
    watch: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SendStop> {
    let mut pos = start;
    let mut next_check = start + ERROR_CHECK_EVERY;
    // Only a TLS connection copies through a buffer.
    let mut buf = match sock {
        BlockingStream::Tls(_) => vec![0u8; CHUNK.min((size - start) as usize).max(1)],
        BlockingStream::Plain(_) => Vec::new(),
    };
    while pos < size {
        let want = (size - pos).min(ERROR_CHECK_EVERY) as usize;
        match sock {
            BlockingStream::Plain(s) => match rustix::fs::sendfile(&*s, file, Some(&mut pos), want) {
                Ok(0) => return Err(SendStop::Shrank),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                // A socket error (the peer left) or a file error: sendfile does not say which side.
                Err(e) => return Err(SendStop::Socket(e.into())),
            },
            BlockingStream::Tls(t) => {
                match crate::tls::copy_file_range_to(&mut **t, file, &mut buf, (pos, pos + want as u64)) {
                    Ok(0) => return Err(SendStop::Shrank),
                    Ok(n) => pos += n as u64,
                    Err(e) => return Err(SendStop::Socket(e)),
                }
            }
        }
        progress(pos);
        if watch && pos >= next_check {
            next_check = pos + ERROR_CHECK_EVERY;
            if sock.readable_now() {
                let mut b = Vec::new();
                if let Ok(Some(msg)) = read_msg_sync(sock, &mut b) {
                    return Err(SendStop::Answer(msg));
                }
            }
        }
    }
    Ok(())
}

/// What [`receive_range`] did.
enum Received {
    /// All bytes arrived and were written.
    Whole,
    /// All bytes arrived, but writing failed at some point; the rest was read and dropped.
    WriteFailed(io::Error),
}

/// Reads bytes `start..size` of a file from the socket into `out` (a file at its current position),
/// hashing them. When writing fails, `on_write_error` says whether to go on reading (and drop)
/// the rest, which keeps the connection usable, or to stop at once. `Err` means the connection
/// ended or failed first, with the position reached.
///
/// Two threads share the work: this one reads the socket into a few rotating buffers, a second
/// hashes and writes each full buffer, so that receiving overlaps hashing and writing.
fn receive_range(
    sock: &mut BlockingStream,
    out: &mut (dyn Write + Send),
    (start, size): (u64, u64),
    hasher: &mut blake3::Hasher,
    progress: &mut dyn FnMut(u64),
    on_write_error: &mut dyn FnMut(&mut BlockingStream, &io::Error) -> bool,
) -> Result<Received, (u64, io::Error)> {
    use std::sync::mpsc::sync_channel;
    let chunk = CHUNK.min((size - start) as usize).max(1);
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(PIPELINE_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(PIPELINE_BUFFERS);
    for _ in 0..PIPELINE_BUFFERS {
        empty_tx.send(vec![0u8; chunk]).expect("the channel has room");
    }
    // Set by the writer when a write fails: the reader stops, and the caller decides.
    let failed = &AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                if let Err(e) = out.write_all(&buf[..n]) {
                    failed.store(true, SeqCst);
                    return Some(e);
                }
                if empty_tx.send(buf).is_err() {
                    break;
                }
            }
            None
        });
        let mut pos = start;
        let read = loop {
            if pos >= size || failed.load(SeqCst) {
                break Ok(pos);
            }
            // The writer returns every buffer, unless it has stopped.
            let Ok(mut buf) = empty_rx.recv() else { break Ok(pos) };
            let want = (size - pos).min(buf.len() as u64) as usize;
            let n = loop {
                match sock.read(&mut buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match n {
                Ok(0) => break Err((pos, io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    pos += n as u64;
                    progress(pos);
                    if full_tx.send((buf, n)).is_err() {
                        break Ok(pos);
                    }
                }
                Err(e) => break Err((pos, e)),
            }
        };
        drop(full_tx);
        let write_error = writer.join().unwrap_or_else(|_| Some(io::Error::other("the writing thread failed")));
        let Some(e) = write_error else {
            return read.map(|_| Received::Whole);
        };
        if on_write_error(sock, &e) {
            // Keep the connection in step: read and drop what the sender still sends.
            let mut pos = read?;
            let mut buf = vec![0u8; chunk];
            while pos < size {
                let want = (size - pos).min(buf.len() as u64) as usize;
                match sock.read(&mut buf[..want]) {
                    Ok(0) => return Err((pos, io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => pos += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err((pos, e)),
                }
            }
        }
        Ok(Received::WriteFailed(e))
    })
}

// ---------------------------------------------------------------------------------------------
// The server

/// Serves one `files` connection until the client leaves.
pub async fn session(
    stream: Stream,
    config: Arc<FilesConfig>,
    limits: SessionLimits<'_>,
    traffic: &mut Traffic,
) -> End {
    let mut stream = stream;
    if let Err(end) = limits.admit(&mut stream, ServiceKind::Files, &config.policy).await {
        return end;
    }
    // Whatever TLS still holds goes out before the connection leaves the runtime.
    if let Err(e) = stream.flush().await {
        return End::Io(e.to_string());
    }
    let mut sock = match stream.into_blocking() {
        Ok(s) => s,
        Err(e) => return End::Io(e.to_string()),
    };
    let control = match sock.control() {
        Ok(c) => c,
        Err(e) => return End::Io(e.to_string()),
    };
    // A silent client, between requests or in the middle of a file, is an idle one; without an
    // idle timeout, only one that stalls in the middle of a request is dropped, after STALL_LIMIT.
    let stall = limits.idle_timeout.unwrap_or(STALL_LIMIT).max(Duration::from_millis(1));
    let _ = sock.socket().set_write_timeout(Some(stall));
    let idle = limits.idle_timeout.map(|t| t.max(Duration::from_millis(1)));
    let state = Arc::new(State { busy: AtomicBool::new(false), stopping: AtomicBool::new(false) });
    let thread_state = state.clone();
    let mut worker = tokio::task::spawn_blocking(move || {
        let mut traffic = Traffic::default();
        let end = serve_blocking(&mut sock, &config, &thread_state, (idle, stall), &mut traffic);
        // An orderly goodbye where the transport has one (TLS); bounded by the write timeout.
        if end != End::Cut {
            sock.close();
        }
        (end, traffic)
    });
    let mut shutdown_seen = false;
    let (end, moved) = loop {
        tokio::select! {
            r = &mut worker => break r.unwrap_or_else(|e| (End::Io(format!("the session failed: {e}")), Traffic::default())),
            _ = limits.shutdown.cancelled(), if !shutdown_seen => {
                shutdown_seen = true;
                state.stopping.store(true, SeqCst);
                // An idle session ends now; a busy one finishes its request first.
                if !state.busy.load(SeqCst) {
                    let _ = control.shutdown(std::net::Shutdown::Read);
                }
            }
            _ = limits.cut.cancelled() => {
                let _ = control.shutdown(std::net::Shutdown::Both);
                let r = (&mut worker).await;
                break r.map(|(_, t)| (End::Cut, t)).unwrap_or((End::Cut, Traffic::default()));
            }
        }
    };
    traffic.bytes_in += moved.bytes_in;
    traffic.bytes_out += moved.bytes_out;
    end
}

struct State {
    /// A request is being served.
    busy: AtomicBool,
    /// The server is shutting down: take no new request.
    stopping: AtomicBool,
}

fn serve_blocking(
    sock: &mut BlockingStream,
    config: &FilesConfig,
    state: &State,
    (idle, stall): (Option<Duration>, Duration),
    traffic: &mut Traffic,
) -> End {
    let mut buf = Vec::new();
    loop {
        state.busy.store(false, SeqCst);
        if state.stopping.load(SeqCst) {
            return End::Shutdown;
        }
        // Between requests the idle timeout applies (none: wait); within one, the stall limit.
        let _ = sock.socket().set_read_timeout(idle);
        let msg = read_msg_sync(sock, &mut buf);
        let _ = sock.socket().set_read_timeout(Some(stall));
        let msg = match msg {
            Ok(Some(m)) => m,
            // Shutting down cuts the reading side; TLS reads that as an unannounced end.
            Ok(None) | Err(ProtoError::Io(_)) if state.stopping.load(SeqCst) => return End::Shutdown,
            Ok(None) => return End::PeerClosed,
            Err(e) => return proto_failure(sock, e),
        };
        state.busy.store(true, SeqCst);
        traffic.bytes_in += buf.len() as u64 + 4;
        let outcome = match msg {
            Msg::List { path } => serve_list(sock, config, &path),
            Msg::Get { path, offset, prefix } => serve_get(sock, config, &path, offset, &prefix, traffic),
            Msg::Put { path, size, resume } => serve_put(sock, config, &path, size, resume, traffic),
            other => {
                let why = format!("expected LIST, GET or PUT, got {}", other.name());
                return proto_failure(sock, ProtoError::Malformed(why));
            }
        };
        if let Err(end) = outcome {
            return end;
        }
    }
}

fn io_end(e: io::Error) -> End {
    if e.kind() == io::ErrorKind::WouldBlock { End::IdleTimeout } else { End::Io(e.to_string()) }
}

fn send(sock: &mut BlockingStream, msg: &Msg) -> Result<(), End> {
    write_msg_sync(sock, msg).map_err(io_end)
}

fn serve_list(sock: &mut BlockingStream, config: &FilesConfig, path: &str) -> Result<(), End> {
    let entries = match config.root.list(path) {
        Ok(e) => e,
        Err(e) => return send(sock, &fs_error_msg(&e)),
    };
    for chunk in entries.chunks(ENTRIES_PER_MESSAGE) {
        send(sock, &Msg::Entries(chunk.to_vec()))?;
    }
    send(sock, &Msg::End)
}

fn serve_get(
    sock: &mut BlockingStream,
    config: &FilesConfig,
    path: &str,
    offset: u64,
    prefix: &Hash,
    traffic: &mut Traffic,
) -> Result<(), End> {
    let (file, size) = match config.root.open_read(path) {
        Ok(f) => f,
        Err(e) => return send(sock, &fs_error_msg(&e)),
    };
    // Resume only from a prefix that is the same on both sides.
    let mut start = 0;
    let mut hasher = blake3::Hasher::new();
    if offset > 0 && offset <= size {
        let h = hash_prefix(&file, offset).map_err(|e| End::Io(format!("reading {path}: {e}")))?;
        if h.finalize().as_bytes() == prefix {
            start = offset;
            hasher = h;
        }
    }
    send(sock, &Msg::File { size, start })?;
    match send_range(sock, &file, (start, size), &mut hasher, false, &mut |_| {}) {
        Ok(()) => {}
        // The client cannot be told in the middle of raw bytes: the connection ends, and the
        // client keeps what arrived for a resume.
        Err(SendStop::Shrank) => return Err(End::Io(format!("{path} shrank while it was being sent"))),
        Err(SendStop::Read(e)) => return Err(End::Io(format!("reading {path}: {e}"))),
        Err(SendStop::Socket(e)) => return Err(io_end(e)),
        Err(SendStop::Answer(_)) => unreachable!("not watching"),
    }
    traffic.bytes_out += size - start;
    send(sock, &Msg::Done { hash: *hasher.finalize().as_bytes() })
}

fn serve_put(
    sock: &mut BlockingStream,
    config: &FilesConfig,
    path: &str,
    size: u64,
    resume: bool,
    traffic: &mut Traffic,
) -> Result<(), End> {
    if config.read_only {
        let code = FS_CODES + FsError::PermissionDenied { path: String::new() }.code();
        return send(sock, &Msg::error(code, format!("{path:?}: permission denied: the server is read-only")));
    }
    let mut upload = match config.root.begin_put(path, resume) {
        Ok(u) => u,
        Err(e) => return send(sock, &fs_error_msg(&e)),
    };
    let mut have = upload.existing_len();
    if have > size {
        have = 0;
    }
    let mut hasher = match hash_prefix(upload.file(), have) {
        Ok(h) => h,
        Err(_) => {
            have = 0;
            blake3::Hasher::new()
        }
    };
    send(sock, &Msg::Ready { have, prefix: *hasher.finalize().as_bytes() })?;
    let mut buf = Vec::new();
    let start = match read_msg_sync(sock, &mut buf) {
        Ok(Some(Msg::From { start })) if start == have || start == 0 => Ok(start),
        Ok(Some(other)) => Err(proto_failure(
            sock,
            ProtoError::Malformed(format!("expected FROM 0 or FROM {have}, got {}", other.name())),
        )),
        Ok(None) => Err(End::PeerClosed),
        Err(e) => Err(proto_failure(sock, e)),
    };
    let start = match start {
        Ok(s) => s,
        Err(end) => {
            // No data came: a partial file this request created is of no use.
            if have == 0 {
                upload.discard();
            }
            return Err(end);
        }
    };
    if start == 0 && have > 0 {
        hasher = blake3::Hasher::new();
    }
    if let Err(e) = upload.restart_at(start) {
        let _ = send(sock, &fs_error_msg(&e));
        return Err(End::Io(e.to_string()));
    }
    // A failed write (a full disk) is told at once, so that the client can stop sending; the
    // rest of its bytes are read and dropped.
    let mut write_failed = false;
    let mut tell = |sock: &mut BlockingStream, e: &io::Error| {
        write_failed = true;
        let copy =
            e.raw_os_error().map_or_else(|| io::Error::new(e.kind(), e.to_string()), io::Error::from_raw_os_error);
        let _ = write_msg_sync(sock, &fs_error_msg(&FsError::from_io(path, copy)));
        true
    };
    let received = receive_range(sock, upload.file(), (start, size), &mut hasher, &mut |_| {}, &mut tell);
    traffic.bytes_in += match &received {
        Ok(_) => size - start,
        Err((pos, _)) => pos - start,
    };
    if write_failed {
        // Writing failed (a full disk, usually) and the client was told: the partial file goes,
        // to give the space back, and the client's DONE is read to stay in step.
        upload.discard();
        return match received {
            Err((_, e)) => Err(io_end(e)),
            Ok(_) => expect_done(sock, &mut buf).map(|_| ()),
        };
    }
    if let Err((pos, e)) = received {
        // The client left: the partial file stays for a resume (unless it holds nothing);
        // nothing is published.
        if pos == 0 {
            upload.discard();
        }
        return Err(io_end(e));
    }
    let theirs = expect_done(sock, &mut buf)?;
    if hasher.finalize().as_bytes() != &theirs {
        upload.discard();
        return send(sock, &Msg::error(code::CORRUPT, format!("{path}: BLAKE3 mismatch; nothing was published")));
    }
    match upload.publish() {
        Ok(()) => send(sock, &Msg::Stored),
        Err(e) => send(sock, &fs_error_msg(&e)),
    }
}

fn expect_done(sock: &mut BlockingStream, buf: &mut Vec<u8>) -> Result<Hash, End> {
    match read_msg_sync(sock, buf) {
        Ok(Some(Msg::Done { hash })) => Ok(hash),
        Ok(Some(other)) => {
            Err(proto_failure(sock, ProtoError::Malformed(format!("expected DONE, got {}", other.name()))))
        }
        Ok(None) => Err(End::PeerClosed),
        Err(e) => Err(proto_failure(sock, e)),
    }
}

/// Ends a session on a bad message (telling the client with an `ERROR`) or a failed socket.
fn proto_failure(sock: &mut BlockingStream, e: ProtoError) -> End {
    match e {
        ProtoError::Io(e) => io_end(e),
        other => {
            let _ = write_msg_sync(sock, &Msg::error(code::PROTOCOL, other.to_string()));
            End::Protocol(other.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// How far a transfer is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes of the file that are in place (a resumed transfer starts above zero).
    pub done: u64,
    /// The file's size.
    pub size: u64,
    /// Where this transfer began (0, or the resumed offset).
    pub start: u64,
}

/// A finished transfer.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The file's size.
    pub size: u64,
    /// Bytes that were already in place and not sent again.
    pub resumed: u64,
    /// How long the transfer took.
    pub elapsed: Duration,
}

/// An authenticated `files` connection. Its methods block: call them from a thread (or
/// `spawn_blocking`), not from an async task.
pub struct FilesClient {
    sock: BlockingStream,
    buf: Vec<u8>,
}

impl FilesClient {
    /// Authenticates on a connected stream, then leaves the async runtime.
    pub async fn handshake(mut stream: Stream, token: Option<&Token>) -> Result<FilesClient, FilesError> {
        let server_uid = stream.peer_uid().map_err(ProtoError::Io)?;
        auth::client_handshake(&mut stream, ServiceKind::Files, token, server_uid).await?;
        stream.flush().await.map_err(ProtoError::Io)?;
        let sock = stream.into_blocking().map_err(ProtoError::Io)?;
        Ok(FilesClient { sock, buf: Vec::new() })
    }

    fn send(&mut self, msg: &Msg) -> Result<(), FilesError> {
        write_msg_sync(&mut self.sock, msg).map_err(|e| FilesError::Proto(e.into()))
    }

    fn recv(&mut self) -> Result<Msg, FilesError> {
        match read_msg_sync(&mut self.sock, &mut self.buf)? {
            Some(Msg::Error { code, message }) => Err(refused(code, message)),
            Some(m) => Ok(m),
            None => Err(FilesError::Proto(ProtoError::Truncated)),
        }
    }

    /// Lists a remote directory ("" is the root).
    pub fn list(&mut self, path: &str) -> Result<Vec<Entry>, FilesError> {
        self.send(&Msg::List { path: path.to_string() })?;
        let mut all = Vec::new();
        loop {
            match self.recv()? {
                Msg::Entries(e) => all.extend(e),
                Msg::End => return Ok(all),
                other => return Err(FilesError::Unexpected(other.name())),
            }
        }
    }

    /// Stores the local file `local` as `remote`. With `resume`, continues an earlier partial
    /// upload when its beginning matches.
    pub fn put(
        &mut self,
        local: &Path,
        remote: &str,
        resume: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report, FilesError> {
        let began = Instant::now();
        let shown = local.display().to_string();
        let unreadable = |e| LocalError::read(&shown, Problem::Fs(FsError::from_io(&shown, e)));
        let file = crate::fsroot::open_read_nonblocking(local).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if meta.is_dir() {
            return Err(LocalError::read(&shown, Problem::Fs(FsError::IsADirectory { path: shown.clone() })).into());
        }
        if !meta.is_file() {
            return Err(LocalError::read(&shown, Problem::NotAFile(crate::fsroot::kind_name_of(&meta))).into());
        }
        // A kernel file is read whole now, while the descriptor does not wait: one that would
        // block (/proc/kmsg) is then an error rather than a hang.
        let (file, size) = match kernel_file_copy(&file, meta.len()) {
            Ok(Some(copy)) => copy,
            Ok(None) => {
                crate::fsroot::clear_nonblock(&file).map_err(|e| unreadable(e.into()))?;
                (file, meta.len())
            }
            Err(KernelFile::TooBig) => return Err(LocalError::read(&shown, Problem::KernelFileTooBig).into()),
            Err(KernelFile::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(LocalError::read(&shown, Problem::KernelFileWaits).into());
            }
            Err(KernelFile::Io(e)) => return Err(unreadable(e).into()),
        };
        self.send(&Msg::Put { path: remote.to_string(), size, resume })?;
        let (have, theirs) = match self.recv()? {
            Msg::Ready { have, prefix } => (have, prefix),
            other => return Err(FilesError::Unexpected(other.name())),
        };
        let mut start = 0;
        let mut hasher = blake3::Hasher::new();
        if have > 0 && have <= size {
            let h = hash_prefix(&file, have).map_err(unreadable)?;
            if h.finalize().as_bytes() == &theirs {
                start = have;
                hasher = h;
            }
        }
        self.send(&Msg::From { start })?;
        progress(Progress { done: start, size, start });
        let sent = std::cell::Cell::new(start);
        let mut report = |done| {
            sent.set(done);
            progress(Progress { done, size, start })
        };
        match send_range(&mut self.sock, &file, (start, size), &mut hasher, true, &mut report) {
            Ok(()) => {}
            Err(SendStop::Shrank) => return Err(FilesError::Changed(shown)),
            Err(SendStop::Read(e)) => return Err(unreadable(e).into()),
            Err(SendStop::Answer(Msg::Error { code, message })) => return Err(refused(code, message)),
            Err(SendStop::Answer(other)) => return Err(FilesError::Unexpected(other.name())),
            Err(SendStop::Socket(e)) => {
                // The server may have said why before it closed.
                if let Ok(Some(Msg::Error { code, message })) = read_msg_sync(&mut self.sock, &mut self.buf) {
                    return Err(refused(code, message));
                }
                // The server keeps what arrived in its partial file.
                tracing::debug!("put: the connection failed: {e}");
                return Err(FilesError::SendInterrupted { sent: sent.get(), size });
            }
        }
        let confirmed = self.send(&Msg::Done { hash: *hasher.finalize().as_bytes() }).and_then(|()| self.recv());
        match confirmed {
            Ok(Msg::Stored) => Ok(Report { size, resumed: start, elapsed: began.elapsed() }),
            Ok(other) => Err(FilesError::Unexpected(other.name())),
            // Every byte went out, but the server may not have had them all.
            Err(FilesError::Proto(e @ (ProtoError::Io(_) | ProtoError::Truncated))) => {
                tracing::debug!("put: the connection failed: {e}");
                Err(FilesError::Unconfirmed)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the `DONE` that ends a file's bytes and says whether its hash is what `hasher`
    /// made of the bytes received.
    fn hash_agrees(&mut self, hasher: &blake3::Hasher) -> Result<bool, FilesError> {
        match self.recv()? {
            Msg::Done { hash } => Ok(hasher.finalize().as_bytes() == &hash),
            other => Err(FilesError::Unexpected(other.name())),
        }
    }

    /// Sends `GET` and reads the answer: the file's size and where its bytes start. A file the
    /// server does not have is [`FilesError::NoRemoteFile`].
    fn request_file(&mut self, remote: &str, offset: u64, prefix: Hash) -> Result<(u64, u64), FilesError> {
        self.send(&Msg::Get { path: remote.to_string(), offset, prefix })?;
        let not_found = FsError::NotFound { path: String::new() }.code();
        match self.recv() {
            Ok(Msg::File { size, start }) if start <= size && (start == 0 || start == offset) => Ok((size, start)),
            Ok(Msg::File { .. }) => {
                Err(FilesError::Proto(ProtoError::Malformed("a FILE that starts at a byte we do not have".into())))
            }
            Ok(other) => Err(FilesError::Unexpected(other.name())),
            Err(FilesError::Server(e)) if e.code() == not_found => Err(FilesError::NoRemoteFile(remote.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Fetches `remote` into the local file `local`, published atomically once verified. With
    /// `resume`, continues an earlier partial download when its beginning matches. An existing
    /// `local` must be a writable regular file, or a symbolic link to one (see [`LocalUpload`]).
    pub fn get(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report, FilesError> {
        let began = Instant::now();
        let shown = local.display().to_string();
        let unwritable = |e| LocalError::write(&shown, Problem::Fs(FsError::from_io(&shown, e)));
        let mut upload = LocalUpload::begin(local, resume)?;
        let offset = upload.existing_len();
        let mut hasher = hash_prefix(upload.file(), offset).map_err(unwritable)?;
        let (size, start) = match self.request_file(remote, offset, *hasher.finalize().as_bytes()) {
            Ok(x) => x,
            Err(e) => {
                // Refused before any data: a partial file this request created is of no use.
                if offset == 0 {
                    upload.discard();
                }
                return Err(e);
            }
        };
        if start != offset {
            upload.restart_at(start)?;
            hasher = blake3::Hasher::new();
        }
        progress(Progress { done: start, size, start });
        let mut report = |done| progress(Progress { done, size, start });
        match receive_range(&mut self.sock, upload.file(), (start, size), &mut hasher, &mut report, &mut |_, _| false) {
            Ok(Received::Whole) => {}
            Ok(Received::WriteFailed(e)) => {
                upload.discard();
                return Err(unwritable(e).into());
            }
            // The partial file stays for --resume.
            Err((done, _)) => return Err(FilesError::Interrupted { done, size }),
        }
        if !self.hash_agrees(&hasher)? {
            upload.discard();
            return Err(FilesError::Corrupt(remote.to_string()));
        }
        upload.publish()?;
        Ok(Report { size, resumed: start, elapsed: began.elapsed() })
    }

    /// Fetches `remote` and writes its bytes to `out` as they arrive (standard output, say).
    ///
    /// Unlike [`FilesClient::get`], nothing can be held back until the hash is checked: the
    /// whole file has been written out by the time it is known. A mismatch is then
    /// [`FilesError::CorruptOutput`], a connection that ends early
    /// [`FilesError::InterruptedOutput`]; either way the caller must tell its user not to trust
    /// what was written. A failed write is [`FilesError::Output`], and ends the connection's use.
    pub fn get_to(
        &mut self,
        remote: &str,
        out: &mut (dyn Write + Send),
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report, FilesError> {
        let began = Instant::now();
        let (size, _) = self.request_file(remote, 0, [0; 32])?;
        progress(Progress { done: 0, size, start: 0 });
        let mut report = |done| progress(Progress { done, size, start: 0 });
        let mut hasher = blake3::Hasher::new();
        match receive_range(&mut self.sock, out, (0, size), &mut hasher, &mut report, &mut |_, _| false) {
            Ok(Received::Whole) => {}
            Ok(Received::WriteFailed(e)) => return Err(FilesError::Output(e)),
            Err((done, _)) => return Err(FilesError::InterruptedOutput { done, size }),
        }
        out.flush().map_err(FilesError::Output)?;
        if !self.hash_agrees(&hasher)? {
            return Err(FilesError::CorruptOutput(remote.to_string()));
        }
        Ok(Report { size, resumed: 0, elapsed: began.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe's read end as a `File`, with `data` written and the write end closed (or left open,
    /// with nothing in it, when `data` is `None`).
    fn pipe_with(data: Option<Vec<u8>>) -> (File, Option<std::thread::JoinHandle<()>>) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let r = File::from(r);
        match data {
            Some(data) => {
                // A reader that stops early closes the pipe under the writer: not a failure here.
                let writer = std::thread::spawn(move || {
                    let _ = File::from(w).write_all(&data);
                });
                (r, Some(writer))
            }
            None => {
                rustix::io::ioctl_fionbio(&r, true).unwrap();
                std::mem::forget(w);
                (r, None)
            }
        }
    }

    #[test]
    fn a_kernel_file_is_copied_whole_with_the_size_read() {
        let (file, writer) = pipe_with(Some(b"Linux\n".to_vec()));
        let (copy, size) = kernel_file_copy(&file, 0).ok().unwrap().unwrap();
        writer.unwrap().join().unwrap();
        assert_eq!(size, 6);
        // Read where sending reads, by offset.
        let mut all = vec![0u8; 6];
        copy.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, b"Linux\n");
    }

    #[test]
    fn a_kernel_file_that_would_wait_or_never_ends_is_refused() {
        let (file, _) = pipe_with(None);
        assert!(matches!(kernel_file_copy(&file, 0), Err(KernelFile::Io(e)) if e.kind() == io::ErrorKind::WouldBlock));
        let (file, writer) = pipe_with(Some(vec![7u8; KERNEL_FILE_MAX as usize + 1]));
        assert!(matches!(kernel_file_copy(&file, 0), Err(KernelFile::TooBig)));
        drop(file);
        writer.unwrap().join().unwrap();
    }

    #[test]
    fn an_ordinary_file_is_sent_as_it_is() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"on disk").unwrap();
        assert!(matches!(kernel_file_copy(&file, 7), Ok(None)));
    }
}
