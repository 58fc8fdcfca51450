"""Reading and writing record files: the one implementation every other module uses.

Owns: atomic writes (a temporary file in the same folder, then a rename, so a reader never sees
half a file and a crash never destroys the previous version), reading "a JSON list or JSON lines"
with errors that name the file and the line or item, and reading a JSON-lines file that is being
appended to (a last line cut short by a crash is dropped, not fatal).
Does not own: what the records mean (`harken.data.records`, `harken.data.readers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", suffix: str = "") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

    Args:
        path: the final file; its folder is created if needed.
        mode: "w" (text, UTF-8) or "wb".
        suffix: ending of the temporary name (some writers pick the format from it, e.g. ".png").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(path: str | os.PathLike, save: Callable[[str], Any], suffix: str = "") -> None:
    """Let `save(tmp_path)` write a file (a figure, a tensor file), then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
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
