//! The first thing a new user does: an upper-case server and the seed client.

mod support;
use support::*;

#[test]
fn seed_upper_client_against_sockit_upper() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let ran = python_client("tcp_upper_client.py", "127.0.0.1", server.port(), &[], b"");
    assert_eq!(ran.stdout_text(), "recv: b'HELLOWORLD'\n", "stderr: {}", ran.stderr);
    let done = server.stop();
    assert!(done.status.success());
    assert!(
        done.stderr.iter().any(|l| l.contains("10 B in, 10 B out") && l.contains("closed by client")),
        "{:?}",
        done.stderr
    );
    assert!(done.stderr.iter().any(|l| l.starts_with("sockit: stopped after")), "{:?}", done.stderr);
}

#[test]
fn sockit_send_against_seed_upper_server() {
    let py = PythonServer::start("tcp_upper_server.py", &[]);
    let ran = sockit_run(&["send", &py.addr(), "helloworld"], b"");
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    assert_eq!(ran.stdout_text(), "HELLOWORLD");
}
