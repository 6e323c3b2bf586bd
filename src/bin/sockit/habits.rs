//! What netcat and socat users type out of habit, said back as sockit's own command line: a
//! command line clap refuses is read once more as `nc` would read it (`-l -p 7000`, `-u`,
//! `HOST PORT`), and a port name (`:http`) is looked up in /etc/services. Each only changes the
//! words of a usage error; nothing here ever runs a command.

use std::net::Ipv6Addr;

use clap::CommandFactory;
use sockit::endpoint::Endpoint;

use crate::cli::Cli;

/// The services file the C library reads port names from.
const SERVICES_FILE: &str = "/etc/services";

/// The subcommands whose arguments a netcat user might mix up with nc's: the rest have short
/// options of their own (`states -l`, `bench -c`, `ping -c`) that nc's would be mistaken for.
const NETCAT_LIKE: [&str; 3] = ["connect", "send", "serve"];

/// netcat's options that take a value (`-p 7000`, `-e /bin/cat`, `-w 3`, ...), of the usual
/// implementations (OpenBSD's, traditional, ncat).
const TAKES_VALUE: &str = "pecwisxXTIOPgGmM";
/// netcat's options without one that a translation can ignore. `-q` is sockit's quiet, or nc's
/// `-q SECS`: read without its value, the number is one more word, and neither the host (the
/// first word that is not a number) nor the port (the last number) is taken from it.
const NO_VALUE: &str = "nvqNdDC46tbrhS";

/// netcat's reading of a command line.
#[derive(Debug, Default, PartialEq)]
struct Netcat {
    listen: bool,
    udp: bool,
    unix: bool,
    keep: bool,
    scan: bool,
    /// `-e PROG` (a program and its words) or `-c COMMAND` (a shell command).
    exec: Option<Vec<String>>,
    port: Option<String>,
    words: Vec<String>,
    /// sockit's own long options, with their values, kept as they were for the suggestion.
    long: Vec<String>,
}

impl Netcat {
    /// Reads `args` as nc would; `None` at the first thing nc would not take either, or when
    /// nothing in them is netcat's.
    fn read(sub: Option<&str>, args: &[String]) -> Option<Netcat> {
        let mut nc = Netcat::default();
        let mut flagged = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                // What follows is spawn's program, as it was.
                nc.long.extend(std::iter::once(arg).chain(it.by_ref()).cloned());
                break;
            }
            if let Some(name) = arg.strip_prefix("--") {
                nc.long.push(arg.clone());
                if !name.contains('=') && takes_value(sub?, name)? {
                    nc.long.push(it.next()?.clone());
                }
                continue;
            }
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                nc.words.push(arg.clone());
                continue;
            };
            for (i, c) in cluster.char_indices() {
                flagged = true;
                match c {
                    'l' => nc.listen = true,
                    'u' => nc.udp = true,
                    'U' => nc.unix = true,
                    'k' => nc.keep = true,
                    'z' => nc.scan = true,
                    // `-q1`: nc's seconds, attached.
                    'q' if cluster[i + 1..].bytes().all(|b| b.is_ascii_digit()) => break,
                    c if NO_VALUE.contains(c) => {}
                    c if TAKES_VALUE.contains(c) => {
                        let attached = &cluster[i + c.len_utf8()..];
                        let value = if attached.is_empty() { it.next()?.clone() } else { attached.to_owned() };
                        match c {
                            'p' => nc.port = Some(value),
                            'e' => nc.exec = Some(value.split_whitespace().map(str::to_owned).collect()),
                            'c' => nc.exec = Some(vec!["sh".into(), "-c".into(), value]),
                            _ => {}
                        }
                        break;
                    }
                    _ => return None,
                }
            }
        }
        // Without a flag, only `HOST PORT` is netcat's.
        let host_port = matches!(nc.words.as_slice(),
            [host, port, ..] if (!host.contains(':') || host.parse::<Ipv6Addr>().is_ok()) && is_port(port));
        (flagged || host_port).then_some(nc)
    }

    /// The port: `-p PORT`, or the last word that is a number (`nc -l 7000`, `nc HOST 7000`).
    fn port(&self) -> Option<&str> {
        self.port.as_deref().or_else(|| self.words.iter().rev().find(|w| is_port(w)).map(String::as_str))
    }

    /// The endpoint in sockit's syntax: HOST:PORT (`:PORT` listening everywhere), udp://, or a path.
    fn endpoint(&self) -> String {
        if self.unix {
            let path = self.words.first().map_or("PATH", String::as_str);
            let scheme = if self.udp { "unix-dgram:" } else { "" };
            return match path.starts_with('/') || path.starts_with("./") || path.starts_with("../") {
                true => format!("{scheme}{path}"),
                false if self.udp => format!("{scheme}{path}"),
                false => format!("./{path}"),
            };
        }
        let scheme = if self.udp { "udp://" } else { "" };
        // Already sockit's HOST:PORT (`connect -u host:53`): only the scheme changes.
        if self.port.is_none()
            && let Some(word) = self.words.iter().find(|w| matches!(Endpoint::parse(w), Ok(Endpoint::Ip { .. })))
        {
            return format!("{scheme}{}", word.split_once("://").map_or(word.as_str(), |(_, rest)| rest));
        }
        let host = self.words.iter().find(|w| !is_port(w)).map_or("", String::as_str);
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let port = self.port().unwrap_or("PORT");
        format!("{scheme}{host}:{port}")
    }

    /// sockit's long options as they were given, to go on the end of a suggestion.
    fn tail(&self) -> String {
        self.long.iter().map(|a| format!(" {a}")).collect()
    }
}

/// Whether sockit's subcommand `sub` has a long option `name` that takes a value; `None` if it
/// has no such option.
fn takes_value(sub: &str, name: &str) -> Option<bool> {
    let command = Cli::command();
    let sub = command.find_subcommand(sub)?;
    let arg = sub.get_arguments().chain(command.get_arguments()).find(|a| a.get_long() == Some(name))?;
    Some(arg.get_action().takes_values())
}

/// The words of `serve` that are not its service: the host, when nc's `-p` gave the port.
fn without_services(words: &[String]) -> (Vec<String>, Vec<String>) {
    words.iter().cloned().partition(|w| !crate::serve::SERVICES.contains(&w.as_str()))
}

fn is_port(word: &str) -> bool {
    !word.is_empty() && word.len() <= 5 && word.bytes().all(|b| b.is_ascii_digit())
}

/// Says what sockit command does what a refused command line meant, when it reads as netcat's
/// or socat's. `args` are the arguments after the program name.
pub(crate) fn suggestion(args: &[String]) -> Option<String> {
    // Global options first are sockit's own.
    let skip = args.iter().take_while(|a| matches!(a.as_str(), "-v" | "-vv" | "-vvv" | "-q" | "--verbose" | "--quiet"));
    let args = &args[skip.count()..];
    let sub = args.first().filter(|a| Cli::command().find_subcommand(a.as_str()).is_some()).map(String::as_str);
    match sub {
        None => socat_line(args).or_else(|| netcat_line(None, args)),
        Some(sub) if NETCAT_LIKE.contains(&sub) => netcat_line(Some(sub), &args[1..]),
        Some(_) => None,
    }
}

/// `sockit TCP-LISTEN:7000,fork EXEC:cat`: socat's two addresses.
fn socat_line(args: &[String]) -> Option<String> {
    let first = args.first()?;
    let upper = first.to_ascii_uppercase();
    let socat = sockit::endpoint::from_socat(first).is_some()
        || (args.len() == 2
            && (first == "-"
                || ["TCP:", "TCP4:", "TCP6:", "UDP:", "UDP4:", "UDP6:", "EXEC:", "SYSTEM:", "STDIO"]
                    .iter()
                    .any(|w| upper.starts_with(w))));
    if !socat {
        return None;
    }
    let ours: Vec<String> =
        args.iter().filter_map(|a| sockit::endpoint::from_socat(a).map(|o| format!("{a} is {o}"))).collect();
    let ours = if ours.is_empty() { String::new() } else { format!("; {}", ours.join(", ")) };
    Some(format!(
        "sockit is not socat: sockit connect ENDPOINT joins stdin and stdout to a server, sockit serve ENDPOINT \
         SERVICE serves (spawn -- PROGRAM for a program per client), sockit relay FROM TO forwards{ours} (see `sockit \
         --help`)"
    ))
}

/// A command line with netcat's options, or `HOST PORT` for `HOST:PORT`, said as sockit's.
fn netcat_line(sub: Option<&str>, args: &[String]) -> Option<String> {
    let mut nc = Netcat::read(sub, args)?;
    let typed = match sub {
        None => format!("nc {}", args.join(" ")),
        Some(sub) => format!("sockit {sub} {}", args.join(" ")),
    };
    let tail = nc.tail();
    if nc.scan {
        return Some(format!(
            "sockit does no port scans (nc -z); `sockit states -l` lists what listens on this machine, and sockit \
             connect {} says whether one address answers",
            nc.endpoint()
        ));
    }
    let listen = nc.listen || (sub == Some("serve") && nc.port.is_some());
    let ours = match (listen, sub) {
        (true, Some("serve")) => {
            // serve's own words after the address stay: `serve -l -p 7000 echo`.
            let (others, service) = without_services(&nc.words);
            nc.words = others;
            let service = if service.is_empty() { "SERVICE".to_owned() } else { service.join(" ") };
            format!("sockit serve {} {service}{tail}", nc.endpoint())
        }
        (true, _) => match &nc.exec {
            Some(prog) => {
                let token = if nc.unix { "" } else { " --token-file FILE" };
                format!(
                    "sockit serve {} spawn{token}{tail} -- {} (a program per client; over TCP with a token that \
                     clients give with sockit connect --token-file FILE, on a Unix socket without one)",
                    nc.endpoint(),
                    prog.join(" ")
                )
            }
            None => {
                // nc -l serves one client; -k, client after client.
                let (once, why) = if nc.keep { ("", "") } else { (" --once", "; --once: one client, as without -k") };
                format!(
                    "sockit serve {} print --raw{once}{tail} (what arrives goes to stdout{why}; echo, upper or reply \
                     TEXT answer instead)",
                    nc.endpoint()
                )
            }
        },
        (false, Some("send")) => {
            let text: Vec<&str> = nc.words.iter().skip(2).map(String::as_str).collect();
            let text = if text.is_empty() { "TEXT".to_owned() } else { text.join(" ") };
            format!("sockit send {} {text}{tail}", nc.endpoint())
        }
        (false, Some("serve")) => return None,
        (false, _) if nc.exec.is_some() => return None,
        (false, _) => format!("sockit connect {}{tail}", nc.endpoint()),
    };
    let what = if sub.is_none() { "sockit is not netcat" } else { "sockit takes no netcat options" };
    Some(format!("{what}: for `{typed}` write {ours}"))
}

/// A hint for a port given by name (`localhost:http`), which sockit does not look up: the number
/// /etc/services gives it, in the endpoint as the user wrote it.
pub(crate) fn port_name_hint(text: &str) -> Option<String> {
    let (head, name) = text.rsplit_once(':')?;
    if name.is_empty() || name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let proto = if text.to_ascii_lowercase().starts_with("udp") { "udp" } else { "tcp" };
    let services = std::fs::read_to_string(SERVICES_FILE).ok()?;
    let port = service_port(&services, name, proto)?;
    Some(format!("{SERVICES_FILE} gives {name} as port {port}: write {head}:{port}"))
}

/// The port of service `name` over `proto` in the text of a services file.
fn service_port(services: &str, name: &str, proto: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        let (port, p) = fields.next()?.split_once('/')?;
        let named = first == name || fields.any(|alias| alias == name);
        (named && p == proto).then(|| port.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(line: &str) -> Option<String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        suggestion(&args)
    }

    #[track_caller]
    fn says(line: &str, want: &str) {
        let got = say(line).unwrap_or_else(|| panic!("nothing for {line:?}"));
        assert!(got.contains(want), "{line:?}: got {got:?}, want {want:?}");
        assert!(!got.contains('\n'));
    }

    #[test]
    fn netcat_command_lines_become_sockit_ones() {
        says("-l -p 7400", "for `nc -l -p 7400` write sockit serve :7400 print --raw --once (");
        says("-lvnp 7400", "sockit serve :7400 print --raw --once");
        says("-l 7400", "sockit serve :7400 print --raw --once");
        says("-lk 127.0.0.1 7400", "sockit serve 127.0.0.1:7400 print --raw (");
        says("-u -l -p 5353", "sockit serve udp://:5353 print --raw --once");
        says("-l -p 7000 -e /bin/cat", "sockit serve :7000 spawn --token-file FILE -- /bin/cat (");
        says("-lU /tmp/x.sock -c 'tr'", "sockit serve /tmp/x.sock spawn -- sh -c 'tr'");
        says("127.0.0.1 7000", "sockit is not netcat: for `nc 127.0.0.1 7000` write sockit connect 127.0.0.1:7000");
        says("-u 127.0.0.1 53", "sockit connect udp://127.0.0.1:53");
        says("-v ::1 22", "sockit connect [::1]:22");
        says("-U x.sock", "sockit connect ./x.sock");
        says("-zv host 1-1000", "no port scans");
    }

    #[test]
    fn netcat_words_after_a_sockit_command() {
        says("connect -u 127.0.0.1:7", "for `sockit connect -u 127.0.0.1:7` write sockit connect udp://127.0.0.1:7");
        says("connect 127.0.0.1 7411", "write sockit connect 127.0.0.1:7411");
        says("connect -l -p 7000", "sockit serve :7000 print --raw --once");
        says("-v connect -u host:53", "sockit connect udp://host:53");
        says("send 127.0.0.1 7000 hi there", "write sockit send 127.0.0.1:7000 hi there");
        says("serve -l -p 7000 echo", "write sockit serve :7000 echo");
        says("serve -p 7000", "write sockit serve :7000 SERVICE");
    }

    #[test]
    fn socat_command_lines_get_sockit_commands() {
        says("TCP-LISTEN:7000,fork EXEC:cat", "sockit is not socat");
        says("TCP-LISTEN:7000,fork EXEC:cat", "TCP-LISTEN:7000,fork is :7000");
        says("- TCP:127.0.0.1:7000", "sockit connect ENDPOINT joins stdin and stdout");
    }

    #[test]
    fn what_is_not_netcat_gets_nothing() {
        for line in ["", "bogus", "connect --frobnicate x:1", "states -l -u", "bench 127.0.0.1:7 -c 5 -x", "--nope"] {
            assert_eq!(say(line), None, "{line:?}");
        }
    }

    #[test]
    fn port_names_come_from_the_services_file() {
        let services = "# comment\nhttp\t\t80/tcp\t\twww\t# WorldWideWeb HTTP\ndomain\t\t53/udp\nbad x/tcp\n";
        assert_eq!(service_port(services, "http", "tcp"), Some(80));
        assert_eq!(service_port(services, "www", "tcp"), Some(80));
        assert_eq!(service_port(services, "domain", "udp"), Some(53));
        assert_eq!(service_port(services, "domain", "tcp"), None);
        assert_eq!(service_port(services, "bad", "tcp"), None);
        assert_eq!(service_port(services, "nope", "tcp"), None);
    }
}
