"""A seccomp filter for executions, hand-assembled classic BPF (no library needed inside the sandbox).

Loaded by the fork server by path (it must not import zerotir); each execution installs it on itself
after its own namespaces are set up, and it holds for everything the execution forks. It answers
EPERM to the syscalls math code never needs and that reach far into the kernel or out of the
execution's confinement:

* new namespaces and joining others: unshare, setns, clone with any CLONE_NEW* flag (clone3, whose
  flags sit in memory a filter cannot read, answers ENOSYS, so that libc falls back to clone);
* mounts, old and new API: mount, umount2, pivot_root, open_tree(_attr), move_mount, fsopen,
  fsconfig, fsmount, fspick, mount_setattr;
* process inspection: ptrace, process_vm_readv/writev, kcmp, pidfd_getfd;
* kernel keyrings: add_key, request_key, keyctl;
* large or privileged kernel surfaces: bpf, perf_event_open, userfaultfd, io_uring_*, kexec_*,
  init/finit/delete_module, swapon/swapoff, reboot, name_to_handle_at/open_by_handle_at;
* any syscall of another ABI (x32 on x86_64, or a foreign architecture such as i386 via int 0x80).

Everything else is allowed: this is a deny list that shrinks the kernel surface, not an allow list.
Supported on x86_64 and aarch64; elsewhere `program()` returns None and no filter is installed.

Installed with SECCOMP_FILTER_FLAG_SPEC_ALLOW: kernels whose speculative store bypass mode is
`seccomp` (the default before 5.16) would otherwise also turn that mitigation on for every filtered
process, slowing all its code; side channels are outside this sandbox's threat model anyway.
"""

import ctypes
import platform
import struct

EPERM, ENOSYS = 1, 38
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Syscall numbers that differ per architecture (x86_64, aarch64); newer ones share one table.
_NUMBERED = {
    "ptrace": (101, 117),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "unshare": (272, 97),
    "setns": (308, 268),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
}
_SHARED = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "open_tree_attr": 467,
}
CLONE = {"x86_64": 56, "aarch64": 220}
SECCOMP = {"x86_64": 317, "aarch64": 277}  # the seccomp(2) syscall itself
CLONE3 = 435

# classic BPF opcodes and seccomp return values
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args are u64, little endian)


def denied(machine: str) -> dict[str, int]:
    """The syscalls answered EPERM on this architecture, by name."""
    col = 0 if machine == "x86_64" else 1
    return {**{k: v[col] for k, v in _NUMBERED.items()}, **_SHARED}


def program(machine: str | None = None) -> bytes | None:
    """The filter as an array of struct sock_filter, or None on an unsupported architecture."""
    machine = machine or platform.machine()
    if machine not in AUDIT_ARCH:
        return None
    nrs = sorted(set(denied(machine).values()))
    # Layout: checks, the clone flag check, then three returns (ALLOW, EPERM, ENOSYS): classic BPF
    # jumps only forward.
    ins: list[tuple[int, int, int, int]] = []
    n_checks = 3 + (1 if machine == "x86_64" else 0) + len(nrs) + 2
    clone, allow, eperm, enosys = n_checks, n_checks + 2, n_checks + 3, n_checks + 4

    def jump(code: int, k: int, true_to: int, false_to: int | None = None) -> None:
        here = len(ins)
        jt = true_to - here - 1
        jf = 0 if false_to is None else false_to - here - 1
        assert 0 <= jt < 256 and 0 <= jf < 256
        ins.append((code, jt, jf, k))

    ins.append((_LD_ABS_W, 0, 0, _ARCH))
    jump(_JEQ, AUDIT_ARCH[machine], len(ins) + 1, eperm)  # another ABI: nothing is allowed
    ins.append((_LD_ABS_W, 0, 0, _NR))
    if machine == "x86_64":
        jump(_JGE, X32_SYSCALL_BIT, eperm)
    for nr in nrs:
        jump(_JEQ, nr, eperm)
    jump(_JEQ, CLONE3, enosys)
    jump(_JEQ, CLONE[machine], clone, allow)
    assert len(ins) == clone
    ins.append((_LD_ABS_W, 0, 0, _ARG0))  # clone's flags (low 32 bits)
    jump(_JSET, CLONE_NEW_ANY, eperm, allow)
    ins.append((_RET, 0, 0, _ALLOW))
    ins.append((_RET, 0, 0, _ERRNO | EPERM))
    ins.append((_RET, 0, 0, _ERRNO | ENOSYS))
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


class Filter:
    """The program and its struct sock_fprog, built once in the fork server; `install` in a child
    is one prctl call. Needs no_new_privs (or CAP_SYS_ADMIN) first."""

    def __init__(self, libc, machine: str | None = None):
        machine = machine or platform.machine()
        self.code = program(machine)
        self.nr = SECCOMP.get(machine)
        self.libc = libc
        if self.code is None:
            return
        self.buf = ctypes.create_string_buffer(self.code, len(self.code))

        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        self.prog = Prog(len(self.code) // 8, ctypes.addressof(self.buf))
        self.prog_ref = ctypes.byref(self.prog)

    def install(self) -> None:
        if self.code is None:
            return
        # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, prog); the flag needs 4.17
        if self.libc.syscall(self.nr, 1, 4, self.prog_ref) == 0:
            return
        if self.libc.prctl(22, 2, self.prog_ref, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            raise OSError(ctypes.get_errno(), "seccomp")
