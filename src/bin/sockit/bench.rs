//! `sockit bench`: runs the library's load generator, shows a live progress line on a
//! terminal, and prints the result as a table or as JSON.

use std::io::IsTerminal;
use std::process::ExitCode;

use sockit::bench::{self, BenchConfig, BenchError, BenchResult, Mode, Progress};
use sockit::render::count;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Usage;
use crate::cli::BenchArgs;

pub async fn run(args: BenchArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let endpoint = crate::endpoint(&args.endpoint)?;
    let mode = args.mode;
    // An option the mode does not use is a mistake to point out, not to ignore.
    let misplaced = match mode {
        Mode::Bulk if args.connections.is_some() => Some("-c applies to echo, connect and udp; bulk takes -P"),
        Mode::Bulk | Mode::Connect if args.rate.is_some() => Some("--rate applies to echo and udp"),
        Mode::Echo | Mode::Connect | Mode::Udp if args.parallel.is_some() => {
            Some("-P applies to bulk; echo, connect and udp take -c")
        }
        Mode::Echo | Mode::Connect | Mode::Udp if args.reverse => Some("--reverse applies to bulk"),
        _ => None,
    };
    if let Some(why) = misplaced {
        return Err(Usage(format!("{why} (this is {mode})")).into());
    }
    if args.interval < sockit::bench::MIN_INTERVAL {
        return Err(Usage("--interval must be at least 100ms".into()).into());
    }
    let mut config = BenchConfig::new(endpoint, mode);
    if let Some(c) = args.connections {
        config.connections = c as usize;
    }
    if let Some(p) = args.parallel {
        config.streams = p as usize;
    }
    if let Some(size) = args.size {
        config.size = size;
    }
    if args.duration.is_zero() {
        return Err(Usage("--duration must be longer than zero".into()).into());
    }
    config.duration = args.duration;
    config.rate = args.rate;
    config.reverse = args.reverse;
    config.hold = args.hold;
    config.interval = args.interval;
    config.connect_timeout = args.connect_timeout;
    config.tls = crate::tls::client(&args.tls, &config.endpoint)?;
    crate::raise_fd_limit();

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let live = !quiet && std::io::stderr().is_terminal();
    let (tx, mut rx) = mpsc::channel::<Progress>(4);
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if live {
                note_inline!("\r\x1b[K{}", progress_line(mode, &p));
            }
        }
        if live {
            note_inline!("\r\x1b[K");
        }
    });
    let outcome = bench::run(config, Some(tx), cancel).await;
    let _ = printer.await;
    let result = match outcome {
        Ok(r) => r,
        Err(BenchError::Config(m)) => return Err(Usage(m).into()),
        // Ctrl-C before the run began: no figures, and the status a shell gives an interrupt.
        Err(BenchError::Cancelled) => return Ok(ExitCode::from(130)),
        Err(e) => return Err(e.into()),
    };
    let out = if args.json { serde_json::to_string(&result)? + "\n" } else { table(&result) };
    crate::write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn progress_line(mode: Mode, p: &Progress) -> String {
    let t = p.elapsed.as_secs_f64();
    let errors = if p.errors > 0 { format!("  {} errors", p.errors) } else { String::new() };
    match mode {
        Mode::Bulk => format!("[{t:5.1}s] {:.2} Gbit/s{errors}", p.gbit_per_s),
        Mode::Connect => format!("[{t:5.1}s] {:.0} connections/s{errors}", p.requests_per_s),
        Mode::Echo | Mode::Udp => {
            format!("[{t:5.1}s] {:.0} req/s  {:.3} Gbit/s{errors}", p.requests_per_s, p.gbit_per_s)
        }
    }
}

fn table(r: &BenchResult) -> String {
    let mut out = format!("{} {} for {:.1}s", r.mode, r.endpoint, r.duration_s);
    match r.mode {
        Mode::Bulk => out += &format!(", {}, {} B writes\n", count(r.streams as u64, "stream"), r.size),
        Mode::Udp => out += &format!(", {}, {} B datagrams\n", count(r.connections as u64, "socket"), r.size),
        _ => out += &format!(", {}, {} B messages\n", count(r.connections as u64, "connection"), r.size),
    }
    if let Some(h) = &r.hold {
        out += &format!("  held idle   {} of {} connections\n", h.established, h.requested);
        if let Some(e) = &h.error {
            out += &format!("  hold error  {e}\n");
        }
    }
    if r.mode == Mode::Bulk {
        // Intervals under a second need the hundredths to tell them apart (0.25s, 0.50s).
        let places = if r.intervals.first().is_some_and(|i| i.t < 0.95) { 2 } else { 1 };
        for i in &r.intervals {
            out += &format!("  {:6.places$}s     {:.2} Gbit/s\n", i.t, i.gbit_per_s);
        }
        out += &format!("  total       {:.2} Gbit/s ({})\n", r.gbit_per_s, sockit::render::bytes(r.bytes));
    } else {
        let what = if r.mode == Mode::Connect { "conn/s" } else { "requests/s" };
        out += &format!("  {what:<11} {:.0}\n", r.requests_per_s);
        out += &format!("  throughput  {:.3} Gbit/s\n", r.gbit_per_s);
    }
    if let Some(l) = &r.latency_us {
        out += &format!(
            "  latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
    if let Some(u) = &r.udp {
        out += &format!("  datagrams   {} sent, {} answered, {:.2}% lost\n", u.sent, u.received, u.loss * 100.0);
    }
    out += &format!("  errors      {}\n", r.errors);
    out
}
