//! Interoperability with real peers, as real processes on real sockets: the seed tutorials'
//! Python programs (unchanged) and short Python clients in their style against every sockit
//! service; sockit's own client (`send`, `connect` with piped stdin) against the seed servers;
//! OpenBSD `nc` and `socat` against sockit over TCP, UDP and Unix sockets; every Unix socket
//! type (stream, datagram, seqpacket, abstract names); `--framing len` and `--framing line`;
//! and the `print` service's output, which must name each message's sender.
//!
//! Everything runs on loopback or in a temporary directory, on ports the kernel picks. Servers
//! are waited for by what they print when ready, never by sleeping, and every wait is bounded.

mod support;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Asserts that a peer program exited with status 0 and returns its stdout as text.
fn ok(ran: &Ran, what: &str) -> String {
    assert_eq!(ran.code, Some(0), "{what} failed; stdout: {:?}; stderr: {}", ran.stdout_text(), ran.stderr);
    ran.stdout_text()
}

/// Runs inline Python (`sys.argv[1:]` = `args`) and returns its stdout, requiring success.
fn py(code: &str, args: &[&str]) -> String {
    ok(&python(code, args, b""), "python")
}

/// Runs `sockit ARGS…` with `input` on stdin and returns its stdout, requiring success.
fn sockit_ok(args: &[&str], input: &[u8]) -> String {
    ok(&sockit_run(args, input), &format!("sockit {}", args.join(" ")))
}

/// Runs a tool (`nc`, `socat`) with `input` on stdin and returns its stdout, requiring success.
fn tool(name: &str, args: &[&str], input: &[u8]) -> String {
    ok(&run(std::process::Command::new(name).args(args), input), &format!("{name} {}", args.join(" ")))
}

/// A Unix socket path inside `dir`, as a string.
fn sock_path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().expect("a UTF-8 temp path").to_owned()
}

/// An abstract socket name unique to this test process and `tag`.
fn abstract_name(tag: &str) -> String {
    format!("sockit-interop-{}-{tag}", std::process::id())
}

/// Splits a `print` line (`<time> <peer> <text>`) into its peer and text, checking the time is
/// RFC 3339 UTC.
fn print_line(line: &str) -> (String, String) {
    let mut parts = line.splitn(3, ' ');
    assert_rfc3339(parts.next().unwrap_or_default(), line);
    let peer = parts.next().unwrap_or_default().to_owned();
    let text = parts.next().unwrap_or_default().to_owned();
    (peer, text)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…]Z`.
fn assert_rfc3339(t: &str, context: &str) {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[b.len() - 1] == b'Z'
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21));
    assert!(ok, "'{t}' is not an RFC 3339 UTC time, in print line {context:?}");
}

/// Waits for the `print` line whose text is `text` and returns its peer.
fn printed_from(server: &Server, text: &str) -> String {
    let line = server.stdout.wait_for(&format!("printing {text:?}"), |l| l.ends_with(&format!(" {text}")));
    let (peer, got) = print_line(&line);
    assert_eq!(got, text, "{line}");
    peer
}

/// Starts a server on `::1`, or says why the test is skipped when the machine has no IPv6.
fn start_on_ipv6(args: &[&str]) -> Option<Server> {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return None;
    }
    Some(Server::start(args))
}

/// Stops a server (SIGINT), asserts the orderly exit, and waits for a stderr line (a connection's
/// line or the summary) that contains every one of `parts`.
fn stop_expecting(server: Server, parts: &[&str]) {
    // The server's lines are collected by a thread; after the exit they all arrive, so wait for
    // the one wanted instead of trusting a snapshot taken at exit.
    let stderr = server.stderr.clone();
    let done = server.stop();
    assert!(done.status.success(), "server exit: {:?}; stderr: {:#?}", done.status, done.stderr);
    stderr.wait_for(&format!("with {parts:?}"), |l| parts.iter().all(|p| l.contains(p)));
}

/// An inline Python server on a Unix socket (the seeds have none; launch.py reports ports
/// only). It gets the socket path as `sys.argv[1]` and must print `READY` on stderr once it
/// listens or is bound; its stdout is collected until it exits.
struct PyUnixServer {
    child: std::process::Child,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl PyUnixServer {
    fn start(code: &str, path: &str) -> PyUnixServer {
        use std::io::{BufRead, Read};
        use std::process::{Command, Stdio};
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(code)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(LIMIT) {
                Ok(line) if line == "READY" => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    // Never leave the server running after a failed start.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("python unix server not ready within {LIMIT:?}; stderr: {seen:#?}");
                }
            }
        }
        PyUnixServer { child, stdout: Some(stdout) }
    }

    /// Waits for the server to exit by itself and returns what it printed.
    fn finish(mut self) -> String {
        let status = wait_bounded(&mut self.child, LIMIT).expect("python unix server did not exit in time");
        assert!(status.success(), "python unix server: {status:?}");
        self.stdout.take().unwrap().join().unwrap()
    }
}

impl Drop for PyUnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python client for `--framing len`: sends each message argument as a 4-byte big-endian
/// length plus payload, reads one framed answer per message and prints its repr (its length and
/// bytes when long; `#big:N` sends N bytes of `x`), then half-closes and prints what follows.
/// argv: FAMILY ADDRESS MESSAGE…, FAMILY being `tcp` (ADDRESS = PORT) or `unix` (a path).
const LEN_CLIENT: &str = r##"
import socket, struct, sys
family, address, msgs = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_INET if family == "tcp" else socket.AF_UNIX)
s.connect(("127.0.0.1", int(address)) if family == "tcp" else address)
answers = s.makefile("rb")  # read(n) returns exactly n bytes unless the server closes
for m in msgs:
    m = b"x" * int(m[5:]) if m.startswith("#big:") else m.encode()
    s.sendall(struct.pack(">I", len(m)) + m)
    n, = struct.unpack(">I", answers.read(4))
    data = answers.read(n)
    print(repr(data) if n <= 64 else "%d bytes, all %r" % (len(data), set(data)))
s.shutdown(socket.SHUT_WR)
print("after:", answers.read())
"##;

// ---------------------------------------------------------------------------------------------
// 1. Python clients, the seeds' and in their style, against every sockit service

#[test]
fn seed_upper_client_with_its_own_message_against_sockit_upper() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let ran = python_client("tcp_upper_client.py", "127.0.0.1", server.port(), &["grüße, sockit"], b"");
    // ASCII only is upper-cased, like Python's bytes.upper: the UTF-8 bytes come back as sent.
    assert_eq!(ok(&ran, "seed client"), "recv: b'GR\\xc3\\xbc\\xc3\\x9fE, SOCKIT'\n");
    stop_expecting(server, &["127.0.0.1:", "closed by client"]);
}

#[test]
fn seed_qa_client_against_sockit_qa() {
    let server = Server::start(&["127.0.0.1:0", "qa"]);
    let ran = python_client(
        "tcp_qa_client.py",
        "127.0.0.1",
        server.port(),
        &[],
        b"how are u\nhow old are u\nwhat is this\nHow Are U\nbye\n",
    );
    assert_eq!(ok(&ran, "seed qa client"), "data fine\ndata nicai\ndata no\ndata fine\ndata bye\n");
    // 'bye' ends the session on the server's side, as the seed client expects.
    stop_expecting(server, &["127.0.0.1:", "session ended"]);
}

#[test]
fn seed_qa_client_against_sockit_qa_with_dict_file_and_default_answer() {
    let dir = temp_dir();
    let dict = dir.path().join("answers.txt");
    std::fs::write(&dict, "# the seed's questions, other answers\nhow are u = very well\nping = pong\n").unwrap();
    let server = Server::start(&["127.0.0.1:0", "qa", "--dict", dict.to_str().unwrap(), "--default-answer", "?"]);
    let ran =
        python_client("tcp_qa_client.py", "127.0.0.1", server.port(), &[], b"how are u\nping\nhow old are u\nbye\n");
    assert_eq!(ok(&ran, "seed qa client"), "data very well\ndata pong\ndata ?\ndata bye\n");
}

#[test]
fn seed_prompt_client_via_stdin_against_sockit_echo() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    // The seed skips empty input (its recv() would wait forever), so the blank line sends nothing.
    let ran = python_client("tcp_prompt_client.py", "127.0.0.1", server.port(), &[], b"hello\n\n  world  \n");
    assert_eq!(ok(&ran, "seed prompt client"), ">>:recv: hello\n>>:>>:recv: world\n>>:");
    stop_expecting(server, &["10 B in, 10 B out", "closed by client"]);
}

#[test]
fn seed_prompt_client_via_stdin_against_sockit_reply() {
    let server = Server::start(&["127.0.0.1:0", "reply", "Hi there"]);
    let ran = python_client("tcp_prompt_client.py", "127.0.0.1", server.port(), &[], b"one\ntwo\n");
    // Bare text in, bare text out: the answer carries the question's (absent) line ending.
    assert_eq!(ok(&ran, "seed prompt client"), ">>:recv: Hi there\n>>:recv: Hi there\n>>:");
}

#[test]
fn python_client_sends_binary_to_sockit_echo_and_gets_every_byte_back() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let out = py(
        r#"
import socket, sys
client = socket.socket()
client.connect(("127.0.0.1", int(sys.argv[1])))
msg = bytes(range(256)) * 400
client.sendall(msg)
client.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = client.recv(65536)
    if not chunk:
        break
    data += chunk
client.close()
print(len(data), data == msg)
"#,
        &[&server.port().to_string()],
    );
    assert_eq!(out, "102400 True\n");
    stop_expecting(server, &["100.0 KiB in, 100.0 KiB out", "closed by client"]);
}

#[test]
fn python_client_against_sockit_print_shows_each_line_with_the_clients_address() {
    let server = Server::start(&["127.0.0.1:0", "print"]);
    let me = py(
        r#"
import socket, sys
client = socket.socket()
client.connect(("127.0.0.1", int(sys.argv[1])))
client.sendall("hello print\nsecond line\tTAB\n".encode())
print("%s:%d" % client.getsockname(), flush=True)
client.shutdown(socket.SHUT_WR)
print(client.recv(1024))
client.close()
"#,
        &[&server.port().to_string()],
    );
    let mut lines = me.lines();
    let client_addr = lines.next().unwrap().to_owned();
    // print answers nothing: the client reads end-of-stream at once.
    assert_eq!(lines.next(), Some("b''"));
    assert_eq!(printed_from(&server, "hello print"), client_addr);
    assert_eq!(printed_from(&server, "second line\\tTAB"), client_addr);
    stop_expecting(server, &[&format!("{client_addr}: "), "0 B out", "closed by client"]);
}

/// Starts `sockit serve ARGS…` with its stdout going to a file in `dir`, whose path is returned.
fn serve_to_file(dir: &tempfile::TempDir, args: &[&str]) -> (Server, std::path::PathBuf) {
    let path = dir.path().join("stdout");
    let mut cmd = sockit();
    cmd.arg("serve").args(args);
    (Server::start_writing_to(cmd, std::fs::File::create(&path).unwrap()), path)
}

#[test]
fn nc_sends_a_binary_file_to_print_raw_once_as_to_nc_l() {
    require!("nc");
    let dir = temp_dir();
    let (mut server, out) = serve_to_file(&dir, &["127.0.0.1:0", "print", "--raw", "--once"]);
    // Every byte value, NULs, escapes and lone line ends included, and more than one read's worth.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    tool("nc", &["-N", "127.0.0.1", &server.port().to_string()], &data);
    // --once: the server ends by itself when its one client has gone, as `nc -l` does.
    assert!(server.wait().status.success());
    assert!(std::fs::read(&out).unwrap() == data, "the file differs from what was sent");
}

#[test]
fn print_raw_puts_back_line_ends_under_line_framing_and_adds_nothing_to_datagrams() {
    let dir = temp_dir();
    let (mut server, out) = serve_to_file(&dir, &["127.0.0.1:0", "print", "--raw", "--framing", "line", "--once"]);
    sockit_ok(&["connect", &server.addr()], b"one\n\ttwo\r\n\nlast\n");
    assert!(server.wait().status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"one\n\ttwo\r\n\nlast\n");

    let (server, out) = serve_to_file(&dir, &["udp://127.0.0.1:0", "print", "--raw"]);
    py(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for d in (b"a\n", b"\x00b", b"", b"c"):
    s.sendto(d, ("127.0.0.1", int(sys.argv[1])))
"#,
        &[&server.port().to_string()],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(&out).unwrap().len() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.stop();
    assert_eq!(std::fs::read(&out).unwrap(), b"a\n\x00bc");
}

#[test]
fn seed_udp_hello_client_against_sockit_udp_echo() {
    let server = Server::start(&["udp://127.0.0.1:0", "echo"]);
    let ran = python_client("udp_hello_client.py", "127.0.0.1", server.port(), &[], b"");
    assert_eq!(ok(&ran, "seed udp client"), format!("hello ('127.0.0.1', {})\n", server.port()));
    stop_expecting(server, &["1 datagram in, 1 out", "5 B in, 5 B out"]);
}

#[test]
fn seed_udp_hello_client_against_sockit_udp_reply_and_upper() {
    let reply = Server::start(&["udp://127.0.0.1:0", "reply", "Hi"]);
    let ran = python_client("udp_hello_client.py", "127.0.0.1", reply.port(), &[], b"");
    assert_eq!(ok(&ran, "seed udp client"), format!("Hi ('127.0.0.1', {})\n", reply.port()));
    let upper = Server::start(&["udp://127.0.0.1:0", "upper"]);
    let ran = python_client("udp_hello_client.py", "127.0.0.1", upper.port(), &[], b"");
    assert_eq!(ok(&ran, "seed udp client"), format!("HELLO ('127.0.0.1', {})\n", upper.port()));
}

#[test]
fn python_udp_client_against_sockit_udp_qa() {
    let server = Server::start(&["udp://127.0.0.1:0", "qa"]);
    let out = py(
        r#"
import socket, sys
udp_sk = socket.socket(type=socket.SOCK_DGRAM)
udp_sk.settimeout(5)
for q in [b"how are u", b"how old are u\n", b"who?", b"bye"]:
    udp_sk.sendto(q, ("127.0.0.1", int(sys.argv[1])))
    print(udp_sk.recvfrom(1024)[0])
"#,
        &[&server.port().to_string()],
    );
    // Each datagram is a question; an answer ends like its question did. On UDP there is no
    // session, so 'bye' is just answered.
    assert_eq!(out, "b'fine'\nb'nicai\\n'\nb'no'\nb'bye'\n");
}

#[test]
fn python_udp_empty_datagram_is_a_message_for_sockit_qa_reply_and_print() {
    // An empty datagram is a message like any other (as an empty `len` frame is): qa answers
    // its default, reply its text, and print shows it. A seed-style client waits for the answer.
    let client = r#"
import socket, sys
udp_sk = socket.socket(type=socket.SOCK_DGRAM)
udp_sk.settimeout(3)
udp_sk.sendto(b"", ("127.0.0.1", int(sys.argv[1])))
try:
    print(udp_sk.recvfrom(1024)[0])
except socket.timeout:
    print("no answer")
"#;
    let qa = Server::start(&["udp://127.0.0.1:0", "qa"]);
    let reply = Server::start(&["udp://127.0.0.1:0", "reply", "Hi"]);
    let print = Server::start(&["udp://127.0.0.1:0", "print"]);
    let qa_port = qa.port().to_string();
    let reply_port = reply.port().to_string();
    let print_port = print.port().to_string();
    // The three exchanges run at once, so a missing answer costs one timeout, not three.
    let (qa_out, reply_out) = std::thread::scope(|s| {
        let q = s.spawn(|| py(client, &[&qa_port]));
        let r = s.spawn(|| py(client, &[&reply_port]));
        (q.join().unwrap(), r.join().unwrap())
    });
    assert_eq!(qa_out, "b'no'\n", "qa");
    assert_eq!(reply_out, "b'Hi'\n", "reply");
    let out = py(
        r#"
import socket, sys
s = socket.socket(type=socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.sendto(b"", ("127.0.0.1", int(sys.argv[1])))
s.sendto(b"after the empty one", ("127.0.0.1", int(sys.argv[1])))
print("%s:%d" % s.getsockname())
"#,
        &[&print_port],
    );
    let me = out.trim_end();
    assert_eq!(printed_from(&print, "after the empty one"), me);
    let lines = print.stdout.snapshot();
    let empty = lines.iter().position(|l| l.ends_with(&format!(" {me} ")));
    let after = lines.iter().position(|l| l.ends_with(" after the empty one"));
    assert!(empty.is_some() && empty < after, "no line for the empty datagram before the next: {lines:#?}");
    stop_expecting(print, &["2 datagrams in, 0 out"]);
}

#[test]
fn seed_udp_send_against_sockit_udp_print_shows_the_senders_address() {
    let server = Server::start(&["udp://127.0.0.1:0", "print"]);
    ok(&python_client("udp_send.py", "127.0.0.1", server.port(), &["hello from the seed"], b""), "udp_send.py");
    let peer = printed_from(&server, "hello from the seed");
    let port = peer.strip_prefix("127.0.0.1:").unwrap_or_else(|| panic!("peer {peer} is not 127.0.0.1:PORT"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("peer {peer} has no port"));
    assert_ne!(port, 0);
    assert_ne!(port, server.port(), "the sender's port, not the server's");
    stop_expecting(server, &["1 datagram in, 0 out"]);
}

#[test]
fn seed_udp_send_against_sockit_udp_print_hex_dumps_the_message() {
    let server = Server::start(&["udp://127.0.0.1:0", "print", "--hex"]);
    ok(&python_client("udp_send.py", "127.0.0.1", server.port(), &["hello, world"], b""), "udp_send.py");
    let head = server.stdout.wait_for("a hex dump header", |l| l.ends_with(" 12 bytes"));
    let (peer, _) = print_line(&head);
    assert!(peer.starts_with("127.0.0.1:"), "{head}");
    let dump = server.stdout.wait_for("the hex dump", |l| l.starts_with("00000000"));
    assert_eq!(dump, format!("00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64{}|hello, world|", " ".repeat(14)));
}

// ---------------------------------------------------------------------------------------------
// 2. sockit's client against the seed servers, and against Python servers on Unix sockets

#[test]
fn sockit_connect_piped_against_seed_upper_server() {
    let py = PythonServer::start("tcp_upper_server.py", &[]);
    let out = sockit_ok(&["connect", &py.addr()], b"hello from stdin");
    // Raw: bytes as they came, and sockit exits when the seed closes after our half-close.
    assert_eq!(out, "HELLO FROM STDIN");
    py.stdout.wait_for("the seed's recv line", |l| l == "recv: b'hello from stdin'");
}

#[test]
fn sockit_connect_verbose_names_the_address_reached_and_what_moved() {
    let py = PythonServer::start("tcp_upper_server.py", &[]);
    let port = py.addr().rsplit(':').next().unwrap().to_owned();
    let ran = sockit_run(&["-v", "connect", &format!("localhost:{port}")], b"hello");
    assert_eq!(ok(&ran, "sockit -v connect"), "HELLO");
    // localhost may be ::1 first: the seed listens on 127.0.0.1 only, so that is where we got.
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", ran.stderr);
    let reached = format!("sockit: connected to tcp://localhost:{port} at 127.0.0.1:{port} from 127.0.0.1:");
    assert!(lines[0].starts_with(&reached), "{}", ran.stderr);
    assert!(lines[1].starts_with("sockit: 5 B sent, 5 B received in "), "{}", ran.stderr);
    // Without -v, nothing on stderr.
    let py = PythonServer::start("tcp_upper_server.py", &[]);
    let quiet = sockit_run(&["connect", &py.addr()], b"x");
    assert_eq!((quiet.code, quiet.stderr.as_str()), (Some(0), ""));
}

#[test]
fn sockit_send_against_seed_qa_server() {
    let mut py = PythonServer::start("tcp_qa_server.py", &[]);
    assert_eq!(sockit_ok(&["send", &py.addr(), "how old are u"], b""), "nicai");
    py.stdout.wait_for("the question", |l| l == "data how old are u");
    assert!(py.wait().success());
}

#[test]
fn sockit_connect_piped_against_seed_qa_server() {
    let py = PythonServer::start("tcp_qa_server.py", &[]);
    // The seed matches the whole recv() against its dictionary: send the question bare.
    assert_eq!(sockit_ok(&["connect", &py.addr()], b"how are u"), "fine");
    py.stdout.wait_for("the seed's address line", |l| l.starts_with("addr ('127.0.0.1', "));
}

#[test]
fn sockit_send_against_seed_notice_server() {
    let mut py = PythonServer::start("tcp_notice_server.py", &[]);
    assert_eq!(sockit_ok(&["send", &py.addr(), "notice me"], b""), "the server has received data");
    py.stdout.wait_for("the seed's address line", |l| l.starts_with("('127.0.0.1', "));
    py.stdout.wait_for("the message", |l| l == "notice me");
    assert!(py.wait().success());
}

#[test]
fn sockit_connect_piped_against_seed_notice_server_exits_when_it_closes() {
    let py = PythonServer::start("tcp_notice_server.py", &[]);
    // The seed answers and closes without waiting for our end of stream: sockit must still
    // print the answer and exit.
    assert_eq!(sockit_ok(&["connect", &py.addr()], b"hello"), "the server has received data");
    py.stdout.wait_for("the message", |l| l == "hello");
}

#[test]
fn sockit_send_and_connect_against_seed_reuse_server() {
    let py = PythonServer::start("tcp_reuse_server.py", &[]);
    assert_eq!(sockit_ok(&["send", &py.addr(), "knock"], b""), "Hi");
    py.stdout.wait_for("the message", |l| l == "b'knock'");
    let py = PythonServer::start("tcp_reuse_server.py", &[]);
    assert_eq!(sockit_ok(&["connect", &py.addr()], b"knock knock"), "Hi");
    py.stdout.wait_for("the message", |l| l == "b'knock knock'");
}

#[test]
fn sockit_send_udp_against_seed_hi_server() {
    let py = PythonServer::start("udp_hi_server.py", &[]);
    // A datagram answer is printed as a line.
    assert_eq!(sockit_ok(&["send", &format!("udp://{}", py.addr()), "hello"], b""), "Hi\n");
    py.stdout.wait_for("the datagram", |l| l == "b'hello'");
}

#[test]
fn sockit_connect_udp_piped_against_seed_hi_server_sends_one_datagram_per_line() {
    let py = PythonServer::start("udp_hi_server.py", &[]);
    let out = sockit_ok(&["connect", &format!("udp://{}", py.addr())], b"one\ntwo\nthree\n");
    assert_eq!(out, "Hi\nHi\nHi\n");
    for word in ["one", "two", "three"] {
        py.stdout.wait_for(word, |l| l == format!("b'{word}'"));
    }
}

/// Echoes each datagram `peer` receives until `total` bytes came; returns them one by one.
fn echo_datagrams(peer: &std::net::UdpSocket, total: usize) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while got.iter().map(Vec::len).sum::<usize>() < total {
        let (n, from) = peer.recv_from(&mut buf).expect("a datagram");
        peer.send_to(&buf[..n], from).unwrap();
        got.push(buf[..n].to_vec());
    }
    got
}

/// `--per-read`, as `nc -u`: each read of stdin is one datagram, newlines and NULs included, and
/// each answer is written as it came, with no newline added. A peer in Rust records what came.
#[test]
fn sockit_connect_per_read_sends_bytes_as_read_and_writes_answers_untouched() {
    let peer = std::sync::Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let ep = format!("udp://{}", peer.local_addr().unwrap());
    // A few bytes written at once are one read, so one datagram, exactly as they are.
    let small = b"a\nb\n\0no newline at the end";
    let p = peer.clone();
    let peer_side = std::thread::spawn(move || echo_datagrams(&p, small.len()));
    let out = sockit_run(&["connect", &ep, "--per-read", "--timeout", "1s"], small);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, small);
    assert_eq!(peer_side.join().unwrap(), [small.to_vec()]);
    // More than one datagram carries (but less than the receive buffers hold, so that none is
    // lost): cut where the reads are, none over 65,507 bytes, and every byte back in order.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let total = big.len();
    let peer_side = std::thread::spawn(move || echo_datagrams(&peer, total));
    let out = sockit_run(&["connect", &ep, "--per-read", "--timeout", "1s"], &big);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let sizes: Vec<usize> = peer_side.join().unwrap().iter().map(Vec::len).collect();
    assert!(sizes.len() >= 2 && sizes.iter().all(|&n| n <= 65_507), "{sizes:?}");
    assert!(out.stdout == big, "{} bytes back of {total}", out.stdout.len());
}

/// `--per-read` on seqpacket: the packet goes as read, the answer comes back without a newline.
#[test]
fn sockit_connect_per_read_on_seqpacket_keeps_the_bytes_as_they_are() {
    let dir = temp_dir();
    let path = sock_path(&dir, "echo.sock");
    let server = Server::start(&[&format!("unix-seqpacket:{path}"), "echo"]);
    let ep = format!("unix-seqpacket:{path}");
    assert_eq!(sockit_ok(&["connect", &ep, "--per-read"], b"x\ny"), "x\ny");
    // Without it, each line is a packet and each answer a line.
    assert_eq!(sockit_ok(&["connect", &ep], b"x\ny"), "x\ny\n");
    drop(server);
}

#[test]
fn sockit_send_no_wait_udp_against_seed_print_server() {
    let py = PythonServer::start("udp_print_server.py", &[]);
    let out = sockit_ok(&["send", &format!("udp://{}", py.addr()), "hello printer", "--no-wait"], b"");
    assert_eq!(out, "");
    // The seed prints the text, then the sender's port and address.
    let line = py.stdout.wait_for("the datagram", |l| l.starts_with("hello printer "));
    let rest: Vec<&str> = line["hello printer ".len()..].split(' ').collect();
    assert_eq!(rest.len(), 2, "{line}");
    assert!(rest[0].parse::<u16>().is_ok_and(|p| p != 0), "{line}");
    assert_eq!(rest[1], "127.0.0.1", "{line}");
}

#[test]
fn sockit_connect_udp_piped_against_seed_print_server() {
    let py = PythonServer::start("udp_print_server.py", &[]);
    let out = sockit_ok(&["connect", &format!("udp://{}", py.addr()), "--timeout", "200ms"], b"first\nsecond\n");
    assert_eq!(out, "", "the seed answers nothing");
    py.stdout.wait_for("the first datagram", |l| l.starts_with("first ") && l.ends_with(" 127.0.0.1"));
    py.stdout.wait_for("the second datagram", |l| l.starts_with("second ") && l.ends_with(" 127.0.0.1"));
}

#[test]
fn sockit_send_against_python_unix_stream_upper_server() {
    let dir = temp_dir();
    let path = sock_path(&dir, "upper.sock");
    let server = PyUnixServer::start(
        r#"
import socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen()
print("READY", file=sys.stderr, flush=True)
conn, addr = server.accept()
while True:
    data = conn.recv(1024)
    if not data:
        break
    print("recv:", data, flush=True)
    conn.send(data.upper())
conn.close()
server.close()
"#,
        &path,
    );
    assert_eq!(sockit_ok(&["send", &format!("unix:{path}"), "hello unix"], b""), "HELLO UNIX");
    assert_eq!(server.finish(), "recv: b'hello unix'\n");
}

#[test]
fn sockit_send_and_connect_against_python_unix_dgram_hi_server() {
    let dir = temp_dir();
    let path = sock_path(&dir, "hi.sock");
    let server = PyUnixServer::start(
        r#"
import socket, sys
sk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sk.bind(sys.argv[1])
print("READY", file=sys.stderr, flush=True)
for _ in range(3):
    msg, addr = sk.recvfrom(1024)
    print(msg, addr, flush=True)
    sk.sendto(b"Hi", addr)  # sockit's client must have an address to be answered at
"#,
        &path,
    );
    let endpoint = format!("unix-dgram:{path}");
    assert_eq!(sockit_ok(&["send", &endpoint, "hello"], b""), "Hi\n");
    assert_eq!(sockit_ok(&["connect", &endpoint], b"one\ntwo\n"), "Hi\nHi\n");
    let printed = server.finish();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    for (line, msg) in lines.iter().zip(["b'hello'", "b'one'", "b'two'"]) {
        // The client's address: an abstract name sockit bound for the purpose.
        assert!(line.starts_with(&format!("{msg} b'\\x00sockit-client-")), "{printed}");
    }
}

#[test]
fn sockit_connect_piped_against_python_seqpacket_qa_server() {
    let dir = temp_dir();
    let path = sock_path(&dir, "qa.sock");
    let server = PyUnixServer::start(
        r#"
import socket, sys
words = {"how are u": "fine", "how old are u": "nicai"}
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
s.listen(1)
print("READY", file=sys.stderr, flush=True)
conn, addr = s.accept()
while True:
    data = conn.recv(1024).decode()
    if not data:
        break
    print("data", data, flush=True)
    conn.sendall(words.get(data, "no").encode())
conn.close()
s.close()
"#,
        &path,
    );
    // Each stdin line is one packet, and each packet answer is printed as a line.
    let out = sockit_ok(&["connect", &format!("unix-seqpacket:{path}")], b"how are u\nhow old are u\nwhat\n");
    assert_eq!(out, "fine\nnicai\nno\n");
    assert_eq!(server.finish(), "data how are u\ndata how old are u\ndata what\n");
}

#[test]
fn sockit_connect_prints_an_empty_seqpacket_message_from_a_python_server_and_reads_on() {
    let dir = temp_dir();
    let path = sock_path(&dir, "three.sock");
    let server = PyUnixServer::start(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
s.listen(1)
print("READY", file=sys.stderr, flush=True)
conn, addr = s.accept()
for m in [b"first", b"", b"third"]:  # a zero-length packet is a message of its own
    conn.send(m)
conn.settimeout(10)
print("client sent:", conn.recv(1024), flush=True)
conn.close()
"#,
        &path,
    );
    // Only the server's close ends the exchange; the empty message is printed as an empty line.
    // stdin stays open until all three have been printed: the server closes only after our
    // half-close, so every packet is read while the connection is still open.
    let mut child = sockit()
        .args(["connect", &format!("unix-seqpacket:{path}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sockit connect");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut got = Vec::new();
    while got.len() < 3 {
        match rx.recv_timeout(LIMIT) {
            Ok(line) => got.push(line),
            // Disconnected: sockit exited early; a timeout: it printed fewer lines and hung.
            Err(_) => break,
        }
    }
    drop(stdin);
    let status = wait_bounded(&mut child, LIMIT).expect("sockit connect did not exit after the server closed");
    got.extend(rx.try_iter());
    assert_eq!(got, ["first", "", "third"]);
    assert!(status.success(), "sockit connect: {status:?}");
    assert_eq!(server.finish(), "client sent: b''\n");
}

// ---------------------------------------------------------------------------------------------
// 3. nc and socat against sockit

#[test]
fn nc_against_sockit_tcp_upper() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let out = tool("nc", &["-N", "127.0.0.1", &server.port().to_string()], b"hello nc\nline two\n");
    assert_eq!(out, "HELLO NC\nLINE TWO\n");
    stop_expecting(server, &["18 B in, 18 B out", "closed by client"]);
}

#[test]
fn nc_lines_against_sockit_tcp_qa_get_line_answers_and_bye_ends_the_session() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "qa"]);
    let out = tool(
        "nc",
        &["-N", "127.0.0.1", &server.port().to_string()],
        b"how are u\nhow old are u\r\nsomething else\nbye\nhow are u\n",
    );
    // Lines in, lines out (CRLF kept), nothing after 'bye'.
    assert_eq!(out, "fine\nnicai\r\nno\nbye\n");
    stop_expecting(server, &["session ended"]);
}

#[test]
fn nc_against_sockit_over_ipv6_loopback() {
    require!("nc");
    let Some(server) = start_on_ipv6(&["tcp6://[::1]:0", "reply", "hello v6"]) else { return };
    let out = tool("nc", &["-N", "::1", &server.port().to_string()], b"anyone?\n");
    assert_eq!(out, "hello v6\n");
    stop_expecting(server, &["[::1]:", "closed by client"]);
}

#[test]
fn nc_against_sockit_print_over_ipv6_shows_the_bracketed_sender() {
    require!("nc");
    let Some(server) = start_on_ipv6(&["[::1]:0", "print"]) else { return };
    let out = tool("nc", &["-N", "::1", &server.port().to_string()], b"from v6\n");
    assert_eq!(out, "");
    let peer = printed_from(&server, "from v6");
    assert!(peer.starts_with("[::1]:") && peer[6..].parse::<u16>().is_ok(), "peer {peer}");
}

#[test]
fn socat_against_sockit_tcp_reply() {
    require!("socat");
    let server = Server::start(&["127.0.0.1:0", "reply", "pong"]);
    let out = tool("socat", &["-", &format!("TCP:{}", server.addr())], b"ping\nping again\n");
    assert_eq!(out, "pong\npong\n");
}

#[test]
fn nc_against_sockit_print_hex_dump() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "print", "--hex"]);
    let out = tool("nc", &["-N", "127.0.0.1", &server.port().to_string()], b"hi\x00\x01\xff");
    assert_eq!(out, "");
    let head = server.stdout.wait_for("a hex dump header", |l| l.ends_with(" 5 bytes"));
    let (peer, _) = print_line(&head);
    assert!(peer.starts_with("127.0.0.1:"), "{head}");
    let dump = server.stdout.wait_for("the hex dump", |l| l.starts_with("00000000"));
    assert_eq!(dump, format!("00000000  68 69 00 01 ff{}|hi...|", " ".repeat(36)));
}

#[test]
fn nc_unix_against_sockit_unix_echo() {
    require!("nc");
    let dir = temp_dir();
    let path = sock_path(&dir, "s.sock");
    let server = Server::start(&[&format!("unix:{path}"), "echo"]);
    assert_eq!(server.endpoint, format!("unix://{path}"));
    let out = tool("nc", &["-N", "-U", &path], b"over a unix socket\n");
    assert_eq!(out, "over a unix socket\n");
    stop_expecting(server, &["unix(", "closed by client"]);
    assert!(!std::path::Path::new(&path).exists(), "the socket file is removed at exit");
}

#[test]
fn socat_unix_against_sockit_unix_qa() {
    require!("socat");
    let dir = temp_dir();
    let path = sock_path(&dir, "qa.sock");
    let _server = Server::start(&[&format!("unix://{path}"), "qa"]);
    let out = tool("socat", &["-", &format!("UNIX-CONNECT:{path}")], b"how old are u\nbye\n");
    assert_eq!(out, "nicai\nbye\n");
}

#[test]
fn socat_abstract_against_sockit_abstract_upper() {
    require!("socat");
    let name = abstract_name("socat-upper");
    let server = Server::start(&[&format!("unix:@{name}"), "upper"]);
    assert_eq!(server.endpoint, format!("unix:@{name}"));
    let out = tool("socat", &["-", &format!("ABSTRACT-CONNECT:{name}")], b"abstract\n");
    assert_eq!(out, "ABSTRACT\n");
}

#[test]
fn nc_udp_against_sockit_udp_upper() {
    require!("nc");
    let server = Server::start(&["udp://127.0.0.1:0", "upper"]);
    let out = tool("nc", &["-u", "-w1", "127.0.0.1", &server.port().to_string()], b"hello udp\n");
    assert_eq!(out, "HELLO UDP\n");
    stop_expecting(server, &["1 datagram in, 1 out"]);
}

#[test]
fn socat_udp_against_sockit_udp_qa() {
    require!("socat");
    let server = Server::start(&["udp://127.0.0.1:0", "qa"]);
    let out = tool("socat", &["-t1", "-", &format!("UDP:{}", server.addr())], b"how are u\n");
    assert_eq!(out, "fine\n");
}

#[test]
fn socat_udp6_against_sockit_udp_echo_on_ipv6_loopback() {
    require!("socat");
    let Some(server) = start_on_ipv6(&["udp6://[::1]:0", "echo"]) else { return };
    let out = tool("socat", &["-t1", "-", &format!("UDP6:[::1]:{}", server.port())], b"over udp6\n");
    assert_eq!(out, "over udp6\n");
    stop_expecting(server, &["1 datagram in, 1 out"]);
}

#[test]
fn nc_unix_dgram_against_sockit_unix_dgram_echo() {
    require!("nc");
    let dir = temp_dir();
    let path = sock_path(&dir, "d.sock");
    let server = Server::start(&[&format!("unix-dgram:{path}"), "echo"]);
    // OpenBSD nc binds its own /tmp/nc.XXXXXX socket for -Uu, so the server can answer.
    let out = tool("nc", &["-U", "-u", "-w1", &path], b"datagram via nc\n");
    assert_eq!(out, "datagram via nc\n");
    stop_expecting(server, &["1 datagram in, 1 out"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Unix-domain sockets from Python: stream, datagram, seqpacket, abstract names

#[test]
fn python_unix_stream_client_against_sockit_unix_upper() {
    let dir = temp_dir();
    let path = sock_path(&dir, "s.sock");
    let server = Server::start(&[&format!("unix:{path}"), "upper"]);
    let out = py(
        r#"
import os, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(sys.argv[1])
client.send(b"helloworld")
print("recv:", client.recv(1024))
print(os.getpid())
client.close()
"#,
        &[&path],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("recv: b'HELLOWORLD'"));
    let pid = lines.next().unwrap();
    // A connecting Unix client has no name; the server names it by its credentials.
    stop_expecting(server, &[&format!("unix(pid {pid}, uid "), "10 B in, 10 B out", "closed by client"]);
}

#[test]
fn python_unix_dgram_client_with_its_own_path_against_sockit_unix_dgram_reply() {
    let dir = temp_dir();
    let path = sock_path(&dir, "server.sock");
    let client_path = sock_path(&dir, "client.sock");
    let _server = Server::start(&[&format!("unix-dgram:{path}"), "reply", "got it"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[2])  # without an address of its own the client could not be answered
s.settimeout(5)
s.sendto(b"hello", sys.argv[1])
data, addr = s.recvfrom(1024)
print(data, addr)
s.sendto(b"line\n", sys.argv[1])
print(s.recvfrom(1024)[0])
"#,
        &[&path, &client_path],
    );
    assert_eq!(out, format!("b'got it' {path}\nb'got it\\n'\n"));
}

#[test]
fn python_unix_dgram_client_without_an_address_is_reported_not_answered() {
    let dir = temp_dir();
    let path = sock_path(&dir, "server.sock");
    let server = Server::start(&[&format!("unix-dgram:{path}"), "echo"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"who am i", sys.argv[1])
print("sent")
"#,
        &[&path],
    );
    assert_eq!(out, "sent\n");
    server.stderr.wait_for("the unanswerable client reported", |l| l.contains("cannot answer a unix-dgram client"));
    stop_expecting(server, &["1 datagram in, 0 out"]);
}

/// A Unix datagram may be longer than the 64 KiB a sockit server reads; such a one is reported
/// and left unanswered, never answered cut short, and the next one is answered as usual.
#[test]
fn a_unix_datagram_too_long_for_the_server_is_reported_not_answered_cut_short() {
    let dir = temp_dir();
    let path = sock_path(&dir, "server.sock");
    let client_path = sock_path(&dir, "client.sock");
    let server = Server::start(&[&format!("unix-dgram:{path}"), "echo"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
s.bind(sys.argv[2])
s.settimeout(5)
s.sendto(b"a" * 99997 + b"END", sys.argv[1])
s.sendto(b"next", sys.argv[1])
data = s.recv(1 << 20)
print(len(data), data[:8])
"#,
        &[&path, &client_path],
    );
    assert_eq!(out, "4 b'next'\n");
    server
        .stderr
        .wait_for("the long datagram reported", |l| l.contains("a datagram longer than 65536 bytes was dropped"));
    stop_expecting(server, &["2 datagrams in, 1 out"]);
}

#[test]
fn python_unix_dgram_client_against_sockit_print_shows_the_clients_path() {
    let dir = temp_dir();
    let path = sock_path(&dir, "server.sock");
    let client_path = sock_path(&dir, "client.sock");
    let server = Server::start(&[&format!("unix-dgram:{path}"), "print"]);
    py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[2])
s.sendto("unix datagram\n".encode(), sys.argv[1])
s.close()
"#,
        &[&path, &client_path],
    );
    assert_eq!(printed_from(&server, "unix datagram"), format!("unix://{client_path}"));
}

#[test]
fn python_seqpacket_client_against_sockit_unix_seqpacket_qa() {
    let dir = temp_dir();
    let path = sock_path(&dir, "q.sock");
    let server = Server::start(&[&format!("unix-seqpacket:{path}"), "qa"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(sys.argv[1])
for q in [b"how are u", b"how old are u\n", b"nonsense", b"bye"]:
    s.send(q)
    print(s.recv(1024))
print("after bye:", s.recv(1024))
"#,
        &[&path],
    );
    assert_eq!(out, "b'fine'\nb'nicai\\n'\nb'no'\nb'bye'\nafter bye: b''\n");
    stop_expecting(server, &["session ended"]);
}

#[test]
fn python_seqpacket_empty_packet_is_a_message_not_the_end_of_the_session() {
    let dir = temp_dir();
    let path = sock_path(&dir, "q.sock");
    let server = Server::start(&[&format!("unix-seqpacket:{path}"), "qa"]);
    // A zero-length packet is a legal seqpacket message (the kernel delivers it as a record of
    // its own); like an empty `len` frame it is a question, answered with the default answer,
    // and the session goes on. Only the client's close (or shutdown) is end-of-stream.
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(3)
s.connect(sys.argv[1])
try:
    for q in [b"", b"how are u"]:
        s.send(q)
        print(s.recv(1024))
except OSError as e:
    print("error:", e)
s.shutdown(socket.SHUT_WR)
print("after close:", s.recv(1024))
"#,
        &[&path],
    );
    assert_eq!(out, "b'no'\nb'fine'\nafter close: b''\n");
    stop_expecting(server, &["9 B in, 6 B out", "closed by client"]);
}

#[test]
fn python_seqpacket_client_keeps_message_boundaries_with_sockit_echo() {
    let dir = temp_dir();
    let path = sock_path(&dir, "e.sock");
    let _server = Server::start(&[&format!("unix-seqpacket:{path}"), "echo"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(sys.argv[1])
# Three sends without reading: a stream would merge them, seqpacket must not.
for m in [b"one", b"two", b"x" * 3000]:
    s.send(m)
for _ in range(3):
    m = s.recv(65536)
    print(m if len(m) < 10 else len(m))
s.shutdown(socket.SHUT_WR)
print(s.recv(1024))
"#,
        &[&path],
    );
    assert_eq!(out, "b'one'\nb'two'\n3000\nb''\n");
}

#[test]
fn python_abstract_stream_client_against_sockit_abstract_echo() {
    let name = abstract_name("py-echo");
    let server = Server::start(&[&format!("unix:@{name}"), "echo"]);
    assert_eq!(server.endpoint, format!("unix:@{name}"));
    let out = py(
        r#"
import socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("\0" + sys.argv[1])
client.send(b"abstract hello")
print("recv:", client.recv(1024))
client.close()
"#,
        &[&name],
    );
    assert_eq!(out, "recv: b'abstract hello'\n");
}

#[test]
fn python_abstract_dgram_client_against_sockit_abstract_dgram_upper() {
    let name = abstract_name("py-dgram");
    let client_name = abstract_name("py-dgram-client");
    let _server = Server::start(&[&format!("unix-dgram:@{name}"), "upper"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + sys.argv[2])
s.settimeout(5)
s.sendto(b"hello abstract", "\0" + sys.argv[1])
data, addr = s.recvfrom(1024)
print(data, addr == ("\0" + sys.argv[1]).encode())
"#,
        &[&name, &client_name],
    );
    assert_eq!(out, "b'HELLO ABSTRACT' True\n");
}

#[test]
fn python_abstract_dgram_client_against_sockit_print_shows_its_abstract_name() {
    let name = abstract_name("py-print");
    let client_name = abstract_name("py-print-client");
    let server = Server::start(&[&format!("unix-dgram:@{name}"), "print"]);
    py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + sys.argv[2])
s.sendto(b"from an abstract name", "\0" + sys.argv[1])
s.close()
"#,
        &[&name, &client_name],
    );
    assert_eq!(printed_from(&server, "from an abstract name"), format!("unix:@{client_name}"));
}

#[test]
fn python_abstract_seqpacket_client_against_sockit_abstract_seqpacket_reply() {
    let name = abstract_name("py-seq");
    let _server = Server::start(&[&format!("unix-seqpacket:@{name}"), "reply", "ack"]);
    let out = py(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect("\0" + sys.argv[1])
s.send(b"a")
print(s.recv(1024))
s.send(b"b\nc\n")
print(s.recv(1024), s.recv(1024))
"#,
        &[&name],
    );
    // Two lines in one packet are two questions, each answered in its own packet.
    assert_eq!(out, "b'ack'\nb'ack\\n' b'ack\\n'\n");
}

// ---------------------------------------------------------------------------------------------
// 5. Framing: len with a Python client, line with nc

#[test]
fn python_len_framed_client_against_sockit_echo_including_an_empty_message() {
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "len"]);
    let port = server.port().to_string();
    let out = py(LEN_CLIENT, &["tcp", &port, "hello", "", "two\nlines", "#big:200000", "last"]);
    assert_eq!(out, "b'hello'\nb''\nb'two\\nlines'\n200000 bytes, all {120}\nb'last'\nafter: b''\n");
    stop_expecting(server, &["closed by client"]);
}

#[test]
fn python_len_framed_client_against_sockit_unix_qa() {
    let dir = temp_dir();
    let path = sock_path(&dir, "len.sock");
    let server = Server::start(&[&format!("unix:{path}"), "qa", "--framing", "len"]);
    // A framed message is one question, whatever it contains; an empty one is a question too.
    let out = py(LEN_CLIENT, &["unix", &path, "how are u", "", "how old are u", "bye"]);
    assert_eq!(out, "b'fine'\nb'no'\nb'nicai'\nb'bye'\nafter: b''\n");
    stop_expecting(server, &["session ended"]);
}

#[test]
fn python_len_framed_client_against_sockit_upper_and_reply() {
    let upper = Server::start(&["127.0.0.1:0", "upper", "--framing", "len"]);
    let out = py(LEN_CLIENT, &["tcp", &upper.port().to_string(), "abc", "", "x\ny"]);
    assert_eq!(out, "b'ABC'\nb''\nb'X\\nY'\nafter: b''\n");
    let reply = Server::start(&["127.0.0.1:0", "reply", "framed", "--framing", "len"]);
    let out = py(LEN_CLIENT, &["tcp", &reply.port().to_string(), "", "a\nb"]);
    // Under len framing a message is not split into lines: one answer per frame.
    assert_eq!(out, "b'framed'\nb'framed'\nafter: b''\n");
}

#[test]
fn python_len_framed_client_against_sockit_print() {
    let server = Server::start(&["127.0.0.1:0", "print", "--framing", "len"]);
    let out = py(
        r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for m in [b"framed one", b"", b"multi\nline"]:
    s.sendall(struct.pack(">I", len(m)) + m)
s.shutdown(socket.SHUT_WR)
print("%s:%d" % s.getsockname(), s.recv(1024))
"#,
        &[&server.port().to_string()],
    );
    let (me, rest) = out.trim_end().split_once(' ').unwrap();
    assert_eq!(rest, "b''");
    assert_eq!(printed_from(&server, "framed one"), me);
    assert_eq!(printed_from(&server, "multi\\nline"), me);
    let lines = server.stdout.snapshot();
    // The empty message is printed too, as an empty text after the peer.
    assert!(lines.iter().any(|l| l.ends_with(&format!(" {me} "))), "no line for the empty message in {lines:#?}");
}

#[test]
fn nc_against_sockit_qa_with_line_framing() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "qa", "--framing", "line"]);
    let out = tool(
        "nc",
        &["-N", "127.0.0.1", &server.port().to_string()],
        b"how are u\nhow old are u\n\nbye\nnever answered\n",
    );
    // Line framing: an empty line is a question too, and every answer is a line.
    assert_eq!(out, "fine\nnicai\nno\nbye\n");
    stop_expecting(server, &["session ended"]);
}

#[test]
fn nc_against_sockit_echo_with_line_framing_answers_a_last_line_without_newline() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line"]);
    let out = tool("nc", &["-N", "127.0.0.1", &server.port().to_string()], b"first\nno newline at the end");
    assert_eq!(out, "first\nno newline at the end\n");
}

/// A line over `--max-frame` ends the connection, but the answers to the lines before it
/// reach netcat: the server closes in order instead of with a reset, which made nc print none.
#[test]
fn nc_gets_the_answers_before_a_line_too_long() {
    require!("nc");
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--max-frame", "10"]);
    let out = tool("nc", &["-N", "127.0.0.1", &server.port().to_string()], b"short\n0123456789\n0123456789A\nafter\n");
    assert_eq!(out, "short\n0123456789\n");
    stop_expecting(server, &["17 B out", "protocol error"]);
}

#[test]
fn nc_unix_against_sockit_unix_upper_with_line_framing() {
    require!("nc");
    let dir = temp_dir();
    let path = sock_path(&dir, "line.sock");
    let _server = Server::start(&[&format!("unix:{path}"), "upper", "--framing", "line"]);
    let out = tool("nc", &["-N", "-U", &path], b"a\nbb\nccc\n");
    assert_eq!(out, "A\nBB\nCCC\n");
}

/// A server that half-closes first (`shutdown(SHUT_WR)`) may still read: `connect` goes on
/// sending what stdin brings, as netcat does, instead of stopping when the server's side ends.
/// It used to stop, and the line typed after the server's end was lost with exit status 0.
#[test]
fn connect_keeps_sending_to_a_server_that_half_closed_first() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        s.write_all(b"hi\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut cmd = sockit();
    cmd.args(["connect", &addr]);
    let mut child = spawn_piped(cmd);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"line1\n").unwrap();
    // The server's end has surely arrived by the time the second line comes.
    let mut out = [0u8; 3];
    child.stdout.as_mut().unwrap().read_exact(&mut out).unwrap();
    assert_eq!(&out, b"hi\n");
    std::thread::sleep(std::time::Duration::from_millis(200));
    stdin.write_all(b"line2\n").unwrap();
    drop(stdin);
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(20)).expect("connect exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(server.join().unwrap(), b"line1\nline2\n");
}

/// A server that closes without reading, while stdin still has megabytes for it: the data
/// cannot be delivered, and `connect` says so with exit status 1 (it exited 0 in silence).
#[test]
fn connect_to_a_server_that_closes_unread_reports_the_loss() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let ran = sockit_run(&["connect", &addr], &vec![0u8; 16 << 20]);
    server.join().unwrap();
    assert_fails(&ran, 1, &[&addr, "the server"]);
}

/// A server that closes at once, and a line that comes after: the send succeeds (the kernel
/// takes it), and the server's reset comes back after it. `connect` exited 0 with the line lost;
/// it now waits for the server's TCP to take what was sent and reports the reset.
#[test]
fn connect_reports_a_line_sent_after_the_server_closed_unread() {
    use std::io::Write;
    for framing in ["raw", "line"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let mut cmd = sockit();
        cmd.args(["connect", &addr, "--framing", framing]);
        let mut child = spawn_piped(cmd);
        server.join().unwrap();
        // The server's end has surely arrived by the time the line comes.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"too late\n").unwrap();
        drop(stdin);
        let err = drain(child.stderr.take().unwrap());
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(20)).expect("connect exits");
        let err = String::from_utf8(err.join().unwrap()).unwrap();
        assert_eq!(status.code(), Some(1), "{framing}: {err}");
        assert!(err.contains("closed the connection before it had read everything sent"), "{framing}: {err}");
    }
}

/// A server that answers for a while and then closes while stdin still brings data: the rest
/// was not delivered. `connect` exited 0 because an answer had come; ncat and socat report the
/// broken pipe, and so does sockit now.
#[test]
fn connect_reports_input_left_undelivered_after_an_answer() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        // Gone, with whatever else comes unread.
    });
    let mut child = spawn_piped({
        let mut cmd = sockit();
        cmd.args(["connect", &addr]);
        cmd
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let mut echo = [0u8; 6];
    child.stdout.as_mut().unwrap().read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"first\n");
    server.join().unwrap();
    // Megabytes more, which nobody reads; the writes may fail or be reset afterwards.
    let _ = stdin.write_all(&vec![b'x'; 4 << 20]);
    drop(stdin);
    let err = drain(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(20)).expect("connect exits");
    let err = String::from_utf8(err.join().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the rest of the input was not delivered"), "{err}");
}
