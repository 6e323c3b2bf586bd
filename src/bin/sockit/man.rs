//! `sockit man`: clap_mangen's page, with the after-help laid out for roff.
//!
//! clap_mangen prints the after-help (the endpoint table, the services, the examples) as running
//! text, which roff fills into paragraphs: the table's columns and each example's line run
//! together. Here each heading of it ("Examples:") becomes a section of its own, its indented
//! lines are kept as written (`.nf`), and the prose between them is filled as usual.

use clap::Command;
use roff::{Roff, roman};

/// The manual page for `page` (a built command: its name is the page's), in roff.
pub fn page(page: Command) -> std::io::Result<Vec<u8>> {
    let after = page.get_after_long_help().or_else(|| page.get_after_help()).map(|s| s.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page.after_help(None::<&str>).after_long_help(None::<&str>)).render(&mut out)?;
    let Some(after) = after else { return Ok(out) };
    // Rendered as a page, so that apostrophes come out upright, less the preamble that says how,
    // which the page has already.
    let preamble = Roff::new().render();
    let sections = after_help(&after).render();
    let mut sections = sections.strip_prefix(&preamble).unwrap_or(&sections).as_bytes().to_vec();
    // The sections go where clap_mangen puts its own EXTRA section: before VERSION.
    let at = find(&out, b"\n.SH VERSION").map_or(out.len(), |i| i + 1);
    sections.extend_from_slice(&out[at..]);
    out.truncate(at);
    out.extend(sections);
    Ok(out)
}

/// The after-help as roff: a line such as "Examples:" heads a section, indented lines are kept
/// line for line with their indentation, and other lines are prose to fill.
fn after_help(text: &str) -> Roff {
    let mut roff = Roff::new();
    let mut started = false;
    let mut verbatim = false;
    for line in text.lines() {
        let indented = line.starts_with(' ');
        if verbatim && !indented {
            roff.control("fi", []);
            verbatim = false;
        }
        if let Some(heading) = heading(line) {
            roff.control("SH", [heading.to_uppercase().as_str()]);
            started = true;
            continue;
        }
        if !started {
            roff.control("SH", ["NOTES"]);
            started = true;
        }
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else if indented {
            if !verbatim {
                roff.control("nf", []);
                verbatim = true;
            }
            roff.text([roman(line)]);
        } else {
            roff.text([roman(line)]);
        }
    }
    if verbatim {
        roff.control("fi", []);
    }
    roff
}

/// The name of a section when `line` is a heading: a word or two at the start of a line, ending
/// in a colon ("Examples:", "Inherited sockets:"), not prose that ends in one.
fn heading(line: &str) -> Option<&str> {
    let name = line.strip_suffix(':')?;
    let short = name.split(' ').count() <= 2 && name.len() <= 24;
    (short && name.starts_with(|c: char| c.is_ascii_uppercase())).then_some(name)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_sections_and_indented_lines_keep_their_layout() {
        let roff = after_help("Running text\nthat goes on.\n\nExamples:\n  sockit a\n  sockit b\nAfter.\n").to_roff();
        assert_eq!(
            roff,
            ".SH NOTES\nRunning text\nthat goes on.\n.PP\n.SH EXAMPLES\n.nf\n  sockit a\n  sockit b\n.fi\nAfter.\n"
        );
    }

    #[test]
    fn prose_that_ends_in_a_colon_is_not_a_heading() {
        assert_eq!(heading("Endpoints:"), Some("Endpoints"));
        assert_eq!(heading("Faults (to test other programs against a bad network; reproducible with --seed):"), None);
        assert_eq!(heading("  tcp://HOST:PORT:"), None);
    }
}
