"""Hostile programs for the sandbox, shared by tests/test_sandbox.py: run in-process (as root in CI)
and, through `python tests/sandbox_attacks.py --as-uid UID TARGETS`, as an ordinary user.

Each program asserts that every attack in it is refused, so `pass` means the sandbox held and an
attack that gets through is a `fail` whose detail names it. The host side (nothing written outside
the work dir) is checked by the test, which knows the targets.

    targets = make_targets(outside_dirs, secret_files)      the paths the attacks aim at
    run_attacks(targets) -> {attack: (status, detail, isolation)}
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import uuid

PRELUDE = r'''
import ctypes, errno, os, signal, socket, stat, struct, time
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MNT_DETACH = 1, 32, 4096, 16384, 2
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
T = TARGETS

def refused(ret, what):
    assert ret == -1, f"{what} was allowed"

def cannot(action, what):
    try:
        action()
    except OSError:
        return
    raise AssertionError(f"{what} was allowed")
'''

ATTACKS = {
    "identity": r'''
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
assert 0 not in os.getresuid() and 0 not in os.getresgid(), (os.getresuid(), os.getresgid())
for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    assert int(status[field], 16) == 0, f"{field} = {status[field].strip()}"
assert status["NoNewPrivs"].strip() == "1"
''',
    "mount": r'''
prefix = T["prefix"].encode()
refused(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None), "mounting a tmpfs")
refused(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None), "remounting / read-write")
refused(libc.mount(None, prefix, None, MS_REMOUNT | MS_BIND, None), "remounting the interpreter read-write")
refused(libc.mount(None, b"/usr", None, MS_REMOUNT, None), "remounting /usr's file system read-write")
refused(libc.mount(b"/usr", b"/tmp", None, MS_BIND | MS_REC, None), "a bind mount")
os.mkdir("newroot")
os.mkdir("newroot/old")
refused(libc.mount(b"proc", b"newroot", b"proc", 0, None), "mounting a proc")
refused(libc.umount2(prefix, MNT_DETACH), "unmounting the interpreter")
refused(libc.umount2(b"/usr", 0), "unmounting /usr")
refused(libc.umount2(b"/proc", MNT_DETACH), "unmounting /proc")
refused(libc.pivot_root(b".", b"."), "pivot_root(., .)")
refused(libc.pivot_root(b"newroot", b"newroot/old"), "pivot_root into the work dir")
refused(libc.chroot(b"newroot"), "chroot")
assert os.system("mount -o remount,rw / 2>/dev/null") != 0, "mount(8) remounted /"
''',
    "privileges": r'''
refused(libc.setuid(0), "setuid(0)")
refused(libc.setresuid(0, 0, 0), "setresuid(0, 0, 0)")
refused(libc.setgid(0), "setgid(0)")
refused(libc.setgroups(1, (ctypes.c_uint * 1)(0)), "setgroups([0])")
full = struct.pack("6I", *[0xFFFFFFFF] * 6)
refused(libc.capset(struct.pack("Ii", 0x20080522, 0), full), "raising capabilities")
refused(libc.unshare(CLONE_NEWUSER), "a nested user namespace")
refused(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "a nested user and mount namespace")
refused(libc.unshare(CLONE_NEWNS), "a new mount namespace")
refused(libc.unshare(CLONE_NEWNET), "a new network namespace")
refused(libc.ptrace(16, 1, None, None), "ptrace-attaching the supervisor")  # PTRACE_ATTACH
name = open("/proc/sys/kernel/hostname").read().strip().encode()
refused(libc.sethostname(name, len(name)), "sethostname (same name: harmless had it worked)")
cannot(lambda: os.mknod("null", stat.S_IFCHR | 0o666, os.makedev(1, 3)), "creating a device node")
assert os.system("unshare --user --map-root-user true 2>/dev/null") != 0, "unshare(1) made a user namespace"
assert os.system("su -c true root </dev/null 2>/dev/null") != 0, "su"
''',
    "secrets": r'''
for path in ["/etc/shadow", "/etc/gshadow", "/proc/1/root/etc/shadow", "/proc/1/environ", "/proc/1/mem",
             *T["secret_files"]]:
    cannot(lambda: open(path, "rb").read(1), f"reading {path}")
cannot(lambda: os.listdir("/proc/1/root/"), "listing the supervisor's root")
cannot(lambda: os.listdir("/proc/1/cwd/"), "listing the supervisor's cwd")
cannot(lambda: os.listdir("/proc/1/fd/"), "listing the supervisor's file descriptors")
for fd in range(8):
    cannot(lambda: os.readlink(f"/proc/1/fd/{fd}"), f"reading the supervisor's fd {fd}")
    cannot(lambda: open(f"/proc/1/fd/{fd}", "rb"), f"opening the supervisor's fd {fd}")
for path in T["outside_dirs"]:
    assert not os.path.exists(path), f"{path} is visible"
assert not os.path.exists("/home") and not os.path.exists("/sys/kernel"), os.listdir("/")
visible_in_root = os.listdir("/root") if os.path.isdir("/root") else []
assert all(T["prefix"].startswith("/root/" + entry) for entry in visible_in_root), visible_in_root
assert "shadow" not in os.listdir("/etc")
''',
    "writes": r'''
for path in T["write_targets"]:
    cannot(lambda: open(path, "w").write("pwned"), f"creating {path}")
    cannot(lambda: os.mkdir(path), f"mkdir {path}")
    cannot(lambda: os.symlink("/", path), f"symlink {path}")
    assert os.system(f"touch {path} 2>/dev/null") != 0, f"touch {path}"
for path in (os.__file__, "/etc/passwd", "/usr/bin/env"):
    cannot(lambda: open(path, "a"), f"appending to {path}")
    cannot(lambda: os.chmod(path, 0o777), f"chmod {path}")
    cannot(lambda: os.utime(path), f"utime {path}")
    cannot(lambda: os.rename(path, path + ".x"), f"renaming {path}")
    cannot(lambda: os.unlink(path), f"unlinking {path}")
open("inside.txt", "w").write("the work dir stays writable")
''',
    "ipc": r'''
assert libc.shmget(T["host_shm_key"], 0, 0) == -1, "the host's shared memory segment is visible"
assert libc.shmget(T["sandbox_shm_key"], 4096, 0o1000 | 0o666) >= 0  # IPC_CREAT: fine, in our own namespace
''',
    "processes": r'''
if os.fork() == 0:  # a grandchild escaping the process group; the test looks for it afterwards
    os.setsid()
    os.execvp("sleep", ["sleep", T["marker"]])
for pid in (os.getppid(), T["test_pid"]):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
forked = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
except OSError:
    pass
assert forked < 40, f"forked {forked} processes past RLIMIT_NPROC"
cannot(lambda: socket.create_connection(("127.0.0.1", T["port"]), timeout=2), "connecting to the host")
''',
}


def make_targets(outside_dirs: list[str], secret_files: list[str], port: int) -> dict:
    """Targets: directories of the host that must be invisible, files that must be unreadable, fresh
    names outside the work dir that must stay uncreated, a port we listen on, our pid, the argument
    of a `sleep` that must not outlive the run, and SysV shared memory keys: one the host holds, one
    the program creates (which must not outlive the run)."""
    tag = f"pdbench-escape-{uuid.uuid4().hex[:12]}"
    parents = ["/", "/tmp", "/etc", "/usr", "/root", "/dev", os.path.dirname(os.__file__), *outside_dirs]
    return {"prefix": sys.base_prefix, "outside_dirs": outside_dirs, "secret_files": secret_files,
            "write_targets": [os.path.join(p, tag) for p in parents], "port": port, "test_pid": os.getpid(),
            "marker": f"{uuid.uuid4().int % 10**6}.25", "host_shm_key": 0x5EED0000 + uuid.uuid4().int % 0xFFFF,
            "sandbox_shm_key": 0x5EEE0000 + uuid.uuid4().int % 0xFFFF}


def shared_memory(key: int, create: bool = False) -> int:
    """The id of the host's SysV shared memory segment with `key` (made world-readable when `create`),
    or -1 when there is none."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.shmget(key, 4096 if create else 0, (0o1000 | 0o666) if create else 0)


def remove_shared_memory(shmid: int) -> None:
    ctypes.CDLL(None).shmctl(shmid, 0, None)  # IPC_RMID


def sleepers(marker: str) -> list[str]:
    """Pids of `sleep <marker>` processes anywhere on the host."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    found.append(pid)
        except OSError:
            continue
    return found


def run_attacks(targets: dict) -> dict:
    from suites.sandbox import run_many

    names = list(ATTACKS)
    sources = [PRELUDE.replace("TARGETS", repr(targets)) + ATTACKS[name] for name in names]
    results = run_many(sources, timeout_s=20)
    return {name: (r.status, r.detail, r.isolation) for name, r in zip(names, results)}


# ------------------------------------------------------------- re-running ourselves as another uid

CLONE_NEWNS, MS_BIND, MS_REC, MS_MOVE, MS_PRIVATE = 0x20000, 4096, 16384, 8192, 1 << 18
CANNOT_RUN_AS_USER = 77  # exit code: this machine does not let us become the ordinary user


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def _topmost_closed_ancestor(path: str) -> str | None:
    """The highest directory above `path` that others may not enter (/root on pyenv machines)."""
    parts = os.path.abspath(path).split("/")[1:-1]
    for i in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def expose(paths: list[str]) -> None:
    """As root, in a mount namespace of our own (the host is untouched): make `paths` reachable by any
    user by covering each closed ancestor with a tmpfs that holds only those paths."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    staged = []
    for path in paths:
        if _topmost_closed_ancestor(path):
            stage = tempfile.mkdtemp(prefix="pdbench-stage-")
            _mount(libc, path, stage, None, MS_BIND | MS_REC)
            staged.append((path, stage))
    for closed in sorted({_topmost_closed_ancestor(path) for path, _ in staged}):
        _mount(libc, "tmpfs", closed, "tmpfs", 0, "mode=0755")
    for path, stage in staged:
        os.makedirs(path, exist_ok=True)
        _mount(libc, stage, path, None, MS_MOVE)
        os.rmdir(stage)


def become(uid: int, repo: str) -> None:
    expose(sorted({sys.base_prefix, sys.prefix, repo}))
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    for path, mode in ((sys.executable, os.X_OK), (repo, os.R_OK | os.X_OK), (os.__file__, os.R_OK)):
        if not os.access(path, mode):
            print(f"uid {uid} cannot use {path}, even with its closed parents covered", file=sys.stderr)
            sys.exit(CANNOT_RUN_AS_USER)


LOCK_WORKDIR = r"""
import os
for name, mode in (("readonly", 0o500), ("closed", 0o000)):
    os.makedirs(f"{name}/inner")
    open(f"{name}/inner/file", "w").write("x")
    os.chmod(f"{name}/inner", mode)
    os.chmod(name, mode)
print(os.path.realpath("."))
"""


def main(argv: list[str]) -> None:
    if argv[0] == "--as-uid":
        uid, repo, targets = int(argv[1]), argv[2], argv[3]
        become(uid, repo)
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": repo, "LANG": "C.UTF-8"}
        if "PDBENCH_SANDBOX" in os.environ:
            env["PDBENCH_SANDBOX"] = os.environ["PDBENCH_SANDBOX"]
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), targets], env)
    results = run_attacks(json.loads(argv[0]))
    from suites.sandbox import run_program

    # directories the program locks (0500, 0000) must not outlive the run: as an ordinary user the
    # cleanup has no CAP_DAC_OVERRIDE to walk through them
    locked = run_program(LOCK_WORKDIR)
    left = [locked.stdout.strip(), os.path.exists(locked.stdout.strip())]
    os.environ["PDBENCH_SANDBOX"] = "plain"  # and one run without namespaces, which must work too
    plain = run_program("import os\nprint(os.geteuid())")
    locked_plain = run_program(LOCK_WORKDIR)
    print(json.dumps({"uid": os.getuid(), "results": results,
                      "plain": [plain.status, plain.detail, plain.stdout, plain.isolation],
                      "left_behind": [left, [locked_plain.stdout.strip(), os.path.exists(locked_plain.stdout.strip())]]}))


if __name__ == "__main__":
    main(sys.argv[1:])
