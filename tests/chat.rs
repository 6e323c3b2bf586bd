//! The `chat` service: delivery to everyone else exactly once and in order, names, commands,
//! limits, and clients that stop reading. Every wait is bounded by a read timeout.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::{Server, have};

const WAIT: Duration = Duration::from_secs(20);

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = Client { writer: s.try_clone().unwrap(), reader: BufReader::new(s) };
        let welcome = c.line();
        assert!(welcome.starts_with("* welcome, guest"), "{welcome:?}");
        c
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line, without its newline; panics after the read timeout.
    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l).unwrap_or_else(|e| panic!("no line within {WAIT:?}: {e}"));
        assert!(n > 0, "the server closed the connection");
        l.trim_end_matches('\n').to_string()
    }

    /// The next line that satisfies `pred`, skipping others.
    fn until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.line();
            if pred(&l) {
                return l;
            }
        }
    }
}

fn chat_server() -> Server {
    Server::start(&["127.0.0.1:0", "chat"])
}

#[test]
fn names_notices_and_commands() {
    let srv = chat_server();
    let mut a = Client::connect(&srv.addr());
    let mut b = Client::connect(&srv.addr());
    assert!(a.until(|l| l.ends_with(" joined")).starts_with("* guest"));
    a.send("/nick alice");
    assert!(a.line().ends_with(" is now alice"));
    assert!(b.line().ends_with(" is now alice"));
    a.send("hello, room");
    assert_eq!(b.line(), "<alice> hello, room");
    b.send("/nick alice");
    assert_eq!(b.line(), "* alice is taken");
    b.send("/nick has space");
    assert_eq!(b.line(), "* a nickname is one word");
    b.send("/nick ünïcode");
    assert!(b.line().starts_with("* a nickname has letters, digits"));
    b.send("/nick bob");
    assert_eq!(b.line(), "* guest2 is now bob");
    assert_eq!(a.line(), "* guest2 is now bob");
    b.send("/who");
    assert_eq!(b.line(), "* 2 here: alice, bob");
    b.send("/dance");
    assert!(b.line().starts_with("* unknown command"));
    // A sender never hears its own line back.
    b.send("bob here");
    assert_eq!(a.line(), "<bob> bob here");
    a.send("/who");
    assert_eq!(a.line(), "* 2 here: alice, bob");
    b.send("/quit");
    assert_eq!(a.line(), "* bob left");
    let mut rest = String::new();
    assert_eq!(b.reader.read_line(&mut rest).unwrap(), 0, "the session ends after /quit: {rest:?}");
}

#[test]
fn a_line_over_the_limit_is_refused_and_the_session_goes_on() {
    let srv = Server::start(&["127.0.0.1:0", "chat", "--max-frame", "100"]);
    let mut a = Client::connect(&srv.addr());
    let mut b = Client::connect(&srv.addr());
    a.until(|l| l.ends_with("joined"));
    a.send(&"x".repeat(5000));
    assert_eq!(a.line(), "* line too long (the limit is 100 bytes); not sent");
    a.send("short");
    assert_eq!(b.line(), "<guest1> short", "nothing of the long line reached anyone");
    // The log counts every byte that came in, the refused line's too, and a last line that
    // never got its newline.
    a.writer.write_all(b"/quit").unwrap();
    a.writer.shutdown(std::net::Shutdown::Write).unwrap();
    let local = a.writer.local_addr().unwrap().to_string();
    let line = srv.stderr.wait_for("a's log line", |l| l.starts_with(&local));
    // 5,001 + 6 + 5 = 5,012 bytes; without the refused line it would be 11 B.
    assert!(line.starts_with(&format!("{local}: 4.9 KiB in, ")), "{line}");
}

/// 200 clients each send 10 lines at once: every client gets every other client's lines
/// exactly once, in the order each sender sent them, and never its own.
#[test]
fn two_hundred_clients_get_every_line_once_in_order() {
    const CLIENTS: usize = 200;
    const LINES: usize = 10;
    let srv = chat_server();
    let addr = srv.addr();
    let ready = Arc::new(Barrier::new(CLIENTS));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, ready) = (addr.clone(), ready.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.send(&format!("/nick c{i}"));
                c.until(|l| l == format!("* guest{} is now c{i}", i + 1) || l.ends_with(&format!(" is now c{i}")));
                ready.wait();
                for k in 0..LINES {
                    c.send(&format!("m {i} {k}"));
                }
                let mut next = vec![0usize; CLIENTS];
                let mut got = 0;
                while got < (CLIENTS - 1) * LINES {
                    let l = c.line();
                    let Some(body) = l.strip_prefix('<') else { continue };
                    let (nick, text) = body.split_once("> ").unwrap_or_else(|| panic!("{l:?}"));
                    let mut words = text.split(' ');
                    assert_eq!(words.next(), Some("m"), "{l:?}");
                    let from: usize = words.next().unwrap().parse().unwrap();
                    let k: usize = words.next().unwrap().parse().unwrap();
                    assert_eq!(nick, format!("c{from}"), "{l:?}");
                    assert_ne!(from, i, "client {i} heard its own line");
                    assert_eq!(k, next[from], "client {i}: from c{from}, line {k} came when {} was due", next[from]);
                    next[from] += 1;
                    got += 1;
                }
                c.send("/quit");
                next
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let next = t.join().unwrap_or_else(|_| panic!("client {i} failed"));
        for (from, n) in next.iter().enumerate() {
            assert_eq!(*n, if from == i { 0 } else { LINES }, "client {i} got {n} lines from c{from}");
        }
    }
    eprintln!("{CLIENTS} clients, {} lines delivered in {:?}", CLIENTS * (CLIENTS - 1) * LINES, started.elapsed());
}

/// A client that never reads slows nobody: another client gets every line at once, and the
/// sleeper is told it lagged and is dropped.
#[test]
fn a_client_that_stops_reading_is_dropped_and_slows_nobody() {
    let srv = chat_server();
    let addr = srv.addr();
    // The sleeper's kernel buffer is kept small, so that its queue in the server fills.
    let sleeper = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&addr.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        TcpStream::from(s)
    };
    // Names go in the order members join, and connections are admitted concurrently: each waits
    // for its welcome before the next connects, so the sleeper is guest1 and the writer guest3.
    sleeper.set_read_timeout(Some(WAIT)).unwrap();
    let mut welcome = Vec::new();
    let mut byte = [0u8; 1];
    while !welcome.ends_with(b"\n") {
        assert_eq!((&sleeper).read(&mut byte).unwrap(), 1, "the sleeper's welcome");
        welcome.push(byte[0]);
    }
    assert!(welcome.starts_with(b"* welcome, guest1"), "{:?}", String::from_utf8_lossy(&welcome));
    let mut reader = Client::connect(&addr);
    let mut writer = Client::connect(&addr);
    // The reader joined after the sleeper: it sees the writer join.
    reader.until(|l| l.ends_with("joined"));
    let long = "y".repeat(4000);
    // More than fits in the socket buffers, the queue and the lag limit together.
    let lines = 12000;
    let sending = std::thread::spawn(move || {
        for i in 0..lines {
            writer.send(&format!("{i} {long}"));
        }
        writer
    });
    let started = Instant::now();
    let mut notices = Vec::new();
    let mut i = 0;
    while i < lines {
        let l = reader.line();
        if !l.starts_with("<guest3>") {
            notices.push(l);
            continue;
        }
        assert!(l.starts_with(&format!("<guest3> {i} ")), "line {i}: {}", &l[..30.min(l.len())]);
        i += 1;
    }
    let took = started.elapsed();
    let _writer = sending.join().unwrap();
    assert!(took < Duration::from_secs(60), "the reader took {took:?} for {lines} lines");
    assert_eq!(notices, ["* guest1 left"], "the sleeper is dropped, and the reader missed nothing");
    // The server has closed the sleeper's connection: reading it to the end takes no longer
    // than what is buffered. (It may find "* dropped: …" at the end, if its socket had room.)
    let mut r = BufReader::new(sleeper);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the sleeper's connection is still open: {e}"),
        }
    }
}

#[test]
fn nc_and_python_clients_chat_with_each_other() {
    let srv = chat_server();
    let mut watcher = Client::connect(&srv.addr());
    let code = "import socket,sys\n\
        s=socket.create_connection((sys.argv[1],int(sys.argv[2])))\n\
        f=s.makefile('rwb')\n\
        f.readline()\n\
        f.write(b'/nick py\\nhello from python\\n/quit\\n'); f.flush()\n\
        for line in f: pass\n";
    let (host, port) = srv.addr().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let r = support::python(code, &[&host, &port], b"");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(watcher.until(|l| l.starts_with('<')), "<py> hello from python");
    if !have("nc") {
        eprintln!("skipped the nc half: nc is not installed");
        return;
    }
    let mut nc = std::process::Command::new("nc")
        .args(["-q", "1", &host, &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    nc.stdin.take().unwrap().write_all(b"/nick netcat\nhi from nc\n").unwrap();
    assert_eq!(watcher.until(|l| l.starts_with('<')), "<netcat> hi from nc");
    let _ = support::wait_bounded(&mut nc, WAIT);
}

#[test]
fn chat_refuses_len_framing_and_datagrams() {
    for framing in ["len", "raw"] {
        let r = support::sockit_run(&["serve", "127.0.0.1:0", "chat", "--framing", framing], b"");
        support::assert_fails(&r, 2, &["chat is line-based"]);
    }
    let r = support::sockit_run(&["serve", "udp://127.0.0.1:0", "chat"], b"");
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("stream socket"), "{}", r.stderr);
}
