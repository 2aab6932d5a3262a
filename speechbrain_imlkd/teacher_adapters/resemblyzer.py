"""The resemblyzer teacher: GE2E embeddings of whole utterances or of partials.

:class:`ResemblyzerTeacher` puts :class:`~speechbrain_imlkd.teacher_adapters.
front_end.ResemblyzerFrontEnd` and :class:`~speechbrain_imlkd.
teacher_adapters.ge2e.GE2EEncoder` behind the :class:`~speechbrain_imlkd.
teacher.Teacher` interface, embedding an utterance as
``VoiceEncoder.embed_utterance`` does (1.6 s partials placed by
:func:`partial_starts`, mean of their embeddings) or in one LSTM pass.

Example
-------
>>> partial_starts(300), PARTIAL_FRAMES
([0, 77, 154], 160)
>>> t = ResemblyzerTeacher(encoder=GE2EEncoder(), utterance_mode="whole")
>>> t.embed(t.features(0.01 * torch.randn(1, 8000))).shape
torch.Size([1, 256])

Authors
 * speechbrain-imlkd contributors 2025
"""

import torch
import torch.nn.functional as F

from speechbrain_imlkd.teacher import Teacher
from speechbrain_imlkd.teacher_adapters.front_end import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    MEL_NORM,
    MEL_POWER,
    MEL_SCALE,
    N_FFT,
    N_MELS,
    PAD_MODE,
    SAMPLE_RATE,
    WIN_LENGTH,
    ResemblyzerFrontEnd,
    slaney_band_centres,
    valid_counts,
)
from speechbrain_imlkd.teacher_adapters.ge2e import (  # noqa: F401 (GE2EEncoder: the examples build one)
    RESEMBLYZER_PACKAGE,
    RESEMBLYZER_VERSION,
    GE2EEncoder,
    load_ge2e_encoder,
)

#: Frames of one partial utterance (1.6 s) in ``embed_utterance``.
PARTIAL_FRAMES = 160
#: Partial utterances per second of ``embed_utterance``.
PARTIAL_RATE = 1.3
#: Fraction of a last partial that must hold signal for it to be kept.
PARTIAL_MIN_COVERAGE = 0.75
UTTERANCE_MODES = ("partials", "whole")


def partial_starts(
    n_frames,
    partial_frames=PARTIAL_FRAMES,
    rate=PARTIAL_RATE,
    min_coverage=PARTIAL_MIN_COVERAGE,
    sample_rate=SAMPLE_RATE,
    hop_length=HOP_LENGTH,
):
    """First frames of the partial utterances of ``embed_utterance``.

    ``VoiceEncoder.compute_partial_slices`` of resemblyzer, for the waveform
    of ``(n_frames - 1) * hop_length`` samples (centred frames: that
    waveform has exactly ``n_frames`` frames). The decision on the last
    partial equals the package's for any waveform with ``n_frames`` frames
    whenever ``min_coverage * partial_frames`` is a whole number of frames
    (120 with the defaults).

    Arguments
    ---------
    n_frames : int
        Number of valid frames.
    partial_frames : int
        Frames per partial.
    rate : float
        Partials per second.
    min_coverage : float
        In (0, 1]: fraction of the last partial that must hold signal.
    sample_rate : int
        Audio sample rate.
    hop_length : int
        Samples between frames.

    Returns
    -------
    list of int
        Start frames; partial ``k`` covers ``[s_k, s_k + partial_frames)``
        and may run past ``n_frames`` (zero-padded by the caller).

    Raises
    ------
    ValueError
        Impossible rate or coverage.

    Example
    -------
    >>> partial_starts(300)
    [0, 77, 154]
    >>> partial_starts(250)  # the last one, 95 of 160 frames, is dropped
    [0, 77]
    """
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage={min_coverage!r} must lie in (0, 1]")
    frame_step = int(round(sample_rate / rate / hop_length))
    if not 0 < frame_step <= partial_frames:
        raise ValueError(
            f"partial rate={rate!r} gives a step of {frame_step} frames; it must "
            f"lie in [1, {partial_frames}] (partials must cover the utterance)"
        )
    steps = max(1, n_frames - partial_frames + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    # Coverage in frames: the package's in samples divided by the hop.
    coverage = (n_frames - 1 - starts[-1]) / partial_frames
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def _full_precision(tensor):
    """Disables autocast: power spectra span too many decades for float16."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


class ResemblyzerTeacher(Teacher):
    """resemblyzer's pretrained GE2E LSTM as a frozen IML-KD teacher.

    No classifier: posteriors come from centroids of its embeddings
    (``teacher_posteriors: centroid``).

    Arguments
    ---------
    encoder : GE2EEncoder or None
        The encoder; None loads resemblyzer's pretrained weights.
    utterance_mode : str
        ``"partials"`` (default): as ``VoiceEncoder.embed_utterance``,
        1.6 s partials (the package's slicing; the last one zero-padded),
        mean of their embeddings, L2-normalised; inputs of at most
        ``partial_frames`` valid frames run whole (the package would pad
        them with silence to 1.6 s). ``"whole"``: one LSTM pass over all
        valid frames.
    partial_frames : int
        Frames of one partial.
    partial_rate : float
        Partials per second.
    partial_min_coverage : float
        Fraction of the last partial that must hold signal for it to count.
    device : str or torch.device
        Where it runs.

    Example
    -------
    >>> t = ResemblyzerTeacher(encoder=GE2EEncoder(), utterance_mode="whole")
    >>> t.own_front_end, t.front_end["adapter"], t.front_end["utterance_mode"]
    (True, 'resemblyzer', 'whole')
    >>> t.band_centres_hz().shape
    torch.Size([40])
    """

    own_front_end = True
    adapter_name = RESEMBLYZER_PACKAGE

    def __init__(
        self,
        encoder=None,
        utterance_mode="partials",
        partial_frames=PARTIAL_FRAMES,
        partial_rate=PARTIAL_RATE,
        partial_min_coverage=PARTIAL_MIN_COVERAGE,
        device="cpu",
    ):
        if utterance_mode not in UTTERANCE_MODES:
            raise ValueError(
                f"utterance_mode={utterance_mode!r}: expected one of {UTTERANCE_MODES}"
            )
        if not (isinstance(partial_frames, int) and partial_frames > 0):
            raise ValueError(f"partial_frames={partial_frames!r} must be a positive int")
        self.utterance_mode = utterance_mode
        self.partial_frames = partial_frames
        self.partial_rate = float(partial_rate)
        self.partial_min_coverage = float(partial_min_coverage)
        # Fails early on an impossible rate or coverage.
        partial_starts(
            partial_frames, partial_frames, self.partial_rate, self.partial_min_coverage
        )
        super().__init__(
            compute_features=ResemblyzerFrontEnd(),
            mean_var_norm=None,
            embedding_model=encoder if encoder is not None else load_ge2e_encoder(),
            sample_rate=SAMPLE_RATE,
            device=device,
        )

    @classmethod
    def load(
        cls,
        savedir=None,
        run_opts=None,
        expected_n_mels=None,
        expected_sample_rate=None,
        **options,
    ):
        """Loads the pretrained teacher (the loader of ``load_teacher``).

        Arguments
        ---------
        savedir : str or pathlib.Path or None
            Unused: the weights are read in place from the package.
        run_opts : dict or None
            SpeechBrain run options; only ``device`` is used.
        expected_n_mels : int or None
            Ignored: this teacher has its own front end (40 power mel
            bands), so its features never need to match the student's.
        expected_sample_rate : int or None
            The recipe's sample rate; raises if it is not 16000.
        **options
            Keyword arguments of :class:`ResemblyzerTeacher`
            (``utterance_mode``, ``partial_*``).

        Returns
        -------
        ResemblyzerTeacher
            Frozen, on the device of ``run_opts``.

        Raises
        ------
        ModuleNotFoundError
            resemblyzer is not installed.
        ValueError
            Sample rate mismatch or bad options.

        Example
        -------
        >>> ResemblyzerTeacher.load(expected_sample_rate=8000)
        Traceback (most recent call last):
        ...
        ValueError: teacher resemblyzer uses sample_rate=16000 but the recipe sets ...
        """
        if expected_sample_rate is not None and int(expected_sample_rate) != SAMPLE_RATE:
            raise ValueError(
                f"teacher {RESEMBLYZER_PACKAGE} uses sample_rate={SAMPLE_RATE} but "
                f"the recipe sets sample_rate={expected_sample_rate}: resample the "
                "data or pick another teacher"
            )
        device = (run_opts or {}).get("device") or "cpu"
        return cls(encoder=load_ge2e_encoder(), device=device, **options)

    def _modules(self):
        """Front end and encoder (no normalisation, no classifier)."""
        return [self.compute_features, self.embedding_model]

    @property
    def front_end(self):
        """Settings of the front end and of the utterance embedding.

        Returns
        -------
        dict
            Plain values (JSON-serialisable), for cache keys.

        Example
        -------
        >>> t = ResemblyzerTeacher(encoder=GE2EEncoder())
        >>> t.front_end["n_mels"], t.front_end["mel_scale"], t.front_end["power"]
        (40, 'slaney', 2.0)
        """
        return {
            "adapter": self.adapter_name,
            "package_version": RESEMBLYZER_VERSION,
            "sample_rate": self.sample_rate,
            "n_mels": N_MELS,
            "n_fft": N_FFT,
            "win_length": WIN_LENGTH,
            "hop_length": HOP_LENGTH,
            "window": "hann",
            "center": True,
            "pad_mode": PAD_MODE,
            "f_min": F_MIN,
            "f_max": F_MAX,
            "mel_scale": MEL_SCALE,
            "norm": MEL_NORM,
            "power": MEL_POWER,
            "log": False,
            "volume_target_dbfs": self.compute_features.target_dbfs,
            "volume_increase_only": True,
            "vad_trim": False,
            "utterance_mode": self.utterance_mode,
            "partial_frames": self.partial_frames,
            "partial_rate": self.partial_rate,
            "partial_min_coverage": self.partial_min_coverage,
        }

    def band_centres_hz(self):
        """Centre frequency of each mel band (Slaney scale), in Hz.

        Returns
        -------
        torch.Tensor
            ``(n_mels,)`` float64, increasing.

        Example
        -------
        >>> t = ResemblyzerTeacher(encoder=GE2EEncoder())
        >>> c = t.band_centres_hz()
        >>> round(c[0].item(), 2), round(c[-1].item(), 2)
        (73.57, 7415.48)
        """
        return slaney_band_centres(N_MELS, F_MIN, F_MAX)

    def features(self, wavs, wav_lens=None):
        """Power mel spectrograms of volume-normalised waveforms (no grad).

        Arguments
        ---------
        wavs : torch.Tensor
            ``B x samples`` at 16 kHz.
        wav_lens : torch.Tensor or None
            Relative lengths; None means no padding.

        Returns
        -------
        torch.Tensor
            ``B x (1 + samples // 160) x 40``, detached; frames past an
            utterance's end are those of silence.

        Example
        -------
        >>> t = ResemblyzerTeacher(encoder=GE2EEncoder())
        >>> t.features(torch.rand(1, 3200)).shape
        torch.Size([1, 21, 40])
        """
        self.ensure_frozen()
        wavs = wavs.to(self.device).float()
        with torch.no_grad(), _full_precision(wavs):
            feats = self.compute_features(wavs, wav_lens)
        return feats.detach()

    def embed(self, feats, lengths=None):
        """Utterance embeddings; gradients flow to ``feats``, not to weights.

        Arguments
        ---------
        feats : torch.Tensor
            ``B x T x 40`` power mel spectrograms (e.g. from
            :meth:`features`), possibly with ``requires_grad=True``.
        lengths : torch.Tensor or None
            Relative lengths: only each sample's valid frames are embedded.

        Returns
        -------
        torch.Tensor
            ``B x 256`` embeddings of unit norm.

        Example
        -------
        >>> t = ResemblyzerTeacher(encoder=GE2EEncoder())
        >>> feats = torch.rand(2, 400, 40)
        >>> emb = t.embed(feats, torch.tensor([1.0, 0.25]))
        >>> torch.allclose(emb[1], t.embed(feats[1:, :100])[0], atol=1e-6)
        True
        """
        self.ensure_frozen()
        feats = feats.to(self.device)
        counts = valid_counts(lengths, feats.shape[1])
        if counts is None:
            counts = [feats.shape[1]] * feats.shape[0]
        with _full_precision(feats):
            feats = feats.float()
            if self.utterance_mode == "whole":
                return self.embedding_model(feats, counts)
            return self._embed_partials(feats, counts)

    def _embed_partials(self, feats, counts):
        """``embed_utterance`` on features: mean of partial embeddings."""
        size = self.partial_frames
        whole = [b for b, n in enumerate(counts) if n <= size]
        pieces, owners = [], []
        for b, n in enumerate(counts):
            if n <= size:
                continue
            for start in partial_starts(
                n, size, self.partial_rate, self.partial_min_coverage
            ):
                piece = feats[b, start : min(start + size, n)]
                # Frames past the end are those of zero-padded audio.
                pieces.append(F.pad(piece, (0, 0, 0, size - piece.shape[0])))
                owners.append(b)
        rows = [None] * len(counts)
        if whole:
            index = torch.tensor(whole, device=feats.device)
            emb = self.embedding_model(
                feats.index_select(0, index)[:, : max(counts[b] for b in whole)],
                [counts[b] for b in whole],
            )
            for i, b in enumerate(whole):
                rows[b] = emb[i]
        if pieces:
            partial = self.embedding_model(torch.stack(pieces))
            owner = torch.tensor(owners, device=feats.device)
            sums = partial.new_zeros(len(counts), partial.shape[1]).index_add(
                0, owner, partial
            )
            means = F.normalize(sums, dim=1)  # the mean's direction
            for b in set(owners):
                rows[b] = means[b]
        return torch.stack(rows)

    def set_training_speakers(self, spk_ids, mode="centroid", **kwargs):
        """Prepares :meth:`logits` from centroids (this teacher has no classifier).

        Arguments
        ---------
        spk_ids : sequence of str or CategoricalEncoder
            Training speakers, in the student's class order.
        mode : str
            ``"centroid"`` or ``"auto"`` (which resolves to centroid);
            ``"label"`` raises.
        **kwargs
            As :meth:`Teacher.set_training_speakers` (``centroid_data``,
            ``centroid_scale``, ...).

        Returns
        -------
        str
            ``"centroid"``.

        Raises
        ------
        ValueError
            ``mode="label"``, or as :meth:`Teacher.set_training_speakers`.

        Example
        -------
        >>> t = ResemblyzerTeacher(encoder=GE2EEncoder())
        >>> t.set_training_speakers(["a"], mode="label")
        Traceback (most recent call last):
        ...
        ValueError: the resemblyzer teacher has no classifier, so mode='label' is impossible: set teacher_posteriors: centroid (or auto)
        >>> cents = {"a": torch.rand(256), "b": torch.rand(256)}
        >>> t.set_training_speakers(["a", "b"], mode="auto", centroid_data=cents)
        'centroid'
        """
        if mode == "label":
            raise ValueError(
                f"the {self.adapter_name} teacher has no classifier, so "
                "mode='label' is impossible: set teacher_posteriors: centroid "
                "(or auto)"
            )
        return super().set_training_speakers(spk_ids, mode=mode, **kwargs)

