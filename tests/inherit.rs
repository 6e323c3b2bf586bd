//! Inherited sockets with the real binary: `fd://N` and `fd://NAME` from systemd socket
//! activation (with `systemd-socket-activate` where it is installed, and always with
//! `peers/activate.py`, which sets the variables as systemd does), inetd's way (`--inetd`, the
//! connection on stdin, stdout and stderr; also through `socat … EXEC:`), `serve fd://0`, and
//! `send fd://3` on a connected socket.
//!
//! Sockets are on 127.0.0.1 port 0 or in a temporary directory; every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// `sockit ARGS…` started as systemd would: `peers/activate.py` puts SPECS on fds 3, 4, … and
/// sets `LISTEN_FDS`, `LISTEN_FDNAMES` (`names`) and `LISTEN_PID` (`pid`: ours, other, none).
fn activated(specs: &[&str], names: Option<&str>, pid: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(peers().join("activate.py")).args(["--pid", pid]);
    if let Some(names) = names {
        cmd.args(["--names", names]);
    }
    cmd.args(specs).arg("--").arg(env!("CARGO_BIN_EXE_sockit")).args(args);
    cmd
}

/// Gives the child `fd` as descriptor `target`, as a parent that leaves a socket open across
/// exec does.
fn pass_fd(cmd: &mut Command, fd: OwnedFd, target: RawFd) {
    let src = fd.as_raw_fd();
    // SAFETY: the closure only calls dup2 and fcntl, which are async-signal-safe, on descriptors
    // that stay open until the child execs (`fd` is moved into the closure).
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            let ok =
                if src == target { libc::fcntl(target, libc::F_SETFD, 0) >= 0 } else { libc::dup2(src, target) >= 0 };
            if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
}

/// A connected TCP pair on 127.0.0.1: (the client's end, the server's end).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client.set_write_timeout(Some(LIMIT)).unwrap();
    (client, server)
}

/// Starts `sockit ARGS…` as inetd does: the connection on stdin, stdout and stderr.
fn inetd_child(args: &[&str], conn: impl Into<OwnedFd>) -> Child {
    let conn: OwnedFd = conn.into();
    sockit()
        .args(args)
        .stdin(conn.try_clone().unwrap())
        .stdout(conn.try_clone().unwrap())
        .stderr(conn)
        .spawn()
        .expect("spawn sockit")
}

/// Writes `msg`, half-closes, and reads everything until the server closes.
fn exchange<S: Read + Write>(s: &mut S, msg: &[u8], close: impl FnOnce(&mut S)) -> Vec<u8> {
    s.write_all(msg).unwrap();
    close(s);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    all
}

fn tcp_exchange(addr: &str, msg: &[u8]) -> Vec<u8> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    exchange(&mut s, msg, |s: &mut TcpStream| s.shutdown(Shutdown::Write).unwrap())
}

fn unix_exchange(path: &Path, msg: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    exchange(&mut s, msg, |s: &mut UnixStream| s.shutdown(Shutdown::Write).unwrap())
}

/// A child process killed and reaped when dropped, so that a failing test leaves none behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// socat as inetd: listening on the Unix socket `path`, it runs the `exec` address (`EXEC:…`)
/// for each connection with the connection on its stdin and stdout. Returns once it listens;
/// socat ends with the returned guard.
fn socat_exec(path: &Path, exec: &str) -> Reaped {
    let mut socat = Command::new("socat")
        .args(["-d", "-d"])
        .arg(format!("UNIX-LISTEN:{},fork", path.display()))
        .arg(exec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Lines::collect(socat.stderr.take().unwrap());
    let socat = Reaped(socat);
    log.wait_for("socat listening", |l| l.contains("listening on"));
    socat
}

/// The line of a finished process's stderr that starts with `prefix`.
fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in {lines:#?}"))
}

// ---------------------------------------------------------------------------------------------
// systemd socket activation, as activate.py does it

#[test]
fn a_tcp_socket_passed_as_fd_3_serves_echo_and_the_banner_names_its_address() {
    let server = Server::start_cmd(activated(&["tcp"], None, "ours", &["serve", "fd://3", "echo"]));
    assert!(server.endpoint.starts_with("tcp://127.0.0.1:"), "{}", server.endpoint);
    let banner = server.stderr.snapshot()[0].clone();
    assert!(banner.contains(&format!("{} (fd://3)", server.endpoint)), "{banner}");
    assert!(banner.ends_with("Ctrl-C stops"), "a listener serves until stopped: {banner}");
    assert_eq!(tcp_exchange(&server.addr(), b"inherited"), b"inherited");
    assert_eq!(tcp_exchange(&server.addr(), b"and again"), b"and again");
    let done = server.stop();
    assert!(done.status.success(), "{:#?}", done.stderr);
    assert!(line_with(&done.stderr, "sockit: stopped").contains("2 connections"), "{:#?}", done.stderr);
}

#[test]
fn two_named_sockets_each_served_by_name_and_the_unix_file_is_left_alone() {
    let dir = temp_dir();
    let path = dir.path().join("admin.sock");
    let unix = format!("unix:{}", path.display());
    let specs = ["tcp", unix.as_str()];

    let admin = Server::start_cmd(activated(&specs, Some("web:admin"), "ours", &["serve", "fd://admin", "echo"]));
    assert_eq!(admin.endpoint, format!("unix://{}", path.display()));
    assert!(admin.stderr.snapshot()[0].contains("(fd://admin)"));
    assert_eq!(unix_exchange(&path, b"by name"), b"by name");
    let done = admin.stop();
    assert!(done.status.success(), "{:#?}", done.stderr);
    assert!(path.exists(), "the socket file systemd made was removed");
    std::fs::remove_file(&path).unwrap();

    let web = Server::start_cmd(activated(&specs, Some("web:admin"), "ours", &["serve", "fd://web", "upper"]));
    assert!(web.endpoint.starts_with("tcp://127.0.0.1:"), "{}", web.endpoint);
    assert_eq!(tcp_exchange(&web.addr(), b"web"), b"WEB");
    assert!(web.stop().status.success());
}

#[test]
fn a_udp_socket_passed_as_fd_3_answers_datagrams() {
    let server = Server::start_cmd(activated(&["udp"], None, "ours", &["serve", "fd://3", "upper"]));
    assert!(server.endpoint.starts_with("udp://127.0.0.1:"), "{}", server.endpoint);
    assert!(server.stderr.snapshot()[0].contains("one message per datagram"));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    client.send_to(b"datagram", server.addr()).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"DATAGRAM");
    let done = server.stop();
    assert!(line_with(&done.stderr, "sockit: stopped").contains("1 datagram in, 1 out"), "{:#?}", done.stderr);
}

#[test]
fn variables_for_another_process_name_nothing_but_fd_numbers_still_work() {
    let ran = run(&mut activated(&["tcp"], Some("web"), "other", &["serve", "fd://web", "echo"]), b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(ran.stderr.contains("fd://web: the systemd sockets are for process 1, not this one"), "{}", ran.stderr);
    assert!(ran.stderr.contains("LISTEN_PID does not match"), "{}", ran.stderr);

    let server = Server::start_cmd(activated(&["tcp"], Some("web"), "other", &["serve", "fd://3", "echo"]));
    assert_eq!(tcp_exchange(&server.addr(), b"by number"), b"by number");
}

#[test]
fn a_name_systemd_did_not_pass_is_an_error_that_lists_the_names_it_did() {
    let dir = temp_dir();
    let unix = |n: &str| format!("unix:{}", dir.path().join(n).display());
    let ran = run(&mut activated(&["tcp", &unix("1")], Some("web:admin"), "ours", &["serve", "fd://api"]), b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert_eq!(ran.stderr.trim_end(), "sockit: fd://api: systemd passed no socket named 'api' (it passed: web, admin)");

    let ran = run(&mut activated(&["tcp", &unix("2")], None, "ours", &["serve", "fd://web"]), b"");
    assert!(ran.stderr.contains("LISTEN_FDNAMES is not set"), "{}", ran.stderr);

    let ran = run(&mut activated(&["tcp", &unix("3")], Some("web:web"), "ours", &["serve", "fd://web"]), b"");
    assert!(ran.stderr.contains("name one by number: fd://3, fd://4"), "{}", ran.stderr);
}

#[test]
fn exec_on_an_inherited_socket_follows_the_address_it_is_really_bound_to() {
    // Bound to every interface: exec refuses, as it would for serve :PORT exec.
    let mut cmd = Command::new("python3");
    let code = "import socket,os,sys; s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen(); \
                os.dup2(s.fileno(), 3); os.set_inheritable(3, True); os.execv(sys.argv[1], sys.argv[1:])";
    cmd.args(["-c", code, env!("CARGO_BIN_EXE_sockit"), "serve", "fd://3", "exec"]);
    let ran = run(&mut cmd, b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("would be reachable from other machines"), "{}", ran.stderr);

    // On loopback TCP it wants a token, as on any TCP socket.
    let ran = run(activated(&["tcp"], None, "ours", &["serve", "fd://3", "exec"]).env_remove("SOCKIT_TOKEN"), b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("exec on TCP needs a token"), "{}", ran.stderr);
}

// ---------------------------------------------------------------------------------------------
// systemd-socket-activate, the real thing

#[test]
fn systemd_socket_activate_passes_a_named_unix_socket() {
    require!("systemd-socket-activate");
    let dir = temp_dir();
    let path = dir.path().join("sd.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&path)
        .args(["--fdname=greeter", env!("CARGO_BIN_EXE_sockit"), "serve", "fd://greeter", "upper"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::collect(child.stderr.take().unwrap());
    stderr.wait_for("'Listening on'", |l| l.starts_with("Listening on"));
    // It starts sockit (with exec: the same pid) when the first client knocks.
    assert_eq!(unix_exchange(&path, b"activated"), b"ACTIVATED");
    let banner = stderr.wait_for("the banner", |l| l.starts_with("sockit: serving"));
    assert!(banner.contains(&format!("unix://{} (fd://greeter)", path.display())), "{banner}");
    assert_eq!(unix_exchange(&path, b"again"), b"AGAIN");
    // SAFETY: kill(2) on our own child, which is sockit by now.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, LIMIT).expect("sockit stops on SIGINT");
    assert!(status.success(), "{status}; {:#?}", stderr.finish());
    assert!(line_with(&stderr.finish(), "sockit: stopped").contains("2 connections"));
    assert!(path.exists(), "the socket file systemd made was removed");
}

#[test]
fn systemd_socket_activate_accept_mode_runs_one_sockit_per_client() {
    require!("systemd-socket-activate");
    let dir = temp_dir();
    let path = dir.path().join("acc.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("--accept")
        .arg("-l")
        .arg(&path)
        .args([env!("CARGO_BIN_EXE_sockit"), "serve", "fd://3", "upper", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::collect(child.stderr.take().unwrap());
    stderr.wait_for("'Listening on'", |l| l.starts_with("Listening on"));
    for msg in [&b"first"[..], b"second"] {
        assert_eq!(unix_exchange(&path, msg), msg.to_ascii_uppercase());
        // Each sockit ends with its one client, by itself.
        stderr.wait_for("a child that exited 0", |l| l.starts_with("Child ") && l.ends_with("died with code 0"));
    }
    let lines = stderr.snapshot();
    assert!(line_with(&lines, "sockit: serving upper on").ends_with("one client, then exit"), "{lines:#?}");
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// inetd: the connection on stdin (and stdout and stderr)

#[test]
fn inetd_answers_on_the_socket_and_writes_nothing_else_into_it() {
    let (mut client, server_end) = tcp_pair();
    let mut child = inetd_child(&["serve", "--inetd", "upper"], server_end);
    let got = exchange(&mut client, b"hello inetd\n", |s: &mut TcpStream| s.shutdown(Shutdown::Write).unwrap());
    assert_eq!(String::from_utf8_lossy(&got), "HELLO INETD\n", "no banner, log or summary in the stream");
    let status = wait_bounded(&mut child, LIMIT).expect("sockit exits when its client leaves");
    assert!(status.success(), "{status}");
}

#[test]
fn inetd_reply_with_text_and_a_usage_error_is_not_sent_to_the_client() {
    let (mut client, server_end) = tcp_pair();
    let mut child = inetd_child(&["serve", "--inetd", "reply", "hi"], server_end);
    assert_eq!(exchange(&mut client, b"x", |s: &mut TcpStream| s.shutdown(Shutdown::Write).unwrap()), b"hi");
    assert!(wait_bounded(&mut child, LIMIT).unwrap().success());

    let (mut client, server_end) = tcp_pair();
    let mut child = inetd_child(&["serve", "--inetd", "chargen"], server_end);
    let status = wait_bounded(&mut child, LIMIT).unwrap();
    assert_eq!(status.code(), Some(2));
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "", "the error went into the client's socket");
}

#[test]
fn inetd_with_stderr_elsewhere_reports_errors_and_verbose_logs_there() {
    let (_client, server_end) = tcp_pair();
    let fd: OwnedFd = server_end.into();
    let mut child = sockit()
        .args(["serve", "--inetd", "print"])
        .stdin(fd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    assert_eq!(wait_bounded(&mut child, LIMIT).unwrap().code(), Some(2));
    let lines = err.finish();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].starts_with("sockit: print writes to stdout, which under inetd is the client's socket"));

    let (mut client, server_end) = tcp_pair();
    let conn: OwnedFd = server_end.into();
    let mut child = sockit()
        .args(["serve", "--inetd", "echo", "-v"])
        .stdin(conn.try_clone().unwrap())
        .stdout(conn)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    assert_eq!(exchange(&mut client, b"loud", |s: &mut TcpStream| s.shutdown(Shutdown::Write).unwrap()), b"loud");
    assert!(wait_bounded(&mut child, LIMIT).unwrap().success());
    let lines = err.finish();
    let local = client.local_addr().unwrap().to_string();
    assert!(line_with(&lines, "sockit: serving echo on tcp://127.0.0.1:").contains("(fd://0)"), "{lines:#?}");
    // -v: a line as the client connects, and its line as it leaves, both naming the real client.
    assert!(lines.contains(&format!("{local}: connected")), "{lines:#?}");
    assert!(line_with(&lines, &format!("{local}: 4 B in, 4 B out")).ends_with("closed by client"), "{lines:#?}");
}

#[test]
fn inetd_through_socat_exec_serves_each_connection() {
    require!("socat");
    let dir = temp_dir();
    let path = dir.path().join("inetd.sock");
    let exec = format!("EXEC:{} serve --inetd upper", env!("CARGO_BIN_EXE_sockit"));
    let _socat = socat_exec(&path, &exec);
    for msg in [&b"one\n"[..], b"two\n", b"three\n"] {
        assert_eq!(unix_exchange(&path, msg), msg.to_ascii_uppercase());
    }
}

#[test]
fn serve_fd_0_on_a_socketpair_serves_that_client_then_exits() {
    let (mut client, ours) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut child = sockit()
        .args(["serve", "fd://0", "echo"])
        .stdin(OwnedFd::from(ours))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    assert_eq!(exchange(&mut client, b"pair", |s: &mut UnixStream| s.shutdown(Shutdown::Write).unwrap()), b"pair");
    assert!(wait_bounded(&mut child, LIMIT).unwrap().success());
    let lines = err.finish();
    let banner = line_with(&lines, "sockit: serving echo on ");
    assert!(banner.contains("fd://0 (an unnamed unix stream socket)") && banner.ends_with("one client, then exit"));
    assert!(line_with(&lines, "sockit: stopped").contains("1 connection, 4 B in, 4 B out"), "{lines:#?}");
}

// ---------------------------------------------------------------------------------------------
// A client on an inherited socket

#[test]
fn send_over_an_inherited_connected_socket() {
    let (mut peer, ours) = UnixStream::pair().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).unwrap();
        peer.write_all(&buf.to_ascii_uppercase()).unwrap();
        buf
    });
    let mut cmd = sockit();
    cmd.args(["send", "fd://3", "hello"]);
    pass_fd(&mut cmd, ours.into(), 3);
    let ran = run(&mut cmd, b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(&answer.join().unwrap(), b"hello");
    // A raw answer is printed as it came (no newline is added off a terminal).
    assert_eq!(ran.stdout_text(), "HELLO");
}

#[test]
fn connect_to_an_inherited_listening_socket_is_refused_clearly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = sockit();
    cmd.args(["connect", "fd://3"]);
    pass_fd(&mut cmd, listener.into(), 3);
    let ran = run(&mut cmd, b"");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(
        ran.stderr.trim_end(),
        "sockit: fd://3 is a listening tcp socket; a client needs a connected socket (serve takes a listening one)"
    );
}

// ---------------------------------------------------------------------------------------------
// The relay on inherited sockets

#[test]
fn relay_from_a_socket_systemd_passed() {
    let target = Server::start(&["127.0.0.1:0", "upper"]);
    let relay = Server::start_cmd(activated(&["tcp"], Some("web"), "ours", &["relay", "fd://web", &target.endpoint]));
    assert!(relay.endpoint.starts_with("tcp://127.0.0.1:"), "{}", relay.endpoint);
    assert_eq!(tcp_exchange(&relay.addr(), b"through systemd\n"), b"THROUGH SYSTEMD\n");
    assert_eq!(tcp_exchange(&relay.addr(), b"again\n"), b"AGAIN\n");
    let done = relay.stop();
    assert!(line_with(&done.stderr, "sockit: stopped").contains("2 connections"), "{:#?}", done.stderr);
}

#[test]
fn relay_inetd_relays_the_client_on_stdin_then_exits() {
    let target = Server::start(&["127.0.0.1:0", "upper"]);
    let (mut client, ours) = tcp_pair();
    let mut child = inetd_child(&["relay", "--inetd", &target.endpoint], ours);
    let got = exchange(&mut client, b"from inetd\n", |s: &mut TcpStream| s.shutdown(Shutdown::Write).unwrap());
    assert_eq!(got, b"FROM INETD\n", "only the target's answer, nothing of sockit's own");
    assert!(wait_bounded(&mut child, LIMIT).expect("exits after its one client").success());
}

#[test]
fn relay_inetd_through_socat_exec() {
    require!("socat");
    let dir = temp_dir();
    // A colon would end socat's EXEC address: the target is a Unix socket named by its path.
    let target_path = dir.path().join("echo.sock");
    let _target = Server::start(&[target_path.to_str().unwrap(), "echo"]);
    let path = dir.path().join("relay-inetd.sock");
    let exec = format!("EXEC:{} relay --inetd {}", env!("CARGO_BIN_EXE_sockit"), target_path.display());
    let _socat = socat_exec(&path, &exec);
    for msg in [&b"one"[..], b"two", b"three"] {
        assert_eq!(unix_exchange(&path, msg), msg);
    }
}

#[test]
fn relay_inetd_usage_errors() {
    let ran = sockit_run(&["relay", "--inetd", "127.0.0.1:1", "127.0.0.1:2"], b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("takes only TO"), "{}", ran.stderr);
    // Under the test harness stdin is a pipe, not a socket.
    let ran = sockit_run(&["relay", "--inetd", "127.0.0.1:1"], b"");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("stdin is not a socket (it is a pipe)"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

/// `LISTEN_FDS` counts a descriptor that was never passed: sockit's own epoll set may have taken
/// the number by the time it is used, and was then reported as "not a socket (it is
/// anon_inode:[eventpoll])". It is a descriptor that was not open when sockit started.
#[test]
fn a_systemd_descriptor_that_was_not_passed_is_not_open() {
    const EXEC_AS_ACTIVATED: &str = "import os, sys
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='web')
os.execv(sys.argv[1], sys.argv[1:])";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", EXEC_AS_ACTIVATED, env!("CARGO_BIN_EXE_sockit"), "serve", "fd://web", "echo"]);
    let ran = support::run(&mut cmd, b"");
    support::assert_fails(&ran, 2, &["fd://web is not open"]);
}
