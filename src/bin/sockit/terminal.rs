//! The interactive prompt of `sockit connect` on a terminal: a `>> ` line editor with history
//! (rustyline) on its own thread, answers printed above the prompt as they arrive.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustyline::{DefaultEditor, ExternalPrinter as _};
use sockit::client::{self, ClientError, ClientOptions};
use sockit::endpoint::{Endpoint, SocketStyle};
use sockit::framing::Framing;
use sockit::net::ClientSocket;
use sockit::render;
use tokio::sync::mpsc;

/// How long to wait for the last answers after Ctrl-D when no --timeout was given.
const FINAL_WAIT: Duration = Duration::from_secs(2);

/// The same for a datagram server, which cannot say it is done: only answers already on their
/// way are worth waiting for.
const FINAL_DATAGRAM_WAIT: Duration = Duration::from_millis(300);

/// How long a raw stream's partial line waits for the rest before it is shown as it is.
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(250);

/// How long the prompt thread gets to show the last answers when the server closes.
const PRINTER_FLUSH: Duration = Duration::from_millis(150);

pub async fn interactive(
    socket: ClientSocket,
    opts: &ClientOptions,
    endpoint: &Endpoint,
    route: &str,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let tls = match &socket {
        ClientSocket::Conn(sockit::net::Conn::Stream(sockit::net::Stream::Tls(s))) => {
            format!("{}; ", s.version().unwrap_or("TLS"))
        }
        _ => String::new(),
    };
    let (mut writer, mut reader) = client::split(socket, opts);
    let mut editor = DefaultEditor::new()?;
    let mut printer = editor.create_external_printer()?;
    // rustyline restores the terminal when readline returns, but the server may close while
    // the prompt waits; the guard restores it on every way out of this function.
    let _terminal = TerminalGuard::save();
    // Under raw framing a stream has no messages, only bytes: Enter sends the line with its
    // newline, as netcat does, and answers are shown as lines, however the reads cut them.
    // With --per-read, datagrams carry bytes as they are too.
    let raw_bytes = match endpoint.style() {
        SocketStyle::Stream => opts.framing == Framing::Raw,
        SocketStyle::Datagram | SocketStyle::Seqpacket => opts.packet_per_read,
    };
    if !quiet {
        let empty = if raw_bytes {
            "each line is sent with its newline"
        } else if opts.framing.carries_empty_messages() {
            "an empty line sends an empty message"
        } else {
            "an empty line sends nothing"
        };
        let framing = match endpoint.style() {
            SocketStyle::Stream => format!("framing {}", opts.framing),
            SocketStyle::Seqpacket => "each line one packet".to_owned(),
            SocketStyle::Datagram => "each line one datagram".to_owned(),
        };
        note!("connected to {endpoint}{route} ({tls}{framing}; {empty}); Ctrl-D quits");
    }
    let (tx, mut lines) = mpsc::channel::<String>(16);
    // A plain thread, not a runtime task: readline blocks, and the process may end while it does.
    // Set by the prompt thread the moment it stops reading lines: answers the printer is
    // handed after that would never be shown (rustyline prints them only while it reads).
    let prompt_closed = Arc::new(AtomicBool::new(false));
    let closed_by_thread = prompt_closed.clone();
    // Set when the prompt ended with Ctrl-C: the user wants out now, as from netcat (status
    // 130), not the last answers that Ctrl-D waits for.
    let interrupted = Arc::new(AtomicBool::new(false));
    let interrupted_by_thread = interrupted.clone();
    std::thread::spawn(move || {
        // Ctrl-D, Ctrl-C, or a terminal that went away end the loop; dropping `tx` tells the
        // other side.
        loop {
            match editor.readline(">> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    interrupted_by_thread.store(true, Ordering::SeqCst);
                    break;
                }
                Err(_) => break,
            }
        }
        closed_by_thread.store(true, Ordering::SeqCst);
    });
    let render = |msg: &[u8]| match opts.framing {
        Framing::Raw => String::from_utf8_lossy(msg.strip_suffix(b"\n").unwrap_or(msg)).into_owned(),
        _ => render::escaped_line(msg),
    };
    let peer_can_close = writer.peer_can_close();
    // Sending and receiving run at the same time: a send that waits for room must never stop
    // answers from being shown (and read), or both sides could wait for each other.
    let sending = async {
        while let Some(mut line) = lines.recv().await {
            if raw_bytes {
                line.push('\n');
            } else if line.is_empty() && !opts.framing.carries_empty_messages() {
                continue;
            }
            writer.send(line.as_bytes()).await?;
        }
        // Ctrl-D: say we are done; answers still on their way are shown below.
        writer.close().await
    };
    let receiving = async {
        // While the prompt reads, its printer shows answers above the line being typed; once
        // it is gone (or refuses), answers are printed plainly. The newline matters: between
        // two prompts rustyline writes the text as it is, and without one the next prompt's
        // redraw would erase it.
        let mut show = |text: String| {
            let line = text + "\n";
            if prompt_closed.load(Ordering::SeqCst) || printer.print(line.clone()).is_err() {
                // A terminal that hung up is not worth a panic (`print!` would panic).
                let mut out = std::io::stdout();
                let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
            }
        };
        // Raw bytes wait here until their line is complete, or until no more come
        // for a moment (a prompt such as "login: " has no newline); a character cut by a read
        // waits for its other bytes either way.
        let mut pending = Vec::new();
        // Set when all that is pending is a character cut short, shown at the next bytes.
        let mut cut = false;
        loop {
            let next = if pending.is_empty() || cut {
                Some(reader.recv().await?)
            } else {
                tokio::time::timeout(PARTIAL_LINE_WAIT, reader.recv()).await.ok().transpose()?
            };
            cut = false;
            match next {
                Some(Some(msg)) if raw_bytes => {
                    pending.extend_from_slice(&msg);
                    if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                        let rest = pending.split_off(end + 1);
                        show(render(&pending));
                        pending = rest;
                    }
                }
                Some(Some(msg)) => show(render(&msg)),
                Some(None) => {
                    if !pending.is_empty() {
                        show(render(&pending));
                    }
                    break;
                }
                // A pause: show what came, but keep a character cut short for its other bytes.
                None => {
                    let rest = pending.split_off(render::whole_chars(&pending));
                    if !pending.is_empty() {
                        show(render(&pending));
                    }
                    cut = !rest.is_empty();
                    pending = rest;
                }
            }
        }
        Ok::<(), ClientError>(())
    };
    // An error ends the program with a line on stderr; the abandoned prompt (on stdout) is
    // erased first so that the line stands on its own, not after ">> ". The prompt thread may
    // be drawing the next prompt just then (after the line whose send failed): it gets a
    // moment, as when the server closes, so that the erasing comes after it.
    async fn fail(terminal: TerminalGuard, e: ClientError) -> anyhow::Result<ExitCode> {
        tokio::time::sleep(PRINTER_FLUSH).await;
        drop(terminal);
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\r\x1b[K").and_then(|()| out.flush());
        Err(e.into())
    }
    tokio::pin!(sending, receiving);
    tokio::select! {
        r = &mut receiving => {
            if let Err(e) = r {
                return fail(_terminal, e).await;
            }
            // The printer hands answers to the prompt thread, which shows them a moment later;
            // the server's last words (qa's "bye") would be lost if we restored the terminal
            // and left at once.
            tokio::time::sleep(PRINTER_FLUSH).await;
            drop(_terminal);
            if !quiet {
                // Carriage return and erase-line: replace the abandoned prompt.
                note!("\r\x1b[Kconnection closed by the server");
            }
            return Ok(ExitCode::SUCCESS);
        }
        s = &mut sending => {
            if let Err(e) = s {
                return fail(_terminal, e).await;
            }
        }
    }
    if interrupted.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(130));
    }
    let wait = opts.answer_timeout.unwrap_or(if peer_can_close { FINAL_WAIT } else { FINAL_DATAGRAM_WAIT });
    let _ = tokio::time::timeout(wait, receiving).await;
    Ok(ExitCode::SUCCESS)
}

/// Saves the terminal's settings and puts them back when dropped.
struct TerminalGuard(Option<libc::termios>);

impl TerminalGuard {
    fn save() -> TerminalGuard {
        // SAFETY: tcgetattr writes a termios into the zeroed value we own; fd 0 is only read.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } == 0;
        TerminalGuard(ok.then_some(t))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores settings read from the same descriptor by `save`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
        }
    }
}
