//! sockit: a socket toolkit. This crate is the library under the `sockit` command: endpoints,
//! sockets over every family, framing, the services, the server and the client.
//!
//! The library never binds a fixed port, installs a signal handler, prints, or exits: entry
//! points take a bound socket and a cancellation token, and report through return values and
//! the [`server::Monitor`] trait.
//!
//! # Starting a server in your own program
//!
//! Bind any endpoint (port 0 picks a free port), run a service on it, and stop it with a token:
//!
//! ```
//! use sockit::{CancellationToken, endpoint::Endpoint, net, server, service::Service};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "tcp://127.0.0.1:0".parse()?;
//! let socket = net::bind(&endpoint, &net::BindOptions::default()).await?;
//! let address = socket.local_endpoint().trim_start_matches("tcp://").to_owned();
//!
//! let shutdown = CancellationToken::new();
//! let config = server::ServerConfig::new(Service::Upper);
//! let running = tokio::spawn(server::run(socket, config, shutdown.clone()));
//!
//! let mut client = tokio::net::TcpStream::connect(&address).await?;
//! client.write_all(b"helloworld").await?;
//! let mut answer = [0u8; 10];
//! client.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"HELLOWORLD");
//! drop(client);
//!
//! shutdown.cancel();
//! let summary = running.await?;
//! assert_eq!(summary.connections, 1);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

/// The longest duration any sockit option or configuration takes: a year is "forever" for a
/// socket, and the bound keeps every deadline computable (`now + duration` cannot overflow).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// `t` after `at`, on either clock. A library caller's configuration may say `Duration::MAX`
/// for "never": past what an instant can hold, that is [`MAX_DURATION`] after `at`, not a panic.
pub(crate) fn later<I: Clock>(at: I, t: std::time::Duration) -> I {
    at.checked(t).unwrap_or(at + MAX_DURATION)
}

/// The instants [`later`] works with: std's and tokio's.
pub(crate) trait Clock: Copy + std::ops::Add<std::time::Duration, Output = Self> {
    fn checked(self, t: std::time::Duration) -> Option<Self>;
}

impl Clock for std::time::Instant {
    fn checked(self, t: std::time::Duration) -> Option<Self> {
        self.checked_add(t)
    }
}

impl Clock for tokio::time::Instant {
    fn checked(self, t: std::time::Duration) -> Option<Self> {
        self.checked_add(t)
    }
}

/// What every entry point (a server, a relay, a bench run) stops on: tokio-util's token,
/// re-exported so that a program needs no tokio-util of its own to start and stop one.
pub use tokio_util::sync::CancellationToken;

pub mod acl;
pub mod auth;
pub mod bench;
pub mod chat;
pub mod child;
pub mod client;
pub mod diag;
pub mod endpoint;
pub mod exec;
pub mod fault;
pub mod files;
pub mod framing;
pub mod fsroot;
pub mod icmp;
pub mod inherit;
pub mod net;
pub mod ping;
pub mod proto;
pub mod relay;
pub mod render;
pub mod server;
pub mod service;
pub mod spawn;
mod stop;
pub mod tls;
