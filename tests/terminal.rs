//! The interactive prompt of `sockit connect`, driven through a real pseudo-terminal: what a
//! person at a terminal types and sees.

mod support;
use support::*;

/// Runs `sockit connect ARGS…` in a pseudo-terminal (Python's `pty`), types each of `keys`
/// after the previous answer (or prompt) appeared, and returns everything the terminal showed
/// and the exit status. Each key string is sent as typed; `\r` is Enter, `\x04` is Ctrl-D.
/// Like a person, the steps wait for a fresh prompt before Ctrl-D: between two prompts the
/// terminal is briefly in cooked mode, where the line discipline would swallow it.
const PTY_DRIVER: &str = r#"
import os, pty, sys, time, select, json
argv = json.loads(sys.argv[1]); steps = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
pos = 0  # each expectation is looked for after the previous match
def found(token):
    if token == "<prompt>":  # a prompt is reading now: raw mode on (paste mode on after its last off)
        return seen.rfind(b"\x1b[?2004h") > seen.rfind(b"\x1b[?2004l")
    return token.encode() in seen[pos:]
def read_until(token, limit=10.0):
    global seen, pos
    end = time.time() + limit
    while not found(token):
        left = end - time.time()
        if left <= 0:
            sys.stdout.write(seen.decode(errors="replace")); sys.exit("timed out waiting for %r" % token)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    if token != "<prompt>" and found(token):
        pos = seen.index(token.encode(), pos) + len(token)
for keys, expect in steps:
    os.write(fd, keys.encode())
    if expect:
        read_until(expect)
end = time.time() + 10
status = None
while time.time() < end:
    if status is None:
        # Asked once more after the exit, waitpid would fail: the child is already reaped.
        wpid, st = os.waitpid(pid, os.WNOHANG)
        if wpid:
            status = st
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        seen += chunk
        if chunk:
            continue
    if status is not None:
        break
sys.stdout.write(seen.decode(errors="replace"))
if status is None:
    sys.exit("sockit did not exit")
print("\nEXIT %d" % os.waitstatus_to_exitcode(status))
"#;

/// Waits until a prompt is reading keys in raw mode, as a person waits to see the prompt: the
/// driver checks that rustyline's last bracketed-paste switch is "on".
const READY: &str = "<prompt>";

fn drive(args: &[&str], steps: &[(&str, &str)]) -> String {
    let mut argv = vec![env!("CARGO_BIN_EXE_sockit").to_owned(), "connect".to_owned()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let argv = serde_json::to_string(&argv).unwrap();
    let steps = serde_json::to_string(steps).unwrap();
    let ran = python(PTY_DRIVER, &[&argv, &steps], b"");
    assert!(ran.code == Some(0), "pty driver failed: {}\n{}", ran.stderr, ran.stdout_text());
    ran.stdout_text()
}

#[test]
fn the_prompt_sends_lines_shows_answers_and_quits_on_ctrl_d() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let screen = drive(
        &[&server.addr()],
        &[("", READY), ("hello world\r", "HELLO WORLD"), ("\r", ""), ("again\r", "AGAIN"), ("", READY), ("\x04", "")],
    );
    assert!(screen.contains("connected to tcp://"), "{screen}");
    assert!(screen.contains("each line is sent with its newline"), "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
    // As from netcat, each line went with its newline, the empty one too: "hello world\n",
    // "\n" and "again\n".
    let done = server.stop();
    assert!(done.stderr.iter().any(|l| l.contains("19 B in, 19 B out")), "{:?}", done.stderr);
}

/// -v at the prompt puts the addresses in its one "connected to" line.
#[test]
fn verbose_at_the_prompt_names_the_addresses_in_the_banner() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let port = server.port();
    let screen = drive(&[&format!("localhost:{port}"), "-v"], &[("", READY), ("x\r", "X"), ("\x04", "")]);
    let banner = format!("connected to tcp://localhost:{port} at 127.0.0.1:{port} from 127.0.0.1:");
    assert_eq!(screen.matches("connected to").count(), 1, "{screen}");
    assert!(screen.contains(&banner), "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

/// Under raw framing the server sees lines, newline and all (a line-based server such as chat
/// saw nothing before), and its answer shows as one line however the reads cut it, even inside
/// a character.
#[test]
fn raw_lines_go_with_their_newline_and_answers_cut_by_reads_show_whole() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut lines = BufReader::new(s.try_clone().unwrap());
        let mut typed = String::new();
        lines.read_line(&mut typed).unwrap();
        for piece in [&b"caf\xc3"[..], b"\xa9 \xe6\x96", b"\x87\xe5\xad\x97\n"] {
            s.write_all(piece).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        // Until the client is done (Ctrl-D half-closes).
        let mut rest = String::new();
        let _ = lines.read_line(&mut rest);
        typed
    });
    let screen = drive(&[&addr], &[("", READY), ("hi\r", "caf\u{e9} \u{6587}\u{5b57}"), ("", READY), ("\x04", "")]);
    assert_eq!(server.join().unwrap(), "hi\n");
    assert!(!screen.contains('\u{fffd}'), "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

#[test]
fn the_prompt_recalls_history_with_the_up_arrow() {
    let server = Server::start(&["127.0.0.1:0", "upper", "--framing", "line"]);
    // Up recalls "first"; Enter sends it again: a second FIRST comes back.
    let screen = drive(
        &[&server.addr(), "--framing", "line"],
        &[("", READY), ("first\r", "FIRST"), ("\x1b[A\r", "FIRST"), ("", READY), ("\x04", "")],
    );
    assert_eq!(screen.matches("FIRST").count(), 2, "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

#[test]
fn the_prompt_shows_the_last_answer_when_the_server_closes() {
    let server = Server::start(&["127.0.0.1:0", "qa"]);
    let screen =
        drive(&[&server.addr()], &[("", READY), ("how are u\r", "fine"), ("bye\r", "connection closed by the server")]);
    // "bye" appears twice, typed and then answered, and the closing notice comes after both.
    assert!(screen.matches("bye").count() >= 2, "{screen}");
    let answer = screen.rfind("bye").unwrap();
    assert!(screen[answer..].contains("connection closed by the server"), "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

/// Lines typed (or pasted) faster than the prompt comes back were lost: rustyline kept unread
/// input across prompts only with its `buffer-redux` feature, which was off.
#[test]
fn lines_typed_ahead_of_the_prompt_are_all_sent() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let screen = drive(&[&server.addr()], &[("", READY), ("one\rtwo\r\rthree\r", "THREE"), ("", READY), ("\x04", "")]);
    for word in ["ONE", "TWO", "THREE"] {
        assert!(screen.contains(word), "{word} missing: {screen}");
    }
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

/// `connect --token-file` to a `spawn` server: the handshake first, then the same prompt.
#[test]
fn the_prompt_works_after_a_spawn_handshake() {
    let dir = temp_dir();
    let token = write_token(dir.path(), "token", &fresh_token(), 0o600);
    let token = token.to_str().unwrap();
    let server = Server::start_cmd(serve_cmd(&[
        "127.0.0.1:0",
        "spawn",
        "--token-file",
        token,
        "--",
        "sh",
        "-c",
        "while read -r line; do echo \"got $line\"; done",
    ]));
    // Under line framing the prompt sends each line with its newline, as `read` expects.
    let screen = drive(
        &[&server.addr(), "--token-file", token, "--framing", "line"],
        &[("", READY), ("hello\r", "got hello"), ("", READY), ("\x04", "")],
    );
    assert!(screen.contains("connected to tcp://"), "{screen}");
    assert!(screen.ends_with("EXIT 0\n"), "{screen}");
}

/// Ctrl-C at the prompt leaves at once with status 130, as netcat does on SIGINT; Ctrl-D is the
/// orderly end (status 0, the last answers waited for).
#[test]
fn ctrl_c_at_the_prompt_exits_130() {
    let server = Server::start(&["127.0.0.1:0", "upper"]);
    let screen = drive(&[&server.addr()], &[("", READY), ("one\r", "ONE"), ("", READY), ("\x03", "")]);
    assert!(screen.ends_with("EXIT 130\n"), "{screen}");
}

/// An error that ends the program stands on a line of its own: the prompt it abandons is
/// erased first, not left as ">> " in front of the message.
#[test]
fn an_error_at_the_prompt_is_a_line_of_its_own() {
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let screen = drive(&[&format!("udp://127.0.0.1:{port}")], &[("", READY), ("hello\r", "nothing is listening")]);
    assert!(screen.contains("\r\x1b[Ksockit: nothing is listening there"), "{screen:?}");
    assert!(screen.ends_with("EXIT 1\n"), "{screen}");
}
