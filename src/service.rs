//! Services: what a server does with each message it receives.
//!
//! A [`Service`] is sans-IO: given one message it produces zero or more answers and says whether
//! the session goes on. The server ([`crate::server`]) owns the sockets and the framing; the same
//! service therefore runs unchanged on TCP, Unix streams, seqpacket and datagram sockets.
//!
//! Services that think in lines (`qa`, `reply`, `print`) see each line of a raw chunk as its own
//! message and answer with the question's line ending (see [`crate::framing::text_lines`]), so
//! netcat's lines and the seed clients' bare strings both work with no flags.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::net::PeerAddr;

/// Whether a session continues after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading messages.
    Continue,
    /// The service ended the session (after sending its answers), as `qa` does on `bye`.
    End,
}

/// Receives what the `print` service prints. The library never writes to stdout itself; the
/// program that runs the server decides where messages go and how they look.
pub trait MessageSink: Send + Sync {
    /// Called once per message, in arrival order for each peer.
    fn message(&self, peer: &PeerAddr, at: SystemTime, data: &[u8]);

    /// Whether unframed chunks should be split into lines first (text display), or passed
    /// whole (a hex dump, which shows every byte received, line endings included).
    fn wants_lines(&self) -> bool {
        true
    }
}

/// A question/answer dictionary for the `qa` service.
#[derive(Debug, Clone)]
pub struct QaDict {
    answers: HashMap<String, String>,
    default_answer: String,
}

/// The word that ends a `qa` session.
pub const QA_BYE: &str = "bye";

impl Default for QaDict {
    /// The seed program's dictionary: `how are u` → `fine`, `how old are u` → `nicai`, anything
    /// else → `no`, and `bye` → `bye` (which ends the session).
    fn default() -> Self {
        let mut d = QaDict::empty("no");
        d.insert("how are u", "fine");
        d.insert("how old are u", "nicai");
        d
    }
}

/// A `--dict` file could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: expected 'question = answer', found '{text}'")]
pub struct DictError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line.
    pub text: String,
}

impl QaDict {
    /// A dictionary with no entries and the given default answer.
    pub fn empty(default_answer: &str) -> QaDict {
        QaDict { answers: HashMap::new(), default_answer: default_answer.to_owned() }
    }

    /// Parses a dictionary file: one `question = answer` per line (split at the first `=`,
    /// spaces around both trimmed), `#` comments and blank lines ignored.
    pub fn parse(text: &str, default_answer: &str) -> Result<QaDict, DictError> {
        let mut d = QaDict::empty(default_answer);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((q, a)) if !q.trim().is_empty() => d.insert(q, a),
                _ => return Err(DictError { line: i + 1, text: raw.to_owned() }),
            }
        }
        Ok(d)
    }

    /// Adds or replaces an entry; matching ignores ASCII case and surrounding white space.
    pub fn insert(&mut self, question: &str, answer: &str) {
        self.answers.insert(normalize(question), answer.trim().to_owned());
    }

    /// Replaces the answer given to questions the dictionary does not know.
    pub fn set_default_answer(&mut self, answer: &str) {
        self.default_answer = answer.to_owned();
    }

    /// The answer to `question`, and whether it ends the session.
    pub fn answer(&self, question: &[u8]) -> (&str, Flow) {
        let q = normalize(&String::from_utf8_lossy(question));
        let flow = if q == QA_BYE { Flow::End } else { Flow::Continue };
        match self.answers.get(&q) {
            Some(a) => (a, flow),
            None if flow == Flow::End => (QA_BYE, flow),
            None => (&self.default_answer, flow),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

fn normalize(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// A service a server runs for each message.
#[derive(Clone)]
pub enum Service {
    /// Sends every message back unchanged.
    Echo,
    /// Sends every message back with ASCII letters upper-cased (like Python's `bytes.upper`);
    /// other bytes, UTF-8 included, are unchanged.
    Upper,
    /// Answers every message with a fixed text.
    Reply(Arc<[u8]>),
    /// Answers questions from a dictionary; `bye` ends the session.
    Qa(Arc<QaDict>),
    /// Hands every message to a sink with its sender and arrival time; answers nothing.
    Print(Arc<dyn MessageSink>),
    /// Reads and throws away everything (a sink for throughput tests); answers nothing.
    Discard,
    /// Sends an endless stream of bytes to every client until it closes, ignoring what it sends
    /// (a source for throughput tests). Needs a connection: on datagram sockets it discards.
    Source,
    /// Runs commands for authenticated clients ([`crate::exec`]). Stream sockets only.
    Exec(Arc<crate::exec::ExecConfig>),
    /// Serves files under a root directory to authenticated clients ([`crate::files`]). Stream
    /// sockets only.
    Files(Arc<crate::files::FilesConfig>),
    /// Sends every line to every other client with the sender's name ([`crate::chat`]). Stream
    /// sockets only.
    Chat(Arc<crate::chat::Room>),
    /// Connects every client to a target and relays between them ([`crate::relay`]).
    Relay(Arc<crate::relay::RelayConfig>),
    /// Connects every client to a fresh process of a program, raw bytes both ways
    /// ([`crate::spawn`]). Stream sockets only.
    Spawn(Arc<crate::spawn::SpawnConfig>),
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Service {
    /// Whether the service speaks its own protocol on a stream and cannot run on packet sockets.
    pub fn needs_stream(&self) -> bool {
        matches!(self, Service::Exec(_) | Service::Files(_) | Service::Chat(_) | Service::Spawn(_))
    }

    /// Whether a client's first bytes from the server are a message of PROTOCOL.md section 5
    /// (`HELLO`, or an `ERROR` in its place): `exec`, `files`, and `spawn` with a token.
    pub fn greets_with_hello(&self) -> bool {
        match self {
            Service::Exec(_) | Service::Files(_) => true,
            Service::Spawn(config) => config.policy.token.is_some(),
            _ => false,
        }
    }

    /// The service's name as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Upper => "upper",
            Service::Reply(_) => "reply",
            Service::Qa(_) => "qa",
            Service::Print(_) => "print",
            Service::Discard => "discard",
            Service::Source => "source",
            Service::Exec(_) => "exec",
            Service::Files(_) => "files",
            Service::Chat(_) => "chat",
            Service::Relay(_) => "relay",
            Service::Spawn(_) => "spawn",
        }
    }

    /// Whether the service treats each line of an unframed chunk as its own message.
    pub fn thinks_in_lines(&self) -> bool {
        match self {
            Service::Reply(_) | Service::Qa(_) => true,
            Service::Print(sink) => sink.wants_lines(),
            Service::Echo
            | Service::Upper
            | Service::Discard
            | Service::Source
            | Service::Exec(_)
            | Service::Files(_)
            | Service::Chat(_)
            | Service::Relay(_)
            | Service::Spawn(_) => false,
        }
    }

    /// Handles one message from `peer`, passing each answer to `answer`. The message buffer is
    /// the caller's and may be changed in place (`upper` does, to avoid a copy).
    pub fn respond(&self, peer: &PeerAddr, msg: &mut [u8], answer: &mut dyn FnMut(&[u8])) -> Flow {
        match self {
            Service::Echo => answer(msg),
            Service::Upper => {
                msg.make_ascii_uppercase();
                answer(msg);
            }
            Service::Reply(text) => answer(text),
            Service::Qa(dict) => {
                let (a, flow) = dict.answer(msg);
                answer(a.as_bytes());
                return flow;
            }
            Service::Print(sink) => sink.message(peer, SystemTime::now(), msg),
            // The server streams these without messages on connected sockets; a datagram is
            // simply dropped.
            Service::Discard | Service::Source => {}
            // Sessions with their own protocol never come here: the server runs them itself.
            Service::Exec(_) | Service::Files(_) | Service::Chat(_) | Service::Relay(_) | Service::Spawn(_) => {}
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn run(service: &Service, msg: &[u8]) -> (Vec<u8>, Flow) {
        let peer = PeerAddr::Inet("127.0.0.1:1".parse().unwrap());
        let mut out = Vec::new();
        let flow = service.respond(&peer, &mut msg.to_vec(), &mut |a| out.extend_from_slice(a));
        (out, flow)
    }

    #[test]
    fn echo_and_upper() {
        assert_eq!(run(&Service::Echo, b"a\0b"), (b"a\0b".to_vec(), Flow::Continue));
        assert_eq!(run(&Service::Upper, b"helloworld"), (b"HELLOWORLD".to_vec(), Flow::Continue));
        // Like Python's bytes.upper: ASCII only, so UTF-8 passes through untouched.
        assert_eq!(run(&Service::Upper, "grüße ß\n".as_bytes()).0, "GRüßE ß\n".as_bytes());
        let long = vec![b'x'; 3000];
        assert_eq!(run(&Service::Upper, &long).0, vec![b'X'; 3000]);
    }

    #[test]
    fn qa_seed_dictionary() {
        let qa = Service::Qa(Arc::new(QaDict::default()));
        assert_eq!(run(&qa, b"how are u"), (b"fine".to_vec(), Flow::Continue));
        assert_eq!(run(&qa, b"How Old Are U "), (b"nicai".to_vec(), Flow::Continue));
        assert_eq!(run(&qa, b"what?"), (b"no".to_vec(), Flow::Continue));
        assert_eq!(run(&qa, b"BYE"), (b"bye".to_vec(), Flow::End));
    }

    #[test]
    fn qa_dict_file() {
        let d = QaDict::parse("# greetings\nhi = hello there\n\n  2+2 = 4 \nbye = see you\n", "?").unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.answer(b"HI"), ("hello there", Flow::Continue));
        assert_eq!(d.answer(b"2+2"), ("4", Flow::Continue));
        assert_eq!(d.answer(b"x"), ("?", Flow::Continue));
        assert_eq!(d.answer(b"bye"), ("see you", Flow::End));
        let e = QaDict::parse("ok = yes\nno equals sign\n", "no").unwrap_err();
        assert_eq!(e.to_string(), "line 2: expected 'question = answer', found 'no equals sign'");
        assert!(QaDict::parse(" = empty question", "no").is_err());
    }

    #[test]
    fn print_hands_messages_to_the_sink() {
        struct Collect(Mutex<Vec<(String, Vec<u8>)>>);
        impl MessageSink for Collect {
            fn message(&self, peer: &PeerAddr, _at: SystemTime, data: &[u8]) {
                self.0.lock().unwrap().push((peer.to_string(), data.to_vec()));
            }
        }
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let svc = Service::Print(sink.clone());
        assert_eq!(run(&svc, b"hi"), (vec![], Flow::Continue));
        assert_eq!(*sink.0.lock().unwrap(), vec![("127.0.0.1:1".to_string(), b"hi".to_vec())]);
    }
}
