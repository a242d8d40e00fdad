"""errors.py: the message format and exceptions that survive DataLoader workers."""

from __future__ import annotations

import pickle

import pytest

from wan_data.errors import (
    ConfigError,
    FatalError,
    PipelineHealthError,
    SampleError,
    TransientError,
    WanDataError,
    format_error,
)

ALL_ERRORS = [ConfigError, FatalError, PipelineHealthError, SampleError, TransientError]


def test_format_error_full() -> None:
    text = format_error(
        "frame count",
        48,
        "must be 4k+1.",
        "use 49.",
        path="/data/a.mp4",
        stage="decode",
    )
    assert text == "frame count (48) must be 4k+1. use 49. [stage=decode file=/data/a.mp4]"


def test_format_error_string_value_is_quoted_so_blanks_show() -> None:
    assert format_error("caption", " ", "must not be blank") == "caption (' ') must not be blank."


def test_format_error_without_hint_or_location() -> None:
    assert format_error("fps", 0.0, "must be > 0") == "fps (0.0) must be > 0."


def test_format_error_only_one_location() -> None:
    assert format_error("x", 1, "r", path="/p") == "x (1) r. [file=/p]"
    assert format_error("x", 1, "r", stage="probe") == "x (1) r. [stage=probe]"


def test_config_error_lists_every_problem() -> None:
    err = ConfigError(["fps (0) must be > 0.", "frames (8) must be 4k+1."])
    assert err.problems == ("fps (0) must be > 0.", "frames (8) must be 4k+1.")
    assert str(err) == (
        "2 configuration problems:\n  - fps (0) must be > 0.\n  - frames (8) must be 4k+1."
    )
    assert isinstance(err, ValueError)
    assert isinstance(err, WanDataError)


def test_config_error_single_problem_wording() -> None:
    assert str(ConfigError(["a."])) == "1 configuration problem:\n  - a."
    err = ConfigError("just one.")
    assert err.problems == ("just one.",)
    assert str(err) == "just one."


def test_sample_error_reason() -> None:
    err = SampleError("file ('/a.mp4') is too short.", reason="too_short")
    assert err.reason == "too_short"
    assert SampleError("m").reason == "sample_error"


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_pickle_round_trip(cls: type[WanDataError]) -> None:
    err = ConfigError(["a.", "b."]) if cls is ConfigError else cls("something (1) broke.")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)


def test_pickle_keeps_attributes() -> None:
    config = pickle.loads(pickle.dumps(ConfigError(["a.", "b."])))
    assert config.problems == ("a.", "b.")
    sample = pickle.loads(pickle.dumps(SampleError("m.", reason="unreadable")))
    assert sample.reason == "unreadable"
    assert str(sample) == "m."


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_rebuild_from_message_like_dataloader(cls: type[WanDataError]) -> None:
    # torch.utils.data re-raises a worker's exception as ``exc_type(message)``.
    original = ConfigError(["a.", "b."]) if cls is ConfigError else cls("x (1) broke.")
    message = f"Caught {cls.__name__} in DataLoader worker process 0.\nOriginal {original}"
    rebuilt = cls(message)
    assert type(rebuilt) is cls
    assert str(rebuilt) == message
