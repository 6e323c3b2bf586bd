//! `sockit exec` and `sockit shell`: commands on an `exec` server.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use sockit::auth::Token;
use sockit::endpoint::Endpoint;
use sockit::exec::{ExecClient, ExecError, Request};
use sockit::net::{self, ClientSocket, Conn, Stream};
use tokio::sync::mpsc;

use crate::Usage;
use crate::cli::{ClientAuthArgs, ExecArgs, ShellArgs};

/// The exit code for a failure on sockit's side rather than the command's (as ssh uses).
const FAILED: u8 = 255;

/// The token from `--token-file`, else `$SOCKIT_TOKEN`, else none. A token that cannot be had
/// is a usage error (exit 2), as any other file an option names that cannot be read.
pub fn load_token(file: Option<&Path>) -> Result<Option<Token>, Usage> {
    let token = match file {
        Some(path) => Token::from_file(path).map(Some),
        None => Token::from_env(),
    };
    token.map_err(|e| Usage(e.to_string()))
}

/// Connects to a stream endpoint, giving up after `timeout`; `tls` checks a `tls://` server.
pub async fn connect_stream(
    endpoint: &Endpoint,
    timeout: Duration,
    tls: Option<&sockit::tls::ClientTls>,
) -> anyhow::Result<Stream> {
    match net::connect_with(endpoint, timeout, tls).await? {
        ClientSocket::Conn(Conn::Stream(s)) => Ok(s),
        _ => Err(Usage(format!("{endpoint} is not a stream socket (tcp or unix:)")).into()),
    }
}

/// An authenticated client; a failure to get one is said here and becomes exit code 255, as
/// for ssh (usage errors stay errors, for exit code 2).
async fn open(endpoint: &Endpoint, args: &ClientAuthArgs) -> anyhow::Result<Result<ExecClient, ExitCode>> {
    let connected = async {
        let token = load_token(args.token_file.as_deref())?;
        let tls = crate::tls::client(&args.tls, endpoint)?;
        let stream = connect_stream(endpoint, args.connect_timeout, tls.as_deref()).await?;
        anyhow::Ok(ExecClient::handshake(stream, token.as_ref()).await?)
    };
    match connected.await {
        Ok(c) => Ok(Ok(c)),
        Err(e) if e.is::<Usage>() || crate::names_an_impossible_socket(&e) => Err(e),
        Err(e) => {
            note!("sockit: {e:#}");
            Ok(Err(ExitCode::from(FAILED)))
        }
    }
}

/// Forwards Ctrl-C to the remote command; `leave_on_second` makes a second one end sockit.
fn forward_interrupts(leave_on_second: bool) -> mpsc::Receiver<u8> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = false;
        while tokio::signal::ctrl_c().await.is_ok() {
            if pending && leave_on_second {
                std::process::exit(130);
            }
            pending = true;
            if tx.send(libc::SIGINT as u8).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The argv to send for `exec`'s words: the command as given, or `sh -c` and the words joined.
/// Words before `--` and an empty command are usage errors, told here rather than by the server.
fn command_line(args: &ExecArgs) -> Result<Vec<Vec<u8>>, Usage> {
    if !args.stray.is_empty() {
        let words: Vec<_> = args.stray.iter().chain(&args.command).map(|w| w.to_string_lossy()).collect();
        return Err(Usage(format!(
            "the command goes after --: sockit exec ENDPOINT [OPTIONS] -- {}",
            shlex::try_join(words.iter().map(|w| w.as_ref())).unwrap_or_else(|_| words.join(" "))
        )));
    }
    let words: Vec<Vec<u8>> = args.command.iter().map(|a| a.as_bytes().to_vec()).collect();
    if args.shell {
        let line = words.join(&b' ');
        if line.trim_ascii().is_empty() {
            return Err(Usage("the command is empty".into()));
        }
        return Ok(vec![b"sh".to_vec(), b"-c".to_vec(), line]);
    }
    match words.first() {
        Some(name) if !name.is_empty() => Ok(words),
        _ if words.len() > 1 => Err(Usage("the command's name, the first word after --, is empty".into())),
        _ => Err(Usage("the command is empty".into())),
    }
}

pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    let argv = command_line(&args)?;
    let mut client = match open(&endpoint, &args.auth).await? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let req = Request { argv, timeout: args.timeout, stdin: !args.no_stdin };
    let mut signals = forward_interrupts(true);
    let outcome = client.run(&req, tokio::io::stdin(), tokio::io::stdout(), tokio::io::stderr(), &mut signals).await;
    Ok(ExitCode::from(match outcome {
        Ok(status) => status.shell_code(),
        Err(ExecError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 141,
        Err(e) => {
            note!("sockit: {}", failure(&e));
            e.shell_code()
        }
    }))
}

/// What went wrong with a command, in words: a connection that failed while the command ran
/// says that its outcome is unknown, not only the socket's error.
fn failure(e: &ExecError) -> String {
    match e {
        ExecError::Proto(sockit::proto::ProtoError::Io(io)) => {
            let io = sockit::render::io_error(io);
            format!("the connection to the server failed ({io}); the command's exit status is unknown")
        }
        e => e.to_string(),
    }
}

pub async fn shell(args: ShellArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    let mut client = match open(&endpoint, &args.auth).await? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive && !quiet {
        let how = if args.shell { "each line runs with sh -c" } else { "each line runs without a shell" };
        note!("connected to {endpoint} ({how}); exit or Ctrl-D leaves");
    }
    let mut lines = read_lines(interactive, format!("{endpoint}$ "));
    let mut signals = forward_interrupts(false);
    let mut last = 0u8;
    while let Some(line) = lines.next().await {
        let line = line.map_err(anyhow::Error::msg)?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        let argv = if args.shell {
            vec![b"sh".to_vec(), b"-c".to_vec(), line.as_bytes().to_vec()]
        } else {
            match shlex::split(line) {
                Some(words) if !words.is_empty() => words.into_iter().map(String::into_bytes).collect(),
                _ => {
                    note!("sockit: unbalanced quotes in: {line}");
                    last = 2;
                    continue;
                }
            }
        };
        let req = Request { argv, timeout: args.timeout, stdin: false };
        // Interrupts that arrived at the prompt belong to no command.
        while signals.try_recv().is_ok() {}
        match client.run(&req, tokio::io::empty(), tokio::io::stdout(), tokio::io::stderr(), &mut signals).await {
            Ok(status) => {
                last = status.shell_code();
                if last != 0 && interactive {
                    note!("[exit {last}]");
                }
            }
            Err(e @ ExecError::Refused { .. }) => {
                note!("sockit: {e}");
                last = e.shell_code();
            }
            Err(e) => {
                note!("sockit: {}", failure(&e));
                return Ok(ExitCode::from(FAILED));
            }
        }
    }
    Ok(ExitCode::from(last))
}

/// Lines to run: from a rustyline prompt on a terminal (asked for one at a time, so that the
/// prompt appears only after a command's output), or from stdin; or why the input cannot give
/// them.
struct Lines {
    rx: mpsc::Receiver<Result<String, String>>,
    ask: Option<std::sync::mpsc::Sender<()>>,
}

impl Lines {
    async fn next(&mut self) -> Option<Result<String, String>> {
        if let Some(ask) = &self.ask {
            ask.send(()).ok()?;
        }
        self.rx.recv().await
    }
}

fn read_lines(interactive: bool, prompt: String) -> Lines {
    let (tx, rx) = mpsc::channel(1);
    if !interactive {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut input = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            for n in 1.. {
                let line = match input.next_line().await {
                    Ok(Some(line)) => Ok(line),
                    Ok(None) => return,
                    // A command is never guessed at: the lines before this one ran, and it ends here.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        Err(format!("line {n} of the input is not UTF-8 text; it and the lines after it did not run"))
                    }
                    Err(e) => Err(format!("cannot read the input: {}", sockit::render::io_error(&e))),
                };
                let failed = line.is_err();
                if tx.send(line).await.is_err() || failed {
                    return;
                }
            }
        });
        return Lines { rx, ask: None };
    }
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    // A plain thread: readline blocks, and the process may end while it does.
    std::thread::spawn(move || {
        let Ok(mut editor) = rustyline::DefaultEditor::new() else { return };
        while asked.recv().is_ok() {
            match editor.readline(&prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                // Ctrl-C at the prompt clears the line, as in a shell.
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    if tx.blocking_send(Ok(String::new())).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Lines { rx, ask: Some(ask) }
}
