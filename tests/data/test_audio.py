"""harken.data.audio: decoding, mix-down, resampling, the long-clip policy and the bad-file errors.

Every clip is synthesised here with numpy and written with soundfile (no network, no fixtures
on disk).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from harken.data.audio import AudioError, AudioLoader, audio_info, load_audio, verify_audio


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz_and_amp(x: np.ndarray, sr: int) -> tuple[float, float]:
    """Frequency and amplitude of the strongest sinusoid (Hann window, amplitude-corrected)."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    k = int(np.argmax(spec))
    return k * sr / len(x), float(spec[k])


def write(path, data, sr, **kw):
    sf.write(str(path), data, sr, **kw)
    return str(path)


# --- formats -------------------------------------------------------------------------------


def test_wav_roundtrip_is_exact_at_the_model_rate(tmp_path):
    x = tone(440, 16000, 0.5)
    p = write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, x)


def test_flac_roundtrip_within_16_bit_quantisation(tmp_path):
    x = tone(440, 16000, 0.5)
    p = write(tmp_path / "a.flac", x, 16000)  # PCM_16
    y = load_audio(p)
    assert len(y) == len(x)
    assert np.max(np.abs(y - x)) <= 1 / 32768 + 1e-7


def test_ogg_vorbis_roundtrip_keeps_length_and_pitch(tmp_path):
    x = tone(440, 16000, 1.0)
    p = write(tmp_path / "a.ogg", x, 16000, format="OGG", subtype="VORBIS")
    y = load_audio(p)
    assert len(y) == len(x)
    hz, amp = peak_hz_and_amp(y, 16000)
    assert hz == pytest.approx(440, abs=1.5) and amp == pytest.approx(0.5, abs=0.03)


def test_mp3_where_libsndfile_can(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    x = tone(440, 16000, 1.0)
    p = write(tmp_path / "a.mp3", x, 16000, format="MP3")
    y = load_audio(p)
    assert abs(len(y) - len(x)) < 1200  # encoder padding at most about one frame
    hz, _ = peak_hz_and_amp(y, 16000)
    assert hz == pytest.approx(440, abs=2)


# --- mix-down and resampling ---------------------------------------------------------------


def test_stereo_48k_is_averaged_then_resampled_to_16k(tmp_path):
    # Left: 440 Hz at 0.8; right: 1000 Hz at 0.4. Averaging halves each: 0.4 and 0.2.
    sr = 48000
    left, right = tone(440, sr, 1.0, amp=0.8), tone(1000, sr, 1.0, amp=0.4)
    p = write(tmp_path / "st.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    y = load_audio(p, sampling_rate=16000)
    assert y.dtype == np.float32 and y.shape == (16000,)
    # The same tones sampled directly at 16 kHz: exact up to the resampler's passband error.
    t = np.arange(16000) / 16000
    expected = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t)
    interior = slice(200, -200)  # the filter's edges see zeros beyond the clip
    assert np.max(np.abs(y[interior] - expected[interior])) < 2e-3
    spec = np.abs(np.fft.rfft(y)) * 2 / len(y)  # 1 Hz bins, both tones on a bin
    assert spec[440] == pytest.approx(0.4, abs=0.01)
    assert spec[1000] == pytest.approx(0.2, abs=0.01)


def test_stereo_with_a_silent_channel_halves_the_amplitude(tmp_path):
    sr = 16000
    left = tone(440, sr, 1.0, amp=0.6)
    p = write(tmp_path / "half.wav", np.stack([left, np.zeros_like(left)], axis=1), sr, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), left / 2, atol=1e-7)


def test_multichannel_is_the_mean_of_all_channels(tmp_path):
    data = np.tile(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32), (800, 1))  # [frames, 4]
    p = write(tmp_path / "quad.wav", data, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), np.full(800, 0.25, dtype=np.float32), atol=1e-7)


def test_upsampling_8k_doubles_the_length(tmp_path):
    p = write(tmp_path / "lo.wav", tone(300, 8000, 0.5), 8000, subtype="FLOAT")
    y = load_audio(p, sampling_rate=16000)
    assert len(y) == 8000
    hz, amp = peak_hz_and_amp(y, 16000)
    assert hz == pytest.approx(300, abs=2.1) and amp == pytest.approx(0.5, abs=0.03)


# --- long clips ----------------------------------------------------------------------------


def test_truncate_keeps_exactly_the_first_max_seconds(tmp_path):
    x = tone(440, 16000, 2.5)
    p = write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    y = load_audio(p, max_seconds=1.0)
    assert len(y) == 16000
    np.testing.assert_array_equal(y, x[:16000])
    assert len(load_audio(p, max_seconds=1.0, long_policy="keep")) == 40000
    assert len(load_audio(p, max_seconds=None)) == 40000


def test_truncate_with_resampling_matches_the_whole_clip_resampled(tmp_path):
    x = tone(440, 44100, 2.5)
    p = write(tmp_path / "long44.wav", x, 44100, subtype="FLOAT")
    cut = load_audio(p, max_seconds=1.25)
    whole = load_audio(p, max_seconds=None)
    assert len(cut) == 20000  # round(1.25 * 16000), exactly
    # Only the needed part (plus a margin) is decoded; the kept samples are the same as
    # resampling the whole clip and cutting it.
    np.testing.assert_allclose(cut, whole[:20000], atol=1e-4)


def test_error_policy_raises_naming_the_file(tmp_path):
    p = write(tmp_path / "toolong.wav", tone(440, 16000, 2.0), 16000)
    with pytest.raises(AudioError) as e:
        load_audio(p, max_seconds=1.5, long_policy="error")
    assert "toolong.wav" in str(e.value) and "2.00 s" in str(e.value) and "max_seconds=1.5 s" in str(e.value)
    assert e.value.kind == "long_audio"
    assert len(load_audio(p, max_seconds=2.0, long_policy="error")) == 32000  # not longer: fine


def test_loader_warns_once_with_the_count(tmp_path, caplog):
    short = write(tmp_path / "s.wav", tone(440, 16000, 0.5), 16000)
    long1 = write(tmp_path / "l1.wav", tone(440, 16000, 1.5), 16000)
    long2 = write(tmp_path / "l2.flac", tone(440, 48000, 2.0), 48000)
    loader = AudioLoader(sampling_rate=16000, max_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="harken.data.audio"):
        lengths = [len(loader.load(p)) for p in (short, long1, long2)]
        assert caplog.records == []  # nothing per clip
        first = loader.warn_long()
        assert loader.warn_long() is None  # nothing new: no second line
    assert lengths == [8000, 16000, 16000]
    assert [r.getMessage() for r in caplog.records] == [first]
    assert first.startswith("2 of 3 clips longer than 1 s were cut to the first 1 s")
    assert "l1.wav" in first
    assert loader.stats() == {"sampling_rate": 16000, "max_seconds": 1.0, "long_policy": "truncate", "loaded": 3, "long": 2}


def test_loader_keep_policy_summary_and_no_warning_without_long_clips(tmp_path, caplog):
    p = write(tmp_path / "l.wav", tone(440, 16000, 1.5), 16000)
    loader = AudioLoader(max_seconds=1.0, long_policy="keep")
    quiet = AudioLoader(max_seconds=30.0)
    assert len(loader(p)) == 24000 and len(quiet(p)) == 24000
    assert loader.summary().startswith("1 of 1 clips longer than 1 s were kept whole")
    assert quiet.summary() == "1 clips loaded, none longer than 30 s"
    with caplog.at_level(logging.WARNING, logger="harken.data.audio"):
        assert quiet.warn_long() is None
    assert caplog.records == []


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="long_policy"):
        AudioLoader(long_policy="cut")
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio("x.wav", max_seconds=0)
    with pytest.raises(ValueError, match="sampling_rate"):
        AudioLoader(sampling_rate=16000.0)


# --- bad files -----------------------------------------------------------------------------


def bad_files(tmp_path) -> dict[str, str]:
    """kind -> a file with that problem."""
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot really a wave file" * 4)
    zero_bytes = tmp_path / "zero_bytes.wav"
    zero_bytes.write_bytes(b"")
    nan = np.zeros(1600, dtype=np.float32)
    nan[700] = np.nan
    inf = np.zeros(1600, dtype=np.float32)
    inf[3] = np.inf
    return {
        "missing_audio": str(tmp_path / "nowhere.wav"),
        "corrupt_audio": str(corrupt),
        "empty_audio": write(tmp_path / "no_frames.wav", np.zeros(0, dtype=np.float32), 16000),
        "empty_audio(0 bytes)": str(zero_bytes),
        "nonfinite_audio": write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT"),
        "nonfinite_audio(inf)": write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT"),
    }


EXPECTED_WORDS = {
    "missing_audio": "not found",
    "corrupt_audio": "cannot decode",
    "empty_audio": "zero-length",
    "empty_audio(0 bytes)": "0 bytes",
    "nonfinite_audio": "NaN or infinite",
    "nonfinite_audio(inf)": "NaN or infinite",
}


@pytest.mark.parametrize("case", list(EXPECTED_WORDS))
def test_bad_files_raise_audio_error_naming_file_and_problem(tmp_path, case):
    path = bad_files(tmp_path)[case]
    kind = case.split("(")[0]
    for check in (load_audio, verify_audio, AudioLoader().load):
        with pytest.raises(AudioError) as e:
            check(path)
        assert str(e.value).startswith(f"{path}: "), str(e.value)
        assert EXPECTED_WORDS[case] in str(e.value)
        assert e.value.kind == kind and e.value.path == path
        assert isinstance(e.value, ValueError)


def test_nan_error_says_where(tmp_path):
    with pytest.raises(AudioError, match="first at frame 700"):
        load_audio(bad_files(tmp_path)["nonfinite_audio"])


def test_audio_info_reads_the_header(tmp_path):
    data = np.zeros((24000, 2), dtype=np.float32)
    p = write(tmp_path / "st.flac", data, 48000)
    info = audio_info(p)
    assert info["sample_rate"] == 48000 and info["channels"] == 2 and info["frames"] == 24000
    assert info["duration"] == pytest.approx(0.5) and info["format"] == "FLAC"
    with pytest.raises(AudioError, match="not found"):
        audio_info(tmp_path / "nope.wav")


def test_verify_audio_decodes_everything(tmp_path):
    x = tone(440, 22050, 3.2)
    p = write(tmp_path / "ok.ogg", x, 22050, format="OGG", subtype="VORBIS")
    info = verify_audio(p)
    assert info["frames"] == len(x) and info["duration"] == pytest.approx(3.2, abs=1e-3)
