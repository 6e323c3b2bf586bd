//! `sockit states --watch`: a full-screen view (ratatui over crossterm) of the TCP state counts
//! as bars, each listener's accept queue as a gauge, and the listen and SYN-flood counters with
//! their change since the watch started, refreshed twice a second.
//!
//! The screen is drawn from a [`View`], a plain value built from a snapshot, so that what it
//! shows can be tested on ratatui's `TestBackend`. The terminal is restored on every way out: a
//! quit key, an error (printed after the restore), a signal, and a panic (ratatui's hook).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use sockit::diag::{AcceptQueue, ListenCounters, TcpState};
use tokio_util::sync::CancellationToken;

use crate::states::{COUNTER_MEANINGS, Query, Snapshot, show_addr, show_owners};

/// How often the screen is redrawn.
const REFRESH: Duration = Duration::from_millis(500);

/// The longest a key press waits to be seen, and so the longest a signal waits to end the watch.
const KEY_POLL: Duration = Duration::from_millis(100);

pub async fn run(query: Query) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    // In raw mode Ctrl-C is a key, but a SIGINT or SIGTERM sent from elsewhere must still end
    // the watch through the path that restores the terminal.
    let on_signal = stop.clone();
    let signals = tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    let outcome = tokio::task::spawn_blocking(move || watch(&query, &stop)).await;
    signals.abort();
    outcome??;
    Ok(ExitCode::SUCCESS)
}

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
    }
}

fn watch(query: &Query, stop: &CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let first = ListenCounters::read()?;
    let filter = describe(query);
    // Before init, so that a half-done initialisation is undone too.
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    loop {
        let snap = Snapshot::take(query)?;
        let view = View::new(&snap, &first, started.elapsed(), &filter);
        terminal.draw(|frame| view.render(frame))?;
        let next = Instant::now() + REFRESH;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if stop.is_cancelled() {
                return Ok(());
            }
            if event::poll(left.min(KEY_POLL))? {
                match event::read()? {
                    Event::Key(key) if quits(&key) => return Ok(()),
                    Event::Resize(..) => break,
                    _ => {}
                }
            }
        }
    }
}

/// q, Esc and Ctrl-C quit.
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// The filters in words, for the title.
fn describe(q: &Query) -> String {
    let mut parts = vec!["TCP".to_owned()];
    if let Some(p) = q.port {
        parts.push(format!("port {p}"));
    }
    if q.listening {
        parts.push("listening".into());
    }
    if !q.states.is_empty() {
        parts.push(q.states.iter().map(|s| s.name()).collect::<Vec<_>>().join(" or "));
    }
    parts.join(", ")
}

/// What the screen shows at one refresh.
pub struct View {
    filter: String,
    elapsed: Duration,
    counts: Vec<(TcpState, usize)>,
    listeners: Vec<(String, AcceptQueue, String)>,
    counters: ListenCounters,
    growth: ListenCounters,
    /// The sockets, as table cells: state, Recv-Q, Send-Q, local, peer, process.
    sockets: Vec<[String; 6]>,
}

impl View {
    pub fn new(snap: &Snapshot, first: &ListenCounters, elapsed: Duration, filter: &str) -> View {
        let counters = snap.counters.unwrap_or_default();
        View {
            filter: filter.to_owned(),
            elapsed,
            counts: snap.counts(),
            listeners: snap.listeners().into_iter().map(|l| (l.local, l.queue, show_owners(l.owners))).collect(),
            counters,
            growth: counters.since(first),
            sockets: snap
                .tcp
                .iter()
                .flatten()
                .map(|s| {
                    [
                        s.state.name().to_owned(),
                        s.recv_q.to_string(),
                        s.send_q.to_string(),
                        show_addr(s.local),
                        show_addr(s.peer),
                        show_owners(snap.processes.owners(s.inode)),
                    ]
                })
                .collect(),
        }
    }

    pub fn render(&self, frame: &mut Frame) {
        let listener_rows = self.listeners.len().clamp(1, 8) as u16;
        let [title, states, listeners, counters, sockets] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(TcpState::ALL.len() as u16 + 2),
            Constraint::Length(listener_rows + 2),
            Constraint::Length(ListenCounters::NAMES.len() as u16 + 3),
            Constraint::Min(3),
        ])
        .areas(frame.area());

        let secs = Duration::from_secs(self.elapsed.as_secs());
        let total: usize = self.counts.iter().map(|(_, n)| n).sum();
        let title_text = format!(
            " sockit states · {} · {} · watching {} · q quits",
            self.filter,
            sockit::render::count(total as u64, "socket"),
            humantime::format_duration(secs)
        );
        frame.render_widget(Paragraph::new(title_text).style(Style::new().add_modifier(Modifier::BOLD)), title);

        let block = Block::bordered().title(" States ");
        let inner = block.inner(states);
        frame.render_widget(block, states);
        frame.render_widget(Paragraph::new(self.state_lines(inner.width)), inner);

        let block = Block::bordered().title(" Listeners: accept queue, waiting/backlog (full at backlog + 1) ");
        let inner = block.inner(listeners);
        frame.render_widget(block, listeners);
        frame.render_widget(Paragraph::new(self.listener_lines(inner)), inner);

        let block = Block::bordered().title(" Counters: value, change since the watch started ");
        let inner = block.inner(counters);
        frame.render_widget(block, counters);
        frame.render_widget(Paragraph::new(self.counter_lines()), inner);

        let block = Block::bordered().title(" Sockets ");
        let inner = block.inner(sockets);
        frame.render_widget(block, sockets);
        frame.render_widget(Paragraph::new(self.socket_lines(inner.height as usize)), inner);
    }

    /// As many sockets as `rows` lines hold, under a header, with a count of the rest.
    fn socket_lines(&self, rows: usize) -> Vec<Line<'_>> {
        const HEADER: [&str; 6] = ["State", "Recv-Q", "Send-Q", "Local", "Peer", "Process"];
        let room = rows.saturating_sub(1);
        let shown = if self.sockets.len() > room { room.saturating_sub(1) } else { self.sockets.len() };
        let mut width = HEADER.map(str::len);
        for row in &self.sockets[..shown] {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let [st, rq, sq, local, peer, procs] = cells;
            let [w0, w1, w2, w3, w4, _] = width;
            format!("{st:<w0$}  {rq:>w1$}  {sq:>w2$}  {local:<w3$}  {peer:<w4$}  {procs}")
        };
        let mut lines = vec![Line::from(Span::styled(line(HEADER), Style::new().add_modifier(Modifier::BOLD)))];
        lines.extend(self.sockets[..shown].iter().map(|r| Line::from(line(r.each_ref().map(String::as_str)))));
        if shown < self.sockets.len() {
            lines.push(Line::from(format!("… {} more", self.sockets.len() - shown)));
        }
        lines
    }

    fn state_lines(&self, width: u16) -> Vec<Line<'_>> {
        const LABEL: usize = 13;
        let max = self.counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
        let num_width = max.to_string().len();
        let room = (width as usize).saturating_sub(LABEL + num_width + 2);
        self.counts
            .iter()
            .map(|(state, n)| {
                let bar = bar(*n as f64 / max as f64, room);
                Line::from(vec![
                    Span::raw(format!("{:<LABEL$}", state.name())),
                    Span::styled(format!("{bar:<room$}"), Style::new().fg(Color::Cyan)),
                    Span::raw(format!("  {n:>num_width$}")),
                ])
            })
            .collect()
    }

    fn listener_lines(&self, area: Rect) -> Vec<Line<'_>> {
        if self.listeners.is_empty() {
            return vec![Line::from("no listener")];
        }
        let rows = area.height as usize;
        let shown = if self.listeners.len() > rows { rows.saturating_sub(1) } else { self.listeners.len() };
        let addr_width = self.listeners.iter().map(|(a, ..)| a.len()).max().unwrap_or(0).min(40);
        let gauge = (area.width as usize).saturating_sub(addr_width + 30).clamp(5, 40);
        let mut lines: Vec<Line> = self.listeners[..shown]
            .iter()
            .map(|(addr, queue, owners)| {
                // The queue holds backlog + 1 connections, so the gauge is full exactly when the
                // kernel starts dropping.
                let ratio = queue.depth as f64 / (queue.backlog as f64 + 1.0);
                let style = if queue.is_full() { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Green) };
                Line::from(vec![
                    Span::raw(format!("{addr:<addr_width$}  ")),
                    Span::styled(format!("{:<gauge$}", bar(ratio, gauge)), style),
                    Span::raw("▏"),
                    Span::styled(
                        format!(" {}/{}{}", queue.depth, queue.backlog, if queue.is_full() { " full" } else { "" }),
                        style,
                    ),
                    Span::raw(format!("  {owners}")),
                ])
            })
            .collect();
        if shown < self.listeners.len() {
            lines.push(Line::from(format!("… {} more", self.listeners.len() - shown)));
        }
        lines
    }

    fn counter_lines(&self) -> Vec<Line<'_>> {
        let mut lines = vec![Line::from(Span::styled(
            format!("{:<18}{:>12}{:>10}  {}", "Counter", "Value", "Change", "What it counts"),
            Style::new().add_modifier(Modifier::BOLD),
        ))];
        for (((name, value), growth), meaning) in
            ListenCounters::NAMES.iter().zip(self.counters.values()).zip(self.growth.values()).zip(COUNTER_MEANINGS)
        {
            let change = Span::styled(
                format!("{:>10}", format!("+{growth}")),
                if growth > 0 { Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD) } else { Style::new() },
            );
            lines.push(Line::from(vec![
                Span::raw(format!("{name:<18}{value:>12}")),
                change,
                Span::styled(format!("  {meaning}"), Style::new().add_modifier(Modifier::DIM)),
            ]));
        }
        lines
    }
}

/// A horizontal bar `ratio` (0 to 1) of `width` cells, in eighths of a cell; anything above
/// zero shows at least an eighth.
fn bar(ratio: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let ratio = if ratio.is_finite() { ratio.clamp(0.0, 1.0) } else { 0.0 };
    let mut eighths = (ratio * width as f64 * 8.0).round() as usize;
    if ratio > 0.0 {
        eighths = eighths.max(1);
    }
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(EIGHTHS[eighths % 8]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use sockit::diag::{InetSocket, Processes};

    fn sock(state: TcpState, local: &str, recv_q: u32, send_q: u32) -> InetSocket {
        InetSocket {
            state,
            local: local.parse().unwrap(),
            peer: "0.0.0.0:0".parse().unwrap(),
            recv_q,
            send_q,
            uid: 0,
            inode: 0,
        }
    }

    fn screen(view: &View, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| view.render(f)).unwrap();
        let buf = terminal.backend().buffer();
        (0..height).map(|y| (0..width).map(|x| buf[(x, y)].symbol()).collect::<String>()).collect()
    }

    #[test]
    fn bars_are_proportional_in_eighths() {
        assert_eq!(bar(0.0, 10), "");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██");
        assert_eq!(bar(0.0001, 10), "▏");
        assert_eq!(bar(0.25, 2), "▌");
        assert_eq!(bar(0.3, 2), "▋");
        assert_eq!(bar(f64::NAN, 4), "");
        assert_eq!(bar(7.0, 3), "███");
    }

    #[test]
    fn the_screen_shows_every_state_listener_and_counter() {
        let snap = Snapshot {
            tcp: Some(vec![
                sock(TcpState::Listen, "127.0.0.1:7000", 2, 1),
                sock(TcpState::Listen, "127.0.0.1:7001", 0, 128),
                sock(TcpState::Established, "127.0.0.1:40000", 0, 0),
                sock(TcpState::Established, "127.0.0.1:40001", 0, 0),
                sock(TcpState::TimeWait, "127.0.0.1:40002", 0, 0),
            ]),
            udp: None,
            unix: None,
            processes: Processes::default(),
            counters: Some(ListenCounters { listen_overflows: 12, listen_drops: 12, ..Default::default() }),
        };
        let first = ListenCounters { listen_overflows: 10, listen_drops: 12, ..Default::default() };
        let view = View::new(&snap, &first, Duration::from_millis(65_400), "TCP, port 7000");
        let lines = screen(&view, 100, 44);
        let text = lines.join("\n");
        assert!(lines[0].contains("sockit states · TCP, port 7000 · 5 sockets · watching 1m 5s · q quits"), "{text}");
        for state in TcpState::ALL {
            assert!(lines.iter().any(|l| l.contains(&format!("│{:<13}", state.name()))), "{state}\n{text}");
        }
        let established = lines.iter().find(|l| l.contains("ESTABLISHED")).unwrap();
        assert!(established.contains('█') && established.trim_end().ends_with(" 2│"), "{text}");
        let closed = lines.iter().find(|l| l.contains("│CLOSED")).unwrap();
        assert!(!closed.contains('█') && closed.trim_end().ends_with(" 0│"), "{text}");
        let full = lines.iter().find(|l| l.contains("127.0.0.1:7000")).unwrap();
        assert!(full.contains("2/1 full"), "{text}");
        let idle = lines.iter().find(|l| l.contains("127.0.0.1:7001")).unwrap();
        assert!(idle.contains("0/128") && !idle.contains("full"), "{text}");
        let overflows = lines.iter().find(|l| l.contains("ListenOverflows")).unwrap();
        assert!(overflows.contains("12") && overflows.contains("+2"), "{text}");
        let drops = lines.iter().find(|l| l.contains("ListenDrops")).unwrap();
        assert!(drops.contains("+0"), "{text}");
        let header = lines.iter().position(|l| l.contains("Recv-Q  Send-Q  Local")).expect(&text);
        assert!(lines[header + 1].contains("LISTEN") && lines[header + 1].contains("127.0.0.1:7000"), "{text}");
        assert!(lines[header + 5].contains("TIME-WAIT") && lines[header + 5].contains("127.0.0.1:40002"), "{text}");
    }

    #[test]
    fn a_small_screen_does_not_panic_and_many_listeners_are_summed_up() {
        let tcp = (0..50).map(|i| sock(TcpState::Listen, &format!("127.0.0.1:{}", 7000 + i), 0, 5)).collect();
        let snap = Snapshot {
            tcp: Some(tcp),
            udp: None,
            unix: None,
            processes: Processes::default(),
            counters: Some(ListenCounters::default()),
        };
        let view = View::new(&snap, &ListenCounters::default(), Duration::ZERO, "TCP");
        let lines = screen(&view, 100, 40);
        let text = lines.join("\n");
        assert!(lines.iter().any(|l| l.contains("… 43 more")), "listeners: {text}");
        assert!(lines.iter().any(|l| l.contains("… 47 more")), "sockets: {text}");
        for (w, h) in [(1, 1), (10, 5), (40, 12), (200, 3)] {
            screen(&view, w, h);
        }
    }

    #[test]
    fn quit_keys() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
