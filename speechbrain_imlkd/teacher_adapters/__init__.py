"""Teachers that are not SpeechBrain hub models: one small adapter each.

An adapter wraps a pretrained speaker encoder that comes with its *own* front
end (features the student does not share) in the :class:`~speechbrain_imlkd.
teacher.Teacher` interface: ``features(wavs, wav_lens)`` from the waveform,
``embed(feats, lengths)`` differentiable w.r.t. the features with frozen
weights, centroid posteriors (``set_training_speakers(..., mode="centroid")``
then ``logits``), plus ``own_front_end = True``, a ``front_end`` description
(for cache keys) and ``band_centres_hz()`` (to map saliency between mel
axes). :func:`~speechbrain_imlkd.teacher.load_teacher` dispatches on the
names of :data:`TEACHER_ADAPTERS`.

Modules:

* :mod:`~speechbrain_imlkd.teacher_adapters.front_end`: resemblyzer's
  settings and front end in torch (:class:`ResemblyzerFrontEnd`,
  :func:`normalize_volume`, Slaney mel scale, :func:`valid_counts`);
* :mod:`~speechbrain_imlkd.teacher_adapters.ge2e`: the GE2E encoder and its
  pretrained weights (:class:`GE2EEncoder`, :func:`load_ge2e_encoder`,
  :func:`resemblyzer_weights_path`);
* :mod:`~speechbrain_imlkd.teacher_adapters.resemblyzer`: the teacher
  (:class:`ResemblyzerTeacher`, :func:`partial_starts`).

Every public name is importable from ``speechbrain_imlkd.teacher_adapters``
itself.

``resemblyzer``
    The GE2E speaker encoder shipped inside the PyPI wheel
    ``resemblyzer==0.1.4`` (Apache-2.0; ``resemblyzer/pretrained.pt``, a
    3-layer LSTM of 256 units and a 256-d linear projection). The package is
    installed with ``--no-deps`` and never imported: its ``__init__`` pulls
    in librosa and webrtcvad, which this module does not need. The front
    end is re-implemented in torch, batched: volume normalisation to
    -30 dBFS (increase only, over each waveform's unpadded samples), then a
    *power* (not log) mel spectrogram, 25 ms Hann window, 10 ms hop, 40
    Slaney-scale, Slaney-normalised bands, centred frames with zero padding
    (librosa >= 0.10's ``pad_mode="constant"``; resemblyzer calls librosa
    with its defaults). Zero padding also makes a padded batch give each
    utterance exactly its own features. The package's ``preprocess_wav``
    also trims long silences with webrtcvad; that is *not* done here: the
    recipe's data (VoxCeleb segments, LibriSpeech, the synthetic corpus) has
    no long silences, and trimming would change the number of frames, which
    must match SpeechBrain's ``Fbank`` (``1 + samples // 160``) so that
    segments, saliency and student features stay aligned in time.

    Parity with the package's own pipeline (``wav_to_mel_spectrogram``,
    ``VoiceEncoder.forward`` / ``embed_utterance``, librosa 0.11.0, CPU,
    ``tests/test_teacher_adapters.py``) on the 6 VoxCeleb1 clips, 3
    LibriSpeech utterances and synthetic speech: features within 1.1e-6
    relative error (max abs difference over max value); the embedding of
    one 1.6 s partial at worst cosine 1 - 1e-12; ``embed_utterance`` against
    :meth:`ResemblyzerTeacher.embed` in ``"partials"`` mode identical (1 -
    1e-7) when the last partial ends inside the utterance, else at worst
    cosine 0.99887 (waveforms cut to ``n % 160 == 159`` samples, the worst
    case; 0.99915 over 234 random lengths). The package zero-pads the
    *waveform* before its mel when the last partial runs past the end, so
    up to two of its frames there still hold the tail of the signal, where
    this module pads with zero frames: the only source of that difference.

    Integrated Gradients through this teacher converge slowly from a silent
    (zero) baseline: the target moves over four decades of the path
    parameter near 0 and has ReLU kinks. Measured relative completeness
    gaps (embedding-cosine target, 60-frame segments, Gauss-Legendre):
    256 nodes 0.15-4.4% (median 0.4%), 512 nodes 0.1-1.6%; from the
    segment's time average, 64 nodes give 0.1-1.4%.

Example
-------
>>> import torch
>>> teacher = ResemblyzerTeacher(encoder=GE2EEncoder())  # random weights
>>> wavs = 0.01 * torch.randn(2, 16000)
>>> feats = teacher.features(wavs, torch.tensor([1.0, 0.5]))
>>> feats.shape, teacher.n_mels, teacher.embedding_dim
(torch.Size([2, 101, 40]), 40, 256)
>>> _ = feats.requires_grad_()
>>> emb = teacher.embed(feats, torch.tensor([1.0, 0.5]))
>>> emb.sum().backward()
>>> bool(feats.grad.abs().sum() > 0), any(p.grad is not None for p in teacher.parameters())
(True, False)

Authors
 * speechbrain-imlkd contributors 2025
"""

from speechbrain_imlkd.teacher_adapters.front_end import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    HOP_MS,
    MEL_NORM,
    MEL_POWER,
    MEL_SCALE,
    N_FFT,
    N_MELS,
    PAD_MODE,
    SAMPLE_RATE,
    VOLUME_TARGET_DBFS,
    WINDOW_MS,
    WIN_LENGTH,
    ResemblyzerFrontEnd,
    normalize_volume,
    slaney_band_centres,
    slaney_hz_to_mel,
    slaney_mel_to_hz,
    valid_counts,
)
from speechbrain_imlkd.teacher_adapters.ge2e import (
    EMBEDDING_DIM,
    GE2E_LOSS_KEYS,
    HIDDEN_SIZE,
    NUM_LAYERS,
    RESEMBLYZER_INSTALL,
    RESEMBLYZER_PACKAGE,
    RESEMBLYZER_STATE_KEY,
    RESEMBLYZER_VERSION,
    RESEMBLYZER_WEIGHTS_FILE,
    GE2EEncoder,
    load_ge2e_encoder,
    resemblyzer_weights_path,
)
from speechbrain_imlkd.teacher_adapters.resemblyzer import (
    PARTIAL_FRAMES,
    PARTIAL_MIN_COVERAGE,
    PARTIAL_RATE,
    UTTERANCE_MODES,
    ResemblyzerTeacher,
    partial_starts,
)

#: Teacher adapters by name: ``load_teacher(name, savedir, ...)`` calls
#: ``TEACHER_ADAPTERS[name](savedir, run_opts=..., expected_n_mels=...,
#: expected_sample_rate=..., **adapter_options)``.
TEACHER_ADAPTERS = {RESEMBLYZER_PACKAGE: ResemblyzerTeacher.load}

__all__ = [
    "EMBEDDING_DIM",
    "F_MAX",
    "F_MIN",
    "GE2E_LOSS_KEYS",
    "HIDDEN_SIZE",
    "HOP_LENGTH",
    "HOP_MS",
    "MEL_NORM",
    "MEL_POWER",
    "MEL_SCALE",
    "NUM_LAYERS",
    "N_FFT",
    "N_MELS",
    "PAD_MODE",
    "PARTIAL_FRAMES",
    "PARTIAL_MIN_COVERAGE",
    "PARTIAL_RATE",
    "RESEMBLYZER_INSTALL",
    "RESEMBLYZER_PACKAGE",
    "RESEMBLYZER_STATE_KEY",
    "RESEMBLYZER_VERSION",
    "RESEMBLYZER_WEIGHTS_FILE",
    "SAMPLE_RATE",
    "TEACHER_ADAPTERS",
    "UTTERANCE_MODES",
    "VOLUME_TARGET_DBFS",
    "WINDOW_MS",
    "WIN_LENGTH",
    "GE2EEncoder",
    "ResemblyzerFrontEnd",
    "ResemblyzerTeacher",
    "load_ge2e_encoder",
    "normalize_volume",
    "partial_starts",
    "resemblyzer_weights_path",
    "slaney_band_centres",
    "slaney_hz_to_mel",
    "slaney_mel_to_hz",
    "valid_counts",
]
