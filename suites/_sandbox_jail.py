"""Namespaces, the private root and the privilege drop, for suites/_sandbox_boot.py.

Standard library only; the boot loads this file by path (it runs under `python -I`), the package
never imports it. Every step either succeeds or raises JailError with the failing call and errno;
the boot decides what a failure means (fall back and say so, or refuse to run the program).

The order matters, see the boot's docstring:
  enter_outer_namespaces  (the boot)        new mount, pid, network, IPC namespaces; a user namespace
                                            too when we are not root (we keep our own uid in it)
  build_private_root      (pid 1 of those)  tmpfs root, read-only binds, fresh /proc, pivot_root
  become_unprivileged     (the program)     root only: uid/gid nobody, which clears the capabilities
  enter_inner_userns      (the program)     a user namespace owned by that uid: every mount it sees
                                            came from a more privileged namespace, so the kernel locks
                                            them (no remount, no unmount revealing what is beneath)
  forbid_nested_userns, drop_capabilities   and the program starts with nothing to escalate from
"""

import ctypes
import errno
import os
import re
import shutil
import struct
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x20000, 0x8000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 38, 39, 47
PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_DUMPABLE, PR_CAPBSET_READ = 4, 4, 23
CAPABILITY_VERSION_3, CAP_SETPCAP = 0x20080522, 8
# A remount must repeat these flags of the mount it changes: inside a user namespace they are
# locked, and leaving one out is EPERM.
_KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
# System directories bound read-only (or recreated as the same symlink, on merged-/usr systems).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc is rebuilt entry by entry (files copied, directories bound): only what name resolution, the
# dynamic loader and time zones read. Left out on purpose: shadow, gshadow, ssh, ssl, sudoers,
# subuid, and tool configs that may hold tokens (pip.conf, npmrc, gitconfig, ...).
ETC_ENTRIES = ("passwd", "group", "hosts", "hostname", "host.conf", "nsswitch.conf", "resolv.conf", "gai.conf",
               "networks", "protocols", "services", "localtime", "timezone", "ld.so.cache", "ld.so.conf",
               "ld.so.conf.d", "alternatives", "mime.types", "os-release", "shells", "locale.alias")
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


class JailError(Exception):
    pass


def _call(what: str, ret: int) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise JailError(f"{what}: {errno.errorcode.get(err, err)}")


def _mount(source, target: str, fstype, flags: int, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _call(f"mount {target}", _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)))


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)  # mountinfo writes " " as \040


def _mounts() -> list[tuple[str, int]]:
    """(mount point, the flags a remount of it must repeat) for every mount we can see."""
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [(_unescape(row[4]), sum(_KEEP_FLAGS.get(opt, 0) for opt in row[5].split(","))) for row in rows]


def _bind(source: str, target: str) -> None:
    # recursive: in a user namespace a plain bind of a tree with locked mounts below is refused
    _mount(source, target, None, MS_BIND | MS_REC)


def _seal(new_root: str, writable: set[str]) -> None:
    """Remount every mount below `new_root` read-only, except `writable` ones, all nosuid."""
    for point, kept in _mounts():
        if _inside(point, [new_root]) and point != new_root:
            ro = 0 if point in writable else MS_RDONLY
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_NOSUID | kept | ro)


def write_id_maps(uid: int, gid: int) -> None:
    """Map `uid`/`gid` to themselves in the user namespace we just created (the only mapping an
    unprivileged process may write: its own ids; setgroups must be denied before the gid map)."""
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1\n")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1\n")
    except OSError as exc:
        raise JailError(f"id map: {exc.strerror}") from None


def enter_outer_namespaces() -> None:
    """New mount, pid, network and IPC namespaces (the pid one takes effect for our next child; the
    IPC one keeps SysV shared memory, queues and semaphores the program makes off the host). Root
    needs no user namespace for that and must not have one here: its mounts of root's own files
    (the interpreter may live in /root) need root's access. Others keep their own uid inside one."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | (0 if uid == 0 else CLONE_NEWUSER)
    _call("unshare", _libc.unshare(flags))
    if uid != 0:
        write_id_maps(uid, gid)


def python_paths() -> list[str]:
    """Where this interpreter, its standard library and site-packages live, as spelled and resolved;
    the executable itself when it lies outside them. Never "/", which would undo the private root."""
    paths = set()
    for prefix in (sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix):
        if prefix and os.path.isdir(prefix):
            paths.update((os.path.abspath(prefix), os.path.realpath(prefix)))
    if not _inside(sys.executable, paths):
        paths.update((sys.executable, os.path.realpath(sys.executable)))
    return sorted(paths - {"/"})


def _inside(path: str, parents) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def _copy_etc(new_root: str) -> None:
    os.mkdir(new_root + "/etc", 0o755)
    for name in ETC_ENTRIES:
        source, target = "/etc/" + name, new_root + "/etc/" + name
        try:
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
            elif os.path.isdir(source):  # a bind is cheaper than copying hundreds of symlinks
                os.mkdir(target, 0o755)
                _bind(source, target)
            elif os.path.isfile(source):
                shutil.copyfile(source, target)
                os.chmod(target, 0o644)
        except OSError:
            continue  # unreadable or vanished: the program does without it


def _populate_dev(new_root: str) -> None:
    dev = new_root + "/dev"
    os.mkdir(dev, 0o755)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(f"{dev}/{name}", "w").close()
            _bind("/dev/" + name, f"{dev}/{name}")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def build_private_root(new_root: str, workdir: str) -> list[str]:
    """Make `new_root` (an empty directory) the root of our mount namespace, holding only: the system
    directories and the interpreter's prefixes read-only, a curated /etc, /dev/{null,zero,full,
    random,urandom}, a /proc of our pid namespace, and `workdir` read-write at its own path. The host's
    root is detached. Returns notes on what could not be provided (an empty list when all was)."""
    notes = []
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount may propagate to the host
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    bound = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), new_root + path)
        elif os.path.isdir(path):
            os.mkdir(new_root + path, 0o755)
            _bind(path, new_root + path)
            bound.append(path)
    _copy_etc(new_root)
    _populate_dev(new_root)
    for path in python_paths():
        if not _inside(path, bound):
            if os.path.isdir(path):
                os.makedirs(new_root + path, 0o755, exist_ok=True)
            else:  # a lone executable: bound onto an empty file
                os.makedirs(os.path.dirname(new_root + path), 0o755, exist_ok=True)
                open(new_root + path, "w").close()
            _bind(path, new_root + path)
            bound.append(path)
    os.makedirs(new_root + "/tmp", 0o755, exist_ok=True)
    os.makedirs(new_root + workdir, 0o755, exist_ok=True)
    _bind(workdir, new_root + workdir)
    _seal(new_root, writable={new_root + workdir})
    os.mkdir(new_root + "/proc", 0o555)
    try:  # a proc of our pid namespace; mounted while the host's is still visible (the kernel's rule)
        _mount("proc", new_root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except JailError as exc:
        notes.append(f"no /proc ({exc})")
    os.mkdir(new_root + "/.old-root", 0o700)
    _call("pivot_root", _libc.pivot_root(new_root.encode(), (new_root + "/.old-root").encode()))
    os.chdir("/")
    _call("umount old root", _libc.umount2(b"/.old-root", MNT_DETACH))
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(workdir)
    return notes


def can_run_interpreter_as(uid: int, gid: int) -> bool:
    """As root: may `uid`/`gid` read this interpreter's standard library and execute it? (Not when it
    is installed under a private home such as /root/.pyenv.) Checked with effective ids only, which
    we take back afterwards."""
    os.setegid(gid)
    os.seteuid(uid)
    try:
        stdlib = os.path.dirname(os.__file__)
        return (os.access(stdlib, os.R_OK | os.X_OK, effective_ids=True)
                and os.access(os.__file__, os.R_OK, effective_ids=True)
                and os.access(sys.executable, os.X_OK, effective_ids=True))
    finally:
        os.seteuid(0)
        os.setegid(0)


def become_unprivileged(uid: int, gid: int) -> None:
    """As root: empty the bounding set while we still may, then take `uid`/`gid` for real, effective
    and saved ids, which clears the permitted and effective capabilities."""
    _clear_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process's /proc files belong to root: the supervisor is one, so the program
    (same uid when we are not root) cannot even list its fds. The program child must be dumpable
    to write its own uid_map (a uid change or the supervisor's setting makes it non-dumpable)."""
    _call("PR_SET_DUMPABLE", _libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0))


def enter_inner_userns() -> None:
    """A user namespace owned by our (non-zero) uid, mapping it to itself, with a mount namespace:
    the copy of our mounts is locked, since it comes from a more privileged namespace."""
    uid, gid = os.geteuid(), os.getegid()
    set_dumpable(True)
    _call("unshare (inner user namespace)", _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
    write_id_maps(uid, gid)


def forbid_nested_userns() -> None:
    """No user namespaces below ours: the program cannot win a fresh set of capabilities that way
    (the limit is per user namespace and we hold CAP_SYS_RESOURCE over ours until the drop)."""
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
    except OSError as exc:
        raise JailError(f"max_user_namespaces: {exc.strerror}") from None


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # dropping a capability the kernel does not know is EINVAL, which we ignore


def _clear_bounding_set() -> None:
    for cap in range(_last_cap() + 1):
        if _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1:
            continue  # gone already (dropping it again would need CAP_SETPCAP), or unknown to the kernel
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise JailError(f"PR_CAPBSET_DROP {cap}: {errno.errorcode.get(ctypes.get_errno())}")


def _capget() -> tuple[int, int, int]:
    header = struct.pack("Ii", CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)
    _call("capget", _libc.capget(header, data))
    e0, p0, i0, e1, p1, i1 = struct.unpack("6I", data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def drop_capabilities() -> str:
    """Empty every capability set (bounding, ambient, inheritable, permitted, effective) and set
    no_new_privs, then check that it took: a program must never start holding one. Returns the
    layer's name. Only an ordinary user outside namespaces (plain mode) cannot empty its bounding
    set, lacking CAP_SETPCAP; no_new_privs then keeps execve from granting anything in it."""
    _call("PR_SET_NO_NEW_PRIVS", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    may_clear_bounding = bool(_capget()[0] >> CAP_SETPCAP & 1)
    if may_clear_bounding:
        _clear_bounding_set()
    _call("PR_CAP_AMBIENT_CLEAR_ALL", _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))
    _call("capset", _libc.capset(struct.pack("Ii", CAPABILITY_VERSION_3, 0), bytes(24)))
    if any(_capget()) or _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise JailError("capabilities still held after the drop")
    bounding = [cap for cap in range(_last_cap() + 1) if _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1]
    if bounding and may_clear_bounding:
        raise JailError(f"capability {bounding[0]} still in the bounding set")
    return "no-capabilities" if not bounding else "no-capabilities (bounding set kept: no CAP_SETPCAP)"
