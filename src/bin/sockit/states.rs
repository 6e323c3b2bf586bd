//! `sockit states`: the library's socket tables, filtered by the flags, printed as tables, as
//! one JSON object, or as a live screen (`watch.rs`).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use serde::Serialize;
use sockit::diag::{self, AcceptQueue, InetSocket, ListenCounters, Owner, Processes, TcpState, UnixSocket, UnixType};

use crate::Usage;
use crate::cli::StatesArgs;

/// Which sockets to show: the "high" form of the flags.
#[derive(Debug, Clone)]
pub struct Query {
    pub tcp: bool,
    pub udp: bool,
    pub unix: bool,
    pub port: Option<u16>,
    /// Empty: every state.
    pub states: Vec<TcpState>,
    pub listening: bool,
}

impl Query {
    fn from_args(args: &StatesArgs) -> Result<Query, Usage> {
        let q = Query {
            tcp: args.tcp || !(args.udp || args.unix),
            udp: args.udp,
            unix: args.unix,
            port: args.port,
            states: args.state.clone(),
            listening: args.listening,
        };
        if q.port.is_some() && !q.tcp && !q.udp {
            return Err(Usage("--port applies to TCP and UDP sockets; Unix sockets have no ports".into()));
        }
        if args.watch && (q.udp || q.unix) {
            return Err(Usage("--watch shows TCP sockets; leave out --udp and --unix".into()));
        }
        Ok(q)
    }

    fn keeps_state(&self, state: TcpState, datagram: bool) -> bool {
        if self.listening {
            return state == TcpState::Listen || (datagram && state == TcpState::Closed);
        }
        self.states.is_empty() || self.states.contains(&state)
    }

    fn keeps_inet(&self, s: &InetSocket, datagram: bool) -> bool {
        let port_ok = self.port.is_none_or(|p| s.local.port() == p || s.peer.port() == p);
        port_ok && self.keeps_state(s.state, datagram)
    }

    fn keeps_unix(&self, s: &UnixSocket) -> bool {
        self.keeps_state(s.state, s.kind == UnixType::Dgram)
    }
}

/// The sockets the query selects, with their owners and the counters, read at one moment.
pub struct Snapshot {
    pub tcp: Option<Vec<InetSocket>>,
    pub udp: Option<Vec<InetSocket>>,
    pub unix: Option<Vec<UnixSocket>>,
    pub processes: Processes,
    pub counters: Option<ListenCounters>,
}

impl Snapshot {
    /// Reads the kernel's tables (blocking: a few system calls and a walk of /proc).
    pub fn take(q: &Query) -> anyhow::Result<Snapshot> {
        let tcp = match q.tcp {
            true => Some(diag::tcp_sockets()?.into_iter().filter(|s| q.keeps_inet(s, false)).collect()),
            false => None,
        };
        let udp = match q.udp {
            true => Some(diag::udp_sockets()?.into_iter().filter(|s| q.keeps_inet(s, true)).collect()),
            false => None,
        };
        let unix = match q.unix {
            true => Some(diag::unix_sockets()?.into_iter().filter(|s| q.keeps_unix(s)).collect()),
            false => None,
        };
        let counters = if q.tcp { Some(ListenCounters::read()?) } else { None };
        Ok(Snapshot { tcp, udp, unix, processes: Processes::scan(), counters })
    }

    /// How many TCP sockets are in each state, every state listed.
    pub fn counts(&self) -> Vec<(TcpState, usize)> {
        let tcp = self.tcp.as_deref().unwrap_or_default();
        TcpState::ALL.iter().map(|&st| (st, tcp.iter().filter(|s| s.state == st).count())).collect()
    }

    /// Every listener shown (TCP, then Unix) with its accept queue.
    pub fn listeners(&self) -> Vec<Listener<'_>> {
        let tcp = self.tcp.iter().flatten().filter_map(|s| {
            let queue = s.accept_queue()?;
            let owners = self.processes.owners(s.inode);
            Some(Listener { proto: "tcp", local: show_addr(s.local), queue, full: queue.is_full(), owners })
        });
        let unix = self.unix.iter().flatten().filter_map(|s| {
            let queue = s.accept_queue()?;
            let local = s.name.clone().unwrap_or_else(|| "*".into());
            let owners = self.processes.owners(s.inode);
            Some(Listener { proto: "unix", local, queue, full: queue.is_full(), owners })
        });
        tcp.chain(unix).collect()
    }
}

/// A listening socket and its accept queue.
#[derive(Serialize)]
pub struct Listener<'a> {
    pub proto: &'static str,
    pub local: String,
    #[serde(flatten)]
    pub queue: AcceptQueue,
    /// Whether the kernel drops new connections now.
    pub full: bool,
    #[serde(rename = "processes")]
    pub owners: &'a [Owner],
}

pub async fn run(args: StatesArgs) -> anyhow::Result<ExitCode> {
    let query = Query::from_args(&args)?;
    if args.watch {
        if !std::io::stdout().is_terminal() {
            return Err(Usage(
                "--watch needs a terminal on stdout (leave it out for one snapshot, or add --json for scripts)".into(),
            )
            .into());
        }
        return crate::watch::run(query).await;
    }
    let snap = {
        let q = query.clone();
        tokio::task::spawn_blocking(move || Snapshot::take(&q)).await??
    };
    let out = if args.json { json(&snap)? + "\n" } else { text(&snap) };
    crate::write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Text

/// An address as `ss` writes it: `127.0.0.1:7000`, `[::1]:7000`, port 0 as `*`.
pub fn show_addr(a: SocketAddr) -> String {
    let ip = match a {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    match a.port() {
        0 => format!("{ip}:*"),
        p => format!("{ip}:{p}"),
    }
}

/// The owners of a socket, one per process: `4242/sockit`.
pub fn show_owners(owners: &[Owner]) -> String {
    let mut out = String::new();
    let mut last = None;
    for o in owners {
        if last == Some(o.pid) {
            continue;
        }
        last = Some(o.pid);
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{}/{}", o.pid, o.name);
    }
    out
}

/// A state in a datagram table: not connected is `UNCONN`, as `ss` writes it.
fn datagram_state(state: TcpState) -> &'static str {
    if state == TcpState::Closed { "UNCONN" } else { state.name() }
}

/// Lays out rows in columns; the columns named in `right` are right-aligned. The last column is
/// not padded.
fn columns(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = width[i];
            if i + 1 == row.len() && !right.contains(&i) {
                line.push_str(cell);
            } else if right.contains(&i) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn inet_table(socks: &[InetSocket], procs: &Processes, datagram: bool) -> String {
    let rows: Vec<Vec<String>> = socks
        .iter()
        .map(|s| {
            vec![
                if datagram { datagram_state(s.state).to_owned() } else { s.state.name().to_owned() },
                s.recv_q.to_string(),
                s.send_q.to_string(),
                show_addr(s.local),
                show_addr(s.peer),
                show_owners(procs.owners(s.inode)),
            ]
        })
        .collect();
    columns(&["State", "Recv-Q", "Send-Q", "Local", "Peer", "Process"], &rows, &[1, 2])
}

fn unix_table(socks: &[UnixSocket], procs: &Processes) -> String {
    let rows: Vec<Vec<String>> = socks
        .iter()
        .map(|s| {
            vec![
                s.kind.to_string(),
                datagram_state(s.state).to_owned(),
                s.recv_q.to_string(),
                s.send_q.to_string(),
                s.name.clone().unwrap_or_else(|| "*".into()),
                s.inode.to_string(),
                s.peer_inode.map_or_else(|| "*".into(), |p| p.to_string()),
                show_owners(procs.owners(s.inode)),
            ]
        })
        .collect();
    columns(&["Type", "State", "Recv-Q", "Send-Q", "Name", "Inode", "Peer", "Process"], &rows, &[2, 3, 5, 6])
}

/// One line of counts: `LISTEN 1, ESTABLISHED 4 (5 sockets)`, states with none left out.
pub fn counts_line(counts: &[(TcpState, usize)]) -> String {
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let some: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(st, n)| format!("{st} {n}")).collect();
    match total {
        0 => "no sockets".to_owned(),
        1 => format!("{} (1 socket)", some.join(", ")),
        _ => format!("{} ({total} sockets)", some.join(", ")),
    }
}

/// What each counter counts, in the order of [`ListenCounters::NAMES`].
pub const COUNTER_MEANINGS: [&str; 6] = [
    "SYN or final ACK found the accept queue full",
    "SYN or final ACK dropped at a listener, any reason",
    "SYN dropped: SYN queue full and cookies off",
    "SYN answered with a cookie, no state kept",
    "ACK with a valid cookie: a connection made",
    "ACK with a cookie that did not check out",
];

fn text(snap: &Snapshot) -> String {
    let mut out = String::new();
    let mut section = |title: &str, body: String| {
        if !out.is_empty() {
            out.push('\n');
        }
        if !title.is_empty() {
            out.push_str(title);
            out.push('\n');
        }
        out.push_str(&body);
    };
    let several = [snap.tcp.is_some(), snap.udp.is_some(), snap.unix.is_some()].iter().filter(|&&b| b).count() > 1;
    if let Some(tcp) = &snap.tcp {
        let mut body = inet_table(tcp, &snap.processes, false);
        let _ = writeln!(body, "\nTCP states: {}", counts_line(&snap.counts()));
        section(if several { "TCP" } else { "" }, body);
    }
    if let Some(udp) = &snap.udp {
        let body = inet_table(udp, &snap.processes, true);
        section(if several { "UDP" } else { "" }, body);
    }
    if let Some(unix) = &snap.unix {
        section(if several { "Unix" } else { "" }, unix_table(unix, &snap.processes));
    }
    let listeners = snap.listeners();
    if !listeners.is_empty() {
        let rows: Vec<Vec<String>> = listeners
            .iter()
            .map(|l| {
                let full = if l.full { " full" } else { "" };
                let queue = format!("{}/{}{full}", l.queue.depth, l.queue.backlog);
                let mut row = vec![l.local.clone(), queue, show_owners(l.owners)];
                if several {
                    row.insert(0, l.proto.to_owned());
                }
                row
            })
            .collect();
        let header: &[&str] = if several {
            &["Proto", "Listener", "Accept queue", "Process"]
        } else {
            &["Listener", "Accept queue", "Process"]
        };
        section("Listeners (accept queue: waiting/backlog; full at backlog + 1)", columns(header, &rows, &[]));
    }
    if let Some(c) = &snap.counters {
        let rows: Vec<Vec<String>> = ListenCounters::NAMES
            .iter()
            .zip(c.values())
            .zip(COUNTER_MEANINGS)
            .map(|((name, v), meaning)| vec![name.to_string(), v.to_string(), meaning.to_owned()])
            .collect();
        let body = columns(&["Counter", "Value", "What it counts"], &rows, &[1]);
        section("Listen and SYN-flood counters (this network namespace, since it was created)", body);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// JSON

#[derive(Serialize)]
struct InetRow<'a> {
    #[serde(flatten)]
    socket: &'a InetSocket,
    processes: &'a [Owner],
}

#[derive(Serialize)]
struct UnixRow<'a> {
    #[serde(flatten)]
    socket: &'a UnixSocket,
    processes: &'a [Owner],
}

/// State counts as a JSON object whose keys keep the RFC order.
struct Counts(Vec<(TcpState, usize)>);

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(st, n)| (st.name(), n)))
    }
}

#[derive(Serialize)]
struct Json<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<Vec<InetRow<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<Vec<InetRow<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unix: Option<Vec<UnixRow<'a>>>,
    listeners: Vec<Listener<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<&'a ListenCounters>,
}

fn json(snap: &Snapshot) -> anyhow::Result<String> {
    let p = &snap.processes;
    fn rows<'a>(socks: &'a Option<Vec<InetSocket>>, p: &'a Processes) -> Option<Vec<InetRow<'a>>> {
        socks.as_ref().map(|v| v.iter().map(|s| InetRow { socket: s, processes: p.owners(s.inode) }).collect())
    }
    let doc = Json {
        tcp: rows(&snap.tcp, p),
        counts: snap.tcp.as_ref().map(|_| Counts(snap.counts())),
        udp: rows(&snap.udp, p),
        unix: snap
            .unix
            .as_ref()
            .map(|v| v.iter().map(|s| UnixRow { socket: s, processes: p.owners(s.inode) }).collect()),
        listeners: snap.listeners(),
        counters: snap.counters.as_ref(),
    };
    Ok(serde_json::to_string(&doc)?)
}
