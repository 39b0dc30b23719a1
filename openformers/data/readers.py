"""Incremental readers for csv, json, text, parquet and arrow files.

Each reader yields ``pyarrow.Table`` batches and never holds a whole file in memory (except a
JSON file that is one big array or object, which has to be parsed at once). Parse errors name
the file and the line.

Text is decoded strictly: a byte sequence that is not valid in ``encoding`` (UTF-8 by default)
raises ``ValueError`` naming the file, the line and the byte offset, instead of turning a text
column into ``binary`` or dropping characters. ``encoding_errors="replace"`` (or any other
Python error handler, e.g. ``"ignore"``, ``"backslashreplace"``) decodes such bytes the way the
user asked instead; ``load_dataset(..., encoding_errors="replace")`` passes it on.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

BLOCK_SIZE = 4 << 20  # bytes per parsed block: type inference sees the first block, memory holds a few

EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".txt": "text", ".text": "text", ".md": "text", ".parquet": "parquet", ".arrow": "arrow",
}


def builder_for_file(path: str) -> str | None:
    name = path[:-3] if path.endswith(".gz") else path
    return EXTENSIONS.get(os.path.splitext(name)[1].lower())


class _CheckedText(io.RawIOBase):
    """A binary stream of a file's text as valid UTF-8, read in blocks.

    Bytes that are not valid in ``encoding`` raise ``ValueError`` naming the file, line and byte
    offset, unless ``errors`` (a Python codec error handler other than ``"strict"``) says how to
    decode them. Valid UTF-8 read as UTF-8 passes through unchanged (only checked).
    """

    def __init__(self, raw: Any, path: str, encoding: str = "utf-8", errors: str | None = None) -> None:
        super().__init__()
        self.raw, self.path, self.encoding, self.errors = raw, path, encoding, errors or "strict"
        self.decoder = codecs.getincrementaldecoder(encoding)(errors=self.errors)
        self.passthrough = codecs.lookup(encoding).name == "utf-8" and self.errors == "strict"
        self.offset, self.newlines, self.done, self.pending = 0, 0, False, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        out = self.pending or self._next(size)
        if size is not None and 0 <= size < len(out):
            out, self.pending = out[:size], out[size:]
        else:
            self.pending = b""
        return out

    def _next(self, size: int) -> bytes:
        while not self.done:
            chunk = self.raw.read(size if size and size > 0 else 1 << 20)
            final = not chunk
            try:
                text = self.decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                held = len(err.object) - len(chunk)  # bytes of an unfinished character kept from the last block
                at = self.offset - held + err.start
                line = self.newlines + err.object[: err.start].count(b"\n") + 1
                bad = err.object[err.start : err.end].hex(" ")
                raise ValueError(
                    f"{self.path}: invalid {self.encoding} at line {line}, byte offset {at} (bytes {bad}: {err.reason}). "
                    f"Fix the file, pass encoding= if it is in another encoding, or encoding_errors='replace' "
                    f"to decode such bytes as U+FFFD"
                ) from None
            self.offset += len(chunk)
            self.newlines += chunk.count(b"\n")
            self.done = final
            out = chunk if self.passthrough else text.encode("utf-8")
            if out:
                return out
        return b""

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


def _open_binary(path: str) -> Any:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _open_text(path: str, encoding: str = "utf-8", errors: str | None = None) -> io.TextIOBase:
    checked = _CheckedText(_open_binary(path), path, encoding, errors)
    return io.TextIOWrapper(io.BufferedReader(checked), encoding="utf-8", newline="")


def _find_line(path: str, text: str, encoding: str, errors: str | None = None) -> int | None:
    with _open_text(path, encoding, errors) as f:
        for i, line in enumerate(f, 1):
            if line.rstrip("\r\n") == text.rstrip("\r\n"):
                return i
    return None


def read_csv(path: str, batch_size: int | None = None, sep: str | None = None, delimiter: str | None = None,
             column_names: list[str] | None = None, names: list[str] | None = None, skiprows: int = 0,
             quotechar: str = '"', encoding: str = "utf-8", usecols: list[str] | None = None,
             header: Any = "infer", features: Any = None, encoding_errors: str | None = None,
             **unused: Any) -> Iterator[pa.Table]:
    """Stream a CSV file; a row with the wrong number of fields, or bytes that are not valid text,
    raise naming the file and line (see the module docstring for ``encoding_errors``)."""
    import pyarrow.csv as pcsv

    from .features import Value

    # declared scalar types are parsed directly (no inference, so no type change between blocks)
    column_types = {k: v.pa_type for k, v in (features or {}).items() if isinstance(v, Value)}

    delim = delimiter or sep or ("\t" if ".tsv" in path else ",")
    names = column_names or names
    bad: dict[str, str] = {}

    def on_invalid(row: Any) -> str:
        bad["text"] = row.text
        bad["msg"] = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        return "error"

    read_opts = pcsv.ReadOptions(block_size=BLOCK_SIZE, column_names=names, skip_rows=skiprows, encoding="utf8",
                                 autogenerate_column_names=header is None and names is None)
    parse_opts = pcsv.ParseOptions(delimiter=delim, quote_char=quotechar, invalid_row_handler=on_invalid)
    # empty fields (and NA, null, NaN, ...) are missing values, as pandas reads them for datasets
    convert_opts = pcsv.ConvertOptions(include_columns=usecols, strings_can_be_null=True, column_types=column_types)
    source = _CheckedText(pa.input_stream(path, compression="detect"), path, encoding, encoding_errors)
    try:
        reader = pcsv.open_csv(source, read_options=read_opts, parse_options=parse_opts, convert_options=convert_opts)
        rows = 0
        for batch in reader:
            if batch.num_rows:
                rows += batch.num_rows
                table = pa.Table.from_batches([batch])
                if "" in table.column_names:  # a header cell left empty: pandas' (and datasets') name for it
                    table = table.rename_columns([n or f"Unnamed: {i}" for i, n in enumerate(table.column_names)])
                yield table
        if not rows:  # a header and no rows: the columns, empty
            yield reader.schema.empty_table()
    except pa.ArrowInvalid as err:
        if "text" in bad:
            line = _find_line(path, bad["text"], encoding, encoding_errors)
            where = f"line {line}" if line else "a row"
            raise ValueError(f"Malformed CSV row in {path} at {where}: {bad['msg']} "
                             f"(row text: {bad['text'][:200]!r}). Fix the row or quote the field.") from None
        raise ValueError(f"Cannot read CSV file {path}: {err}. If a column changes type part way through the "
                         "file, pass features=... to load_dataset.") from None
    finally:
        source.close()


def read_json(path: str, batch_size: int | None = None, field: str | None = None, encoding: str = "utf-8",
              chunksize: int = 10 << 20, encoding_errors: str | None = None, **unused: Any) -> Iterator[pa.Table]:
    """Stream JSON lines; a file holding one JSON array (or ``field`` of an object) is read whole."""
    import pyarrow.json as pj

    with _open_text(path, encoding, encoding_errors) as f:
        head = f.read(4096).lstrip()
    if field is not None or head.startswith("["):
        with _open_text(path, encoding, encoding_errors) as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"Invalid JSON in {path} at line {err.lineno}: {err.msg}") from None
            except RecursionError:
                raise ValueError(f"{path}: JSON nested too deeply to read") from None
        if field is not None:
            if not isinstance(obj, dict) or field not in obj:
                raise ValueError(f"JSON file {path} has no top-level field {field!r}")
            obj = obj[field]
        if isinstance(obj, dict):  # a dict of columns
            yield pa.Table.from_pydict(obj)
        elif isinstance(obj, list):
            from .conversion import rows_to_columns

            yield pa.Table.from_pydict(rows_to_columns(obj, f"record of {path}"))
        else:
            raise ValueError(f"JSON file {path} must hold a list of records or a dict of columns")
        return
    first_line = 1
    with _open_text(path, encoding, encoding_errors) as f:
        while True:
            lines = f.readlines(chunksize)
            if not lines:
                break
            block = "".join(lines).encode("utf-8")
            if block.strip():
                try:
                    yield pj.read_json(io.BytesIO(block), read_options=pj.ReadOptions(block_size=max(len(block), 1 << 20)))
                except pa.ArrowInvalid as err:
                    for i, line in enumerate(lines):
                        if line.strip():
                            try:
                                json.loads(line)
                            except json.JSONDecodeError as jerr:
                                raise ValueError(f"Invalid JSON in {path} at line {first_line + i}: {jerr.msg}") from None
                    raise ValueError(f"Cannot read JSON lines file {path} (lines {first_line}-"
                                     f"{first_line + len(lines) - 1}): {err}") from None
            first_line += len(lines)


def read_text(path: str, batch_size: int | None = None, keep_linebreaks: bool = False, sample_by: str = "line",
              encoding: str = "utf-8", chunksize: int = 10 << 20, encoding_errors: str | None = None,
              **unused: Any) -> Iterator[pa.Table]:
    """One ``text`` row per line (or per paragraph / whole document with ``sample_by``)."""
    if sample_by not in ("line", "paragraph", "document"):
        raise ValueError(f"sample_by must be 'line', 'paragraph' or 'document', got {sample_by!r}")
    with _open_text(path, encoding, encoding_errors) as f:
        if sample_by == "document":
            yield pa.table({"text": pa.array([f.read()], pa.string())})
            return
        carry = ""
        while True:
            chunk = f.read(chunksize)
            if not chunk:
                break
            chunk = carry + chunk
            if sample_by == "line":
                lines = chunk.splitlines(keepends=True)
                carry = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
                rows = lines if keep_linebreaks else [(ln.splitlines() or [""])[0] for ln in lines]
            else:
                parts = chunk.split("\n\n")
                carry = parts.pop()
                rows = [p for p in parts]
            if rows:
                yield pa.table({"text": pa.array(rows, pa.string())})
        if carry:
            rows = [carry] if sample_by == "paragraph" or keep_linebreaks else [carry.rstrip("\r\n")]
            yield pa.table({"text": pa.array(rows, pa.string())})


def read_parquet(path: str, batch_size: int | None = None, columns: list[str] | None = None,
                 **unused: Any) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path} is not a valid Parquet file: {err}") from None
    for batch in pf.iter_batches(batch_size=batch_size or 10_000, columns=columns):
        yield pa.Table.from_batches([batch])


def read_arrow(path: str, batch_size: int | None = None, **unused: Any) -> Iterator[pa.Table]:
    from .arrow_writer import read_arrow_file

    table = read_arrow_file(path)
    step = batch_size or 10_000
    for s in range(0, table.num_rows, step):
        yield table.slice(s, step)


READERS = {"csv": read_csv, "json": read_json, "text": read_text, "parquet": read_parquet, "arrow": read_arrow}


def read_files(builder: str, files: list[str], **kwargs: Any) -> Iterator[pa.Table]:
    """Batches from all ``files`` in order."""
    reader = READERS[builder]
    for path in files:
        yield from reader(path, **kwargs)
