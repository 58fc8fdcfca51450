"""Datasets stored as tables: parquet and Arrow files, `save_to_disk` folders, clips embedded in rows.

Owns: recognising a table dataset (`is_table`) and its shards (`table_shards`): a `.parquet` or
`.arrow` / `.feather` file, a folder written by `datasets`' `save_to_disk`, a folder of shards of
one split, or a glob of shards (`'data/test-*.parquet'`); reading its rows as plain dicts
(`iter_table_rows`, `table_items`), each audio column turned into text (`audio_columns`: Hugging
Face's `{"bytes", "path"}` struct, or a binary column): a reference to the clip embedded in that
row (`embedded_ref`, `is_embedded`) when the row holds bytes, else the row's path; fetching an
embedded clip's bytes (`embedded_bytes`: a memory-mapped Arrow file, or a parquet row group kept
in a small cache); the checksum of a table dataset (`table_sha256`).

Does not own: mapping a row to an `Example` and the item checks (`harken.data.readers`), decoding
the bytes (`harken.data.audio`, which calls `embedded_bytes`), JSON files (`harken.io`). No
`datasets` dependency: pyarrow reads the files, and is imported only when a table is read.

A parquet file is read one row group at a time: to iterate the rows, only the non-audio columns
and each audio column's `path` are read, plus its `bytes` where the file's statistics do not say
that no row lacks them. An embedded clip is fetched by reading its row group's audio column (the
last few are cached), so sequential access (evaluation, validation) reads each group once;
random access (training) reads a group per clip, which a memory-mapped Arrow file does not.
"""

from __future__ import annotations

import bisect
import datetime
import decimal
import glob
import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote

from harken.io import read_json

PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow", ".feather")
TABLE_SUFFIXES = PARQUET_SUFFIXES + ARROW_SUFFIXES
EMBEDDED_PREFIX = "embedded:"  # embedded:/abs/shard.parquet?column=audio&row=17

_ROWS_PER_BATCH = 1024  # Arrow rows converted to Python at a time while iterating
_CACHED_GROUPS = 4  # parquet row groups (of one audio column) kept for embedded_bytes
_CACHED_FILES = 16  # open parquet files / memory-mapped Arrow tables kept
_HF_SHARD = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}$")  # datasets' shard names: test-00000-of-00002


# ---------------------------------------------------------------------------------------------
# What a table dataset is
# ---------------------------------------------------------------------------------------------


def _is_glob(p: str) -> bool:
    return any(ch in p for ch in "*?[") and not os.path.exists(p)


def is_table(path: str | os.PathLike) -> bool:
    """Whether `path` names a table dataset rather than a JSON file: a folder, a file with a table
    suffix, or a glob that matches something or ends in a table suffix."""
    p = os.fspath(path)
    if Path(p).suffix.lower() in TABLE_SUFFIXES:
        return True
    return bool(glob.glob(p)) if _is_glob(p) else os.path.isdir(p)


def _folder_shards(folder: Path) -> list[Path]:
    if (folder / "dataset_dict.json").is_file():
        splits = read_json(folder / "dataset_dict.json").get("splits")
        splits = splits or sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise ValueError(f"{folder} holds the splits {', '.join(map(str, splits))} of a DatasetDict: pass one of them, "
                         f"e.g. {folder / str(splits[0])}")
    if (folder / "state.json").is_file():  # datasets' save_to_disk
        files = [folder / str(f["filename"]) for f in read_json(folder / "state.json").get("_data_files") or []]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{folder}/state.json lists {f.name}, which is not there")
        if not files:
            raise ValueError(f"{folder}/state.json lists no data files")
        return files
    shards = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    if not shards:
        raise ValueError(f"{folder}: no dataset here (expected a save_to_disk folder with state.json, "
                         f"or {' / '.join(TABLE_SUFFIXES)} files)")
    splits = sorted({m.group("split") for m in (_HF_SHARD.match(p.stem) for p in shards) if m})
    if len(splits) > 1:
        raise ValueError(f"{folder} holds the shards of several splits ({', '.join(splits)}): pass one split's files, "
                         f"e.g. '{folder / (splits[0] + '-*' + shards[0].suffix)}'")
    return shards


def table_shards(path: str | os.PathLike) -> list[Path]:
    """The files of a table dataset, in row order.

    Raises:
        FileNotFoundError: nothing at `path` (or a file that state.json lists is missing).
        ValueError: a folder without a dataset, a DatasetDict, shards of several splits, a glob
            matching something other than table files.
    """
    p = os.fspath(path)
    if _is_glob(p):
        matches = sorted(Path(m) for m in glob.glob(p))
        others = [m for m in matches if m.suffix.lower() not in TABLE_SUFFIXES]
        if others:
            raise ValueError(f"{p} matches {others[0]}, which is not a {' / '.join(TABLE_SUFFIXES)} file")
        if not matches:
            raise FileNotFoundError(f"dataset file not found: {p} matches nothing")
        return matches
    if os.path.isdir(p):
        return _folder_shards(Path(p))
    if not os.path.isfile(p):
        raise FileNotFoundError(f"dataset file not found: {p}")
    return [Path(p)]


def table_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the shards' bytes, one after the other (one shard: the file's own sha256)."""
    h = hashlib.sha256()
    for shard in table_shards(path):
        with open(shard, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Opening shards
# ---------------------------------------------------------------------------------------------

_FILES: OrderedDict[tuple, Any] = OrderedDict()  # (path, mtime, size) -> ParquetFile or (Table,)
_GROUPS: OrderedDict[tuple, Any] = OrderedDict()  # (path, mtime, size, column, group) -> pa.Array


def _remember(cache: OrderedDict, key: tuple, value: Any, size: int) -> Any:
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _stamp(shard: Path) -> tuple:
    st = shard.stat()
    return str(shard), st.st_mtime_ns, st.st_size


def _is_parquet(shard: Path) -> bool:
    return shard.suffix.lower() in PARQUET_SUFFIXES


def _open_shard(shard: Path) -> Any:
    """A ParquetFile, or (Table,) for an Arrow IPC file or stream (memory-mapped, zero-copy)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = _stamp(shard)
    if key in _FILES:
        _FILES.move_to_end(key)
        return _FILES[key]
    try:
        if _is_parquet(shard):
            opened: Any = pq.ParquetFile(shard)
        else:
            try:
                opened = (pa.ipc.open_file(pa.memory_map(str(shard))).read_all(),)
            except pa.ArrowInvalid:  # datasets writes the IPC stream format
                opened = (pa.ipc.open_stream(pa.memory_map(str(shard))).read_all(),)
    except (pa.ArrowException, OSError) as e:
        kind = "parquet" if _is_parquet(shard) else "Arrow IPC"
        raise ValueError(f"{shard}: not a readable {kind} file ({_one_line(e)})") from None
    return _remember(_FILES, key, opened, _CACHED_FILES)


def audio_columns(schema: Any) -> dict[str, str]:
    """Audio columns of an Arrow schema: name -> "struct" (a `bytes` child, Hugging Face's Audio
    feature) or "binary" (raw file bytes)."""
    import pyarrow as pa

    out = {}
    for f in schema:
        t = f.type
        if pa.types.is_struct(t):
            child = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
            if "bytes" in child and (pa.types.is_binary(child["bytes"]) or pa.types.is_large_binary(child["bytes"])):
                out[f.name] = "struct"
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            out[f.name] = "binary"
    return out


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


def embedded_ref(shard: str | os.PathLike, column: str, row: int) -> str:
    """The text that stands for the clip embedded in `row` (of its shard) of `column`."""
    return f"{EMBEDDED_PREFIX}{os.path.abspath(shard)}?column={quote(column, safe='')}&row={row}"


def is_embedded(audio: str) -> bool:
    return audio.startswith(EMBEDDED_PREFIX)


def parse_embedded(ref: str) -> tuple[Path, str, int]:
    """(shard, column, row) of an `embedded_ref`; ValueError for anything else."""
    body, sep, query = ref[len(EMBEDDED_PREFIX):].rpartition("?")
    q = parse_qs(query)
    try:
        if not (is_embedded(ref) and sep and body):
            raise KeyError
        return Path(body), q["column"][0], int(q["row"][0])
    except (KeyError, IndexError, ValueError):
        expected = f"{EMBEDDED_PREFIX}FILE?column=NAME&row=N"
        raise ValueError(f"not a reference to an embedded clip: {ref!r} (expected {expected})") from None


def _plain(value: Any) -> Any:
    """A cell as JSON-ready Python (dates as ISO text, decimals as text, stray bytes summarised)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, datetime.timedelta)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return value


def _audio_cells(chunk: Any, column: str, kind: str, n: int) -> tuple[list[bool], list[str | None]]:
    """(has bytes, path) per row of one audio column of a chunk (columns not read: every row has bytes)."""
    if column not in chunk.column_names:
        return [True] * n, [None] * n
    arr = chunk.column(column).combine_chunks()
    present = arr.is_valid().to_pylist()
    if kind == "binary":
        return present, [None] * n
    names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
    paths = arr.field("path").to_pylist() if "path" in names else [None] * n
    has = present
    if "bytes" in names:  # a child's validity ignores its parent's: a null struct has no bytes either
        has = [ok and b for ok, b in zip(present, arr.field("bytes").is_valid().to_pylist())]
    return has, [p if ok else None for p, ok in zip(paths, present)]


def _rows(chunk: Any, n: int, names: list[str], audio: dict[str, str], shard: Path, start: int, embed: bool) -> list[dict]:
    plain = [c for c in names if c not in audio]
    rows = chunk.select(plain).to_pylist() if plain else [{} for _ in range(n)]
    cells = {c: _audio_cells(chunk, c, kind, n) for c, kind in audio.items()}
    out = []
    for i, row in enumerate(rows):
        values: dict[str, Any] = {}
        for c in names:
            if c in audio:
                has, paths = cells[c]
                values[c] = embedded_ref(shard, c, start + i) if (has[i] and embed) else paths[i]
            else:
                values[c] = _plain(row[c])
        out.append(values)
    return out


def _no_nulls(meta: Any, leaf: str) -> bool:
    """Whether a parquet row group's statistics say the leaf column has no null at all."""
    for j in range(meta.num_columns):
        col = meta.column(j)
        if col.path_in_schema == leaf:
            stats = col.statistics
            return bool(stats is not None and stats.has_null_count and stats.null_count == 0)
    return False


def _read_group(pf: Any, shard: Path, g: int, columns: list[str]) -> Any:
    """One row group's columns; a damaged file is a ValueError naming it."""
    import pyarrow as pa

    try:
        return pf.read_row_group(g, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{shard}: cannot read row group {g} ({_one_line(e)})") from None


def _parquet_chunks(pf: Any, shard: Path, audio: dict[str, str]) -> Iterator[tuple[Any, int]]:
    schema = pf.schema_arrow
    plain = [c for c in schema.names if c not in audio]
    for g in range(pf.num_row_groups):
        meta = pf.metadata.row_group(g)
        cols = list(plain)
        for c, kind in audio.items():
            leaf = f"{c}.bytes" if kind == "struct" else c
            t = schema.field(c).type
            if kind == "struct" and "path" in {t.field(i).name for i in range(t.num_fields)}:
                cols.append(f"{c}.path")
            if not _no_nulls(meta, leaf):
                cols.append(leaf)
        yield _read_group(pf, shard, g, cols), meta.num_rows


def iter_table_rows(path: str | os.PathLike, embed: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number over all shards, row) for a table dataset.

    Args:
        path: see `table_shards`.
        embed: each audio cell holding bytes becomes `embedded_ref(...)`; with False (rows written
            back out, e.g. predictions.json) it is the cell's path, or None. A cell without bytes
            is always its path (None when it has none).
    """
    index = 0
    for shard in table_shards(path):
        opened = _open_shard(shard)
        schema = opened.schema_arrow if _is_parquet(shard) else opened[0].schema
        audio = audio_columns(schema)
        if _is_parquet(shard):
            chunks: Any = _parquet_chunks(opened, shard, audio)
        else:
            table = opened[0]
            chunks = ((table.slice(s, _ROWS_PER_BATCH), min(_ROWS_PER_BATCH, table.num_rows - s))
                      for s in range(0, table.num_rows, _ROWS_PER_BATCH))
        start = 0
        for chunk, n in chunks:
            for row in _rows(chunk, n, schema.names, audio, shard, start, embed):
                yield index, row
                index += 1
            start += n


def table_items(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a table dataset, audio cells as their paths (for files written back out)."""
    return [row for _, row in iter_table_rows(path, embed=False)]


# ---------------------------------------------------------------------------------------------
# Embedded clips
# ---------------------------------------------------------------------------------------------


def _parquet_cell(shard: Path, column: str, row: int) -> Any:
    pf = _open_shard(shard)
    starts = [0]
    for g in range(pf.num_row_groups):
        starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
    if not 0 <= row < starts[-1]:
        raise ValueError(f"row {row} is past the end of {shard} ({starts[-1]} rows)")
    g = bisect.bisect_right(starts, row) - 1
    key = (*_stamp(shard), column, g)
    if key in _GROUPS:
        _GROUPS.move_to_end(key)
        arr = _GROUPS[key]
    else:
        kind = audio_columns(pf.schema_arrow).get(column)
        if kind is None:
            raise ValueError(f"{shard} has no audio column {column!r}")
        leaf = f"{column}.bytes" if kind == "struct" else column
        arr = _read_group(pf, shard, g, [leaf]).column(column).combine_chunks()
        arr = _remember(_GROUPS, key, arr.field("bytes") if kind == "struct" else arr, _CACHED_GROUPS)
    return arr[row - starts[g]]


def _arrow_cell(shard: Path, column: str, row: int) -> Any:
    table = _open_shard(shard)[0]
    kind = audio_columns(table.schema).get(column)
    if kind is None:
        raise ValueError(f"{shard} has no audio column {column!r}")
    if not 0 <= row < table.num_rows:
        raise ValueError(f"row {row} is past the end of {shard} ({table.num_rows} rows)")
    cell = table.column(column)[row]
    return cell["bytes"] if kind == "struct" and cell.is_valid else cell


def embedded_bytes(ref: str) -> bytes:
    """The bytes of the clip an `embedded_ref` stands for.

    Raises:
        FileNotFoundError: the table file is gone.
        ValueError: not a reference, an unreadable table, no such column or row, no bytes there.
    """
    shard, column, row = parse_embedded(ref)
    if not shard.is_file():
        raise FileNotFoundError(f"table file not found: {shard}")
    cell = _parquet_cell(shard, column, row) if _is_parquet(shard) else _arrow_cell(shard, column, row)
    data = cell.as_py() if cell.is_valid else None
    if data is None:
        raise ValueError(f"row {row} of {shard} holds no bytes in column {column!r}")
    return data
