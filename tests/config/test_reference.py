"""The configuration reference (docs/configuration.md) and the peer names it is built from.

The reference is generated, so these tests keep it honest: the committed file must be what the
code generates now, and every option of ours must have an entry in the peer tables, so a new
option cannot be added without deciding what musubi-tuner, diffusion-pipe and OneTrainer call
it (``None`` when they have no such thing).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from wan_data.config.dataset_config import DatasetConfig, option_names
from wan_data.config.groups import GROUPS, group_fields
from wan_data.config.peers import (
    CONCEPT_PEERS,
    OPTION_PEERS,
    PEER_ONLY,
    PEER_TITLES,
    SAMPLING_PEERS,
    STAGE_PEERS,
    PeerNames,
)
from wan_data.config.reference import AUGMENTATIONS, SAMPLING_DESCRIPTIONS, main, reference_markdown
from wan_data.media.sampling import SAMPLING_MODES
from wan_data.sources.concepts import PER_SOURCE_OPTIONS, Concept

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
REGENERATE = "python -m wan_data.config.reference docs/configuration.md"


def test_committed_reference_is_the_generated_one() -> None:
    committed = REFERENCE.read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        f"docs/configuration.md is out of date with the configuration types; regenerate it "
        f"with `{REGENERATE}`"
    )


def test_every_option_has_peer_names() -> None:
    own = [f.name for f in dataclasses.fields(DatasetConfig) if "option" in f.metadata]
    grouped = [f.name for group in GROUPS for f in group_fields(group)]
    ours = set(own) | set(grouped)
    assert ours == set(option_names())
    missing = sorted(ours - set(OPTION_PEERS))
    assert not missing, f"options without an entry in peers.OPTION_PEERS: {missing}"
    stale = sorted(set(OPTION_PEERS) - ours)
    assert not stale, f"peers.OPTION_PEERS names options that do not exist: {stale}"


def test_every_concept_field_has_peer_names() -> None:
    fields = {f.name for f in dataclasses.fields(Concept)}
    assert fields == set(CONCEPT_PEERS)


def test_every_sampling_mode_and_stage_has_peer_names() -> None:
    assert set(SAMPLING_PEERS) == set(SAMPLING_MODES)
    assert set(SAMPLING_DESCRIPTIONS) == set(SAMPLING_MODES)
    assert set(STAGE_PEERS) == {stage.__name__ for stage in AUGMENTATIONS}


def _all_entries() -> list[tuple[str, PeerNames]]:
    return [
        *OPTION_PEERS.items(),
        *(("Concept." + k, v) for k, v in CONCEPT_PEERS.items()),
        *(("sampling=" + k, v) for k, v in SAMPLING_PEERS.items()),
        *STAGE_PEERS.items(),
    ]


@pytest.mark.parametrize(("name", "peers"), _all_entries())
def test_peer_names_are_non_empty_strings_or_none(name: str, peers: PeerNames) -> None:
    assert isinstance(peers, PeerNames), name
    assert set(peers.names()) == set(PEER_TITLES)
    for peer, value in peers.names().items():
        assert value is None or (isinstance(value, str) and value.strip()), (name, peer, value)
        if value is not None:
            assert value == value.strip() and "\n" not in value, (name, peer, value)
    assert isinstance(peers.note, str)


def test_peer_only_entries_name_a_known_peer() -> None:
    for item in PEER_ONLY:
        assert item.peer in PEER_TITLES
        assert item.name.strip() and item.instead.strip()


def test_reference_lists_every_option_concept_field_and_per_source_option() -> None:
    text = reference_markdown()
    for name in option_names():
        assert f"| `{name}` |" in text, name
    for f in dataclasses.fields(Concept):
        assert f"| `{f.name}` |" in text, f.name
    for name in PER_SOURCE_OPTIONS:
        assert f"`{name}`" in text, name
    for stage in AUGMENTATIONS:
        assert f"| `{stage.__name__}` |" in text


def test_main_writes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "configuration.md"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == reference_markdown()
    assert main([]) == 0
    assert capsys.readouterr().out == reference_markdown()


def test_collect_caption_tools_table_agrees_with_the_peer_names() -> None:
    """docs/collect.md's caption-tools table is written by hand: its peer columns must be the
    reference's (one column per peer, the names of ``OPTION_PEERS``, "—" for none)."""
    text = (REFERENCE.parent / "collect.md").read_text(encoding="utf-8")
    section = text[text.index("## Caption tools") :]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["option", "effect", *PEER_TITLES.values()]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`").split(":")[0]] = cells[2:]
    assert set(rows) == {
        "caption_prefix",
        "caption_suffix",
        "shuffle_tags",
        "keep_tokens",
        "tag_dropout",
    }
    for option, cells in rows.items():
        names = OPTION_PEERS[option].names()
        expected = [f"`{names[peer]}`" if names[peer] else "—" for peer in PEER_TITLES]
        assert cells == expected, option
