"""CSV, JSON lines and text files with bytes that are not valid text: an error naming the file,
line and byte offset, or the decoding the user chose with ``encoding_errors=``."""
from __future__ import annotations

import gzip

import pytest

from openformers.data import load_dataset


def _load(kind, path, **kwargs):
    return load_dataset(kind, data_files=str(path), split="train", keep_in_memory=True, **kwargs)


@pytest.mark.parametrize("name, kind, data, match", [
    ("bad.csv", "csv", b"text,label\nhello,1\nbad \xff\xfe here,0\n", r"bad\.csv: invalid utf-8 at line 3, byte offset 23 \(bytes ff"),
    ("bad.csv.gz", "csv", gzip.compress(b"a\nok\n\xc3(\n"), r"bad\.csv\.gz: invalid utf-8 at line 3, byte offset 5"),
    ("bad.txt", "text", b"one\ntw\x80o\n", r"bad\.txt: invalid utf-8 at line 2, byte offset 6"),
], ids=["csv-first-block", "gzipped-csv", "text"])
def test_invalid_utf8_raises_naming_file_line_and_offset(tmp_path, name, kind, data, match):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        _load(kind, path)


def test_csv_invalid_utf8_after_the_first_block(tmp_path):
    path = tmp_path / "late.csv"
    rows = b"".join(b"row %d,1\n" % i for i in range(600_000))  # > 4 MB: the bad byte is in a later block
    path.write_bytes(b"text,label\n" + rows + b"caf\xe9,0\n")
    with pytest.raises(ValueError, match=f"line {600_000 + 2}, byte offset {11 + len(rows) + 3}"):
        _load("csv", path)


def test_csv_encoding_errors_replace_is_the_users_choice(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nhello,1\nbad \xff here,0\n")
    ds = _load("csv", path, encoding_errors="replace")
    assert ds.features["text"].dtype == "string"
    assert ds["text"] == ["hello", "bad \ufffd here"]


def test_csv_in_another_encoding_still_loads(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a\ncafé\n".encode("latin-1"))
    assert _load("csv", path, encoding="latin-1")["a"] == ["café"]


def test_json_lines_with_invalid_utf8_raises(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": "x"}\n{"a": "y\xc3"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: invalid utf-8 at line 2, byte offset 19"):
        _load("json", path)
    assert _load("json", path, encoding_errors="replace")["a"] == ["x", "y\ufffd"]


def test_deeply_nested_json_names_the_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json"):
        _load("json", path)
