//! The command line as clap sees it: the "low" form, close to the flags. `main` turns it into
//! library objects (endpoints, services, configurations).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sockit::framing::Framing;

const ENDPOINTS: &str = "\
Endpoints:
  tcp://HOST:PORT  tcp4://HOST:PORT  tcp6://[::1]:PORT
  udp://HOST:PORT  udp4://…  udp6://…
  tls://HOST:PORT  tls4://…  tls6://…   TLS over TCP: serve with --cert/--key, or with a
                   self-signed certificate made on first use (its sha256 is printed); clients
                   check the system's roots, or --ca FILE, or --pin sha256:…
  unix:///abs/path  unix:rel/path  unix:@abstract-name
  unix-dgram:…  unix-seqpacket:…
  fd://N  fd://NAME  a socket the parent passed: systemd (LISTEN_FDS, FileDescriptorName=NAME),
                     inetd (fd://0, or serve --inetd), any program that leaves it open
  HOST:PORT (tcp)   :PORT (tcp on every interface, IPv4 and IPv6)   /path or ./path (unix)";

/// A socket toolkit: servers, clients and tools for TCP, UDP and Unix sockets.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about, after_help = ENDPOINTS, propagate_version = true)]
pub struct Cli {
    /// Print no per-connection lines, banners or summaries (ping: only its first line and the
    /// summary).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print debugging detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve many clients at once on ENDPOINT with a service.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Talk to a server: a prompt on a terminal, a netcat-style pipe otherwise.
    #[command(after_help = CONNECT_HELP)]
    Connect(ConnectArgs),
    /// Send one message, print the answer, exit.
    #[command(after_help = SEND_HELP)]
    Send(SendArgs),
    /// Run a command on an `exec` server: output streamed back, its exit status returned.
    #[command(after_help = EXEC_HELP)]
    Exec(ExecArgs),
    /// An interactive prompt on an `exec` server: one command per line.
    #[command(after_help = SHELL_HELP)]
    Shell(ShellArgs),
    /// Upload a file to a `files` server, verified and published atomically.
    #[command(after_help = FILES_HELP)]
    Put(PutArgs),
    /// Download a file from a `files` server, verified and published atomically.
    #[command(after_help = FILES_HELP)]
    Get(GetArgs),
    /// List a directory on a `files` server.
    #[command(after_help = FILES_HELP)]
    Ls(LsArgs),
    /// Forward every client of FROM to TO, any family to any, optionally with injected faults.
    #[command(after_help = RELAY_HELP)]
    Relay(RelayArgs),
    /// Measure a server: echo latency and rate, bulk throughput, connection rate, UDP rate.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
    /// Send ICMP echo requests to HOST and report the replies, like ping.
    #[command(after_help = PING_HELP)]
    Ping(PingArgs),
    /// Every TCP socket with its RFC 793 state, queues and process; listeners' accept queues;
    /// the SYN-flood and overflow counters.
    #[command(after_help = STATES_HELP)]
    States(StatesArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout: sockit(1), or a command's own, sockit-COMMAND(1).
    #[command(after_help = "Examples:\n  sockit man | man -l -\n  sockit man serve > sockit-serve.1")]
    Man {
        /// The command whose page to print (serve, connect, …); without it, sockit(1).
        command: Option<String>,
    },
}

const SERVE_HELP: &str = "\
Services:
  echo          send every message back (the default)
  upper         send every message back in ASCII upper case
  reply TEXT    answer every message with TEXT
  qa            answer questions from a dictionary (--dict FILE, --default-answer); 'bye' ends
  print         print every message with its sender and time (--hex for a dump, --raw for the
                bytes alone, as nc -l writes them); answer nothing
  discard       read and throw away everything (a sink for `sockit bench … bulk`)
  source        send an endless stream to every client (for `sockit bench … bulk --reverse`)
  chat          every line goes to every other client with the sender's name; /nick NAME,
                /who, /quit; lines up to 4096 bytes (--max-frame lowers it); a client that
                misses 1024 lines in a row is dropped (clients: nc, sockit connect --framing line)
  exec          run commands for authenticated clients (`sockit exec`, `sockit shell`)
  files         serve the files under --root DIR to authenticated clients (`sockit put/get/ls`);
                --read-only refuses uploads
  spawn -- PROG ARGS…
                run a new PROG for each client, its stdin and stdout wired to the connection
                (like ncat -e); clients: nc -U on a Unix socket, or sockit connect --token-file

Examples:
  sockit serve 127.0.0.1:7000 upper          the seed's upper-case server, for many clients
  sockit serve :7000 qa --dict answers.txt   on every interface, IPv4 and IPv6
  sockit serve udp://127.0.0.1:9999 print    the seed's UDP receiver
  sockit serve :7000 print --raw --once > FILE   receive one file, as nc -l 7000 > FILE
  sockit serve unix:/tmp/echo.sock echo --framing len
  sockit serve 127.0.0.1:7000 reply Hi --once
  sockit serve 127.0.0.1:7022 exec --token-file ~/.sockit-token
  sockit serve unix:/tmp/files.sock files --root ~/shared
  sockit serve unix:/tmp/upper.sock spawn -- tr a-z A-Z      then: echo hi | nc -U -N /tmp/upper.sock
  sockit serve 127.0.0.1:7024 spawn --token-file ~/.sockit-token --timeout 1h -- sh -c 'exec sh -i 2>&1'
  sockit serve fd://3 upper                  on the socket systemd (or any parent) passed as fd 3
  sockit serve fd://web echo                 on the one passed with FileDescriptorName=web
  sockit serve --inetd upper                 the client on stdin, as inetd starts it; then exit

Inherited sockets: a listening socket is served like any other (its socket file is not removed
on exit); a connected one (inetd, systemd Accept=yes) is one client, and sockit exits when it
leaves. fd://NAME needs LISTEN_PID to be sockit's pid; --backlog and --mode are refused.
With --inetd, stdout and stderr may be the client's socket: no banner, log or summary unless -v,
and not even an error when stderr is that socket (the exit code tells).

TLS: on a tls:// endpoint, --cert FILE --key FILE (PEM) give the certificate; without them a
self-signed one is made on first use and kept in $XDG_CONFIG_HOME/sockit/tls (or
~/.config/sockit/tls; that directory or the home must exist). Its SHA-256 fingerprint is
printed at start, for clients to check:
  sockit serve tls://:7443 echo              prints: sockit: TLS certificate sha256:AB:CD:…
  sockit connect tls://HOST:7443 --pin sha256:AB:CD:…

exec, files and spawn need a token on TCP and TLS (--token-file FILE, readable only by you, or
$SOCKIT_TOKEN; make one with: head -c 32 /dev/urandom | base64 > FILE && chmod 600 FILE). On a
Unix socket the client's uid must be yours (or --allow-uid) and a token is optional; spawn
without a token takes no handshake at all. Beyond loopback they need TLS (tls://…): plain TCP
would carry the commands, their output and the files in clear.
  sockit serve tls://:7022 exec --token-file ~/.sockit-token";

const EXEC_HELP: &str = "\
The command runs as given, without a shell (--shell runs it with sh -c). Its stdout and stderr
arrive here as it writes them; stdin is forwarded (-n: it reads /dev/null). sockit exits with the
command's exit status, 128 + N when signal N killed it, 124 when --timeout ran out, 127 when the
command does not exist, 255 when the connection or authentication failed. Ctrl-C is forwarded to
the command; a second Ctrl-C leaves.

Examples:
  sockit exec 127.0.0.1:7022 -- ls -l /tmp
  sockit exec tls://host:7022 --pin sha256:AB:CD:… -- uptime
  echo hello | sockit exec unix:/tmp/exec.sock -- tr a-z A-Z
  sockit exec 127.0.0.1:7022 --shell -- 'ps aux | grep sockit'";

const FILES_HELP: &str = "\
Every file is checked end to end with BLAKE3 and appears under its name only once it is complete
and verified (written to a hidden partial file, fsynced, renamed). An interrupted transfer keeps
its partial file; --resume continues it after checking that the part already there matches.
Paths on the server are relative to its --root and cannot leave it. A progress bar shows on a
terminal.

get replaces only a regular file that has a write bit, keeping its permission bits; through a
symbolic link it replaces the file the link leads to. A FIFO, socket, device, dangling link or
read-only file is refused. get REMOTE - writes the file to stdout as it arrives: the hash can
only be checked at the end, so a damaged or cut transfer is an error (exit 1) after the bytes
went out, and what was written must then be thrown away. put needs a file, not stdin (the
server is told the size first). A file named - is ./-.

Examples:
  sockit put 127.0.0.1:7023 big.iso                 stored as big.iso in the server's root
  sockit put 127.0.0.1:7023 big.iso isos/big.iso --resume
  sockit get 127.0.0.1:7023 isos/big.iso /tmp/      saved as /tmp/big.iso
  sockit get 127.0.0.1:7023 logs/today.log - | grep error
  sockit ls 127.0.0.1:7023 isos
  sockit put tls://host:7023 big.iso --ca server-cert.pem";

const SHELL_HELP: &str = "\
Each line is one command, split into words like a shell does (quotes work), and run without a
shell on the server; --shell runs each line with sh -c instead, so pipes and cd work within it.
Commands get no input (an empty stdin: `cat` alone ends at once, and the next line typed is the
next command); `sockit exec` passes its stdin on. Type exit or Ctrl-D to leave.

Example:
  sockit shell 127.0.0.1:7022 --token-file ~/.sockit-token";

const CONNECT_HELP: &str = "\
On a terminal: a '>> ' prompt with line editing and history; answers appear as they arrive;
Ctrl-D ends. Otherwise stdin goes to the server and the server's answers to stdout; when stdin
ends the sending side is closed and sockit exits once the server closes. A server that closes
first still gets the rest of stdin, as from nc: it may be reading on.

A `spawn` server with a token wants the sockit handshake first: --token-file FILE (or --auth, with
the token in $SOCKIT_TOKEN) does it, then everything is as above. Without either, connect never
speaks first and never reads $SOCKIT_TOKEN. A failed handshake is one line on stderr and exit
status 1, as for any connection that fails. At the prompt, --framing line sends every line with
its newline, which a program that reads lines (a shell) waits for.

Examples:
  sockit connect 127.0.0.1:7000
  printf 'how are u\\nbye\\n' | sockit connect 127.0.0.1:7000 --framing line
  sockit connect udp://127.0.0.1:9999 < lines.txt     each line one datagram
  sockit connect udp://127.0.0.1:5353 --per-read < query.bin > answer.bin
  sockit connect 127.0.0.1:7024 --token-file ~/.sockit-token --framing line
  sockit connect tls://host:7443 --pin sha256:AB:CD:…   the fingerprint the server printed
  sockit connect tls://example.org:443                   checked against the system's roots";

const SEND_HELP: &str = "\
Examples:
  sockit send 127.0.0.1:7000 helloworld
  sockit send udp://127.0.0.1:9999 hello
  sockit send unix:/tmp/echo.sock 'frame me' --framing len
  sockit send tls://127.0.0.1:7443 hello --ca ~/.config/sockit/tls/cert.pem";

const RELAY_HELP: &str = "\
Each client of FROM gets its own connection to TO. Connected sockets (tcp, unix:,
unix-seqpacket:) relay to connected sockets, in any combination; datagram sockets (udp,
unix-dgram:) to datagram sockets, with a session per client address that ends after
--idle-timeout of silence (60s if not given). A half-close is passed on; a reset or error on one
side resets the other. Between two streams the bytes move with splice(2) (zero copy) unless
faults or a log need to see them.

Faults (to test other programs against a bad network; reproducible with --seed):
  --delay MS, --jitter MS    hold data back (± a random amount; streams keep their order)
  --rate BYTES               at most BYTES per second each way (e.g. 64K)
  --chunk N                  streams: deliver in pieces of at most N bytes, each its own write
  --reset-after BYTES        streams: reset both connections after BYTES have gone through
  --drop P, --duplicate P, --reorder P
                             datagrams: lose, send twice, or send after the next one, with
                             probability P (0.1 or 10%)
  --faults-on up|down        only client-to-target (up) or target-to-client (down)

Examples:
  sockit relay 127.0.0.1:8080 unix:/run/app.sock         expose a Unix socket on TCP
  sockit relay unix:/tmp/pg.sock tcp://db.internal:5432
  sockit relay 127.0.0.1:7001 127.0.0.1:7000 --delay 100 --jitter 20 --log traffic.txt
  sockit relay udp://127.0.0.1:5353 udp://127.0.0.1:53 --drop 10% --seed 7
  sockit relay tls://:8443 127.0.0.1:8080                TLS in front of a plain server
  sockit relay 127.0.0.1:7001 tls://host:7443 --pin sha256:AB:CD:…   and the other way
  sockit relay fd://3 unix:/run/app.sock     on the socket systemd passed (see sockit serve --help)
  sockit relay --inetd 127.0.0.1:7000        the client on stdin, as inetd starts it; then exit";

const BENCH_HELP: &str = "\
Modes:
  echo      round trips of --size bytes over -c connections to an echo server; every answer is
            checked; latency percentiles (with --rate: open loop, corrected for coordinated
            omission)
  bulk      -P streams of writes into a discard server (--reverse: reads from a source server)
  connect   connections per second: connect, one --size exchange with an echo server, close
            (to a 127.x address, from 127.0.0.2–127.0.0.9 in turn, so that the kernel's search for
            a free port is not the limit)
  udp       datagrams per second and loss against a datagram echo server

Examples:
  sockit serve 127.0.0.1:7000 echo &   sockit bench 127.0.0.1:7000 -c 50 --size 64 -d 10s
  sockit serve 127.0.0.1:7001 discard & sockit bench 127.0.0.1:7001 bulk -P 2
  sockit bench 127.0.0.1:7000 echo --rate 20000 --json
  sockit serve udp://127.0.0.1:7002 echo & sockit bench udp://127.0.0.1:7002 udp
  sockit bench tls://127.0.0.1:7443 connect --pin sha256:AB:CD:…   handshakes per second";

const PING_HELP: &str = "\
HOST is an IPv4 or IPv6 address, localhost (always 127.0.0.1, or ::1 with -6; never looked up),
or a name for the system resolver. One line per reply, then a summary; -q prints only the first
line and the summary; --json prints one object at the end instead. Ctrl-C stops and summarises.

sockit uses an unprivileged ICMP datagram socket when the sysctl net.ipv4.ping_group_range
includes your group (it governs IPv6 too), a raw socket otherwise (root or CAP_NET_RAW), and says
which in its first line. To allow everyone the datagram socket:
  sysctl -w net.ipv4.ping_group_range='0 2147483647'

Replies must carry our identifier, a sequence number we sent and the payload we sent (a send
timestamp and a random pattern per run); other payloads are reported as corrupt and not counted.
Exit status: 0 if any reply arrived, 1 if none, 2 on any error (as iputils ping).

Examples:
  sockit ping 127.0.0.1 -c 3
  sockit ping ::1 -c 5 -i 0.2 -s 1400
  sockit ping localhost -6 -c 1 --json
  sockit ping 10.0.0.7 -c 2 -W 1 -q";

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The host: an IPv4 or IPv6 address, localhost, or a name.
    pub host: String,

    /// Stop after COUNT requests, once each is answered or -W has passed after the last.
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = parse_ping_count, allow_hyphen_values = true)]
    pub count: Option<u64>,

    /// Time between requests (seconds, or e.g. 200ms); below 0.2s only for root, never below
    /// 2ms.
    #[arg(short = 'i', long, value_name = "SECONDS", default_value = "1", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Duration,

    /// After the last request of -c, wait at most this long for the replies still missing.
    #[arg(short = 'W', long, value_name = "SECONDS", default_value = "10", value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    /// Payload bytes after the 8-byte ICMP header: 0 to 65507 over IPv4, 65527 over IPv6.
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = sockit::ping::DEFAULT_SIZE, value_parser = parse_payload_size, allow_hyphen_values = true)]
    pub size: usize,

    /// Use IPv4 (a name's IPv4 address).
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use IPv6 (a name's IPv6 address; localhost is ::1).
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Print one JSON object at the end: the host, the socket kind, every reply and error,
    /// and the statistics.
    #[arg(long)]
    pub json: bool,
}

const STATES_HELP: &str = "\
States are named as RFC 793 names them: LISTEN, SYN-SENT, SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1,
FIN-WAIT-2, CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT, CLOSED (--state takes any case, and ss's
spellings: estab, syn-recv). For a listener, Recv-Q is its accept queue (connections the kernel
completed that nobody accepted yet) and Send-Q its backlog; the kernel takes one connection more
than the backlog, then drops new ones and counts ListenOverflows. UDP and Unix sockets that are
not connected show as UNCONN (as CLOSED in --json, which keeps to the RFC 793 names). Everything
is read from the kernel (netlink sock_diag, as ss does) in this network namespace; processes are
found in /proc/*/fd, so other users' are shown only to root.

Examples:
  sockit states                        every TCP socket, the counts, listeners and counters
  sockit states --port 7000            one server and its clients
  sockit states --state time-wait      who is waiting out a close
  sockit states --listening --json     listeners for a script
  sockit states --udp --unix           the UDP and Unix tables
  sockit states --port 7000 --watch    a live screen (q quits)";

#[derive(Debug, Args)]
pub struct StatesArgs {
    /// Only sockets whose local or peer port is PORT.
    #[arg(long, value_name = "PORT", value_parser = parse_port, allow_hyphen_values = true)]
    pub port: Option<u16>,

    /// Only sockets in this state (repeatable).
    #[arg(long, value_name = "NAME", value_parser = parse_state)]
    pub state: Vec<sockit::diag::TcpState>,

    /// Only listening sockets (for UDP and Unix datagrams: unconnected ones).
    #[arg(short = 'l', long, conflicts_with = "state")]
    pub listening: bool,

    /// Show TCP sockets (the default unless --udp or --unix is given).
    #[arg(short = 't', long)]
    pub tcp: bool,

    /// Show UDP sockets.
    #[arg(short = 'u', long)]
    pub udp: bool,

    /// Show Unix-domain sockets.
    #[arg(short = 'x', long)]
    pub unix: bool,

    /// Print one JSON object.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,

    /// A live screen, refreshed twice a second: the state counts as bars, the listeners' accept
    /// queues, the counters and their change since the start (q or Ctrl-C quits).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to measure.
    pub endpoint: String,

    /// echo (the default), bulk, connect or udp.
    #[arg(value_name = "MODE", default_value = "echo")]
    pub mode: sockit::bench::Mode,

    /// Concurrent connections (echo, connect) or sockets (udp) [default: 50; udp 4].
    #[arg(short = 'c', long, value_name = "N", value_parser = whole::<u32>(1, 100_000))]
    pub connections: Option<u32>,

    /// Parallel streams (bulk) [default: 1].
    #[arg(short = 'P', long, value_name = "N", value_parser = whole::<u32>(1, 1024))]
    pub parallel: Option<u32>,

    /// Message size, or write size for bulk (e.g. 64, 16K, 1M) [default: 64; bulk 128K].
    #[arg(short = 's', long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<usize>,

    /// How long to measure.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Open loop (echo, udp): requests (or datagrams) per second in total.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// bulk: read from a `source` server instead of writing to a `discard` server.
    #[arg(long)]
    pub reverse: bool,

    /// echo: first open N idle connections and keep them open while measuring (spread over
    /// 127.0.0.2, 127.0.0.3, … on a loopback TCP endpoint).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = whole::<usize>(0, 1_000_000))]
    pub hold: usize,

    /// How often to report progress (at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Where clients connect (or send datagrams); left out with --inetd.
    #[arg(value_name = "FROM")]
    pub from: Option<String>,

    /// Where each client is relayed to.
    #[arg(value_name = "TO", required_unless_present = "inetd")]
    pub to: Option<String>,

    /// Relay the client connected on stdin (as inetd or systemd with Accept=yes starts a
    /// program), then exit: sockit relay --inetd TO.
    #[arg(long)]
    pub inetd: bool,

    /// At most N clients (datagram sessions) at once; more are reset (dropped).
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, u32::MAX as u64))]
    pub max_conns: Option<u32>,

    /// Close a connection (end a datagram session) when nothing has moved for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub idle_timeout: Option<Duration>,

    /// Give up connecting to TO after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,

    /// The listen backlog (connections the kernel queues before they are accepted) [default:
    /// 1024].
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, u32::MAX as u64))]
    pub backlog: Option<u32>,

    /// Threads that accept and serve connections on a TCP address, each with its own listening
    /// socket (SO_REUSEPORT) that the kernel spreads new connections over [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, 1024))]
    pub threads: Option<u32>,

    /// Permissions of a new Unix socket file, in octal [default: 600].
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// On shutdown, how long connections get to finish before they are cut.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub tls_server: TlsServerArgs,

    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// Copy bytes through user space even between two streams (for comparison).
    #[arg(long)]
    pub no_splice: bool,

    /// Dump the traffic as hex (on stderr, or in the --log file).
    #[arg(long)]
    pub hex: bool,

    /// Write every chunk or datagram with its time and direction to FILE (- for stderr).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Hold data back this long (a number is milliseconds: 100, 1.5s).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub delay: Option<Duration>,

    /// Vary the delay by up to this much either way.
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub jitter: Option<Duration>,

    /// At most this many bytes per second in each direction (e.g. 100K).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub rate: Option<usize>,

    /// Streams: deliver data in pieces of at most N bytes.
    #[arg(long, value_name = "N", value_parser = parse_size)]
    pub chunk: Option<usize>,

    /// Streams: reset both connections after this many bytes.
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub reset_after: Option<u64>,

    /// Datagrams: the probability of losing one (0 to 1, or a percentage).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub drop: Option<f64>,

    /// Datagrams: the probability of sending one twice.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub duplicate: Option<f64>,

    /// Datagrams: the probability of holding one back until after the next.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub reorder: Option<f64>,

    /// The seed of the faults' random choices (default: a random one, shown at start).
    #[arg(long, value_name = "N", value_parser = whole::<u64>(0, u64::MAX))]
    pub seed: Option<u64>,

    /// Which way faults apply: both, up (client to target) or down (target to client).
    #[arg(long, value_name = "both|up|down", default_value = "both")]
    pub faults_on: sockit::fault::FaultDirection,
}

#[derive(Debug, Args)]
pub struct FramingArgs {
    /// How messages are delimited on stream sockets: raw (each read; the default), line (\n),
    /// or len (4-byte big-endian length prefix). Datagram and seqpacket sockets keep their own
    /// boundaries.
    #[arg(long, value_name = "raw|line|len")]
    pub framing: Option<Framing>,

    /// The largest frame accepted under line or len framing (and, for a client on a stream, the
    /// longest line of input) [default: 1MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_frame: Option<usize>,
}

impl FramingArgs {
    /// The framing asked for: raw unless `--framing` says otherwise.
    pub fn framing(&self) -> Framing {
        self.framing.unwrap_or(Framing::Raw)
    }

    /// `--max-frame`, or its default.
    pub fn max_frame(&self) -> usize {
        self.max_frame.unwrap_or(sockit::framing::DEFAULT_MAX_FRAME)
    }

    /// The framing for `endpoint`, refusing line or len on a socket that keeps its own message
    /// boundaries, and `--max-frame` there too: a datagram's size is its own.
    pub fn for_endpoint(&self, endpoint: &sockit::endpoint::Endpoint) -> Result<Framing, crate::Usage> {
        match self.framing {
            Some(framing) if framing != Framing::Raw && endpoint.style() != sockit::endpoint::SocketStyle::Stream => {
                Err(crate::Usage(format!(
                    "--framing {framing} applies to stream sockets; {endpoint} keeps its own message boundaries \
                     (leave --framing out)"
                )))
            }
            _ if self.max_frame.is_some() && endpoint.style() != sockit::endpoint::SocketStyle::Stream => {
                Err(crate::Usage(format!(
                    "--max-frame limits frames on stream sockets; {endpoint} keeps its own message boundaries \
                     (leave --max-frame out)"
                )))
            }
            _ => Ok(self.framing()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen (left out with --inetd).
    #[arg(required_unless_present = "inetd")]
    pub endpoint: Option<String>,

    /// The service: echo (the default), upper, reply, qa, print, discard, source, chat, exec,
    /// files, spawn.
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,

    /// The service's argument: the TEXT of `reply TEXT`.
    #[arg(value_name = "TEXT")]
    pub service_arg: Option<String>,

    /// spawn: the program to run for each client, and its arguments.
    #[arg(last = true, value_name = "PROG")]
    pub program: Vec<std::ffi::OsString>,

    #[command(flatten)]
    pub framing: FramingArgs,

    /// Serve at most N clients at once; more are told so and closed at once.
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, u32::MAX as u64))]
    pub max_conns: Option<u32>,

    /// The listen backlog (connections the kernel queues before they are accepted) [default:
    /// 1024].
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, u32::MAX as u64))]
    pub backlog: Option<u32>,

    /// Threads that accept and serve connections on a TCP address, each with its own listening
    /// socket (SO_REUSEPORT) that the kernel spreads new connections over [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, 1024))]
    pub threads: Option<u32>,

    /// Close a connection silent for this long (e.g. 30s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub idle_timeout: Option<Duration>,

    /// Serve one client (or one datagram), then exit; the exit status is 1 if that client's
    /// connection ended in an error (a reset, a failed authentication).
    #[arg(long)]
    pub once: bool,

    /// Serve the client connected on stdin, as inetd (or systemd with Accept=yes) starts a
    /// service, and exit when it leaves; print nothing unless -v. Takes SERVICE [TEXT] and no
    /// ENDPOINT: the same as `serve fd://0 SERVICE`, quietly.
    #[arg(long)]
    pub inetd: bool,

    /// On shutdown, how long connections get to finish what they are in the middle of (a message
    /// half received and its answer, a command, a transfer) before they are cut. A connection
    /// that is waiting for its next message is closed at once.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Permissions of a new Unix socket file, in octal [default: 600].
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// qa: a dictionary file, one 'question = answer' per line.
    #[arg(long, value_name = "FILE")]
    pub dict: Option<PathBuf>,

    /// qa: the answer to questions the dictionary does not know [default: no].
    #[arg(long, value_name = "TEXT")]
    pub default_answer: Option<String>,

    /// print: show each message as a hex dump.
    #[arg(long, conflicts_with = "raw")]
    pub hex: bool,

    /// print: write what arrives to stdout as it is, with no sender, time or escaping (each
    /// message's own line end under --framing line): `serve :7000 print --raw --once > FILE`
    /// receives a file as `nc -l 7000 > FILE` does. Several clients at once mix their bytes.
    #[arg(long)]
    pub raw: bool,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub tls: TlsServerArgs,

    #[command(flatten)]
    pub auth: ServerAuthArgs,

    /// exec: the longest a command may run (a client may ask for less); spawn: the longest each
    /// client's program may run.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// files: the directory to serve.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// files: refuse uploads.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Args)]
pub struct AccessArgs {
    /// Let in only clients from these addresses or CIDR ranges (repeatable, or comma-separated:
    /// 10.0.0.0/8,::1).
    #[arg(long, value_name = "RANGES", value_delimiter = ',', value_parser = parse_cidr)]
    pub allow: Vec<sockit::acl::Cidr>,

    /// Turn away clients from these addresses or ranges; deny wins over allow.
    #[arg(long, value_name = "RANGES", value_delimiter = ',', value_parser = parse_cidr)]
    pub deny: Vec<sockit::acl::Cidr>,

    /// --allow for every address or range in FILE (one or more per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub allow_file: Vec<PathBuf>,

    /// --deny for every address or range in FILE.
    #[arg(long, value_name = "FILE")]
    pub deny_file: Vec<PathBuf>,

    /// At most N connections at once from one IP address; more are reset.
    #[arg(long, value_name = "N", value_parser = whole::<u32>(1, u32::MAX as u64))]
    pub max_per_source: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ServerAuthArgs {
    /// exec, files, spawn: the shared token clients must prove (a file only you can read);
    /// $SOCKIT_TOKEN works too.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// exec, files, spawn: also let this uid in over a Unix socket (repeatable; your own uid
    /// always may).
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,

    /// Gone: exec, files and spawn beyond loopback need TLS (kept to say so).
    #[arg(long, hide = true)]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct TlsServerArgs {
    /// tls://: the server's certificate chain, PEM (default: a self-signed certificate made on
    /// first use and kept in ~/.config/sockit/tls).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// tls://: the private key of --cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TlsClientArgs {
    /// tls://: trust the CA certificates in FILE (PEM) instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "tls_insecure"])]
    pub ca: Option<PathBuf>,

    /// tls://: accept exactly the certificate with this SHA-256 fingerprint, as the server
    /// prints it (sha256:AB:CD:…; colons and case do not matter).
    #[arg(long, value_name = "FINGERPRINT", value_parser = parse_fingerprint, conflicts_with = "tls_insecure")]
    pub pin: Option<sockit::tls::Fingerprint>,

    /// tls://: accept any certificate, unchecked (anyone in between can read and change the
    /// connection).
    #[arg(long)]
    pub tls_insecure: bool,
}

#[derive(Debug, Args)]
pub struct ClientAuthArgs {
    /// The shared token (a file only you can read); $SOCKIT_TOKEN works too.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The exec server.
    pub endpoint: String,

    /// Words before --. They are not taken as the command, as ssh would take them: whether a
    /// later option (`sockit exec HOST ls -n`) were sockit's or the command's would then depend
    /// on where it stood. They are caught only to say where the command goes.
    #[arg(hide = true, value_name = "WORD")]
    pub stray: Vec<std::ffi::OsString>,

    /// The command and its arguments (after --).
    #[arg(required_unless_present = "stray", last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,

    #[command(flatten)]
    pub auth: ClientAuthArgs,

    /// Run the command with sh -c (the words are joined with spaces).
    #[arg(long)]
    pub shell: bool,

    /// Give the command /dev/null as stdin instead of forwarding ours.
    #[arg(short = 'n', long)]
    pub no_stdin: bool,

    /// Kill the command after this long (exit status 124).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The files server.
    pub endpoint: String,

    /// The local file to send (a file: not - for stdin, as the server needs the size first).
    pub local: PathBuf,

    /// Where to store it on the server (default: the local file's name, in the root). A name
    /// ending in / is a directory to put it in.
    pub remote: Option<String>,

    #[command(flatten)]
    pub auth: ClientAuthArgs,

    /// Continue an interrupted upload.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The files server.
    pub endpoint: String,

    /// The file on the server.
    pub remote: String,

    /// Where to save it (default: its name, in the current directory; a directory: in it; -:
    /// stdout).
    pub local: Option<PathBuf>,

    #[command(flatten)]
    pub auth: ClientAuthArgs,

    /// Continue an interrupted download.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The files server.
    pub endpoint: String,

    /// The directory (default: the root), or a file to show by itself.
    #[arg(default_value = "", hide_default_value = true)]
    pub dir: String,

    #[command(flatten)]
    pub auth: ClientAuthArgs,

    /// Print the entries as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The exec server.
    pub endpoint: String,

    #[command(flatten)]
    pub auth: ClientAuthArgs,

    /// Run each line with sh -c.
    #[arg(long)]
    pub shell: bool,

    /// Kill each command after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub framing: FramingArgs,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub tls: TlsClientArgs,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect.
    pub endpoint: String,

    #[command(flatten)]
    pub client: ClientArgs,

    /// After stdin ends, wait at most this long for the server to finish (default: as long as
    /// it takes; 1s on datagram sockets, where 0 sends and exits without waiting).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Send TEXT, print the answer and exit, like `sockit send`.
    #[arg(long, value_name = "TEXT")]
    pub send: Option<String>,

    /// Authenticate to a `spawn` server first (the sockit handshake), with the token in FILE (a
    /// file only you can read).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Authenticate to a `spawn` server first, with the token in $SOCKIT_TOKEN.
    #[arg(long)]
    pub auth: bool,

    /// On a datagram or seqpacket endpoint, send each read of stdin as one datagram, bytes as
    /// they are (newlines too), and write each one received as it came: binary-safe, as nc -u
    /// does. Without it, each line is one datagram and each answer one line.
    #[arg(long)]
    pub per_read: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send.
    pub endpoint: String,

    /// The message.
    pub text: String,

    #[command(flatten)]
    pub client: ClientArgs,

    /// Wait at most this long for the answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Do not wait for an answer (for servers that answer nothing, like `print`).
    #[arg(long)]
    pub no_wait: bool,
}

/// Parses `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds (`1.5`), up to a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let too_long = || longer_than_a_year(s);
    let d = if let Ok(secs) = s.parse::<f64>() {
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d,
            Err(_) if secs > 0.0 => return Err(too_long()),
            Err(_) => return Err(format!("'{s}' is not a duration of zero or more seconds")),
        }
    } else {
        match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => return Err(too_long()),
            Err(_) => return Err(format!("'{s}' is not a duration (examples: 30s, 500ms, 2m, 1.5)")),
        }
    };
    if d > sockit::MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// The one wording for a duration, delay or timeout over [`sockit::MAX_DURATION`].
fn longer_than_a_year(s: &str) -> String {
    format!("'{s}' is longer than the limit of one year")
}

/// [`parse_duration`] for a timeout, which must be longer than zero: a zero one would give up
/// before anything could happen.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("'{}' is no time at all: a timeout must be longer than zero", s.trim())),
        d => Ok(d),
    }
}

/// A parser for a whole number from `lo` to `hi`, whose refusals are in words ("'x' is not a
/// whole number", "'0' is out of range") rather than Rust's ("invalid digit found in string").
pub fn whole<T>(lo: u64, hi: u64) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let t = s.trim();
        let open_ended = hi == u64::MAX || hi == u64::from(u32::MAX);
        let range = if open_ended { format!("{lo} or more") } else { format!("from {lo} to {hi}") };
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("'{s}' is not a whole number ({range})"));
        }
        match t.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => T::try_from(n).map_err(|_| format!("'{s}' is too large")),
            Ok(n) if n < lo || !open_ended => Err(format!("'{s}' is out of range ({range})")),
            _ => Err(format!("'{s}' is too large (the most is {hi})")),
        }
    }
}

/// Parses bench's `--rate`: a number of requests per second (its bounds are the library's).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() => Ok(r),
        _ => Err(format!("'{s}' is not a number of requests per second (examples: 1000, 2.5)")),
    }
}

/// Parses a size in bytes with an optional binary suffix: `65536`, `64K`, `16M`, `1G`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("'{s}' is not a size (examples: 65536, 64K, 16M)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let out_of_range = || format!("'{s}' must be from 1 byte to 4294967295 (4G less one)");
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a size (examples: 65536, 64K, 16M)"));
    }
    let n: usize = num.parse().map_err(|_| out_of_range())?;
    let v = n.checked_mul(mult).filter(|v| (1..=u32::MAX as usize).contains(v));
    v.ok_or_else(out_of_range)
}

/// Parses a delay: a bare number is milliseconds (`100`, `2.5`); `1s`, `250ms` work too.
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => match Duration::try_from_secs_f64(ms / 1000.0) {
            Ok(d) if d <= sockit::MAX_DURATION => Ok(d),
            _ => Err(longer_than_a_year(s)),
        },
        Ok(_) => Err(format!("'{s}' is not a delay of zero or more milliseconds")),
        Err(_) => parse_duration(t),
    }
}

/// Parses a probability: `0.25` or `25%`, from 0 to 1.
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match p {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability from 0 to 1 (or 0% to 100%)")),
    }
}

/// Parses a byte count that may be zero: `0`, `1500`, `64K`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_size(s).map(|n| n as u64)
}

fn parse_fingerprint(s: &str) -> Result<sockit::tls::Fingerprint, String> {
    s.parse()
}

fn parse_cidr(s: &str) -> Result<sockit::acl::Cidr, String> {
    s.parse()
}

/// Parses ping's count: a whole number from 1.
fn parse_ping_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("'{s}' is too large a count (at most {})", u64::MAX))
        }
        _ => Err(format!("'{s}' is not a count of 1 or more")),
    }
}

/// Parses a port number for a filter: 1 to 65535.
fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!("'{s}' is not a port number from 1 to 65535")),
    }
}

/// Parses ping's payload size: 0 to 65527 bytes (what fits in an IPv6 packet; the IPv4 limit,
/// 65507, is checked once the address is known).
fn parse_payload_size(s: &str) -> Result<usize, String> {
    let max = sockit::ping::MAX_SIZE_V6;
    match s.trim().parse::<u64>() {
        Ok(n) if n <= max as u64 => Ok(n as usize),
        Ok(_) => Err(format!("{s} bytes do not fit in an ICMP echo request: at most {max} (IPv4: 65507)")),
        Err(_) => Err(format!("'{s}' is not a payload size from 0 to {max} bytes")),
    }
}

fn parse_state(s: &str) -> Result<sockit::diag::TcpState, String> {
    s.parse().map_err(|e: sockit::diag::UnknownState| e.to_string())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    // Permission bits only: setuid, setgid and sticky mean nothing on a socket file.
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode from 000 to 777, like 600 or 660"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e19").unwrap_err().contains("one year"));
        assert!(parse_duration("400days").is_err());
    }

    #[test]
    fn timeouts_are_longer_than_zero() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        for zero in ["0", "0s", " 0ms ", "0.0"] {
            let err = parse_timeout(zero).unwrap_err();
            assert!(err.contains("a timeout must be longer than zero"), "{zero}: {err}");
        }
        assert!(parse_timeout("soon").unwrap_err().contains("is not a duration"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5G").is_err());
        assert!(parse_size("12Q").is_err());
    }

    #[test]
    fn faults() {
        assert_eq!(parse_millis("100"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_millis("2.5"), Ok(Duration::from_micros(2500)));
        assert_eq!(parse_millis("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_millis("-5").is_err());
        assert!(parse_millis("NaN").is_err());
        assert!(parse_millis("soon").is_err());
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert_eq!(parse_probability("10%"), Ok(0.1));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-1%").is_err());
        assert!(parse_probability("NaN").is_err());
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("2K"), Ok(2048));
        assert!(parse_count("-3").is_err());
    }

    #[test]
    fn ping_numbers() {
        assert_eq!(parse_ping_count("3"), Ok(3));
        assert!(parse_ping_count("0").is_err());
        assert!(parse_ping_count("-1").is_err());
        assert_eq!(parse_payload_size("0"), Ok(0));
        assert_eq!(parse_payload_size("65527"), Ok(65527));
        assert!(parse_payload_size("65528").unwrap_err().contains("at most 65527"));
        assert!(parse_payload_size("-1").unwrap_err().contains("not a payload size"));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o660"), Ok(0o660));
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
