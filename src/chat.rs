//! The `chat` service: every line a client sends goes to every other client, with its sender's
//! name (PROTOCOL.md, section 8).
//!
//! A [`Room`] holds the members, each with a bounded queue of lines to send it. A line is
//! delivered by trying to put it on every other member's queue, under the room's lock, so that
//! everyone sees one sender's lines in the order sent. Nobody waits for a slow member: a full
//! queue drops the line for that member alone and counts it; a member that catches up is told how
//! many it missed, and one that falls [`Room::LAG_LIMIT`] lines behind is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};
use tokio_util::sync::CancellationToken;

use crate::net::Stream;
use crate::server::{End, SessionLimits, Traffic};

/// The longest line a chat member may send, by default (`--max-frame` may lower it).
pub const MAX_LINE: usize = 4096;

/// How many bytes of queued lines one write to a member carries at most.
const WRITE_BATCH: usize = 64 * 1024;

/// A chat room: the members of one `chat` server.
#[derive(Debug)]
pub struct Room {
    members: Mutex<Members>,
    max_line: usize,
}

#[derive(Debug, Default)]
struct Members {
    by_id: HashMap<u64, Member>,
    next_id: u64,
}

#[derive(Debug)]
struct Member {
    nick: String,
    queue: mpsc::Sender<Bytes>,
    /// Lines dropped since the member last caught up.
    dropped: Arc<AtomicU64>,
    /// Cancelled when the member is too far behind.
    kick: CancellationToken,
}

/// What a member's session needs from the room.
struct Seat {
    id: u64,
    queue: mpsc::Receiver<Bytes>,
    dropped: Arc<AtomicU64>,
    kick: CancellationToken,
}

impl Room {
    /// How many lines wait for one member before further lines are dropped for it.
    pub const QUEUE: usize = 4096;
    /// How many lines a member may miss in a row before it is dropped.
    pub const LAG_LIMIT: u64 = 1024;
    /// The longest nickname, in bytes.
    pub const MAX_NICK: usize = 32;

    /// An empty room whose lines are at most `max_line` bytes.
    pub fn new(max_line: usize) -> Room {
        Room { members: Mutex::new(Members::default()), max_line }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        // A panic elsewhere cannot leave the map half-changed (every change is one call), so a
        // poisoned lock is still good.
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn join(&self) -> (Seat, String) {
        let (tx, rx) = mpsc::channel(Room::QUEUE);
        let mut m = self.lock();
        m.next_id += 1;
        let id = m.next_id;
        let mut nick = format!("guest{id}");
        while m.by_id.values().any(|x| x.nick == nick) {
            nick.push('_');
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let kick = CancellationToken::new();
        // Under the lock, so that the greeting is the first line the newcomer reads and everyone
        // learns of it before any line it sends.
        let welcome = format!("* welcome, {nick}. /nick NAME renames you, /who lists who is here, /quit leaves");
        let _ = tx.try_send(line(welcome.as_bytes()));
        Room::send(&m, None, &line(format!("* {nick} joined").as_bytes()));
        let member = Member { nick: nick.clone(), queue: tx, dropped: dropped.clone(), kick: kick.clone() };
        m.by_id.insert(id, member);
        (Seat { id, queue: rx, dropped, kick }, nick)
    }

    /// Puts a line on the queues of everyone but `from` (`None`: everyone).
    fn send(m: &Members, from: Option<u64>, line: &Bytes) {
        for (id, member) in &m.by_id {
            if Some(*id) == from {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = member.queue.try_send(line.clone())
                && member.dropped.fetch_add(1, Relaxed) + 1 >= Room::LAG_LIMIT
            {
                member.kick.cancel();
            }
        }
    }

    fn broadcast(&self, from: Option<u64>, text: &[u8]) {
        let line = line(text);
        Room::send(&self.lock(), from, &line);
    }

    fn tell(&self, to: u64, text: &[u8]) {
        if let Some(member) = self.lock().by_id.get(&to) {
            let _ = member.queue.try_send(line(text));
        }
    }

    fn nick(&self, id: u64) -> String {
        self.lock().by_id.get(&id).map(|m| m.nick.clone()).unwrap_or_default()
    }

    /// Renames a member and tells everyone, or says why not.
    fn rename(&self, id: u64, new: &str) -> Result<(), String> {
        if new.is_empty() || new.len() > Room::MAX_NICK {
            return Err(format!("a nickname has 1 to {} characters", Room::MAX_NICK));
        }
        if !new.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err("a nickname has letters, digits, '-', '_' and '.' only".into());
        }
        let mut m = self.lock();
        if m.by_id.iter().any(|(other, x)| *other != id && x.nick == new) {
            return Err(format!("{new} is taken"));
        }
        let Some(member) = m.by_id.get_mut(&id) else { return Ok(()) };
        let old = std::mem::replace(&mut member.nick, new.to_string());
        if old != new {
            Room::send(&m, None, &line(format!("* {old} is now {new}").as_bytes()));
        }
        Ok(())
    }

    fn who(&self) -> String {
        let m = self.lock();
        let mut nicks: Vec<&str> = m.by_id.values().map(|x| x.nick.as_str()).collect();
        nicks.sort_unstable();
        format!("* {} here: {}", nicks.len(), nicks.join(", "))
    }

    fn leave(&self, id: u64) {
        let mut m = self.lock();
        if let Some(member) = m.by_id.remove(&id) {
            Room::send(&m, None, &line(format!("* {} left", member.nick).as_bytes()));
        }
    }
}

fn line(text: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(text.len() + 1);
    b.extend_from_slice(text);
    b.extend_from_slice(b"\n");
    b.freeze()
}

/// Serves one member of the room until it leaves, is dropped, or the server stops.
pub async fn session(stream: Stream, room: Arc<Room>, limits: SessionLimits<'_>, traffic: &mut Traffic) -> End {
    let (seat, _nick) = room.join();
    let id = seat.id;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), vec![], room.max_line);
    let mut inbuf = BytesMut::new();
    let mut eof = false;
    let Seat { mut queue, dropped, kick, .. } = seat;
    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let reader = async {
        loop {
            let decoded = if eof { codec.decode_eof(&mut inbuf) } else { codec.decode(&mut inbuf) };
            let chunk = match decoded {
                Ok(Some(chunk)) => chunk,
                Ok(None) if eof => return End::PeerClosed,
                Ok(None) => {
                    // The codec bounds the buffer: past the limit it drops the line's bytes.
                    match limits.between_requests(rd.read_buf(&mut inbuf)).await {
                        Ok(Ok(0)) => eof = true,
                        Ok(Ok(n)) => {
                            bytes_in.fetch_add(n as u64, Relaxed);
                        }
                        Ok(Err(e)) => return End::Io(e.to_string()),
                        Err(end) => return end,
                    }
                    continue;
                }
                Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                    room.tell(
                        id,
                        format!("* line too long (the limit is {} bytes); not sent", room.max_line).as_bytes(),
                    );
                    continue;
                }
                Err(AnyDelimiterCodecError::Io(e)) => return End::Io(e.to_string()),
            };
            let text = chunk.strip_suffix(b"\r").unwrap_or(&chunk);
            if let Some(command) = text.strip_prefix(b"/") {
                let command = String::from_utf8_lossy(command);
                let mut words = command.split_whitespace();
                let (first, second, more) = (words.next(), words.next(), words.next().is_some());
                match (first, second) {
                    (Some("quit"), _) => return End::SessionEnded,
                    (Some("who"), _) => room.tell(id, room.who().as_bytes()),
                    (Some("nick"), Some(new)) if !more => {
                        if let Err(why) = room.rename(id, new) {
                            room.tell(id, format!("* {why}").as_bytes());
                        }
                    }
                    (Some("nick"), Some(_)) => room.tell(id, b"* a nickname is one word"),
                    (Some("nick"), None) => room.tell(id, b"* usage: /nick NAME"),
                    _ => room.tell(id, b"* unknown command; try /nick NAME, /who or /quit"),
                }
                continue;
            }
            if text.is_empty() {
                continue;
            }
            let mut msg = format!("<{}> ", room.nick(id)).into_bytes();
            msg.extend_from_slice(text);
            room.broadcast(Some(id), &msg);
        }
    };
    let writer = async {
        loop {
            let next = tokio::select! {
                biased;
                _ = kick.cancelled() => None,
                _ = limits.cut.cancelled() => return End::Cut,
                line = queue.recv() => line,
            };
            let Some(line) = next else {
                let note = format!("* dropped: you fell {} lines behind\n", Room::LAG_LIMIT);
                let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(note.as_bytes())).await;
                return End::Protocol("dropped: not reading".into());
            };
            let missed = dropped.swap(0, Relaxed);
            let mut out = Vec::new();
            if missed > 0 {
                out.extend_from_slice(format!("* you missed {missed} lines (not reading fast enough)\n").as_bytes());
            }
            out.extend_from_slice(&line);
            // Whatever else is waiting goes in the same write, up to a limit.
            while out.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(more) => out.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            // A member whose socket is full is still dropped when it falls too far behind.
            let write = async {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            let written = tokio::select! {
                r = write => r,
                _ = kick.cancelled() => return End::Protocol("dropped: not reading".into()),
                _ = limits.cut.cancelled() => return End::Cut,
            };
            if let Err(e) = written {
                return End::Io(e.to_string());
            }
            bytes_out.fetch_add(out.len() as u64, Relaxed);
        }
    };
    let end = tokio::select! {
        end = reader => end,
        end = writer => end,
    };
    room.leave(id);
    // What is still queued for this member (its own goodbye included) is written if it can be,
    // briefly.
    if matches!(end, End::PeerClosed | End::SessionEnded | End::Shutdown | End::IdleTimeout) {
        let mut wr = wr;
        let flush = async {
            if end == End::Shutdown {
                let _ = wr.write_all(b"* the server is shutting down\n").await;
            }
            while let Ok(line) = queue.try_recv() {
                if wr.write_all(&line).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }
    traffic.bytes_in += bytes_in.load(Relaxed);
    traffic.bytes_out += bytes_out.load(Relaxed);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(b) = rx.try_recv() {
            v.push(String::from_utf8_lossy(&b).trim_end().to_string());
        }
        v
    }

    #[test]
    fn lines_go_to_everyone_else_with_names() {
        let room = Room::new(100);
        let (mut a, an) = room.join();
        let (mut b, bn) = room.join();
        assert_eq!(drain(&mut a.queue).len(), 2, "a welcome, then b's arrival");
        assert!(drain(&mut b.queue)[0].starts_with(&format!("* welcome, {bn}.")));
        room.broadcast(Some(a.id), format!("<{an}> hi").as_bytes());
        assert!(drain(&mut a.queue).is_empty());
        assert_eq!(drain(&mut b.queue), vec![format!("<{an}> hi")]);
        room.rename(b.id, "bob").unwrap();
        assert_eq!(drain(&mut a.queue), vec![format!("* {bn} is now bob")]);
        assert_eq!(drain(&mut b.queue), vec![format!("* {bn} is now bob")]);
        assert_eq!(room.who(), format!("* 2 here: bob, {an}"));
        assert!(room.rename(a.id, "bob").unwrap_err().contains("taken"));
        assert!(room.rename(a.id, "no spaces").is_err());
        assert!(room.rename(a.id, &"x".repeat(33)).is_err());
        room.leave(b.id);
        assert_eq!(drain(&mut a.queue), vec!["* bob left".to_string()]);
    }

    #[test]
    fn a_member_that_does_not_read_is_dropped_past_the_limit() {
        let room = Room::new(100);
        let (mut a, _) = room.join();
        let (mut b, _) = room.join();
        drain(&mut a.queue);
        drain(&mut b.queue);
        let total = Room::QUEUE as u64 + Room::LAG_LIMIT;
        for i in 0..total - 1 {
            room.broadcast(Some(b.id), format!("{i}").as_bytes());
            drain(&mut b.queue);
        }
        assert_eq!(a.dropped.load(Relaxed), Room::LAG_LIMIT - 1);
        assert!(!a.kick.is_cancelled());
        room.broadcast(Some(b.id), b"one more");
        assert!(a.kick.is_cancelled(), "not dropped after {total} lines");
    }
}
