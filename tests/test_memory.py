"""psp_tf.memory: the cgroup limit, v1 and v2, over a process's cgroup and its ancestors, on fake trees."""

import pytest

from psp_tf import memory
from psp_tf.errors import UserError
from psp_tf.evaluation.protocol import check_scale_memory

GIB = 1 << 30
V1_UNLIMITED = "9223372036854771712"  # what cgroup v1 writes for "no limit"


def _escape(path):
    return path.replace("\\", "\\134").replace(" ", "\\040")


def _tree(tmp_path, proc_lines, files, mounts=None):
    """A fake /proc/self/cgroup, /sys/fs/cgroup ({path under the root: content}) and mountinfo, which
    lists `mounts` ([(mount point under the root, hierarchy root, fstype, super options)]; by default
    the usual layout: v2 at the root, v1's memory controller at memory/); mounts=False: no mountinfo."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text("".join(f"{line}\n" for line in proc_lines))
    root = tmp_path / "sys"
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content + "\n")
    mountinfo = tmp_path / "mountinfo"
    if mounts is not False:
        mounts = mounts or [("", "/", "cgroup2", "rw"), ("memory", "/", "cgroup", "rw,memory")]
        lines = [f"{20 + i} 1 0:{30 + i} {_escape(hierarchy)} {_escape(str(root / point).rstrip('/'))} rw,nosuid "
                 f"shared:{i} - {fstype} {fstype} {options}" for i, (point, hierarchy, fstype, options) in enumerate(mounts)]
        mountinfo.write_text("25 1 8:1 / / rw - ext4 /dev/vda rw\n" + "".join(line + "\n" for line in lines))
    return str(proc), str(root), str(mountinfo)


def test_v2_limit_of_the_process_cgroup(tmp_path):
    paths = _tree(tmp_path, ["0::/job/step"], {"job/step/memory.max": str(3 * GIB), "job/memory.max": "max"})
    assert memory.cgroup_memory_limit(*paths) == 3 * GIB


def test_an_ancestors_tighter_limit_binds(tmp_path):
    paths = _tree(tmp_path, ["0::/job/step"], {"job/step/memory.max": "max", "job/memory.max": str(2 * GIB)})
    assert memory.cgroup_memory_limit(*paths) == 2 * GIB


def test_v1_memory_controller_and_its_unlimited_value(tmp_path):
    lines = ["12:cpu,cpuacct:/docker/abc", "4:memory:/docker/abc", "0::/"]
    limited = _tree(tmp_path / "a", lines, {"memory/docker/abc/memory.limit_in_bytes": str(5 * GIB),
                                            "memory/memory.limit_in_bytes": V1_UNLIMITED})
    assert memory.cgroup_memory_limit(*limited) == 5 * GIB
    unlimited = _tree(tmp_path / "b", lines, {"memory/docker/abc/memory.limit_in_bytes": V1_UNLIMITED})
    assert memory.cgroup_memory_limit(*unlimited) is None


def test_a_path_not_under_the_mount_falls_back_to_its_root(tmp_path):
    # A container without its own cgroup namespace: /proc names the host's path, the mount is its own.
    paths = _tree(tmp_path, ["0::/kubepods/pod1/ctr"], {"memory.max": str(GIB)})
    assert memory.cgroup_memory_limit(*paths) == GIB


@pytest.mark.parametrize("content", ["max", "", "garbage", "0", "-1"])
def test_no_usable_limit_is_none(tmp_path, content):
    paths = _tree(tmp_path, ["0::/a", "not a cgroup line"], {"a/memory.max": content})
    assert memory.cgroup_memory_limit(*paths) is None


def test_no_proc_file_is_none(tmp_path):
    assert memory.cgroup_memory_limit(str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "mountinfo")) is None


def test_without_mountinfo_the_usual_places_are_read(tmp_path):
    v2 = _tree(tmp_path / "a", ["0::/job"], {"unified/job/memory.max": str(GIB)}, mounts=False)
    assert memory.cgroup_memory_limit(*v2) == GIB
    v1 = _tree(tmp_path / "b", ["4:memory:/job"], {"memory/job/memory.limit_in_bytes": str(2 * GIB)}, mounts=False)
    assert memory.cgroup_memory_limit(*v1) == 2 * GIB


def test_co_mounted_v1_controllers_are_found_through_mountinfo(tmp_path):
    # e.g. a host that mounts cpu and memory together at /sys/fs/cgroup/cpu,memory
    lines = ["3:cpu,memory:/slurm/job7", "2:name=systemd:/"]
    paths = _tree(tmp_path, lines, {"cpu,memory/slurm/job7/memory.limit_in_bytes": str(3 * GIB),
                                    "memory/slurm/job7/memory.limit_in_bytes": str(GIB)},  # no mount here
                  mounts=[("cpu,memory", "/", "cgroup", "rw,cpu,memory"), ("systemd", "/", "cgroup", "rw,name=systemd")])
    assert memory.cgroup_memory_limit(*paths) == 3 * GIB


def test_a_mounted_subtree_is_read_relative_to_its_root(tmp_path):
    # A container given its own cgroup as the mount's root: /proc names the host's path under it.
    paths = _tree(tmp_path, ["0::/kubepods/pod1/ctr"], {"my cgroups/memory.max": str(GIB),
                                                        "my cgroups/kubepods/pod1/ctr/memory.max": str(GIB // 2)},
                  mounts=[("my cgroups", "/kubepods/pod1/ctr", "cgroup2", "rw")])
    assert memory.cgroup_memory_limit(*paths) == GIB  # its own cgroup's file, at the mount point


def test_usable_memory_is_the_smaller_and_says_which(tmp_path, monkeypatch):
    paths = _tree(tmp_path, ["0::/"], {"memory.max": str(2 * GIB)})
    monkeypatch.setattr(memory, "physical_memory", lambda: 8 * GIB)
    assert memory.usable_memory(*paths) == memory.Memory(2 * GIB, "this process's cgroup allows")
    monkeypatch.setattr(memory, "physical_memory", lambda: GIB)
    assert memory.usable_memory(*paths) == memory.Memory(GIB, "this machine has")
    monkeypatch.setattr(memory, "physical_memory", lambda: None)
    assert memory.usable_memory(*paths) == memory.Memory(2 * GIB, "this process's cgroup allows")
    assert memory.usable_memory(str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "mountinfo")) is None


def test_this_process_has_a_bound():
    usable = memory.usable_memory()
    assert usable is not None and 0 < usable.bytes <= memory.physical_memory()


def test_the_scale_check_names_the_cgroup_limit(monkeypatch):
    # base 512, scale 2, 150 classes: a 1025 px side needs 1025^2 x 600 bytes = 601.2 MiB.
    monkeypatch.setattr("psp_tf.evaluation.protocol.usable_memory",
                        lambda: memory.Memory(512 << 20, "this process's cgroup allows"))
    with pytest.raises(UserError, match=r"need 601\.2 MiB for a square image; this process's cgroup allows "
                                        r"512\.0 MiB \(the largest scale that fits is 1\.8"):
        check_scale_memory([2.0], 512, 150)
    check_scale_memory([1.0], 512, 150)  # 513^2 x 600 bytes = 151 MiB fits


def test_a_tile_batch_past_the_memory_is_refused():
    from psp_tf import build_pspnet
    from psp_tf.evaluation.protocol import check_batch_memory, tile_bytes

    # tiny at 137: each tile's input (137² x 3 float32) while its largest layer output exists
    # (conv5_4_pad, 20 x 20 x 320 float32): 225,228 + 512,000 bytes.
    per_tile = tile_bytes(build_pspnet("tiny"))
    assert per_tile == 137 * 137 * 3 * 4 + 20 * 20 * 320 * 4
    check_batch_memory(1000, per_tile, memory=1000 * per_tile)
    with pytest.raises(UserError, match=r"^--batch_size=1001: a device step holds every tile of a batch, at least "
                                        r"703\.8 MiB .*; this machine has 703\.1 MiB: use at most 1000 "):
        check_batch_memory(1001, per_tile, memory=1000 * per_tile)
