//! `sockit relay FROM TO`: checks that the two ends and the faults fit together, binds FROM,
//! and runs the library's relay service on it with the same log and summary as `serve`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use sockit::endpoint::{Endpoint, Host, SocketStyle};
use sockit::fault::Faults;
use sockit::net::{self, BindOptions};
use sockit::relay::{RelayConfig, TrafficLog};
use sockit::server::ServerConfig;
use sockit::service::Service;
use tokio_util::sync::CancellationToken;

use crate::Usage;
use crate::cli::RelayArgs;

pub async fn run(args: RelayArgs, quiet: bool, verbose: u8) -> anyhow::Result<ExitCode> {
    // Under inetd, stdout and stderr are the client's socket: nothing of ours may go there.
    let quiet = quiet || (args.inetd && verbose == 0);
    if args.inetd && verbose == 0 && crate::serve::stderr_is_stdin_socket() {
        crate::STDERR_IS_THE_PEER.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let (from, to) = match (args.inetd, &args.from, &args.to) {
        (false, Some(from), Some(to)) => (crate::endpoint(from)?, crate::endpoint(to)?),
        (false, _, _) => return Err(Usage("relay needs FROM and TO (or --inetd TO)".into()).into()),
        // clap puts the one word in FROM.
        (true, Some(to), None) => (crate::serve::stdin_endpoint()?, crate::endpoint(to)?),
        (true, _, _) => {
            return Err(
                Usage("--inetd relays the client on stdin and takes only TO: sockit relay --inetd TO".into()).into()
            );
        }
    };
    // Checked at start, not at each client's connect: every client would fail.
    if let Endpoint::Ip { port: 0, .. } = to {
        return Err(Usage(format!("{to}: a relay's target needs its port; port 0 cannot be connected to")).into());
    }
    let datagrams = check_styles(&from, &to)?;
    let faults = faults(&args)?;
    if datagrams && let Some(name) = faults.stream_only() {
        return Err(Usage(format!("{name} applies to connections; {from} relays datagrams")).into());
    }
    if !datagrams && let Some(name) = faults.datagram_only() {
        return Err(Usage(format!(
            "{name} applies to datagrams; {from} relays connections, which do not lose data (try --reset-after)"
        ))
        .into());
    }
    net::check_address(&to)?;
    crate::serve::threads_apply(args.threads, &from)?;
    let backlog = crate::serve::backlog_apply(args.backlog, &from)?;
    let access = crate::serve::access_list(&args.access, &from)?;
    let tls_server = crate::tls::server(&args.tls_server, &from)?;
    let tls_client = crate::tls::client(&args.tls, &to)?;
    let log = traffic_log(&args)?;

    let shutdown = CancellationToken::new();
    let cut_now = CancellationToken::new();
    crate::serve::spawn_signal_watch(shutdown.clone(), cut_now.clone(), args.grace, quiet)?;
    crate::raise_fd_limit();
    let bind_opts = BindOptions {
        backlog,
        unix_mode: crate::serve::unix_mode(args.mode, &from)?,
        tls: tls_server.as_ref().map(|(t, _)| t.clone()),
        listeners: crate::serve::server_threads(args.threads),
    };
    let socket = net::bind(&from, &bind_opts).await?;
    if targets_itself(socket.local_endpoint(), socket.is_dual_stack(), &to).await {
        return Err(Usage(format!(
            "{to} is this relay's own address ({}): all it relays would come back to it, again and again",
            socket.local_endpoint()
        ))
        .into());
    }
    if !quiet {
        let both = if socket.is_dual_stack() { " (IPv4 and IPv6)" } else { "" };
        let how = if !faults.is_empty() {
            format!("faults: {}", faults.describe())
        } else if datagrams {
            "a session per client".to_owned()
        } else if args.no_splice
            || log.is_some()
            || from.style() != SocketStyle::Stream
            || to.style() != SocketStyle::Stream
            || from.is_tls()
            || to.is_tls()
        {
            "copying".to_owned()
        } else {
            "splice".to_owned()
        };
        note!("sockit: relaying {}{both} to {to} ({how}); Ctrl-C stops", socket.local_endpoint());
        if let Some((_, line)) = &tls_server {
            note!("{line}");
        }
    }
    let mut relay = RelayConfig::new(to);
    relay.connect_timeout = args.connect_timeout;
    relay.splice = !args.no_splice;
    relay.faults = faults;
    relay.log = log;
    relay.tls = tls_client;
    let config = ServerConfig {
        max_conns: args.max_conns.map(|n| n as usize),
        idle_timeout: args.idle_timeout,
        grace: args.grace,
        access,
        max_per_source: args.access.max_per_source.map(|n| n as usize),
        own_threads: true,
        ..ServerConfig::new(Service::Relay(Arc::new(relay)))
    };
    let talk = crate::serve::Talk::new(quiet, verbose);
    crate::serve::run_logged(socket, config, shutdown, cut_now, datagrams, talk, || Ok(())).await
}

/// Whether `to` is the relay's own listening address (`local`, as the bound socket names it):
/// then every connection relayed would arrive again and make another, until the descriptors
/// ran out. A name is resolved for the check; one that does not resolve is left to fail later.
async fn targets_itself(local: &str, dual_stack: bool, to: &Endpoint) -> bool {
    let Some(Ok(local)) = local.split_whitespace().next().map(Endpoint::parse) else { return false };
    match (&local, to) {
        (Endpoint::Unix { addr: ours, .. }, Endpoint::Unix { addr, .. }) => ours == addr,
        (Endpoint::Ip { host: ours, port: our_port, .. }, Endpoint::Ip { port, .. }) if our_port == port => {
            // Where the relay's connections would go. Bounded: a slow resolver is left to the
            // first connection to meet.
            let Ok(Ok(targets)) = tokio::time::timeout(RESOLVE_LIMIT, net::connect_addresses(to)).await else {
                return false;
            };
            // Read once, and only if a wildcard listener needs it.
            let interfaces = std::cell::OnceCell::new();
            targets.iter().map(|a| a.ip()).any(|ip| match ours {
                Host::Ip(ours) if !ours.is_unspecified() => *ours == ip,
                // Every local address of its family (both, on a dual-stack socket).
                Host::Ip(any) if !dual_stack && any.is_ipv4() != ip.is_ipv4() => false,
                // This host's: loopback, the wildcard, or an interface's.
                _ => {
                    ip.is_loopback() || ip.is_unspecified() || interfaces.get_or_init(interface_addresses).contains(&ip)
                }
            })
        }
        _ => false,
    }
}

/// How long the check waits for a name to resolve.
const RESOLVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The addresses of this host's interfaces (`getifaddrs`). Not a trial `bind`, which succeeds
/// for multicast and broadcast addresses, and for any address at all under
/// `net.ipv4.ip_nonlocal_bind`. Empty if the list cannot be read: then only loopback and
/// wildcard targets are caught.
fn interface_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs frees, once, below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: a node of the list getifaddrs made; each address, when present, is a sockaddr
        // of the family it names, so the casts read what is there.
        unsafe {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        // In network order: its bytes in memory are the address's.
                        found.push(IpAddr::from(a.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::from(a.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
    }
    // SAFETY: the list getifaddrs returned, not used after this.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// Connections relay to connections, datagrams to datagrams: says which, or why not.
fn check_styles(from: &Endpoint, to: &Endpoint) -> anyhow::Result<bool> {
    let datagram = |e: &Endpoint| e.style() == SocketStyle::Datagram;
    match (datagram(from), datagram(to)) {
        (false, false) => Ok(false),
        (true, true) => Ok(true),
        (f, _) => {
            let kind = |d: bool| if d { "datagrams" } else { "connections" };
            Err(Usage(format!(
                "cannot relay {from} ({}) to {to} ({}): both ends must be connected sockets (tcp, unix:, \
                 unix-seqpacket:) or both datagram sockets (udp, unix-dgram:)",
                kind(f),
                kind(!f)
            ))
            .into())
        }
    }
}

fn faults(args: &RelayArgs) -> anyhow::Result<Faults> {
    let seed = args.seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        // Without the system's randomness the time will do: the seed is shown either way.
        if getrandom::fill(&mut b).is_err() {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            b = (t.as_nanos() as u64).to_le_bytes();
        }
        // Small enough to read out and type back.
        u64::from_le_bytes(b) % 1_000_000
    });
    let faults = Faults {
        delay: args.delay.unwrap_or_default(),
        jitter: args.jitter.unwrap_or_default(),
        rate: args.rate.map(|r| r as u64),
        chunk: args.chunk,
        reset_after: args.reset_after,
        drop: args.drop.unwrap_or(0.0),
        duplicate: args.duplicate.unwrap_or(0.0),
        reorder: args.reorder.unwrap_or(0.0),
        seed,
        direction: args.faults_on,
    };
    if faults.is_empty() && (args.seed.is_some() || args.faults_on != sockit::fault::FaultDirection::Both) {
        return Err(Usage("--seed and --faults-on go with a fault (--delay, --drop, …)".into()).into());
    }
    Ok(faults)
}

fn traffic_log(args: &RelayArgs) -> anyhow::Result<Option<Arc<TrafficLog>>> {
    let out: Box<dyn std::io::Write + Send> = match &args.log {
        None if !args.hex => return Ok(None),
        None => Box::new(std::io::stderr()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stderr()),
        Some(p) => {
            let file =
                std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| {
                    Usage(format!("cannot open --log {}: {}", p.display(), sockit::render::io_error(&e)))
                })?;
            Box::new(std::io::BufWriter::new(file))
        }
    };
    Ok(Some(Arc::new(TrafficLog::new(out, args.hex))))
}
