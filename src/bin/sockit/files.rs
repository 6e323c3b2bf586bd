//! `sockit put`, `get` and `ls`: the clients of a `files` server.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use sockit::files::{FilesClient, FilesError, Progress, Report};
use sockit::fsroot::EntryKind;
use sockit::render;

use crate::cli::{ClientAuthArgs, GetArgs, LsArgs, PutArgs};
use crate::exec::{connect_stream, load_token};
use crate::{OutputClosed, Usage};

async fn open(endpoint: &str, args: &ClientAuthArgs) -> anyhow::Result<FilesClient> {
    let endpoint = crate::endpoint(endpoint)?;
    let token = load_token(args.token_file.as_deref())?;
    let tls = crate::tls::client(&args.tls, &endpoint)?;
    let stream = connect_stream(&endpoint, args.connect_timeout, tls.as_deref()).await?;
    Ok(FilesClient::handshake(stream, token.as_ref()).await?)
}

/// The last component of a path, for naming a file on the other side.
fn file_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

/// A progress bar on a terminal, nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(quiet: bool, what: String) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(0).with_message(what);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    fn update(&self, p: Progress) {
        if let Some(bar) = &self.0 {
            if bar.length() != Some(p.size) {
                bar.set_length(p.size);
            }
            bar.set_position(p.done);
        }
    }

    fn finish(&self, verb: &str, name: &str, r: &Report) {
        let Some(bar) = &self.0 else { return };
        bar.finish_and_clear();
        let secs = r.elapsed.as_secs_f64().max(1e-6);
        let moved = r.size - r.resumed;
        let mut line = format!(
            "sockit: {verb} {name}: {} in {:.2}s ({}/s), BLAKE3 verified",
            render::bytes(moved),
            secs,
            render::bytes((moved as f64 / secs) as u64)
        );
        if r.resumed > 0 {
            line += &format!("; resumed after {}", render::bytes(r.resumed));
        }
        note!("{line}");
    }
}

/// Runs a blocking transfer off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

pub async fn put(args: PutArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.local.as_os_str() == "-" {
        // PUT carries the size before the data (PROTOCOL.md section 7), and a resume hashes the
        // local file's beginning: a stream of unknown length cannot be sent.
        return Err(Usage(
            "put sends a file, not standard input: the server needs its size first; save the data \
             to a file and put that (a file named - is ./-)"
                .into(),
        )
        .into());
    }
    let local_name = args.local.to_str().and_then(file_name).map(str::to_owned);
    let remote = match (&args.remote, &local_name) {
        (Some(r), Some(n)) if r.ends_with('/') => format!("{r}{n}"),
        (Some(r), _) => r.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => {
            return Err(
                Usage(format!("name the remote file: sockit put ENDPOINT {} REMOTE", args.local.display())).into()
            );
        }
    };
    let mut client = open(&args.endpoint, &args.auth).await?;
    let bar = Bar::new(quiet, format!("put {remote}"));
    let (local, resume, name) = (args.local.clone(), args.resume, remote.clone());
    let (report, bar) = blocking(move || (client.put(&local, &name, resume, &mut |p| bar.update(p)), bar)).await?;
    let report = report?;
    bar.finish("stored", &remote, &report);
    Ok(ExitCode::SUCCESS)
}

pub async fn get(args: GetArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let Some(name) = file_name(&args.remote).map(str::to_owned) else {
        return Err(Usage(format!("'{}' names no file", args.remote)).into());
    };
    if args.local.as_deref().is_some_and(|l| l.as_os_str() == "-") {
        return get_to_stdout(args, quiet).await;
    }
    let local: PathBuf = match &args.local {
        None => PathBuf::from(&name),
        Some(l) if l.is_dir() || l.as_os_str().to_string_lossy().ends_with('/') => l.join(&name),
        Some(l) => l.clone(),
    };
    let mut client = open(&args.endpoint, &args.auth).await?;
    let bar = Bar::new(quiet, format!("get {}", args.remote));
    let (remote, resume, target) = (args.remote.clone(), args.resume, local.clone());
    let (report, bar) = blocking(move || (client.get(&remote, &target, resume, &mut |p| bar.update(p)), bar)).await?;
    let report = report?;
    bar.finish("saved", &local.display().to_string(), &report);
    Ok(ExitCode::SUCCESS)
}

/// `sockit get ENDPOINT REMOTE -`: the bytes go to stdout as they arrive, so a damaged or cut
/// transfer can only be told afterwards, on stderr and in the exit status.
async fn get_to_stdout(args: GetArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.resume {
        return Err(Usage("--resume continues a partial file; standard output (-) has none".into()).into());
    }
    // A duplicate of fd 1 as a File: unbuffered, and movable to the transfer's thread.
    let mut out = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut client = open(&args.endpoint, &args.auth).await?;
    let bar = Bar::new(quiet, format!("get {}", args.remote));
    let remote = args.remote.clone();
    let (report, bar) = blocking(move || (client.get_to(&remote, &mut out, &mut |p| bar.update(p)), bar)).await?;
    match report {
        Ok(report) => {
            bar.finish("wrote", &format!("{} to stdout", args.remote), &report);
            Ok(ExitCode::SUCCESS)
        }
        // The reader of our output left (`| head`): a quiet end, as for every other command.
        Err(FilesError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        Err(e) => Err(e.into()),
    }
}

pub async fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let mut client = open(&args.endpoint, &args.auth).await?;
    let dir = args.dir.clone();
    let entries = blocking(move || list_or_file(&mut client, &dir)).await??;
    let mut out = String::new();
    if args.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "kind": kind_name(e.kind), "size": e.size, "mtime": e.mtime,
                })
            })
            .collect();
        out = serde_json::to_string_pretty(&list)? + "\n";
    } else {
        for e in &entries {
            let when = file_time(e.mtime);
            let suffix = match e.kind {
                EntryKind::Dir => "/",
                EntryKind::Symlink => "@",
                _ => "",
            };
            // Names come from the server: escaped, so that none can move the cursor or fake lines.
            let name = render::escaped_line(e.name.as_bytes());
            out += &format!("{:>12}  {when}  {name}{suffix}\n", e.size);
        }
    }
    crate::write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// A modification time (seconds since 1970, from the server) as `ls` shows it: `2026-11-22
/// 10:50:32`, in UTC. One outside the years 1970 to 9999, which RFC 3339 cannot write, is shown
/// as its count of seconds, `@253402300800`.
fn file_time(mtime: i64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let when = u64::try_from(mtime).ok().and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    match when.map(|w| write!(out, "{}", humantime::format_rfc3339_seconds(w))) {
        Some(Ok(())) => out.replace('T', " ").trim_end_matches('Z').to_owned(),
        _ => format!("@{mtime}"),
    }
}

/// The entries of directory `path`; or, as ls(1) does, for a path that names something else, that
/// one entry (from its directory's list), under the name it was asked by. A path with a
/// trailing slash must be a directory.
fn list_or_file(client: &mut FilesClient, path: &str) -> Result<Vec<sockit::fsroot::Entry>, FilesError> {
    let not_a_directory = sockit::fsroot::FsError::NotADirectory { path: String::new() }.code();
    match client.list(path) {
        Err(FilesError::Server(e)) if e.code() == not_a_directory && !path.is_empty() && !path.ends_with('/') => {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let found = client.list(parent).ok().and_then(|all| all.into_iter().find(|entry| entry.name == name));
            match found {
                Some(entry) => Ok(vec![sockit::fsroot::Entry { name: path.to_owned(), ..entry }]),
                None => Err(FilesError::Server(e)),
            }
        }
        other => other,
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time RFC 3339 cannot write (the year 10000 and on, or before 1970) panicked `ls`.
    #[test]
    fn file_times_of_any_year() {
        assert_eq!(file_time(0), "1970-01-01 00:00:00");
        assert_eq!(file_time(253_402_300_799), "9999-12-31 23:59:59");
        assert_eq!(file_time(253_402_300_800), "@253402300800");
        assert_eq!(file_time(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(file_time(-1), "@-1");
    }

    #[test]
    fn names_of_paths() {
        assert_eq!(file_name("a/b/c.txt"), Some("c.txt"));
        assert_eq!(file_name("c.txt"), Some("c.txt"));
        assert_eq!(file_name("dir/"), Some("dir"));
        assert_eq!(file_name(".."), None);
        assert_eq!(file_name("/"), None);
    }
}
