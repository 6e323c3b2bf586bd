//! `sockit serve`: builds the service and configuration from the flags, binds, runs the
//! library's server, and handles signals, logging and the final summary. `--inetd` serves the
//! connection on stdin (`fd://0`) and keeps quiet.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use anyhow::Context;
use sockit::acl::AccessList;
use sockit::auth::Policy;
use sockit::endpoint::{Endpoint, FdRef, SocketStyle, UnixAddr};
use sockit::exec::ExecConfig;
use sockit::files::FilesConfig;
use sockit::framing::Framing;
use sockit::inherit::InheritError;
use sockit::net::{self, BindOptions, PeerAddr};
use sockit::render;
use sockit::server::{self, ConnReport, End, Monitor, ServerConfig};
use sockit::service::{MessageSink, QaDict, Service};
use sockit::spawn::SpawnConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::{AccessArgs, ServeArgs, ServerAuthArgs};
use crate::{OutputClosed, Usage};

/// The permissions of the Unix socket file to make: `--mode`, which only such a file has, or
/// 600.
pub fn unix_mode(mode: Option<u32>, endpoint: &Endpoint) -> Result<u32, Usage> {
    match (mode, endpoint) {
        (None, _) => Ok(0o600),
        (Some(mode), Endpoint::Unix { addr: UnixAddr::Path(_), .. }) => Ok(mode),
        (Some(_), _) => Err(Usage(format!("--mode sets a Unix socket file's permissions; {endpoint} has no file"))),
    }
}

pub async fn run(mut args: ServeArgs, quiet: bool, verbose: u8) -> anyhow::Result<ExitCode> {
    // Under inetd, stdout and stderr are the client's socket: nothing of ours may go there.
    let quiet = quiet || (args.inetd && verbose == 0);
    if args.inetd && verbose == 0 && stderr_is_stdin_socket() {
        crate::STDERR_IS_THE_PEER.store(true, Ordering::Relaxed);
    }
    let endpoint = serve_endpoint(&mut args)?;
    let framing = args.framing.for_endpoint(&endpoint)?;
    threads_apply(args.threads, &endpoint)?;
    let backlog = backlog_apply(args.backlog, &endpoint)?;
    if endpoint.style() == SocketStyle::Datagram && args.service.as_deref() == Some("source") {
        return Err(Usage(format!("source streams to connected clients; {endpoint} is a datagram socket")).into());
    }
    let shutdown = CancellationToken::new();
    let stdout_end = Arc::new(OnceLock::new());
    let service = build_service(&args, &shutdown, &stdout_end, &endpoint, framing)?;
    if service.needs_stream() && endpoint.style() != SocketStyle::Stream {
        return Err(
            Usage(format!("{} needs a stream socket (tcp or unix:); {endpoint} is not one", service.name())).into()
        );
    }
    let access = access_list(&args.access, &endpoint)?;
    let tls = crate::tls::server(&args.tls, &endpoint)?;
    // Signals are watched before the socket exists: a Ctrl-C at any moment after this is an
    // orderly stop that removes the socket file, never the default handler's abrupt exit.
    let cut_now = CancellationToken::new();
    spawn_signal_watch(shutdown.clone(), cut_now.clone(), args.grace, quiet)?;
    crate::raise_fd_limit();
    let bind_opts = BindOptions {
        backlog,
        unix_mode: unix_mode(args.mode, &endpoint)?,
        tls: tls.as_ref().map(|(t, _)| t.clone()),
        listeners: if args.once { 1 } else { server_threads(args.threads) },
    };
    let socket = net::bind(&endpoint, &bind_opts).await?;
    if !quiet {
        let stop = match (socket.is_single() || args.once, endpoint.style()) {
            (false, _) => "Ctrl-C stops",
            (true, SocketStyle::Datagram) => "one datagram, then exit",
            (true, _) => "one client, then exit",
        };
        let framing = match endpoint.style() {
            SocketStyle::Stream if matches!(service, Service::Chat(_)) => "one message per line".to_owned(),
            SocketStyle::Stream if let Service::Spawn(config) = &service => {
                let prog = Path::new(&config.argv[0]).file_name().unwrap_or(config.argv[0].as_os_str());
                let handshake = if config.policy.token.is_some() { " after the handshake" } else { "" };
                format!("a new {} for each client, raw bytes{handshake}", prog.to_string_lossy())
            }
            SocketStyle::Stream if service.needs_stream() => "sockit messages, PROTOCOL.md".to_owned(),
            SocketStyle::Stream => format!("framing {framing}"),
            SocketStyle::Seqpacket => "one message per packet".to_owned(),
            SocketStyle::Datagram => "one message per datagram".to_owned(),
        };
        let both = if socket.is_dual_stack() { " (IPv4 and IPv6)" } else { "" };
        note!("sockit: serving {} on {}{both} ({framing}); {stop}", service.name(), socket.local_endpoint());
        if let Some((_, line)) = &tls {
            note!("{line}");
        }
    }
    let config = ServerConfig {
        service,
        framing,
        max_frame: args.framing.max_frame(),
        max_conns: args.max_conns.map(|n| n as usize),
        idle_timeout: args.idle_timeout,
        once: args.once,
        grace: args.grace,
        access,
        max_per_source: args.access.max_per_source.map(|n| n as usize),
        monitor: Arc::new(server::Silent),
        own_threads: !args.once,
    };
    let datagrams = endpoint.style() == SocketStyle::Datagram;
    let talk = Talk::new(quiet, verbose);
    run_logged(socket, config, shutdown, cut_now, datagrams, talk, || match stdout_end.get() {
        None => Ok(()),
        Some(StdoutEnd::Closed) => Err(OutputClosed.into()),
        Some(StdoutEnd::Failed(e)) => Err(anyhow::anyhow!("cannot write to stdout: {}", render::io_error(e))),
    })
    .await
}

/// Refuses `--threads` where each thread cannot have a listening socket of its own.
pub(crate) fn threads_apply(threads: Option<u32>, endpoint: &Endpoint) -> Result<(), Usage> {
    if threads.is_some()
        && matches!(endpoint, Endpoint::Unix { .. } | Endpoint::Ip { proto: sockit::endpoint::IpProto::Udp, .. })
    {
        return Err(Usage(format!(
            "--threads gives each thread a TCP listening socket of its own; {endpoint} is served by one (leave --threads out)"
        )));
    }
    Ok(())
}

/// The listen backlog: `--backlog`, or the library's default (1024). Refused where nothing listens with one: a datagram
/// socket, and an inherited socket, which its parent already set listening.
pub(crate) fn backlog_apply(backlog: Option<u32>, endpoint: &Endpoint) -> Result<u32, Usage> {
    if backlog.is_some() {
        if matches!(endpoint, Endpoint::Fd(_)) {
            return Err(Usage(format!(
                "--backlog applies to a socket sockit listens on; {endpoint} is inherited, and its backlog is the \
                 one it was given (leave --backlog out)"
            )));
        }
        if endpoint.style() == SocketStyle::Datagram {
            return Err(Usage(format!(
                "--backlog is the queue of connections to accept; {endpoint} receives datagrams (leave --backlog out)"
            )));
        }
    }
    Ok(backlog.unwrap_or(BindOptions::default().backlog))
}

/// How many threads serve a TCP address: `--threads`, or one per CPU.
pub(crate) fn server_threads(threads: Option<u32>) -> usize {
    threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |n| n as usize)
}

/// A text file the user named (`--dict`, `--allow-file`), read as the library reads any such
/// file: a regular file or a pipe, of a bounded size.
fn read_text_file(path: &std::path::Path) -> std::io::Result<String> {
    String::from_utf8(sockit::fsroot::read_config_file(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// The access list from `--allow`, `--deny` and their files. Rules need IP peers: on a Unix
/// socket they are a usage error rather than rules that silently never match.
pub(crate) fn access_list(args: &AccessArgs, endpoint: &Endpoint) -> anyhow::Result<Arc<AccessList>> {
    let mut acl = AccessList::default();
    let read = |path: &std::path::PathBuf, flag: &str| -> anyhow::Result<Vec<sockit::acl::Cidr>> {
        let text = read_text_file(path)
            .map_err(|e| Usage(format!("cannot read {flag} {}: {}", path.display(), render::io_error(&e))))?;
        Ok(AccessList::parse_file(&text).map_err(|e| Usage(format!("{flag} {}: {e}", path.display())))?)
    };
    for rule in &args.allow {
        acl.allow(*rule);
    }
    for path in &args.allow_file {
        read(path, "--allow-file")?.into_iter().for_each(|r| acl.allow(r));
    }
    for rule in &args.deny {
        acl.deny(*rule);
    }
    for path in &args.deny_file {
        read(path, "--deny-file")?.into_iter().for_each(|r| acl.deny(r));
    }
    let limited = !acl.is_empty() || args.max_per_source.is_some();
    if limited && let Endpoint::Unix { .. } = endpoint {
        return Err(Usage(format!(
            "--allow, --deny and --max-per-source match IP addresses; {endpoint} has none (its file mode, --mode, \
             says who may connect)"
        ))
        .into());
    }
    if args.max_per_source.is_some() && endpoint.style() == SocketStyle::Datagram {
        return Err(Usage(format!("--max-per-source counts connections; {endpoint} receives datagrams")).into());
    }
    Ok(Arc::new(acl))
}

/// How much a server says on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Talk {
    /// Nothing but errors (`-q`, or under inetd).
    Quiet,
    /// A line per connection as it ends, and the summary.
    Normal,
    /// Also a line per connection as it is accepted (`-v`, as `nc -v -l` says "connection from").
    Verbose,
}

impl Talk {
    pub(crate) fn new(quiet: bool, verbose: u8) -> Talk {
        match (quiet, verbose) {
            (true, _) => Talk::Quiet,
            (false, 0) => Talk::Normal,
            (false, _) => Talk::Verbose,
        }
    }
}

/// Runs a bound server with a per-connection log on stderr until it stops, then prints the
/// summary. `output`, asked once the server has stopped, says whether it stopped because its
/// stdout went away: [`OutputClosed`] for a reader that left (a quiet, successful end), another
/// error for a write that failed (the command's error).
pub(crate) async fn run_logged(
    socket: net::ServerSocket,
    mut config: ServerConfig,
    shutdown: CancellationToken,
    cut_now: CancellationToken,
    datagrams: bool,
    talk: Talk,
    output: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let quiet = talk == Talk::Quiet;
    // Serving one client, the exit status is how that went (a file received with `print --raw
    // --once` is whole only if its connection ended well).
    let one_client = config.once || socket.is_single();
    let monitor = Arc::new(LogMonitor::new(talk));
    config.monitor = monitor.clone();
    let flusher = {
        let monitor = monitor.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOG_FLUSH).await;
                monitor.flush();
            }
        })
    };

    let summary = tokio::select! {
        s = server::run(socket, config, shutdown.clone()) => Some(s),
        _ = cut_now.cancelled() => None,
    };
    if summary.is_none() {
        // Stopping at once: commands still running must not outlive the server.
        sockit::child::kill_all_commands();
    }
    flusher.abort();
    monitor.flush();
    output()?;
    if !quiet {
        match summary {
            Some(s) => {
                let mut line = format!("sockit: stopped after {:.1}s: ", s.uptime.as_secs_f64());
                if datagrams {
                    line += &format!("{} in, {} out", render::count(s.datagrams_in, "datagram"), s.datagrams_out);
                } else {
                    line += &render::count(s.connections, "connection");
                }
                if s.refused > 0 {
                    line += &format!(", {} refused", s.refused);
                }
                if s.cut > 0 {
                    line += &format!(", {} cut at the deadline", s.cut);
                }
                line += &format!(", {} in, {} out", render::bytes(s.bytes_in), render::bytes(s.bytes_out));
                note!("{line}");
            }
            None => note!("sockit: stopped at once"),
        }
    }
    if one_client && let Some(end) = monitor.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("its one client's connection failed: {end}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The endpoint to serve: ENDPOINT, or stdin with `--inetd`. With `--inetd` the words are
/// SERVICE [TEXT], which clap, knowing no better, put in ENDPOINT and SERVICE: they move over.
fn serve_endpoint(args: &mut ServeArgs) -> anyhow::Result<Endpoint> {
    if !args.inetd {
        let text = args.endpoint.as_deref().ok_or_else(|| Usage("serve needs an ENDPOINT (or --inetd)".into()))?;
        // `serve echo :7000`: the words the other way round.
        if SERVICES.contains(&text)
            && let Some(second) = args.service.as_deref()
            && Endpoint::parse(second).is_ok()
        {
            let rest = args.service_arg.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
            return Err(Usage(format!("the ENDPOINT comes first: sockit serve {second} {text}{rest}")).into());
        }
        return crate::endpoint(text);
    }
    if let Some(first) = args.endpoint.take() {
        let no_endpoint = "--inetd serves the client on stdin and takes no ENDPOINT";
        if let Some(third) = &args.service_arg {
            let second = args.service.as_deref().unwrap_or_default();
            return Err(Usage(format!(
                "{no_endpoint}: the words are SERVICE [TEXT], not '{first}' '{second}' '{third}' (for another socket: \
                 sockit serve ENDPOINT SERVICE)"
            ))
            .into());
        }
        // Service names never hold these; endpoints always do.
        if first.contains(':') || first.contains('/') {
            return Err(Usage(format!(
                "{no_endpoint} ('{first}'): write sockit serve --inetd SERVICE, or sockit serve {first} SERVICE \
                 without --inetd"
            ))
            .into());
        }
        args.service_arg = args.service.take();
        args.service = Some(first);
    }
    stdin_endpoint()
}

/// Stdin as an endpoint, for `--inetd`: an error unless it is a socket.
pub(crate) fn stdin_endpoint() -> anyhow::Result<Endpoint> {
    let stdin = FdRef::Number(0);
    match sockit::inherit::probe(&stdin) {
        Ok(_) => Ok(Endpoint::Fd(stdin)),
        Err(InheritError::NotASocket { what, .. }) => Err(Usage(format!(
            "--inetd: stdin is not a socket (it is {what}); inetd, socat or systemd (Accept=yes) start sockit with the \
             client's connection on stdin"
        ))
        .into()),
        Err(e) => Err(Usage(format!("--inetd: {e}")).into()),
    }
}

/// Whether stderr is the very socket on stdin, as inetd arranges it.
pub(crate) fn stderr_is_stdin_socket() -> bool {
    let stat = |fd: i32| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes the struct on success (only then is it read); a descriptor that
        // is not open fails with EBADF.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| unsafe { st.assume_init() })
    };
    match (stat(0), stat(2)) {
        (Some(a), Some(b)) => {
            a.st_mode & libc::S_IFMT == libc::S_IFSOCK && (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
        }
        _ => false,
    }
}

/// The services' names, as SERVICE is written.
pub(crate) const SERVICES: [&str; 11] =
    ["echo", "upper", "reply", "qa", "print", "discard", "source", "chat", "exec", "files", "spawn"];

fn build_service(
    args: &ServeArgs,
    shutdown: &CancellationToken,
    stdout_end: &Arc<OnceLock<StdoutEnd>>,
    endpoint: &Endpoint,
    framing: Framing,
) -> anyhow::Result<Service> {
    let name = args.service.as_deref().unwrap_or("echo");
    let guarded = matches!(name, "exec" | "files" | "spawn");
    let auth = &args.auth;
    if auth.insecure {
        return Err(Usage(
            "--insecure is gone: exec, files and spawn beyond loopback need TLS; serve them on tls://HOST:PORT (a \
             certificate is made on first use)"
                .into(),
        )
        .into());
    }
    if !guarded && (auth.token_file.is_some() || !auth.allow_uid.is_empty()) {
        return Err(Usage("--token-file and --allow-uid belong to the exec, files and spawn services".into()).into());
    }
    if (args.root.is_some() || args.read_only) && name != "files" {
        return Err(Usage("--root and --read-only belong to the files service".into()).into());
    }
    if args.timeout.is_some() && !matches!(name, "exec" | "spawn") {
        return Err(Usage("--timeout belongs to the exec and spawn services (see --idle-timeout)".into()).into());
    }
    if let Some(prog) = args.program.first()
        && name != "spawn"
    {
        return Err(Usage(format!(
            "only spawn runs a program: serve ENDPOINT spawn -- PROG ARGS… (got '{}' for {name})",
            prog.to_string_lossy()
        ))
        .into());
    }
    let no_args = |svc: Service| -> anyhow::Result<Service> {
        match &args.service_arg {
            Some(extra) => Err(Usage(format!("service '{name}' takes no argument, got '{extra}'")).into()),
            None => Ok(svc),
        }
    };
    if (args.dict.is_some() || args.default_answer.is_some()) && name != "qa" {
        return Err(Usage("--dict and --default-answer belong to the qa service".into()).into());
    }
    if (args.hex || args.raw) && name != "print" {
        let flag = if args.hex { "--hex" } else { "--raw" };
        return Err(Usage(format!("{flag} belongs to the print service")).into());
    }
    if let Some(framing) = args.framing.framing {
        let refusal = match (name, framing) {
            ("chat", Framing::Line) | ("discard" | "source" | "spawn", Framing::Raw) => None,
            ("chat", _) => Some("is line-based: leave --framing out (or use line)"),
            ("exec" | "files", _) => Some("speaks sockit messages (PROTOCOL.md) of its own: leave --framing out"),
            ("discard" | "source", _) => Some("moves bytes, not messages: leave --framing out"),
            ("spawn", _) => Some("passes raw bytes to and from the program: leave --framing out"),
            _ => None,
        };
        if let Some(refusal) = refusal {
            return Err(Usage(format!("{name} {refusal}")).into());
        }
    }
    if args.framing.max_frame.is_some() {
        let refusal = match name {
            "chat" => None,
            "exec" | "files" => Some("speaks sockit messages (PROTOCOL.md) with limits of its own"),
            "discard" | "source" => Some("moves bytes, not messages"),
            "spawn" => Some("passes raw bytes to and from the program"),
            _ if args.framing.framing() == Framing::Raw => Some(
                "answers each read under raw framing, which --max-frame does not limit (add --framing line or len)",
            ),
            _ => None,
        };
        if let Some(refusal) = refusal {
            return Err(Usage(format!("--max-frame does nothing here: {name} {refusal}")).into());
        }
    }
    match name {
        "echo" => no_args(Service::Echo),
        "upper" => no_args(Service::Upper),
        "reply" => match &args.service_arg {
            Some(text) => Ok(Service::Reply(Arc::from(text.as_bytes()))),
            None => {
                Err(Usage("service 'reply' needs the TEXT to answer with: serve ENDPOINT reply TEXT".into()).into())
            }
        },
        "qa" => {
            let default_answer = args.default_answer.as_deref().unwrap_or("no");
            let dict = match &args.dict {
                None => {
                    let mut d = QaDict::default();
                    d.set_default_answer(default_answer);
                    d
                }
                Some(path) => {
                    let text = read_text_file(path)
                        .map_err(|e| {
                            Usage(format!("cannot read --dict {}: {}", path.display(), render::io_error(&e)))
                        })?;
                    QaDict::parse(&text, default_answer)
                        .map_err(|e| Usage(format!("--dict {}: {e}", path.display())))?
                }
            };
            no_args(Service::Qa(Arc::new(dict)))
        }
        "print" if args.inetd => Err(Usage(
            "print writes to stdout, which under inetd is the client's socket; choose another service (or serve \
             fd://0 print where stdout is not the socket)"
                .into(),
        )
        .into()),
        "print" => no_args(Service::Print(Arc::new(StdoutSink {
            show: if args.hex {
                Show::Hex
            } else if args.raw {
                // A line's end is part of what the client sent; other framings' headers are not.
                Show::Raw { line_ends: framing == Framing::Line && endpoint.style() == SocketStyle::Stream }
            } else {
                Show::Text
            },
            end: stdout_end.clone(),
            shutdown: shutdown.clone(),
        }))),
        "discard" => no_args(Service::Discard),
        "source" => no_args(Service::Source),
        "exec" => {
            let policy = server_policy(auth, endpoint, name)?;
            // Commands get the descriptor limit sockit was given, not the one it raises for itself.
            let child_nofile = Some(crate::fd_limit());
            no_args(Service::Exec(Arc::new(ExecConfig { policy, max_timeout: args.timeout, child_nofile })))
        }
        "chat" => {
            let max_line = args.framing.max_frame().min(sockit::chat::MAX_LINE);
            no_args(Service::Chat(Arc::new(sockit::chat::Room::new(max_line))))
        }
        "spawn" => {
            if let Some(word) = &args.service_arg {
                return Err(Usage(format!("spawn's program goes after --: serve ENDPOINT spawn -- {word} …")).into());
            }
            let Some(prog) = args.program.first() else {
                return Err(Usage("spawn needs the program to run: serve ENDPOINT spawn -- PROG ARGS…".into()).into());
            };
            // Checked once here, as execvp would find it, rather than failing for every client.
            let program = sockit::spawn::resolve_program(prog).map_err(|e| Usage(e.to_string()))?;
            let policy = server_policy(auth, endpoint, name)?;
            // Programs get the descriptor limit sockit was given, not the one it raises for itself.
            Ok(Service::Spawn(Arc::new(SpawnConfig {
                program,
                argv: args.program.clone(),
                policy,
                timeout: args.timeout,
                child_nofile: Some(crate::fd_limit()),
            })))
        }
        "files" => {
            let Some(dir) = &args.root else {
                return Err(Usage("files needs the directory to serve: --root DIR".into()).into());
            };
            let root = sockit::fsroot::Root::open(dir).map_err(|e| Usage(format!("--root: {e}")))?;
            let policy = server_policy(auth, endpoint, name)?;
            no_args(Service::Files(Arc::new(FilesConfig { policy, root, read_only: args.read_only })))
        }
        other => Err(Usage(format!(
            "unknown service '{other}' (choose echo, upper, reply TEXT, qa, print, discard, source, chat, exec, files or spawn)"
        ))
        .into()),
    }
}

/// Who may use a service that runs commands or touches files.
fn server_policy(auth: &ServerAuthArgs, endpoint: &Endpoint, name: &str) -> anyhow::Result<Policy> {
    if endpoint.style() != SocketStyle::Stream {
        return Err(Usage(format!("{name} needs a stream socket (tcp or unix:); {endpoint} is not one")).into());
    }
    if !endpoint.is_local() && !endpoint.is_tls() {
        let tls = match endpoint {
            Endpoint::Ip { family, host, port, .. } => {
                Endpoint::Ip { proto: sockit::endpoint::IpProto::Tls, family: *family, host: host.clone(), port: *port }
                    .to_string()
            }
            _ => "tls://HOST:PORT".to_owned(),
        };
        return Err(Usage(format!(
            "{name} on {endpoint} would be reachable from other machines without TLS; serve it on {tls} (a \
             certificate is made on first use), or listen on 127.0.0.1 or a unix: socket"
        ))
        .into());
    }
    let token = crate::exec::load_token(auth.token_file.as_deref())?;
    if token.is_none() && !endpoint.is_unix() {
        return Err(Usage(format!(
            "{name} on TCP needs a token: --token-file FILE (readable only by you) or ${}; make one with: \
             head -c 32 /dev/urandom | base64 > FILE && chmod 600 FILE",
            sockit::auth::TOKEN_ENV
        ))
        .into());
    }
    Ok(Policy::new(token, auth.allow_uid.clone()))
}

/// Watches SIGINT and SIGTERM: the first asks for an orderly shutdown, the second cuts.
pub(crate) fn spawn_signal_watch(
    shutdown: CancellationToken,
    cut_now: CancellationToken,
    grace: std::time::Duration,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        // Act first, then tell: nothing that goes wrong while telling may keep us running.
        shutdown.cancel();
        if !quiet {
            note!(
                "sockit: shutting down: no new clients; connections get {} to finish (Ctrl-C again to stop now)",
                humantime::format_duration(grace)
            );
        }
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        cut_now.cancel();
    });
    Ok(())
}

/// Logs one line per connection on stderr. Lines are gathered and written together, within
/// [`LOG_FLUSH`] of happening and always before the summary, so that a busy server makes one
/// write per batch instead of one per connection.
struct LogMonitor {
    talk: Talk,
    /// How the last connection that went wrong ended.
    failure: std::sync::Mutex<Option<End>>,
    pending: std::sync::Mutex<String>,
}

/// How long a log line may wait to be written.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);
/// Past this many buffered bytes, a line is written at once (the buffer stays bounded).
const LOG_BUFFER_MAX: usize = 64 * 1024;

impl LogMonitor {
    fn new(talk: Talk) -> LogMonitor {
        LogMonitor { talk, failure: std::sync::Mutex::new(None), pending: std::sync::Mutex::new(String::new()) }
    }

    fn log(&self, line: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.append(|pending| {
            let _ = writeln!(pending, "{line}");
        });
    }

    /// Adds a line to the buffer with `write_line`, and writes the buffer out if it is full.
    fn append(&self, write_line: impl FnOnce(&mut String)) {
        if self.talk == Talk::Quiet {
            return;
        }
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            write_line(&mut pending);
            pending.len() >= LOG_BUFFER_MAX
        };
        if full {
            self.flush();
        }
    }

    /// Writes out what is buffered. Failures are ignored: a closed stderr must not stop a server.
    fn flush(&self) {
        let text = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !text.is_empty() {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

impl Monitor for LogMonitor {
    fn opened(&self, peer: &PeerAddr) {
        if self.talk == Talk::Verbose {
            self.log(format_args!("{peer}: connected"));
        }
    }
    fn closed(&self, r: &ConnReport) {
        // A connection cut because the server was told to stop is not one that went wrong.
        if matches!(r.end, End::Protocol(_) | End::Io(_) | End::TimedOut | End::Injected(_)) {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.end.clone());
        }
        self.append(|pending| closed_line(pending, r));
    }
    fn refused(&self, peer: &PeerAddr, reason: &str) {
        self.log(format_args!("{peer}: refused, {reason}"));
    }
    fn problem(&self, peer: Option<&PeerAddr>, what: &str) {
        match peer {
            Some(p) => self.log(format_args!("{p}: {what}")),
            None => self.log(format_args!("sockit: {what}")),
        }
    }
}

/// Appends the line logged for a finished connection, as
/// `"{peer}: {in} in, {out} out, {duration}, {end}\n"` with `render::ByteCount` and
/// `render::Seconds` would write it. A busy server writes one per connection, and through
/// `format_args!` the line was over a quarter of the user time a connection cost on the event
/// loop (BENCHMARKS.md), so the common cases (an IPv4 peer, under 1 KiB each way, closed by the
/// client) are written directly, with `itoa` for the numbers, and the rest through `Display`.
fn closed_line(out: &mut String, r: &ConnReport) {
    use std::fmt::Write as _;
    let mut num = itoa::Buffer::new();
    match &r.peer {
        PeerAddr::Inet(std::net::SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(num.format(octet));
            }
            out.push(':');
            out.push_str(num.format(a.port()));
        }
        peer => {
            let _ = write!(out, "{peer}");
        }
    }
    for (n, what) in [(r.bytes_in, ": "), (r.bytes_out, " in, ")] {
        out.push_str(what);
        if n < 1024 {
            out.push_str(num.format(n));
            out.push_str(" B");
        } else {
            let _ = write!(out, "{}", render::ByteCount(n));
        }
    }
    out.push_str(" out, ");
    let (secs, ms) = render::Seconds(r.duration).parts();
    out.push_str(num.format(secs));
    out.push('.');
    for digit in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push_str("s, ");
    match &r.end {
        End::PeerClosed => out.push_str("closed by client"),
        end => {
            let _ = write!(out, "{end}");
        }
    }
    out.push('\n');
}

/// The `print` service's output: one line per message on stdout (or a hex dump). When stdout's
/// reader goes away, the server stops quietly, as `… | head -1` expects; when a write fails
/// otherwise (a full disk), it stops and the command fails.
struct StdoutSink {
    show: Show,
    end: Arc<OnceLock<StdoutEnd>>,
    shutdown: CancellationToken,
}

/// Why `print` stopped writing to stdout.
enum StdoutEnd {
    /// Its reader went away.
    Closed,
    /// A write failed.
    Failed(std::io::Error),
}

/// How `print` shows a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    /// A line with its time and sender, control bytes escaped.
    Text,
    /// Time, sender and length, then a hex dump.
    Hex,
    /// The bytes alone, as they came; `line_ends` puts back the newline that ended each line.
    Raw { line_ends: bool },
}

impl MessageSink for StdoutSink {
    fn wants_lines(&self) -> bool {
        self.show == Show::Text
    }

    fn message(&self, peer: &PeerAddr, at: SystemTime, data: &[u8]) {
        if self.end.get().is_some() {
            return;
        }
        let when = humantime::format_rfc3339_millis(at);
        let mut out = std::io::stdout().lock();
        let wrote = match self.show {
            Show::Text => writeln!(out, "{when} {peer} {}", render::escaped_line(data)),
            Show::Hex => {
                write!(out, "{when} {peer} {}\n{}", render::count(data.len() as u64, "byte"), render::hex_dump(data))
            }
            Show::Raw { line_ends } => {
                out.write_all(data).and_then(|()| if line_ends { out.write_all(b"\n") } else { Ok(()) })
            }
        };
        if let Err(e) = wrote.and_then(|()| out.flush()) {
            let end = if e.kind() == std::io::ErrorKind::BrokenPipe { StdoutEnd::Closed } else { StdoutEnd::Failed(e) };
            let _ = self.end.set(end);
            self.shutdown.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The fast line is the line `format_args!` wrote, for the common cases and the others.
    #[test]
    fn closed_line_writes_what_display_would() {
        let peers = [
            PeerAddr::Inet("127.0.0.9:35774".parse().unwrap()),
            PeerAddr::Inet("0.0.0.0:0".parse().unwrap()),
            PeerAddr::Inet("255.255.255.255:65535".parse().unwrap()),
            PeerAddr::Inet("[::1]:7000".parse().unwrap()),
            PeerAddr::UnixUnnamed { pid: Some(42), uid: Some(1000) },
        ];
        let ends = [End::PeerClosed, End::Shutdown, End::Protocol("frame too long".into())];
        let durations = [
            Duration::ZERO,
            Duration::from_micros(4_499),
            Duration::from_micros(999_600),
            Duration::from_secs(3_600) + Duration::from_millis(7),
            Duration::MAX,
        ];
        let counts = [0, 64, 1023, 1024, 5 << 20, u64::MAX];
        for peer in &peers {
            for end in &ends {
                for &duration in &durations {
                    for (&bytes_in, &bytes_out) in counts.iter().zip(counts.iter().rev()) {
                        let r = ConnReport { peer: peer.clone(), bytes_in, bytes_out, duration, end: end.clone() };
                        let mut fast = String::new();
                        closed_line(&mut fast, &r);
                        let want = format!(
                            "{}: {} in, {} out, {}, {}\n",
                            r.peer,
                            render::ByteCount(r.bytes_in),
                            render::ByteCount(r.bytes_out),
                            render::Seconds(r.duration),
                            r.end
                        );
                        assert_eq!(fast, want);
                    }
                }
            }
        }
    }
}
