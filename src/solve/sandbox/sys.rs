//! The few Linux system calls the sandbox needs (rlimits, namespaces, Landlock, signals),
//! declared by hand against the C library std already links, so the crate needs no `libc`
//! dependency. Everything called from [`confine`] runs between fork and exec and must stay a
//! plain system call: no allocation, no locks.
//!
//! On other systems (or architectures with other constants) every layer reports itself as
//! unavailable and the sandbox runs with the time limit and the process-group kill only.

use std::io;
use std::os::fd::OwnedFd;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};

/// Limits applied to the interpreter before it starts; plain data, copied into the child.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
    pub max_processes: u64,
    pub file_bytes: u64,
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::raw::c_long;

    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }

    extern "C" {
        fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
        fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
        fn unshare(flags: c_int) -> c_int;
        fn prctl(option: c_int, arg2: c_long, arg3: c_long, arg4: c_long, arg5: c_long) -> c_int;
        fn syscall(number: c_long, ...) -> c_long;
        fn kill(pid: c_int, sig: c_int) -> c_int;
        fn geteuid() -> u32;
    }

    const RLIMIT_CPU: c_int = 0;
    const RLIMIT_FSIZE: c_int = 1;
    const RLIMIT_CORE: c_int = 4;
    const RLIMIT_NPROC: c_int = 6;
    const RLIMIT_AS: c_int = 9;
    const CLONE_NEWUSER: c_int = 0x1000_0000;
    const CLONE_NEWNET: c_int = 0x4000_0000;
    const PR_SET_PDEATHSIG: c_int = 1;
    const PR_SET_NO_NEW_PRIVS: c_int = 38;
    const SIGKILL: c_int = 9;
    // The Landlock calls have the same numbers on every architecture (generic table).
    const SYS_LANDLOCK_CREATE_RULESET: c_long = 444;
    const SYS_LANDLOCK_ADD_RULE: c_long = 445;
    const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    const LANDLOCK_RULE_PATH_BENEATH: c_int = 1;

    // Filesystem rights (ABI 1..3); reads and execution are not handled, so stay allowed.
    const WRITE_FILE: u64 = 1 << 1;
    const TRUNCATE: u64 = 1 << 14;
    const REFER: u64 = 1 << 13;
    /// REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO,
    /// MAKE_BLOCK, MAKE_SYM.
    const MAKE_AND_REMOVE: u64 = 0b1_1111_1111 << 4;
    const NET_BIND_TCP: u64 = 1 << 0;
    const NET_CONNECT_TCP: u64 = 1 << 1;
    const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
    const SCOPE_SIGNAL: u64 = 1 << 1;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }

    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }

    fn check(rc: c_int) -> io::Result<()> {
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn limit(resource: c_int, value: u64) -> io::Result<()> {
        let mut cur = RLimit { cur: 0, max: 0 };
        // SAFETY: `RLimit` is `#[repr(C)]` with the layout of `struct rlimit` (two 64-bit
        // fields on the 64-bit Linux targets this module is built for), and the pointer is to a
        // live, writable stack value the kernel fills in before the call returns.
        check(unsafe { getrlimit(resource, &mut cur) })?;
        // Never above the current hard limit (that would fail for a normal user).
        let v = value.min(cur.max);
        // SAFETY: as above; the kernel only reads the temporary for the duration of the call.
        check(unsafe { setrlimit(resource, &RLimit { cur: v, max: v }) })
    }

    /// Runs in the child between fork and exec: rlimits, namespaces (`ns`: 2 = user + network,
    /// 1 = network only), death signal, then the Landlock ruleset `ruleset_fd` (if >= 0).
    /// Async-signal-safe: system calls only, no allocation or locks (see `Command::pre_exec`).
    pub fn confine(l: &Limits, ns: u8, ruleset_fd: c_int) -> io::Result<()> {
        limit(RLIMIT_AS, l.memory_bytes)?;
        limit(RLIMIT_CPU, l.cpu_seconds)?;
        limit(RLIMIT_FSIZE, l.file_bytes)?;
        limit(RLIMIT_CORE, 0)?;
        let flags = match ns {
            2 => CLONE_NEWUSER | CLONE_NEWNET,
            1 => CLONE_NEWNET,
            _ => 0,
        };
        if flags != 0 {
            // SAFETY: unshare takes flags only (no pointers); it changes this (child) process's
            // namespaces, which nothing in this process relies on after exec.
            check(unsafe { unshare(flags) })?;
        }
        // Counted per user namespace only after the unshare; without one it would count
        // every process of the user, so it is left alone then.
        if ns == 2 && !is_root() {
            limit(RLIMIT_NPROC, l.max_processes)?;
        }
        // SAFETY: prctl with integer arguments only; PR_SET_PDEATHSIG affects this process.
        check(unsafe { prctl(PR_SET_PDEATHSIG, SIGKILL as c_long, 0, 0, 0) })?;
        if ruleset_fd >= 0 {
            // SAFETY: integer arguments only; required before landlock_restrict_self.
            check(unsafe { prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
            // SAFETY: landlock_restrict_self(fd, flags) takes two integers; `ruleset_fd` is the
            // ruleset the parent opened and keeps open until the child has been spawned.
            let rc = unsafe {
                syscall(
                    SYS_LANDLOCK_RESTRICT_SELF,
                    ruleset_fd as c_long,
                    0 as c_long,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The kernel's Landlock ABI version, 0 when absent or disabled.
    pub fn landlock_abi() -> u32 {
        // SAFETY: with LANDLOCK_CREATE_RULESET_VERSION the kernel requires a null attribute
        // pointer and size 0 and reads nothing; the call only returns a number.
        let v = unsafe {
            syscall(
                SYS_LANDLOCK_CREATE_RULESET,
                std::ptr::null::<u8>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).unwrap_or(0)
    }

    /// A ruleset: writes only beneath `workdir` (and to /dev/null), no TCP (ABI 4+), no signals
    /// or abstract sockets outside the sandbox (ABI 6+).
    pub fn landlock_ruleset(workdir: &Path) -> io::Result<OwnedFd> {
        let abi = landlock_abi();
        if abi == 0 {
            return Err(io::Error::other("Landlock is not available"));
        }
        let mut fs = WRITE_FILE | MAKE_AND_REMOVE;
        if abi >= 2 {
            fs |= REFER;
        }
        if abi >= 3 {
            fs |= TRUNCATE;
        }
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // Older kernels only know the leading fields: pass the size they expect.
        let size = match abi {
            1..=3 => 8usize,
            4 | 5 => 16,
            _ => 24,
        };
        // SAFETY: `attr` is a live `#[repr(C)]` value of 24 bytes that outlives the call, and
        // `size` (8, 16 or 24) never exceeds it: the kernel reads at most `size` bytes of it.
        let fd = unsafe {
            syscall(
                SYS_LANDLOCK_CREATE_RULESET,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is non-negative, so it is a descriptor the kernel just opened for us;
        // nothing else owns it, so `OwnedFd` may close it.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
        allow(&ruleset, workdir, fs)?;
        allow(
            &ruleset,
            Path::new("/dev/null"),
            fs & (WRITE_FILE | TRUNCATE),
        )?;
        Ok(ruleset)
    }

    fn allow(ruleset: &OwnedFd, path: &Path, access: u64) -> io::Result<()> {
        let target = std::fs::File::open(path)?;
        let rule = PathBeneath {
            allowed_access: access,
            parent_fd: target.as_raw_fd(),
        };
        // SAFETY: `rule` is a live `#[repr(C, packed)]` `struct landlock_path_beneath_attr`
        // that outlives the call (the kernel only reads it); `ruleset` and `target` are open
        // descriptors borrowed for the call.
        let rc = unsafe {
            syscall(
                SYS_LANDLOCK_ADD_RULE,
                ruleset.as_raw_fd() as c_long,
                LANDLOCK_RULE_PATH_BENEATH,
                &rule as *const PathBeneath,
                0u32,
            )
        };
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    pub fn is_root() -> bool {
        // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
        unsafe { geteuid() == 0 }
    }

    pub fn kill_group(pgid: i32) {
        if pgid > 1 {
            // SAFETY: kill takes integers only; a negative pid addresses the process group, and
            // `pgid > 1` keeps it off -1 (every process) and 0 (our own group).
            unsafe { kill(-pgid, SIGKILL) };
        }
    }

    pub fn kill_pid(pid: i32) {
        if pid > 1 {
            // SAFETY: kill takes integers only; `pid > 1` names one process, never init or a
            // group.
            unsafe { kill(pid, SIGKILL) };
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    use super::*;
    pub fn confine(_: &Limits, ns: u8, fd: c_int) -> io::Result<()> {
        match (ns, fd) {
            (0, -1) => Ok(()),
            _ => Err(io::Error::other("not supported on this system")),
        }
    }
    pub fn landlock_abi() -> u32 {
        0
    }
    pub fn landlock_ruleset(_: &Path) -> io::Result<OwnedFd> {
        Err(io::Error::other("Landlock needs Linux"))
    }
    pub fn is_root() -> bool {
        false
    }
    pub fn kill_group(pgid: i32) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
    }
    pub fn kill_pid(pid: i32) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

pub use imp::{confine, is_root, kill_group, landlock_abi, landlock_ruleset};

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
        })
        .collect()
}

pub fn group_alive(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// A pids cgroup holding `pid`, limited to `max` tasks, when the cgroup tree is writable
/// (v1 `pids` hierarchy, or a v2 tree with the pids controller enabled); None otherwise.
pub fn pids_cgroup(pid: u32, max: u64) -> Option<PathBuf> {
    let name = format!("exemplar-sandbox-{pid}");
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup/pids")];
    if let Some(own) = v2_own_cgroup() {
        bases.push(own);
    }
    for base in bases {
        if !base.join("cgroup.procs").exists() {
            continue;
        }
        let dir = base.join(&name);
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        let joined = std::fs::write(dir.join("pids.max"), max.to_string())
            .and_then(|_| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        match joined {
            Ok(()) => return Some(dir),
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
    None
}

/// Our own cgroup v2 folder, when the pids controller is delegated to its children.
fn v2_own_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let ctl = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    ctl.split_whitespace().any(|c| c == "pids").then_some(dir)
}

/// SIGKILL every task left in the cgroup (also those that left the process group).
pub fn kill_cgroup(dir: &Path) {
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        pids.into_iter().for_each(imp::kill_pid);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn remove_cgroup(dir: &Path) {
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        kill_cgroup(dir);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_is_seen_in_proc() {
        extern "C" {
            fn getpgid(pid: c_int) -> c_int;
        }
        // SAFETY: getpgid takes an integer (0: ourselves) and touches no memory of ours.
        let pgid = unsafe { getpgid(0) };
        assert!(group_members(pgid).contains(&(std::process::id() as i32)));
    }
}
