"""Tests of the collect stage: media discovery, captions, concepts and metadata files.

collect never opens a media file, so every "video" here is a few dummy bytes; this keeps the
tests fast and lets them build exactly the odd trees (dangling links, fifos, folders named like
videos) that real datasets contain.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from wan_data.errors import ConfigError
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, Source
from wan_data.sources import captions as captions_module
from wan_data.sources import walk as walk_module
from wan_data.stages.collect import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Concept,
    check_concepts,
    collect,
    concepts_from,
)

POLICY = ErrorPolicy(sleep=lambda _s: None)


def touch(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def run(roots: object, **kwargs: object) -> tuple[list[Source | Failed], StageContext]:
    ctx = StageContext()
    items = list(collect(roots, policy=POLICY, context=ctx, **kwargs))  # type: ignore[arg-type]
    return items, ctx


def sources(items: list[Source | Failed]) -> list[Source]:
    return [i for i in items if isinstance(i, Source)]


def failures(items: list[Source | Failed]) -> list[Failed]:
    return [i for i in items if isinstance(i, Failed)]


def by_key(items: list[Source | Failed]) -> dict[str, Source | Failed]:
    return {i.key: i for i in items}


def stats(ctx: StageContext) -> dict[str, object]:
    return ctx.metrics.stage("collect").as_dict()


# --------------------------------------------------------------------------------------------
# Extensions
# --------------------------------------------------------------------------------------------


def test_extension_sets_are_lower_case_dotted_and_disjoint() -> None:
    for ext in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
        assert ext.startswith(".") and ext == ext.lower()
    assert not VIDEO_EXTENSIONS & IMAGE_EXTENSIONS
    assert {".mp4", ".mov", ".mkv", ".webm", ".gif", ".m2ts", ".3gp", ".ogv"} <= VIDEO_EXTENSIONS
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp"} == IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------
# Folder walk
# --------------------------------------------------------------------------------------------


def test_recursive_walk_in_sorted_relative_path_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rels = [
        "b.mp4",
        "a.mp4",
        "a/z.mp4",
        "a-b.mp4",
        "a/b/c.png",
        "Z.mov",
        "deep/er/still/clip.webm",
        "img.JPG",
        "sp ace.mkv",
    ]
    shuffled = rels[:]
    random.Random(7).shuffle(shuffled)
    for rel in shuffled:
        touch(root / rel)
    items, _ = run(root)
    assert all(isinstance(i, Source) for i in items)
    # Sorted by the whole relative POSIX path, not folder by folder ('-' sorts before '/').
    assert [i.key for i in items] == [f"data/{r}" for r in sorted(rels)]
    src = by_key(items)["data/a/b/c.png"]
    assert isinstance(src, Source)
    assert src.path == os.path.abspath(root / "a/b/c.png")
    assert src.media_type == "image"
    assert src.concept == "data"
    assert src.repeat == 0
    assert src.captions == ()
    assert by_key(items)["data/img.JPG"].media_type == "image"  # type: ignore[union-attr]
    assert by_key(items)["data/Z.mov"].media_type == "video"  # type: ignore[union-attr]


def test_every_video_and_image_extension_is_collected(tmp_path: Path) -> None:
    for i, ext in enumerate(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS)):
        touch(tmp_path / "r" / f"f{i}{ext.upper() if i % 2 else ext}")
    items, ctx = run(tmp_path / "r")
    assert len(sources(items)) == len(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS)
    types = Counter(s.media_type for s in sources(items))
    assert types == {"video": len(VIDEO_EXTENSIONS), "image": len(IMAGE_EXTENSIONS)}
    assert ctx.metrics.warnings["ignored_non_media"] == 0


def test_relative_root_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "rel" / "a.mp4")
    monkeypatch.chdir(tmp_path)
    items, _ = run("rel/")
    assert [(i.key, i.path) for i in items] == [("rel/a.mp4", str(tmp_path / "rel" / "a.mp4"))]


def test_hidden_files_dirs_and_appledouble_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "ok.mp4")
    touch(root / ".hidden.mp4")
    touch(root / "._ok.mp4")
    touch(root / ".cache" / "inside.mp4")
    touch(root / "sub" / ".DS_Store")
    touch(root / "sub" / "._x.png")
    items, ctx = run(root)
    assert [i.key for i in items] == ["r/ok.mp4"]
    assert ctx.metrics.warnings["ignored_non_media"] == 0


def test_non_media_is_ignored_and_counted_but_sidecars_are_not(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "a caption")  # sidecar: used, not "ignored"
    touch(root / "readme.md")
    touch(root / "orphan.txt")  # no media next to it: ignored
    touch(root / "notes.json")
    touch(root / "sub" / "b.PNG")
    touch(root / "sub" / "b.txt", "b caption")
    touch(root / "sub" / "Makefile")
    items, ctx = run(root)
    assert [i.key for i in items] == ["r/a.mp4", "r/sub/b.PNG"]
    assert ctx.metrics.warnings["ignored_non_media"] == 4
    assert stats(ctx)["in"] == 2


def test_empty_directory_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    items, ctx = run(tmp_path / "empty")
    assert items == []
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (0, 0, 0)


def test_two_runs_give_identical_output(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for i in range(30):
        touch(root / f"d{i % 4}" / f"f{i}.mp4")
        if i % 3 == 0:
            touch(root / f"d{i % 4}" / f"f{i}.txt", f"caption {i}\nalt {i}")
    os.symlink(tmp_path / "nowhere.mp4", root / "dangling.mp4")
    first, _ = run(Concept(root, repeats=2))
    second, _ = run(Concept(root, repeats=2))
    assert first == second
    assert len(first) == 61


def test_sources_and_failures_are_picklable(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "one\ntwo")
    os.symlink(tmp_path / "nowhere.mp4", root / "b.mp4")
    items, _ = run(Concept(root, repeats=2))
    assert len(items) == 3
    for item in items:
        assert pickle.loads(pickle.dumps(item)) == item


def test_multiple_concepts_keep_the_given_order(tmp_path: Path) -> None:
    touch(tmp_path / "zeta" / "a.mp4")
    touch(tmp_path / "alpha" / "a.mp4")
    items, _ = run([tmp_path / "zeta", str(tmp_path / "alpha")])
    assert [i.key for i in items] == ["zeta/a.mp4", "alpha/a.mp4"]
    assert [i.concept for i in sources(items)] == ["zeta", "alpha"]


def test_works_without_a_context(tmp_path: Path) -> None:
    touch(tmp_path / "r" / "a.mp4")
    assert [i.key for i in collect(tmp_path / "r", policy=POLICY)] == ["r/a.mp4"]


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def test_sidecar_gives_one_candidate_per_non_empty_line(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "  first caption  \n\n\tsecond caption\r\n   \nthird\n")
    touch(root / "a.b.mp4")
    touch(root / "a.b.txt", "dotted stem")
    items, _ = run(root)
    got = {i.key: i.captions for i in sources(items)}
    assert got == {
        "r/a.mp4": ("first caption", "second caption", "third"),
        "r/a.b.mp4": ("dotted stem",),
    }


def test_sidecar_shared_by_two_media_with_the_same_stem(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.png")
    touch(root / "a.txt", "shared")
    items, _ = run(root)
    assert [s.captions for s in sources(items)] == [("shared",), ("shared",)]


def test_sidecar_only_next_to_the_file(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "sub" / "a.mp4")
    touch(root / "a.txt", "wrong folder")
    items, _ = run(root)
    assert sources(items)[0].captions == ()


def test_sidecar_bom_is_dropped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", b"\xef\xbb\xbfhello\nworld")
    items, ctx = run(root)
    assert sources(items)[0].captions == ("hello", "world")
    assert ctx.metrics.warnings["caption_decode_errors"] == 0


def test_sidecar_decode_errors_are_replaced_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", b"caf\xe9 au lait")
    touch(root / "b.mp4")
    touch(root / "b.txt", "fine")
    items, ctx = run(root)
    assert sources(items)[0].captions == ("caf\ufffd au lait",)
    assert ctx.metrics.warnings["caption_decode_errors"] == 1


def test_empty_sidecar_falls_back_to_the_concept_caption(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "empty.mp4")
    touch(root / "empty.txt", "  \n\n")
    touch(root / "none.mp4")
    touch(root / "own.mp4")
    touch(root / "own.txt", "own caption")
    items, _ = run(Concept(root, caption="a photo of sks dog"))
    got = {i.key: i.captions for i in sources(items)}
    assert got == {
        "r/empty.mp4": ("a photo of sks dog",),
        "r/none.mp4": ("a photo of sks dog",),
        "r/own.mp4": ("own caption",),
    }


def test_custom_caption_extension(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "not this one")
    touch(root / "a.caption", "this one")
    items, ctx = run(root, caption_extension=".caption")
    assert sources(items)[0].captions == ("this one",)
    assert ctx.metrics.warnings["ignored_non_media"] == 1  # a.txt is now just a text file


def test_sidecar_that_is_a_folder_is_no_caption(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    (root / "a.txt").mkdir()
    items, _ = run(root)
    assert sources(items)[0].captions == ()


def test_unreadable_sidecar_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "x")

    def denied(path: str) -> bytes:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(captions_module, "_read_bytes", denied)
    items, ctx = run(root)
    [failed] = items
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.error_type) == ("permission_denied", "PermissionError")
    assert failed.key == "r/a.mp4"
    assert "a.txt" in failed.message
    assert stats(ctx)["failed_by_reason"] == {"permission_denied": 1}


def test_missing_caption_empty_is_the_default(tmp_path: Path) -> None:
    touch(tmp_path / "r" / "a.mp4")
    items, _ = run(tmp_path / "r")
    assert sources(items)[0].captions == ()


def test_missing_caption_filename(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "my_cat-video.mp4")
    touch(root / "__weird--__name_.png")
    touch(root / "___.png")
    touch(root / "captioned.mp4")
    touch(root / "captioned.txt", "real caption")
    items, _ = run(root, missing_caption="filename")
    got = {i.key: i.captions for i in sources(items)}
    assert got == {
        "r/my_cat-video.mp4": ("my cat video",),
        "r/__weird--__name_.png": ("weird name",),
        "r/___.png": (),
        "r/captioned.mp4": ("real caption",),
    }


def test_missing_caption_skip(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "b.mp4")
    touch(root / "b.txt", "b")
    items, ctx = run(Concept(root, repeats=3), missing_caption="skip")
    [failed] = failures(items)
    assert failed.key == "r/a.mp4"
    assert failed.reason == "missing_caption"
    assert failed.stage == "collect"
    assert failed.path == str(root / "a.mp4")
    assert "a.txt" in failed.message and "[stage=collect" in failed.message
    assert [s.key for s in sources(items)] == ["r/b.mp4", "r/b.mp4@1", "r/b.mp4@2"]
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (2, 3, 1)
    assert s["failed_by_reason"] == {"missing_caption": 1}


def test_missing_caption_error_lists_every_file_in_one_error(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    touch(one / "a.mp4")
    touch(one / "a.txt", "fine")
    touch(one / "b.mp4")
    touch(one / "sub" / "c.png")
    touch(two / "d.mp4")
    touch(two / "e.mp4")
    touch(two / "e.txt", "   \n")
    ctx = StageContext()
    gen = collect([one, two], policy=POLICY, context=ctx, missing_caption="error")
    with pytest.raises(ConfigError) as info:
        next(iter(gen))
    err = info.value
    assert len(err.problems) == 4
    message = str(err)
    assert message.startswith("4 configuration problems:")
    for name in ("b.mp4", "c.png", "d.mp4", "e.mp4"):
        assert name in message
    assert "a.mp4" not in message
    assert stats(ctx)["out"] == 0  # nothing was handed out before the error


def test_missing_caption_error_passes_when_every_file_has_one(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "a.txt", "caption")
    touch(root / "b.mp4")
    os.symlink(tmp_path / "nowhere.mp4", root / "c.mp4")
    items, _ = run(Concept(root, caption="default"), missing_caption="error")
    assert [s.captions for s in sources(items)] == [("caption",), ("default",)]
    assert [f.reason for f in failures(items)] == ["missing"]


# --------------------------------------------------------------------------------------------
# Concepts and repeats
# --------------------------------------------------------------------------------------------


def test_repeats_keys_and_counts(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "b.png")
    os.symlink(tmp_path / "nowhere.mp4", root / "c.mp4")
    items, ctx = run(Concept(root, repeats=3, name="cat"))
    assert [i.key for i in items] == [
        "cat/a.mp4",
        "cat/a.mp4@1",
        "cat/a.mp4@2",
        "cat/b.png",
        "cat/b.png@1",
        "cat/b.png@2",
        "cat/c.mp4",  # failures are yielded once
    ]
    assert [s.repeat for s in sources(items)] == [0, 1, 2, 0, 1, 2]
    assert {s.concept for s in sources(items)} == {"cat"}
    assert len({s.path for s in sources(items)}) == 2
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (3, 6, 1)


def test_duplicate_default_names_get_suffixes(tmp_path: Path) -> None:
    for parent in ("x", "y", "z"):
        touch(tmp_path / parent / "clips" / "a.mp4")
    items, _ = run([tmp_path / p / "clips" for p in ("x", "y", "z")])
    assert [i.key for i in items] == ["clips/a.mp4", "clips-2/a.mp4", "clips-3/a.mp4"]
    assert [s.concept for s in sources(items)] == ["clips", "clips-2", "clips-3"]


def test_concepts_from_normalises_every_input_form(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    meta = touch(tmp_path / "list.jsonl", "")
    assert concepts_from(str(tmp_path / "a")) == [Concept(str(tmp_path / "a"), name="a")]
    assert concepts_from(tmp_path / "a") == [Concept(tmp_path / "a", name="a")]
    assert concepts_from(Concept(tmp_path / "a", repeats=2)) == [
        Concept(tmp_path / "a", repeats=2, name="a")
    ]
    mixed = concepts_from(
        [str(tmp_path / "a"), Concept(tmp_path / "b", name="a"), meta, tmp_path / "b"]
    )
    # The explicit name "a" is reserved, so the default one for folder a becomes "a-2".
    assert [c.name for c in mixed] == ["a-2", "a", "list", "b"]
    assert concepts_from(tmp_path / "a" / "..") == [
        Concept(tmp_path / "a" / "..", name=tmp_path.name)
    ]


def test_concepts_from_rejects_other_types() -> None:
    with pytest.raises(ConfigError) as info:
        concepts_from(["ok", 3, None])  # type: ignore[list-item]
    assert len(info.value.problems) == 2
    with pytest.raises(ConfigError):
        concepts_from(42)  # type: ignore[arg-type]


def test_check_concepts_is_empty_for_a_good_configuration(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    touch(tmp_path / "m.csv", "path,caption\n")
    touch(tmp_path / "m.jsonl", "")
    assert check_concepts([tmp_path / "a", tmp_path / "m.csv", tmp_path / "m.jsonl"]) == []


def test_check_concepts_gathers_every_problem(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok2").mkdir()
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "nopath.csv", "file_name,caption\nx.mp4,hi\n")
    touch(tmp_path / "empty.csv", "\n\n")
    missing = tmp_path / "missing"
    problems = check_concepts(
        [
            missing,
            tmp_path / "notes.txt",
            Concept(tmp_path / "ok", repeats=0),
            Concept(tmp_path / "ok", repeats="2"),  # type: ignore[arg-type]
            Concept(tmp_path / "ok", repeats=True),  # bool is not a count
            tmp_path / "nopath.csv",
            tmp_path / "empty.csv",
            Concept(tmp_path / "ok", name="same"),
            Concept(tmp_path / "ok2", name="same"),
            Concept(tmp_path / "ok2", name="a/b"),
        ]
    )
    text = "\n".join(problems)
    assert len(problems) == 9, text
    assert f"root ('{missing}') does not exist. pass a folder" in text
    assert "is neither a directory nor a .jsonl/.csv file" in text
    assert text.count(".repeats") == 3
    assert "has no path column" in text
    assert "is empty" in text
    assert "is already used by concepts[7]" in text
    assert "without '/'" in text


def test_check_concepts_rejects_no_roots() -> None:
    assert len(check_concepts([])) == 1


def test_collect_raises_every_configuration_problem_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        collect(
            [tmp_path / "nope", Concept(tmp_path, repeats=-1)],
            policy=POLICY,
            missing_caption="sometimes",
            caption_extension="txt",
        )
    assert len(info.value.problems) == 4
    assert "missing_caption" in str(info.value)
    assert "caption_extension" in str(info.value)
    with pytest.raises(ConfigError):
        collect(tmp_path, policy=POLICY, caption_extension=".mp4")


# --------------------------------------------------------------------------------------------
# Links, folders named like media, special files
# --------------------------------------------------------------------------------------------


def test_dangling_symlink_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "ok.mp4")
    os.symlink(tmp_path / "gone.mp4", root / "dead.mp4")
    os.symlink(tmp_path / "gone-folder", root / "dead_folder")  # no extension: maybe a folder
    os.symlink(tmp_path / "gone.txt", root / "dead.txt")  # its sidecar: neither
    os.symlink(tmp_path / "gone.json", root / "notes.json")  # a document: just ignored
    items, ctx = run(root)
    got = by_key(items)
    dead = got["r/dead.mp4"]
    assert isinstance(dead, Failed)
    assert (dead.stage, dead.reason, dead.error_type) == ("collect", "missing", "FileNotFoundError")
    assert dead.path == str(root / "dead.mp4")
    assert "gone.mp4" in dead.message and f"file={root / 'dead.mp4'}" in dead.message
    assert got["r/dead_folder"].reason == "missing"  # type: ignore[union-attr]
    assert isinstance(got["r/ok.mp4"], Source)
    assert len(items) == 3
    assert ctx.metrics.warnings["ignored_non_media"] == 1


def test_symlink_inside_root_keeps_the_link_path(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "store" / "real.mp4")
    os.symlink(root / "store" / "real.mp4", root / "link.mp4")
    items, _ = run(root)
    got = by_key(items)
    assert got["r/link.mp4"].path == str(root / "link.mp4")  # not resolved
    assert isinstance(got["r/link.mp4"], Source)


def test_symlink_outside_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "ok.mp4")
    outside = touch(tmp_path / "elsewhere" / "video.mp4")
    os.symlink(outside, root / "escape.mp4")
    items, ctx = run(root)
    failed = by_key(items)["r/escape.mp4"]
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.error_type) == ("outside_root", "ValueError")
    assert failed.path == str(root / "escape.mp4")
    assert "allow_outside_root" in failed.message
    assert stats(ctx)["failed_by_reason"] == {"outside_root": 1}

    items, _ = run(root, allow_outside_root=True)
    allowed = by_key(items)["r/escape.mp4"]
    assert isinstance(allowed, Source)
    assert allowed.path == str(root / "escape.mp4")


def test_folder_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "real" / "a.mp4")
    touch(tmp_path / "outside" / "b.mp4")
    os.symlink(root / "real", root / "alias")
    os.symlink(tmp_path / "outside", root / "out")
    items, _ = run(root)
    got = by_key(items)
    assert isinstance(got["r/alias/a.mp4"], Source)
    assert isinstance(got["r/real/a.mp4"], Source)
    out = got["r/out"]
    assert isinstance(out, Failed) and out.reason == "outside_root"  # one failure, not walked
    assert len(items) == 3

    items, _ = run(root, allow_outside_root=True)
    assert sorted(i.key for i in items) == ["r/alias/a.mp4", "r/out/b.mp4", "r/real/a.mp4"]


# Caption sidecars follow the media rule: one that resolves outside the root is never read, and
# its media file is skipped as outside_root (collected with the caption under
# allow_outside_root=True).

SECRET = "SECRET outside the root"


def spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every caption file collect reads, in order."""
    reads: list[str] = []
    read = captions_module._read_bytes

    def spy(path: str) -> bytes:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(captions_module, "_read_bytes", spy)
    return reads


def never_read_outside(items: list[Source | Failed], reads: list[str], root: Path) -> None:
    """No read resolved outside ``root`` and the outside content is in no caption."""
    inside = os.path.realpath(root) + os.sep
    assert all(os.path.realpath(r).startswith(inside) for r in reads), reads
    assert not any(SECRET in c for s in sources(items) for c in s.captions)


def sidecar_outside_message(media: Path, sidecar: Path, root: Path) -> str:
    return (
        f"caption file ({str(sidecar)!r}) resolves to {os.path.realpath(sidecar)!r}, outside "
        f"the root {os.path.realpath(root)!r}. it was not read and its media file is skipped; "
        "move the caption under the root (or replace the link with a copy), or pass "
        "allow_outside_root=True if following links out of the root is intended. "
        f"[stage=collect file={media}]"
    )


def test_sidecar_linked_outside_the_root_skips_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    media = touch(root / "a.mp4")
    touch(root / "b.mp4")
    touch(root / "b.txt", "own caption")
    os.symlink(touch(tmp_path / "outside" / "secret.txt", SECRET), root / "a.txt")
    reads = spy_reads(monkeypatch)
    items, ctx = run(root)
    failed = by_key(items)["r/a.mp4"]
    assert isinstance(failed, Failed)
    assert (failed.stage, failed.reason, failed.error_type, failed.path) == (
        "collect",
        "outside_root",
        "ValueError",
        str(media),
    )
    assert failed.message == sidecar_outside_message(media, root / "a.txt", root)
    assert [(s.key, s.captions) for s in sources(items)] == [("r/b.mp4", ("own caption",))]
    assert stats(ctx)["failed_by_reason"] == {"outside_root": 1}
    assert reads == [str(root / "b.txt")]
    never_read_outside(items, reads, root)

    items, _ = run(root, allow_outside_root=True)
    allowed = by_key(items)["r/a.mp4"]
    assert isinstance(allowed, Source) and allowed.captions == (SECRET,)


def test_sidecar_linked_through_a_folder_link_outside_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    media = touch(root / "a.mp4")
    touch(tmp_path / "outside" / "a.txt", SECRET)
    os.symlink(tmp_path / "outside", root / "captions")  # a folder link leading out
    os.symlink(root / "captions" / "a.txt", root / "a.txt")  # a link into it: looks inside
    reads = spy_reads(monkeypatch)
    items, _ = run(root)
    got = by_key(items)
    failed = got["r/a.mp4"]
    assert isinstance(failed, Failed) and failed.reason == "outside_root"
    assert failed.message == sidecar_outside_message(media, root / "a.txt", root)
    assert os.path.realpath(tmp_path / "outside" / "a.txt") in failed.message
    assert got["r/captions"].reason == "outside_root"  # type: ignore[union-attr]
    assert len(items) == 2 and reads == []
    never_read_outside(items, reads, root)

    items, _ = run(root, allow_outside_root=True)
    assert by_key(items)["r/a.mp4"].captions == (SECRET,)  # type: ignore[union-attr]


def test_sidecar_linked_inside_the_root_is_read(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "b.mp4")
    store = root / ".captions"  # hidden: not walked itself
    os.symlink(touch(store / "a.txt", "caption a"), root / "a.txt")
    touch(store / "b.txt", "caption b")
    os.symlink(store, root / "alias")  # a folder link that stays inside
    os.symlink(root / "alias" / "b.txt", root / "b.txt")
    items, ctx = run(root)
    assert [(s.key, s.captions) for s in sources(items)] == [
        ("r/a.mp4", ("caption a",)),
        ("r/b.mp4", ("caption b",)),
    ]
    assert failures(items) == [] and stats(ctx)["failed"] == 0


def test_metadata_sidecars_follow_the_outside_root_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "ds"
    outside = tmp_path / "outside"
    secret = touch(outside / "secret.txt", SECRET)
    a = touch(base / "a.mp4")
    os.symlink(secret, base / "a.txt")  # read for a: a skip
    touch(base / "b.mp4")
    os.symlink(secret, base / "b.txt")  # b has a listed caption: not needed, not read
    os.symlink(touch(base / "store" / "c.mp4"), outside / "c.mp4")
    touch(outside / "c.txt", SECRET)
    os.symlink(outside, base / "clips")  # clips/c.mp4 comes back inside; clips/c.txt does not
    touch(base / "d.mp4")
    os.symlink(touch(base / ".captions" / "d.txt", "caption d"), base / "d.txt")  # inside
    meta = write_jsonl(
        base / "m.jsonl",
        [
            {"path": "a.mp4"},
            {"path": "b.mp4", "caption": "listed b"},
            {"path": "clips/c.mp4"},
            {"path": "d.mp4"},
        ],
    )
    reads = spy_reads(monkeypatch)
    items, ctx = run(meta)
    got = by_key(items)
    assert got["m/a.mp4"].message == sidecar_outside_message(  # type: ignore[union-attr]
        a, base / "a.txt", base
    )
    c = got["m/clips/c.mp4"]
    assert isinstance(c, Failed) and c.reason == "outside_root"
    assert c.message == sidecar_outside_message(
        base / "clips" / "c.mp4", base / "clips" / "c.txt", base
    )
    assert [(s.key, s.captions) for s in sources(items)] == [
        ("m/b.mp4", ("listed b",)),
        ("m/d.mp4", ("caption d",)),
    ]
    assert stats(ctx)["failed_by_reason"] == {"outside_root": 2}
    assert reads == [str(base / "d.txt")]
    never_read_outside(items, reads, base)

    items, _ = run(meta, allow_outside_root=True)
    assert [s.captions for s in sources(items)] == [
        (SECRET,),
        ("listed b",),
        (SECRET,),
        ("caption d",),
    ]


def test_warm_start_never_reads_a_sidecar_relinked_outside_the_root(tmp_path: Path) -> None:
    """The sample index defers folder-walk captions to sample time; a linked sidecar must not
    be re-read there, or relinking it outside the root would bypass the rule above."""
    from wan_data.index.sample_index import load_index, save_index

    root = tmp_path / "r"
    touch(root / "a.mp4")
    caption = touch(root / ".captions" / "a.txt", "caption a")  # hidden: no watched folder
    os.symlink(caption, root / "a.txt")
    secret = touch(tmp_path / "outside" / "secret.txt", SECRET)
    items, _ = run(root)
    [source] = sources(items)
    assert source.captions == ("caption a",)
    old = time.time() - 60
    for path in (root / "a.mp4", caption, secret, root / ".captions", root):
        os.utime(path, (old, old))
    index = tmp_path / "index.npz"
    saved = save_index(
        index,
        fingerprint="f",
        sources=[source],
        probed=[],
        samples=[],
        setup_part={},
        folders=[str(root)],
        deferred=[(True, ())],  # what the dataset passes for missing_caption="empty"
        files=[],
        caption_extension=".txt",
        extra={},
        started_ns=time.time_ns(),
    )
    assert saved
    loaded = load_index(index, "f")
    assert loaded is not None and loaded.sources[0].captions == ("caption a",)

    caption.unlink()
    os.symlink(secret, caption)  # relinked outside; no folder the snapshot watches changes
    os.utime(root / ".captions", (old, old))
    assert load_index(index, "f") is None  # a full construction, where collect decides
    items, _ = run(root)
    assert [(f.key, f.reason) for f in failures(items)] == [("r/a.mp4", "outside_root")]


def test_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "sub" / "a.mp4")
    os.symlink(root, root / "sub" / "up")
    items, ctx = run(root)
    assert [i.key for i in items] == ["r/sub/a.mp4"]
    assert ctx.metrics.warnings["symlink_loop"] == 1


def test_directory_named_like_media_fails_and_is_still_walked(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "clip.mp4" / "inner.mp4")
    touch(root / "clip.mp4" / "inner.txt", "inner caption")
    items, ctx = run(root)
    assert [i.key for i in items] == ["r/clip.mp4", "r/clip.mp4/inner.mp4"]
    failed, inner = items
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.error_type) == ("not_a_file", "IsADirectoryError")
    assert failed.path == str(root / "clip.mp4")
    assert isinstance(inner, Source) and inner.captions == ("inner caption",)
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (2, 1, 1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_with_media_extension_is_not_a_file(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    os.mkfifo(root / "pipe.mp4")
    os.mkfifo(root / "pipe.log")
    items, ctx = run(root)
    [failed] = items
    assert isinstance(failed, Failed)
    assert failed.reason == "not_a_file"
    assert failed.key == "r/pipe.mp4"
    assert ctx.metrics.warnings["ignored_non_media"] == 1


def test_unlistable_folder_is_one_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    touch(root / "locked" / "b.mp4")
    real_list_dir = walk_module._list_dir

    def list_dir(path: str) -> list[os.DirEntry[str]]:
        if path.endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_list_dir(path)

    monkeypatch.setattr(walk_module, "_list_dir", list_dir)
    items, _ = run(root)
    assert [i.key for i in items] == ["r/a.mp4", "r/locked"]
    failed = items[1]
    assert isinstance(failed, Failed) and failed.reason == "permission_denied"


def test_transient_listing_error_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "r" / "a.mp4")
    real_list_dir = walk_module._list_dir
    calls: list[str] = []

    def flaky(path: str) -> list[os.DirEntry[str]]:
        calls.append(path)
        if len(calls) == 1:
            raise TimeoutError("NFS timed out")
        return real_list_dir(path)

    monkeypatch.setattr(walk_module, "_list_dir", flaky)
    items, _ = run(tmp_path / "r")
    assert [i.key for i in items] == ["r/a.mp4"]
    assert len(calls) == 2


# --------------------------------------------------------------------------------------------
# Metadata files
# --------------------------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[object]) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return touch(path, text)


def test_jsonl_metadata(tmp_path: Path) -> None:
    base = tmp_path / "ds"
    touch(base / "videos" / "b.mp4")
    touch(base / "videos" / "a.mp4")
    touch(base / "img.png")
    touch(base / "img.txt", "sidecar caption")
    touch(base / "x.mov")
    touch(base / "y.webm")
    touch(tmp_path / "escape.mp4")
    touch(base / "notes.md")
    meta = write_jsonl(
        base / "train.jsonl",
        [
            {"path": "videos/b.mp4", "caption": "b one\nb two"},
            {"file": "./videos/a.mp4", "caption": ["first", "  ", "second"]},
            "",
            "   ",
            "{not json",
            {"video": "img.png"},  # no caption: the sidecar
            {"image": "x.mov", "text": ""},  # empty caption: the concept caption
            {"path": "y.webm", "prompt": "via prompt"},
            ["a", "list"],
            {"caption": "no path"},
            {"path": 5},
            {"path": "gone.mp4", "caption": "c"},
            {"path": "../escape.mp4"},
            {"path": "notes.md"},
            {"path": "videos/a.mp4", "caption": {"bad": 1}},
        ],
    )
    items, ctx = run(Concept(meta, caption="concept caption"))
    assert [i.key for i in items] == [
        "train/videos/b.mp4",
        "train/videos/a.mp4",
        "train:5",
        "train/img.png",
        "train/x.mov",
        "train/y.webm",
        "train:9",
        "train:10",
        "train:11",
        "train/gone.mp4",
        "train/../escape.mp4",
        "train/notes.md",
        "train:15",
    ]
    got = by_key(items)
    assert got["train/videos/b.mp4"].path == str(base / "videos" / "b.mp4")
    assert got["train/videos/b.mp4"].captions == ("b one", "b two")  # type: ignore[union-attr]
    assert got["train/videos/a.mp4"].captions == ("first", "second")  # type: ignore[union-attr]
    assert got["train/img.png"].captions == ("sidecar caption",)  # type: ignore[union-attr]
    assert got["train/x.mov"].captions == ("concept caption",)  # type: ignore[union-attr]
    assert got["train/y.webm"].captions == ("via prompt",)  # type: ignore[union-attr]
    assert got["train/x.mov"].media_type == "video"  # type: ignore[union-attr]
    reasons = {f.key: (f.reason, f.error_type) for f in failures(items)}
    assert reasons == {
        "train:5": ("bad_metadata_line", "JSONDecodeError"),
        "train:9": ("bad_metadata_line", "TypeError"),
        "train:10": ("bad_metadata_line", "KeyError"),
        "train:11": ("bad_metadata_line", "TypeError"),
        "train/gone.mp4": ("missing", "FileNotFoundError"),
        "train/../escape.mp4": ("outside_root", "ValueError"),
        "train/notes.md": ("unsupported_extension", "ValueError"),
        "train:15": ("bad_metadata_line", "TypeError"),
    }
    assert got["train:5"].path == f"{meta}:5"
    assert f"file={meta}:5" in got["train:5"].message  # type: ignore[union-attr]
    assert got["train/gone.mp4"].path == str(base / "gone.mp4")
    assert got["train/../escape.mp4"].path == str(tmp_path / "escape.mp4")
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (13, 5, 8)
    assert s["failed_by_reason"] == {
        "bad_metadata_line": 5,
        "missing": 1,
        "outside_root": 1,
        "unsupported_extension": 1,
    }

    items, _ = run(meta, allow_outside_root=True)
    assert isinstance(by_key(items)["train/../escape.mp4"], Source)


def test_jsonl_absolute_paths_and_duplicates(tmp_path: Path) -> None:
    video = touch(tmp_path / "store" / "a.mp4")
    meta = write_jsonl(
        tmp_path / "lists" / "m.jsonl",
        [{"path": str(video), "caption": "one"}, {"path": str(video), "caption": "two"}],
    )
    items, _ = run(meta)
    assert [f.reason for f in failures(items)] == ["outside_root", "outside_root"]
    items, ctx = run(meta, allow_outside_root=True)
    assert [(i.key, i.captions) for i in sources(items)] == [
        (f"m/{video.as_posix()}", ("one",)),
        (f"m/{video.as_posix()}~2", ("two",)),
    ]
    assert ctx.metrics.warnings["duplicate_metadata_entries"] == 1


def test_jsonl_bom_and_decode_errors(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    meta = touch(
        tmp_path / "m.jsonl",
        b'\xef\xbb\xbf{"path": "a.mp4", "caption": "x"}\n{"path": "b.mp4", "caption": "caf\xe9"}\n',
    )
    items, ctx = run(meta)
    assert [s.captions for s in sources(items)] == [("x",), ("caf\ufffd",)]
    assert ctx.metrics.warnings["metadata_decode_errors"] == 1


def test_metadata_entry_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "d.mp4").mkdir()
    meta = write_jsonl(tmp_path / "m.jsonl", [{"path": "d.mp4"}])
    items, _ = run(meta)
    [failed] = items
    assert isinstance(failed, Failed) and failed.reason == "not_a_file"


def test_metadata_missing_caption_modes(tmp_path: Path) -> None:
    touch(tmp_path / "my_clip.mp4")
    touch(tmp_path / "b.mp4")
    meta = write_jsonl(tmp_path / "m.jsonl", [{"path": "my_clip.mp4"}, {"path": "b.mp4"}])
    items, _ = run(meta, missing_caption="filename")
    assert [s.captions for s in sources(items)] == [("my clip",), ("b",)]
    items, _ = run(meta, missing_caption="skip")
    assert [f.reason for f in failures(items)] == ["missing_caption", "missing_caption"]
    with pytest.raises(ConfigError) as info:
        run(meta, missing_caption="error")
    assert len(info.value.problems) == 2


def test_csv_metadata(tmp_path: Path) -> None:
    base = tmp_path / "ds"
    touch(base / "clips" / "a.mp4")
    touch(base / "clips" / "b.png")
    touch(base / "clips" / "b.txt", "sidecar")
    touch(base / "c.mkv")
    touch(tmp_path / "escape.png")
    meta = touch(
        base / "list.csv",
        "\ufeff\n"
        "Video , Prompt,extra\n"
        'clips/a.mp4,"line one\nline two",1\n'
        "\n"
        "clips/b.png,,2\n"
        ",orphan caption,3\n"
        "gone.mp4,x,4\n"
        "c.mkv\n"
        "../escape.png,bad,5\n",
    )
    items, ctx = run(Concept(meta, repeats=2))
    assert [i.key for i in items] == [
        "list/clips/a.mp4",
        "list/clips/a.mp4@1",
        "list/clips/b.png",
        "list/clips/b.png@1",
        "list:7",
        "list/gone.mp4",
        "list/c.mkv",
        "list/c.mkv@1",
        "list/../escape.png",
    ]
    got = by_key(items)
    assert got["list/clips/a.mp4"].captions == ("line one", "line two")  # type: ignore[union-attr]
    assert got["list/clips/b.png"].captions == ("sidecar",)  # type: ignore[union-attr]
    assert got["list/c.mkv"].captions == ()  # type: ignore[union-attr]
    assert got["list:7"].reason == "bad_metadata_line"  # type: ignore[union-attr]
    assert got["list:7"].path == f"{meta}:7"
    assert got["list/gone.mp4"].reason == "missing"  # type: ignore[union-attr]
    assert got["list/../escape.png"].reason == "outside_root"  # type: ignore[union-attr]
    s = stats(ctx)
    assert (s["in"], s["out"], s["failed"]) == (6, 6, 3)


def test_csv_without_path_column_is_a_config_error(tmp_path: Path) -> None:
    meta = touch(tmp_path / "m.csv", "name,caption\na.mp4,x\n")
    with pytest.raises(ConfigError) as info:
        collect(meta, policy=POLICY)
    assert "has no path column" in str(info.value)


# --------------------------------------------------------------------------------------------
# Counters and logging against the ground truth
# --------------------------------------------------------------------------------------------


def test_counters_match_the_ground_truth(tmp_path: Path) -> None:
    rng = random.Random(3)
    root = tmp_path / "r"
    truth = Counter[str]()
    n_sources = 0
    for i in range(60):
        kind = rng.choice(["video", "image", "doc", "dangling", "hidden", "captioned"])
        sub = root / f"d{rng.randrange(4)}"
        if kind == "video":
            touch(sub / f"v{i}.mp4")
            n_sources += 1
        elif kind == "image":
            touch(sub / f"i{i}.webp")
            n_sources += 1
        elif kind == "captioned":
            touch(sub / f"c{i}.mov")
            touch(sub / f"c{i}.txt", "caption")
            n_sources += 1
        elif kind == "doc":
            touch(sub / f"n{i}.json")
            truth["ignored_non_media"] += 1
        elif kind == "dangling":
            sub.mkdir(parents=True, exist_ok=True)
            os.symlink(tmp_path / "none.mp4", sub / f"x{i}.mp4")
            truth["missing"] += 1
        else:
            touch(sub / f".h{i}.mp4")
    items, ctx = run([Concept(root, repeats=2), Concept(root, name="again")])
    s = stats(ctx)
    assert s["in"] == 2 * (n_sources + truth["missing"])
    assert s["out"] == 3 * n_sources == len(sources(items))
    assert s["failed"] == 2 * truth["missing"] == len(failures(items))
    assert s["failed_by_reason"] == ({"missing": 2 * truth["missing"]} if truth["missing"] else {})
    assert ctx.metrics.warnings["ignored_non_media"] == 2 * truth["ignored_non_media"]
    assert ctx.metrics.stage("collect").seconds >= 0


def test_logs_a_warning_per_failure_and_debug_per_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "r"
    touch(root / "a.mp4")
    os.symlink(tmp_path / "none.mp4", root / "b.mp4")
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        run(Concept(root, repeats=2))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG and "r/a.mp4" in r.message]
    assert len(warnings) == 1 and "b.mp4" in warnings[0].getMessage()
    # The stage trace: the entry in, then one Source per repeat out.
    assert len(debugs) == 3
    assert sum("in=Entry" in r.getMessage() for r in debugs) == 1
    assert sum("out=Source" in r.getMessage() for r in debugs) == 2
