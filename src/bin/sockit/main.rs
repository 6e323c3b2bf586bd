//! The `sockit` command: parses the command line, builds library objects from it, runs them,
//! and turns the outcome into output and an exit code (0 success, 1 runtime error, 2 usage).

/// Writes a line to stderr, ignoring failure: `eprintln!` panics when stderr is a closed pipe
/// (`sockit serve … 2>&1 | head -1`), which would kill the task that printed (a signal handler,
/// a connection's logger) and leave the server deaf to Ctrl-C.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The same without the newline (for progress lines that rewrite themselves).
macro_rules! note_inline {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, $($arg)*);
        let _ = err.flush();
    }};
}

mod bench;
mod cli;
mod connect;
mod exec;
mod files;
mod habits;
mod man;
mod ping;
mod relay;
mod serve;
mod states;
mod terminal;
mod tls;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

/// A mistake in how sockit was called: reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Our stdout was closed by its reader (`sockit … | head -1`): a quiet, successful exit.
#[derive(Debug, thiserror::Error)]
#[error("output closed")]
pub struct OutputClosed;

/// Set when stderr is the client's socket (`serve --inetd` under inetd, which puts the connection
/// on stdin, stdout and stderr): a final error is then not written there, only the exit code
/// tells it.
pub static STDERR_IS_THE_PEER: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // The systemd variables are read before any thread exists, as the process received them.
    sockit::inherit::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // --help and --version arrive here too, and are not errors; nor is the help that a
            // bare `sockit` shows.
            if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
            }
            // A netcat or socat habit gets the sockit command that does what it meant.
            let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
            match habits::suggestion(&args) {
                Some(hint) => note!("sockit: {hint}"),
                None => note!("sockit: {}", usage_line(&e.render().to_string())),
            }
            return ExitCode::from(2);
        }
    };
    // Under inetd, stderr may be the client's socket: no log lines unless asked for.
    let inetd = matches!(&cli.command, Command::Serve(args) if args.inetd)
        || matches!(&cli.command, Command::Relay(args) if args.inetd);
    init_logging(cli.verbose, inetd);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            note!("sockit: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A read of stdin may still be blocked in a helper thread; nothing needs it any more.
    runtime.shutdown_background();
    let silent = STDERR_IS_THE_PEER.load(Ordering::Relaxed);
    match outcome {
        Ok(code) => code,
        Err(e) if e.is::<OutputClosed>() || is_stdout_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if e.is::<Usage>() || names_an_impossible_socket(&e) => {
            if !silent {
                note!("sockit: {e}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            if !silent {
                note!("sockit: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

/// An endpoint the kernel could never take, whatever the machine's state: a Unix socket path or
/// abstract name longer than `sun_path`, or port 0 to connect to. The library finds these when
/// it makes the address or connects; to the user they are a wrong argument, exit 2.
pub(crate) fn names_an_impossible_socket(e: &anyhow::Error) -> bool {
    use sockit::net::NetError;
    matches!(
        e.downcast_ref::<NetError>(),
        Some(NetError::PathTooLong { .. } | NetError::NameTooLong { .. } | NetError::PortZero { .. })
    )
}

/// A usage error from the argument parser as one line, as every other error is: clap's text
/// (`error: …`, the arguments it lists, its tips, the usage and "For more information…" on lines
/// of their own) folded into its first line, with the help to see at the end.
fn usage_line(text: &str) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or_default().trim_start_matches("error: ").trim_end().to_owned();
    // Without a usage line to name it, the subcommand is the first argument that is one.
    // (`args_os`: an argument that is not UTF-8 is no subcommand, and must not panic here.)
    let sub = std::env::args_os()
        .skip(1)
        .find_map(|a| a.to_str().filter(|s| Cli::command().find_subcommand(s).is_some()).map(str::to_owned));
    let mut command = sub.map_or("sockit".to_owned(), |s| format!("sockit {s}"));
    let (mut listed, mut tips) = (Vec::new(), Vec::new());
    for line in lines.map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information")) {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            // "sockit relay [OPTIONS] <FROM> <TO>": the words before the first placeholder.
            let words: Vec<&str> = usage.split(' ').take_while(|w| w.chars().all(|c| c.is_ascii_lowercase())).collect();
            command = words.join(" ");
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip);
        } else {
            listed.push(line);
        }
    }
    if !listed.is_empty() {
        out = format!("{out} {}", listed.join(", "));
    }
    for tip in tips {
        out = format!("{out} (tip: {tip})");
    }
    format!("{out} (see `{command} --help`)")
}

fn is_stdout_broken_pipe(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<sockit::client::ClientError>(),
        Some(sockit::client::ClientError::Output(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.quiet, cli.verbose).await,
        Command::Connect(args) => connect::connect(args, cli.quiet, cli.verbose > 0 && !cli.quiet).await,
        Command::Send(args) => connect::send(args, cli.verbose > 0 && !cli.quiet).await,
        Command::Bench(args) => bench::run(args, cli.quiet).await,
        Command::Relay(args) => relay::run(args, cli.quiet, cli.verbose).await,
        Command::Ping(args) => ping::run(args, cli.quiet).await,
        Command::States(args) => states::run(args).await,
        Command::Exec(args) => exec::exec(args).await,
        Command::Shell(args) => exec::shell(args, cli.quiet).await,
        Command::Put(args) => files::put(args, cli.quiet).await,
        Command::Get(args) => files::get(args, cli.quiet).await,
        Command::Ls(args) => files::ls(args).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sockit", &mut out);
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { command } => {
            let mut cli = Cli::command();
            // Built, so that a command's page gets its full name (sockit-serve, `sockit serve`).
            cli.build();
            let page = match command {
                None => cli,
                Some(name) => match cli.find_subcommand(&name) {
                    Some(sub) => sub.clone(),
                    None => {
                        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
                        return Err(Usage(format!(
                            "no command '{name}'; sockit man takes one of: {}",
                            names.join(", ")
                        ))
                        .into());
                    }
                },
            };
            write_stdout(&man::page(page)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes to stdout, turning a closed pipe into [`OutputClosed`].
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        other => Ok(other?),
    }
}

fn init_logging(verbose: u8, silent: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if silent => "off",
        0 => "warn",
        1 => "sockit=info",
        2 => "sockit=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("SOCKIT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal (and not with NO_COLOR set). A write that fails (a
    // stderr whose reader went away) is dropped: tracing-subscriber would otherwise report it
    // with `eprintln!`, which panics on that same stderr and takes down the task that logged.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .init();
}

/// The soft limit on open files, as it is now.
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit on a valid, owned struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 }
}

/// Raises the soft limit on open files to the hard limit, as servers and load generators that
/// hold many connections need (the default soft limit is often 1024).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Parses an endpoint argument; a bad one is a usage error. An inherited socket (`fd://`) is
/// looked at now, so that one that is not open, not a socket or not passed is a usage error
/// before anything starts, and its type is known to the checks that follow.
pub fn endpoint(text: &str) -> anyhow::Result<sockit::endpoint::Endpoint> {
    let endpoint: sockit::endpoint::Endpoint = text.parse().map_err(|mut e: sockit::endpoint::ParseError| {
        let hint = if e.problem.starts_with("port '") {
            habits::port_name_hint(text)
        } else if e.problem.starts_with("no port") && std::path::Path::new(text).exists() {
            // `connect us.sock`: a path, written without the ./ that makes it one.
            Some(format!("there is a file {text} here: write ./{text} for it"))
        } else {
            None
        };
        if let Some(hint) = hint {
            e.problem = format!("{} (hint: {hint})", e.problem);
        }
        Usage(e.to_string())
    })?;
    if let sockit::endpoint::Endpoint::Fd(r) = &endpoint {
        sockit::inherit::probe(r).map_err(|e| Usage(e.to_string()))?;
    }
    Ok(endpoint)
}
