//! Injected faults for the relay, to test other programs against a bad network (as toxiproxy
//! does, and as netem would on a kernel that has it): delay and jitter, a rate limit, delivery
//! in small pieces and a reset after some bytes on streams; loss, duplication and reordering
//! on datagrams.
//!
//! Every random choice comes from a ChaCha8 generator seeded from [`Faults::seed`], one per
//! session and direction, so the same traffic through the same faults with the same seed
//! meets the same fate. The shapers here are sans-IO: they take data and the current time and
//! say what to send when; [`crate::relay`] does the sockets and the waiting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// Which way data moves through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client of the relay to the target.
    Up,
    /// From the target back to the client.
    Down,
}

impl Direction {
    /// The arrow the traffic log shows: `>` up, `<` down.
    pub fn arrow(self) -> char {
        match self {
            Direction::Up => '>',
            Direction::Down => '<',
        }
    }
}

/// Which directions the faults apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDirection {
    /// Both ways.
    Both,
    /// Only from the client to the target.
    Up,
    /// Only from the target to the client.
    Down,
}

impl FaultDirection {
    /// Whether faults apply to data moving in `dir`.
    pub fn applies(self, dir: Direction) -> bool {
        match self {
            FaultDirection::Both => true,
            FaultDirection::Up => dir == Direction::Up,
            FaultDirection::Down => dir == Direction::Down,
        }
    }
}

impl std::str::FromStr for FaultDirection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(FaultDirection::Both),
            "up" => Ok(FaultDirection::Up),
            "down" => Ok(FaultDirection::Down),
            _ => Err(format!("'{s}' is not a direction: both, up (client to target) or down (target to client)")),
        }
    }
}

/// The faults a relay injects. [`Faults::default`] injects none.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Hold everything back this long.
    pub delay: Duration,
    /// Vary the delay by up to this much either way (uniformly). Streams keep their order, so
    /// on a stream a piece never overtakes the one before it; datagrams may be reordered by it.
    pub jitter: Duration,
    /// At most this many bytes per second in each direction.
    pub rate: Option<u64>,
    /// Deliver stream data in pieces of at most this many bytes, each its own write.
    pub chunk: Option<usize>,
    /// After this many bytes have been relayed (in the directions faults apply to, together),
    /// reset both connections.
    pub reset_after: Option<u64>,
    /// The probability that a datagram is lost.
    pub drop: f64,
    /// The probability that a datagram is sent twice.
    pub duplicate: f64,
    /// The probability that a datagram is held back and sent after the next one.
    pub reorder: f64,
    /// The seed of every random choice.
    pub seed: u64,
    /// Which directions the faults apply to.
    pub direction: FaultDirection,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate: None,
            chunk: None,
            reset_after: None,
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            seed: 0,
            direction: FaultDirection::Both,
        }
    }
}

/// What a generator decides: which datagrams meet which fate, or how long each waits. Kept
/// apart, so that adding jitter does not change which datagrams are lost.
#[derive(Debug, Clone, Copy)]
enum Use {
    Choices = 0,
    Delays = 1,
}

/// How long a datagram held back for reordering waits for a successor before it is sent
/// anyway: a quiet flow is reordered with nothing, not starved.
pub const REORDER_WAIT: Duration = Duration::from_millis(100);

/// The most datagrams waiting in one direction of one session (delayed or paced); past it,
/// new ones are dropped, as a router's full queue drops them.
pub const MAX_QUEUED_DATAGRAMS: usize = 4096;

impl Faults {
    /// Whether no fault is asked for at all.
    pub fn is_empty(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.rate.is_none()
            && self.chunk.is_none()
            && self.reset_after.is_none()
            && self.drop == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
    }

    /// The name of a datagram-only fault that is set (`--drop`, `--duplicate`, `--reorder`).
    pub fn datagram_only(&self) -> Option<&'static str> {
        [("--drop", self.drop), ("--duplicate", self.duplicate), ("--reorder", self.reorder)]
            .into_iter()
            .find(|(_, p)| *p > 0.0)
            .map(|(name, _)| name)
    }

    /// The name of a stream-only fault that is set (`--chunk`, `--reset-after`).
    pub fn stream_only(&self) -> Option<&'static str> {
        if self.chunk.is_some() {
            Some("--chunk")
        } else if self.reset_after.is_some() {
            Some("--reset-after")
        } else {
            None
        }
    }

    /// A one-line description for a banner: `delay 50ms ± 10ms, drop 10%, seed 7`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let ms = |d: Duration| humantime::format_duration(d).to_string();
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            let mut s = format!("delay {}", ms(self.delay));
            if !self.jitter.is_zero() {
                s += &format!(" ± {}", ms(self.jitter));
            }
            parts.push(s);
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {} B/s", r));
        }
        if let Some(c) = self.chunk {
            parts.push(format!("pieces of {c} B"));
        }
        if let Some(n) = self.reset_after {
            parts.push(format!("reset after {n} B"));
        }
        for (name, p) in [("drop", self.drop), ("duplicate", self.duplicate), ("reorder", self.reorder)] {
            if p > 0.0 {
                parts.push(format!("{name} {}%", p * 100.0));
            }
        }
        let dir = match self.direction {
            FaultDirection::Both => "",
            FaultDirection::Up => ", client to target only",
            FaultDirection::Down => ", target to client only",
        };
        format!("{}{dir}, seed {}", parts.join(", "), self.seed)
    }

    /// The generator for one use in one direction of one session: the seed is the key, and
    /// the session, direction and use pick one of ChaCha's independent streams, so no two
    /// generators of a run share a sequence (and seeds do not mix with directions).
    pub fn rng(&self, session: u64, dir: Direction) -> ChaCha8Rng {
        self.rng_for(session, dir, Use::Choices)
    }

    fn rng_for(&self, session: u64, dir: Direction, purpose: Use) -> ChaCha8Rng {
        let d = match dir {
            Direction::Up => 0,
            Direction::Down => 1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(session.wrapping_mul(4) + d * 2 + purpose as u64);
        rng
    }

    /// One delay, with its jitter drawn from `rng`.
    fn sample_delay(&self, rng: &mut ChaCha8Rng) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        let j = self.jitter.as_nanos() as i128;
        let offset = rng.random_range(-j..=j);
        let total = (self.delay.as_nanos() as i128 + offset).max(0);
        Duration::from_nanos(total.min(u64::MAX as i128) as u64)
    }
}

/// How long `n` bytes take at `rate` bytes per second.
fn transmit_time(n: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / rate.max(1) as f64)
}

/// The delay of one direction of a stream: when each chunk read may be delivered.
#[derive(Debug)]
pub struct StreamDelay {
    faults: Faults,
    rng: ChaCha8Rng,
    last_delivery: Option<Instant>,
}

impl StreamDelay {
    /// The delay for one direction of session number `session`.
    pub fn new(faults: &Faults, session: u64, dir: Direction) -> StreamDelay {
        StreamDelay { faults: faults.clone(), rng: faults.rng_for(session, dir, Use::Delays), last_delivery: None }
    }

    /// Whether chunks wait at all (if not, reading and writing need not be decoupled).
    pub fn delays(&self) -> bool {
        !self.faults.delay.is_zero() || !self.faults.jitter.is_zero()
    }

    /// When a chunk read at `now` is delivered: after the delay and jitter, and never before
    /// the chunk read before it (a stream keeps its order).
    pub fn deliver_at(&mut self, now: Instant) -> Instant {
        let mut at = crate::later(now, self.faults.sample_delay(&mut self.rng));
        if let Some(last) = self.last_delivery {
            at = at.max(last);
        }
        self.last_delivery = Some(at);
        at
    }
}

/// How one direction of a stream writes: in pieces of at most `--chunk` bytes, each sent no
/// sooner than the rate limit allows.
#[derive(Debug)]
pub struct Pacer {
    rate: Option<u64>,
    chunk: Option<usize>,
    next_send: Option<Instant>,
}

impl Pacer {
    /// The pacer for `faults`.
    pub fn new(faults: &Faults) -> Pacer {
        Pacer { rate: faults.rate, chunk: faults.chunk, next_send: None }
    }

    /// The largest piece to write at once: `--chunk`, and under a rate limit about a fiftieth
    /// of a second's worth, so the rate is kept smoothly rather than in bursts.
    pub fn piece_size(&self) -> usize {
        let by_rate = self.rate.map(|r| (r / 50).max(1) as usize).unwrap_or(usize::MAX);
        self.chunk.unwrap_or(usize::MAX).min(by_rate).max(1)
    }

    /// Reserves the rate limit's time for an `n`-byte piece about to be written at `now`, and
    /// says when it may be written.
    pub fn pace(&mut self, now: Instant, n: usize) -> Instant {
        let Some(rate) = self.rate else { return now };
        let at = self.next_send.map_or(now, |t| t.max(now));
        self.next_send = Some(at + transmit_time(n, rate));
        at
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: Instant,
    seq: u64,
    data: Bytes,
}

/// What a [`DatagramShaper`] did, for the relay's report and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatagramStats {
    /// Datagrams lost on purpose (`--drop`).
    pub dropped: u64,
    /// Datagrams sent twice (`--duplicate`).
    pub duplicated: u64,
    /// Datagrams held back and sent after a later one (`--reorder`).
    pub reordered: u64,
    /// Datagrams dropped because too many were waiting.
    pub overflowed: u64,
}

/// The faults of one direction of a datagram session. [`push`](Self::push) each datagram as it
/// arrives; send what [`pop_due`](Self::pop_due) gives when [`next_wake`](Self::next_wake)
/// comes.
#[derive(Debug)]
pub struct DatagramShaper {
    faults: Faults,
    rng: ChaCha8Rng,
    delays: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// A datagram held back for reordering, and when it goes anyway.
    held: Option<(Bytes, Instant)>,
    next_send: Option<Instant>,
    /// What the faults did so far.
    pub stats: DatagramStats,
}

impl DatagramShaper {
    /// The shaper for one direction of session number `session`.
    pub fn new(faults: &Faults, session: u64, dir: Direction) -> DatagramShaper {
        DatagramShaper {
            faults: faults.clone(),
            rng: faults.rng(session, dir),
            delays: faults.rng_for(session, dir, Use::Delays),
            queue: BinaryHeap::new(),
            seq: 0,
            held: None,
            next_send: None,
            stats: DatagramStats::default(),
        }
    }

    /// Takes a datagram that arrived at `now`.
    pub fn push(&mut self, now: Instant, datagram: Bytes) {
        // Three draws for every datagram, whatever the probabilities (`random_bool` skips its
        // draw for 0 and 1), so that one fault's setting never changes another's choices.
        let mut chance = |p: f64| self.rng.random::<f64>() < p;
        let lost = chance(self.faults.drop);
        let twice = chance(self.faults.duplicate);
        let hold = chance(self.faults.reorder);
        if lost {
            self.stats.dropped += 1;
            return;
        }
        if hold && self.held.is_none() {
            self.stats.reordered += 1;
            if twice {
                self.stats.duplicated += 1;
                self.schedule(now, datagram.clone());
            }
            self.held = Some((datagram, now + REORDER_WAIT));
            return;
        }
        if twice {
            self.stats.duplicated += 1;
            self.schedule(now, datagram.clone());
        }
        self.schedule(now, datagram);
        // A datagram held back goes right after this one.
        if let Some((held, _)) = self.held.take() {
            self.schedule(now, held);
        }
    }

    fn schedule(&mut self, now: Instant, data: Bytes) {
        if self.queue.len() >= MAX_QUEUED_DATAGRAMS {
            self.stats.overflowed += 1;
            return;
        }
        let mut at = crate::later(now, self.faults.sample_delay(&mut self.delays));
        if let Some(rate) = self.faults.rate {
            // Paced in the order they are scheduled: a datagram waits for the link to be free.
            at = self.next_send.map_or(at, |t| t.max(at));
            self.next_send = Some(crate::later(at, transmit_time(data.len(), rate)));
        }
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at, seq: self.seq, data }));
    }

    /// When something is next due (a delayed datagram, or a held one's wait running out).
    pub fn next_wake(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|Reverse(s)| s.at);
        let held = self.held.as_ref().map(|(_, at)| *at);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves every datagram due by `now` to `out`, in the order they are to be sent.
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<Bytes>) {
        if let Some((_, at)) = &self.held
            && *at <= now
        {
            let (held, at) = self.held.take().expect("checked above");
            self.schedule(at, held);
        }
        while let Some(Reverse(s)) = self.queue.peek() {
            if s.at > now {
                break;
            }
            let Reverse(s) = self.queue.pop().expect("peeked");
            out.push(s.data);
        }
    }

    /// Whether nothing is waiting.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.held.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults { seed: 42, ..Faults::default() }
    }

    fn numbered(i: u32) -> Bytes {
        Bytes::copy_from_slice(&i.to_be_bytes())
    }

    /// Pushes `n` numbered datagrams 1 ms apart and collects what comes out, in order.
    fn run(f: &Faults, n: u32) -> (Vec<u32>, DatagramStats) {
        let mut s = DatagramShaper::new(f, 1, Direction::Up);
        let start = Instant::now();
        let mut out = Vec::new();
        let mut got = Vec::new();
        for i in 0..n {
            let now = start + Duration::from_millis(i as u64);
            s.pop_due(now, &mut out);
            s.push(now, numbered(i));
            s.pop_due(now, &mut out);
        }
        s.pop_due(start + Duration::from_secs(3600), &mut out);
        assert!(s.is_idle());
        for d in out {
            got.push(u32::from_be_bytes(d[..].try_into().unwrap()));
        }
        (got, s.stats)
    }

    /// Whether `k` successes in `n` trials is within five standard deviations of `p`.
    fn plausible(k: u64, n: u64, p: f64) -> bool {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (k as f64 - mean).abs() <= 5.0 * sd + 1.0
    }

    #[test]
    fn no_faults_passes_everything_in_order_at_once() {
        let (got, stats) = run(&faults(), 1000);
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(stats, DatagramStats::default());
    }

    #[test]
    fn drop_loses_about_p() {
        let f = Faults { drop: 0.3, ..faults() };
        let (got, stats) = run(&f, 10_000);
        assert_eq!(got.len() as u64 + stats.dropped, 10_000);
        assert!(plausible(stats.dropped, 10_000, 0.3), "dropped {}", stats.dropped);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "what survives keeps its order");
        let all = Faults { drop: 1.0, ..faults() };
        assert!(run(&all, 100).0.is_empty());
    }

    #[test]
    fn duplicate_sends_about_p_twice() {
        let f = Faults { duplicate: 0.2, ..faults() };
        let (got, stats) = run(&f, 10_000);
        assert_eq!(got.len() as u64, 10_000 + stats.duplicated);
        assert!(plausible(stats.duplicated, 10_000, 0.2), "duplicated {}", stats.duplicated);
        let twice = got.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        assert_eq!(twice, stats.duplicated, "a copy follows its original at once");
    }

    #[test]
    fn reorder_swaps_neighbours() {
        let f = Faults { reorder: 0.1, ..faults() };
        let (got, stats) = run(&f, 10_000);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>(), "nothing lost or added");
        let inversions = got.windows(2).filter(|w| w[0] > w[1]).count() as u64;
        assert_eq!(inversions, stats.reordered);
        // Each held datagram is held only while nothing else is, so fewer than p of them.
        assert!(stats.reordered > 500 && stats.reordered <= 1000, "reordered {}", stats.reordered);
    }

    #[test]
    fn a_held_datagram_goes_after_the_wait_when_nothing_follows() {
        let f = Faults { reorder: 1.0, ..faults() };
        let mut s = DatagramShaper::new(&f, 1, Direction::Up);
        let t0 = Instant::now();
        s.push(t0, numbered(1));
        let mut out = Vec::new();
        s.pop_due(t0 + Duration::from_millis(50), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.next_wake(), Some(t0 + REORDER_WAIT));
        s.pop_due(t0 + REORDER_WAIT, &mut out);
        assert_eq!(out, vec![numbered(1)]);
    }

    #[test]
    fn delay_and_jitter_bound_every_datagram() {
        let f = Faults { delay: Duration::from_millis(50), jitter: Duration::from_millis(20), ..faults() };
        let mut s = DatagramShaper::new(&f, 1, Direction::Down);
        let t0 = Instant::now();
        for i in 0..1000 {
            s.push(t0, numbered(i));
        }
        let mut out = Vec::new();
        s.pop_due(t0 + Duration::from_millis(29), &mut out);
        assert!(out.is_empty(), "nothing before delay - jitter");
        s.pop_due(t0 + Duration::from_millis(70), &mut out);
        assert_eq!(out.len(), 1000, "everything by delay + jitter");
        let inversions = out.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 100, "jitter reorders datagrams: {inversions} inversions");
    }

    #[test]
    fn rate_paces_datagrams() {
        let f = Faults { rate: Some(1000), ..faults() };
        let mut s = DatagramShaper::new(&f, 1, Direction::Up);
        let t0 = Instant::now();
        for i in 0..10 {
            s.push(t0, Bytes::from(vec![i as u8; 100]));
        }
        let mut out = Vec::new();
        s.pop_due(t0 + Duration::from_millis(450), &mut out);
        // 100 bytes at 1000 B/s is 100 ms each: sent at 0, 100, 200, 300 and 400 ms.
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn the_same_seed_gives_the_same_run_and_another_seed_another() {
        let f = Faults { drop: 0.2, duplicate: 0.1, reorder: 0.1, ..faults() };
        assert_eq!(run(&f, 2000), run(&f, 2000));
        let other = Faults { seed: 43, ..f.clone() };
        assert_ne!(run(&f, 2000).0, run(&other, 2000).0);
        let (mut a, mut b) = (f.rng(1, Direction::Up), f.rng(1, Direction::Down));
        assert_ne!(a.random::<u64>(), b.random::<u64>(), "each direction has its own generator");
        let mut c = f.rng(2, Direction::Up);
        assert_ne!(f.rng(1, Direction::Up).random::<u64>(), c.random::<u64>(), "and each session");
    }

    #[test]
    fn one_fault_does_not_change_which_datagrams_another_loses() {
        let lost = |f: &Faults| {
            let mut s = DatagramShaper::new(f, 1, Direction::Up);
            let t0 = Instant::now();
            let mut out = Vec::new();
            for i in 0..2000 {
                s.push(t0, numbered(i));
            }
            s.pop_due(t0 + Duration::from_secs(3600), &mut out);
            let mut got: Vec<u32> = out.iter().map(|d| u32::from_be_bytes(d[..].try_into().unwrap())).collect();
            got.sort();
            got.dedup();
            (0..2000).filter(|i| got.binary_search(i).is_err()).collect::<Vec<u32>>()
        };
        let base = Faults { drop: 0.3, ..faults() };
        let reference = lost(&base);
        for other in [
            Faults { jitter: Duration::from_millis(1), ..base.clone() },
            Faults { duplicate: 1.0, ..base.clone() },
            Faults { reorder: 1.0, ..base.clone() },
            Faults { duplicate: 0.2, reorder: 0.3, delay: Duration::from_millis(5), ..base.clone() },
        ] {
            assert_eq!(lost(&other), reference, "{other:?}");
        }
    }

    #[test]
    fn stream_delivery_keeps_order_and_paces() {
        let f = Faults { delay: Duration::from_millis(100), jitter: Duration::from_millis(50), ..faults() };
        let mut s = StreamDelay::new(&f, 1, Direction::Up);
        let t0 = Instant::now();
        let mut last = t0;
        for i in 0..1000 {
            let at = s.deliver_at(t0 + Duration::from_micros(i));
            assert!(at >= last, "a stream never reorders");
            assert!(at >= t0 + Duration::from_millis(50));
            last = at;
        }
        let r = Faults { rate: Some(10_000), chunk: Some(1000), ..faults() };
        let mut s = Pacer::new(&r);
        assert_eq!(s.piece_size(), 200, "a fiftieth of a second's worth under the rate");
        assert_eq!(s.pace(t0, 200), t0);
        assert_eq!(s.pace(t0, 200), t0 + Duration::from_millis(20));
        let c = Faults { chunk: Some(3), ..faults() };
        assert_eq!(Pacer::new(&c).piece_size(), 3);
    }

    #[test]
    fn faults_describe_and_classify() {
        assert!(Faults::default().is_empty());
        let f = Faults { drop: 0.1, chunk: Some(4), delay: Duration::from_millis(5), ..faults() };
        assert!(!f.is_empty());
        assert_eq!(f.datagram_only(), Some("--drop"));
        assert_eq!(f.stream_only(), Some("--chunk"));
        assert_eq!(f.describe(), "delay 5ms, pieces of 4 B, drop 10%, seed 42");
        assert!("sideways".parse::<FaultDirection>().is_err());
    }
}
