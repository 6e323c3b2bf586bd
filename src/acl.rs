//! Access control by peer address: `--allow` and `--deny` rules of addresses and CIDR ranges.
//!
//! A peer is refused when any deny rule matches it, whatever the allow rules say (deny wins);
//! otherwise, when there are allow rules, it must match one of them; with no allow rules every
//! address not denied is let in. An IPv4 client of a dual-stack socket arrives as an
//! IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) and is matched as the IPv4 address it is, so
//! `10.0.0.0/8` means the same on every socket.
//!
//! The rules concern IP peers. Unix-domain peers have no address: the socket file's permissions
//! and, for `exec` and `files`, the peer's uid guard them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address range: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net) as u128, u32::from(ip) as u128, self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

/// The address as the rules see it: an IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;
    /// `10.0.0.0/8`, `::1/128`, or a bare address (a range of one).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        let (addr_text, prefix_text) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr_text = addr_text.trim_start_matches('[').trim_end_matches(']');
        let written: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("'{s}' is not an address or range (examples: 10.0.0.0/8, 192.168.1.7, ::1/128)"))?;
        let bits = if written.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("'{s}': the prefix length must be a number from 0 to {bits}")),
            },
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps, with the
        // prefix counted in IPv6 bits; a shorter prefix is an IPv6 range as written.
        let (addr, prefix) = match (written, canonical(written)) {
            (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if prefix >= 96 => (v4, prefix - 96),
            _ => (written, prefix),
        };
        // Keep only the network part, so that display shows the range it means.
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The allow and deny rules of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

/// Why a peer was refused: the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A deny rule matched.
    Denied(Cidr),
    /// There are allow rules, and none matched.
    NotAllowed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Denied(rule) => write!(f, "denied by --deny {rule}"),
            Refusal::NotAllowed => f.write_str("not in any --allow range"),
        }
    }
}

impl AccessList {
    /// Adds an allow rule.
    pub fn allow(&mut self, rule: Cidr) {
        self.allow.push(rule);
    }

    /// Adds a deny rule.
    pub fn deny(&mut self, rule: Cidr) {
        self.deny.push(rule);
    }

    /// Whether there are no rules at all (everyone is let in).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Lets `ip` in, or says which rule keeps it out.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if let Some(rule) = self.deny.iter().find(|r| r.contains(ip)) {
            return Err(Refusal::Denied(*rule));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }

    /// Parses a file of rules: one address or range per line (or several, separated by commas
    /// or spaces), `#` comments and blank lines ignored. Errors name the line.
    pub fn parse_file(text: &str) -> Result<Vec<Cidr>, String> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            for word in line.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
                rules.push(word.parse().map_err(|e| format!("line {}: {e}", i + 1))?);
            }
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_should() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!cidr("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")), "an IPv4 range holds no IPv6 address");
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("[::1]").contains(ip("::1")));
        // An IPv4 client of a dual-stack socket, and a mapped rule.
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.5")));
        assert!(cidr("::ffff:10.0.0.1").contains(ip("10.0.0.1")), "a mapped rule is its IPv4 address");
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"), "with the prefix in IPv6 bits");
        assert_eq!(cidr("::ffff:10.0.0.1/128"), cidr("10.0.0.1"));
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8", "shown as the range it means");
    }

    #[test]
    fn bad_ranges_say_why() {
        for (bad, why) in [
            ("10.0.0.0/33", "0 to 32"),
            ("::1/129", "0 to 128"),
            ("10.0.0.0/-1", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0/8", "not an address"),
            ("example.com", "not an address"),
            ("", "not an address"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let mut acl = AccessList::default();
        assert!(acl.is_empty());
        assert_eq!(acl.check(ip("10.0.0.1")), Ok(()));
        acl.allow(cidr("10.0.0.0/8"));
        acl.deny(cidr("10.9.0.0/16"));
        assert_eq!(acl.check(ip("10.1.1.1")), Ok(()));
        assert_eq!(acl.check(ip("10.9.1.1")), Err(Refusal::Denied(cidr("10.9.0.0/16"))));
        assert_eq!(acl.check(ip("192.168.0.1")), Err(Refusal::NotAllowed));
        let mut deny_only = AccessList::default();
        deny_only.deny(cidr("127.0.0.2"));
        assert!(deny_only.check(ip("127.0.0.1")).is_ok());
        assert!(deny_only.check(ip("::ffff:127.0.0.2")).is_err());
        assert_eq!(Refusal::Denied(cidr("127.0.0.2")).to_string(), "denied by --deny 127.0.0.2/32");
    }

    #[test]
    fn files_of_rules() {
        let rules = AccessList::parse_file("# office\n10.0.0.0/8, 192.168.1.0/24\n\n::1 # loopback\n").unwrap();
        assert_eq!(rules.len(), 3);
        let e = AccessList::parse_file("10.0.0.0/8\nbogus\n").unwrap_err();
        assert!(e.starts_with("line 2: 'bogus'"), "{e}");
    }
}
