"""Files: opening local paths and URLs (fsspec), globbing, signatures, and atomic writes.

Every verb reads and writes through here, so the rules hold everywhere: a URL needs fsspec (the
`cloud` extra); an output is written under a temporary name beside its target and renamed into place
only when complete, so a failure (disk full, Ctrl-C, a bad record) leaves no half-written file and no
temporary one; an output is never one of the run's inputs, a folder, or a file the user made read-only.
"""
from __future__ import annotations

import errno
import glob
import os
import tempfile

from .. import format as fmt
from ..errors import Yt8mError


def cache_dir() -> str:
    """Where the engine keeps what it can make again (score's label cache, built ops): YT8M_ENGINE_CACHE, else
    $XDG_CACHE_HOME/yt8m-engine, else ~/.cache/yt8m-engine."""
    return os.environ.get("YT8M_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "yt8m-engine")


def is_url(path: str) -> bool:
    """gs://, s3://, memory://, file:// ...: read through fsspec (pip install 'yt8m-engine[cloud]')."""
    return "://" in path


def fsspec_module():
    try:
        import fsspec
    except ImportError:
        raise Yt8mError("reading URLs (gs://, s3://, ...) needs fsspec: pip install 'yt8m-engine[cloud]'") from None
    return fsspec


def resolve_files(pattern: str) -> list[str]:
    """Files matching a glob (or several, comma-separated), sorted; an error when nothing matches.

    Local paths and URLs (gs://bucket/3/frame/test*.tfrecord, through fsspec) are both accepted.
    """
    files: list[str] = []
    for part in [p.strip() for p in pattern.split(",") if p.strip()]:
        if is_url(part):
            fs, root = fsspec_module().core.url_to_fs(part)
            try:
                found = fs.glob(root) if glob.has_magic(root) else ([root] if fs.isfile(root) else [])
            except OSError as e:
                raise Yt8mError(f"{part}: cannot list ({e})") from None
            files.extend(fs.unstrip_protocol(f) for f in found if fs.isfile(f))
            continue
        part = fmt.expand_path(part)
        if glob.has_magic(part):
            files.extend(f for f in glob.glob(part) if os.path.isfile(f))
        elif os.path.isfile(part):
            files.append(part)
        elif os.path.isdir(part):
            raise Yt8mError(f"{part}: is a directory; give a file pattern such as '{os.path.join(part, '*.tfrecord')}'")
    files = sorted(set(files))
    if not files:
        raise Yt8mError(f"no files match {pattern!r}")
    return files


def file_signature(path: str) -> list:
    """(path, size, modification stamp) of a local file or URL: changes when the file does."""
    if is_url(path):
        fs, p = fsspec_module().core.url_to_fs(path)
        info = fs.info(p)
        stamp = next((str(info[k]) for k in ("mtime", "LastModified", "updated", "etag", "ETag", "created")
                      if k in info), "")
        return [path, int(info.get("size") or 0), stamp]
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def open_input(path: str):
    """(binary file object, size) of a local file or a URL (fsspec)."""
    if is_url(path):
        fs, p = fsspec_module().core.url_to_fs(path)
        return fs.open(p, "rb"), int(fs.size(p))
    return open(path, "rb"), os.path.getsize(path)


def read_full(f, view) -> int:
    """readinto until the view is full or the file ends; the number of bytes read."""
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _why(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if e.errno == errno.EFBIG:
        return "file too large for this file system or limit"
    return e.strerror or str(e)


def check_output(path: str, inputs=()) -> None:
    """Refuse, before any work, an output that cannot or must not be written: a folder, an existing
    file this user may not write (read-only on purpose), or one of the run's input files."""
    if is_url(path):
        return
    if os.path.isdir(path):
        raise Yt8mError(f"{path}: is a directory; give a file name for the output")
    # read-only: no write permission bit (as root too, whom os.access lets write anything), or not writable
    if os.path.exists(path) and (not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK)):
        raise Yt8mError(f"{path}: exists and is read-only; remove it or choose another output")
    real = os.path.realpath(path)
    for f in inputs:
        if not is_url(f) and os.path.realpath(f) == real:
            raise Yt8mError(f"{path}: is also an input file of this run; choose another output")


def check_output_dir(path: str) -> None:
    """Refuse, before any work, an output folder that is an existing file."""
    if not is_url(path) and os.path.exists(path) and not os.path.isdir(path):
        raise Yt8mError(f"{path}: is a file, not a folder; give a folder for the reports")


_UMASK = os.umask(0)  # read once, at import (os.umask only reads by also setting)
os.umask(_UMASK)


class AtomicWriter:
    """Write a file under a temporary name in the target folder; rename into place on success only.

    The file gets the permissions a plain open() would give it (mkstemp's are owner-only). A failed
    write, flush or rename (disk full, a file-size limit) removes the temporary file and raises one
    Yt8mError naming the target; any other exception in the block also removes it and propagates.
    """

    def __init__(self, path: str, mode: str = "wb"):
        self.path = path
        self.mode = mode
        self._f = None
        self._tmp = None

    def __enter__(self):
        check_output(self.path)
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
            os.chmod(self._tmp, 0o666 & ~_UMASK)
        except OSError as e:
            raise Yt8mError(f"{self.path}: cannot write ({_why(e)})") from None
        self._f = os.fdopen(fd, self.mode, **({} if "b" in self.mode else {"encoding": "utf-8", "newline": ""}))
        return self._f

    @property
    def temp_path(self) -> str:
        """Where the file is being written (inside the block), e.g. to check it before it takes its name."""
        return self._tmp

    def _discard(self) -> None:
        try:
            os.unlink(self._tmp)
        except OSError:
            pass

    def __exit__(self, exc_type, exc, tb):
        try:
            self._f.close()  # flushes: a full disk may only show here
            if exc_type is None:
                os.replace(self._tmp, self.path)
                return False
        except OSError as e:
            self._discard()
            raise Yt8mError(f"{self.path}: cannot write ({_why(e)}); nothing was written") from None
        self._discard()
        if isinstance(exc, OSError):
            raise Yt8mError(f"{self.path}: cannot write ({_why(exc)}); nothing was written") from None
        return False
