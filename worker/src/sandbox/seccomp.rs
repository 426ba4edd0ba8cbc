//! The seccomp policy of every job, compiled from code to BPF with `seccompiler`, so cold and
//! warm sandboxes enforce one policy and each rule can be tested. The worker hands the
//! programs to the Python side as hex text; the harness (cold, right before the script's
//! first line) or the template's child (warm, before it reports ready for its job) installs
//! them with `prctl(PR_SET_SECCOMP)`.
//!
//! Denied calls fail with an errno rather than killing the process, so a script sees an
//! ordinary `OSError`. A call made through another architecture's entry (i386 `int 0x80`)
//! kills the process. x32 calls carry the x86-64 tag with bit 30 set in the number, which no
//! rule matches: the worker's self-test refuses to start on a kernel that accepts them.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: a `clone` with any of these makes new namespaces.
const CLONE_NEW_ANY: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// Socket families a job may use: `AF_UNIX`, `AF_INET`, `AF_INET6`. Netlink, packet, key,
/// vsock, bluetooth and the rest are kernel attack surface with no use in a jail whose
/// network holds only a loopback device.
const SOCKET_FAMILIES: [u64; 3] = [1, 2, 10];

/// The calls only a sandbox's own set-up makes: the warm template builds each job's mount and
/// namespaces with them, and no job may.
const SETUP_CALLS: [i64; 4] = [
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_setns,
];

/// Calls a Python script never needs, several of them classic escape routes or kernel attack
/// surface: other processes' memory; the mount table, old and new API; new or other
/// namespaces; kernel modules and kexec; eBPF, perf, keyrings, userfaultfd and io_uring; and
/// host-wide settings (reboot, swap, accounting, quotas, clocks, the kernel log, I/O ports,
/// hostname). `SETUP_CALLS` and `clone` into new namespaces come on top for jobs.
const DENIED_CALLS: [i64; 49] = [
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_fanotify_init,
    libc::SYS_nfsservctl,
    libc::SYS_vhangup,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_uselib,
];

/// Which process the policy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A job's script: everything in this module is denied.
    Job,
    /// A warm template, which builds its children's namespaces and mounts: the job policy
    /// without [`SETUP_CALLS`]. Its children add the job policy on top before any script runs.
    Template,
}

/// Problems compiling the policy; they stop the worker from starting.
#[derive(Debug, thiserror::Error)]
#[error("could not build the seccomp policy: {0}")]
pub struct PolicyError(String);

/// The policy as the Python side takes it: the programs' bytes in hex, comma-separated, to be
/// installed in order. Seccomp evaluates every installed program and the most restrictive
/// answer wins; the programs match disjoint calls, so each call gets exactly one errno.
///
/// # Errors
/// When `seccompiler` rejects a rule (a bug here, caught by the tests).
pub fn encoded(policy: Policy) -> Result<String, PolicyError> {
    let programs = programs(policy)?;
    Ok(programs
        .iter()
        .map(|program| hex(&to_bytes(program)))
        .collect::<Vec<_>>()
        .join(","))
}

fn programs(policy: Policy) -> Result<Vec<BpfProgram>, PolicyError> {
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = DENIED_CALLS
        .iter()
        .map(|&call| (call, Vec::new()))
        .collect();
    if policy == Policy::Job {
        eperm.extend(SETUP_CALLS.iter().map(|&call| (call, Vec::new())));
        let new_namespace = CLONE_NEW_ANY
            .iter()
            .map(|&flag| rule(vec![condition(0, SeccompCmpOp::MaskedEq(flag), flag)?]))
            .collect::<Result<Vec<_>, _>>()?;
        eperm.insert(libc::SYS_clone, new_namespace);
    }
    let other_family = rule(
        SOCKET_FAMILIES
            .iter()
            .map(|&family| condition(0, SeccompCmpOp::Ne, family))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    // clone3's flags sit in a struct seccomp cannot read, so the clone rule could not apply:
    // ENOSYS makes glibc fall back to clone for threads and processes.
    let filters = [
        (eperm, libc::EPERM),
        (
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            libc::ENOSYS,
        ),
        (
            BTreeMap::from([(libc::SYS_socket, vec![other_family])]),
            libc::EAFNOSUPPORT,
        ),
    ];
    filters
        .into_iter()
        .map(|(rules, errno)| {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(u32::try_from(errno).unwrap_or(1)),
                std::env::consts::ARCH
                    .try_into()
                    .map_err(|e| PolicyError(format!("{e:?}")))?,
            )
            .map_err(|e| PolicyError(e.to_string()))?;
            BpfProgram::try_from(filter).map_err(|e| PolicyError(e.to_string()))
        })
        .collect()
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, PolicyError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| PolicyError(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, PolicyError> {
    SeccompRule::new(conditions).map_err(|e| PolicyError(e.to_string()))
}

/// `struct sock_filter` as the kernel reads it: code, jt, jf, k in native byte order.
fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program on a `seccomp_data` for x86-64, as the kernel would.
    fn run(program: &BpfProgram, arch: u32, call: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&i32::try_from(call).unwrap_or(-1).to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_ne_bytes());
        }
        let word = |offset: u32| {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            data.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_ne_bytes)
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let Some(i) = program.get(pc) else {
                panic!("ran off the program");
            };
            pc += 1;
            match i.code {
                0x20 => acc = word(i.k), // ld [k]
                0x06 => return i.k,      // ret k
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,  // jeq
                        0x25 => acc > i.k,   // jgt
                        0x35 => acc >= i.k,  // jge
                        _ => acc & i.k != 0, // jset
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x54 => acc &= i.k,                              // and k
                0x05 => pc += usize::try_from(i.k).unwrap_or(0), // ja
                other => panic!("instruction {other:#x} not modelled"),
            }
        }
    }

    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;
    const ALLOW: u32 = 0x7fff_0000;

    /// The answer of the whole policy: the most restrictive of its programs' answers.
    fn verdict(policy: Policy, arch: u32, call: i64, args: [u64; 6]) -> u32 {
        programs(policy)
            .expect("the policy compiles")
            .iter()
            .map(|program| run(program, arch, call, args))
            .min_by_key(|action| match action & 0xffff_0000 {
                0x8000_0000 => 0, // kill process
                0x0005_0000 => 1, // errno
                _ => 2,
            })
            .unwrap_or(ALLOW)
    }

    fn errno(code: i32) -> u32 {
        0x0005_0000 | u32::try_from(code).unwrap_or(0)
    }

    #[test]
    fn escape_routes_fail_with_eperm_for_jobs() {
        for call in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_bpf,
        ] {
            assert_eq!(
                verdict(Policy::Job, X86_64, call, [0; 6]),
                errno(libc::EPERM)
            );
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for call in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_mmap,
        ] {
            assert_eq!(verdict(Policy::Job, X86_64, call, [0; 6]), ALLOW);
        }
    }

    #[test]
    fn clone_is_allowed_for_threads_and_processes_but_not_into_new_namespaces() {
        let thread = 0x003d_0f00; // CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | ...
        let fork = 0x0120_0011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
        for flags in [thread, fork] {
            assert_eq!(
                verdict(Policy::Job, X86_64, libc::SYS_clone, [flags, 0, 0, 0, 0, 0]),
                ALLOW
            );
        }
        for flag in CLONE_NEW_ANY {
            assert_eq!(
                verdict(
                    Policy::Job,
                    X86_64,
                    libc::SYS_clone,
                    [fork | flag, 0, 0, 0, 0, 0]
                ),
                errno(libc::EPERM),
                "{flag:#x}"
            );
        }
        assert_eq!(
            verdict(Policy::Job, X86_64, libc::SYS_clone3, [0; 6]),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn only_unix_and_ip_sockets_can_be_made() {
        for family in SOCKET_FAMILIES {
            assert_eq!(
                verdict(
                    Policy::Job,
                    X86_64,
                    libc::SYS_socket,
                    [family, 1, 0, 0, 0, 0]
                ),
                ALLOW
            );
        }
        for family in [16, 17, 40] {
            assert_eq!(
                verdict(
                    Policy::Job,
                    X86_64,
                    libc::SYS_socket,
                    [family, 1, 0, 0, 0, 0]
                ),
                errno(libc::EAFNOSUPPORT)
            );
        }
    }

    #[test]
    fn templates_may_set_up_namespaces_and_nothing_else_more() {
        for call in SETUP_CALLS {
            assert_eq!(verdict(Policy::Template, X86_64, call, [0; 6]), ALLOW);
        }
        assert_eq!(
            verdict(Policy::Template, X86_64, libc::SYS_ptrace, [0; 6]),
            errno(libc::EPERM)
        );
    }

    #[test]
    fn another_architectures_entry_kills_the_process() {
        assert_eq!(verdict(Policy::Job, I386, 310, [0; 6]), 0x8000_0000);
    }

    #[test]
    fn the_encoding_is_hex_programs_separated_by_commas() {
        let text = encoded(Policy::Job).expect("encodes");
        let programs: Vec<&str> = text.split(',').collect();
        assert_eq!(programs.len(), 3);
        assert!(programs.iter().all(|p| !p.is_empty()
            && p.len() % 16 == 0
            && p.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    /// The seccomp profile of worker containers (`containers/worker-seccomp.json`), as the
    /// names it allows.
    fn container_profile_allows() -> std::collections::BTreeSet<String> {
        let profile: serde_json::Value =
            serde_json::from_str(include_str!("../../../containers/worker-seccomp.json"))
                .expect("the container profile is JSON");
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().expect("names").clone())
            .map(|name| name.as_str().expect("a name").to_owned())
            .collect()
    }

    #[test]
    fn the_container_profile_allows_building_sandboxes() {
        let allowed = container_profile_allows();
        for call in [
            "clone",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "sethostname",
            "setresuid",
            "setgroups",
            "capset",
            "prctl",
            "seccomp",
            "execve",
            "pidfd_open",
            "wait4",
        ] {
            assert!(
                allowed.contains(call),
                "the container profile denies {call}"
            );
        }
    }

    #[test]
    fn the_container_profile_denies_what_jobs_are_denied_beyond_sandbox_set_up() {
        let allowed = container_profile_allows();
        let escape_routes = [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "syslog",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "iopl",
            "ioperm",
            "open_by_handle_at",
            "name_to_handle_at",
            "lookup_dcookie",
            "fanotify_init",
            "nfsservctl",
            "vhangup",
            "uselib",
        ];
        // Every call the job policy denies, but for the four set-up calls nsjail makes.
        assert_eq!(escape_routes.len(), DENIED_CALLS.len() - 4);
        for call in escape_routes {
            assert!(
                !allowed.contains(call),
                "the container profile allows {call}"
            );
        }
    }
}
