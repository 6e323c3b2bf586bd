//! Bad input and failing operations: every mistake gets one clear line on stderr and the right
//! exit code (2 for a usage error, 1 for a runtime failure, with a hint where one helps), and
//! never a panic. Also: a closed stdout (`sockit … | head -1`) is a quiet, successful exit, and
//! `--help`, `--version`, `completions` and `man` work.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Asserts `ran` failed with `code`, wrote exactly one line on stderr containing every needle,
/// nothing on stdout, and did not panic.
#[track_caller]
fn assert_one_line_error(ran: &Ran, code: i32, needles: &[&str]) {
    let what = format!("stderr: {:?}, stdout: {:?}", ran.stderr, ran.stdout_text());
    assert!(!ran.stderr.contains("panicked"), "panic! {what}");
    assert_eq!(ran.code, Some(code), "exit code; {what}");
    assert_eq!(ran.stderr.lines().count(), 1, "expected one line; {what}");
    assert!(ran.stderr.starts_with("sockit: "), "{what}");
    for n in needles {
        assert!(ran.stderr.contains(n), "expected {n:?}; {what}");
    }
    assert!(ran.stdout.is_empty(), "{what}");
}

/// Asserts a usage error reported by the argument parser: exit 2 and one line, as every error,
/// with every needle, ending with the help to see (clap's own text spread over several lines,
/// starting with `error:`, before).
#[track_caller]
fn assert_parser_usage_error(ran: &Ran, needles: &[&str]) {
    assert_one_line_error(ran, 2, needles);
    assert!(ran.stderr.trim_end().ends_with(" --help`)"), "stderr: {:?}", ran.stderr);
}

/// An argument that is not UTF-8 is a usage error like any other (looking for the subcommand
/// to name in the hint once panicked on it).
#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    for bad in [&b"caf\xe9"[..], b"serve\xff"] {
        let ran = run(sockit().arg("-q").arg(std::ffi::OsStr::from_bytes(bad)), b"");
        assert_parser_usage_error(&ran, &["unrecognized subcommand", "(see `sockit --help`)"]);
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A UDP port on 127.0.0.1 that nothing listens on.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Endpoints

const BAD_ENDPOINTS: &[&str] = &[
    "7000",
    "localhost",
    "ftp://x:1",
    "::1:80",
    "[::1",
    "host:99999",
    "unix:",
    "unix:@",
    "tcp4://[::1]:1",
    "fd://",
    "fd://-1",
    "fd://99999999999",
    "fd://web:admin",
];

#[test]
fn invalid_endpoints_are_one_line_usage_errors_for_serve_connect_and_send() {
    for ep in BAD_ENDPOINTS {
        for args in [vec!["serve", ep], vec!["connect", ep], vec!["send", ep, "hi"]] {
            let ran = sockit_run(&args, b"");
            let what = format!("sockit {}", args.join(" "));
            assert!(!ran.stderr.contains("panicked"), "{what}: {}", ran.stderr);
            assert_eq!(ran.code, Some(2), "{what}: {}", ran.stderr);
            assert_eq!(ran.stderr.lines().count(), 1, "{what}: {}", ran.stderr);
            assert!(ran.stderr.contains("invalid endpoint"), "{what}: {}", ran.stderr);
            assert!(ran.stderr.contains(&format!("'{ep}'")), "{what} should quote the input: {}", ran.stderr);
            assert!(ran.stderr.contains("forms:"), "{what}: {}", ran.stderr);
        }
    }
}

/// What netcat and socat users type out of habit gets, in one line and with exit 2, the sockit
/// command that does what they meant, in place of the parser's generic complaint.
#[test]
fn netcat_and_socat_habits_are_answered_with_the_sockit_command() {
    let cases: &[(&[&str], &str)] = &[
        (&["-l", "-p", "7400"], "for `nc -l -p 7400` write sockit serve :7400 print --raw --once"),
        (&["-lk", "7400"], "write sockit serve :7400 print --raw ("),
        (&["-u", "-l", "5353"], "sockit serve udp://:5353 print --raw --once"),
        (&["127.0.0.1", "7000"], "for `nc 127.0.0.1 7000` write sockit connect 127.0.0.1:7000"),
        (&["connect", "-u", "127.0.0.1:7"], "write sockit connect udp://127.0.0.1:7"),
        (&["connect", "127.0.0.1", "7000", "--framing", "line"], "write sockit connect 127.0.0.1:7000 --framing line"),
        (&["send", "127.0.0.1", "7000", "hi"], "write sockit send 127.0.0.1:7000 hi"),
        (&["serve", "-l", "-p", "7000", "upper"], "write sockit serve :7000 upper"),
        (&["-l", "-p", "7000", "-e", "/bin/cat"], "sockit serve :7000 spawn --token-file FILE -- /bin/cat"),
        (&["TCP-LISTEN:7000,fork", "EXEC:cat"], "sockit is not socat"),
        (&["serve", "echo", "127.0.0.1:7000"], "the ENDPOINT comes first: sockit serve 127.0.0.1:7000 echo"),
        (&["serve", "reply", ":7000", "hi"], "the ENDPOINT comes first: sockit serve :7000 reply hi"),
        (&["serve", "TCP-LISTEN:7000,fork", "echo"], "socat's way of writing it; sockit writes :7000 (a sockit server"),
        (&["connect", "UNIX-CONNECT:/run/x.sock"], "sockit writes /run/x.sock"),
    ];
    for (args, want) in cases {
        let ran = sockit_run(args, b"");
        assert_one_line_error(&ran, 2, &[want]);
    }
}

/// A port given by name is not looked up, but the error says its number where the system's
/// services file has it.
#[test]
fn a_port_name_is_answered_with_its_number() {
    if !std::fs::read_to_string("/etc/services").is_ok_and(|s| s.lines().any(|l| l.starts_with("http\t"))) {
        eprintln!("skipping: /etc/services does not list http");
        return;
    }
    let ran = sockit_run(&["connect", "localhost:http"], b"");
    assert_one_line_error(&ran, 2, &["port 'http' is not a number", "gives http as port 80: write localhost:80"]);
    let ran = sockit_run(&["connect", "localhost:no-such-service"], b"");
    assert_one_line_error(&ran, 2, &["port 'no-such-service' is not a number"]);
    assert!(!ran.stderr.contains("hint"), "{}", ran.stderr);
}

// ---------------------------------------------------------------------------------------------
// Usage errors

#[test]
fn unknown_service_is_a_usage_error() {
    let ran = sockit_run(&["serve", "127.0.0.1:0", "chargen"], b"");
    assert_one_line_error(&ran, 2, &["unknown service 'chargen'", "echo, upper"]);
}

#[test]
fn reply_without_text_is_a_usage_error() {
    let ran = sockit_run(&["serve", "127.0.0.1:0", "reply"], b"");
    assert_one_line_error(&ran, 2, &["'reply' needs the TEXT"]);
}

#[test]
fn service_arguments_that_do_not_fit_are_usage_errors() {
    let ran = sockit_run(&["serve", "127.0.0.1:0", "echo", "extra"], b"");
    assert_one_line_error(&ran, 2, &["service 'echo' takes no argument", "'extra'"]);
    // One TEXT only: more is the parser's business.
    let ran = sockit_run(&["serve", "127.0.0.1:0", "reply", "a", "b"], b"");
    assert_parser_usage_error(&ran, &["'b'"]);
}

#[test]
fn dict_with_a_service_other_than_qa_is_a_usage_error() {
    let dir = temp_dir();
    let dict = dir.path().join("d.txt");
    std::fs::write(&dict, "hi = hello\n").unwrap();
    let ran = sockit_run(&["serve", "127.0.0.1:0", "echo", "--dict", dict.to_str().unwrap()], b"");
    assert_one_line_error(&ran, 2, &["--dict", "qa"]);
}

#[test]
fn a_missing_address_list_file_or_socket_directory_is_said_in_words() {
    let dir = temp_dir();
    let missing = dir.path().join("nope.txt");
    let ran = sockit_run(&["serve", "127.0.0.1:0", "--deny-file", missing.to_str().unwrap()], b"");
    assert_one_line_error(&ran, 2, &["cannot read --deny-file", "nope.txt: no such file or directory"]);
    assert!(!ran.stderr.contains("os error"), "{}", ran.stderr);

    let sock = dir.path().join("no-such-dir").join("s.sock");
    let ran = sockit_run(&["serve", &format!("unix://{}", sock.display()), "echo"], b"");
    assert_one_line_error(&ran, 1, &["cannot listen on", "there is no directory", "no-such-dir'", "hint: create it"]);
    assert!(!ran.stderr.contains("os error"), "{}", ran.stderr);
}

#[test]
fn threads_on_a_unix_or_udp_endpoint_is_refused_not_ignored() {
    let dir = temp_dir();
    let unix = format!("unix://{}", dir.path().join("s.sock").display());
    for endpoint in [unix.as_str(), "udp://127.0.0.1:0"] {
        let ran = sockit_run(&["serve", endpoint, "echo", "--threads", "4"], b"");
        assert_one_line_error(&ran, 2, &["--threads", "TCP listening socket", "leave --threads out"]);
    }
}

/// `--max-frame` and `--backlog` where they do nothing were accepted and ignored; they are
/// usage errors that say why, and still work where they apply.
#[test]
fn max_frame_and_backlog_where_they_do_nothing_are_refused_not_ignored() {
    let dir = temp_dir();
    let dgram = format!("unix-dgram://{}", dir.path().join("d.sock").display());
    let cases: &[(&[&str], &[&str])] = &[
        (&["serve", "127.0.0.1:0", "echo", "--max-frame", "10"], &["--max-frame does nothing here", "raw framing"]),
        (&["serve", "127.0.0.1:0", "files", "--max-frame", "10"], &["--max-frame does nothing here: files"]),
        (&["serve", "127.0.0.1:0", "discard", "--max-frame", "10"], &["--max-frame does nothing here: discard"]),
        (&["serve", "udp://127.0.0.1:0", "echo", "--max-frame", "10"], &["--max-frame", "leave --max-frame out"]),
        (&["connect", "udp://127.0.0.1:9", "--max-frame", "10"], &["--max-frame", "leave --max-frame out"]),
        (&["send", "udp://127.0.0.1:9", "hi", "--max-frame", "10"], &["--max-frame", "leave --max-frame out"]),
        (&["serve", "udp://127.0.0.1:0", "echo", "--backlog", "5"], &["--backlog", "receives datagrams"]),
        (&["serve", &dgram, "echo", "--backlog", "5"], &["--backlog", "receives datagrams"]),
        (&["relay", "udp://127.0.0.1:0", "udp://127.0.0.1:9", "--backlog", "5"], &["--backlog", "receives datagrams"]),
    ];
    for (args, needles) in cases {
        let ran = sockit_run(args, b"");
        assert_one_line_error(&ran, 2, needles);
    }
    // Where they apply, they are taken.
    let server = Server::start(&["127.0.0.1:0", "echo", "--framing", "line", "--max-frame", "10", "--backlog", "5"]);
    let ran = sockit_run(&["connect", &server.addr(), "--framing", "line", "--max-frame", "10"], b"short\n");
    assert_eq!(ran.stdout_text(), "short\n", "{}", ran.stderr);
    let chat = Server::start(&["127.0.0.1:0", "chat", "--max-frame", "100"]);
    drop(chat);
}

#[test]
fn unreadable_or_malformed_dict_file_is_a_usage_error() {
    let dir = temp_dir();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "# answers\nhow are u = fine\nthis line has no equals sign\n").unwrap();
    let ran = sockit_run(&["serve", "127.0.0.1:0", "qa", "--dict", bad.to_str().unwrap()], b"");
    assert_one_line_error(&ran, 2, &["--dict", "line 3", "question = answer"]);

    let missing = dir.path().join("missing.txt");
    let ran = sockit_run(&["serve", "127.0.0.1:0", "qa", "--dict", missing.to_str().unwrap()], b"");
    assert_one_line_error(&ran, 2, &["cannot read --dict", "missing.txt: no such file or directory"]);
    assert!(!ran.stderr.contains("os error"), "{}", ran.stderr);

    // Files that never end, or would fill memory, are refused instead of read.
    let huge = dir.path().join("huge.txt");
    std::fs::File::create(&huge).unwrap().set_len(65 << 20).unwrap();
    for (option, service) in [("--dict", "qa"), ("--allow-file", "echo"), ("--deny-file", "echo")] {
        let ran = sockit_run(&["serve", "127.0.0.1:0", service, option, "/dev/zero"], b"");
        assert_one_line_error(&ran, 2, &[&format!("cannot read {option} /dev/zero: it is a character device")]);
        let ran = sockit_run(&["serve", "127.0.0.1:0", service, option, huge.to_str().unwrap()], b"");
        assert_one_line_error(&ran, 2, &["it is larger than 64 MiB"]);
    }
}

#[test]
fn len_framing_on_a_udp_endpoint_is_a_usage_error() {
    let udp = "udp://127.0.0.1:9";
    for args in [
        vec!["serve", "udp://127.0.0.1:0", "--framing", "len"],
        vec!["send", udp, "hi", "--framing", "len"],
        vec!["connect", udp, "--framing", "line"],
    ] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 2, &["applies to stream sockets", "leave --framing out"]);
    }
}

#[test]
fn unknown_framing_is_a_usage_error() {
    for cmd in [vec!["serve", "127.0.0.1:0"], vec!["send", "127.0.0.1:9", "hi"]] {
        let mut args = cmd.clone();
        args.extend(["--framing", "xml"]);
        let ran = sockit_run(&args, b"");
        assert_parser_usage_error(&ran, &["'xml'", "raw, line or len"]);
    }
}

#[test]
fn bad_durations_are_usage_errors() {
    let cases: &[&[&str]] = &[
        &["serve", "127.0.0.1:0", "--idle-timeout", "soon"],
        &["serve", "127.0.0.1:0", "--grace=-1"],
        &["send", "127.0.0.1:9", "hi", "--timeout", "5 parsecs"],
        &["connect", "127.0.0.1:9", "--connect-timeout", "later"],
    ];
    for args in cases {
        let ran = sockit_run(args, b"");
        assert_parser_usage_error(&ran, &["duration"]);
    }
}

/// Numbers were refused in Rust's words ("invalid digit found in string", "number too large to
/// fit in target type", "invalid float literal"), and a duration too long to count was "not a
/// duration" in one place and "longer than the limit" in another. Each now says what is wrong
/// with the value, in one wording per kind.
#[test]
fn bad_numbers_and_oversized_durations_are_said_in_words() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "127.0.0.1:0", "--max-conns", "abc"], "'abc' is not a whole number (1 or more)"),
        (&["serve", "127.0.0.1:0", "--max-conns", "0"], "'0' is out of range (1 or more)"),
        (&["serve", "127.0.0.1:0", "--backlog", "99999999999"], "'99999999999' is too large (the most is 4294967295)"),
        (&["serve", "127.0.0.1:0", "--threads", "2000"], "'2000' is out of range (from 1 to 1024)"),
        (&["bench", "127.0.0.1:9", "-c", "x"], "'x' is not a whole number (from 1 to 100000)"),
        (&["bench", "127.0.0.1:9", "--hold", "many"], "'many' is not a whole number"),
        (&["bench", "127.0.0.1:9", "--rate", "fast"], "'fast' is not a number of requests per second"),
        (&["relay", "127.0.0.1:0", "127.0.0.1:9", "--seed", "99999999999999999999"], "is too large"),
        (&["serve", "127.0.0.1:0", "--max-frame", "99999999999999999999"], "must be from 1 byte to 4294967295"),
        (&["serve", "127.0.0.1:0", "--idle-timeout", "99999999999999999999s"], "longer than the limit of one year"),
        (&["serve", "127.0.0.1:0", "--idle-timeout", "1e30"], "longer than the limit of one year"),
        (&["serve", "127.0.0.1:0", "--idle-timeout", "2y"], "longer than the limit of one year"),
        (
            &["relay", "127.0.0.1:0", "127.0.0.1:9", "--delay", "99999999999999999999"],
            "'99999999999999999999' is longer",
        ),
    ];
    for (args, needle) in cases {
        let ran = sockit_run(args, b"");
        assert_parser_usage_error(&ran, &[needle]);
        for rust in ["invalid digit", "number too large", "float literal", "not a duration"] {
            assert!(!ran.stderr.contains(rust), "{args:?}: {}", ran.stderr);
        }
    }
}

#[test]
fn zero_timeouts_are_usage_errors() {
    let cases: &[&[&str]] = &[
        &["serve", "127.0.0.1:0", "--idle-timeout", "0s"],
        &["relay", "127.0.0.1:0", "127.0.0.1:9", "--idle-timeout", "0"],
        &["relay", "127.0.0.1:0", "127.0.0.1:9", "--connect-timeout", "0ms"],
        &["send", "127.0.0.1:9", "hi", "--timeout", "0"],
        &["connect", "127.0.0.1:9", "--connect-timeout", "0s"],
    ];
    for args in cases {
        let ran = sockit_run(args, b"");
        assert_parser_usage_error(&ran, &["a timeout must be longer than zero"]);
    }
}

#[test]
fn a_scheme_with_one_slash_or_an_unknown_one_is_named_as_such() {
    let ran = sockit_run(&["send", "tcp:/127.0.0.1:9", "hi"], b"");
    assert_one_line_error(&ran, 2, &["'tcp:/127.0.0.1:9'", "write tcp://127.0.0.1:9, with two slashes"]);
    let ran = sockit_run(&["connect", "unix-stream:/tmp/x"], b"");
    assert_one_line_error(&ran, 2, &["unknown scheme 'unix-stream'"]);
}

#[test]
fn an_empty_raw_message_on_a_stream_is_a_usage_error() {
    let port = free_tcp_port().to_string();
    let ran = sockit_run(&["send", &format!("127.0.0.1:{port}"), ""], b"");
    assert_one_line_error(&ran, 2, &["an empty TEXT is no bytes at all", "--framing line"]);
}

/// Under line framing a newline in `send`'s TEXT makes two messages, and `send` reads one
/// answer: the others were lost without a word.
#[test]
fn a_newline_in_a_line_framed_send_is_a_usage_error() {
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let ran = sockit_run(&["send", &addr, "a\nb", "--framing", "line"], b"");
    assert_one_line_error(&ran, 2, &["TEXT has a newline", "--framing line"]);
    // Where a newline is only a byte, it is sent as one (nothing listens: the connect fails).
    let ran = sockit_run(&["send", &addr, "a\nb", "--framing", "len"], b"");
    assert_one_line_error(&ran, 1, &["nothing is listening"]);
}

#[test]
fn mode_on_a_socket_without_a_file_is_a_usage_error() {
    for args in [
        vec!["serve", "127.0.0.1:0", "--mode", "660"],
        vec!["serve", "unix:@sockit-no-file", "--mode", "660"],
        vec!["relay", "127.0.0.1:0", "127.0.0.1:9", "--mode", "660"],
    ] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 2, &["--mode sets a Unix socket file's permissions", "has no file"]);
    }
}

/// A relay whose target is its own address would connect to itself until the descriptors ran
/// out: refused before it serves, for a literal address, a name, every interface, and a path.
#[test]
fn a_relay_to_its_own_address_is_a_usage_error() {
    let port = free_tcp_port();
    let dir = temp_dir();
    let path = format!("unix:{}", dir.path().join("r.sock").display());
    for (from, to) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("127.0.0.1:{port}"), format!("localhost:{port}")),
        (format!("0.0.0.0:{port}"), format!("127.0.0.2:{port}")),
        (path.clone(), path.clone()),
    ] {
        let ran = sockit_run(&["relay", &from, &to], b"");
        assert_one_line_error(&ran, 2, &["is this relay's own address"]);
    }
    assert!(!dir.path().join("r.sock").exists(), "the socket file is removed");
}

/// A Unix path or abstract name longer than the kernel takes was exit 1 (255 for exec), as if
/// the machine were at fault, and a relay to one started and then failed every client. It is a
/// usage error everywhere, found before anything starts.
#[test]
fn a_unix_path_too_long_for_the_kernel_is_a_usage_error() {
    let long = format!("unix:/tmp/{}.sock", "x".repeat(120));
    let name = format!("unix:@{}", "y".repeat(120));
    let cases: &[&[&str]] = &[
        &["serve", &long, "echo"],
        &["connect", &long],
        &["connect", &name],
        &["send", &long, "hi"],
        &["relay", "127.0.0.1:0", &long],
        &["relay", "127.0.0.1:0", &name],
        &["exec", &long, "--", "true"],
        &["ls", &long],
    ];
    for args in cases {
        let ran = run_within(sockit().args(*args), b"", PROMPT).unwrap_or_else(|| panic!("{args:?} did not stop"));
        assert_one_line_error(&ran, 2, &["the limit is 107", "hint:"]);
        // An abstract name is not told to become an abstract name.
        if args.iter().any(|a| a.starts_with("unix:@")) {
            assert!(ran.stderr.contains("abstract unix socket name"), "{}", ran.stderr);
            assert!(ran.stderr.contains("hint: use a shorter name"), "{}", ran.stderr);
            assert!(!ran.stderr.contains("unix:@name"), "{}", ran.stderr);
        }
    }
}

/// A relay to port 0 started, and then failed every client.
#[test]
fn a_relay_to_port_0_is_a_usage_error() {
    let ran = sockit_run(&["relay", "127.0.0.1:0", "127.0.0.1:0"], b"");
    assert_one_line_error(&ran, 2, &["a relay's target needs its port"]);
}

#[test]
fn bad_mode_is_a_usage_error() {
    for mode in ["999", "rw-r--r--", "77777", "7777", "1777"] {
        let ran = sockit_run(&["serve", "unix:/tmp/never-made.sock", "--mode", mode], b"");
        assert_parser_usage_error(&ran, &["octal file mode"]);
    }
}

#[test]
fn zero_limits_and_bad_sizes_are_usage_errors() {
    for args in [
        ["serve", "127.0.0.1:0", "--max-conns", "0"],
        ["serve", "127.0.0.1:0", "--backlog", "0"],
        ["serve", "127.0.0.1:0", "--max-frame", "0"],
        ["serve", "127.0.0.1:0", "--max-frame", "12Q"],
        ["serve", "127.0.0.1:0", "--threads", "0"],
        ["serve", "127.0.0.1:0", "--threads", "1025"],
        ["relay", "127.0.0.1:0", "--threads", "0"],
    ] {
        let ran = sockit_run(&args, b"");
        assert_parser_usage_error(&ran, &[args[2]]);
    }
}

#[test]
fn inherited_descriptors_that_cannot_serve_are_one_line_usage_errors() {
    let dir = temp_dir();
    let file = dir.path().join("plain.txt");
    std::fs::write(&file, b"not a socket").unwrap();
    let f = file.to_str().unwrap();
    // The shell passes the descriptors; stdin is a pipe (what `run` gives).
    let cases: &[(&str, &[&str])] = &[
        (r#""$0" serve fd://3 echo 3<"$1""#, &["fd://3 is not a socket (it is a regular file, ", "plain.txt)"]),
        (r#""$0" serve fd://3 echo 3<&0"#, &["fd://3 is not a socket (it is a pipe)"]),
        (r#""$0" serve fd://0 echo"#, &["fd://0 is not a socket (it is a pipe)"]),
        (r#""$0" serve fd://999 echo 999>&-"#, &["fd://999 is not open", "hint:"]),
        (r#""$0" serve --inetd upper"#, &["--inetd: stdin is not a socket (it is a pipe)", "inetd, socat"]),
        (r#""$0" serve --inetd upper < "$1""#, &["--inetd: stdin is not a socket (it is a regular file, "]),
        (r#""$0" send fd://3 hi 3<"$1""#, &["fd://3 is not a socket"]),
        (r#"env -u LISTEN_FDS "$0" serve fd://web"#, &["fd://web: no sockets were passed by systemd", "hint:"]),
        (r#"LISTEN_PID=1 LISTEN_FDS=1 "$0" serve fd://web"#, &["LISTEN_PID does not match"]),
        (r#"LISTEN_PID=$$ LISTEN_FDS=x exec "$0" serve fd://web"#, &["LISTEN_FDS 'x' is not a count"]),
    ];
    for (script, needles) in cases {
        let ran = run(Command::new("bash").args(["-c", script, env!("CARGO_BIN_EXE_sockit"), f]), b"");
        assert_one_line_error(&ran, 2, needles);
    }
}

#[test]
fn inetd_takes_no_endpoint_and_serve_needs_one_without_it() {
    for (args, needle) in [
        (vec!["serve", "--inetd", ":7000", "echo"], "takes no ENDPOINT (':7000')"),
        (vec!["serve", "--inetd", "unix:/tmp/x.sock"], "takes no ENDPOINT ('unix:/tmp/x.sock')"),
        (vec!["serve", "--inetd", "reply", "a", "b"], "the words are SERVICE [TEXT]"),
    ] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 2, &[needle]);
    }
    // The parser's error names the missing argument, on the same line.
    let ran = sockit_run(&["serve"], b"");
    assert_parser_usage_error(
        &ran,
        &["the following required arguments were not provided: <ENDPOINT> (see `sockit serve --help`)"],
    );
}

#[test]
fn bad_states_options_are_usage_errors() {
    // Parser errors: a value that is no state lists the states; a port out of range; options
    // that exclude each other.
    let ran = sockit_run(&["states", "--state", "BOGUS"], b"");
    assert_parser_usage_error(&ran, &["'BOGUS'", "LISTEN, SYN-SENT, SYN-RECEIVED, ESTABLISHED", "TIME-WAIT, CLOSED"]);
    for (args, needle) in [
        (&["states", "--port", "70000"][..], "70000"),
        (&["states", "--port", "0"][..], "0"),
        (&["states", "--port", "http"][..], "'http' is not a port number from 1 to 65535"),
        (&["states", "--port", "-1"][..], "'-1' is not a port number"),
        (&["ping", "-c", "99999999999999999999", "127.0.0.1"][..], "too large a count"),
        (&["states", "--listening", "--state", "listen"][..], "--state"),
        (&["states", "--json", "--watch"][..], "--watch"),
    ] {
        let ran = sockit_run(args, b"");
        assert_parser_usage_error(&ran, &[needle]);
    }
    // Ours: one line each.
    for (args, needle) in [
        (&["states", "--watch"][..], "--watch needs a terminal on stdout"),
        (&["states", "--watch", "--udp"][..], "--watch shows TCP sockets"),
        (&["states", "--unix", "--port", "22"][..], "--port applies to TCP and UDP"),
    ] {
        let ran = sockit_run(args, b"");
        assert_one_line_error(&ran, 2, &[needle]);
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime errors

#[test]
fn port_in_use_is_a_runtime_error_with_a_hint() {
    let server = Server::start(&["127.0.0.1:0", "echo"]);
    let ran = sockit_run(&["serve", &server.addr(), "echo"], b"");
    assert_one_line_error(&ran, 1, &["address already in use", "hint:", &server.addr()]);
}

#[test]
fn nothing_listening_is_a_runtime_error_with_a_hint() {
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    for args in [vec!["send", &addr, "hi"], vec!["connect", &addr]] {
        let ran = sockit_run(&args, b"hello\n");
        assert_one_line_error(&ran, 1, &["nothing is listening", "hint:", &addr]);
    }
}

#[test]
fn unknown_host_is_a_runtime_error_with_a_hint() {
    for args in [vec!["send", "nosuchhost.invalid:80", "hi"], vec!["connect", "nosuchhost.invalid:80"]] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 1, &["unknown host 'nosuchhost.invalid'", "hint:"]);
    }
}

#[test]
fn connecting_to_a_missing_unix_socket_file_is_a_runtime_error() {
    let dir = temp_dir();
    let ep = format!("unix:{}", dir.path().join("nobody.sock").display());
    for args in [vec!["connect", &ep], vec!["send", &ep, "hi"]] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 1, &["no such socket file", "hint:"]);
    }
}

/// A path that is a file of another kind says what it is, not that nothing listens there (and
/// not how to serve on it).
#[test]
fn connecting_to_a_file_that_is_not_a_socket_says_what_it_is() {
    let dir = temp_dir();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    for (path, kind) in
        [(file.display().to_string(), "a regular file"), (dir.path().display().to_string(), "a directory")]
    {
        for args in [vec!["connect", &path], vec!["send", &path, "hi"]] {
            let ran = sockit_run(&args, b"");
            assert_one_line_error(&ran, 1, &[&format!("it is {kind}, not a socket"), "hint:"]);
            assert!(!ran.stderr.contains("sockit serve"), "{}", ran.stderr);
        }
    }
}

/// A socket file named without the ./ that makes it a path gets the hint to add it.
#[test]
fn a_relative_socket_path_without_dot_slash_is_pointed_out() {
    let dir = temp_dir();
    let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("us.sock")).unwrap();
    let ran = run(sockit().current_dir(dir.path()).args(["connect", "us.sock"]), b"");
    assert_one_line_error(&ran, 2, &["no port", "(hint: there is a file us.sock here: write ./us.sock for it)"]);
    let ran = run(sockit().current_dir(dir.path()).args(["connect", "them.sock"]), b"");
    assert_one_line_error(&ran, 2, &["no port"]);
    assert!(!ran.stderr.contains("hint"), "{}", ran.stderr);
}

/// Port 0 is for listening: to connect to it is a wrong argument (exit 2), for every client.
#[test]
fn connecting_to_port_0_is_a_usage_error() {
    for args in
        [vec!["connect", "localhost:0"], vec!["send", "127.0.0.1:0", "hi"], vec!["send", "udp://127.0.0.1:0", "x"]]
    {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 2, &["port 0 is for listening", "a client needs the server's port"]);
    }
}

#[test]
fn binding_a_privileged_port_unprivileged_is_permission_denied_with_a_hint() {
    require!("setpriv");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not running as root, so setpriv cannot switch to an unprivileged user");
        return;
    }
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 80 {
        eprintln!("skipping: ip_unprivileged_port_start is {start}, so anyone may bind port 80");
        return;
    }
    let ran = run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sockit"))
            .args(["serve", "127.0.0.1:80", "echo"]),
        b"",
    );
    assert_one_line_error(&ran, 1, &["permission denied", "1024"]);
}

/// A line longer than one datagram carries is refused with one line and status 1; it was
/// dropped without a word, with status 0.
#[test]
fn a_line_too_long_for_one_udp_datagram_is_an_error_not_a_silent_drop() {
    let server = Server::start(&["udp://127.0.0.1:0", "echo"]);
    let ep = format!("udp://{}", server.addr());
    let mut line = vec![b'x'; 65_520];
    line.push(b'\n');
    let ran = sockit_run(&["connect", &ep], &line);
    assert_one_line_error(&ran, 1, &["longer than one datagram can carry", "65,507"]);
    let done = server.stop();
    assert!(done.stderr.iter().any(|l| l.contains("0 datagrams in")), "{:#?}", done.stderr);
}

#[test]
fn per_read_on_a_stream_endpoint_is_a_usage_error() {
    let ran = sockit_run(&["connect", "127.0.0.1:9", "--per-read"], b"");
    assert_one_line_error(&ran, 2, &["--per-read applies to datagram and seqpacket sockets", "is a stream"]);
}

#[test]
fn udp_send_to_a_port_nobody_listens_on_fails_clearly() {
    let ep = format!("udp://127.0.0.1:{}", free_udp_port());
    let ran = sockit_run(&["send", &ep, "anyone?", "--timeout", "1s"], b"");
    assert!(
        ran.stderr.contains("nothing is listening") || ran.stderr.contains("no answer"),
        "stderr: {:?}",
        ran.stderr
    );
    assert_one_line_error(&ran, 1, &[&ep]);
}

#[test]
fn send_to_a_tcp_server_that_holds_the_connection_without_answering_says_no_answer() {
    // Listening but never accepting: the kernel completes the connection, nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let ran = sockit_run(&["send", &addr, "hello?", "--timeout", "300ms"], b"");
    assert_one_line_error(&ran, 1, &["no answer", "300ms", "--timeout"]);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// `sockit send` to a `serve print` server, which reads the message, answers nothing and closes
/// when the client half-closes.
fn send_to_print_server(framing: &[&str]) {
    let mut serve_args = vec!["127.0.0.1:0", "print"];
    serve_args.extend(framing);
    let server = Server::start(&serve_args);
    let addr = server.addr();
    let mut args = vec!["send", &addr, "hello?", "--timeout", "300ms"];
    args.extend(framing);
    let ran = sockit_run(&args, b"");
    // The message did arrive.
    server.stdout.wait_for("the printed message", |l| l.ends_with(" hello?"));
    assert_one_line_error(&ran, 1, &["no answer", "--no-wait"]);
}

#[test]
fn send_to_a_tcp_print_server_that_never_answers_says_no_answer() {
    send_to_print_server(&[]);
}

#[test]
fn send_line_framed_to_a_tcp_print_server_that_never_answers_says_no_answer() {
    send_to_print_server(&["--framing", "line"]);
}

#[test]
fn send_to_a_udp_print_server_that_never_answers_says_no_answer() {
    let server = Server::start(&["udp://127.0.0.1:0", "print"]);
    let ep = server.endpoint.clone();
    let ran = sockit_run(&["send", &ep, "hello?", "--timeout", "300ms"], b"");
    // The hint names what sends without waiting.
    assert_one_line_error(&ran, 1, &["no answer", "300ms", "--no-wait sends without waiting"]);
    server.stdout.wait_for("the printed message", |l| l.ends_with(" hello?"));
}

/// A stdin that cannot be read is said in words, without "(os error 21)", on a stream and on a
/// datagram socket.
#[test]
fn connect_with_an_unreadable_stdin_says_so_in_words() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = temp_dir();
    for target in [format!("tcp://{}", listener.local_addr().unwrap()), format!("udp://{}", udp.local_addr().unwrap())]
    {
        let mut child = sockit()
            .args(["connect", &target])
            .stdin(std::fs::File::open(dir.path()).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err) = (drain(child.stdout.take().unwrap()), drain(child.stderr.take().unwrap()));
        let status = wait_bounded(&mut child, LIMIT).expect("connect did not end");
        let stderr = String::from_utf8(err.join().unwrap()).unwrap();
        let ran = Ran { code: status.code(), stdout: out.join().unwrap(), stderr };
        assert_one_line_error(&ran, 1, &[&format!("{target}: cannot read input: is a directory")]);
        assert!(!ran.stderr.contains("os error"), "{}", ran.stderr);
    }
}

/// An `exec` or `files` server on `socket` for one client: HELLO (no token asked), then an ERROR
/// with `code` and terminal escapes, a bell and a line break in its message, whatever is asked.
fn hostile_server(socket: &std::path::Path, service: u8, code: u8) -> std::thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let frame = |kind: u8, body: &[u8]| [&((body.len() + 1) as u32).to_be_bytes()[..], &[kind], body].concat();
        s.write_all(&frame(0x01, &[&[1, service, 0][..], &[0; 32]].concat())).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        s.read_exact(&mut vec![0u8; u32::from_be_bytes(len) as usize]).unwrap();
        let hostile = b"\x1b[2J\x1b[31mred\x07\nsockit: a second line\x1b]0;title\x07";
        s.write_all(&frame(0x7F, &[&[code][..], hostile].concat())).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    })
}

/// A server's error text reached the terminal as it came: its escapes cleared the screen and
/// coloured it, its newline made a second "sockit:" line. Control characters are now escaped.
#[test]
fn a_servers_error_text_cannot_drive_the_terminal() {
    let dir = temp_dir();
    let cases: &[(u8, u8, &[&str])] = &[
        (1, 1, &["exec", "--", "true"]),  // exec: the command was not found
        (2, 3, &["ls"]),                  // files: a protocol error
        (2, 16 + 11, &["get", "x", "-"]), // files: a file-system error
    ];
    for (i, &(service, code, args)) in cases.iter().enumerate() {
        let socket = dir.path().join(format!("hostile-{i}.sock"));
        let server = hostile_server(&socket, service, code);
        let endpoint = format!("unix:{}", socket.display());
        let mut cmd = sockit();
        cmd.env_remove("SOCKIT_TOKEN").arg(args[0]).arg(&endpoint).args(&args[1..]);
        let ran = run(&mut cmd, b"");
        server.join().unwrap();
        assert!(!ran.stderr.contains(['\x1b', '\x07']), "{args:?}: {:?}", ran.stderr);
        assert_eq!(ran.stderr.lines().count(), 1, "{args:?}: {:?}", ran.stderr);
        assert!(ran.stderr.contains("\\x1b[2J\\x1b[31mred\\x07\\nsockit: a second line"), "{args:?}: {:?}", ran.stderr);
        assert_ne!(ran.code, Some(0), "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// A closed stdout

#[test]
fn serve_print_piped_into_head_exits_quietly_and_successfully() {
    let dir = temp_dir();
    let path = dir.path().join("print.sock");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$0" serve "unix:$1" print | head -1"#)
        .arg(env!("CARGO_BIN_EXE_sockit"))
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let out_t = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let err_t = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if line.starts_with("sockit: serving ") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    ready_rx.recv_timeout(LIMIT).expect("the server's banner");
    // Send messages until the server, whose first line head printed, finds its stdout closed at
    // the next one and exits.
    let deadline = Instant::now() + LIMIT;
    let mut sent = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not exit after head closed its stdout");
        if let Ok(mut c) = UnixStream::connect(&path) {
            let _ = c.write_all(format!("message {sent}\n").as_bytes());
            sent += 1;
        }
        // Pacing, so the loop does not spin while the server notices.
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out_t.join().unwrap();
    let err = err_t.join().unwrap();
    assert!(sent >= 2, "at least two messages were needed");
    assert_eq!(status.code(), Some(0), "pipeline status (pipefail); stderr: {err:#?}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.trim_end().ends_with(" message 0"), "{out:?}");
    for line in &err {
        let l = line.to_lowercase();
        assert!(
            !l.contains("panicked") && !l.contains("error") && !l.contains("broken pipe") && !l.contains("cannot"),
            "stderr: {err:#?}"
        );
    }
    assert!(!path.exists(), "the socket file was left behind");
}

/// A reader that went away is a quiet end; a write that fails (a full disk) is not: `print`
/// stops, says why once, and exits 1.
#[test]
fn serve_print_into_a_full_disk_fails() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipping: this machine has no /dev/full");
        return;
    };
    let mut child = sockit()
        .args(["serve", "127.0.0.1:0", "print"])
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::collect(child.stderr.take().unwrap());
    let banner = stderr.wait_for("the server's banner", |l| l.starts_with("sockit: serving "));
    let addr = banner.split("tcp://").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    tcp(&addr).write_all(b"to a full disk\n").unwrap();
    let status = wait_bounded(&mut child, LIMIT).expect("the server did not stop when stdout failed");
    let err = stderr.finish();
    assert_eq!(status.code(), Some(1), "stderr: {err:#?}");
    let said: Vec<_> = err.iter().filter(|l| l.contains("cannot write to stdout")).collect();
    assert_eq!(said, ["sockit: cannot write to stdout: no space left on device"], "stderr: {err:#?}");
}

#[test]
fn connect_piped_into_head_exits_quietly_and_successfully() {
    // A server that sends as much as it can until the client goes away.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let talker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        let chunk = [b'z'; 64 * 1024];
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if s.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let ran = run(
        Command::new("bash")
            .arg("-c")
            .arg(r#"set -o pipefail; "$0" connect "$1" < /dev/null | head -c1"#)
            .arg(env!("CARGO_BIN_EXE_sockit"))
            .arg(&addr),
        b"",
    );
    assert_eq!(ran.code, Some(0), "pipeline status (pipefail); stderr: {:?}", ran.stderr);
    assert_eq!(ran.stdout, b"z");
    assert_eq!(ran.stderr, "", "a closed stdout is not an error");
    assert!(talker.join().unwrap(), "sockit kept the connection open after its output closed");
}

// ---------------------------------------------------------------------------------------------
// Help, version, completions, manual

#[test]
fn help_and_version_exit_zero() {
    let ran = sockit_run(&["--help"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout_text().contains("Usage: sockit"), "{}", ran.stdout_text());
    assert!(ran.stdout_text().contains("Endpoints:"));

    let ran = sockit_run(&["serve", "--help"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout_text().contains("Services:"));

    let ran = sockit_run(&["--version"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout_text().trim(), format!("sockit {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(ran.stderr, "");
}

#[test]
fn completions_and_man_page_are_printed() {
    let ran = sockit_run(&["completions", "bash"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout_text().contains("sockit"), "{}", ran.stdout_text());
    assert!(ran.stdout_text().contains("complete"), "{}", ran.stdout_text());

    let ran = sockit_run(&["man"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout_text().contains(".TH sockit"), "{}", ran.stdout_text());
    assert!(ran.stdout_text().contains("sockit\\-serve(1)"), "{}", ran.stdout_text());

    // Every command the page points to has a page of its own.
    let ran = sockit_run(&["man", "serve"], b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let page = ran.stdout_text();
    assert!(page.contains(".TH sockit-serve 1"), "{page}");
    assert!(page.contains("sockit serve") && page.contains("\\-\\-grace"), "{page}");
    // The examples are a section of their own, each on its own line as in --help: roff would
    // otherwise fill them into one paragraph.
    assert!(page.contains("\n.SH EXAMPLES\n.nf\n"), "{page}");
    assert!(page.contains("\n  sockit serve 127.0.0.1:7000 reply Hi \\-\\-once\n"), "{page}");

    let ran = sockit_run(&["man", "nope"], b"");
    assert_one_line_error(&ran, 2, &["no command 'nope'", "serve, connect"]);

    let ran = sockit_run(&["completions", "tcsh"], b"");
    assert_parser_usage_error(&ran, &["tcsh"]);
}

#[test]
fn options_of_exec_files_spawn_and_chat_elsewhere_or_missing_are_usage_errors() {
    let dir = support::temp_dir();
    let d = dir.path().to_str().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    for (args, needle) in [
        (vec!["serve", "127.0.0.1:0", "echo", "--token-file", "/nonexistent"], "belong to the exec, files and spawn"),
        (vec!["serve", "127.0.0.1:0", "echo", "--insecure"], "--insecure is gone"),
        (vec!["serve", "127.0.0.1:0", "upper", "--root", d], "belong to the files service"),
        (vec!["serve", "127.0.0.1:0", "echo", "--timeout", "1s"], "belongs to the exec and spawn services"),
        (vec!["serve", "unix:/tmp/sockit-errors-files.sock", "files"], "--root DIR"),
        (vec!["serve", "unix:/tmp/sockit-errors-files.sock", "files", "--root", file.to_str().unwrap()], "--root"),
        (vec!["serve", "udp://127.0.0.1:0", "exec"], "stream socket"),
        (vec!["serve", "unix-seqpacket:@sockit-errors-files", "files", "--root", d], "stream socket"),
        (vec!["serve", "127.0.0.1:0", "chat", "--framing", "len"], "line-based"),
        (vec!["serve", "127.0.0.1:0", "chat", "--framing", "raw"], "line-based"),
        (vec!["serve", "unix:/tmp/sockit-errors-exec.sock", "exec", "--framing", "raw"], "exec speaks sockit messages"),
        (vec!["serve", "unix:/tmp/sockit-errors-files.sock", "files", "--root", d, "--framing", "len"], "files speaks"),
        (vec!["serve", "127.0.0.1:0", "discard", "--framing", "line"], "discard moves bytes, not messages"),
        (vec!["serve", "127.0.0.1:0", "source", "--framing", "len"], "source moves bytes, not messages"),
        (vec!["serve", "127.0.0.1:0", "echo", "--default-answer", "x"], "belong to the qa service"),
        (vec!["relay", "udp://127.0.0.1:0", "udp://127.0.0.1:9", "--threads", "2"], "leave --threads out"),
        (vec!["relay", "unix:/tmp/sockit-errors-relay.sock", "127.0.0.1:9", "--threads", "2"], "leave --threads out"),
        (vec!["get", "127.0.0.1:1", ".."], "names no file"),
        (vec!["exec", "udp://127.0.0.1:9", "--", "true"], "not a stream socket"),
        (vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn"], "spawn needs the program to run"),
        (vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn", "cat"], "spawn's program goes after --"),
        (vec!["serve", "127.0.0.1:0", "echo", "--", "cat"], "only spawn runs a program"),
        (
            vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn", "--", "no-such-program-e7x"],
            "command not found",
        ),
        (vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn", "--", "/etc/passwd"], "cannot execute"),
        (vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn", "--", d], "cannot execute"),
        (vec!["serve", "udp://127.0.0.1:0", "spawn", "--", "cat"], "stream socket"),
        (vec!["serve", "unix-seqpacket:@sockit-errors-spawn", "spawn", "--", "cat"], "stream socket"),
        (vec!["serve", "unix:/tmp/sockit-errors-spawn.sock", "spawn", "--framing", "line", "--", "cat"], "raw bytes"),
        (vec!["serve", "127.0.0.1:0", "spawn", "--", "cat"], "needs a token"),
        (vec!["connect", "udp://127.0.0.1:9", "--token-file", "/nonexistent"], "not a stream socket"),
    ] {
        let ran = sockit_run(&args, b"");
        assert_one_line_error(&ran, 2, &[needle]);
    }
}

/// A missing token file was reported with its reason twice ("…: No such file or directory (os
/// error 2): No such file or directory (os error 2)"): the error's message and its source both
/// said it. It was also exit 1 (255 for exec), where every other file an option names that
/// cannot be read (--dict, --cert, --allow-file) is a usage error: it is exit 2 for all.
#[test]
fn a_missing_token_file_is_said_once() {
    for args in [
        &["serve", "127.0.0.1:0", "exec", "--token-file", "/nonexistent/token"][..],
        &["exec", "127.0.0.1:9", "--token-file", "/nonexistent/token", "--", "true"],
        &["get", "127.0.0.1:9", "x", "--token-file", "/nonexistent/token"],
    ] {
        let ran = sockit_run(args, b"");
        assert_one_line_error(&ran, 2, &["cannot read token file /nonexistent/token: no such file or directory"]);
        assert!(!ran.stderr.contains("os error"), "{:?}", ran.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// Ping

#[test]
fn ping_bad_input_is_a_one_line_usage_error() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["ping", "tcp://127.0.0.1:80"], &["invalid host 'tcp://127.0.0.1:80'", "endpoint", "127.0.0.1"]),
        (&["ping", "unix:/tmp/x.sock"], &["invalid host", "endpoint"]),
        (&["ping", "127.0.0.1:80"], &["invalid host '127.0.0.1:80'", "without a port"]),
        (&["ping", "[::1]:80"], &["without a port"]),
        (&["ping", "bad host"], &["invalid host 'bad host'", "not an IP address or a valid host name"]),
        (&["ping", ""], &["invalid host ''", "empty"]),
        (&["ping", "-4", "::1"], &["-4 with the IPv6 address ::1"]),
        (&["ping", "-6", "127.0.0.1"], &["-6 with the IPv4 address 127.0.0.1"]),
        (&["ping", "127.0.0.1", "-s", "65508"], &["65508 bytes does not fit in an IPv4 packet (at most 65507)"]),
        (&["ping", "127.0.0.1", "-i", "0"], &["-i 0s is too short", "2ms", "no flood mode"]),
        (&["ping", "127.0.0.1", "-i", "1ms"], &["-i 1ms is too short"]),
        (&["ping", "127.0.0.1", "-W", "0"], &["-W must be longer than zero"]),
    ];
    for (args, needles) in cases {
        let ran = sockit_run(args, b"");
        assert_one_line_error(&ran, 2, needles);
    }
}

#[test]
fn ping_bad_numbers_are_parser_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["ping", "127.0.0.1", "-s", "70000"], "at most 65527"),
        (&["ping", "127.0.0.1", "-s", "-1"], "'-1' is not a payload size"),
        (&["ping", "127.0.0.1", "-c", "0"], "'0' is not a count of 1 or more"),
        (&["ping", "127.0.0.1", "-c", "-1"], "'-1' is not a count of 1 or more"),
        (&["ping", "127.0.0.1", "-i", "-1"], "'-1' is not a duration"),
        (&["ping", "127.0.0.1", "-W", "soon"], "'soon' is not a duration"),
        (&["ping", "127.0.0.1", "-4", "-6"], "cannot be used with"),
    ];
    for (args, needle) in cases {
        let ran = sockit_run(args, b"");
        assert_parser_usage_error(&ran, &[needle]);
    }
}

#[test]
fn ping_unknown_host_is_exit_2_with_a_hint() {
    // The lookup runs in a network namespace of its own with nothing in it (not even lo up), so
    // no query leaves the machine.
    require!("unshare");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not root, so no network namespace to look the name up in");
        return;
    }
    let started = Instant::now();
    let ran = run(
        Command::new("unshare").args(["-n", env!("CARGO_BIN_EXE_sockit"), "ping", "nosuchhost.invalid", "-c", "1"]),
        b"",
    );
    assert_one_line_error(&ran, 2, &["unknown host 'nosuchhost.invalid'", "hint:"]);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

/// A Unix socket of another type than the scheme says is named, with the endpoint that fits:
/// the kernel's "Protocol wrong type for socket" tells a user nothing.
#[test]
fn a_unix_socket_of_another_type_is_named_with_the_scheme_that_fits() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = temp_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let _stream = std::os::unix::net::UnixListener::bind(at("st.sock")).unwrap();
    let _dgram = std::os::unix::net::UnixDatagram::bind(at("dg.sock")).unwrap();
    let seq = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    seq.bind(&SockAddr::unix(at("sq.sock")).unwrap()).unwrap();
    seq.listen(8).unwrap();
    // A datagram socket connected to a peer of its own refuses others, but is still one.
    let _peer = std::os::unix::net::UnixDatagram::bind(at("peer.sock")).unwrap();
    let taken = std::os::unix::net::UnixDatagram::bind(at("taken.sock")).unwrap();
    taken.connect(at("peer.sock")).unwrap();
    let cases = [
        ("unix", "taken.sock", "is a datagram socket, not a stream socket", "unix-dgram://"),
        ("unix", "sq.sock", "is a seqpacket socket, not a stream socket", "unix-seqpacket://"),
        ("unix", "dg.sock", "is a datagram socket, not a stream socket", "unix-dgram://"),
        ("unix-seqpacket", "st.sock", "is a stream socket, not a seqpacket socket", "connect to unix://"),
        ("unix-seqpacket", "dg.sock", "is a datagram socket, not a seqpacket socket", "unix-dgram://"),
        ("unix-dgram", "st.sock", "is a stream or seqpacket socket, not a datagram socket", "unix-seqpacket://"),
    ];
    for (scheme, file, found, hint) in cases {
        let ep = format!("{scheme}://{}", at(file));
        let ran = sockit_run(&["send", &ep, "hi"], b"");
        assert_one_line_error(&ran, 1, &[found, hint]);
    }
}

// ---------------------------------------------------------------------------------------------
// exec's command and token files

/// `sockit exec HOST -- ""` went to the server, which answered with a protocol error ("malformed
/// message: EXEC without a command") and exit 255; it is a usage error, told before connecting
/// (to a port nobody listens on here, so a connection would fail otherwise).
#[test]
fn an_empty_exec_command_is_a_usage_error_before_connecting() {
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    for (words, needle) in [
        (&[""][..], "the command is empty"),
        (&["", "x"][..], "the first word after --, is empty"),
        (&["--shell", "--", " "][..], "the command is empty"),
    ] {
        let mut args = vec!["exec", addr.as_str()];
        if words[0] != "--shell" {
            args.push("--");
        }
        args.extend_from_slice(words);
        let ran = run(sockit().env_remove(TOKEN_ENV).args(&args), b"");
        assert_one_line_error(&ran, 2, &[needle]);
    }
}

/// A command without `--` was clap's bare "unexpected argument 'true'"; it is told where the
/// command goes, as `serve … spawn cat` is. It is not taken as the command: options after it
/// would then be the command's, where a user of `sockit exec HOST ls --timeout 5s` means them.
#[test]
fn an_exec_command_without_the_double_dash_is_told_where_it_goes() {
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let ran = sockit_run(&["exec", &addr, "--token-file", "/nonexistent", "true"], b"");
    assert_one_line_error(&ran, 2, &["the command goes after --", "-- true"]);
    let ran = sockit_run(&["exec", &addr, "ls", "-n", "--", "/tmp dir"], b"");
    assert_one_line_error(&ran, 2, &["the command goes after --", "-- ls '/tmp dir'"]);
    // With no command at all, the parser says what is missing, as before.
    let ran = sockit_run(&["exec", &addr], b"");
    assert_parser_usage_error(
        &ran,
        &["the following required arguments were not provided: <CMD>...", "sockit exec --help"],
    );
}

/// A directory as --token-file was refused for its mode: "token file DIR is readable by other
/// users (mode 755); run: chmod 600 DIR". A named pipe nobody writes to blocked the open.
#[test]
fn a_token_file_that_is_not_a_file_is_named_for_what_it_is() {
    let dir = support::temp_dir();
    let d = dir.path().to_str().unwrap().to_owned();
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    for (path, needle) in [(d.as_str(), "is a directory"), ("/dev/null", "is a character device"), (fifo, "is empty")] {
        let serve = ["serve", "127.0.0.1:0", "exec", "--token-file", path];
        let ran = run_within(sockit().env_remove(TOKEN_ENV).args(serve), b"", PROMPT).expect("serve gave up at once");
        assert_one_line_error(&ran, 2, &[needle]);
        assert!(!ran.stderr.contains("chmod"), "{:?}", ran.stderr);
        // Every client that takes --token-file: a usage error, as for the server.
        for (client, code) in [("exec", 2), ("ls", 2), ("connect", 2)] {
            let mut args = vec![client, addr.as_str(), "--token-file", path];
            if client == "exec" {
                args.extend(["--", "true"]);
            }
            let ran = run_within(sockit().env_remove(TOKEN_ENV).args(&args), b"", PROMPT)
                .unwrap_or_else(|| panic!("{args:?} hung"));
            assert_one_line_error(&ran, code, &[needle]);
        }
    }
}
