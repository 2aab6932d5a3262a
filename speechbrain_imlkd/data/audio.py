"""Checked audio reading: mono, expected sample rate, non-empty, long enough.

Everything here reads headers with ``soundfile.info`` first, so that a bad
file is reported (with its path) before any decoding, and so that data
preparation can check a whole corpus without decoding it.

Example
-------
>>> import tempfile, pathlib, numpy as np, soundfile as sf
>>> f = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
>>> sf.write(f, 0.1 * np.sin(np.arange(1600) / 5.0), 16000)
>>> audio_info(f).frames
1600
>>> read_wav_checked(f, sample_rate=16000).shape
torch.Size([1600])
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf
import torch

logger = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file exists but cannot be used (corrupt, empty, stereo, ...).

    Arguments
    ---------
    path : str or pathlib.Path
        The offending file, always part of the message.
    reason : str
        What is wrong with it.

    Example
    -------
    >>> err = AudioError("a.wav", "stereo (2 channels), expected mono")
    >>> print(err)
    a.wav: stereo (2 channels), expected mono
    >>> err.path, err.reason
    ('a.wav', 'stereo (2 channels), expected mono')
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """Header information of an audio file.

    Arguments
    ---------
    path : str
        The file.
    sample_rate : int
        Samples per second.
    channels : int
        Number of channels.
    frames : int
        Number of samples per channel.

    Example
    -------
    >>> AudioInfo("a.wav", 16000, 1, 24000).duration
    1.5
    """

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self):
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: Union[str, Path]) -> AudioInfo:
    """Reads the header of an audio file without decoding it.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.

    Returns
    -------
    AudioInfo
        Sample rate, channels and length in samples.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    AudioError
        If the file cannot be parsed as audio.

    Example
    -------
    >>> audio_info("/nonexistent/x.wav")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Audio file not found: /nonexistent/x.wav
    """
    path = str(path)
    try:
        info = sf.info(path)
    except RuntimeError as e:  # soundfile.LibsndfileError derives from it
        # libsndfile reports a missing or zero-byte file as a generic
        # "format not recognised"; say what is really wrong.
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"Audio file not found: {path}") from None
        if file.stat().st_size == 0:
            raise AudioError(path, "empty file (0 bytes)") from None
        raise AudioError(path, f"unreadable or corrupt audio ({e})") from None
    return AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
    )


def check_audio_info(info: AudioInfo, sample_rate=16000, min_samples=1):
    """Checks that a file is mono, at the expected rate and long enough.

    Arguments
    ---------
    info : AudioInfo
        Header of the file, from :func:`audio_info`.
    sample_rate : int or None
        Expected sample rate; ``None`` accepts any rate.
    min_samples : int
        Minimum number of samples required (at least 1: empty files are
        always rejected).

    Raises
    ------
    AudioError
        Naming the file and the problem.

    Example
    -------
    >>> check_audio_info(AudioInfo("a.wav", 8000, 1, 8000), sample_rate=16000)
    Traceback (most recent call last):
    ...
    speechbrain_imlkd.data.audio.AudioError: a.wav: sample rate 8000 Hz, expected 16000 Hz
    """
    if info.frames <= 0:
        raise AudioError(info.path, "empty audio (0 samples)")
    if info.channels != 1:
        raise AudioError(
            info.path, f"{info.channels} channels, expected mono (1 channel)"
        )
    if sample_rate is not None and info.sample_rate != sample_rate:
        raise AudioError(
            info.path,
            f"sample rate {info.sample_rate} Hz, expected {sample_rate} Hz",
        )
    if info.frames < max(1, min_samples):
        raise AudioError(
            info.path,
            f"too short: {info.frames} samples "
            f"({info.duration:.3f} s), at least {min_samples} required",
        )


def read_wav_checked(
    path: Union[str, Path],
    sample_rate: Optional[int] = 16000,
    min_samples: int = 1,
    start: int = 0,
    stop: Optional[int] = None,
) -> torch.Tensor:
    """Reads a mono audio file after checking its header.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.
    sample_rate : int or None
        Expected sample rate (``None`` accepts any).
    min_samples : int
        Minimum length of the whole file, in samples.
    start : int
        First sample to read.
    stop : int or None
        One past the last sample to read; ``None`` reads to the end.

    Returns
    -------
    torch.Tensor
        1-D ``float32`` waveform in [-1, 1].

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    AudioError
        If it is corrupt, empty, multi-channel, at the wrong rate, too short,
        if ``start``/``stop`` fall outside it, or if fewer samples could be
        decoded than its header announces (a truncated file).

    Example
    -------
    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "short.wav"
    >>> sf.write(f, np.zeros(800), 16000)
    >>> read_wav_checked(f, start=100, stop=300).shape
    torch.Size([200])
    >>> read_wav_checked(f, min_samples=16000)
    Traceback (most recent call last):
    ...
    speechbrain_imlkd.data.audio.AudioError: ...short.wav: too short: 800 samples (0.050 s), at least 16000 required
    """
    info = audio_info(path)
    check_audio_info(info, sample_rate=sample_rate, min_samples=min_samples)
    stop = info.frames if stop is None else stop
    if not 0 <= start < stop <= info.frames:
        raise AudioError(
            info.path,
            f"segment [{start}, {stop}) outside the file's "
            f"{info.frames} samples",
        )
    try:
        data, _ = sf.read(
            info.path, start=start, stop=stop, dtype="float32", always_2d=False
        )
    except RuntimeError as e:
        raise AudioError(info.path, f"could not decode audio ({e})") from None
    if data.shape[0] != stop - start:
        raise AudioError(
            info.path,
            f"truncated or corrupt: decoded {data.shape[0]} samples of the "
            f"{stop - start} requested (header says {info.frames})",
        )
    return torch.from_numpy(np.ascontiguousarray(data))
