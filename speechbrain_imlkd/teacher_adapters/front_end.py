"""resemblyzer's front end in torch: volume normalisation, power mel spectrogram.

The settings of ``resemblyzer==0.1.4`` (``resemblyzer/hparams.py``,
``resemblyzer/audio.py``), Slaney's mel scale, and
:class:`ResemblyzerFrontEnd`, which computes, batched and in torch, the
features the package computes with librosa (see
:mod:`speechbrain_imlkd.teacher_adapters` for the parity measured).
Relative lengths are turned into valid sample or frame counts as
SpeechBrain rounds them (:func:`valid_counts`), so that a padded batch gives
each utterance exactly its own features.

Example
-------
>>> front = ResemblyzerFrontEnd()
>>> wavs = 0.01 * torch.randn(2, 16000)
>>> feats = front(wavs, torch.tensor([1.0, 0.5]))
>>> feats.shape, N_MELS, HOP_LENGTH
(torch.Size([2, 101, 40]), 40, 160)
>>> torch.allclose(feats[1, :49], front(wavs[1:, :8000])[0, :49])
True

Authors
 * speechbrain-imlkd contributors 2025
"""

import math

import torch
import torchaudio

# ---------------------------------------------------------------------- #
# resemblyzer 0.1.4 settings (resemblyzer/hparams.py, resemblyzer/audio.py)
# ---------------------------------------------------------------------- #
SAMPLE_RATE = 16000
N_MELS = 40
WINDOW_MS = 25
HOP_MS = 10
N_FFT = SAMPLE_RATE * WINDOW_MS // 1000
WIN_LENGTH = N_FFT
HOP_LENGTH = SAMPLE_RATE * HOP_MS // 1000
MEL_POWER = 2.0
MEL_SCALE = "slaney"
MEL_NORM = "slaney"
F_MIN = 0.0
F_MAX = SAMPLE_RATE / 2
#: librosa's default padding of centred frames since 0.10 (zeros).
PAD_MODE = "constant"
VOLUME_TARGET_DBFS = -30.0

# Slaney's mel scale (Auditory Toolbox, as librosa and torchaudio): linear
# below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def slaney_hz_to_mel(hz):
    """Frequencies in Hz to Slaney mels.

    Arguments
    ---------
    hz : torch.Tensor
        Frequencies in Hz.

    Returns
    -------
    torch.Tensor
        The same frequencies in Slaney mels.

    Example
    -------
    >>> [round(m, 6) for m in slaney_hz_to_mel(torch.tensor([500.0, 1000.0])).tolist()]
    [7.5, 15.0]
    """
    hz = torch.as_tensor(hz, dtype=torch.float64)
    log_part = _SLANEY_LOG_START_MEL + torch.log(
        hz.clamp_min(_SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ
    ) / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_LOG_START_HZ, log_part, hz / _SLANEY_HZ_PER_MEL)


def slaney_mel_to_hz(mel):
    """Slaney mels to frequencies in Hz (inverse of :func:`slaney_hz_to_mel`).

    Arguments
    ---------
    mel : torch.Tensor
        Slaney mels.

    Returns
    -------
    torch.Tensor
        Frequencies in Hz.

    Example
    -------
    >>> hz = slaney_mel_to_hz(slaney_hz_to_mel(torch.tensor([300.0, 4000.0])))
    >>> [round(f, 6) for f in hz.tolist()]
    [300.0, 4000.0]
    """
    mel = torch.as_tensor(mel, dtype=torch.float64)
    log_part = _SLANEY_LOG_START_HZ * torch.exp(
        _SLANEY_LOG_STEP * (mel.clamp_min(_SLANEY_LOG_START_MEL) - _SLANEY_LOG_START_MEL)
    )
    return torch.where(mel >= _SLANEY_LOG_START_MEL, log_part, mel * _SLANEY_HZ_PER_MEL)


def slaney_band_centres(n_mels=N_MELS, f_min=F_MIN, f_max=F_MAX):
    """Centre frequencies of Slaney mel bands (librosa's ``mel_frequencies``).

    Arguments
    ---------
    n_mels : int
        Number of bands.
    f_min : float
        Lower edge of the first band, in Hz.
    f_max : float
        Upper edge of the last band, in Hz.

    Returns
    -------
    torch.Tensor
        ``(n_mels,)`` float64 centres in Hz, increasing.

    Example
    -------
    >>> [round(f, 6) for f in slaney_band_centres(3, 0.0, 800.0).tolist()]
    [200.0, 400.0, 600.0]
    """
    edges = torch.linspace(
        float(slaney_hz_to_mel(f_min)),
        float(slaney_hz_to_mel(f_max)),
        n_mels + 2,
        dtype=torch.float64,
    )
    return slaney_mel_to_hz(edges)[1:-1]


def valid_counts(lengths, total):
    """Relative lengths to counts of valid steps, as SpeechBrain rounds them.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``(B,)`` relative lengths in (0, 1]; None means all ``total``.
    total : int
        Number of steps of the padded axis.

    Returns
    -------
    list of int
        Valid steps per sample, each in ``[1, total]``.

    Raises
    ------
    ValueError
        A relative length outside (0, 1].

    Example
    -------
    >>> valid_counts(torch.tensor([1.0, 0.5, 0.004]), 101)
    [101, 50, 1]
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths).detach().flatten().double().cpu()
    bad = (lengths <= 0) | (lengths > 1) | torch.isnan(lengths)
    if bool(bad.any()):
        raise ValueError(
            f"relative lengths must lie in (0, 1]; got {lengths[bad][:3].tolist()}"
        )
    return [int(n) for n in torch.round(lengths * total).clamp(1, total).long()]


def normalize_volume(
    wavs, wav_lens=None, target_dbfs=VOLUME_TARGET_DBFS, increase_only=True
):
    """Scales each waveform to ``target_dbfs`` RMS (resemblyzer's rule).

    The RMS is taken over each waveform's unpadded samples only. A silent
    waveform (RMS 0) is left unchanged instead of being multiplied by an
    infinite gain.

    Arguments
    ---------
    wavs : torch.Tensor
        ``B x samples``.
    wav_lens : torch.Tensor or None
        Relative lengths; None means no padding.
    target_dbfs : float
        Target level in dB relative to full scale.
    increase_only : bool
        Only raise quiet waveforms, never lower loud ones.

    Returns
    -------
    torch.Tensor
        Scaled waveforms, same shape.

    Example
    -------
    >>> wav = torch.full((1, 100), 0.001)
    >>> out = normalize_volume(wav)
    >>> round(20 * math.log10(out.pow(2).mean().sqrt().item()), 3)
    -30.0
    >>> torch.equal(normalize_volume(torch.ones(1, 10)), torch.ones(1, 10))
    True
    """
    counts = valid_counts(wav_lens, wavs.shape[1])
    if counts is None:
        mean_sq = wavs.pow(2).mean(dim=1)
    else:
        mask = _mask(counts, wavs.shape[1], wavs.device)
        n_valid = torch.tensor(counts, device=wavs.device, dtype=wavs.dtype)
        mean_sq = (wavs.pow(2) * mask).sum(dim=1) / n_valid
    silent = mean_sq <= 0
    change_db = target_dbfs - 10.0 * torch.log10(mean_sq.masked_fill(silent, 1.0))
    if increase_only:
        change_db = change_db.clamp_min(0.0)
    gain = torch.pow(10.0, change_db / 20.0).masked_fill(silent, 1.0)
    return wavs * gain.unsqueeze(1)


def _mask(counts, total, device):
    """``B x total`` float mask of the first ``counts[b]`` steps."""
    steps = torch.arange(total, device=device)
    return (steps[None, :] < torch.tensor(counts, device=device)[:, None]).float()



class ResemblyzerFrontEnd(torch.nn.Module):
    """resemblyzer's front end in torch: volume normalisation, power mel.

    Arguments
    ---------
    sample_rate : int
        Audio sample rate.
    n_fft : int
        FFT size (= window length).
    hop_length : int
        Samples between frames.
    n_mels : int
        Number of mel bands.
    target_dbfs : float
        Volume normalisation target (increase only).

    Example
    -------
    >>> front = ResemblyzerFrontEnd()
    >>> front(torch.rand(2, 16000) - 0.5).shape
    torch.Size([2, 101, 40])
    """

    def __init__(
        self,
        sample_rate=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        n_mels=N_MELS,
        target_dbfs=VOLUME_TARGET_DBFS,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.target_dbfs = target_dbfs
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=n_fft,
            hop_length=hop_length,
            f_min=F_MIN,
            f_max=sample_rate / 2,
            n_mels=n_mels,
            power=MEL_POWER,
            norm=MEL_NORM,
            mel_scale=MEL_SCALE,
            center=True,
            pad_mode=PAD_MODE,
        )

    def forward(self, wavs, wav_lens=None):
        """Waveforms to ``B x T x n_mels`` power mel spectrograms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``B x samples``.
        wav_lens : torch.Tensor or None
            Relative lengths; samples past them are zeroed first, so that
            every utterance gets exactly the features it has alone.

        Returns
        -------
        torch.Tensor
            ``B x (1 + samples // hop) x n_mels``.
        """
        counts = valid_counts(wav_lens, wavs.shape[1])
        if counts is not None:
            wavs = wavs * _mask(counts, wavs.shape[1], wavs.device)
        wavs = normalize_volume(wavs, wav_lens, self.target_dbfs, increase_only=True)
        return self.mel(wavs).transpose(1, 2)

