"""Parsing of ``.jsonl`` / ``.csv`` metadata files that list media paths and their captions.

This is kept apart from the collect stage because parsing a list is pure text work: it needs no
filesystem walk, no error policy and no stage counters, so it can be tested line by line without
building a dataset tree. Nothing here raises for a malformed line; each one becomes a
:class:`BadLine` carrying the exception type it amounts to, so the collect stage can turn one bad
line in a million into one ``Failed`` item instead of aborting the run. Line numbers are physical
line numbers of the file (a quoted CSV caption spanning three lines moves the next entry three
lines on) because users open the file in an editor to fix the line a report points at.

Text is decoded one line at a time so that a stray non-UTF-8 byte costs one replaced character in
one line rather than the whole file; the caller decides how to report it through the
``on_bad_utf8`` callback.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from wan_data.sources.extensions import media_type

__all__ = [
    "CAPTION_KEYS",
    "PATH_KEYS",
    "BadLine",
    "MetadataLine",
    "MetadataRecord",
    "captions_from_value",
    "csv_header",
    "find_column",
    "parse_csv",
    "parse_jsonl",
    "parse_jsonl_line",
    "read_lines",
    "split_caption",
]

PATH_KEYS: tuple[str, ...] = ("path", "file", "video", "image")
"""JSONL keys / CSV columns naming the media file, the first present wins."""

CAPTION_KEYS: tuple[str, ...] = ("caption", "text", "prompt")
"""JSONL keys / CSV columns holding the caption, the first present wins."""

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class MetadataLine:
    """A well-formed metadata entry: the path as written and its caption candidates."""

    path: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class BadLine:
    """A malformed metadata line: the exception type it amounts to and the rule it breaks.

    Attributes:
        error_type: name of the exception the line amounts to (``"JSONDecodeError"``,
            ``"TypeError"``, ``"KeyError"``, ``"Error"`` for a CSV error).
        rule: what is wrong, phrased to follow "metadata line ..." in a message.
        text: the offending line (stripped), for the message.
    """

    error_type: str
    rule: str
    text: str


MetadataRecord = MetadataLine | BadLine
"""One parsed entry of a metadata file."""


def split_caption(text: str) -> tuple[str, ...]:
    """Caption candidates of ``text``: one per non-blank line, stripped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_lines(
    path: str, on_bad_utf8: Callable[[int], None] | None = None
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a file, decoded line by line.

    A UTF-8 BOM at the start of line 1 is dropped. A line that is not valid UTF-8 is decoded
    with U+FFFD in place of the bad bytes, after ``on_bad_utf8(line number)`` is called.

    Args:
        path: the file to read.
        on_bad_utf8: called with the 1-based number of each line that is not valid UTF-8.

    Raises:
        OSError: when the file cannot be opened or read.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            data = raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                if on_bad_utf8 is not None:
                    on_bad_utf8(number)
                text = data.decode("utf-8", errors="replace")
            yield number, text


def find_column(header: Sequence[str], names: Sequence[str]) -> int | None:
    """Index of the first of ``names`` in ``header`` (case- and space-insensitive), or None."""
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def csv_header(path: str) -> tuple[list[str] | None, int]:
    """The header row of a CSV file (skipping blank lines) and its line number.

    Returns:
        ``(row, line number)``, or ``(None, 0)`` when the file has no non-blank row.

    Raises:
        OSError: when the file cannot be read.
        csv.Error: when the header cannot be parsed.
    """
    lines = read_lines(path)
    reader = csv.reader(text for _, text in lines)
    for row in reader:
        if any(cell.strip() for cell in row):
            return row, reader.line_num
    return None, 0


def captions_from_value(value: object) -> tuple[str, ...] | None:
    """Caption candidates of a metadata value; ``None`` when the value has the wrong type.

    ``None`` (JSON null) means no caption; a string is split into its non-blank lines; a list of
    strings gives the non-blank lines of all of them, in order.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return split_caption(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(c for v in value for c in split_caption(v))
    return None


def parse_jsonl(
    path: str, on_bad_utf8: Callable[[int], None] | None = None
) -> list[tuple[int, MetadataRecord]]:
    """``(line number, record)`` of every non-blank line of a JSONL metadata file.

    Raises:
        OSError: when the file cannot be read.
    """
    records: list[tuple[int, MetadataRecord]] = []
    for number, text in read_lines(path, on_bad_utf8):
        line = text.strip()
        if line:
            records.append((number, parse_jsonl_line(line)))
    return records


def parse_jsonl_line(line: str) -> MetadataRecord:
    """The record of one stripped, non-blank JSONL line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine("JSONDecodeError", f"is not valid JSON ({exc.msg})", line)
    except RecursionError:
        # Nesting deeper than the interpreter's recursion limit: one hostile or broken line
        # must cost that line, not the whole file (the caller would drop the file).
        return BadLine("RecursionError", "nests arrays or objects too deeply to parse", line[:200])
    if not isinstance(obj, dict):
        return BadLine("TypeError", f"is a JSON {type(obj).__name__}, not an object", line)
    path_key = next((k for k in PATH_KEYS if k in obj), None)
    if path_key is None:
        return BadLine("KeyError", "has no path key", line)
    written = obj[path_key]
    if not isinstance(written, str) or not written.strip():
        return BadLine("TypeError", f"has a '{path_key}' that is not a non-empty string", line)
    caption_key = next((k for k in CAPTION_KEYS if k in obj), None)
    captions = captions_from_value(obj[caption_key]) if caption_key else ()
    if captions is None:
        return BadLine(
            "TypeError", f"has a '{caption_key}' that is not a string or a list of strings", line
        )
    return MetadataLine(written.strip(), captions)


def _swallowed_rows(
    continuation: Sequence[tuple[int, str]], path_col: int, columns: int
) -> list[int]:
    """Line numbers among the continuation lines of one CSV row that look like entries.

    A line looks like an entry when, parsed on its own, it has ``columns`` cells and a path
    cell with a media extension: caption text continued over lines almost never does.
    """
    found = []
    for number, text in continuation:
        try:
            cells = next(csv.reader([text]), [])
        except csv.Error:
            continue
        if len(cells) == columns and media_type(cells[path_col].strip()) is not None:
            found.append(number)
    return found


def _unclosed_quote(
    first: int, last: int, lines: Sequence[tuple[int, str]], swallowed: Sequence[int]
) -> list[tuple[int, MetadataRecord]]:
    """The records of a row that swallowed entries: its first line and each swallowed entry."""
    where = f"lines {first}-{last}" if last > first else f"line {first}"
    opened = BadLine(
        "Error",
        f"opens a quoted field that runs over {where} and swallows {len(swallowed)} line(s) "
        f"that look like entries (first: line {swallowed[0]}): an unclosed or misplaced quote",
        lines[first - 1][1].strip(),
    )
    out: list[tuple[int, MetadataRecord]] = [(first, opened)]
    for number in swallowed:
        rule = (
            f"looks like an entry but was swallowed by the quoted field opened at line {first}; "
            "close the quote there"
        )
        out.append((number, BadLine("Error", rule, lines[number - 1][1].strip())))
    return out


def parse_csv(
    path: str, on_bad_utf8: Callable[[int], None] | None = None
) -> list[tuple[int, MetadataRecord]]:
    """``(line number, record)`` of every non-blank data row of a CSV metadata file.

    The first non-blank row is the header; the path and caption columns are the first of
    :data:`PATH_KEYS` / :data:`CAPTION_KEYS` it names. A file whose header has no path column
    gives no records (the collect stage's configuration check reports it first). The line number
    of a row is the physical line it starts on.

    A quote that is never closed (or closed rows later) makes the CSV reader swallow every
    following line into one field, and those entries would vanish without a trace. A row
    spanning several physical lines of which at least one, read alone, looks like an entry
    (the header's number of cells and a media file in the path column) is therefore not
    trusted: its first line and every swallowed entry become a :class:`BadLine` each, naming
    the line where the quote opened. A caption that legitimately spans lines looks like no
    entry and is kept.

    Raises:
        OSError: when the file cannot be read.
    """
    records: list[tuple[int, MetadataRecord]] = []
    lines = list(read_lines(path, on_bad_utf8))
    reader = csv.reader(text for _, text in lines)
    path_col: int | None = None
    caption_col: int | None = None
    header: list[str] = []
    previous = 0  # physical lines consumed so far: a quoted caption may span several
    while True:
        number = previous + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            text = lines[number - 1][1].strip() if number <= len(lines) else ""
            records.append((number, BadLine("Error", f"is not valid CSV ({exc})", text)))
            previous = reader.line_num
            continue
        previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if path_col is None:
            path_col = find_column(row, PATH_KEYS)
            caption_col = find_column(row, CAPTION_KEYS)
            header = row
            if path_col is None:
                return records
            continue
        swallowed = _swallowed_rows(lines[number : reader.line_num], path_col, len(header))
        if swallowed:
            records.extend(_unclosed_quote(number, reader.line_num, lines, swallowed))
            continue
        written = row[path_col].strip() if path_col < len(row) else ""
        if not written:
            records.append((number, BadLine("KeyError", "has an empty path column", ",".join(row))))
            continue
        caption = row[caption_col] if caption_col is not None and caption_col < len(row) else ""
        records.append((number, MetadataLine(written, split_caption(caption))))
    return records
