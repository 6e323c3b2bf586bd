//! `sockit connect` and `sockit send`: connect (and, when asked, authenticate to a `spawn`
//! server), then run the interactive prompt, the pipe, or the one-shot exchange from the
//! library's client.

use std::io::IsTerminal;
use std::process::ExitCode;

use sockit::auth::{HandshakeError, TOKEN_ENV, Token};
use sockit::client::{self, ClientError, ClientOptions};
use sockit::endpoint::{Endpoint, SocketStyle};
use sockit::framing::Framing;
use sockit::net::{self, ClientSocket, Conn};
use sockit::proto::ProtoError;
use sockit::render;

use crate::cli::{ClientArgs, ConnectArgs, SendArgs};
use crate::{OutputClosed, Usage};

fn options(
    endpoint: &Endpoint,
    args: &ClientArgs,
    answer_timeout: Option<std::time::Duration>,
) -> anyhow::Result<ClientOptions> {
    Ok(ClientOptions {
        framing: args.framing.for_endpoint(endpoint)?,
        max_frame: args.framing.max_frame(),
        answer_timeout,
        packet_per_read: false,
    })
}

/// Turns a failure to write our own output into a quiet exit, and adds the endpoint to others.
fn client_error(e: ClientError, endpoint: &Endpoint) -> anyhow::Error {
    match e {
        ClientError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe => OutputClosed.into(),
        ClientError::DatagramRefused => net::NetError::Refused { endpoint: endpoint.to_string() }.into(),
        ClientError::Io(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => anyhow::anyhow!(
            "{endpoint}: cannot send: the message is longer than one datagram can carry (UDP: 65,507 bytes over IPv4, 65,527 over IPv6; a Unix datagram socket: its send buffer) (hint: a stream endpoint carries any length)"
        ),
        ClientError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => anyhow::anyhow!(
            "{endpoint}: the server reset the connection (hint: access rules, a connection limit or a relay's unreachable target do this at once, and a message the server cannot take, in another --framing or over its --max-frame, after it; the server's log says why)"
        ),
        ClientError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe => anyhow::anyhow!(
            "{endpoint}: the server closed the connection before it had read everything sent, and answered nothing (hint: the server's log says why)"
        ),
        other => anyhow::Error::new(other).context(format!("{endpoint}")),
    }
}

pub async fn connect(args: ConnectArgs, quiet: bool, verbose: bool) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    let token = handshake_token(&args, &endpoint)?;
    if let Some(text) = &args.send {
        let timeout = args.timeout.unwrap_or(std::time::Duration::from_secs(5));
        return send_text(&endpoint, &args.client, token.as_ref(), text, timeout, false, verbose).await;
    }
    if args.per_read && endpoint.style() == SocketStyle::Stream {
        return Err(Usage(format!(
            "--per-read applies to datagram and seqpacket sockets; {endpoint} is a stream, which carries bytes as they are already (the default --framing raw)"
        ))
        .into());
    }
    let opts = ClientOptions { packet_per_read: args.per_read, ..options(&endpoint, &args.client, args.timeout)? };
    let socket = open(&endpoint, &args.client, token.as_ref()).await?;
    // The prompt needs a terminal to read from and one to draw on; with either redirected,
    // the pipe is what a user wants (`sockit connect … > answers.txt`).
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        // -v: the addresses go in the prompt's own "connected to" line.
        let route = if verbose { route(&socket) } else { String::new() };
        return crate::terminal::interactive(socket, &opts, &endpoint, &route, quiet).await;
    }
    if verbose {
        say_connected(&socket, &endpoint);
    }
    let started = std::time::Instant::now();
    let moved = client::pipe(socket, tokio::io::stdin(), tokio::io::stdout(), &opts)
        .await
        .map_err(|e| client_error(e, &endpoint))?;
    if verbose {
        note!(
            "sockit: {} sent, {} received in {:.2}s",
            render::bytes(moved.sent),
            render::bytes(moved.received),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The token for the handshake with a `spawn` server, only when one is asked for: `connect`
/// without --token-file or --auth is a plain client that never speaks first.
fn handshake_token(args: &ConnectArgs, endpoint: &Endpoint) -> anyhow::Result<Option<Token>> {
    if args.token_file.is_none() && !args.auth {
        return Ok(None);
    }
    if endpoint.style() != SocketStyle::Stream {
        return Err(Usage(format!(
            "{endpoint} is not a stream socket (tcp or unix:); --token-file and --auth are for spawn servers"
        ))
        .into());
    }
    match crate::exec::load_token(args.token_file.as_deref())? {
        Some(token) => Ok(Some(token)),
        None => {
            Err(Usage(format!("--auth takes the token from ${TOKEN_ENV}, which is not set (or use --token-file FILE)"))
                .into())
        }
    }
}

/// Where a connection reached and where from, for `-v` (what `nc -v` shows): ` at 127.0.0.1:7000
/// from 127.0.0.1:51334` for IP, nothing for Unix sockets (their path is the endpoint).
fn route(socket: &ClientSocket) -> String {
    socket.ip_addresses().map(|(ours, theirs)| format!(" at {theirs} from {ours}")).unwrap_or_default()
}

/// `-v`'s line on a new connection.
fn say_connected(socket: &ClientSocket, endpoint: &Endpoint) {
    // A datagram socket's connect only picks its peer: nothing has answered yet.
    let what = if endpoint.style() == SocketStyle::Datagram { "sending to" } else { "connected to" };
    note!("sockit: {what} {endpoint}{}", route(socket));
}

/// Connects; with a token, on a stream socket, and authenticates to a `spawn` server before
/// anything else is sent or received.
async fn open(endpoint: &Endpoint, args: &ClientArgs, token: Option<&Token>) -> anyhow::Result<ClientSocket> {
    let tls = crate::tls::client(&args.tls, endpoint)?;
    let Some(token) = token else {
        return Ok(net::connect_with(endpoint, args.connect_timeout, tls.as_deref()).await?);
    };
    let mut stream = crate::exec::connect_stream(endpoint, args.connect_timeout, tls.as_deref()).await?;
    if let Err(e) = sockit::spawn::authenticate(&mut stream, token).await {
        // A server that never says HELLO is likely a spawn server without a token, whose program
        // speaks (or closes) first.
        let no_hello = matches!(
            e,
            HandshakeError::Deadline
                | HandshakeError::Silent { .. }
                | HandshakeError::ClosedSilently { .. }
                | HandshakeError::Foreign { .. }
                | HandshakeError::Closed
                | HandshakeError::Unexpected { .. }
        ) || matches!(&e, HandshakeError::Proto(p) if !matches!(p, ProtoError::Io(_)));
        let hint = if no_hello {
            " (hint: a spawn server without a token takes no handshake; leave --token-file and --auth out)"
        } else {
            ""
        };
        anyhow::bail!("{endpoint}: {e}{hint}");
    }
    // On TCP the server cannot tell a closed connection from a half-closed one, so a client that
    // dies (Ctrl-C, kill) while the program is silent would leave it running. Closing with a
    // reset tells the server at once; the end of our input is still an orderly half-close.
    stream.set_linger_zero();
    Ok(ClientSocket::Conn(Conn::Stream(stream)))
}

pub async fn send(args: SendArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    send_text(&endpoint, &args.client, None, &args.text, args.timeout, args.no_wait, verbose).await
}

async fn send_text(
    endpoint: &Endpoint,
    args: &ClientArgs,
    token: Option<&Token>,
    text: &str,
    timeout: std::time::Duration,
    no_wait: bool,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let opts = options(endpoint, args, Some(timeout))?;
    if text.is_empty() && opts.framing == Framing::Raw && endpoint.style() == SocketStyle::Stream {
        return Err(Usage(format!(
            "an empty TEXT is no bytes at all on {endpoint} under raw framing (--framing line sends an empty line)"
        ))
        .into());
    }
    // Under line framing each line is a message with an answer of its own, and `send` reads
    // one: the answers to the others would be lost.
    if text.contains('\n') && opts.framing == Framing::Line && endpoint.style() == SocketStyle::Stream {
        return Err(Usage(
            "TEXT has a newline, which ends a message under --framing line, and send waits for one answer (hint: `printf 'a\\nb\\n' | sockit connect ENDPOINT --framing line` sends each line and prints every answer)".into(),
        )
        .into());
    }
    let socket = open(endpoint, args, token).await?;
    if verbose {
        say_connected(&socket, endpoint);
    }
    let mut out = LastByte { inner: tokio::io::stdout(), last: None };
    client::send(socket, text.as_bytes(), &opts, !no_wait, &mut out).await.map_err(|e| match e {
        // A server that never answers (print, discard) is what --no-wait is for.
        ClientError::NoAnswer(wait) => anyhow::anyhow!(
            "{endpoint}: no answer within {} (the message was sent; hint: --timeout waits longer, and --no-wait \
             sends without waiting, for a server that answers nothing, as print and discard)",
            humantime::format_duration(wait)
        ),
        ClientError::ClosedWithoutAnswer => anyhow::anyhow!(
            "{endpoint}: no answer: the server closed the connection without answering (hint: --no-wait sends \
             without waiting, for a server that answers nothing, as print and discard)"
        ),
        e => client_error(e, endpoint),
    })?;
    // A framed answer is a message, printed as a line; a raw one is printed as it came, with a
    // newline added only for a person at a terminal.
    let as_line =
        opts.framing != Framing::Raw || endpoint.style() != SocketStyle::Stream || std::io::stdout().is_terminal();
    if !no_wait && as_line && out.last != Some(b'\n') {
        crate::write_stdout(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A writer that remembers the last byte written through it.
struct LastByte<W> {
    inner: W,
    last: Option<u8>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for LastByte<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let wrote = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n @ 1..)) = wrote {
            this.last = Some(buf[n - 1]);
        }
        wrote
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
