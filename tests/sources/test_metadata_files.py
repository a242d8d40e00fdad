"""Unit tests of metadata-file parsing, without the collect stage around it.

The collect tests cover these parsers end to end (through Failed items and keys); these pin the
exact records, error types and line numbers, which a report's "file:line" depends on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_data.sources import metadata_files
from wan_data.sources.metadata_files import (
    CAPTION_KEYS,
    PATH_KEYS,
    BadLine,
    MetadataLine,
    captions_from_value,
    csv_header,
    find_column,
    parse_csv,
    parse_jsonl,
    parse_jsonl_line,
    read_lines,
    split_caption,
)
from wan_data.stages import collect as collect_module


def write(path: Path, data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return str(path)


# --------------------------------------------------------------------------------------------
# Module surface
# --------------------------------------------------------------------------------------------


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions, each alphabetical (ruff's RUF022 order).
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_exported() -> None:
    assert metadata_files.__all__ == sorted(metadata_files.__all__, key=_isort_key)
    for name in metadata_files.__all__:
        assert hasattr(metadata_files, name), name


def test_keys_are_reexported_by_collect() -> None:
    assert PATH_KEYS == ("path", "file", "video", "image")
    assert CAPTION_KEYS == ("caption", "text", "prompt")
    assert collect_module.PATH_KEYS is PATH_KEYS
    assert collect_module.CAPTION_KEYS is CAPTION_KEYS


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def test_split_caption_keeps_non_blank_stripped_lines() -> None:
    assert split_caption("  a cat \n\n\t\n b dog\r\nc") == ("a cat", "b dog", "c")
    assert split_caption("") == ()
    assert split_caption(" \n \n") == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("one\n two \n", ("one", "two")),
        ([], ()),
        (["a\nb", " ", "c"], ("a", "b", "c")),
        (5, None),
        (["a", 1], None),
        ({"caption": "a"}, None),
        (True, None),
    ],
)
def test_captions_from_value(value: object, expected: tuple[str, ...] | None) -> None:
    assert captions_from_value(value) == expected


# --------------------------------------------------------------------------------------------
# read_lines
# --------------------------------------------------------------------------------------------


def test_read_lines_numbers_lines_and_drops_bom_on_line_one(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", b"\xef\xbb\xbffirst\nsecond\n\xef\xbb\xbfthird")
    bad: list[int] = []
    assert list(read_lines(path, bad.append)) == [
        (1, "first\n"),
        (2, "second\n"),
        (3, "\ufeffthird"),  # only the BOM that starts the file is dropped
    ]
    assert bad == []


def test_read_lines_reports_bad_utf8_by_line_and_replaces_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", b"ok\nbad \xff here\nfine\n\xc3(\n")
    bad: list[int] = []
    assert list(read_lines(path, bad.append)) == [
        (1, "ok\n"),
        (2, "bad \ufffd here\n"),
        (3, "fine\n"),
        (4, "\ufffd(\n"),
    ]
    assert bad == [2, 4]


def test_read_lines_without_callback_still_replaces(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", b"\xffx\n")
    assert list(read_lines(path)) == [(1, "\ufffdx\n")]


def test_read_lines_calls_back_before_yielding_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", b"a\n\xff\n")
    bad: list[int] = []
    lines = read_lines(path, bad.append)
    assert next(lines) == (1, "a\n")
    assert bad == []
    assert next(lines) == (2, "\ufffd\n")
    assert bad == [2]


def test_read_lines_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_lines(str(tmp_path / "absent.jsonl")))


# --------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"path": "a.mp4", "caption": "a cat"}, MetadataLine("a.mp4", ("a cat",))),
        ({"file": " b.png ", "text": "x\ny"}, MetadataLine("b.png", ("x", "y"))),
        ({"video": "c.mp4", "prompt": ["p1", "p2\np3"]}, MetadataLine("c.mp4", ("p1", "p2", "p3"))),
        ({"image": "d.jpg"}, MetadataLine("d.jpg", ())),
        ({"path": "e.mp4", "caption": None}, MetadataLine("e.mp4", ())),
        # The first key of PATH_KEYS / CAPTION_KEYS present wins, whatever the object's order.
        ({"file": "f1.mp4", "path": "f2.mp4"}, MetadataLine("f2.mp4", ())),
        ({"path": "g.mp4", "prompt": "p", "caption": "c"}, MetadataLine("g.mp4", ("c",))),
    ],
)
def test_parse_jsonl_line_valid(obj: dict[str, object], expected: MetadataLine) -> None:
    assert parse_jsonl_line(json.dumps(obj)) == expected


@pytest.mark.parametrize(
    ("line", "error_type", "rule"),
    [
        (
            "{bad",
            "JSONDecodeError",
            "is not valid JSON (Expecting property name enclosed in double quotes)",
        ),
        ('["a.mp4"]', "TypeError", "is a JSON list, not an object"),
        ('"a.mp4"', "TypeError", "is a JSON str, not an object"),
        ('{"caption": "x"}', "KeyError", "has no path key"),
        ('{"path": 3}', "TypeError", "has a 'path' that is not a non-empty string"),
        ('{"video": "  "}', "TypeError", "has a 'video' that is not a non-empty string"),
        (
            '{"path": "a.mp4", "caption": 5}',
            "TypeError",
            "has a 'caption' that is not a string or a list of strings",
        ),
        (
            '{"path": "a.mp4", "text": ["ok", 1]}',
            "TypeError",
            "has a 'text' that is not a string or a list of strings",
        ),
    ],
)
def test_parse_jsonl_line_bad(line: str, error_type: str, rule: str) -> None:
    assert parse_jsonl_line(line) == BadLine(error_type, rule, line)


def test_parse_jsonl_file_skips_blank_lines_and_keeps_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        "\ufeff"
        + json.dumps({"path": "a.mp4", "caption": "one"})
        + "\n\n   \n"
        + "  not json  \n"
        + json.dumps({"file": "b.mp4", "text": ["t1", "t2"]})
        + "\n",
    )
    assert parse_jsonl(path) == [
        (1, MetadataLine("a.mp4", ("one",))),
        (
            4,
            BadLine("JSONDecodeError", "is not valid JSON (Expecting value)", "not json"),
        ),
        (5, MetadataLine("b.mp4", ("t1", "t2"))),
    ]


def test_parse_jsonl_forwards_bad_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", b'\n{"path": "a.mp4", "caption": "caf\xe9"}\n')
    bad: list[int] = []
    assert parse_jsonl(path, bad.append) == [(2, MetadataLine("a.mp4", ("caf\ufffd",)))]
    assert bad == [2]


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def test_find_column_is_case_and_space_insensitive_and_follows_names_order() -> None:
    assert find_column([" Caption ", " FILE "], PATH_KEYS) == 1
    assert find_column(["file", "path"], PATH_KEYS) == 1
    assert find_column(["Prompt", "text"], CAPTION_KEYS) == 1
    assert find_column(["name", "size"], PATH_KEYS) is None
    assert find_column([], CAPTION_KEYS) is None


def test_csv_header_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "\n  \n,\n\ufeffVideo , Prompt\na.mp4,x\n")
    assert csv_header(path) == (["\ufeffVideo ", " Prompt"], 4)


def test_csv_header_drops_bom_of_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "\ufeffpath,caption\n")
    assert csv_header(path) == (["path", "caption"], 1)


def test_csv_header_of_blank_file_is_none(tmp_path: Path) -> None:
    assert csv_header(write(tmp_path / "empty.csv", "")) == (None, 0)
    assert csv_header(write(tmp_path / "blank.csv", "\n , \n\n")) == (None, 0)


def test_parse_csv_header_synonyms(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", " FILE ,Size, Prompt\na.mp4,1,a cat\n b.png ,2,\n")
    assert parse_csv(path) == [
        (2, MetadataLine("a.mp4", ("a cat",))),
        (3, MetadataLine("b.png", ())),
    ]


def test_parse_csv_without_caption_column(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "image\nx.jpg\n")
    assert parse_csv(path) == [(2, MetadataLine("x.jpg", ()))]


def test_parse_csv_multiline_caption_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        '\npath,caption\na.mp4,"first\n\nsecond, with comma"\n\nb.mp4,third\n,orphan\nc.mp4\n',
    )
    assert parse_csv(path) == [
        (3, MetadataLine("a.mp4", ("first", "second, with comma"))),
        (7, MetadataLine("b.mp4", ("third",))),
        (8, BadLine("KeyError", "has an empty path column", ",orphan")),
        (9, MetadataLine("c.mp4", ())),
    ]


def test_parse_csv_empty_path_column(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "caption,path\nshort row\n x ,  \n")
    assert parse_csv(path) == [
        (2, BadLine("KeyError", "has an empty path column", "short row")),
        (3, BadLine("KeyError", "has an empty path column", " x ,  ")),
    ]


def test_parse_csv_without_path_column_gives_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "name,caption\na.mp4,x\n")
    assert parse_csv(path) == []


def test_parse_csv_bad_row_becomes_bad_line_and_parsing_goes_on(tmp_path: Path) -> None:
    huge = "x" * 200_000  # over csv's default field size limit
    path = write(tmp_path / "m.csv", f"path,caption\na.mp4,{huge}\nb.mp4,ok\n")
    records = parse_csv(path)
    assert records == [
        (
            2,
            BadLine(
                "Error",
                "is not valid CSV (field larger than field limit (131072))",
                f"a.mp4,{huge}",
            ),
        ),
        (3, MetadataLine("b.mp4", ("ok",))),
    ]


def test_parse_csv_forwards_bad_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", b"\xef\xbb\xbfpath,caption\na.mp4,caf\xe9\n")
    bad: list[int] = []
    assert parse_csv(path, bad.append) == [(2, MetadataLine("a.mp4", ("caf\ufffd",)))]
    assert bad == [2]


# --------------------------------------------------------------------------------------------
# Faults that used to lose entries silently (issue 13)
# --------------------------------------------------------------------------------------------


def test_parse_csv_unclosed_quote_reports_the_quote_and_every_swallowed_entry(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "m.csv",
        'path,caption\nz.mp4,ok\na.mp4,"unclosed\nb.mp4,second\nnot an entry\nc.jpg,"third"\n',
    )
    records = parse_csv(path)
    assert [n for n, _ in records] == [2, 3, 4, 6]
    assert records[0] == (2, MetadataLine("z.mp4", ("ok",)))
    opened = records[1][1]
    assert isinstance(opened, BadLine) and opened.error_type == "Error"
    assert opened.text == 'a.mp4,"unclosed'
    assert "lines 3-6" in opened.rule and "2 line(s) that look like entries" in opened.rule
    assert "(first: line 4)" in opened.rule
    for number, text in ((4, "b.mp4,second"), (6, 'c.jpg,"third"')):
        swallowed = dict(records)[number]
        assert isinstance(swallowed, BadLine) and swallowed.text == text
        assert "opened at line 3" in swallowed.rule


def test_parse_csv_quote_closed_late_still_reports_swallowed_entries(tmp_path: Path) -> None:
    # A stray quote closed one row later: the reader resynchronises, yet b.mp4 was lost.
    path = write(tmp_path / "m.csv", 'path,caption\na.mp4,"oops\nb.mp4,x"\nc.mp4,fine\n')
    records = parse_csv(path)
    assert [n for n, _ in records] == [2, 3, 4]
    assert isinstance(records[0][1], BadLine) and isinstance(records[1][1], BadLine)
    assert records[2] == (4, MetadataLine("c.mp4", ("fine",)))


def test_parse_csv_multiline_caption_that_mentions_a_file_is_kept(tmp_path: Path) -> None:
    # A continuation line with a media name but not the header's shape is caption text.
    path = write(tmp_path / "m.csv", 'path,caption\na.mp4,"see\nb.mp4, c.mp4, d.mp4"\n')
    assert parse_csv(path) == [(2, MetadataLine("a.mp4", ("see", "b.mp4, c.mp4, d.mp4")))]


def test_parse_jsonl_line_nested_too_deeply_is_one_bad_line() -> None:
    line = "[" * 100_000 + "]" * 100_000
    bad = parse_jsonl_line(line)
    assert bad == BadLine(
        "RecursionError", "nests arrays or objects too deeply to parse", line[:200]
    )


def test_parse_jsonl_deep_line_costs_only_that_line(tmp_path: Path) -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    path = write(tmp_path / "m.jsonl", f'{{"path": "a.mp4"}}\n{deep}\n{{"path": "b.mp4"}}\n')
    records = parse_jsonl(path)
    assert [n for n, _ in records] == [1, 2, 3]
    assert records[0][1] == MetadataLine("a.mp4", ())
    assert isinstance(records[1][1], BadLine) and records[1][1].error_type == "RecursionError"
    assert records[2][1] == MetadataLine("b.mp4", ())
