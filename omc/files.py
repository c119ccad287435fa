"""Files: the one way omc writes an output, the check that no output destroys an input, and hashes.

Writing. Every output goes through `PendingFile` (or `replacing`, its one-block form): the bytes
go to a temporary file beside the target, which is renamed over the target only once complete;
on failure the temporary file is removed and the target is left as it was. Two temporary names:
- hidden and unique, `.<name>.<random>.tmp`, for files written in one go;
- visible and fixed, `<stem>.partial<suffix>` (`partial_path`), for outputs written frame by
  frame (results, overlay video): a run killed outright (SIGKILL) leaves it where a user finds it.
Before anything is written, an existing target that is not a regular file (a folder, a device,
a FIFO, a socket) is refused: the rename would replace the device node itself, and writing into
it would block or go elsewhere.

Declaring a run's files. A command lists what it reads and what it will write in one `RunFiles`
before any work starts; each output is refused when it is an input of the run or the same file as
another output (temporary names included). Files are compared by device and inode when they
exist (so hard links and symbolic links are caught) and by resolved path otherwise.

Hashing: `file_sha256`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from omc.errors import BadInput

# Bytes read at a time when hashing a file (checkpoints are hundreds of MB).
_HASH_CHUNK_BYTES = 1 << 20
# Marks the visible temporary name of a file written frame by frame: `results.partial.txt`.
PARTIAL_MARK = ".partial"
# Permission bits of a new file before the umask, as a plain open(path, "w") creates it.
_NEW_FILE_MODE = 0o666
_FILE_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def partial_path(path: Path) -> Path:
    """The visible temporary name of an output written frame by frame: `a/res.txt` -> `a/res.partial.txt`.

    The suffix stays last because some writers (OpenCV's video writer) pick the format from it.
    """
    return path.with_name(f"{path.stem}{PARTIAL_MARK}{path.suffix}")


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "special file")


def check_output_path(path: Path, what: str = "output") -> None:
    """BadInput when `path` exists (after symbolic links) and is not a regular file, or when the
    nearest existing folder above it is a file (so the folder cannot be created). Creates nothing.

    what: how the user named the output in messages, e.g. "--out".
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there (yet), or a file where a folder should be
        mode = None
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be written ({exc.strerror or exc})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise BadInput(f"{what} {path} is a {_kind(mode)}, not a regular file; give a file name to write")
    if mode is None:
        ancestor = path.parent
        while not ancestor.exists() and ancestor.parent != ancestor:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise BadInput(f"{what} {path} cannot be written: its folder cannot be created, {ancestor} is a file")


def _make_folder(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be written: cannot create folder {path.parent} ({exc.strerror or exc})") from None


class PendingFile:
    """One output being written under a temporary name; `commit()` renames it over the target.

    target: the file to produce. visible: use the fixed `partial_path(target)` (outputs written
    frame by frame), else a fresh hidden `.<name>.<random>.tmp`. what: names the output in
    messages. On creation the target is checked (`check_output_path`), its folder created and an
    empty temporary file made with the permissions a plain write would give (the process umask).
    BadInput when any of that fails. `discard()` removes the temporary file; both are idempotent.
    """

    def __init__(self, target: str | Path, *, visible: bool = False, what: str = "output") -> None:
        self.target = Path(target)
        self.what = what
        check_output_path(self.target, what)
        _make_folder(self.target, what)
        try:
            self.temporary = self._visible_temporary() if visible else self._hidden_temporary()
        except OSError as exc:
            raise BadInput(f"{what} {self.target} cannot be written ({exc.strerror or exc})") from None
        self.done = False

    def _visible_temporary(self) -> Path:
        temporary = partial_path(self.target)
        try:
            mode = os.lstat(temporary).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            # A link or special file under our temporary name: writing through it would land elsewhere.
            raise BadInput(f"{temporary} (the temporary file of {self.what} {self.target}) exists and is not a "
                           "regular file; remove it or choose another name")  # fmt: skip
        # A regular file there is what a killed earlier run left: this run starts it afresh.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(temporary, flags, _NEW_FILE_MODE))
        return temporary

    def _hidden_temporary(self) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        os.close(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, _NEW_FILE_MODE & ~umask)  # not mkstemp's owner-only 0600
        return Path(name)

    def commit(self) -> Path:
        """Rename the temporary file over the target; returns the target. The temporary file is
        removed when the rename fails."""
        if not self.done:
            try:
                os.replace(self.temporary, self.target)
            except BaseException:
                self.discard()
                raise
            self.done = True
        return self.target

    def discard(self) -> None:
        """Remove the temporary file; the target is left as it was."""
        if not self.done:
            self.temporary.unlink(missing_ok=True)
            self.done = True


@contextlib.contextmanager
def replacing(path: str | Path, *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, it replaces `path`.

    On any error (also a KeyboardInterrupt) the temporary file is removed and `path` is left as
    it was. See `PendingFile` for the checks made before the block runs.
    """
    pending = PendingFile(path, what=what)
    try:
        yield pending.temporary
    except BaseException:
        pending.discard()
        raise
    pending.commit()


# --- a run's inputs and outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class _Declared:
    what: str  # how the user named it, e.g. "--out" or "SOURCE"
    path: Path  # as given
    resolved: Path
    identity: tuple[int, int] | None  # (st_dev, st_ino) when the file exists

    @property
    def label(self) -> str:
        return f"{self.what} {self.path}"

    def same_file(self, other: "_Declared") -> bool:
        if self.identity is not None and other.identity is not None:
            return self.identity == other.identity
        return self.resolved == other.resolved


def _declared(path: Path, what: str) -> _Declared:
    try:
        info = os.stat(path)
        identity: tuple[int, int] | None = (info.st_dev, info.st_ino)
    except OSError:
        identity = None
    return _Declared(what, path, Path(os.path.realpath(path)), identity)


class RunFiles:
    """What one command reads and writes, declared before any work starts.

    `read()` each input, then `write()` each output: an output is refused (BadInput, one line)
    when it exists and is not a regular file, when it is one of the inputs, or when it is the same
    file as another output; an output written frame by frame (`partial=True`) has its visible
    temporary name checked the same way.
    """

    def __init__(self) -> None:
        self._inputs: list[_Declared] = []
        self._outputs: list[_Declared] = []

    def read(self, path: str | Path, what: str) -> None:
        """Declare an input: a file, or a folder (then every regular file directly inside it).

        A path that does not exist declares nothing (the reader reports it).
        """
        path = Path(path)
        if path.is_dir():
            self._inputs.extend(_declared(child, what) for child in sorted(path.iterdir()) if child.is_file())
        elif path.exists():
            self._inputs.append(_declared(path, what))

    def read_all(self, paths: Iterable[str | Path], what: str) -> None:
        """`read` each of `paths`."""
        for path in paths:
            self.read(path, what)

    def write(self, path: str | Path, what: str, *, partial: bool = False) -> Path:
        """Declare an output and check it (class docstring); returns `path` as a Path."""
        path = Path(path)
        check_output_path(path, what)
        names = [(path, what)]
        if partial:
            names.append((partial_path(path), f"the temporary file of {what}"))
        for name, label in names:
            output = _declared(name, label)
            for earlier in self._inputs:
                if output.same_file(earlier):
                    raise BadInput(f"{output.label} is an input of this run ({earlier.label}); writing it would "
                                   "destroy it: choose another output name")  # fmt: skip
            for earlier in self._outputs:
                if output.same_file(earlier):
                    raise BadInput(f"{output.label} and {earlier.label} are the same file; give each output its own name")
            self._outputs.append(output)
        return path
