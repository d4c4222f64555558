"""The one way outputs are written: staged beside the target, moved in only once complete.

Bad input must leave nothing half-written, nothing outside the output and no input touched: tools
check their paths with `refuse_overlap` and `safe_name`, and write every output through
`StagedOutput` (`atomic_directory` / `atomic_file`): a staging entry beside the target, moved in only
once complete, the old output kept until then.
"""

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import uuid

from psp_tf.errors import UserError

# ---------------------------------------------------------------------------------------------------
# Output paths: names, overlap with inputs, and staged writes (temporary entry, then rename).
#
# Every entry a write stages beside its target is named `.<target>.tmp-<host>-<pid>-<random>` (an
# old output moved aside while a new one goes in: `.old-`), and its writer holds a flock on it. A later
# run removes such an entry only when it is provably stale: written on this host by a process that is
# no longer alive and not locked (a PID namespace of its own shares no PIDs but shares flock).

_TAG = re.compile(r"^\.(?P<base>.+)\.(?P<kind>tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-z]{8}$")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h


def safe_name(name, what):
    """Returns `name` if it is a plain file name (one path component) that may be written under an output.

    Args:
      name: a name read from data (a dataset image stem, TFRecord metadata, an input file's name).
      what: where the name comes from, for the message (e.g. 'train.json example 3').

    Raises:
      UserError: empty, '.', '..', a path (separator, absolute), a NUL, or a hidden name (leading '.',
        which could pass for a staging entry).
    """
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name):
        raise UserError(f"{what}: {name!r} is not a plain file name (it would be written outside the "
                        f"output directory, or hidden); refusing it")
    return name


def absolute(path):
    """`path` made absolute as the operating system reads it, its last component left as it is (a
    symlink there is for the caller to follow or replace; it may not exist yet).

    os.path.abspath collapses 'link/..' as text, which names another place than the OS does (the
    parent of the link's target): an output checked or written through it could land on an input.
    """
    path = os.path.join(os.getcwd(), str(path)).rstrip("/") or "/"
    parent, base = os.path.split(path)
    if base in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(parent), base)


def is_utf8_name(name):
    """Whether a file name decodes as UTF-8, which TensorFlow's file functions need: os.listdir keeps
    undecodable bytes as lone surrogates, which do not encode."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _real(path):
    # realpath walks the path as given, resolving each link before the '..' after it (no abspath first).
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


def _relation(a, b):
    """How path `a` lies relative to `b`: 'is', 'contains', 'lies inside' or None."""
    if a == b:
        return "is"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    if a.startswith(b.rstrip("/") + "/"):
        return "lies inside"
    return None


def refuse_overlap(outputs, inputs=()):
    """Refuses outputs that are, contain or lie inside an input or another output (symlinks resolved).

    Called before anything is read or written: replacing such an output would delete inputs.

    Args:
      outputs: (flag, path) pairs of what the command writes; None paths are skipped.
      inputs: (flag, path) pairs of what it reads; None paths are skipped.

    Raises:
      UserError: naming both flags and paths.
    """
    outs = [(flag, path, _real(str(path))) for flag, path in outputs if path is not None]
    ins = [(flag, path, _real(str(path))) for flag, path in inputs if path is not None]
    for k, (flag, path, real) in enumerate(outs):
        for other_flag, other, other_real in outs[k + 1:] + ins:
            relation = _relation(real, other_real)
            if relation:
                raise UserError(f"{flag} {path} {relation} {other_flag} {other}: an output must be apart "
                                f"from the inputs and the other outputs (writing it could delete them)")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lock(path):
    """An fd of `path` holding an exclusive flock on it (where the file system has flock).

    Raises:
      BlockingIOError: another process holds the lock.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO planted under our name cannot hang us
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # ENOLCK / EOPNOTSUPP (some network file systems): the PID tag must do
        pass
    return fd


def _stale(entry, match):
    """Whether a tagged entry was left by a dead process of this host and nobody holds its lock."""
    pid = int(match["pid"])
    if match["host"] != _HOST or pid == os.getpid() or _pid_alive(pid):
        return False
    try:
        os.close(_lock(entry))
    except BlockingIOError:
        return False
    except OSError:  # vanished meanwhile: a concurrent run cleaned it
        return False
    return True


def _remove(path):
    """Removes a file, a symlink or a directory tree; a missing path is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass


def sweep(directory, only=None):
    """Cleans up after killed runs in `directory`: restores an old output that a killed `--overwrite`
    moved aside when its target is missing, and removes other stale staging entries.

    Args:
      directory: a local directory (a missing or remote one is left alone).
      only: a target base name to restrict the sweep to (None: every target).

    Returns:
      the names (in `directory`) of the targets restored.
    """
    try:
        names = os.listdir(directory)
    except (OSError, ValueError):
        return []
    stale = {}
    for name in names:
        match = _TAG.match(name)
        if match and (only is None or match["base"] == only) and _stale(os.path.join(directory, name), match):
            stale.setdefault(match["base"], []).append((match["kind"], os.path.join(directory, name)))
    restored = []
    for base, entries in stale.items():
        target = os.path.join(directory, base)
        asides = sorted((p for kind, p in entries if kind == "old"), key=os.path.getmtime, reverse=True)
        if asides and not os.path.lexists(target):
            with contextlib.suppress(FileNotFoundError):
                os.rename(asides.pop(0), target)
                restored.append(base)
        for _, path in entries:
            if os.path.lexists(path):
                _remove(path)
    return restored


def require_directory_place(path, flag):
    """Raises a UserError naming `flag` unless `path` is a directory or can become one: it is not a
    file (or a dangling symlink) and lies under no file."""
    if os.path.lexists(path) and not os.path.isdir(path):
        kind = "a dangling symlink" if not os.path.exists(path) else "a file"
        raise UserError(f"{flag} {path} is {kind}, not a directory")
    ancestor = os.path.dirname(path)
    while ancestor and not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if ancestor and not os.path.isdir(ancestor):
        raise UserError(f"{flag} {path} lies under {ancestor}, which is a file, not a directory")


def dangling_symlink(path):
    """The problem with writing to `path` when it is a symlink to nothing (else None).

    An output is staged beside its target and renamed onto it: a dangling link could neither be followed
    (its target's directory may be missing) nor replaced without deleting something the user made.
    """
    if os.path.islink(path) and not os.path.exists(path):
        return (f"{path} is a dangling symlink (to {os.path.realpath(path)}); remove it or point it at "
                "an existing place")
    return None


def _target(path, flag):
    """The absolute path to write: a symlink in the last component is followed (a dangling one refused)."""
    path = absolute(path)
    problem = dangling_symlink(path)
    if problem:
        raise UserError(f"{flag + ' ' if flag else ''}{problem}")
    return os.path.realpath(path) if os.path.islink(path) else path


def _renameat2(a, b, flag):
    """Linux renameat2(a, b, flag); False where the call or the flag is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), b)


def _exchange(a, b):
    """Swaps the paths a and b atomically (RENAME_EXCHANGE); False where unsupported."""
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _move_in_new(tmp, path):
    """Moves `tmp` onto `path`, which must not exist: FileExistsError if it does (RENAME_NOREPLACE,
    atomic; where unsupported, a check just before the rename)."""
    if _renameat2(tmp, path, _RENAME_NOREPLACE):
        return
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    os.rename(tmp, path)


class StagedOutput:
    """One output (a file or a directory) written under a staging name beside it, moved in by commit().

    The old output stays in place until the new one is complete: commit() swaps them atomically
    (renameat2 RENAME_EXCHANGE) and then deletes the old; where the exchange is unsupported it moves
    the old aside, moves the new in and deletes the old, and a run killed between those renames is
    repaired by the next write of that target (see `sweep`). Files and directories get ordinary
    permissions (0666 / 0777 less the umask). Remote paths (gs://) stage files with tf.io.gfile.

    Args:
      follow_symlink: a symlink at `path` is written through (the user named it); False for the files a
        tool names itself inside its output directory, where a planted link could point at an input.

    Attributes:
      path: the final absolute path.
      tmp: where to write.
    """

    def __init__(self, path, directory=False, overwrite=False, flag=None, recover=True, follow_symlink=True):
        self.remote = "://" in str(path)
        if self.remote:
            self.path = str(path)
        elif follow_symlink:
            self.path = _target(str(path), flag)
        else:  # a file a tool names inside its output: a link there is replaced, never written through
            self.path = absolute(path)
        self.directory, self.overwrite, self.flag, self._lock_fd = directory, overwrite, flag, None
        parent, base = os.path.split(self.path)
        self.tmp = os.path.join(parent, f".{base}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if self.remote:
            self._open_remote(flag, overwrite)
            return
        if recover:
            sweep(parent, only=base)
        if os.path.lexists(self.path) and not overwrite:
            raise UserError(f"{flag + ' ' if flag else ''}{self.path} already exists "
                            "(pass --overwrite to replace it)")
        if not directory and os.path.isdir(self.path):  # a file never replaces a directory tree
            raise UserError(f"cannot write {flag + ' ' if flag else ''}{self.path}: it is a directory")
        try:
            os.makedirs(parent, exist_ok=True)
            if directory:
                os.mkdir(self.tmp, 0o777)
            else:
                os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            self._lock_fd = _lock(self.tmp)
        except OSError as e:
            self.discard()
            raise UserError(f"cannot write output {flag + ' ' if flag else ''}{self.path}: {e.strerror}") from None

    def _open_remote(self, flag, overwrite):
        import tensorflow as tf

        if self.directory:
            raise UserError(f"{flag or 'output'} {self.path}: directories are written to local paths only")
        if tf.io.gfile.exists(self.path) and not overwrite:
            raise UserError(f"{flag + ' ' if flag else ''}{self.path} already exists "
                            "(pass --overwrite to replace it)")

    def commit(self):
        """Moves the staged output onto `path` (replacing an old one); the old is deleted after."""
        if self.remote:
            import tensorflow as tf
            tf.io.gfile.rename(self.tmp, self.path, overwrite=True)
            return
        try:
            if not self.overwrite:
                # Nothing was there when the run began; whatever appeared since (another run's
                # output, a user's folder) is not this run's to replace.
                self._move_in_new()
                return
            replace_dir = os.path.isdir(self.path) or self.directory
            if not os.path.lexists(self.path) or not replace_dir:
                os.replace(self.tmp, self.path)  # a file over a file: atomic by itself
            elif _exchange(self.tmp, self.path):
                _remove(self.tmp)  # now the old output, under the staging name
            else:
                self._replace_via_aside()
        finally:
            self._unlock()

    def _move_in_new(self):
        try:
            _move_in_new(self.tmp, self.path)
        except FileExistsError:
            raise UserError(f"{self.flag + ' ' if self.flag else ''}{self.path} appeared while this run "
                            f"wrote it (another run?): it is kept, and this run's output discarded "
                            f"(pass --overwrite to replace it)") from None

    def _replace_via_aside(self):
        parent, name = os.path.split(self.tmp)
        aside = os.path.join(parent, f".{os.path.basename(self.path)}.old-{name.rsplit('.tmp-', 1)[1]}")
        os.rename(self.path, aside)
        try:
            os.rename(self.tmp, self.path)  # killed just before this: the next run restores `aside`
        except BaseException:
            os.rename(aside, self.path)
            raise
        _remove(aside)

    def discard(self):
        """Removes the staged output (a failed run leaves nothing)."""
        try:
            if self.remote:
                import tensorflow as tf
                if tf.io.gfile.exists(self.tmp):
                    tf.io.gfile.remove(self.tmp)
            elif os.path.lexists(self.tmp):
                _remove(self.tmp)
        finally:
            self._unlock()

    def _unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# What a write fails with when the file system has no room or takes no writes: the user's to fix, so
# one line naming the output (other errors keep their traceback: they may be ours).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def no_room_reason(error):
    """The strerror of a write the file system refused (no space, quota, file too large, read-only)
    that `error` reports, or None: an OSError's errno, or the text TensorFlow's file ops carry."""
    if isinstance(error, OSError):
        return error.strerror if error.errno in _NO_ROOM else None
    text = str(getattr(error, "message", None) or error)
    return next((os.strerror(code) for code in _NO_ROOM if os.strerror(code) in text), None)


@contextlib.contextmanager
def staged(output):
    """Commits a StagedOutput when the block succeeds, discards it when the block raises."""
    try:
        yield output
    except Exception as e:  # noqa: BLE001 (only a refused write becomes a line; the rest re-raised)
        output.discard()
        reason = no_room_reason(e)
        if reason is not None:
            raise UserError(f"cannot write {output.path}: {reason}") from None
        raise
    except BaseException:
        output.discard()
        raise
    try:
        output.commit()
    except UserError:
        output.discard()
        raise
    except OSError as e:
        output.discard()
        raise UserError(f"cannot write {output.path}: {e.strerror or e}") from None


@contextlib.contextmanager
def exclusive_directory(directory, busy):
    """Holds an exclusive lock on `directory` (created if missing) while the block runs; a directory
    this call created is removed again if the block leaves it empty.

    The lock is a flock on the directory itself: no lock file is left behind, and it ends with the
    process, however that ends. Where the file system has no flock, nothing is locked.

    Args:
      busy: who may hold it, for the message ("another psp-predict run: ...").

    Raises:
      UserError: another process holds the lock, or the directory cannot be created.
    """
    created = not os.path.lexists(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {e.filename or directory}: {e.strerror}") from None
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(f"{directory} is in use by {busy}") from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
        yield directory
    finally:
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty


@contextlib.contextmanager
def atomic_directory(path, overwrite=False, flag=None):
    """Yields a staging directory; on success it replaces `path` (see StagedOutput), on failure it is removed.

    Raises:
      UserError: `path` exists and `overwrite` is False, is a dangling symlink, or cannot be written.
    """
    with staged(StagedOutput(path, directory=True, overwrite=overwrite, flag=flag)) as output:
        yield output.tmp


@contextlib.contextmanager
def atomic_file(path, mode="wb", overwrite=True, flag=None, recover=True, follow_symlink=True):
    """Yields a file object for a staging file beside `path`, moved onto `path` on success.

    Args:
      recover: first clean up what killed runs left for this target (one directory listing; pass
        False when writing many files into one directory after one `sweep`).
      follow_symlink: see StagedOutput.
    """
    with staged(StagedOutput(path, overwrite=overwrite, flag=flag, recover=recover,
                             follow_symlink=follow_symlink)) as output:
        if output.remote:
            import tensorflow as tf
            with tf.io.gfile.GFile(output.tmp, mode) as f:
                yield f
        else:
            with open(output.tmp, mode) as f:
                yield f
