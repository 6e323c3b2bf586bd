//! `sockit ping HOST`: resolves HOST, opens the library's pinger, prints a line per reply and
//! iputils' summary (or one JSON object), and exits like iputils ping: 0 if any reply arrived,
//! 1 if none, 2 on any error. Ctrl-C stops the run and prints the summary.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use sockit::endpoint::Family;
use sockit::ping::{self, Event, PingConfig, PingError, Pinger, Reply, Statistics};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::PingArgs;
use crate::{OutputClosed, Usage};

/// The most replies (and, apart, errors) `--json` lists; the statistics count them all.
const MAX_JSON_EVENTS: usize = 100_000;

pub async fn run(args: PingArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    match ping(args, quiet).await {
        // iputils' convention: exit status 1 means "no reply", so failing to ping at all is 2,
        // like a usage error.
        Err(e) if !e.is::<Usage>() && !e.is::<OutputClosed>() => {
            note!("sockit: {e:#}");
            Ok(ExitCode::from(2))
        }
        other => other,
    }
}

async fn ping(args: PingArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Family::V4,
        (_, true) => Family::V6,
        _ => Family::Any,
    };
    let host = ping::parse_host(&args.host).map_err(usage)?;
    check_interval(args.interval)?;
    if args.timeout.is_zero() {
        return Err(Usage("-W must be longer than zero".into()).into());
    }
    let target = ping::resolve(&host, family).await.map_err(usage)?;
    let config = PingConfig { count: args.count, interval: args.interval, timeout: args.timeout, size: args.size };
    config.check(target).map_err(usage)?;
    let pinger = Pinger::open(target)?;

    let mut report = Report::new(&args, target, quiet);
    if !args.json {
        let shown =
            if args.host == target.to_string() { args.host.clone() } else { format!("{} ({target})", args.host) };
        report.print(&format!("PING {shown}: {} data bytes, {}", config.size, pinger.kind()));
    }

    let cancel = CancellationToken::new();
    // Registered before the first request, so that an early Ctrl-C still gets a summary.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let on_interrupt = cancel.clone();
    let watcher = tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            on_interrupt.cancel();
        }
    });
    let outcome = pinger.run(&config, |event| report.event(event, &cancel), &cancel).await;
    watcher.abort();
    let stats = outcome?;
    if let Some(e) = report.failed.take() {
        return Err(e);
    }
    if args.json {
        let object = report.json(pinger.kind(), config.size, &stats);
        crate::write_stdout(format!("{object}\n").as_bytes())?;
    } else {
        crate::write_stdout(summary(&args.host, &stats).as_bytes())?;
    }
    Ok(if stats.received > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Turns the library's usage errors (a bad host, a setting out of range) into [`Usage`].
fn usage(e: PingError) -> anyhow::Error {
    if e.is_usage() { Usage(e.to_string()).into() } else { e.into() }
}

/// The interval rules of the command: never below the library's floor, and below 200 ms only
/// for root, as iputils ping had it (a user can still be given a raw socket or a ping socket
/// without being trusted to send five requests a second to anyone).
fn check_interval(interval: Duration) -> Result<(), Usage> {
    let shown = humantime::format_duration(interval);
    if interval < ping::MIN_INTERVAL {
        return Err(Usage(format!("-i {shown} is too short: the shortest interval is 2ms (there is no flood mode)")));
    }
    if interval < ping::MIN_USER_INTERVAL && !rustix::process::geteuid().is_root() {
        return Err(Usage(format!("-i {shown} is too short: intervals below 200ms are for root only")));
    }
    Ok(())
}

/// Prints events as they come (or collects them for `--json`) and remembers the first
/// output failure, which stops the run.
struct Report {
    json: bool,
    quiet: bool,
    host: String,
    target: IpAddr,
    replies: Vec<Value>,
    errors: Vec<Value>,
    omitted: u64,
    failed: Option<anyhow::Error>,
}

impl Report {
    fn new(args: &PingArgs, target: IpAddr, quiet: bool) -> Report {
        Report {
            json: args.json,
            quiet,
            host: args.host.clone(),
            target,
            replies: Vec::new(),
            errors: Vec::new(),
            omitted: 0,
            failed: None,
        }
    }

    fn print(&mut self, line: &str) {
        if self.failed.is_none()
            && let Err(e) = crate::write_stdout(format!("{line}\n").as_bytes())
        {
            self.failed = Some(e);
        }
    }

    fn event(&mut self, event: Event, cancel: &CancellationToken) {
        if let Event::SendFailed { seq, error } = &event {
            note!("sockit: icmp_seq={seq}: cannot send: {error}");
        }
        if self.json {
            self.collect(event);
        } else if !self.quiet {
            let line = match event {
                Event::Reply(r) => reply_line(&r, if r.duplicate { " (DUP!)" } else { "" }),
                Event::Corrupt { reply, problem } => reply_line(&reply, &format!(" ({problem})")),
                Event::Error { seq, from, message } => {
                    format!("From {} icmp_seq={seq} {message}", from.unwrap_or(self.target))
                }
                Event::SendFailed { .. } => return,
            };
            self.print(&line);
        }
        if self.failed.is_some() {
            cancel.cancel();
        }
    }

    fn collect(&mut self, event: Event) {
        let (list, entry) = match event {
            Event::Reply(r) => (&mut self.replies, reply_json(&r, None)),
            Event::Corrupt { reply, problem } => (&mut self.replies, reply_json(&reply, Some(problem.to_string()))),
            Event::Error { seq, from, message } => {
                (&mut self.errors, json!({ "seq": seq, "from": from.map(|a| a.to_string()), "message": message }))
            }
            Event::SendFailed { seq, error } => {
                (&mut self.errors, json!({ "seq": seq, "from": null, "message": format!("cannot send: {error}") }))
            }
        };
        if list.len() < MAX_JSON_EVENTS {
            list.push(entry);
        } else {
            self.omitted += 1;
        }
    }

    fn json(&mut self, kind: ping::SocketKind, size: usize, s: &Statistics) -> Value {
        let rtt = s.rtt.map(|r| json!({ "min": ms(r.min), "avg": ms(r.avg), "max": ms(r.max), "mdev": ms(r.mdev) }));
        let mut object = json!({
            "host": self.host,
            "address": self.target.to_string(),
            "socket": kind.name(),
            "data_bytes": size,
            "replies": std::mem::take(&mut self.replies),
            "errors": std::mem::take(&mut self.errors),
            "statistics": {
                "transmitted": s.transmitted,
                "received": s.received,
                "duplicates": s.duplicates,
                "corrupted": s.corrupted,
                "errors": s.errors,
                "loss_percent": s.loss_percent(),
                "time_ms": s.elapsed.as_millis() as u64,
                "rtt_ms": rtt,
            },
        });
        if self.omitted > 0 {
            object["omitted"] = json!(self.omitted);
        }
        object
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

fn reply_json(r: &Reply, problem: Option<String>) -> Value {
    json!({
        "seq": r.seq,
        "from": r.from.to_string(),
        "bytes": r.bytes,
        "ttl": r.ttl,
        "time_ms": ms(r.rtt),
        "duplicate": r.duplicate,
        "problem": problem,
    })
}

/// `64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms`, then `suffix`.
fn reply_line(r: &Reply, suffix: &str) -> String {
    let ttl = r.ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
    format!("{} bytes from {}: icmp_seq={}{ttl} time={} ms{suffix}", r.bytes, r.from, r.seq, millis(r.rtt))
}

/// A round-trip time in milliseconds with iputils' precision: three decimals below 1 ms, two
/// below 10, one below 100, none above.
fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    match ms {
        ms if ms >= 99.95 => format!("{ms:.0}"),
        ms if ms >= 9.995 => format!("{ms:.1}"),
        ms if ms >= 1.0 => format!("{ms:.2}"),
        ms => format!("{ms:.3}"),
    }
}

/// A percentage as iputils prints it (`%g`): no decimals when whole, else up to four.
fn percent(p: f64) -> String {
    let text = format!("{p:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// iputils' summary: the statistics line, the counts, and the round-trip times if any.
fn summary(host: &str, s: &Statistics) -> String {
    let mut counts = format!("{} packets transmitted, {} received", s.transmitted, s.received);
    for (n, what) in [(s.duplicates, "duplicates"), (s.corrupted, "corrupted"), (s.errors, "errors")] {
        if n > 0 {
            counts += &format!(", +{n} {what}");
        }
    }
    let mut out = format!(
        "\n--- {host} ping statistics ---\n{counts}, {}% packet loss, time {}ms\n",
        percent(s.loss_percent()),
        s.elapsed.as_millis()
    );
    if let Some(r) = s.rtt {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out += &format!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms\n",
            ms(r.min),
            ms(r.avg),
            ms(r.max),
            ms(r.mdev)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_percentages_read_like_iputils() {
        assert_eq!(millis(Duration::from_micros(45)), "0.045");
        assert_eq!(millis(Duration::from_micros(1234)), "1.23");
        assert_eq!(millis(Duration::from_micros(12345)), "12.3");
        assert_eq!(millis(Duration::from_micros(123456)), "123");
        assert_eq!(percent(0.0), "0");
        assert_eq!(percent(100.0), "100");
        assert_eq!(percent(100.0 / 3.0), "33.3333");
        assert_eq!(percent(50.0), "50");
    }

    #[test]
    fn the_summary_lists_only_what_happened() {
        let ms = Duration::from_millis;
        let mut s = Statistics {
            transmitted: 3,
            received: 3,
            duplicates: 0,
            corrupted: 0,
            errors: 0,
            elapsed: ms(402),
            rtt: Some(ping::RttSummary { min: ms(1), avg: ms(2), max: ms(3), mdev: ms(1) }),
        };
        assert_eq!(
            summary("127.0.0.1", &s),
            "\n--- 127.0.0.1 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
             rtt min/avg/max/mdev = 1.000/2.000/3.000/1.000 ms\n"
        );
        s.received = 0;
        s.duplicates = 1;
        s.errors = 2;
        s.rtt = None;
        assert_eq!(
            summary("h", &s),
            "\n--- h ping statistics ---\n3 packets transmitted, 0 received, +1 duplicates, +2 errors, 100% packet loss, time 402ms\n"
        );
    }
}
