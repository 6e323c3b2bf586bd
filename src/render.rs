//! Rendering bytes for people: a message as one escaped line of text, or as a hex dump.
//!
//! Used by the `print` service's output and anything else that shows traffic. Pure functions
//! over byte slices; the caller decides where the text goes.

use std::fmt::Write;

/// Renders `data` as one line: UTF-8 text as it is, a trailing line ending dropped, and every
/// control character or invalid byte escaped (`\n`, `\t`, `\x1b`), so one message never spans
/// or corrupts a terminal line.
pub fn escaped_line(data: &[u8]) -> String {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    escaped(data.strip_suffix(b"\r").unwrap_or(data))
}

/// Renders `data` as one line with every control character or invalid byte escaped, line
/// endings included: the exact bytes can be read back from it. `\xNN` is always one byte (an
/// ASCII control character or a byte that is not UTF-8); `\u{NN}` a character of more bytes
/// (a C1 control character).
pub fn escaped(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                push_escaped(&mut out, c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Text from a peer (an error message a server sent) made safe for a terminal line: every
/// control character escaped as [`escaped`] does, the rest (backslashes too) as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    text.chars().for_each(|c| push_escaped(&mut out, c));
    out.into()
}

/// Appends `c`, or its escape if it is a control character: `\n`, `\r`, `\t`, `\xNN` for the
/// other ASCII ones, `\u{NN}` for C1.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// How many of `bytes` to show now when the rest may still come: all of them, except a
/// character cut short at the end (its other bytes may follow, or it is shown as escapes).
pub fn whole_chars(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    }
}

/// A count of `n` things called `word`, with the plural ending when it is not one: `1 byte`,
/// `2 bytes`, `0 clients`.
pub fn count(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// An I/O error in the words of the rest of sockit's messages: the system's text for an errno
/// without its "(os error N)" and with a lower-case start (`no such file or directory`); any
/// other error as it displays.
pub fn io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let Some(code) = e.raw_os_error() else { return text };
    let bare = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
    let mut chars = bare.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Renders `data` as a classic hex dump: offset, 16 bytes in hex, and their printable ASCII.
/// Each line ends with `\n`; empty data gives an empty string.
pub fn hex_dump(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in data.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", i * 16);
        for col in 0..16 {
            match row.get(col) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if col == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(row.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }));
        out.push_str("|\n");
    }
    out
}

/// Formats a byte count with a binary unit: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    ByteCount(n).to_string()
}

/// A byte count that displays as [`bytes()`] formats it, without allocating (for a log line
/// written per connection).
#[derive(Debug, Clone, Copy)]
pub struct ByteCount(pub u64);

impl std::fmt::Display for ByteCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        let n = self.0;
        if n < 1024 {
            return write!(f, "{n} B");
        }
        let mut v = n as f64 / 1024.0;
        let mut unit = 0;
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        write!(f, "{v:.1} {}", UNITS[unit])
    }
}

/// A duration that displays in seconds with three decimals (`0.012s`), as `{:.3}s` of its
/// seconds would, but with integer arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub std::time::Duration);

impl Seconds {
    /// The whole seconds and the milliseconds (0 to 999) shown.
    pub fn parts(self) -> (u64, u32) {
        // Rounded to the nearest millisecond, half up, as the float formatting did (near enough:
        // it rounded half to even on the binary value). In u64 and u32: u128 arithmetic and
        // formatting cost more than the rest of a log line.
        match (self.0.subsec_nanos() + 500_000) / 1_000_000 {
            1000 => (self.0.as_secs().saturating_add(1), 0),
            ms => (self.0.as_secs(), ms),
        }
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (secs, ms) = self.parts();
        write!(f, "{secs}.{ms:03}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_lines() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello\n", "hello"),
            (b"hello\r\n", "hello"),
            (b"a\nb", "a\\nb"),
            (b"tab\there", "tab\\there"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"\x00\x7f", "\\x00\\x7f"),
            ("\u{85}next".as_bytes(), "\\u{85}next"),
            (b"bad \xff byte", "bad \\xff byte"),
            ("grüße".as_bytes(), "grüße"),
            (b"back\\slash", "back\\\\slash"),
            (b"", ""),
        ];
        for (input, want) in cases {
            assert_eq!(escaped_line(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn printable_text_escapes_control_characters_only() {
        let cases = [
            ("no such file \"a\\b\"", "no such file \"a\\b\""),
            ("\x1b[2Jclear\x07", "\\x1b[2Jclear\\x07"),
            ("two\r\nlines\ttab", "two\\r\\nlines\\ttab"),
            ("c1 \u{9b}31m", "c1 \\u{9b}31m"),
            ("grüße", "grüße"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input), want, "input {input:?}");
        }
    }

    #[test]
    fn counts_take_the_plural_unless_one() {
        assert_eq!(count(1, "byte"), "1 byte");
        assert_eq!(count(0, "client"), "0 clients");
        assert_eq!(count(2, "stream"), "2 streams");
    }

    #[test]
    fn io_errors_read_as_the_other_messages() {
        let gone = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_error(&gone), "no such file or directory");
        let reset = std::io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(io_error(&reset), "connection reset by peer");
        let custom = std::io::Error::other("Something Else");
        assert_eq!(io_error(&custom), "Something Else");
    }

    #[test]
    fn hex_dumps() {
        assert_eq!(hex_dump(b""), "");
        assert_eq!(
            hex_dump(b"hello, world\n\x00\x01\x02\x03"),
            "00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 0a 00 01 02  |hello, world....|\n\
             00000010  03                                                |.|\n"
        );
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn seconds_as_the_float_formatting_wrote_them() {
        use std::time::Duration;
        for (d, want) in [
            (Duration::ZERO, "0.000s"),
            (Duration::from_micros(499), "0.000s"),
            (Duration::from_micros(1_500), "0.002s"),
            (Duration::from_millis(12), "0.012s"),
            (Duration::from_secs(61) + Duration::from_micros(999_600), "62.000s"),
            // No overflow at the very end.
            (Duration::MAX, "18446744073709551615.000s"),
        ] {
            assert_eq!(Seconds(d).to_string(), want);
        }
        // Agrees with `{:.3}` wherever a value is not within a rounding step of a half.
        for ns in (0..5_000_000u64).step_by(7_919) {
            let d = Duration::from_nanos(ns);
            if (ns % 1_000_000).abs_diff(500_000) > 1_000 {
                assert_eq!(Seconds(d).to_string(), format!("{:.3}s", d.as_secs_f64()), "{ns} ns");
            }
        }
    }
}
