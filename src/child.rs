//! Programs a server runs for its clients (`exec`'s commands, `spawn`'s programs): how they are
//! started, and how they are stopped.
//!
//! [`confine`] prepares a command so that the program gets fds 0 to 2 and no other descriptor,
//! every signal at its default disposition and none blocked, a session and process group of its
//! own (no controlling terminal), the descriptor limit the server was started with, and the
//! server's environment without its token or systemd's socket-activation variables; and so that
//! it dies if the server does. [`Running`] is a running program and its process group: the
//! group is signalled only while its number is surely the program's, killed when dropped, and
//! listed while it lives so that [`kill_all_commands`] can kill every one at once when the
//! server must stop without waiting for its sessions.

use std::io;
use std::time::Duration;

use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;

use crate::auth;

/// Environment variables a program never inherits from the server: the server's secret, and
/// systemd's socket-activation variables, which describe the server's descriptors and would
/// mislead a program that also understands socket activation (it has none of those descriptors).
pub const HIDDEN_ENV: [&str; 4] = [auth::TOKEN_ENV, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Prepares `cmd` to run confined (see the module documentation). The caller chooses the
/// program's stdin, stdout and stderr. `nofile` is the soft limit on open files the program
/// gets (a server usually raises its own; `None`: whatever the server has).
pub fn confine(cmd: &mut tokio::process::Command, nofile: Option<u64>) {
    for var in HIDDEN_ENV {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe calls:
    // setsid, prctl, close_range, fcntl, getrlimit, setrlimit, rt_sigaction, sigemptyset and
    // sigprocmask. std has already placed the caller's choice of stdio on fds 0 to 2.
    unsafe {
        cmd.pre_exec(move || {
            // A session and process group of its own: the group is what gets killed, and without
            // a controlling terminal the program cannot stop on a read from the server's.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // If the server dies without cleaning up (kill -9), the program dies with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Every other descriptor the server holds (a listener, other clients, anything it
            // inherited without CLOEXEC) is closed at exec. Marking them rather than closing them
            // keeps std's own pipe, which reports a failed exec, working until then.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                // Before Linux 5.11: mark them one by one, up to the descriptor limit.
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                let top = lim.rlim_cur.min(1 << 20) as i32;
                for fd in 3..top {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // The descriptor limit the server had before it raised its own.
            if let Some(n) = nofile {
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = n.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
            // Default dispositions for every signal and an empty signal mask, whatever the
            // server inherited (a shell starts background jobs with SIGINT and SIGQUIT ignored)
            // or set (SIGPIPE). The raw system call, because the C library refuses to touch the
            // two real-time signals it reserves for itself, which a parent may still have left
            // ignored; an all-zero kernel sigaction is SIG_DFL with no flags and an empty mask,
            // whatever the architecture's layout.
            let default = [0u64; 4];
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, default.as_ptr(), 0usize, 8usize);
                }
            }
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// The process groups of the programs running now, so that a server that must stop at once can
/// kill them all before it exits ([`kill_all_commands`]).
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Kills every program that any session of this process is running (`exec` commands and
/// `spawn` programs). For a process about to exit without waiting for its sessions to end (a
/// second Ctrl-C).
pub fn kill_all_commands() {
    let groups = LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    for &pgid in groups.iter() {
        if let Some(pid) = Pid::from_raw(pgid) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

/// A confined program while it runs: its process group, signalled only while the group's
/// number is surely still the program's.
///
/// A group's number is its leader's pid ([`confine`] makes the program lead one), which the
/// kernel may give to a new process once the leader has been reaped and no member is left; a
/// signal sent to the number then would hit someone else's processes. So the leader's exit is
/// awaited without reaping it ([`Running::exited`]: a pidfd turns readable when the process
/// exits, and the zombie keeps its pid), the group may be signalled as long as needed, and
/// [`Running::finish`] kills what is left of it and only then reaps the leader. Dropped
/// without `finish`, the group is killed and tokio reaps the leader (`kill_on_drop`).
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Readable once the leader has exited; `None` where pidfds are missing (Linux before 5.3),
    /// and then the exit is polled with `waitid(WNOWAIT)`, which does not reap either.
    exit: Option<AsyncFd<OwnedFd>>,
    /// The group (the leader's pid) until [`Running::finish`].
    group: Option<Pid>,
}

/// How often the exit is polled where pidfds are missing.
const EXIT_POLL: Duration = Duration::from_millis(50);

impl Running {
    /// Takes charge of a program started with [`confine`], listing its group for
    /// [`kill_all_commands`] until [`Running::finish`].
    pub fn new(child: Child) -> Running {
        let group = child.id().and_then(|id| Pid::from_raw(id as i32));
        let exit = group.and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()).and_then(|fd| {
            // SAFETY: the `AsyncFd` owns the pidfd, which stays open and the same until it is
            // dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
        if let Some(p) = group {
            LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(p.as_raw_nonzero().get());
        }
        Running { child, exit, group }
    }

    /// The leader's pid (0 if the program has no pid, which a started one always has).
    pub fn id(&self) -> u32 {
        self.group.map_or(0, |p| p.as_raw_nonzero().get() as u32)
    }

    /// The program, for its pipes. Never wait on it: that reaps, and [`Running::finish`] must
    /// be the one that does.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until the leader has exited, without reaping it. Cancel-safe; once it has
    /// returned it returns at once.
    pub async fn exited(&self) {
        let Some(pid) = self.group else { return };
        if let Some(fd) = &self.exit {
            // The guard is dropped without clearing: the fd stays ready, as the process stays
            // exited.
            if fd.readable().await.is_ok() {
                return;
            }
        }
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        loop {
            match rustix::process::waitid(WaitId::Pid(pid), options) {
                Ok(None) => tokio::time::sleep(EXIT_POLL).await,
                // Exited, or not ours to wait for any more (tokio reaped it): either way gone.
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }

    /// Sends `sig` to every process in the group.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.group {
            // ESRCH (everything already gone) is the expected outcome, not an error.
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }

    /// Kills what is left of the group, forgets it, then reaps the leader (waiting at most 5 s
    /// for one stuck in the kernel) and returns its status; `None` if that failed.
    pub async fn finish(mut self) -> Option<std::process::ExitStatus> {
        self.signal(Signal::KILL);
        self.forget();
        tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.ok()?.ok()
    }

    /// Stops signalling the group and takes it off the list for [`kill_all_commands`].
    fn forget(&mut self) {
        if let Some(pid) = self.group.take() {
            let mut live = LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|&g| g != pid.as_raw_nonzero().get());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Not reaped yet (only `finish` reaps, and it forgets the group first): the number is
        // still the program's.
        self.signal(Signal::KILL);
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state letter in /proc/PID/stat (`Z` for a zombie), or `None` once the pid is gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
    }

    fn start(script: &str) -> Running {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script]);
        confine(&mut cmd, None);
        Running::new(cmd.spawn().expect("sh starts"))
    }

    /// The leader's exit is seen without reaping it, so its pid (the group's number) cannot be
    /// given to anyone else while the group may still be signalled; `finish` reaps it, with its
    /// status. Once with a pidfd, once polling as without one.
    #[tokio::test]
    async fn the_leader_stays_unreaped_until_finish() {
        for pidfd in [true, false] {
            let mut running = start("exit 7");
            if !pidfd {
                running.exit = None;
            } else if running.exit.is_none() {
                eprintln!("skipping the pidfd pass: pidfd_open is not available here");
                continue;
            }
            let pid = running.id();
            tokio::time::timeout(Duration::from_secs(10), running.exited()).await.expect("the exit is seen");
            assert_eq!(state(pid), Some('Z'), "pidfd {pidfd}: the leader was reaped before finish");
            // Signalling now reaches only what is left of the program's own group.
            running.signal(Signal::KILL);
            assert!(LIVE_GROUPS.lock().unwrap().contains(&(pid as i32)));
            let status = running.finish().await.expect("a status");
            assert_eq!(status.code(), Some(7));
            assert_eq!(state(pid), None, "pidfd {pidfd}: not reaped by finish");
            assert!(!LIVE_GROUPS.lock().unwrap().contains(&(pid as i32)));
        }
    }

    /// The processes in process group `pgid`, leader aside.
    fn members(pgid: u32) -> Vec<u32> {
        let pgrp = |p: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            stat.rsplit_once(") ")?.1.split(' ').nth(2)?.parse::<u32>().ok()
        };
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&p| p != pgid && pgrp(p) == Some(pgid))
            .collect()
    }

    /// What the program left running in its group dies with `finish`, which kills before it
    /// reaps the leader.
    #[tokio::test]
    async fn finish_kills_what_the_program_left_in_its_group() {
        let running = start("sleep 30 & exit 0");
        let pgid = running.id();
        running.exited().await;
        let left = members(pgid);
        assert_eq!(left.len(), 1, "the background sleep: {left:?}");
        running.finish().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while left.iter().any(|&p| matches!(state(p), Some(c) if c != 'Z')) {
            assert!(std::time::Instant::now() < deadline, "{left:?} survived the group's kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
