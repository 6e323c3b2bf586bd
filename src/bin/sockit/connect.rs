//! `sockit connect` and `sockit send`: connect, then run the interactive prompt, the pipe, or
//! the one-shot exchange from the library's client.

use std::io::IsTerminal;
use std::process::ExitCode;

use sockit::client::{self, ClientError, ClientOptions};
use sockit::endpoint::{Endpoint, SocketStyle};
use sockit::framing::Framing;
use sockit::net;

use crate::cli::{ClientArgs, ConnectArgs, SendArgs};
use crate::{OutputClosed, Usage};

fn options(
    endpoint: &Endpoint,
    args: &ClientArgs,
    answer_timeout: Option<std::time::Duration>,
) -> anyhow::Result<ClientOptions> {
    if endpoint.style() != SocketStyle::Stream && args.framing.framing != Framing::Raw {
        return Err(Usage(format!(
            "--framing {} applies to stream sockets; {endpoint} keeps its own message boundaries (leave --framing out)",
            args.framing.framing
        ))
        .into());
    }
    Ok(ClientOptions { framing: args.framing.framing, max_frame: args.framing.max_frame, answer_timeout })
}

/// Turns a failure to write our own output into a quiet exit, and adds the endpoint to others.
fn client_error(e: ClientError, endpoint: &Endpoint) -> anyhow::Error {
    match e {
        ClientError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe => OutputClosed.into(),
        ClientError::DatagramRefused => net::NetError::Refused { endpoint: endpoint.to_string() }.into(),
        other => anyhow::Error::new(other).context(format!("{endpoint}")),
    }
}

pub async fn connect(args: ConnectArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    if let Some(text) = &args.send {
        let timeout = args.timeout.unwrap_or(std::time::Duration::from_secs(5));
        return send_text(&endpoint, &args.client, text, timeout, false).await;
    }
    let opts = options(&endpoint, &args.client, args.timeout)?;
    let socket = net::connect(&endpoint, args.client.connect_timeout).await?;
    // The prompt needs a terminal to read from and one to draw on; with either redirected,
    // the pipe is what a user wants (`sockit connect … > answers.txt`).
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return crate::terminal::interactive(socket, &opts, &endpoint, quiet).await;
    }
    client::pipe(socket, tokio::io::stdin(), tokio::io::stdout(), &opts)
        .await
        .map_err(|e| client_error(e, &endpoint))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    send_text(&endpoint, &args.client, &args.text, args.timeout, args.no_wait).await
}

async fn send_text(
    endpoint: &Endpoint,
    args: &ClientArgs,
    text: &str,
    timeout: std::time::Duration,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let opts = options(endpoint, args, Some(timeout))?;
    let socket = net::connect(endpoint, args.connect_timeout).await?;
    let mut answer =
        client::send(socket, text.as_bytes(), &opts, !no_wait).await.map_err(|e| client_error(e, endpoint))?;
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // A framed answer is a message, printed as a line; a raw one is printed as it came, with a
    // newline added only for a person at a terminal.
    let as_line =
        opts.framing != Framing::Raw || endpoint.style() != SocketStyle::Stream || std::io::stdout().is_terminal();
    if as_line && !answer.ends_with(b"\n") {
        answer.push(b'\n');
    }
    crate::write_stdout(&answer)?;
    Ok(ExitCode::SUCCESS)
}
