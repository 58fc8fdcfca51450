"""Reading and writing record files: the one implementation every other module uses.

Owns: atomic writes (a temporary file in the same folder, synced to disk, then a rename, so a
reader never sees half a file and a crash or power cut never destroys the previous version; files
get the permissions the umask gives, not mkstemp's 0600), renaming whole folders into place the
same way (`replace_folder`), one-line messages for file-system errors (`describe_os_error`, `describe_error`,
`PathError`: the path and what to do), reading "a JSON list or JSON lines"
with errors that name the file and the line or item, and reading a JSON-lines file that is being
appended to (a last line cut short by a crash is dropped, not fatal).
Does not own: what the records mean (`harken.data.records`, `harken.data.readers`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

logger = logging.getLogger(__name__)


class PathError(OSError):
    """A file or folder problem the user can fix; the message names the path and what to do."""


_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space (or choose another folder) and run again",
    errno.EDQUOT: "the disk quota is used up: free some space (or choose another folder) and run again",
    errno.EFBIG: "the file is larger than this system allows (see ulimit -f): raise the limit or choose another folder",
    errno.EACCES: "permission denied: make it writable (readable) for this user or choose another folder",
    errno.EPERM: "operation not permitted: make it writable for this user or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder: move the file or choose another path",
    errno.EEXIST: "a file of this name is in the way of a folder: move it or choose another path",
    errno.EISDIR: "this is a folder, a file was expected: give the file's path",
    errno.ENOENT: "not found: check the path",
}


def describe_os_error(e: OSError) -> str:
    """One line for a file-system error: the path, what went wrong and what to do."""
    if isinstance(e, PathError):
        return str(e)
    advice = _ADVICE.get(e.errno) if e.errno is not None else None
    what = (e.strerror or _first_line(e)) + (f" ({advice})" if advice else "")
    if e.filename is None:
        return what
    where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else f"{e.filename}"
    return f"{where}: {what}"


def describe_error(e: BaseException) -> str:
    """One line for an error met while reading or writing a file (`describe_os_error` for OSError)."""
    return describe_os_error(e) if isinstance(e, OSError) else _first_line(e)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder (its entries: a rename in it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _mkstemp(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file beside `path` with the permissions a plain open() would give (umask applied)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def umask_permissions(folder: str | os.PathLike) -> None:
    """Give every file under `folder` the permissions a plain open() would (the umask applied).

    Some writers (safetensors through transformers' `save_pretrained`) create files with mode 0600
    whatever the umask, so another user of a shared machine could not load the model.
    """
    mode = 0o666 & ~_umask()
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)


def replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a finished folder onto `final` (replacing an old one) after syncing its files and itself.

    A crash leaves either the old `final` or the new one, never part of one: the files are on disk
    before the rename, and the rename is on disk (the parent synced) before this returns. Its files
    get the umask's permissions (`umask_permissions`).
    """
    tmp, final = Path(tmp), Path(final)
    umask_permissions(tmp)
    for f in tmp.rglob("*"):  # files and sub-folders
        _fsync_path(f)
    _fsync_path(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(final.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", suffix: str = "") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

    Args:
        path: the final file; its folder is created if needed.
        mode: "w" (text, UTF-8) or "wb".
        suffix: ending of the temporary name (some writers pick the format from it, e.g. ".png").
    """
    with _replacing(Path(path), suffix or ".tmp") as (fd, _):
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_save(path: str | os.PathLike, save: Callable[[str], Any], suffix: str = "") -> None:
    """Let `save(tmp_path)` write a file (a figure, a tensor file), then rename it onto `path`."""
    path = Path(path)
    with _replacing(path, suffix or path.suffix or ".tmp") as (fd, tmp):
        os.close(fd)
        save(tmp)
        _fsync_path(tmp)


@contextlib.contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[tuple[int, str]]:
    """A temporary file (descriptor, path) beside `path`, renamed onto it on a clean exit (the rename
    synced), removed on an error. The caller writes and syncs the file."""
    fd, tmp = _mkstemp(path, suffix)
    try:
        yield fd, tmp
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write one JSON document atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Write rows as JSON lines atomically; rows with a `to_dict()` (e.g. `Example`) are converted."""
    with atomic_write(path) as f:
        for row in rows:
            if hasattr(row, "to_dict"):
                row = row.to_dict()
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, object) for each non-empty line; malformed JSON names file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
            yield lineno, obj


class MalformedLine(Exception):
    """A JSON-lines line that does not parse (yielded, not raised, by `iter_records(strict=False)`)."""

    def __init__(self, msg: str, colno: int):
        super().__init__(msg)
        self.msg, self.colno = msg, colno


def iter_records(path: str | os.PathLike, text: str | None = None, strict: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield (where, object) for a JSON list file or a JSON-lines file.

    `where` is "PATH: item [i]" for a list and "PATH:LINE" for JSON lines, ready for an error
    message. A broken JSON list is always an error (it cannot be read item by item); a malformed
    JSON line is an error when `strict`, else a `MalformedLine` is yielded in its place so that
    the caller can count it and go on.

    Args:
        path: the file (named in messages).
        text: its contents if already read (UTF-8, a byte-order mark is ignored).
        strict: raise on a malformed JSON line.
    """
    if text is None:
        text = Path(path).read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: malformed JSON list ({e.msg} at column {e.colno})") from None
        for i, obj in enumerate(items):
            yield f"{path}: item [{i}]", obj
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == 1 and stripped.startswith("{") and _is_single_object(text):
                raise ValueError(
                    f"{path}: the file holds one JSON object; expected a JSON list of items or one item per line"
                ) from None
            if strict:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
            obj = MalformedLine(e.msg, e.colno)
        yield f"{path}:{lineno}", obj


def _is_single_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def read_appended_jsonl(path: str | os.PathLike, hint: str = "") -> tuple[list[tuple[int, Any]], bool]:
    """The (line number, object) rows of a JSON-lines file that a process appends to.

    A last line without its newline that does not parse was cut short by an interrupted write:
    it is dropped with a warning. A malformed line anywhere else is an error naming the file and
    line (followed by `hint`, e.g. what to do about it).

    Returns:
        (rows, torn): `torn` is True when a cut-short last line was dropped.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            if lineno == len(lines) and not line.endswith("\n"):
                logger.warning("%s:%d: dropping a last line cut short by an interrupted write", path, lineno)
                return rows, True
            raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno}){hint}") from None
    return rows, False


def read_json(path: str | os.PathLike) -> Any:
    """One JSON document (a run's settings, stored results); malformed JSON names the file and line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
