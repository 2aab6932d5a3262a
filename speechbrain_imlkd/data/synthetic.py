"""A synthetic speaker-verification corpus in the VoxCeleb1 folder layout.

It is the embedded default of the demo and the data of the tests: no
download, deterministic for a seed, and a real verification task. Every
speaker is a fixed synthetic voice (vocal-tract length, f0 level and range,
glottal pulse shape, spectral tilt, breathiness, jitter, shimmer, speaking
rate, idiosyncratic vowel targets); every utterance is new "text" (a random
sequence of vowels, sonorants, fricatives, plosives and pauses with
intonation); every "video" is a recording session with its own channel
(random equaliser, band limits, coloured or babble-like noise at a random
SNR, sometimes a reverberant room). Target trials are always
cross-session, so the channel is a real nuisance: the untrained baseline
(:func:`baseline_eer`) stays poor while a projection learnt on the training
speakers (:func:`lda_eer`) generalises to the held-out ones.

Synthesis is source-filter in the short-time Fourier domain: a jittered
Rosenberg glottal pulse train and complex Gaussian noise are shaped, frame by
frame, by the magnitude response of a cascade of digital formant resonators
(and by fricative noise bands), then overlap-added back. All randomness is
drawn from ``numpy.random.SeedSequence`` entropies keyed by
``(seed, speaker, session, utterance)``, so the bytes do not depend on the
order of generation nor on ``num_workers``.

Layout written by :func:`generate_corpus`::

    <root>/wav/idNNNNN/<11-char video id>/NNNNN.wav   16 kHz mono PCM16
    <root>/veri_test2.txt                              held-out speakers only
    <root>/meta.json                                   options, splits, voices

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> voice = SpeakerVoice.sample(rng, "id00001")
>>> wave = synthesize_utterance(voice, 0.5, rng, 16000)
>>> wave.shape, wave.dtype
((8000,), dtype('float64'))
>>> channel = Channel.sample(rng, 16000)
>>> apply_channel(wave, channel, rng).shape
(8000,)
"""

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import re
import string
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

logger = logging.getLogger(__name__)

__all__ = [
    "CORPUS_VERSION",
    "SpeakerVoice",
    "Channel",
    "synthesize_utterance",
    "apply_channel",
    "generate_corpus",
    "mean_fbank_vectors",
    "baseline_eer",
    "lda_eer",
    "main",
]

# Bump whenever the synthesis changes the bytes written for a given seed, so
# that a cached corpus made by older code is regenerated instead of reused.
CORPUS_VERSION = "1"
# Recorded in meta.json; a constant because __name__ is "__main__" under -m.
_GENERATOR = "speechbrain_imlkd.data.synthetic"

_VIDEO_ALPHABET = string.ascii_letters + string.digits + "-_"

# Peterson & Barney (1952) average adult male F1-F3 in Hz. A speaker's
# vocal-tract factor scales them; female voices get factors near 1.17.
_VOWELS = {
    "i": (270, 2290, 3010),
    "I": (390, 1990, 2550),
    "e": (530, 1840, 2480),
    "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440),
    "o": (570, 840, 2410),
    "U": (440, 1020, 2240),
    "u": (300, 870, 2240),
    "V": (640, 1190, 2390),
    "er": (490, 1350, 1690),
}
# Voiced non-vowels: (F1, F2, F3, relative voicing gain). Nasals are the
# weakest; their antiresonance is left out, as it is no speaker cue here.
_SONORANTS = {
    "m": (250, 1100, 2300, 0.35),
    "n": (250, 1600, 2500, 0.35),
    "l": (360, 1300, 2700, 0.6),
    "r": (420, 1300, 1600, 0.6),
    "w": (300, 700, 2200, 0.6),
    "j": (280, 2200, 2900, 0.6),
}
# Fricatives: (noise-band centre Hz, bandwidth Hz, noise gain, voicing gain).
# Centres scale with the vocal-tract factor (smaller front cavity).
_FRICATIVES = {
    "s": (5500, 2500, 0.5, 0.0),
    "S": (3000, 1500, 0.45, 0.0),
    "f": (4000, 6000, 0.12, 0.0),
    "T": (5000, 5000, 0.1, 0.0),
    "z": (5500, 2500, 0.3, 0.35),
    "v": (4000, 6000, 0.08, 0.4),
    "h": (None, None, 0.25, 0.0),  # aspiration through the tract
}
# Plosives: (burst centre Hz or None for "next vowel's F2", bandwidth Hz,
# voiced, aspiration duration s).
_PLOSIVES = {
    "p": (900, 3000, False, 0.035),
    "t": (4200, 3000, False, 0.04),
    "k": (None, 1200, False, 0.045),
    "b": (900, 3000, True, 0.0),
    "d": (4200, 3000, True, 0.0),
    "g": (None, 1200, True, 0.0),
}
_CONSONANTS = list(_SONORANTS) + list(_FRICATIVES) + list(_PLOSIVES)
_VOWEL_LIST = list(_VOWELS)
_F45 = (3500.0, 4500.0)  # male-average F4 and F5 in Hz
_BANDWIDTHS = np.array([70.0, 90.0, 150.0, 220.0, 280.0])
_NOISE_TYPES = ("white", "pink", "brown", "babble")
# Spread (dB) of the random equaliser gains: microphones, rooms and codecs of
# different videos colour the long-term spectrum by several dB, enough to
# mask part of the spectral-envelope differences between speakers.
# Together with the SNR range and the reverberation probability these set
# the difficulty measured in benchmarks/results_synthetic.md.
_EQ_STD_DB = 3.0
# Microphone / DC-blocking high-pass cut-off range (log-uniform), Hz.
_HIGHPASS_HZ = (50.0, 200.0)
# Lowest codec low-pass cut-off, Hz; draws above 0.95 Nyquist are full-band.
_LOWPASS_LOW_HZ = 4500.0


def _rng_for(seed, *keys):
    """Returns a generator whose stream depends only on ``seed`` and ``keys``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


@dataclasses.dataclass
class SpeakerVoice:
    """The fixed voice of one synthetic speaker.

    Values are drawn by :meth:`sample` with between-speaker spreads taken
    from the phonetics literature (f0 and vocal-tract length differ between
    the sexes; jitter, shimmer and breathiness vary several-fold across
    healthy voices).

    Arguments
    ---------
    speaker_id : str
        The ``idNNNNN`` label.
    sex : str
        ``"m"`` or ``"f"``: only steers the f0 / vocal-tract priors.
    f0_mean : float
        Mean fundamental frequency in Hz.
    f0_range : float
        Standard deviation of the intonation in semitones.
    vtl_factor : float
        Formant scaling factor (1.0 is the average adult male tract;
        larger means a shorter tract and higher formants).
    formant_offsets : list
        Per-vowel relative (F1, F2) offsets, in the order of the vowel
        inventory: the speaker's idiosyncratic vowel targets.
    f45_offsets : list
        Relative offsets of F4 and F5.
    bandwidth_factor : float
        Multiplies all formant bandwidths.
    open_quotient : float
        Open fraction of the glottal cycle (Rosenberg pulse).
    spectral_tilt : float
        Extra source tilt in dB per octave above 500 Hz.
    breathiness : float
        Aspiration-noise to voicing amplitude ratio.
    jitter : float
        Relative standard deviation of the glottal period.
    shimmer : float
        Relative standard deviation of the pulse amplitude.
    speaking_rate : float
        Multiplies the rate of phones (1.0 is about 12 phones/s).

    Example
    -------
    >>> import numpy as np
    >>> v = SpeakerVoice.sample(np.random.default_rng(1), "id00007")
    >>> v.speaker_id, v.sex in ("m", "f"), 60 < v.f0_mean < 400
    ('id00007', True, True)
    >>> SpeakerVoice.from_dict(v.to_dict()) == v
    True
    """

    speaker_id: str
    sex: str
    f0_mean: float
    f0_range: float
    vtl_factor: float
    formant_offsets: list
    f45_offsets: list
    bandwidth_factor: float
    open_quotient: float
    spectral_tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    speaking_rate: float

    @classmethod
    def sample(cls, rng, speaker_id):
        """Draws a voice from the population priors.

        Arguments
        ---------
        rng : numpy.random.Generator
            Source of randomness.
        speaker_id : str
            The label stored in the voice.

        Returns
        -------
        SpeakerVoice
            A new voice.

        Example
        -------
        >>> import numpy as np
        >>> SpeakerVoice.sample(np.random.default_rng(0), "id00001").speaker_id
        'id00001'
        """
        sex = "f" if rng.random() < 0.5 else "m"
        # f0: about 115 Hz (male) / 205 Hz (female), 2.5 semitones spread.
        f0_centre = 205.0 if sex == "f" else 115.0
        f0_mean = f0_centre * 2.0 ** (rng.normal(0.0, 2.5) / 12.0)
        vtl_centre = 1.17 if sex == "f" else 1.0
        return cls(
            speaker_id=str(speaker_id),
            sex=sex,
            f0_mean=float(f0_mean),
            f0_range=float(rng.uniform(1.2, 3.5)),
            vtl_factor=float(vtl_centre * np.exp(rng.normal(0.0, 0.06))),
            formant_offsets=rng.normal(0.0, 0.06, (len(_VOWELS), 2)).round(5).tolist(),
            f45_offsets=rng.normal(0.0, 0.05, 2).round(5).tolist(),
            bandwidth_factor=float(np.exp(rng.normal(0.0, 0.2))),
            open_quotient=float(rng.uniform(0.4, 0.75)),
            spectral_tilt=float(rng.normal(-3.0, 2.0)),
            breathiness=float(np.exp(rng.uniform(np.log(0.02), np.log(0.3)))),
            jitter=float(np.exp(rng.uniform(np.log(0.003), np.log(0.02)))),
            shimmer=float(np.exp(rng.uniform(np.log(0.02), np.log(0.1)))),
            speaking_rate=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        )

    def session_variant(self, rng):
        """Returns this voice as it sounds on one recording day.

        Within-speaker variability: a small shift of f0, effort (tilt) and
        rate, drawn once per session.

        Arguments
        ---------
        rng : numpy.random.Generator
            Source of randomness.

        Returns
        -------
        SpeakerVoice
            A perturbed copy (same ``speaker_id``).

        Example
        -------
        >>> import numpy as np
        >>> v = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
        >>> w = v.session_variant(np.random.default_rng(1))
        >>> w.speaker_id == v.speaker_id and w.f0_mean != v.f0_mean
        True
        """
        return dataclasses.replace(
            self,
            f0_mean=self.f0_mean * 2.0 ** (rng.normal(0.0, 1.0) / 12.0),
            spectral_tilt=self.spectral_tilt + rng.normal(0.0, 0.7),
            speaking_rate=self.speaking_rate * float(np.exp(rng.normal(0.0, 0.05))),
            breathiness=self.breathiness * float(np.exp(rng.normal(0.0, 0.15))),
        )

    def to_dict(self):
        """Returns the voice as a JSON-serialisable dict.

        Returns
        -------
        dict
            Field name to value.

        Example
        -------
        >>> import numpy as np
        >>> d = SpeakerVoice.sample(np.random.default_rng(0), "id00001").to_dict()
        >>> sorted(d)[:3]
        ['bandwidth_factor', 'breathiness', 'f0_mean']
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Builds a voice from :meth:`to_dict` output.

        Arguments
        ---------
        values : dict
            Field name to value.

        Returns
        -------
        SpeakerVoice
            The voice.

        Example
        -------
        >>> import numpy as np
        >>> v = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
        >>> SpeakerVoice.from_dict(v.to_dict()).f0_mean == v.f0_mean
        True
        """
        return cls(**values)


@dataclasses.dataclass
class Channel:
    """The recording channel of one session ("video").

    Clips of one session share all these values; only the noise waveform
    (and a +-1 dB SNR wobble) is new for each clip.

    Arguments
    ---------
    sample_rate : int
        Sample rate in Hz of the waves it is applied to.
    eq_freqs : list
        Control frequencies (Hz) of the random equaliser.
    eq_gains_db : list
        Gains (dB) at ``eq_freqs``, linearly interpolated on a log axis.
    highpass_hz : float
        Cut-off of a 2nd-order high-pass (microphone / DC blocking).
    lowpass_hz : float or None
        Cut-off of a 6th-order low-pass (codec band limit), or None.
    noise_type : str
        One of ``white``, ``pink``, ``brown``, ``babble``.
    snr_db : float
        Signal-to-noise ratio in dB.
    rt60 : float or None
        Reverberation time in seconds, or None for a dry session.
    drr_db : float or None
        Direct-to-reverberant ratio in dB (with ``rt60``).
    rir_seed : int or None
        Seed of the room impulse response noise (with ``rt60``).

    Example
    -------
    >>> import numpy as np
    >>> ch = Channel.sample(np.random.default_rng(0), 16000, reverb_prob=1.0)
    >>> ch.rt60 is not None and ch.noise_type in ("white", "pink", "brown", "babble")
    True
    """

    sample_rate: int
    eq_freqs: list
    eq_gains_db: list
    highpass_hz: float
    lowpass_hz: object
    noise_type: str
    snr_db: float
    rt60: object = None
    drr_db: object = None
    rir_seed: object = None

    @classmethod
    def sample(cls, rng, sample_rate, reverb_prob=0.2, snr_range=(15.0, 40.0)):
        """Draws a random channel.

        Arguments
        ---------
        rng : numpy.random.Generator
            Source of randomness.
        sample_rate : int
            Sample rate in Hz.
        reverb_prob : float
            Probability that the session is reverberant.
        snr_range : tuple
            (low, high) SNR in dB, drawn uniformly.

        Returns
        -------
        Channel
            A new channel.

        Example
        -------
        >>> import numpy as np
        >>> ch = Channel.sample(np.random.default_rng(0), 16000, snr_range=(10, 10))
        >>> ch.snr_db
        10.0
        """
        nyquist = sample_rate / 2.0
        n_points = 8
        eq_freqs = np.geomspace(100.0, 0.9 * nyquist, n_points)
        eq_gains = rng.normal(0.0, _EQ_STD_DB, n_points)
        highpass = float(np.exp(rng.uniform(np.log(_HIGHPASS_HZ[0]), np.log(_HIGHPASS_HZ[1]))))
        lowpass = float(rng.uniform(min(_LOWPASS_LOW_HZ, 0.8 * nyquist), nyquist * 1.1))
        lowpass = None if lowpass >= 0.95 * nyquist else lowpass
        noise_type = _NOISE_TYPES[int(rng.integers(len(_NOISE_TYPES)))]
        snr = float(rng.uniform(float(snr_range[0]), float(snr_range[1])))
        rt60 = drr = rir_seed = None
        if rng.random() < reverb_prob:
            rt60 = float(rng.uniform(0.2, 0.8))
            drr = float(rng.uniform(0.0, 12.0))
            rir_seed = int(rng.integers(2**31))
        return cls(
            sample_rate=int(sample_rate),
            eq_freqs=eq_freqs.round(3).tolist(),
            eq_gains_db=eq_gains.round(3).tolist(),
            highpass_hz=highpass,
            lowpass_hz=lowpass,
            noise_type=noise_type,
            snr_db=snr,
            rt60=rt60,
            drr_db=drr,
            rir_seed=rir_seed,
        )

    def to_dict(self):
        """Returns the channel as a JSON-serialisable dict.

        Returns
        -------
        dict
            Field name to value.

        Example
        -------
        >>> import numpy as np
        >>> Channel.sample(np.random.default_rng(0), 16000).to_dict()["sample_rate"]
        16000
        """
        return dataclasses.asdict(self)

    def frequency_response(self, freqs):
        """Magnitude response of the equaliser and band limits.

        Arguments
        ---------
        freqs : numpy.ndarray
            Frequencies in Hz.

        Returns
        -------
        numpy.ndarray
            Linear magnitude at ``freqs``.

        Example
        -------
        >>> import numpy as np
        >>> ch = Channel.sample(np.random.default_rng(0), 16000)
        >>> mag = ch.frequency_response(np.array([0.0, 1000.0]))
        >>> float(mag[0]), bool(mag[1] > 0)
        (0.0, True)
        """
        freqs = np.asarray(freqs, dtype=float)
        logf = np.log(np.maximum(freqs, 1.0))
        gain_db = np.interp(logf, np.log(self.eq_freqs), self.eq_gains_db)
        mag = 10.0 ** (gain_db / 20.0)
        mag = mag / np.sqrt(1.0 + (self.highpass_hz / np.maximum(freqs, 1e-3)) ** 4)
        mag[freqs <= 0] = 0.0
        if self.lowpass_hz is not None:
            mag = mag / np.sqrt(1.0 + (freqs / self.lowpass_hz) ** 12)
        return mag

    def impulse_response(self):
        """The room impulse response, or None for a dry session.

        An exponentially decaying Gaussian noise tail (60 dB in ``rt60``),
        darkened over time, after a unit direct path scaled to ``drr_db``.

        Returns
        -------
        numpy.ndarray or None
            The impulse response.

        Example
        -------
        >>> import numpy as np
        >>> ch = Channel.sample(np.random.default_rng(0), 16000, reverb_prob=1.0)
        >>> h = ch.impulse_response()
        >>> float(h[0])
        1.0
        """
        if self.rt60 is None:
            return None
        rng = np.random.default_rng(self.rir_seed)
        sr = self.sample_rate
        length = int(min(self.rt60, 0.6) * sr)
        t = np.arange(1, length) / sr
        tail = rng.standard_normal(length - 1) * np.exp(-6.91 * t / self.rt60)
        # High frequencies decay faster in real rooms: a one-pole smoother
        # on the tail gives that darker colour at negligible cost.
        tail = scipy.signal.lfilter([0.6], [1.0, -0.4], tail)
        tail *= 10.0 ** (-self.drr_db / 20.0) / np.sqrt(np.sum(tail**2))
        return np.concatenate([[1.0], np.zeros(int(0.002 * sr)), tail])


def _resonator_power(freqs, centres, bandwidths, sample_rate):
    """Squared magnitude of digital 2-pole resonators, unity gain at DC.

    ``centres`` and ``bandwidths`` are ``(..., 1)`` broadcast against
    ``freqs``; one factor of a cascade formant synthesiser.
    """
    r = np.exp(-np.pi * bandwidths / sample_rate)
    a = 2.0 * r * np.cos(2.0 * np.pi * centres / sample_rate)
    b = r * r
    w = 2.0 * np.pi * freqs / sample_rate
    real = 1.0 - a * np.cos(w) + b * np.cos(2.0 * w)
    imag = a * np.sin(w) - b * np.sin(2.0 * w)
    return (1.0 - a + b) ** 2 / (real * real + imag * imag)


def _phone_plan(voice, duration, rng):
    """Draws the phone sequence of one utterance.

    Returns a list of segments ``(kind, seconds, params)``, ``kind`` in
    ``pause``, ``vowel``, ``sonorant``, ``fricative``, ``closure``,
    ``burst``, ``aspiration``; it covers at least ``duration``.
    """
    rate = voice.speaking_rate
    # The leading silence stays a small part of even very short clips.
    plan = [("pause", min(rng.uniform(0.05, 0.2), 0.1 * duration), {})]
    total = plan[0][1]
    words_left_in_phrase = int(rng.integers(3, 7))

    def dur(base):
        return base / rate * float(np.exp(rng.normal(0.0, 0.2)))

    def add(kind, seconds, params):
        nonlocal total
        plan.append((kind, seconds, params))
        total += seconds

    while total < duration + 0.05:
        n_syllables = int(rng.integers(1, 4))
        stressed = int(rng.integers(n_syllables))
        for syl in range(n_syllables):
            vowel = _VOWEL_LIST[int(rng.integers(len(_VOWEL_LIST)))]
            onset = [] if rng.random() < 0.2 else [_CONSONANTS[int(rng.integers(len(_CONSONANTS)))]]
            coda = [_CONSONANTS[int(rng.integers(len(_CONSONANTS)))]] if rng.random() < 0.4 else []
            for consonant in onset:
                _add_consonant(add, dur, consonant, vowel)
            base = 0.15 if syl == stressed else 0.09
            add("vowel", dur(base), {"phone": vowel, "stress": syl == stressed})
            for consonant in coda:
                _add_consonant(add, dur, consonant, vowel)
        words_left_in_phrase -= 1
        if words_left_in_phrase <= 0:
            add("pause", rng.uniform(0.15, 0.4), {"phrase_end": True})
            words_left_in_phrase = int(rng.integers(3, 7))
        elif rng.random() < 0.15:
            add("pause", rng.uniform(0.05, 0.15), {})
    return plan


def _add_consonant(add, dur, consonant, vowel):
    """Appends the segments of one consonant next to ``vowel``."""
    if consonant in _SONORANTS:
        add("sonorant", dur(0.06), {"phone": consonant})
    elif consonant in _FRICATIVES:
        add("fricative", dur(0.09), {"phone": consonant, "vowel": vowel})
    else:
        centre, bw, voiced, asp = _PLOSIVES[consonant]
        add("closure", dur(0.05), {"voiced": voiced})
        add("burst", dur(0.015), {"centre": centre, "bw": bw, "vowel": vowel})
        if asp > 0:
            add("aspiration", dur(asp), {"vowel": vowel})


def _smooth(x, width):
    """Moving average along axis 0 with edge padding (coarticulation)."""
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    pad = width // 2
    xp = np.pad(x, [(pad, width - 1 - pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, kernel, mode="valid")
    return np.stack([np.convolve(xp[:, i], kernel, mode="valid") for i in range(x.shape[1])], 1)


def _frame_tracks(voice, plan, n_frames, hop_s, rng):
    """Frame-rate formant, gain, noise-band and f0 tracks of a phone plan."""
    vowel_index = {v: i for i, v in enumerate(_VOWEL_LIST)}
    offsets = np.asarray(voice.formant_offsets)
    formants = np.full((n_frames, 3), np.nan)
    voicing = np.zeros(n_frames)
    tract_noise = np.zeros(n_frames)
    fric_noise = np.zeros(n_frames)
    fric_centre = np.full(n_frames, 4000.0)
    fric_bw = np.full(n_frames, 3000.0)
    accents = np.zeros(n_frames)
    phrase_breaks = []

    def vowel_formants(vowel):
        f = np.array(_VOWELS[vowel], dtype=float)
        f[:2] *= 1.0 + offsets[vowel_index[vowel]]
        return f * voice.vtl_factor

    start_t = 0.0
    for kind, seconds, params in plan:
        a = int(round(start_t / hop_s))
        start_t += seconds
        b = max(a + 1, int(round(start_t / hop_s)))
        if a >= n_frames:
            break
        b = min(b, n_frames)
        if kind == "vowel":
            formants[a:b] = vowel_formants(params["phone"])
            voicing[a:b] = 1.0 if params["stress"] else 0.75
            if params["stress"]:
                accents[(a + b) // 2] = 1.0
        elif kind == "sonorant":
            f1, f2, f3, gain = _SONORANTS[params["phone"]]
            formants[a:b] = np.array([f1, f2, f3]) * voice.vtl_factor
            voicing[a:b] = gain
        elif kind == "fricative":
            centre, bw, noise_gain, voice_gain = _FRICATIVES[params["phone"]]
            voicing[a:b] = voice_gain
            if centre is None:
                tract_noise[a:b] = noise_gain
            else:
                fric_noise[a:b] = noise_gain
                fric_centre[a:b] = centre * voice.vtl_factor
                fric_bw[a:b] = bw
        elif kind == "closure":
            voicing[a:b] = 0.05 if params["voiced"] else 0.0
        elif kind == "burst":
            centre = params["centre"]
            if centre is None:
                centre = vowel_formants(params["vowel"])[1] * 1.1
            else:
                centre = centre * voice.vtl_factor
            fric_noise[a:b] = 0.6
            fric_centre[a:b] = centre
            fric_bw[a:b] = params["bw"]
        elif kind == "aspiration":
            tract_noise[a:b] = 0.2
        elif kind == "pause" and params.get("phrase_end"):
            phrase_breaks.append(b)

    # Obstruents and pauses take their formants from the neighbouring
    # sonorants (locus-like), then a 40 ms average gives smooth transitions.
    known = ~np.isnan(formants[:, 0])
    idx = np.arange(n_frames)
    if known.any():
        for k in range(3):
            formants[:, k] = np.interp(idx, idx[known], formants[known, k])
    else:
        formants[:] = vowel_formants("V")
    formants = _smooth(formants, 5)
    formants *= 1.0 + 0.01 * _smooth(rng.standard_normal((n_frames, 3)), 9)

    voicing = _smooth(voicing, 3)
    tract_noise = _smooth(tract_noise, 2)
    fric_noise = _smooth(fric_noise, 2)

    # Intonation in semitones: declination over each phrase, a pitch
    # accent on stressed vowels, slow random drift.
    semitones = np.zeros(n_frames)
    bounds = [0] + [p for p in phrase_breaks if 0 < p < n_frames] + [n_frames]
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            semitones[s:e] = np.linspace(0.6, -0.6, e - s) * voice.f0_range
    accent_kernel = np.exp(-0.5 * (np.arange(-20, 21) / 8.0) ** 2)
    bumps = np.convolve(accents * rng.uniform(0.5, 1.2, n_frames), accent_kernel)
    semitones += bumps[len(accent_kernel) // 2:][:n_frames] * voice.f0_range
    drift = np.cumsum(rng.standard_normal(n_frames)) * 0.05
    semitones += _smooth(drift - drift.mean(), 15)
    f0 = voice.f0_mean * 2.0 ** (semitones / 12.0)
    return formants, voicing, tract_noise, fric_noise, fric_centre, fric_bw, f0


def _glottal_source(voice, f0_frames, hop, n_samples, sample_rate, rng):
    """Rosenberg glottal-flow derivative with per-cycle jitter and shimmer."""
    f0_samples = np.interp(np.arange(n_samples), np.arange(len(f0_frames)) * hop, f0_frames)
    max_cycles = int(n_samples / sample_rate * f0_samples.max() * 1.5) + 8
    # Clipped so that a hand-made voice with huge jitter/shimmer still gives
    # positive periods and amplitudes.
    jit = np.clip(1.0 + voice.jitter * rng.standard_normal(max_cycles), 0.5, 1.5)
    # Each period depends on the f0 where the previous one ended, so this
    # recursion is a loop; it runs once per glottal cycle, not per sample.
    periods = []
    t = 0.0
    for n in range(max_cycles):
        if t >= n_samples:
            break
        period = sample_rate / f0_samples[int(t)] * jit[n]
        periods.append(period)
        t += period
    periods = np.asarray(periods)
    starts = np.concatenate([[0.0], np.cumsum(periods)[:-1]])
    amps = np.clip(1.0 + voice.shimmer * rng.standard_normal(len(periods)), 0.0, 2.0)
    pos = np.arange(n_samples, dtype=float)
    cycle = np.searchsorted(starts, pos, side="right") - 1
    phase = (pos - starts[cycle]) / periods[cycle]
    rise, fall = 0.65 * voice.open_quotient, 0.35 * voice.open_quotient
    flow = np.where(
        phase < rise,
        0.5 * (1.0 - np.cos(np.pi * phase / rise)),
        np.where(phase < rise + fall, np.cos(0.5 * np.pi * (phase - rise) / fall), 0.0),
    )
    flow *= amps[cycle]
    return np.diff(flow, prepend=0.0)


def _stft(x, n_fft, hop, window):
    """Centred STFT with ``n_fft = 4 * hop``: frame i is centred on sample i * hop."""
    n_frames = len(x) // hop + 1
    padded = np.zeros((n_frames + 3) * hop)
    padded[n_fft // 2:n_fft // 2 + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return scipy.fft.rfft(frames * window, axis=1)


def _istft(spec, n_fft, hop, window, n_out):
    """Weighted overlap-add inverse of :func:`_stft` (first ``n_out`` samples)."""
    frames = scipy.fft.irfft(spec, n_fft, axis=1) * window
    n_frames = frames.shape[0]
    out = np.zeros((n_frames + 3, hop))
    for k in range(4):
        out[k:k + n_frames] += frames[:, k * hop:(k + 1) * hop]
    # A periodic Hann window squared sums to 1.5 at 75 % overlap.
    return out.reshape(-1)[n_fft // 2:n_fft // 2 + n_out] / 1.5


def synthesize_utterance(voice, duration, rng, sample_rate=16000):
    """Synthesises one clean utterance of random "text" in a given voice.

    Arguments
    ---------
    voice : SpeakerVoice
        Who speaks (use :meth:`SpeakerVoice.session_variant` for the state
        of one recording day).
    duration : float
        Length in seconds (> 0); the output has ``round(duration * sample_rate)``
        samples.
    rng : numpy.random.Generator
        Source of randomness: the phone sequence, prosody and noise.
    sample_rate : int
        Sample rate in Hz (>= 8000).

    Returns
    -------
    numpy.ndarray
        Float64 mono waveform with an RMS of 0.05 (all zeros only when the
        clip is too short to reach the first phone).

    Example
    -------
    >>> import numpy as np
    >>> v = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
    >>> x = synthesize_utterance(v, 1.0, np.random.default_rng(1))
    >>> len(x), round(float(np.sqrt(np.mean(x ** 2))), 3)
    (16000, 0.05)
    """
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    _check_sample_rate(sample_rate)
    n_samples = max(1, int(round(duration * sample_rate)))
    hop = sample_rate // 125  # 8 ms frames
    n_fft = 4 * hop
    nyquist = sample_rate / 2.0

    # Very short requests are synthesised at one FFT frame and cut.
    n_synth = max(n_samples, n_fft)

    plan = _phone_plan(voice, duration, rng)
    n_frames = n_synth // hop + 2
    formants, voicing, tract_noise, fric_noise, fric_centre, fric_bw, f0 = _frame_tracks(
        voice, plan, n_frames, hop / sample_rate, rng
    )
    source = _glottal_source(voice, f0, hop, n_synth, sample_rate, rng)
    window = scipy.signal.get_window("hann", n_fft)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    spec = _stft(source, n_fft, hop, window)  # frames x bins, frame i centred on sample i * hop
    n_frames = spec.shape[0]
    pad = max(0, n_frames - len(voicing))
    tracks = [np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")[:n_frames]
              for x in (formants, voicing, tract_noise, fric_noise, fric_centre, fric_bw)]
    formants, voicing, tract_noise, fric_noise, fric_centre, fric_bw = tracks

    # Cascade of five resonators: F1-F3 follow the phones, F4-F5 are the
    # speaker's; the first bandwidth widens with an open (breathy) glottis.
    f45 = np.array(_F45) * voice.vtl_factor * (1.0 + np.asarray(voice.f45_offsets))
    f45 = np.minimum(f45, 0.92 * nyquist)
    formants = np.minimum(formants, 0.92 * nyquist)
    bandwidths = _BANDWIDTHS * voice.bandwidth_factor
    bandwidths[0] *= 1.0 + 2.0 * voice.breathiness
    # F4-F5 are constant: one spectrum for all frames.
    tract_power = (_resonator_power(freqs, f45[0], bandwidths[3], sample_rate)
                   * _resonator_power(freqs, f45[1], bandwidths[4], sample_rate))
    for k in range(3):
        tract_power = tract_power * _resonator_power(freqs[None, :], formants[:, k:k + 1], bandwidths[k],
                                                     sample_rate)
    tract = np.sqrt(tract_power)

    tilt_db = voice.spectral_tilt + rng.normal(0.0, 0.5)
    tilt = 10.0 ** (tilt_db * np.log2(np.maximum(freqs, 500.0) / 500.0) / 20.0)
    voiced_gain = tract * tilt
    voiced_gain *= voicing[:, None]

    # Noise components are scaled against the energy of a voiced frame so
    # that the relative gains of the phone inventory mean the same for
    # every speaker and f0.
    frame_energy = np.sum((spec.real**2 + spec.imag**2) * voiced_gain**2, axis=1)
    strong = voicing > 0.5
    ref_energy = frame_energy[strong].mean() if strong.any() else frame_energy.mean() + 1e-12
    noise = np.empty(spec.shape, dtype=complex)
    noise.real = rng.standard_normal(spec.shape)
    noise.imag = rng.standard_normal(spec.shape)

    def unit_energy(env):
        return env / np.sqrt(np.sum(env**2, axis=1, keepdims=True) + 1e-30)

    aspiration_shape = tract * (freqs / 1500.0) / np.sqrt(1.0 + (freqs / 1500.0) ** 2)
    noise_env = (
        unit_energy(aspiration_shape) * (voice.breathiness * voicing)[:, None]
        + unit_energy(tract) * tract_noise[:, None]
    )
    rows = np.flatnonzero(fric_noise > 0)  # fricative bands only where used
    if rows.size:
        fric_env = np.sqrt(_resonator_power(freqs[None, :], np.minimum(fric_centre[rows], 0.92 * nyquist)[:, None],
                                            fric_bw[rows, None], sample_rate))
        fric_env *= np.sqrt(1.0 + (freqs / 1000.0) ** 2)  # flatten the resonator's DC gain
        noise_env[rows] += unit_energy(fric_env) * fric_noise[rows, None]
    noise_env *= np.sqrt(ref_energy / 2.0)  # complex noise of unit power per bin
    total = spec * voiced_gain
    total += noise * noise_env
    wave = _istft(total, n_fft, hop, window, n_samples)
    ramp = min(n_samples // 2, int(0.005 * sample_rate))
    if ramp > 0:
        fade = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= fade
        wave[-ramp:] *= fade[::-1]
    rms = np.sqrt(np.mean(wave**2))
    return wave * (0.05 / rms) if rms > 0 else wave


def _coloured_noise(n_samples, kind, rng, sample_rate):
    """Unit-variance noise: white, pink (1/f), brown (1/f^2) or babble-like."""
    if kind not in _NOISE_TYPES:
        raise ValueError(f"unknown noise type {kind!r}; expected one of {_NOISE_TYPES}")
    if kind == "white":
        return rng.standard_normal(n_samples)
    # Shaped at a fast FFT length, then cut: an awkward (e.g. prime) clip
    # length would otherwise make the FFT the slowest step.
    n_fft = scipy.fft.next_fast_len(n_samples, real=True)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    spec = scipy.fft.rfft(rng.standard_normal(n_fft))
    # Coloured slopes stop at 50 Hz: below, the channel high-pass would
    # remove most of the noise power and silently raise the SNR.
    floor = np.maximum(freqs, 50.0)
    if kind == "pink":
        spec /= np.sqrt(floor)
    elif kind == "brown":
        spec /= floor
    else:
        # Long-term average speech spectrum (peak near 500 Hz, about
        # -9 dB/octave above) with the syllabic modulation of a few talkers.
        spec *= (freqs / 150.0) / (1.0 + (freqs / 150.0) ** 2) ** 0.5 / (1.0 + (freqs / 600.0) ** 2) ** 0.75
    noise = scipy.fft.irfft(spec, n_fft)[:n_samples]
    if kind == "babble":
        frame = sample_rate // 100
        n_env = n_samples // frame + 2
        talkers = int(rng.integers(3, 7))
        env = np.abs(_smooth(rng.standard_normal((n_env, talkers)), 12)).sum(1)
        noise *= np.interp(np.arange(n_samples), np.arange(n_env) * frame, env)
    std = noise.std()
    return noise / std if std > 0 else noise


def apply_channel(wave, channel, rng):
    """Passes a clean utterance through a session's channel.

    Room reverberation (if any), additive noise at the session SNR (+-1 dB
    per clip), the microphone / codec equaliser and band limits, and a
    random playback level between -30 and -18 dBFS RMS (never clipping).

    Arguments
    ---------
    wave : numpy.ndarray
        Clean mono waveform at ``channel.sample_rate``.
    channel : Channel
        The session channel.
    rng : numpy.random.Generator
        Source of the noise waveform and of the per-clip SNR and level.

    Returns
    -------
    numpy.ndarray
        The degraded waveform, same length, peak below 1.

    Example
    -------
    >>> import numpy as np
    >>> ch = Channel.sample(np.random.default_rng(0), 16000)
    >>> y = apply_channel(np.random.default_rng(1).standard_normal(4000), ch, np.random.default_rng(2))
    >>> y.shape, bool(np.abs(y).max() < 1.0)
    ((4000,), True)
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or len(wave) == 0:
        raise ValueError(f"wave must be a non-empty 1-D array, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("wave contains NaN or infinite samples")
    n = len(wave)
    sr = channel.sample_rate
    rir = channel.impulse_response()
    if rir is not None:
        wave = scipy.signal.fftconvolve(wave, rir)[:n]
    # An all-silent input still gets the session noise, at the level it
    # would have under speech of the synthesiser's RMS (0.05).
    speech_power = np.mean(wave**2) or 0.05**2
    noise = _coloured_noise(n, channel.noise_type, rng, sr)
    snr = channel.snr_db + rng.uniform(-1.0, 1.0)
    mixed = wave + noise * np.sqrt(speech_power / 10.0 ** (snr / 10.0))
    # The equaliser is a zero-phase FFT filter; padding keeps its (short)
    # impulse response from wrapping around the ends.
    n_fft = scipy.fft.next_fast_len(n + sr // 10, real=True)
    response = channel.frequency_response(np.fft.rfftfreq(n_fft, 1.0 / sr))
    out = scipy.fft.irfft(scipy.fft.rfft(mixed, n_fft) * response, n_fft)[:n]
    rms = np.sqrt(np.mean(out**2))
    if rms > 0:
        out *= 10.0 ** (rng.uniform(-30.0, -18.0) / 20.0) / rms
    peak = np.abs(out).max()
    if peak > 0.99:
        out *= 0.99 / peak
    return out


def _check_sample_rate(sample_rate):
    """Raises ValueError unless ``sample_rate`` is an int >= 8000."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ValueError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")


# ---------------------------------------------------------------------------
# Corpus


def _check_int(name, value, minimum):
    """Raises ValueError unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_options(n_train_speakers, n_test_speakers, sessions_per_speaker, utterances_per_session,
                   min_duration, max_duration, n_trials, sample_rate, seed, reverb_prob, snr_range):
    """Validates the generation options; returns them as a JSON-ready dict."""
    options = {
        "n_train_speakers": _check_int("n_train_speakers", n_train_speakers, 1),
        # Non-target trials need two held-out speakers.
        "n_test_speakers": _check_int("n_test_speakers", n_test_speakers, 2),
        # Target trials are cross-session: every speaker needs two videos.
        "sessions_per_speaker": _check_int("sessions_per_speaker", sessions_per_speaker, 2),
        "utterances_per_session": _check_int("utterances_per_session", utterances_per_session, 1),
        "n_trials": _check_int("n_trials", n_trials, 2),
        "seed": _check_int("seed", seed, 0),
    }
    _check_sample_rate(sample_rate)
    options["sample_rate"] = int(sample_rate)
    for name, value in (("min_duration", min_duration), ("max_duration", max_duration)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
        if value <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    if min_duration > max_duration:
        raise ValueError(f"min_duration ({min_duration}) must not exceed max_duration ({max_duration})")
    if min_duration * sample_rate < 1:
        raise ValueError(f"min_duration ({min_duration} s) is shorter than one sample at {sample_rate} Hz")
    options["min_duration"] = float(min_duration)
    options["max_duration"] = float(max_duration)
    if (isinstance(reverb_prob, bool) or not isinstance(reverb_prob, (int, float, np.number))
            or not 0.0 <= reverb_prob <= 1.0):
        raise ValueError(f"reverb_prob must be a probability in [0, 1], got {reverb_prob!r}")
    options["reverb_prob"] = float(reverb_prob)
    try:
        low, high = (float(v) for v in snr_range)
    except (TypeError, ValueError):
        raise ValueError(f"snr_range must be two numbers (low, high) in dB, got {snr_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"snr_range must be finite with low <= high, got {snr_range!r}")
    options["snr_range"] = [low, high]
    return options


def _video_id(rng, taken):
    """An 11-character YouTube-like id not in ``taken``."""
    while True:
        vid = "".join(_VIDEO_ALPHABET[i] for i in rng.integers(len(_VIDEO_ALPHABET), size=11))
        if vid not in taken:
            taken.add(vid)
            return vid


def _corpus_plan(options):
    """Speakers, voices, sessions, channels and utterance durations.

    Everything is a function of the options only, drawn from generators
    keyed by position, so the plan (and the audio) is reproducible.
    """
    seed = options["seed"]
    sr = options["sample_rate"]
    n_train = options["n_train_speakers"]
    n_total = n_train + options["n_test_speakers"]
    taken = set()
    speakers = []
    for s in range(n_total):
        spk = f"id{s + 1:05d}"
        voice = SpeakerVoice.sample(_rng_for(seed, 0, s), spk)
        sessions = []
        for v in range(options["sessions_per_speaker"]):
            rng = _rng_for(seed, 1, s, v)
            video = _video_id(rng, taken)
            channel = Channel.sample(rng, sr, options["reverb_prob"], options["snr_range"])
            session_voice = voice.session_variant(rng)
            clips = []
            for u in range(options["utterances_per_session"]):
                # Clip numbers run on across a speaker's videos, as in VoxCeleb.
                number = v * options["utterances_per_session"] + u + 1
                duration = _rng_for(seed, 3, s, v, u).uniform(options["min_duration"], options["max_duration"])
                n_samples = max(1, int(round(duration * sr)))
                clips.append({"path": f"{spk}/{video}/{number:05d}.wav", "n_samples": n_samples,
                              "key": [s, v, u]})
            sessions.append({"video": video, "channel": channel.to_dict(),
                             "voice": session_voice.to_dict(), "clips": clips})
        speakers.append({"id": spk, "split": "train" if s < n_train else "test",
                         "voice": voice.to_dict(), "sessions": sessions})
    return speakers


def _write_speaker(args):
    """Synthesises and writes every clip of one speaker (a worker job)."""
    wav_root, seed, sample_rate, speaker = args
    for session in speaker["sessions"]:
        voice = SpeakerVoice.from_dict(session["voice"])
        channel = Channel(**session["channel"])
        folder = Path(wav_root) / speaker["id"] / session["video"]
        folder.mkdir(parents=True, exist_ok=True)
        for clip in session["clips"]:
            rng = _rng_for(seed, 2, *clip["key"])
            duration = clip["n_samples"] / sample_rate
            wave = apply_channel(synthesize_utterance(voice, duration, rng, sample_rate), channel, rng)
            # Encoded in memory: soundfile's close() would fsync every clip,
            # which costs more than synthesising it.
            buffer = io.BytesIO()
            sf.write(buffer, wave, sample_rate, subtype="PCM_16", format="WAV")
            path = Path(wav_root) / clip["path"]
            tmp = path.with_name(path.stem + ".part.wav")
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)
    return speaker["id"]


def _make_trials(test_clips, n_trials, rng):
    """Balanced cross-session target and non-target trials.

    ``test_clips`` is a list of ``(path, speaker, video)``. Returns sorted
    ``(label, enrol, test)`` tuples without repeated pairs.
    """
    n_target = n_trials // 2
    n_nontarget = n_trials - n_target
    paths = [c[0] for c in test_clips]
    spk = np.array([c[1] for c in test_clips])
    vid = np.array([c[2] for c in test_clips])
    i, j = np.triu_indices(len(paths), k=1)
    same_spk = spk[i] == spk[j]
    target_pool = np.flatnonzero(same_spk & (vid[i] != vid[j]))
    nontarget_pool = np.flatnonzero(~same_spk)
    if n_target > len(target_pool):
        raise ValueError(
            f"n_trials={n_trials} asks for {n_target} cross-session target trials, but the held-out "
            f"speakers only have {len(target_pool)} distinct ones: lower n_trials or raise "
            "n_test_speakers / sessions_per_speaker / utterances_per_session"
        )
    # No check is needed for non-targets: with >= 2 held-out speakers there
    # are always more cross-speaker pairs than same-speaker pairs, and
    # n_nontarget <= n_target + 1.
    trials = []
    for label, pool, count in ((1, target_pool, n_target), (0, nontarget_pool, n_nontarget)):
        chosen = pool[np.sort(rng.choice(len(pool), size=count, replace=False))]
        swap = rng.random(count) < 0.5
        for k, flip in zip(chosen, swap):
            a, b = paths[i[k]], paths[j[k]]
            trials.append((label, b, a) if flip else (label, a, b))
    trials.sort(key=lambda t: (t[1], t[2]))
    return trials


# Only paths of this exact shape are ever deleted on regeneration, so a
# tampered meta.json cannot point the clean-up outside <root>/wav.
_CLIP_RE = re.compile(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav")


def _created_files(root, meta, meta_path):
    """The files a previous run created, checked to lie inside ``root``."""
    try:
        clips = [u["path"] for u in meta["utterances"]]
    except (KeyError, TypeError):
        raise ValueError(f"{meta_path}: not a synthetic-corpus meta file (no 'utterances' list)") from None
    for clip in clips:
        if not isinstance(clip, str) or not _CLIP_RE.fullmatch(clip):
            raise ValueError(f"{meta_path}: unexpected clip path {clip!r}; refusing to delete anything")
    return [root / "wav" / c for c in clips]


def _remove_previous(root, meta, meta_path):
    """Deletes only what an earlier generation wrote (and emptied folders)."""
    files = _created_files(root, meta, meta_path)
    folders = set()
    for f in files:
        for extra in (f, f.with_name(f.stem + ".part.wav")):
            if extra.exists():
                extra.unlink()
        folders.update([f.parent, f.parent.parent])
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True) + [root / "wav"]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for name in ("veri_test2.txt", "meta.json"):
        if (root / name).exists():
            (root / name).unlink()


def _write_json(path, data):
    """Atomic JSON write (never leaves a half-written meta.json)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_meta(meta_path):
    """Loads an existing meta.json, or None; a corrupt one is an error."""
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err}); delete the corpus folder to regenerate") from None
    if not isinstance(meta, dict) or meta.get("generator") != _GENERATOR:
        raise ValueError(f"{meta_path}: not a meta.json written by {_GENERATOR}; leaving it alone")
    return meta


def generate_corpus(
    root,
    n_train_speakers=40,
    n_test_speakers=10,
    sessions_per_speaker=4,
    utterances_per_session=4,
    min_duration=2.0,
    max_duration=5.0,
    n_trials=600,
    sample_rate=16000,
    seed=0,
    reverb_prob=0.2,
    snr_range=(15.0, 40.0),
    num_workers=1,
):
    """Writes a synthetic speaker-verification corpus in the VoxCeleb1 layout.

    Speakers ``id00001`` ... are numbered from 1; the first
    ``n_train_speakers`` form the training split and the last
    ``n_test_speakers`` are held out: only they appear in
    ``<root>/veri_test2.txt``, whose ``n_trials`` lines are half target
    trials (always two different videos of a speaker) and half non-target
    trials, without repeated pairs, sorted by enrolment path.

    Re-running with the same options (``num_workers`` aside) and the same
    :data:`CORPUS_VERSION` on a complete corpus does nothing but log that
    it is skipped. With different options, or after an interrupted run, the
    files the earlier run created (as listed in its ``meta.json``) are
    deleted, nothing else, and the corpus is regenerated. A ``root`` that
    holds ``wav/`` or ``veri_test2.txt`` without our ``meta.json`` is not
    touched: that raises ``FileExistsError``.

    Arguments
    ---------
    root : str or pathlib.Path
        Output folder (created if needed).
    n_train_speakers : int
        Training speakers (>= 1).
    n_test_speakers : int
        Held-out speakers for the trials (>= 2).
    sessions_per_speaker : int
        Videos per speaker, each with its own channel (>= 2).
    utterances_per_session : int
        Clips per video (>= 1).
    min_duration, max_duration : float
        Clip durations in seconds are uniform in this range.
    n_trials : int
        Lines of ``veri_test2.txt`` (>= 2, at most what the held-out
        speakers allow).
    sample_rate : int
        Hz (>= 8000).
    seed : int
        Everything (voices, video ids, texts, channels) follows from it.
    reverb_prob : float
        Probability that a session is reverberant.
    snr_range : tuple
        (low, high) session SNR in dB.
    num_workers : int
        Processes writing speakers in parallel; the bytes do not depend on it.

    Returns
    -------
    dict
        The content of ``meta.json``: ``version``, ``options``,
        ``sample_rate``, ``seed``, ``speakers`` (``train`` / ``test``
        lists), ``voices``, ``sessions`` (channel per video),
        ``utterances`` (path relative to ``wav/``, speaker, video, split,
        duration), ``trials`` and ``counts``.

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> meta = generate_corpus(root, n_train_speakers=1, n_test_speakers=2,
    ...     sessions_per_speaker=2, utterances_per_session=1, min_duration=0.3,
    ...     max_duration=0.5, n_trials=4)
    >>> meta["speakers"]
    {'train': ['id00001'], 'test': ['id00002', 'id00003']}
    >>> meta["trials"]["n_target"], meta["counts"]["n_utterances"]
    (2, 6)
    """
    options = _check_options(n_train_speakers, n_test_speakers, sessions_per_speaker, utterances_per_session,
                             min_duration, max_duration, n_trials, sample_rate, seed, reverb_prob, snr_range)
    num_workers = _check_int("num_workers", num_workers, 1)
    root = Path(root)
    meta_path = root / "meta.json"
    previous = _read_meta(meta_path)
    if previous is not None:
        same = (previous.get("complete") is True and previous.get("version") == CORPUS_VERSION
                and previous.get("options") == options)
        if same and all(f.exists() for f in _created_files(root, previous, meta_path)) \
                and (root / "veri_test2.txt").exists():
            logger.info("Synthetic corpus in %s is complete with identical options: skipping generation", root)
            return previous
    elif (root / "wav").is_dir() and any((root / "wav").iterdir()) or (root / "veri_test2.txt").exists():
        raise FileExistsError(
            f"{root} already holds wav/ or veri_test2.txt but no meta.json from {_GENERATOR}: "
            "not a synthetic corpus, refusing to overwrite; choose an empty root"
        )

    plan = _corpus_plan(options)
    utterances = []
    sessions = {}
    for speaker in plan:
        sessions[speaker["id"]] = {}
        for session in speaker["sessions"]:
            sessions[speaker["id"]][session["video"]] = session["channel"]
            for clip in session["clips"]:
                utterances.append({"path": clip["path"], "speaker": speaker["id"], "video": session["video"],
                                   "split": speaker["split"],
                                   "duration": clip["n_samples"] / options["sample_rate"]})
    test_clips = [(u["path"], u["speaker"], u["video"]) for u in utterances if u["split"] == "test"]
    trials = _make_trials(test_clips, options["n_trials"], _rng_for(options["seed"], 4))
    train_ids = [s["id"] for s in plan if s["split"] == "train"]
    test_ids = [s["id"] for s in plan if s["split"] == "test"]
    meta = {
        "generator": _GENERATOR,
        "version": CORPUS_VERSION,
        "complete": False,
        "options": options,
        "seed": options["seed"],
        "sample_rate": options["sample_rate"],
        "speakers": {"train": train_ids, "test": test_ids},
        "voices": {s["id"]: s["voice"] for s in plan},
        "sessions": sessions,
        "utterances": utterances,
        "trials": {"file": "veri_test2.txt", "n_trials": len(trials),
                   "n_target": sum(t[0] for t in trials),
                   "n_nontarget": sum(1 - t[0] for t in trials)},
        "counts": {
            "n_speakers": len(plan),
            "n_train_speakers": len(train_ids),
            "n_test_speakers": len(test_ids),
            "n_sessions": sum(len(s["sessions"]) for s in plan),
            "n_utterances": len(utterances),
            "n_train_utterances": sum(u["split"] == "train" for u in utterances),
            "n_test_utterances": sum(u["split"] == "test" for u in utterances),
            "total_duration_s": round(sum(u["duration"] for u in utterances), 3),
        },
    }
    # Only now, with the new plan known to be feasible, is the old corpus removed.
    if previous is not None:
        logger.info("Synthetic corpus in %s differs (options, version or incomplete): removing the %d files "
                    "it created and regenerating", root, len(previous.get("utterances", [])))
        _remove_previous(root, previous, meta_path)
    root.mkdir(parents=True, exist_ok=True)
    # Written first, marked incomplete: an interrupted run is then known
    # to be ours and cleaned up by the next call.
    _write_json(meta_path, meta)
    wav_root = root / "wav"
    jobs = [(str(wav_root), options["seed"], options["sample_rate"], s) for s in plan]
    if num_workers == 1:
        for job in jobs:
            _write_speaker(job)
    else:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            list(pool.map(_write_speaker, jobs))
    tmp = root / "veri_test2.txt.tmp"
    tmp.write_text("".join(f"{label} {enrol} {test}\n" for label, enrol, test in trials), encoding="utf-8")
    os.replace(tmp, root / "veri_test2.txt")
    meta["complete"] = True
    _write_json(meta_path, meta)
    logger.info("Synthetic corpus written to %s: %d utterances (%.1f s), %d trials", root,
                len(utterances), meta["counts"]["total_duration_s"], len(trials))
    return meta


# ---------------------------------------------------------------------------
# Difficulty figures


def _load_meta(root):
    """meta.json of a complete corpus, with a clear error otherwise."""
    meta_path = Path(root) / "meta.json"
    meta = _read_meta(meta_path)
    if meta is None:
        raise FileNotFoundError(f"{meta_path} not found: generate the corpus first (generate_corpus)")
    if meta.get("complete") is not True:
        raise ValueError(f"{meta_path}: the corpus is incomplete (interrupted generation); regenerate it")
    return meta


def mean_fbank_vectors(paths, sample_rate=16000, n_mels=80):
    """Per-utterance mean log-Mel filterbank vectors (SpeechBrain ``Fbank``).

    Arguments
    ---------
    paths : list
        Mono wav files at ``sample_rate``.
    sample_rate : int
        Expected sample rate; another rate raises ValueError naming the file.
    n_mels : int
        Number of Mel bands.

    Returns
    -------
    numpy.ndarray
        ``len(paths) x n_mels`` float64 array.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "n.wav"
    >>> sf.write(f, 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    >>> mean_fbank_vectors([f]).shape
    (1, 80)
    """
    import torch
    from speechbrain.lobes.features import Fbank

    fbank = Fbank(n_mels=n_mels, sample_rate=sample_rate)
    vectors = []
    with torch.no_grad():
        for path in paths:
            wave, rate = sf.read(str(path), dtype="float32")
            if rate != sample_rate:
                raise ValueError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
            if wave.ndim != 1 or len(wave) == 0:
                raise ValueError(f"{path}: expected non-empty mono audio, got shape {wave.shape}")
            feats = fbank(torch.from_numpy(wave)[None])
            vectors.append(feats[0].mean(0).double().numpy())
    return np.stack(vectors)


def _eer(scores, labels):
    """EER from scores and 0/1 labels (the project's one-sort EER)."""
    from speechbrain_imlkd.scoring import compute_eer

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    return float(compute_eer(scores[labels], scores[~labels])[0])


def _cosine_trial_eer(root, meta, transform):
    """EER of cosine scoring of ``transform(mean fbank)`` on the corpus trials."""
    from speechbrain_imlkd.data.trials import read_trials

    trials = read_trials(Path(root) / "veri_test2.txt")
    utts = trials.utterances
    index = {u: i for i, u in enumerate(utts)}
    vectors = transform(mean_fbank_vectors([Path(root) / "wav" / u for u in utts], meta["sample_rate"]))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    enrol = vectors[[index[u] for u in trials.enrol]]
    test = vectors[[index[u] for u in trials.test]]
    return _eer(np.sum(enrol * test, axis=1), trials.labels)


def baseline_eer(root, centre=True, level_normalise=True):
    """EER of an untrained baseline on the corpus trials.

    Each utterance is its mean log-Mel filterbank vector (80 bands) and
    trials are scored by cosine similarity. By default two unsupervised
    normalisations make it as strong as an untrained system can reasonably
    be: ``level_normalise`` subtracts each vector's mean over bands (the
    playback level, an additive constant in the log domain, would otherwise
    dominate the cosine), and ``centre`` subtracts the mean vector of the
    trial utterances.

    Arguments
    ---------
    root : str or pathlib.Path
        A corpus written by :func:`generate_corpus`.
    centre : bool
        Subtract the mean over the trial utterances.
    level_normalise : bool
        Subtract each utterance's mean over the Mel bands.

    Returns
    -------
    float
        Equal error rate in [0, 1].

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = generate_corpus(root, n_train_speakers=1, n_test_speakers=2,
    ...     sessions_per_speaker=2, utterances_per_session=2, min_duration=0.5,
    ...     max_duration=0.5, n_trials=8)
    >>> 0.0 <= baseline_eer(root) <= 1.0
    True
    """
    meta = _load_meta(root)

    def transform(x):
        if level_normalise:
            x = x - x.mean(1, keepdims=True)
        if centre:
            x = x - x.mean(0, keepdims=True)
        return x

    return _cosine_trial_eer(root, meta, transform)


def lda_eer(root, n_components=None, regularisation=1e-2):
    """EER after an LDA projection learnt on the TRAINING speakers only.

    The learnability check that goes with :func:`baseline_eer`: the same
    mean log-Mel vectors, projected by linear discriminant analysis fitted on
    the training split (between- vs within-speaker scatter, so the channel
    directions are suppressed), length-normalised and cosine-scored on the
    held-out trials. A clear drop from :func:`baseline_eer` shows that
    speaker identity is learnable and generalises to unseen speakers.

    Arguments
    ---------
    root : str or pathlib.Path
        A corpus written by :func:`generate_corpus`.
    n_components : int or None
        Output dimension; default ``min(n_train_speakers - 1, n_mels)``.
    regularisation : float
        Ridge added to the within-class scatter, relative to its mean
        eigenvalue.

    Returns
    -------
    float
        Equal error rate in [0, 1].

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = generate_corpus(root, n_train_speakers=3, n_test_speakers=2,
    ...     sessions_per_speaker=2, utterances_per_session=2, min_duration=0.5,
    ...     max_duration=0.5, n_trials=8)
    >>> 0.0 <= lda_eer(root) <= 1.0
    True
    """
    import scipy.linalg

    meta = _load_meta(root)
    train = [u for u in meta["utterances"] if u["split"] == "train"]
    speakers = sorted({u["speaker"] for u in train})
    if len(speakers) < 2:
        raise ValueError(f"lda_eer needs >= 2 training speakers in {root}, found {len(speakers)}")
    x = mean_fbank_vectors([Path(root) / "wav" / u["path"] for u in train], meta["sample_rate"])
    labels = np.array([speakers.index(u["speaker"]) for u in train])
    mu = x.mean(0)
    dim = x.shape[1]
    within = np.zeros((dim, dim))
    between = np.zeros((dim, dim))
    for k in range(len(speakers)):
        xk = x[labels == k]
        mk = xk.mean(0)
        within += (xk - mk).T @ (xk - mk)
        between += len(xk) * np.outer(mk - mu, mk - mu)
    within += regularisation * np.trace(within) / dim * np.eye(dim)
    values, vectors = scipy.linalg.eigh(between, within)
    n_out = n_components or min(len(speakers) - 1, dim)
    if not 1 <= n_out <= dim:
        raise ValueError(f"n_components must be in [1, {dim}], got {n_components!r}")
    projection = vectors[:, np.argsort(values)[::-1][:n_out]]
    return _cosine_trial_eer(root, meta, lambda v: (v - mu) @ projection)


# ---------------------------------------------------------------------------
# Command line


def _generate_from_args(args):
    """Calls :func:`generate_corpus` with parsed command-line arguments."""
    return generate_corpus(
        args.root,
        n_train_speakers=args.n_train_speakers,
        n_test_speakers=args.n_test_speakers,
        sessions_per_speaker=args.sessions_per_speaker,
        utterances_per_session=args.utterances_per_session,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        n_trials=args.n_trials,
        sample_rate=args.sample_rate,
        seed=args.seed,
        reverb_prob=args.reverb_prob,
        snr_range=tuple(args.snr_range),
        num_workers=args.num_workers,
    )


def main(argv=None):
    """Command-line entry point: ``python -m speechbrain_imlkd.data.synthetic``.

    Arguments
    ---------
    argv : list or None
        Arguments (default ``sys.argv[1:]``); ``--help`` lists them. With
        ``--report`` the baseline and LDA EERs are printed as well.

    Returns
    -------
    int
        Exit status 0; bad options exit with status 2 and the error message
        (no traceback).

    Example
    -------
    >>> import tempfile
    >>> main(["--root", tempfile.mkdtemp(), "--n_train_speakers", "1",
    ...       "--n_test_speakers", "2", "--sessions_per_speaker", "2",
    ...       "--utterances_per_session", "1", "--min_duration", "0.3",
    ...       "--max_duration", "0.3", "--n_trials", "2"])
    Corpus ...: 3 speakers (1 train, 2 test), 6 utterances, 1.8 s of audio, 2 trials
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_imlkd.data.synthetic",
        description="Write a synthetic speaker-verification corpus in the VoxCeleb1 layout.",
    )
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--n_train_speakers", type=int, default=40)
    parser.add_argument("--n_test_speakers", type=int, default=10)
    parser.add_argument("--sessions_per_speaker", type=int, default=4)
    parser.add_argument("--utterances_per_session", type=int, default=4)
    parser.add_argument("--min_duration", type=float, default=2.0)
    parser.add_argument("--max_duration", type=float, default=5.0)
    parser.add_argument("--n_trials", type=int, default=600)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reverb_prob", type=float, default=0.2)
    parser.add_argument("--snr_range", type=float, nargs=2, default=(15.0, 40.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="also print the baseline and LDA EERs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        meta = _generate_from_args(args)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))  # a usage message and exit status 2, no traceback
    counts = meta["counts"]
    print(
        f"Corpus {args.root}: {counts['n_speakers']} speakers ({counts['n_train_speakers']} train, "
        f"{counts['n_test_speakers']} test), {counts['n_utterances']} utterances, "
        f"{counts['total_duration_s']:.1f} s of audio, {meta['trials']['n_trials']} trials"
    )
    if args.report:
        eer = baseline_eer(args.root)
        print(f"baseline EER (mean log-Mel, level-normalised, centred, cosine): {100 * eer:.2f}%")
        if counts["n_train_speakers"] >= 2:
            print(f"LDA EER (trained on the train speakers): {100 * lda_eer(args.root):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
