"""How much memory this process may use: the machine's RAM, or less where a cgroup limits it.

Containers (Docker, Kubernetes, Slurm's cgroup plugin) cap a job's memory below the machine's. Past
that cap the kernel kills the process outright, with no Python error to report, so an up-front bound
(`psp_tf.evaluation.protocol.check_scale_memory`) must use the cap. Both cgroup versions are read:
v2's `memory.max` and v1's `memory.limit_in_bytes`, for the process's own cgroup and each ancestor
(a parent's limit binds its children too). The process's cgroup path may not exist under
/sys/fs/cgroup (a container without its own cgroup namespace sees the host's path but has its own
cgroup mounted at the root), so the walk up always ends at the mount's root.
"""

import dataclasses
import os
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


def cgroup_memory_limit(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup") -> Optional[int]:
    """The tightest memory limit over this process's cgroup and its ancestors, in bytes (None: none)."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy, mounted at the root (or at root/unified)
            places = [(root, "memory.max"), (os.path.join(root, "unified"), "memory.max")]
        elif "memory" in controllers.split(","):
            places = [(os.path.join(root, "memory"), "memory.limit_in_bytes")]
        else:
            continue
        for base, name in places:
            relative = path.strip("/")
            while True:
                limit = _read_limit(os.path.join(base, relative, name))
                if limit:
                    limits.append(limit)
                if not relative:
                    break
                relative = os.path.dirname(relative)
    return min(limits) if limits else None


def usable_memory(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup") -> Optional[Memory]:
    """The smaller of the machine's RAM and the cgroup limit (None where neither is known)."""
    physical, limit = physical_memory(), cgroup_memory_limit(proc_cgroup, root)
    if limit and (not physical or limit < physical):
        return Memory(limit, "this process's cgroup allows")
    return Memory(physical, "this machine has") if physical else None
