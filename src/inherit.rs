//! Inherited sockets: descriptors the parent process passed down, named by `fd://N` and
//! `fd://NAME` endpoints.
//!
//! Three kinds of parent do this. systemd socket activation passes listening (or, with
//! `Accept=yes`, connected) sockets as descriptors 3, 4, … and describes them in `LISTEN_PID`,
//! `LISTEN_FDS` and `LISTEN_FDNAMES`; inetd passes one connection as stdin (and stdout and
//! stderr); and any program can leave a socket open across `exec`. An inherited socket's family,
//! type and state are not in its endpoint text, only in the descriptor, so they are read from it
//! ([`probe`]): `SO_DOMAIN`, `SO_TYPE`, `SO_ACCEPTCONN`, the bound and the peer address.
//!
//! A descriptor is used in two steps. [`probe`] says what it is and touches nothing, so it can
//! run early to report a bad descriptor before anything starts. [`take`] takes ownership, once
//! per process: a second use of the same descriptor is an error, never two owners of one fd.
//! Taking makes the descriptor close-on-exec and non-blocking; stdin, stdout and stderr are
//! moved to a new number and replaced by `/dev/null`, so that the number 0, 1 or 2 never comes
//! back as some other socket that a stray write could reach.
//!
//! The systemd variables are read once, by [`init`] (the binary calls it before it starts any
//! thread) or else at the first use; this module never changes the environment, which is not
//! safe once threads run. The systemd descriptors are made close-on-exec when they are read, as
//! `sd_listen_fds` does, so that commands sockit runs do not inherit them.
//!
//! Only descriptors that really were inherited can be named: those open without close-on-exec
//! when [`init`] ran, at the start of `main`, and systemd's. A descriptor the program opened
//! itself has an owner already, and two owners of one descriptor means one closes it under the
//! other; the close-on-exec flag alone cannot tell (every descriptor Rust opens has it, but one
//! from `libc::socket` or a C library need not), so without `init` no number is taken at all.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use socket2::{Domain, SockRef, Type};

use crate::endpoint::{FdRef, SocketStyle, UnixAddr};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The most descriptors sockit accepts from `LISTEN_FDS`; more is taken for a corrupt variable.
const MAX_LISTEN_FDS: usize = 4096;

/// What systemd socket activation passed to this process, read from the environment once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// `LISTEN_PID` and `LISTEN_FDS` are not both set.
    None,
    /// The variables name another process: they were inherited from a parent that was
    /// activated, and the descriptors (if any) are not ours to interpret.
    OtherProcess {
        /// The pid `LISTEN_PID` names.
        listen_pid: String,
    },
    /// Descriptors `3 .. 3 + names.len()` were passed to this process.
    Ours {
        /// The name of each, from `LISTEN_FDNAMES`; `None` when that variable is not set.
        names: Option<Vec<String>>,
        /// How many descriptors were passed (`LISTEN_FDS`).
        count: usize,
    },
    /// The variables are there but malformed.
    Invalid {
        /// What is wrong.
        problem: String,
    },
}

impl Activation {
    fn from_env() -> Activation {
        let get = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
        let (pid, fds, names) = (get("LISTEN_PID"), get("LISTEN_FDS"), get("LISTEN_FDNAMES"));
        let (Some(pid), Some(fds)) = (pid, fds) else { return Activation::None };
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return Activation::OtherProcess { listen_pid: pid };
        }
        let count = match fds.parse::<usize>() {
            Ok(n) if n <= MAX_LISTEN_FDS => n,
            _ => return Activation::Invalid { problem: format!("LISTEN_FDS '{fds}' is not a count of descriptors") },
        };
        let names: Option<Vec<String>> = names.map(|n| n.split(':').map(str::to_owned).collect());
        if let Some(list) = &names
            && list.len() != count
        {
            return Activation::Invalid {
                problem: format!("LISTEN_FDNAMES has {} names for LISTEN_FDS={count} descriptors", list.len()),
            };
        }
        Activation::Ours { names, count }
    }

    fn systemd_fds(&self) -> std::ops::Range<RawFd> {
        match self {
            Activation::Ours { count, .. } => LISTEN_FDS_START..LISTEN_FDS_START + *count as RawFd,
            _ => 0..0,
        }
    }
}

/// The process-wide record: what systemd passed, what else was inherited, and which
/// descriptors are taken.
struct Registry {
    activation: Activation,
    /// The descriptors open without close-on-exec when [`init`] ran: the ones the parent left
    /// open. `None` when the registry was made by a first use instead, too late to tell.
    inherited: Mutex<Option<HashSet<RawFd>>>,
    /// Taken descriptors, with what they were, so that a second use fails and a later
    /// [`probe`] still answers after the socket is closed.
    taken: Mutex<HashMap<RawFd, Inherited>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::new(None))
}

impl Registry {
    fn new(inherited: Option<HashSet<RawFd>>) -> Registry {
        let activation = Activation::from_env();
        for fd in activation.systemd_fds() {
            // SAFETY: F_GETFD/F_SETFD on a descriptor number only change its flags; one that is
            // not open fails with EBADF and is left to be reported when it is used.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
        Registry { activation, inherited: Mutex::new(inherited), taken: Mutex::new(HashMap::new()) }
    }

    /// Whether `fd` was open without close-on-exec when [`init`] ran.
    fn was_inherited(&self, fd: RawFd) -> Option<bool> {
        self.inherited.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|set| set.contains(&fd))
    }
}

/// Records what the process inherited: the systemd variables, and the descriptors open without
/// close-on-exec. Call it first thing in `main`, before opening anything or starting threads:
/// `fd://N` names only a descriptor recorded here (or one systemd passed). Later calls do
/// nothing.
pub fn init() {
    REGISTRY.get_or_init(|| Registry::new(Some(open_without_cloexec())));
}

/// The descriptors now open without close-on-exec, from `/proc/self/fd` (or by trying each
/// number below 1024 where `/proc` is not mounted).
fn open_without_cloexec() -> HashSet<RawFd> {
    let inheritable = |fd: RawFd| {
        // SAFETY: F_GETFD only reads a descriptor's flags; a number that is not open is EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC == 0
    };
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect());
    // The directory's own descriptor is in the list, and close-on-exec: the flag leaves it out.
    listed.unwrap_or_else(|| (0..1024).collect()).into_iter().filter(|&fd| inheritable(fd)).collect()
}

/// What systemd socket activation passed to this process.
pub fn activation() -> &'static Activation {
    &registry().activation
}

/// The address family of an inherited socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockFamily {
    /// IPv4.
    Inet4,
    /// IPv6 (possibly dual-stack).
    Inet6,
    /// Unix domain.
    Unix,
}

/// What an inherited socket is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockState {
    /// A stream or seqpacket socket that accepts connections.
    Listening,
    /// Connected to a peer: one connection (inetd style), or a datagram socket with a fixed peer.
    Connected,
    /// Neither: a datagram socket that receives from anyone, or an idle stream socket.
    Unconnected,
}

/// An inherited socket as its descriptor describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// The descriptor number it was inherited as.
    pub fd: RawFd,
    /// How it was named (`fd://3`, `fd://web`).
    pub source: FdRef,
    /// IPv4, IPv6 or Unix.
    pub family: SockFamily,
    /// Stream, seqpacket or datagram.
    pub style: SocketStyle,
    /// Listening, connected or neither.
    pub state: SockState,
    /// The bound address as an endpoint string (`tcp://127.0.0.1:7000`, `unix:///run/x.sock`);
    /// `None` for an unnamed Unix socket (one end of a socketpair, say).
    pub address: Option<String>,
    /// An IPv6 socket on every address that takes IPv4 too.
    pub dual_stack: bool,
    local: bool,
}

impl Inherited {
    /// Whether it is a byte stream, a seqpacket or a datagram socket.
    pub fn style(&self) -> SocketStyle {
        self.style
    }

    /// Whether only this machine can reach it: a Unix socket, or one bound to a loopback address.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Whether it is a Unix-domain socket.
    pub fn is_unix(&self) -> bool {
        self.family == SockFamily::Unix
    }

    /// The address and where it came from, for people: `tcp://127.0.0.1:7000 (fd://3)`, or
    /// `fd://0 (an unnamed unix stream socket)`. The first word always parses as an endpoint.
    pub fn local_endpoint(&self) -> String {
        match &self.address {
            Some(a) => format!("{a} ({})", self.source),
            None => format!("{} (an unnamed {} socket)", self.source, self.kind_word()),
        }
    }

    /// `tcp`, `udp`, `unix stream`, `unix datagram` or `unix seqpacket`.
    fn kind_word(&self) -> &'static str {
        match (self.family, self.style) {
            (SockFamily::Unix, SocketStyle::Stream) => "unix stream",
            (SockFamily::Unix, SocketStyle::Datagram) => "unix datagram",
            (SockFamily::Unix, SocketStyle::Seqpacket) => "unix seqpacket",
            (_, SocketStyle::Datagram) => "udp",
            // Probing refuses seqpacket over IP (SCTP).
            (_, _) => "tcp",
        }
    }

    /// A phrase for messages: `a listening tcp socket`, `an unconnected udp socket`.
    pub fn describe(&self) -> String {
        let state = match self.state {
            SockState::Listening => "a listening",
            SockState::Connected => "a connected",
            SockState::Unconnected => "an unconnected",
        };
        format!("{state} {} socket", self.kind_word())
    }
}

/// Why an inherited descriptor cannot be used. Each message is one lower-case line that names
/// the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// Nothing is open under that number.
    #[error(
        "{endpoint} is not open (hint: sockit must be started with the socket as that descriptor: by systemd socket \
         activation, inetd, or a program that passes it)"
    )]
    NotOpen {
        /// The endpoint.
        endpoint: FdRef,
    },
    /// The descriptor is one this process opened, not one it was given.
    #[error(
        "{endpoint} was not passed to sockit: that descriptor is one sockit opened itself (hint: the parent must \
         leave the socket open across exec, without close-on-exec)"
    )]
    NotInherited {
        /// The endpoint.
        endpoint: FdRef,
    },
    /// The program never called [`init`], so no descriptor can be told to be inherited.
    #[error(
        "{endpoint}: the program did not record its inherited descriptors (sockit::inherit::init() must run at the \
         start of main), so no descriptor number can be taken as inherited; serve a socket the program made itself \
         with sockit::net::ServerSocket::from_socket"
    )]
    NotRecorded {
        /// The endpoint.
        endpoint: FdRef,
    },
    /// The descriptor is open but is not a socket.
    #[error("{endpoint} is not a socket (it is {what})")]
    NotASocket {
        /// The endpoint.
        endpoint: FdRef,
        /// What it is instead: `a regular file, /tmp/x`, `a pipe`, `a terminal`.
        what: String,
    },
    /// A socket sockit cannot use, or cannot use for this.
    #[error("{endpoint} is {what}; {need}")]
    Unusable {
        /// The endpoint.
        endpoint: FdRef,
        /// What it is: `a netlink socket`, `a listening tcp socket`.
        what: String,
        /// What was needed instead.
        need: &'static str,
    },
    /// The descriptor was already taken by an earlier use in this process.
    #[error("{endpoint} is already in use: an inherited socket can be used only once")]
    AlreadyTaken {
        /// The endpoint.
        endpoint: FdRef,
    },
    /// `fd://NAME`, but systemd passed nothing.
    #[error(
        "{endpoint}: no sockets were passed by systemd (LISTEN_FDS is not set; hint: start sockit from a .socket unit \
         with FileDescriptorName={name}, or name the descriptor by number: fd://3)"
    )]
    NoActivation {
        /// The endpoint.
        endpoint: FdRef,
        /// The name asked for.
        name: String,
    },
    /// `fd://NAME`, but the systemd variables are for another process.
    #[error(
        "{endpoint}: the systemd sockets are for process {listen_pid}, not this one ({ours}): LISTEN_PID does not \
         match, so the variables were inherited by accident"
    )]
    OtherProcess {
        /// The endpoint.
        endpoint: FdRef,
        /// The pid in `LISTEN_PID`.
        listen_pid: String,
        /// Our pid.
        ours: u32,
    },
    /// `fd://NAME`, but systemd passed no socket of that name.
    #[error("{endpoint}: systemd passed no socket named '{name}' ({})", passed_names(names))]
    NoSuchName {
        /// The endpoint.
        endpoint: FdRef,
        /// The name asked for.
        name: String,
        /// The names there are (`None`: `LISTEN_FDNAMES` is not set).
        names: Option<Vec<String>>,
    },
    /// `fd://NAME`, but several sockets have that name.
    #[error("{endpoint}: systemd passed {} sockets named '{name}'; name one by number: {}", fds.len(),
        fds.iter().map(|fd| format!("fd://{fd}")).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The endpoint.
        endpoint: FdRef,
        /// The name asked for.
        name: String,
        /// The descriptors with that name.
        fds: Vec<RawFd>,
    },
    /// The systemd variables are malformed.
    #[error("{endpoint}: cannot read the systemd variables: {problem}")]
    BadVariables {
        /// The endpoint.
        endpoint: FdRef,
        /// What is wrong.
        problem: String,
    },
    /// A system call on the descriptor failed.
    #[error("{endpoint}: cannot {action}: {error}")]
    Io {
        /// The endpoint.
        endpoint: FdRef,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
}

fn passed_names(names: &Option<Vec<String>>) -> String {
    match names {
        None => "LISTEN_FDNAMES is not set; name the descriptor by number, fd://3 and up".to_owned(),
        Some(n) if n.is_empty() => "it passed none".to_owned(),
        Some(n) => format!("it passed: {}", n.join(", ")),
    }
}

/// The descriptor number `r` stands for: the number itself, or the systemd socket of that name.
pub fn resolve(r: &FdRef) -> Result<RawFd, InheritError> {
    let name = match r {
        FdRef::Number(n) => return Ok(*n),
        FdRef::Name(name) => name,
    };
    let source = r.clone();
    match activation() {
        Activation::None => Err(InheritError::NoActivation { endpoint: source, name: name.clone() }),
        Activation::OtherProcess { listen_pid } => Err(InheritError::OtherProcess {
            endpoint: source,
            listen_pid: listen_pid.clone(),
            ours: std::process::id(),
        }),
        Activation::Invalid { problem } => {
            Err(InheritError::BadVariables { endpoint: source, problem: problem.clone() })
        }
        Activation::Ours { names: None, .. } => {
            Err(InheritError::NoSuchName { endpoint: source, name: name.clone(), names: None })
        }
        Activation::Ours { names: Some(names), .. } => {
            let fds: Vec<RawFd> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| *n == name)
                .map(|(i, _)| LISTEN_FDS_START + i as RawFd)
                .collect();
            match fds.as_slice() {
                [fd] => Ok(*fd),
                [] => {
                    Err(InheritError::NoSuchName { endpoint: source, name: name.clone(), names: Some(names.clone()) })
                }
                _ => Err(InheritError::Ambiguous { endpoint: source, name: name.clone(), fds }),
            }
        }
    }
}

/// Says what the inherited socket `r` names is, without taking it: open, a socket, inherited,
/// of a family and type sockit uses. After [`take`], answers from what was recorded then.
pub fn probe(r: &FdRef) -> Result<Inherited, InheritError> {
    let fd = resolve(r)?;
    let registry = registry();
    if let Some(known) = registry.taken.lock().unwrap_or_else(|e| e.into_inner()).get(&fd) {
        return Ok(Inherited { source: r.clone(), ..known.clone() });
    }
    probe_fd(fd, r, &registry.activation)
}

/// Takes ownership of the inherited socket `r` names: once per process, close-on-exec and
/// non-blocking. Stdin, stdout and stderr are moved to a new descriptor, and `/dev/null` put in
/// their place.
pub fn take(r: &FdRef) -> Result<(OwnedFd, Inherited), InheritError> {
    let fd = resolve(r)?;
    let registry = registry();
    // Held throughout, so that two threads taking the same descriptor cannot both succeed.
    let mut taken = registry.taken.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains_key(&fd) {
        return Err(InheritError::AlreadyTaken { endpoint: r.clone() });
    }
    let info = probe_fd(fd, r, &registry.activation)?;
    let io_err = |action, error| InheritError::Io { endpoint: r.clone(), action, error };
    let owned = if (0..=2).contains(&fd) {
        move_off_stdio(fd).map_err(|e| io_err("move the descriptor", e))?
    } else {
        // SAFETY: probe_fd checked that `fd` is open, and it is not owned by anything in this
        // process: it was inherited (not opened here) and `taken` shows nobody took it before.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let sock = SockRef::from(&owned);
    sock.set_cloexec(true).map_err(|e| io_err("set close-on-exec", e))?;
    sock.set_nonblocking(true).map_err(|e| io_err("make it non-blocking", e))?;
    taken.insert(fd, info.clone());
    Ok((owned, info))
}

/// Moves stdin, stdout or stderr to a new close-on-exec descriptor and opens `/dev/null` in
/// its place, so that the low number stays taken by something harmless.
fn move_off_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, which we own from here on.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` was just created and nothing else refers to it.
    let moved = unsafe { OwnedFd::from_raw_fd(moved) };
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptor replaces the socket there; the standard streams
    // stay open (now on /dev/null), which is what Rust's stdin/stdout/stderr handles expect.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(moved)
}

fn probe_fd(fd: RawFd, source: &FdRef, activation: &Activation) -> Result<Inherited, InheritError> {
    let source_err = |action, error| InheritError::Io { endpoint: source.clone(), action, error };
    // SAFETY: F_GETFD only reads the descriptor's flags; a number that is not open is EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBADF) => InheritError::NotOpen { endpoint: source.clone() },
            _ => source_err("inspect it", e),
        });
    }
    let from_systemd = activation.systemd_fds().contains(&fd);
    match registry().was_inherited(fd) {
        // systemd's descriptors are made close-on-exec when they are read.
        Some(true) if from_systemd => {}
        // Closed and opened again since (by nothing of ours: only `take` closes one).
        Some(true) if flags & libc::FD_CLOEXEC != 0 => {
            return Err(InheritError::NotInherited { endpoint: source.clone() });
        }
        Some(true) => {}
        // LISTEN_FDS counts it, but it was not open when the process started: the number is
        // some descriptor of the process's own now.
        Some(false) if from_systemd => return Err(InheritError::NotOpen { endpoint: source.clone() }),
        Some(false) => return Err(InheritError::NotInherited { endpoint: source.clone() }),
        None if from_systemd => {}
        None => return Err(InheritError::NotRecorded { endpoint: source.clone() }),
    }
    // SAFETY: the descriptor is open (checked above) and nothing in this process closes an
    // inherited descriptor it has not taken, so it stays open while borrowed here.
    describe(unsafe { BorrowedFd::borrow_raw(fd) }, source)
}

/// Reads what the socket `borrowed` is: its family, type, state and address. `source` is how
/// it was named, for what is said of it.
pub(crate) fn describe(borrowed: BorrowedFd<'_>, source: &FdRef) -> Result<Inherited, InheritError> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&borrowed);
    let source_err = |action, error| InheritError::Io { endpoint: source.clone(), action, error };
    let meta = fstat(borrowed).map_err(|e| source_err("inspect it", e))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(InheritError::NotASocket { endpoint: source.clone(), what: not_a_socket(fd, meta.st_mode) });
    }
    let sock = SockRef::from(&borrowed);
    let unusable = |what: String| InheritError::Unusable {
        endpoint: source.clone(),
        what,
        need: "sockit uses tcp, udp and unix sockets (stream, datagram, seqpacket)",
    };
    let domain = sock.domain().map_err(|e| source_err("read its family", e))?;
    let family = match domain {
        Domain::IPV4 => SockFamily::Inet4,
        Domain::IPV6 => SockFamily::Inet6,
        Domain::UNIX => SockFamily::Unix,
        other => return Err(unusable(format!("a {} socket", family_name(other)))),
    };
    let ty = sock.r#type().map_err(|e| source_err("read its type", e))?;
    let style = match ty {
        Type::STREAM => SocketStyle::Stream,
        Type::DGRAM => SocketStyle::Datagram,
        Type::SEQPACKET if family == SockFamily::Unix => SocketStyle::Seqpacket,
        Type::SEQPACKET => return Err(unusable("an SCTP seqpacket socket".into())),
        Type::RAW => return Err(unusable("a raw socket".into())),
        _ => return Err(unusable("a socket of an unusual type".into())),
    };
    let listening = style != SocketStyle::Datagram && sock.is_listener().map_err(|e| source_err("inspect it", e))?;
    let state = if listening {
        SockState::Listening
    } else {
        match sock.peer_addr() {
            Ok(_) => SockState::Connected,
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => SockState::Unconnected,
            Err(e) => return Err(source_err("read its peer address", e)),
        }
    };
    let local = sock.local_addr().map_err(|e| source_err("read its address", e))?;
    let (address, dual_stack, is_local) = if family == SockFamily::Unix {
        let scheme = match style {
            SocketStyle::Stream => "unix",
            SocketStyle::Datagram => "unix-dgram",
            SocketStyle::Seqpacket => "unix-seqpacket",
        };
        let addr = if let Some(p) = local.as_pathname() {
            Some(UnixAddr::Path(PathBuf::from(p)))
        } else {
            local.as_abstract_namespace().map(|n| UnixAddr::Abstract(n.to_vec()))
        };
        (addr.map(|a| format!("{scheme}:{a}")), false, true)
    } else {
        let scheme = if style == SocketStyle::Datagram { "udp" } else { "tcp" };
        let Some(addr) = local.as_socket() else {
            return Err(source_err("read its address", io::Error::other("not an IP address")));
        };
        let dual_stack =
            matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified()) && sock.only_v6().is_ok_and(|only| !only);
        let text = match addr {
            _ if dual_stack => format!("{scheme}://:{}", addr.port()),
            SocketAddr::V6(a) => format!("{scheme}://[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("{scheme}://{a}"),
        };
        (Some(text), dual_stack, addr.ip().to_canonical().is_loopback())
    };
    Ok(Inherited { fd, source: source.clone(), family, style, state, address, dual_stack, local: is_local })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the struct on success, and only then is it read.
    if unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so the struct is initialised.
    Ok(unsafe { st.assume_init() })
}

/// What a descriptor that is not a socket is, for the error message.
fn not_a_socket(fd: RawFd, mode: libc::mode_t) -> String {
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let named = |what: &str| match &path {
        Some(p) if p.is_absolute() => format!("{what}, {}", p.display()),
        _ => what.to_owned(),
    };
    match mode & libc::S_IFMT {
        libc::S_IFREG => named("a regular file"),
        libc::S_IFDIR => named("a directory"),
        libc::S_IFIFO => "a pipe".to_owned(),
        // SAFETY: isatty only inspects the descriptor.
        libc::S_IFCHR if unsafe { libc::isatty(fd) } == 1 => named("a terminal"),
        libc::S_IFCHR => named("a character device"),
        libc::S_IFBLK => named("a block device"),
        _ => match path {
            Some(p) => p.display().to_string(),
            None => "something else".to_owned(),
        },
    }
}

fn family_name(d: Domain) -> String {
    match libc::c_int::from(d) {
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        libc::AF_VSOCK => "vsock".into(),
        libc::AF_BLUETOOTH => "bluetooth".into(),
        libc::AF_CAN => "can".into(),
        libc::AF_TIPC => "tipc".into(),
        other => format!("address family {other}"),
    }
}

impl fmt::Display for SockFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SockFamily::Inet4 => "IPv4",
            SockFamily::Inet6 => "IPv6",
            SockFamily::Unix => "unix",
        })
    }
}

/// A descriptor as a parent would pass it, for tests: moved to a number no other test in the
/// process uses (the registry remembers taken numbers for good) and without close-on-exec.
#[cfg(test)]
pub(crate) fn passed(fd: impl Into<OwnedFd>) -> RawFd {
    use std::sync::atomic::{AtomicI32, Ordering};
    // Above what the tests open at once, below the usual limit of 1024 descriptors.
    static NEXT: AtomicI32 = AtomicI32::new(600);
    let fd: OwnedFd = fd.into();
    let at = NEXT.fetch_add(1, Ordering::Relaxed);
    // SAFETY: F_DUPFD makes a new descriptor without close-on-exec, which the caller then names.
    let moved = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_DUPFD, at) };
    assert_eq!(moved, at, "descriptor {at} is taken");
    // As if it had been open when `init` ran: the tests' registry is made by a first use.
    registry().inherited.lock().unwrap().get_or_insert_default().insert(moved);
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{SockAddr, Socket};
    use std::os::fd::IntoRawFd;

    fn tcp_listener() -> RawFd {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        s.listen(8).unwrap();
        passed(s)
    }

    #[test]
    fn probe_reads_family_type_state_and_address() {
        let fd = tcp_listener();
        let info = probe(&FdRef::Number(fd)).unwrap();
        assert_eq!(
            (info.family, info.style, info.state),
            (SockFamily::Inet4, SocketStyle::Stream, SockState::Listening)
        );
        let address = info.address.clone().unwrap();
        assert!(address.starts_with("tcp://127.0.0.1:") && !address.ends_with(":0"), "{address}");
        assert!(info.is_local() && !info.is_unix() && !info.dual_stack);
        assert_eq!(info.local_endpoint(), format!("{address} (fd://{fd})"));
        assert_eq!(info.describe(), "a listening tcp socket");

        let udp = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        udp.set_only_v6(false).unwrap();
        udp.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let info = probe(&FdRef::Number(passed(udp))).unwrap();
        assert_eq!((info.style, info.state), (SocketStyle::Datagram, SockState::Unconnected));
        assert!(info.dual_stack && !info.is_local(), "{info:?}");
        assert!(info.address.unwrap().starts_with("udp://:"));

        let (a, _b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let info = probe(&FdRef::Number(passed(a))).unwrap();
        assert_eq!(
            (info.style, info.state, info.address.as_deref()),
            (SocketStyle::Seqpacket, SockState::Connected, None)
        );
        assert!(info.is_local() && info.is_unix());
        assert!(info.local_endpoint().ends_with("(an unnamed unix seqpacket socket)"), "{}", info.local_endpoint());

        let dgram = Socket::new(Domain::UNIX, Type::DGRAM, None).unwrap();
        dgram.bind(&SockAddr::unix("\0sockit-inherit-probe").unwrap()).unwrap();
        let info = probe(&FdRef::Number(passed(dgram))).unwrap();
        assert_eq!(info.address.as_deref(), Some("unix-dgram:@sockit-inherit-probe"));
    }

    #[test]
    fn what_is_not_a_usable_socket_is_said_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let fd = passed(std::fs::File::create(dir.path().join("plain")).unwrap());
        let e = probe(&FdRef::Number(fd)).unwrap_err();
        assert!(e.to_string().starts_with(&format!("fd://{fd} is not a socket (it is a regular file, /")), "{e}");

        let (r, _w) = rustix::pipe::pipe().unwrap();
        let fd = passed(r);
        assert_eq!(
            probe(&FdRef::Number(fd)).unwrap_err().to_string(),
            format!("fd://{fd} is not a socket (it is a pipe)")
        );

        let e = probe(&FdRef::Number(RawFd::MAX)).unwrap_err();
        assert!(e.to_string().starts_with(&format!("fd://{} is not open (hint: ", RawFd::MAX)), "{e}");

        // One of our own: close-on-exec, as every descriptor Rust opens.
        let own = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap().into_raw_fd();
        let e = probe(&FdRef::Number(own)).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("fd://{own} was not passed to sockit: that descriptor is one")),
            "{e}"
        );

        let netlink = Socket::new(Domain::from(libc::AF_NETLINK), Type::DGRAM, None).unwrap();
        let fd = passed(netlink);
        let e = probe(&FdRef::Number(fd)).unwrap_err();
        assert!(e.to_string().starts_with(&format!("fd://{fd} is a netlink socket; sockit uses tcp")), "{e}");
    }

    #[test]
    fn a_descriptor_is_taken_once() {
        let fd = tcp_listener();
        let r = FdRef::Number(fd);
        let (owned, info) = take(&r).unwrap();
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&owned), fd);
        assert!(SockRef::from(&owned).nonblocking().unwrap());
        // SAFETY: F_GETFD only reads the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&owned), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        let e = take(&r).unwrap_err();
        assert_eq!(e.to_string(), format!("fd://{fd} is already in use: an inherited socket can be used only once"));
        // What it was is still known, even once it is closed.
        drop(owned);
        assert_eq!(probe(&r).unwrap(), info);
    }

    #[test]
    fn names_are_not_available_without_activation() {
        // The test process was not socket-activated.
        assert_eq!(activation(), &Activation::None);
        let e = resolve(&FdRef::Name("web".into())).unwrap_err();
        assert!(e.to_string().starts_with("fd://web: no sockets were passed by systemd (LISTEN_FDS is not set"), "{e}");
    }

    #[test]
    fn error_messages_list_the_names_there_are() {
        let endpoint = FdRef::Name("web".into());
        let e = InheritError::NoSuchName {
            endpoint: endpoint.clone(),
            name: "web".into(),
            names: Some(vec!["http".into(), "admin".into()]),
        };
        assert_eq!(e.to_string(), "fd://web: systemd passed no socket named 'web' (it passed: http, admin)");
        let e = InheritError::Ambiguous { endpoint, name: "web".into(), fds: vec![3, 4] };
        assert_eq!(e.to_string(), "fd://web: systemd passed 2 sockets named 'web'; name one by number: fd://3, fd://4");
    }
}
