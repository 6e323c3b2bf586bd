//! `sockit ping` on real ICMP sockets: 127.0.0.1 and ::1, the raw and the datagram socket (each
//! chosen by `net.ipv4.ping_group_range` inside a network namespace the test makes), a host in
//! a second namespace across a veth pair, total loss bounded by -W, ICMP errors for an address
//! nobody has, a fake peer that duplicates and damages replies, and Ctrl-C.
//!
//! No packet leaves the machine: the tests ping loopback or addresses that exist only inside
//! their own namespaces (`unshare -n`). Tests that need root, `unshare` or `ip` skip with a
//! printed reason where those are missing.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// What one `sockit ping` printed, taken apart.
#[derive(Debug)]
struct Output {
    header: String,
    /// `… bytes from …` lines.
    replies: Vec<String>,
    /// `From … icmp_seq=…` lines.
    errors: Vec<String>,
    /// The statistics line, e.g. `3 packets transmitted, 3 received, 0% packet loss, time 402ms`.
    counts: String,
    transmitted: u64,
    received: u64,
    time_ms: u64,
    /// min, avg, max, mdev in ms.
    rtt: Option<[f64; 4]>,
}

#[track_caller]
fn parse(stdout: &str) -> Output {
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines.first().unwrap_or_else(|| panic!("no output")).to_string();
    assert!(header.starts_with("PING "), "header: {stdout}");
    let stats_at = lines
        .iter()
        .position(|l| l.starts_with("--- ") && l.ends_with(" ping statistics ---"))
        .unwrap_or_else(|| panic!("no statistics: {stdout}"));
    assert_eq!(lines[stats_at - 1], "", "an empty line before the statistics: {stdout}");
    let counts = lines[stats_at + 1].to_string();
    let number_before = |what: &str| -> u64 {
        let end = counts.find(what).unwrap_or_else(|| panic!("no {what:?} in {counts:?}"));
        counts[..end].trim_end().rsplit([' ', '+']).next().unwrap().parse().unwrap()
    };
    let transmitted = number_before(" packets transmitted");
    let received = number_before(" received");
    let time_ms = counts.rsplit("time ").next().unwrap().trim_end_matches("ms").parse().unwrap();
    let rtt = lines.get(stats_at + 2).map(|l| {
        let values = l.strip_prefix("rtt min/avg/max/mdev = ").unwrap().strip_suffix(" ms").unwrap();
        let v: Vec<f64> = values.split('/').map(|x| x.parse().unwrap()).collect();
        [v[0], v[1], v[2], v[3]]
    });
    let body = &lines[1..stats_at - 1];
    Output {
        header,
        replies: body.iter().filter(|l| l.contains(" bytes from ")).map(|l| l.to_string()).collect(),
        errors: body.iter().filter(|l| l.starts_with("From ")).map(|l| l.to_string()).collect(),
        counts,
        transmitted,
        received,
        time_ms,
        rtt,
    }
}

impl Output {
    #[track_caller]
    fn assert_all_answered(&self, n: u64) {
        assert_eq!((self.transmitted, self.received), (n, n), "{self:#?}");
        assert!(self.counts.contains(" 0% packet loss"), "{self:#?}");
        assert_eq!(self.replies.len() as u64, n, "{self:#?}");
        for (i, line) in self.replies.iter().enumerate() {
            assert!(line.contains(&format!(": icmp_seq={} ", i + 1)), "{line}");
            assert!(line.ends_with(" ms"), "{line}");
        }
        let [min, avg, max, mdev] = self.rtt.unwrap_or_else(|| panic!("no rtt line: {self:#?}"));
        assert!(min <= avg && avg <= max && mdev >= 0.0, "{self:#?}");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process may make network namespaces; prints why not when it may not.
fn namespaces() -> bool {
    if !is_root() {
        eprintln!("skipping: not root, so no network namespaces");
        return false;
    }
    for tool in ["unshare", "ip", "nsenter", "sysctl"] {
        if !have(tool) {
            eprintln!("skipping: {tool} is not installed");
            return false;
        }
    }
    let ok = Command::new("unshare").args(["-n", "true"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: unshare -n fails here (no namespace support)");
    }
    ok
}

macro_rules! require_namespaces {
    () => {
        if !namespaces() {
            return;
        }
    };
}

/// Whether the host has ::1 (IPv6 may be disabled).
fn have_ipv6_loopback() -> bool {
    let ok = std::fs::read_to_string("/proc/net/if_inet6")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("00000000000000000000000000000001")));
    if !ok {
        eprintln!("skipping: no ::1 on this machine");
    }
    ok
}

/// Runs `script` with `sh` in a new network namespace whose `lo` is up, with `$S` the sockit
/// binary. Exit status 99 means the namespace could not be set up: the test is skipped.
fn in_namespace(script: &str) -> Option<Ran> {
    let full = format!("ip link set lo up || exit 99\n{script}");
    let ran = run(Command::new("unshare").args(["-n", "sh", "-c", &full]).env("S", env!("CARGO_BIN_EXE_sockit")), b"");
    if ran.code == Some(99) {
        eprintln!("skipping: the namespace could not be set up: {}", ran.stderr);
        return None;
    }
    Some(ran)
}

/// A script prefix that makes a second namespace and a veth pair to it: here `near`, with
/// 10.200.7.1/24 and fd53:7::1/64; there `far`, with 10.200.7.2/24 and fd53:7::2/64. `$FAR`
/// is the pid of a process in the far namespace (`nsenter -t $FAR -n …` runs there); it is
/// killed when the script exits.
const VETH: &str = r#"
unshare -n sleep 60 &
FAR=$!
trap 'kill $FAR' EXIT
i=0
while [ "$(readlink /proc/$FAR/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do
    i=$((i+1)); [ $i -lt 500 ] || exit 99; sleep 0.01
done
sysctl -qw net.ipv6.conf.default.accept_dad=0 || exit 99
nsenter -t $FAR -n sysctl -qw net.ipv6.conf.default.accept_dad=0 || exit 99
ip link add name near type veth peer name far netns $FAR || exit 99
ip addr add 10.200.7.1/24 dev near
ip -6 addr add fd53:7::1/64 dev near nodad
ip link set near up
nsenter -t $FAR -n sh -c 'ip link set lo up; ip addr add 10.200.7.2/24 dev far;
    ip -6 addr add fd53:7::2/64 dev far nodad; ip link set far up' || exit 99
i=0
until ip link show near | grep -q LOWER_UP; do i=$((i+1)); [ $i -lt 500 ] || exit 99; sleep 0.01; done
"#;

/// Lets datagram (ping) sockets be used by every group, in this namespace only.
const ALLOW_DGRAM: &str = "sysctl -qw net.ipv4.ping_group_range='0 2147483647' || exit 99\n";

/// Runs the rest of a command line as the unprivileged user nobody, without capabilities.
const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

// ---------------------------------------------------------------------------------------------
// Loopback, in this namespace

/// `sockit ping ARGS…` here; `None` (with a reason printed) when this process may not ping.
fn ping_here(args: &[&str]) -> Option<Ran> {
    let mut all = vec!["ping"];
    all.extend(args);
    let ran = sockit_run(&all, b"");
    if ran.code == Some(2) && ran.stderr.contains("cannot ping: ICMP datagram sockets are not allowed") {
        eprintln!("skipping: this process may open no ICMP socket: {}", ran.stderr);
        return None;
    }
    Some(ran)
}

#[test]
fn ipv4_loopback_three_replies_and_a_summary() {
    let Some(ran) = ping_here(&["127.0.0.1", "-c", "3", "-i", "0.2"]) else { return };
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stderr, "");
    let out = parse(&ran.stdout_text());
    assert!(
        out.header == "PING 127.0.0.1: 56 data bytes, raw socket"
            || out.header == "PING 127.0.0.1: 56 data bytes, ICMP datagram socket",
        "{}",
        out.header
    );
    out.assert_all_answered(3);
    assert!(out.replies[0].starts_with("64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time="), "{:?}", out.replies);
    // Three requests 200 ms apart, the run ends with the last reply.
    assert!((390..2000).contains(&out.time_ms), "{out:#?}");
}

#[test]
fn ipv6_loopback_three_replies_and_a_summary() {
    if !have_ipv6_loopback() {
        return;
    }
    let Some(ran) = ping_here(&["::1", "-c", "3", "-i", "0.2"]) else { return };
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let out = parse(&ran.stdout_text());
    assert!(out.header.starts_with("PING ::1: 56 data bytes, "), "{}", out.header);
    out.assert_all_answered(3);
    assert!(out.replies[2].starts_with("64 bytes from ::1: icmp_seq=3 ttl=64 time="), "{:?}", out.replies);
}

#[test]
fn localhost_is_the_loopback_address_of_the_family() {
    let Some(ran) = ping_here(&["localhost", "-c", "1"]) else { return };
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let out = parse(&ran.stdout_text());
    assert!(out.header.starts_with("PING localhost (127.0.0.1): 56 data bytes"), "{}", out.header);
    assert!(ran.stdout_text().contains("--- localhost ping statistics ---"));
    if have_ipv6_loopback() {
        let ran = ping_here(&["localhost", "-6", "-c", "1"]).unwrap();
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert!(ran.stdout_text().starts_with("PING localhost (::1): 56 data bytes"), "{}", ran.stdout_text());
    }
}

#[test]
fn json_is_one_object_with_every_reply_and_the_statistics() {
    let mut hosts = vec!["127.0.0.1"];
    if have_ipv6_loopback() {
        hosts.push("::1");
    }
    for host in hosts {
        let Some(ran) = ping_here(&[host, "-c", "3", "-i", "0.2", "--json"]) else { return };
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let text = ran.stdout_text();
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["host"], host);
        assert_eq!(v["address"], host);
        assert!(v["socket"] == "raw" || v["socket"] == "datagram", "{v}");
        assert_eq!(v["data_bytes"], 56);
        let replies = v["replies"].as_array().unwrap();
        assert_eq!(replies.len(), 3, "{v}");
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r["seq"], i as u64 + 1, "{r}");
            assert_eq!(r["from"], host);
            assert_eq!(r["bytes"], 64);
            assert_eq!(r["ttl"], 64);
            assert_eq!(r["duplicate"], false);
            assert!(r["problem"].is_null());
            assert!(r["time_ms"].as_f64().unwrap() >= 0.0);
        }
        assert_eq!(v["errors"], serde_json::json!([]));
        let s = &v["statistics"];
        assert_eq!((s["transmitted"].as_u64(), s["received"].as_u64()), (Some(3), Some(3)), "{s}");
        assert_eq!(
            (s["duplicates"].as_u64(), s["corrupted"].as_u64(), s["errors"].as_u64()),
            (Some(0), Some(0), Some(0))
        );
        assert_eq!(s["loss_percent"], 0.0);
        let rtt = &s["rtt_ms"];
        assert!(rtt["min"].as_f64() <= rtt["avg"].as_f64() && rtt["avg"].as_f64() <= rtt["max"].as_f64(), "{rtt}");
    }
}

#[test]
fn quiet_prints_only_the_first_line_and_the_summary() {
    let Some(ran) = ping_here(&["127.0.0.1", "-c", "2", "-i", "0.2", "-q"]) else { return };
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let out = parse(&ran.stdout_text());
    assert!(out.replies.is_empty(), "{out:#?}");
    assert_eq!((out.transmitted, out.received), (2, 2));
    assert_eq!(ran.stdout_text().lines().count(), 5, "{}", ran.stdout_text());
}

#[test]
fn the_largest_and_the_smallest_payloads() {
    let mut cases = vec![("127.0.0.1", "65507", 65515), ("127.0.0.1", "0", 8)];
    if have_ipv6_loopback() {
        cases.push(("::1", "65527", 65535));
    }
    for (host, size, bytes) in cases {
        let Some(ran) = ping_here(&[host, "-c", "1", "-s", size]) else { return };
        assert_eq!(ran.code, Some(0), "-s {size} to {host}: {}", ran.stderr);
        let out = parse(&ran.stdout_text());
        assert!(out.header.contains(&format!(": {size} data bytes, ")), "{}", out.header);
        assert!(out.replies[0].starts_with(&format!("{bytes} bytes from {host}: icmp_seq=1 ")), "{:?}", out.replies);
        out.assert_all_answered(1);
    }
}

#[test]
fn ctrl_c_stops_and_prints_the_summary() {
    let mut child = sockit()
        .args(["ping", "127.0.0.1", "-i", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("icmp_seq=2 ") => break,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
                if err.contains("cannot ping: ICMP datagram sockets are not allowed") {
                    eprintln!("skipping: this process may open no ICMP socket: {err}");
                    return;
                }
                panic!("no second reply; stderr: {err}");
            }
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, LIMIT).expect("ping did not stop on SIGINT");
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    let out = parse(&lines.join("\n"));
    assert!(out.transmitted >= 2 && out.received >= 2, "{out:#?}");
    // A request sent just before the signal may have had no time for its reply.
    assert!(out.transmitted - out.received <= 1, "{out:#?}");
    assert!(out.rtt.is_some(), "{out:#?}");
}

// ---------------------------------------------------------------------------------------------
// The socket kinds, chosen by ping_group_range in a namespace of our own

#[test]
fn a_raw_socket_when_ping_group_range_forbids_datagram_sockets() {
    require_namespaces!();
    // A new namespace's ping_group_range is "1 0": nobody, not even root's group 0.
    for host in ["127.0.0.1", "::1"] {
        let Some(ran) =
            in_namespace(&format!("cat /proc/sys/net/ipv4/ping_group_range >&2\nexec \"$S\" ping {host} -c 2 -i 0.2"))
        else {
            return;
        };
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        assert_eq!(ran.stderr.split_whitespace().collect::<Vec<_>>(), ["1", "0"]);
        let out = parse(&ran.stdout_text());
        assert_eq!(out.header, format!("PING {host}: 56 data bytes, raw socket"));
        out.assert_all_answered(2);
    }
}

#[test]
fn a_datagram_socket_when_ping_group_range_allows_it_for_root_and_for_nobody() {
    require_namespaces!();
    require!("setpriv");
    for host in ["127.0.0.1", "::1"] {
        for who in ["", AS_NOBODY] {
            let Some(ran) = in_namespace(&format!("{ALLOW_DGRAM}exec {who} \"$S\" ping {host} -c 2 -i 0.2")) else {
                return;
            };
            assert_eq!(ran.code, Some(0), "{who}: {}", ran.stderr);
            let out = parse(&ran.stdout_text());
            assert_eq!(out.header, format!("PING {host}: 56 data bytes, ICMP datagram socket"), "{who}");
            out.assert_all_answered(2);
            assert!(out.replies[0].contains(" ttl=64 "), "the TTL comes from a control message: {:?}", out.replies);
        }
    }
}

#[test]
fn neither_socket_allowed_is_one_clear_error() {
    require_namespaces!();
    require!("setpriv");
    let Some(ran) = in_namespace(&format!("exec {AS_NOBODY} \"$S\" ping 127.0.0.1 -c 1")) else { return };
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stdout.is_empty(), "{}", ran.stdout_text());
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    for needle in [
        "sockit: cannot ping: ICMP datagram sockets are not allowed for group 65534",
        "(net.ipv4.ping_group_range is '1 0')",
        "raw sockets need CAP_NET_RAW",
        "hint: sysctl -w net.ipv4.ping_group_range='0 2147483647', or run as root",
    ] {
        assert!(ran.stderr.contains(needle), "{needle:?} in {}", ran.stderr);
    }
}

#[test]
fn intervals_below_200ms_are_for_root_only() {
    require_namespaces!();
    require!("setpriv");
    let Some(ran) = in_namespace(&format!("{ALLOW_DGRAM}exec {AS_NOBODY} \"$S\" ping 127.0.0.1 -c 1 -i 0.1")) else {
        return;
    };
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert_eq!(ran.stderr.trim(), "sockit: -i 100ms is too short: intervals below 200ms are for root only");
    // Root may: 5 requests 50 ms apart.
    let ran = ping_here(&["127.0.0.1", "-c", "5", "-i", "0.05"]).unwrap();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let out = parse(&ran.stdout_text());
    out.assert_all_answered(5);
    assert!(out.time_ms < 1000, "{out:#?}");
}

// ---------------------------------------------------------------------------------------------
// Another namespace across a veth pair

/// Runs `body` after [`VETH`] in a fresh namespace, once per socket kind; `None` if skipped.
fn across_veth(body: &str) -> Option<[(Ran, &'static str); 2]> {
    let raw = in_namespace(&format!("{VETH}{body}"))?;
    let dgram = in_namespace(&format!("{VETH}{ALLOW_DGRAM}{body}"))?;
    Some([(raw, "raw socket"), (dgram, "ICMP datagram socket")])
}

/// The body of a script: runs sockit with `args` and exits with its status (the trap kills the
/// far namespace's process).
fn sockit_then_exit(args: &str) -> String {
    format!("\"$S\" ping {args}\nexit $?\n")
}

#[test]
fn a_host_in_another_namespace_answers_over_ipv4_and_ipv6() {
    require_namespaces!();
    for (host, source) in [("10.200.7.2", "10.200.7.2"), ("fd53:7::2", "fd53:7::2")] {
        let Some(runs) = across_veth(&sockit_then_exit(&format!("{host} -c 3 -i 0.2"))) else { return };
        for (ran, kind) in runs {
            assert_eq!(ran.code, Some(0), "{kind} to {host}: {}", ran.stderr);
            let out = parse(&ran.stdout_text());
            assert_eq!(out.header, format!("PING {host}: 56 data bytes, {kind}"));
            out.assert_all_answered(3);
            assert!(out.replies[0].starts_with(&format!("64 bytes from {source}: icmp_seq=1 ttl=64 ")), "{out:#?}");
        }
    }
}

#[test]
fn a_silent_host_is_total_loss_within_the_timeout() {
    require_namespaces!();
    // The far namespace has the addresses but ignores echo requests: no reply and no error.
    let silence = "nsenter -t $FAR -n sysctl -qw net.ipv4.icmp_echo_ignore_all=1 net.ipv6.icmp.echo_ignore_all=1 \
                   || exit 99\n";
    for host in ["10.200.7.2", "fd53:7::2"] {
        let started = Instant::now();
        let body = format!("{silence}{}", sockit_then_exit(&format!("{host} -c 2 -i 0.2 -W 1")));
        let Some(runs) = across_veth(&body) else { return };
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        for (ran, kind) in runs {
            assert_eq!(ran.code, Some(1), "{kind} to {host}: no reply is exit status 1; {}", ran.stderr);
            let out = parse(&ran.stdout_text());
            assert_eq!(out.counts.split(", time").next(), Some("2 packets transmitted, 0 received, 100% packet loss"));
            assert!(out.replies.is_empty() && out.errors.is_empty(), "{out:#?}");
            assert!(out.rtt.is_none(), "{out:#?}");
            // The second request at 200 ms, then one second of -W.
            assert!((1150..3000).contains(&out.time_ms), "{kind}: {out:#?}");
        }
    }
}

#[test]
fn an_address_nobody_has_is_reported_unreachable() {
    require_namespaces!();
    // One neighbour probe, 200 ms: the kernel gives up (and says so) quickly. The second request
    // leaves at 500 ms, well clear of that: a packet that reaches the neighbour entry while the
    // kernel reports the first failure is dropped without an error (`neigh_invalidate` purges
    // the queue after the reports), so a request sent at 200 ms was lost now and then.
    let fast = "sysctl -qw net.ipv4.neigh.near.mcast_solicit=1 net.ipv4.neigh.near.retrans_time_ms=200 \
                net.ipv6.neigh.near.mcast_solicit=1 net.ipv6.neigh.near.retrans_time_ms=200 || exit 99\n";
    for (host, from, message) in [
        ("10.200.7.99", "10.200.7.1", "Destination Host Unreachable"),
        ("fd53:7::99", "fd53:7::1", "Destination unreachable: Address unreachable"),
    ] {
        let body = format!("{fast}{}", sockit_then_exit(&format!("{host} -c 2 -i 0.5 -W 5")));
        let Some(runs) = across_veth(&body) else { return };
        for (ran, kind) in runs {
            assert_eq!(ran.code, Some(1), "{kind} to {host}: {}", ran.stderr);
            let out = parse(&ran.stdout_text());
            assert_eq!(out.errors, [1, 2].map(|seq| format!("From {from} icmp_seq={seq} {message}")), "{kind}");
            assert_eq!(
                out.counts.split(", time").next(),
                Some("2 packets transmitted, 0 received, +2 errors, 100% packet loss"),
                "{kind}"
            );
            // Every request has its answer, so the run does not wait out -W.
            assert!(out.time_ms < 4000, "{kind}: {out:#?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A peer that misbehaves

/// A Python echo responder on a raw socket, in a namespace whose kernel does not answer echo
/// requests itself. By sequence number: 1 is answered twice, 2 with one payload byte changed,
/// 3 with a bad checksum, 4 with another identifier, the rest correctly.
const FAKE_PEER: &str = r#"
import socket, struct, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/icmp_echo_ignore_all", "w") as f:
    f.write("1")
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("READY", flush=True)

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    total = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while total > 0xffff:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff

def reply(ident, seq, data, to, damage_checksum=False):
    c = checksum(struct.pack("!BBHHH", 0, 0, 0, ident, seq) + data)
    if damage_checksum:
        c ^= 0x5555
    s.sendto(struct.pack("!BBHHH", 0, 0, c, ident, seq) + data, to)

while True:
    packet, addr = s.recvfrom(70000)
    icmp = packet[(packet[0] & 15) * 4:]
    if len(icmp) < 8 or icmp[0] != 8:
        continue
    ident, seq = struct.unpack("!HH", icmp[4:8])
    data = icmp[8:]
    if seq == 1:
        reply(ident, seq, data, addr)
        reply(ident, seq, data, addr)
    elif seq == 2:
        reply(ident, seq, data[:10] + bytes([data[10] ^ 0xff]) + data[11:], addr)
    elif seq == 3:
        reply(ident, seq, data, addr, damage_checksum=True)
    elif seq == 4:
        reply(ident ^ 0xffff, seq, data, addr)
    else:
        reply(ident, seq, data, addr)
"#;

#[test]
fn duplicates_damaged_and_foreign_replies_from_a_fake_peer() {
    require_namespaces!();
    require!("python3");
    let mut peer = Command::new("unshare")
        .args(["-n", "python3", "-c", FAKE_PEER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(peer.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "READY", "the fake peer did not start");
    let pid = peer.id().to_string();
    let in_peer = |setup: &str| {
        run(
            Command::new("nsenter")
                .args(["-t", &pid, "-n", "sh", "-c"])
                .arg(format!("{setup}exec \"$S\" ping 127.0.0.1 -c 5 -i 0.2 -W 1"))
                .env("S", env!("CARGO_BIN_EXE_sockit")),
            b"",
        )
    };
    let raw = in_peer("");
    let dgram = in_peer(ALLOW_DGRAM);
    let _ = peer.kill();
    let _ = peer.wait();

    // The raw socket sees everything: the duplicate, the changed byte and the bad checksum are
    // reported, the foreign identifier is not.
    assert_eq!(raw.code, Some(0), "{}", raw.stderr);
    let out = parse(&raw.stdout_text());
    assert_eq!(out.header, "PING 127.0.0.1: 56 data bytes, raw socket");
    let seqs: Vec<&str> = out.replies.iter().map(|l| l.split("icmp_seq=").nth(1).unwrap()).collect();
    assert_eq!(seqs.len(), 5, "{out:#?}");
    assert!(seqs[0].starts_with("1 ") && !seqs[0].contains("DUP"), "{out:#?}");
    assert!(seqs[1].starts_with("1 ") && seqs[1].ends_with(" ms (DUP!)"), "{out:#?}");
    assert!(seqs[2].starts_with("2 ") && seqs[2].contains(" ms (wrong data byte #10 should be 0x"), "{out:#?}");
    assert!(seqs[3].starts_with("3 ") && seqs[3].ends_with(" ms (BAD CHECKSUM!)"), "{out:#?}");
    assert!(seqs[4].starts_with("5 ") && seqs[4].ends_with(" ms"), "{out:#?}");
    assert_eq!(
        out.counts.split(", time").next(),
        Some("5 packets transmitted, 2 received, +1 duplicates, +2 corrupted, 60% packet loss")
    );

    // The kernel drops the bad checksum and the foreign identifier before a datagram socket.
    assert_eq!(dgram.code, Some(0), "{}", dgram.stderr);
    let out = parse(&dgram.stdout_text());
    assert_eq!(out.header, "PING 127.0.0.1: 56 data bytes, ICMP datagram socket");
    assert_eq!(
        out.counts.split(", time").next(),
        Some("5 packets transmitted, 2 received, +1 duplicates, +1 corrupted, 60% packet loss")
    );
    assert_eq!(out.replies.len(), 4, "{out:#?}");
}
