//! Programs a server runs for its clients (`exec`'s commands, `spawn`'s programs): how they are
//! started, and how they are stopped.
//!
//! [`confine`] prepares a command so that the program gets fds 0 to 2 and no other descriptor,
//! every signal at its default disposition and none blocked, a session and process group of its
//! own (no controlling terminal), the descriptor limit the server was started with, and the
//! server's environment without its token or systemd's socket-activation variables; and so that
//! it dies if the server does. [`Group`] is a running program's process group: killed when
//! dropped, and listed while it lives so that [`kill_all_commands`] can kill every one at once
//! when the server must stop without waiting for its sessions.

use std::io;
use std::time::Duration;

use rustix::process::{Pid, Signal};
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

/// A confined program's process group (its leader's pid, since [`confine`] makes it lead one):
/// killed when dropped, whatever path the session takes out.
#[derive(Debug)]
pub struct Group(Option<Pid>);

impl Group {
    /// The group led by `pid`, listed for [`kill_all_commands`] until [`Group::finish`].
    pub fn new(pid: u32) -> Group {
        let pid = Pid::from_raw(pid as i32);
        if let Some(p) = pid {
            LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(p.as_raw_nonzero().get());
        }
        Group(pid)
    }

    /// Sends `sig` to every process in the group.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH (everything already gone) is the expected outcome, not an error.
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }

    /// Kills what is left of the group one last time and forgets it: once the leader has been
    /// reaped and the group is empty, its number may be given to someone else's group.
    pub fn finish(&mut self) {
        self.signal(Signal::KILL);
        if let Some(pid) = self.0.take() {
            let mut live = LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|&g| g != pid.as_raw_nonzero().get());
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Waits for a killed program to be gone, so that no zombie is left (bounded: a process stuck in
/// the kernel is left to the runtime's reaper).
pub async fn reap(child: &mut Child) {
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}
