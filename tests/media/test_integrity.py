"""The opt-in integrity check: damage FFmpeg conceals is reported, environment faults are not.

Media is generated in temporary folders with the ffmpeg CLI (tiny, one keyframe per clip) and
damaged by XORing bytes inside the keyframe's picture data, found with ffprobe's packet table.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from media import _has_encoder, damage_bytes, ffmpeg_available, key_picture_data, make_video

from wan_data.errors import ConfigError, FatalError, SampleError, TransientError
from wan_data.failures.policy import Action, ErrorPolicy
from wan_data.media.integrity import (
    FfmpegNotFoundError,
    IntegrityResult,
    IntegrityTimeoutError,
    check_integrity,
    integrity_command,
    integrity_error,
    parse_ffmpeg_errors,
)

needs_ffmpeg = pytest.mark.skipif(not ffmpeg_available(), reason="needs the ffmpeg CLI")

# Captured from ffmpeg 5.1 on an H.264 file with damaged IDR slice data (the probe decoder and the
# main decoder both print the error, at different addresses).
H264_STDERR = (
    "[h264 @ 0x55e354b19f40] top block unavailable for requested intra mode -1\n"
    "[h264 @ 0x55e354b19f40] error while decoding MB 2 0, bytestream 1086\n"
    "[h264 @ 0x55e354b1c040] top block unavailable for requested intra mode -1\n"
    "[h264 @ 0x55e354b1c040] error while decoding MB 2 0, bytestream 1086\n"
    "file:/data/d_libx264.mp4: corrupt decoded frame in stream 0\n"
)


# ---------------------------------------------------------------- stderr parsing (no ffmpeg)


def test_parse_strips_pointer_addresses_and_duplicates() -> None:
    assert parse_ffmpeg_errors(H264_STDERR) == (
        "[h264] top block unavailable for requested intra mode -1",
        "[h264] error while decoding MB 2 0, bytestream 1086",
        "file:/data/d_libx264.mp4: corrupt decoded frame in stream 0",
    )


def test_parse_drops_noise_and_blank_lines() -> None:
    stderr = (
        "\n[mpeg4 @ 0x5588bb43bc40] ac-tex damaged at 3 0\n"
        "    Last message repeated 3 times\n"
        "[mpeg4 @ 0x5588bb43bc40] Error at MB: 3\n"
        "Conversion failed!\n\n"
    )
    assert parse_ffmpeg_errors(stderr) == (
        "[mpeg4] ac-tex damaged at 3 0",
        "[mpeg4] Error at MB: 3",
    )


def test_parse_handles_carriage_returns_colours_windows_pointers_and_long_lines() -> None:
    stderr = (
        "\x1b[0;31m[hevc @ 000001f2a3b4c5d0] Could not find ref with POC 7\x1b[0m\r\n"
        "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5608eef62ac0] moov atom not found\r" + "x" * 1000
    )
    lines = parse_ffmpeg_errors(stderr)
    assert lines[0] == "[hevc] Could not find ref with POC 7"
    assert lines[1] == "[mov,mp4,m4a,3gp,3g2,mj2] moov atom not found"
    assert len(lines[2]) == 300


def test_parse_caps_the_number_of_lines() -> None:
    stderr = "".join(f"[h264 @ 0x1234] error while decoding MB {i} 0\n" for i in range(50))
    assert len(parse_ffmpeg_errors(stderr)) == 5
    assert parse_ffmpeg_errors(stderr, limit=2) == (
        "[h264] error while decoding MB 0 0",
        "[h264] error while decoding MB 1 0",
    )
    assert parse_ffmpeg_errors("") == ()


def test_command_decodes_first_video_stream_with_error_detection() -> None:
    cmd = integrity_command("rel/concat:a|b.mp4", ffmpeg="/usr/bin/ffmpeg", threads=3)
    assert cmd[0] == "/usr/bin/ffmpeg"
    assert all(isinstance(a, str) for a in cmd)
    i = cmd.index("-i")
    assert cmd[i + 1] == "file:" + os.path.abspath("rel/concat:a|b.mp4")  # never a protocol
    assert cmd[cmd.index("-threads") + 1] == "3" and cmd.index("-threads") < i  # decoder option
    assert cmd[cmd.index("-err_detect") + 1] == "crccheck+bitstream+buffer+explode"
    assert {"-xerror", "-nostdin"} <= set(cmd)
    assert cmd[cmd.index("-v") + 1] == "error"
    assert cmd[i + 2 :] == ["-map", "0:v:0", "-f", "null", "-"]


def test_integrity_error_is_a_corrupt_frames_skip() -> None:
    result = IntegrityResult(
        ok=False, errors=parse_ffmpeg_errors(H264_STDERR), seconds=0.1, ffmpeg_version="5.1"
    )
    exc = integrity_error("/data/clip.mp4", result)
    assert isinstance(exc, SampleError) and exc.reason == "corrupt_frames"
    text = str(exc)
    assert text.startswith("file ('/data/clip.mp4') has decode errors")
    assert "[h264] top block unavailable for requested intra mode -1" in text
    assert "ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4" in text and "remove it" in text
    assert "[stage=integrity]" in text
    assert ErrorPolicy().classify(exc) == ErrorPolicy().classify(pickle.loads(pickle.dumps(exc)))
    assert ErrorPolicy().classify(exc).action is Action.SKIP
    assert ErrorPolicy().classify(exc).reason == "corrupt_frames"


def test_negative_threads_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="threads"):
        check_integrity(str(tmp_path / "x.mp4"), threads=-1)


# ---------------------------------------------------------------- environment faults


def test_missing_ffmpeg_is_fatal_never_a_skip(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not checked")
    with pytest.raises(FfmpegNotFoundError, match="/nonexistent/ffmpeg") as info:
        check_integrity(str(video), ffmpeg="/nonexistent/ffmpeg")
    assert isinstance(info.value, FatalError)
    assert ErrorPolicy().classify(info.value).action is Action.FATAL
    with pytest.raises(FfmpegNotFoundError):  # the policy's runner re-raises, never skips
        ErrorPolicy().call(
            lambda: check_integrity(str(video), ffmpeg="/nonexistent/ffmpeg"),
            stage="integrity",
            key="k",
            path=str(video),
        )


def _fake_ffmpeg(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake_ffmpeg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_nonzero_exit_without_an_error_line_is_not_ok(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    result = check_integrity(str(video), ffmpeg=_fake_ffmpeg(tmp_path, "exit 3"))
    assert not result.ok and result.returncode == 3
    assert result.errors == ("ffmpeg exited with status 3 without an error message",)
    assert result.ffmpeg_version == "unknown"
    crashed = check_integrity(str(video), ffmpeg=_fake_ffmpeg(tmp_path, "kill -SEGV $$"))
    assert not crashed.ok
    assert crashed.errors == ("ffmpeg was killed by SIGSEGV without an error message",)


def test_missing_file_or_directory_is_skipped_for_what_it_is_not_as_corrupt(
    tmp_path: Path,
) -> None:
    fake = _fake_ffmpeg(tmp_path, "exit 0")
    with pytest.raises(FileNotFoundError) as missing:
        check_integrity(str(tmp_path / "gone.mp4"), ffmpeg=fake)
    assert ErrorPolicy().classify(missing.value).reason == "missing"
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(IsADirectoryError) as folder:
        check_integrity(str(tmp_path / "folder.mp4"), ffmpeg=fake)
    assert ErrorPolicy().classify(folder.value).reason == "not_a_file"


def test_timeout_kills_and_reaps_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An ffmpeg that never finishes, like one stuck on a hung mount (a FIFO no longer gets
    # that far: it is refused before ffmpeg starts, see the test below).
    source = tmp_path / "stalled.mp4"
    source.write_bytes(b"\0" * 64)
    stalled = tmp_path / "ffmpeg"
    stalled.write_text("#!/bin/sh\nexec sleep 60\n")
    stalled.chmod(0o755)
    started: list[subprocess.Popen[bytes]] = []

    class Recording(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    t0 = time.monotonic()
    with pytest.raises(IntegrityTimeoutError, match="ran past its timeout") as info:
        check_integrity(str(source), timeout_seconds=0.5, ffmpeg=str(stalled))
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, (TransientError, TimeoutError))
    assert ErrorPolicy().classify(info.value).action is Action.RETRY
    (proc,) = started
    assert proc.returncode is not None  # killed and waited for
    assert not Path(f"/proc/{proc.pid}").exists()  # reaped: not even a zombie is left


@needs_ffmpeg
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_fifo_is_refused_before_ffmpeg_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source replaced by a FIFO after construction: ffmpeg would block on it until the
    # timeout (600 s by default), once per attempt.
    fifo = tmp_path / "replaced.mp4"
    os.mkfifo(fifo)
    ran: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    t0 = time.monotonic()
    with pytest.raises(SampleError) as info:
        check_integrity(str(fifo), timeout_seconds=30)
    assert time.monotonic() - t0 < 5 and ran == []
    assert info.value.reason == "not_a_file"
    assert "FIFO" in str(info.value) and str(fifo) in str(info.value)
    assert "stage=integrity" in str(info.value)


# ---------------------------------------------------------------- real decodes


@pytest.fixture(scope="module")
def clean_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ffmpeg_available():
        pytest.skip("needs the ffmpeg CLI")
    path = tmp_path_factory.mktemp("integrity") / "clean.mp4"
    make_video(path, width=64, height=64, fps=24, num_frames=48, extra=["-g", "1000"])
    return path


def test_clean_h264_is_ok(clean_h264: Path) -> None:
    result = check_integrity(str(clean_h264))
    assert result.ok and result.errors == () and result.returncode == 0
    assert result.ffmpeg_version[:1].isdigit() or result.ffmpeg_version.startswith("n")
    assert 0 < result.seconds < 30


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_damaged_h264_keyframe_is_detected_although_torchcodec_decodes_it(
    clean_h264: Path, tmp_path: Path, fraction: float
) -> None:
    from torchcodec.decoders import VideoDecoder

    damaged = tmp_path / "damaged.mp4"
    damage_bytes(clean_h264, damaged, key_picture_data(clean_h264, "h264"), fraction)

    result = check_integrity(str(damaged))
    assert not result.ok and result.returncode != 0
    assert result.errors and all(" @ 0x" not in line for line in result.errors)
    assert any(line.startswith("[h264]") for line in result.errors)

    # The reason this check exists: torchcodec conceals the damage and serves changed frames.
    indices = list(range(48))
    clean = VideoDecoder(str(clean_h264)).get_frames_at(indices).data
    served = VideoDecoder(str(damaged)).get_frames_at(indices).data
    assert served.shape == clean.shape
    assert not bool((served == clean).all())


@pytest.mark.skipif(not ffmpeg_available() or not _has_encoder("mpeg4"), reason="needs mpeg4")
def test_damaged_mpeg4_keyframe_is_detected(tmp_path: Path) -> None:
    clean = tmp_path / "clean.mp4"
    make_video(
        clean, width=64, height=64, fps=24, num_frames=48, codec="mpeg4", extra=["-g", "1000"]
    )
    assert check_integrity(str(clean)).ok
    damaged = tmp_path / "damaged.mp4"
    damage_bytes(clean, damaged, key_picture_data(clean, None), 0.5)
    result = check_integrity(str(damaged))
    assert not result.ok
    assert any(line.startswith("[mpeg4]") for line in result.errors)


@pytest.mark.skipif(not ffmpeg_available() or not _has_encoder("libx265"), reason="needs x265")
def test_hevc_picture_hash_catches_damage_through_crccheck(tmp_path: Path) -> None:
    # rskip=0: x265 3.5's default rskip writes chroma hashes that mismatch on clean files.
    clean = tmp_path / "clean.mp4"
    params = "log-level=error:hash=1:rskip=0"
    extra = ["-g", "1000", "-x265-params", params]
    make_video(clean, width=64, height=64, fps=24, num_frames=24, codec="libx265", extra=extra)
    assert check_integrity(str(clean)).ok
    damaged = tmp_path / "damaged.mp4"
    damage_bytes(clean, damaged, key_picture_data(clean, "hevc"), 0.5)
    result = check_integrity(str(damaged))
    assert not result.ok
    assert any("checksum" in line for line in result.errors)


@needs_ffmpeg
def test_file_name_that_looks_like_a_protocol_is_read_from_disk(
    clean_h264: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "concat:clip|http:x.mp4"
    shutil.copy(clean_h264, odd)
    assert check_integrity(str(odd)).ok


def test_real_media_passes(shared_media: Path) -> None:
    if not ffmpeg_available():
        pytest.skip("needs the ffmpeg CLI")
    for name in ("nasa_13013.mp4", "av1_video.mkv", "h265_video.mp4"):
        result = check_integrity(str(shared_media / name))
        assert result.ok, (name, result.errors)
