"""How much memory this process may use: the machine's RAM, or less where a cgroup limits it.

Containers (Docker, Kubernetes, Slurm's cgroup plugin) cap a job's memory below the machine's. Past
that cap the kernel kills the process outright, with no Python error to report, so an up-front bound
(`psp_tf.evaluation.protocol.check_scale_memory`) must use the cap. Both cgroup versions are read:
v2's `memory.max` and v1's `memory.limit_in_bytes`, for the process's own cgroup and each ancestor
(a parent's limit binds its children too). Where each hierarchy is mounted is read from
/proc/self/mountinfo (v1 may co-mount controllers, e.g. at /sys/fs/cgroup/cpu,memory, and a mount
may show a subtree of the hierarchy, its root in mountinfo's fourth field); without that file the
usual places under /sys/fs/cgroup are tried. The process's cgroup path may not exist under its mount
(a container without its own cgroup namespace sees the host's path but has its own cgroup mounted at
the root), so the walk up always ends at the mount's root.
"""

import dataclasses
import os
import re
from typing import Optional

# cgroup v1 writes "no limit" as the largest page-aligned int64 (9223372036854771712); nothing real
# comes near 2^60 bytes.
_NO_LIMIT = 1 << 60


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes this process may use, and what sets that bound (for messages)."""

    bytes: int
    source: str  # "this machine has" or "this process's cgroup allows"


def physical_memory():
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _read_limit(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _NO_LIMIT else None


@dataclasses.dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup hierarchy: v2 (`controllers` None) or v1 with its controllers (the
    mount's super options, e.g. {"rw", "cpu", "memory"})."""

    point: str  # where it is mounted
    root: str  # the hierarchy's path that appears at `point` ("/" unless a subtree is mounted)
    controllers: Optional[frozenset] = None


def _unescape(field):
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_mounts(mountinfo="/proc/self/mountinfo", root="/sys/fs/cgroup"):
    """The cgroup hierarchies mounted here; without a readable `mountinfo`, the usual places under
    `root` (v2 at the root or at root/unified, v1's memory controller at root/memory)."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return [CgroupMount(root, "/"), CgroupMount(os.path.join(root, "unified"), "/"),
                CgroupMount(os.path.join(root, "memory"), "/", frozenset({"memory"}))]
    mounts = []
    for line in lines:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        after = fields.index("-", 6)  # optional fields (shared:N, master:N) end at a lone "-"
        if len(fields) < after + 4:
            continue
        kind, options = fields[after + 1], fields[after + 3].split(",")
        point, mounted_root = _unescape(fields[4]), _unescape(fields[3])
        if kind == "cgroup2":
            mounts.append(CgroupMount(point, mounted_root))
        elif kind == "cgroup":
            mounts.append(CgroupMount(point, mounted_root, frozenset(options)))
    return mounts


def _relative(path, mounted_root):
    """The cgroup `path` relative to a mount showing `mounted_root` (the whole path where it lies
    outside that subtree: the walk up then reaches the mount's root)."""
    path, mounted_root = "/" + path.strip("/"), "/" + mounted_root.strip("/")
    if mounted_root != "/" and (path == mounted_root or path.startswith(mounted_root + "/")):
        path = path[len(mounted_root):]
    return path.strip("/")


def cgroup_memory_limit(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup",
                        mountinfo="/proc/self/mountinfo") -> Optional[int]:
    """The tightest memory limit over this process's cgroup and its ancestors, in bytes (None: none)."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mounts = cgroup_mounts(mountinfo, root)
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            places = [(m, "memory.max") for m in mounts if m.controllers is None]
        elif "memory" in controllers.split(","):
            places = [(m, "memory.limit_in_bytes") for m in mounts if m.controllers and "memory" in m.controllers]
        else:
            continue
        for mount, name in places:
            relative = _relative(path, mount.root)
            while True:
                limit = _read_limit(os.path.join(mount.point, relative, name))
                if limit:
                    limits.append(limit)
                if not relative:
                    break
                relative = os.path.dirname(relative)
    return min(limits) if limits else None


def usable_memory(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup",
                  mountinfo="/proc/self/mountinfo") -> Optional[Memory]:
    """The smaller of the machine's RAM and the cgroup limit (None where neither is known)."""
    physical, limit = physical_memory(), cgroup_memory_limit(proc_cgroup, root, mountinfo)
    if limit and (not physical or limit < physical):
        return Memory(limit, "this process's cgroup allows")
    return Memory(physical, "this machine has") if physical else None
