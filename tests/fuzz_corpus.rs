//! The fuzz targets on stable Rust: every input of `fuzz/corpus/TARGET/` (and of
//! `fuzz/artifacts-found/TARGET/`, inputs that once found a problem) goes through the check the
//! cargo-fuzz target runs (`fuzz/checks.rs`), then a short deterministic pass of inputs mutated
//! from the corpus: a smoke pass of every target that needs neither nightly nor cargo-fuzz.
//! fuzz/README.md says how to fuzz for real.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How many mutated inputs each target gets.
const MUTATED: usize = 20_000;

/// The longest mutated input, as the fuzz runs' `-max_len` default.
const MAX_LEN: usize = 4096;

/// Bytes worth trying in any position: bounds, separators of the text formats, framing bytes.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\n\r:/@[].%,# 0123456789";

#[test]
fn framing() {
    run("framing");
}

#[test]
fn proto() {
    run("proto");
}

#[test]
fn endpoint() {
    run("endpoint");
}

#[test]
fn acl() {
    run("acl");
}

#[test]
fn icmp() {
    run("icmp");
}

/// Every check has a fuzz target and a corpus, and every fuzz target a check, so that neither
/// runner can forget one.
#[test]
fn every_target_has_a_check_and_a_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut targets: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    targets.sort();
    let mut checks: Vec<String> = checks::TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    checks.sort();
    assert_eq!(targets, checks, "fuzz/fuzz_targets/ and checks::TARGETS differ");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &checks {
        assert!(manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")), "no [[bin]] for {name}");
        assert!(!files(&fuzz.join("corpus").join(name)).is_empty(), "fuzz/corpus/{name} is empty");
    }
}

/// Replays the target's corpus and found inputs, then the mutated pass.
fn run(target: &str) {
    let check = checks::TARGETS.iter().find(|(name, _)| *name == target).map(|(_, check)| *check).expect("a check");
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus: Vec<Vec<u8>> = files(&fuzz.join("corpus").join(target))
        .iter()
        .chain(&files(&fuzz.join("artifacts-found").join(target)))
        .map(|path| {
            let input = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            try_input(check, &input, &path.display().to_string());
            input
        })
        .collect();
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty");

    // One fixed generator per target, so that a failure here happens again on every run.
    let seed = target.bytes().fold(0x0050_c417_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..MUTATED {
        let input = mutate(&mut rng, &corpus);
        try_input(check, &input, &format!("mutated input {i}"));
    }
}

/// Runs one input, and on failure says which, with its bytes in hex to save as a reproducer.
fn try_input(check: checks::Check, input: &[u8], name: &str) {
    if panic::catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("{name} fails the check (the panic is above); its bytes: {hex}");
    }
}

/// The regular files in a directory, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// A corpus input changed one to four times, in the ways libFuzzer does most often.
fn mutate(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..7) {
            // Flip one bit.
            0 if len > 0 => input[at % len] ^= 1 << rng.random_range(0..8),
            // Put an interesting byte in place of one.
            1 if len > 0 => input[at % len] = INTERESTING[rng.random_range(0..INTERESTING.len())],
            // Cut the end off.
            2 => input.truncate(at),
            // Take a few bytes out.
            3 => drop(input.drain(at..(at + rng.random_range(1..=8)).min(len))),
            // Put in a few bytes, random or interesting.
            4 => {
                let n = rng.random_range(1..=8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        if rng.random_range(0..2) == 0 {
                            rng.random_range(0..=255)
                        } else {
                            INTERESTING[rng.random_range(0..INTERESTING.len())]
                        }
                    })
                    .collect();
                input.splice(at..at, bytes);
            }
            // Repeat a piece of itself.
            5 => {
                let end = rng.random_range(at..=len);
                let piece = input[at..end].to_vec();
                input.splice(at..at, piece);
            }
            // Splice: this input's head, another's tail.
            _ => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let from = rng.random_range(0..=other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
        input.truncate(MAX_LEN);
    }
    input
}
