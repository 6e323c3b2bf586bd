//! The library as a Rust program uses it, without the `sockit` command: what a caller may do
//! that the command never does (drop a running server, say `Duration::MAX` for "never", name a
//! descriptor it opened itself, spawn the futures on a multi-threaded runtime).
//!
//! This test program never calls `sockit::inherit::init()`, as a library user who does not
//! serve inherited sockets would not.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use sockit::bench::{self, BenchConfig, Mode};
use sockit::endpoint::Endpoint;
use sockit::relay::RelayConfig;
use sockit::server::{self, ServerConfig};
use sockit::{net, service::Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Any wait on a peer here: far longer than anything takes on loopback.
const WAIT: Duration = Duration::from_secs(10);

async fn bound(endpoint: &str) -> (net::ServerSocket, Endpoint) {
    let socket = net::bind(&endpoint.parse().unwrap(), &net::BindOptions::default()).await.unwrap();
    let at = socket.local_endpoint().parse().unwrap();
    (socket, at)
}

fn addr(endpoint: &Endpoint) -> std::net::SocketAddr {
    endpoint.to_string().split("://").nth(1).unwrap().parse().unwrap()
}

/// Sends `msg` and reads as many bytes back: `Ok(answer)`, or what happened instead.
async fn exchange(to: &Endpoint, msg: &[u8], within: Duration) -> Result<Vec<u8>, String> {
    let talk = async {
        let mut c = tokio::net::TcpStream::connect(addr(to)).await?;
        c.write_all(msg).await?;
        let mut answer = vec![0; msg.len()];
        c.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(within, talk).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Whether a connected client sees its connection end (EOF or an error) within `WAIT`.
async fn ends(client: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(WAIT, client.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// A server whose future is dropped (an aborted task here; a `select!` or a `timeout` alike)
/// stops: it closes the connections it was serving and takes no new ones, on the caller's
/// runtime and on its own threads. It used to serve on with nothing left to stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_future_is_dropped_stops_serving() {
    for own_threads in [false, true] {
        let (socket, at) = bound("tcp://127.0.0.1:0").await;
        let mut config = ServerConfig::new(Service::Echo);
        config.own_threads = own_threads;
        let running = tokio::spawn(server::run(socket, config, CancellationToken::new()));
        let mut early = tokio::net::TcpStream::connect(addr(&at)).await.unwrap();
        early.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        early.read_exact(&mut byte).await.unwrap();

        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        assert!(ends(&mut early).await, "own_threads {own_threads}: the connection it served is closed");
        // The listener goes with the threads, which end by themselves: allow them a moment.
        let mut refused = false;
        for _ in 0..100 {
            if exchange(&at, b"new", Duration::from_millis(500)).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "own_threads {own_threads}: a new client is not served");
    }
}

/// `Duration::MAX` in a library configuration means "never", as the command's longest
/// durations do; each of these panicked in the session's task (`Instant + Duration`
/// overflowed), and its client was dropped unanswered.
#[tokio::test]
async fn a_duration_of_max_means_never() {
    let shutdown = CancellationToken::new();
    let (socket, echo) = bound("tcp://127.0.0.1:0").await;
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Echo), shutdown.clone()));

    // A relay whose delay never ends: the client waits, it is not dropped.
    let mut relay = RelayConfig::new(echo.clone());
    relay.faults.delay = Duration::MAX;
    let (socket, delayed) = bound("tcp://127.0.0.1:0").await;
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Relay(Arc::new(relay))), shutdown.clone()));
    assert_eq!(exchange(&delayed, b"held", Duration::from_millis(300)).await, Err("no answer in time".into()));

    // A datagram relay's sessions that never go idle, set either way.
    let (socket, udp_echo) = bound("udp://127.0.0.1:0").await;
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Echo), shutdown.clone()));
    for on_server in [false, true] {
        let mut relay = RelayConfig::new(udp_echo.clone());
        let mut config = ServerConfig::new(Service::Echo);
        if on_server {
            config.idle_timeout = Some(Duration::MAX);
        } else {
            relay.datagram_idle = Duration::MAX;
        }
        config.service = Service::Relay(Arc::new(relay));
        let (socket, front) = bound("udp://127.0.0.1:0").await;
        tokio::spawn(server::run(socket, config, shutdown.clone()));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr(&front)).await.unwrap();
        client.send(b"dgram").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, client.recv(&mut buf)).await.expect("an answer").unwrap();
        assert_eq!(&buf[..n], b"dgram", "idle_timeout on the server config: {on_server}");
    }

    // A spawned program that may run forever.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spawn.sock");
    let (socket, _) = bound(&format!("unix:{}", path.display())).await;
    let spawn = sockit::spawn::SpawnConfig {
        program: sockit::spawn::resolve_program("cat".as_ref()).unwrap(),
        argv: vec!["cat".into()],
        policy: sockit::auth::Policy::new(None, vec![]),
        timeout: Some(Duration::MAX),
        child_nofile: None,
    };
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Spawn(Arc::new(spawn))), shutdown.clone()));
    let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
    c.write_all(b"cat").await.unwrap();
    let mut answer = [0u8; 3];
    tokio::time::timeout(WAIT, c.read_exact(&mut answer)).await.expect("an answer").unwrap();
    assert_eq!(&answer, b"cat");

    // A bench whose progress interval is longer than the run.
    let mut config = BenchConfig::new(echo, Mode::Echo);
    config.connections = 1;
    config.duration = Duration::from_millis(300);
    config.interval = Duration::MAX;
    let result = bench::run(config, None, CancellationToken::new()).await.unwrap();
    assert!(result.requests > 0 && result.intervals.len() == 1, "{} requests", result.requests);
    shutdown.cancel();
}

#[tokio::test]
async fn a_bench_interval_below_100ms_is_refused() {
    let mut config = BenchConfig::new("tcp://127.0.0.1:9".parse().unwrap(), Mode::Echo);
    config.interval = Duration::ZERO;
    let e = bench::run(config, None, CancellationToken::new()).await.unwrap_err();
    assert_eq!(e.to_string(), "the interval must be at least 100ms");
}

/// Cancelling a bench while it is still connecting ends it at once: it used to wait out the
/// connect timeout, deaf to Ctrl-C. (A Unix listener whose queue is full keeps a connect
/// waiting.)
#[tokio::test]
async fn a_bench_cancelled_while_connecting_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let listener = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    // Never accepted: connect without waiting until the queue is full.
    let mut queued = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        if s.connect(&socket2::SockAddr::unix(&path).unwrap()).is_err() {
            break;
        }
        queued.push(s);
    }
    assert!(!queued.is_empty() && queued.len() < 8, "{} connects got in", queued.len());
    let mut config = BenchConfig::new(format!("unix:{}", path.display()).parse().unwrap(), Mode::Echo);
    config.connect_timeout = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let started = std::time::Instant::now();
    let run = tokio::spawn(bench::run(config, None, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let outcome = tokio::time::timeout(WAIT, run).await.expect("ends").unwrap();
    assert!(matches!(outcome, Err(bench::BenchError::Cancelled)), "{:?}", outcome.map(|r| r.requests));
    assert!(started.elapsed() < WAIT);
}

/// `fd://N` takes ownership of descriptor N, so it names only a descriptor the process
/// inherited, as recorded by `inherit::init()` at the start of `main`. One the program opened
/// itself has an owner already: taking it closed it under that owner (and Rust aborts the
/// process when an owner then closes a descriptor that is gone).
#[tokio::test]
async fn fd_n_never_takes_a_descriptor_that_has_an_owner() {
    // A socket made as C code makes one: without close-on-exec, so it looks inherited.
    // SAFETY: socket(2) returns a new descriptor, owned from here by `mine`.
    let mine = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)) };
    let listener = socket2::Socket::from(mine);
    listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(8).unwrap();
    let endpoint: Endpoint = format!("fd://{}", listener.as_raw_fd()).parse().unwrap();
    let Err(e) = net::bind(&endpoint, &net::BindOptions::default()).await else {
        panic!("fd://{} was taken", listener.as_raw_fd())
    };
    assert!(e.to_string().contains("sockit::inherit::init() must run at the start of main"), "{e}");
    // Still the owner's, and still open.
    assert!(listener.local_addr().is_ok());
}

/// A socket the program made itself is served through `ServerSocket::from_socket`, which takes
/// ownership of it (the safe way to do what `fd://N` refuses): any family, listening or
/// datagram; anything that is not a socket is refused in a line.
#[tokio::test]
async fn a_socket_the_program_made_is_served_from_socket() {
    let shutdown = CancellationToken::new();
    let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at: Endpoint = format!("tcp://{}", mine.local_addr().unwrap()).parse().unwrap();
    let socket = net::ServerSocket::from_socket(mine).unwrap();
    assert_eq!(socket.local_endpoint(), at.to_string());
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Upper), shutdown.clone()));
    assert_eq!(exchange(&at, b"mine", WAIT).await, Ok(b"MINE".to_vec()));

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_at = udp.local_addr().unwrap();
    let socket = net::ServerSocket::from_socket(udp).unwrap();
    assert_eq!(socket.local_endpoint(), format!("udp://{udp_at}"));
    tokio::spawn(server::run(socket, ServerConfig::new(Service::Echo), shutdown.clone()));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"dgram", udp_at).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, client.recv(&mut buf)).await.expect("an answer").unwrap();
    assert_eq!(&buf[..n], b"dgram");

    let file = tempfile::tempfile().unwrap();
    let e = net::ServerSocket::from_socket(file).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("is not a socket (it is a regular file"), "{e}");
    shutdown.cancel();
}

/// Every future a caller may want to spawn on a multi-threaded runtime is `Send`. `client::pipe`
/// and the client's handshake were not: their two directions shared counters in `Cell`s.
#[allow(dead_code)]
fn the_public_futures_are_send(socket: net::ClientSocket, stream: tokio::net::TcpStream) {
    fn send<T: Send>(_: T) {}
    let opts = sockit::client::ClientOptions::default();
    send(sockit::client::pipe(socket, tokio::io::empty(), tokio::io::sink(), &opts));
    let mut stream = stream;
    send(sockit::auth::client_handshake(&mut stream, sockit::proto::ServiceKind::Exec, None, None));
}
