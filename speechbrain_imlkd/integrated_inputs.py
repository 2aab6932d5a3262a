"""Multi-duration segments and integrated inputs.

IML-KD shows the student the input "integrated" with the teacher's
attributions: each training chunk is cut into one random segment per
duration (1, 2 and 3 s by default), the teacher's Integrated Gradients of
each segment are turned into a saliency map ``s`` in ``[0, 1]``, and a rule
combines ``s`` with the segment's features. The paper does not publish the
rule; two are offered here, both hyperparameters:

* ``saliency_scale``: ``x * (1 + alpha * s)``, bins the teacher relies on are
  amplified (away from the sentence mean, since ``x`` is mean-normalised);
* ``temporal_weight``: frames are weighted by their saliency summed over
  frequency, ``w_t = 1 + alpha * r_t`` (``r_t`` in ``[0, 1]``) or, with
  ``mode="softmax"``, ``w_t = T * softmax(alpha * r)_t`` (weights average 1).

Rules take the *normalised* saliency, so precomputed maps can be used as they
are: ``B x T x F``, pooled over frequency bands ``B x T x n_bands`` or
time-only ``B x T``, in float16 if stored that way
(:func:`expand_saliency` broadcasts them back to ``F`` bins).

Example
-------
>>> import torch
>>> feats = torch.randn(2, 300, 80)
>>> (seg, start), = sample_segments(feats, [1.0], generator=torch.Generator().manual_seed(0))
>>> seg.shape
torch.Size([2, 100, 80])
>>> s = normalised_saliency(torch.randn(2, 100, 80))
>>> integrated_inputs(seg, s, rule="saliency_scale", alpha=0.5).shape
torch.Size([2, 100, 80])
"""

import math

import torch

#: Segment durations in seconds used when none are given.
DEFAULT_DURATIONS = (1.0, 2.0, 3.0)


def sample_segments(
    feats, durations=DEFAULT_DURATIONS, frames_per_second=100, generator=None, lengths=None
):
    """Cuts one random segment per duration from every sample.

    Arguments
    ---------
    feats : torch.Tensor
        ``B x T x F`` features of the training chunks.
    durations : sequence of float
        Segment durations in seconds.
    frames_per_second : float
        Feature frame rate (100 for a 10 ms hop).
    generator : torch.Generator, optional
        Source of the random start frames (for reproducible runs).
    lengths : torch.Tensor, optional
        ``(B,)`` relative lengths; segments stay inside the unpadded part.

    Returns
    -------
    list of tuple
        One ``(segments, starts)`` per duration: ``B x T_d x F`` features,
        ``T_d = round(d * frames_per_second)``, and the ``(B,)`` start frames.

    Example
    -------
    >>> import torch
    >>> feats = torch.arange(10.0).view(1, 10, 1)
    >>> out = sample_segments(feats, [0.04], frames_per_second=100,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> seg, start = out[0]
    >>> seg.flatten().tolist() == list(range(start.item(), start.item() + 4))
    True
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be B x T x F, got shape {tuple(feats.shape)}")
    durations = list(durations)
    if not durations:
        raise ValueError("durations must not be empty")
    valid = _valid_frames(feats, lengths)
    return [
        _random_segment(feats, valid, _duration_frames(d, frames_per_second, valid), d, generator)
        for d in durations
    ]


def _valid_frames(feats, lengths):
    """Number of unpadded frames of each sample, ``(B,)`` long."""
    batch, n_frames = feats.shape[:2]
    if lengths is None:
        return torch.full((batch,), n_frames, dtype=torch.long, device=feats.device)
    valid = torch.round(lengths.to(feats.device).float() * n_frames).long()
    return valid.clamp(0, n_frames)


def _duration_frames(duration, frames_per_second, valid):
    """Frames in a segment of ``duration`` seconds; checks it fits every chunk."""
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"segment duration must be positive, got {duration}")
    n = int(round(duration * frames_per_second))
    if n < 1:
        raise ValueError(
            f"segment duration {duration} s is under one frame at {frames_per_second} frames/s"
        )
    shortest = int(valid.min())
    if n > shortest:
        raise ValueError(
            f"segment duration {duration} s ({n} frames) is longer than the chunk "
            f"({shortest} frames at {frames_per_second} frames/s)"
        )
    return n


def _random_segment(feats, valid, n, duration, generator):
    """One random ``n``-frame window per sample, with its start frames."""
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(feats.shape[0], generator=generator, device=device).to(feats.device)
    starts = (u * (valid - n + 1)).long().clamp(max=valid - n)
    index = starts[:, None] + torch.arange(n, device=feats.device)
    index = index[..., None].expand(-1, -1, feats.shape[-1])
    return feats.gather(1, index), starts


def normalised_saliency(ig):
    """``|IG|`` divided by its maximum over each segment, in ``[0, 1]``.

    Dividing by the maximum (not min-max) keeps zero attribution at zero, so
    the rules leave bins the teacher ignores unchanged. An all-zero map (e.g.
    a silent segment equal to the baseline) gives zeros, not NaN.

    Arguments
    ---------
    ig : torch.Tensor
        ``B x ...`` attributions.

    Returns
    -------
    torch.Tensor
        Same shape, values in ``[0, 1]``, detached.

    Example
    -------
    >>> import torch
    >>> normalised_saliency(torch.tensor([[-2.0, 1.0], [0.0, 0.0]])).tolist()
    [[1.0, 0.5], [0.0, 0.0]]
    """
    ig = ig.detach()
    if not torch.isfinite(ig).all():
        raise ValueError("IG attributions contain NaN or inf")
    s = ig.abs()
    peak = s.flatten(1).amax(dim=1).view(-1, *([1] * (s.dim() - 1)))
    # The floor only matters when the whole map is zero, where 0 / tiny = 0.
    return s / peak.clamp_min(torch.finfo(s.dtype).tiny)


def pool_saliency(s, n_bands=None):
    """Averages a ``B x T x F`` saliency map over frequency, for compact caches.

    Arguments
    ---------
    s : torch.Tensor
        ``B x T x F`` normalised saliency.
    n_bands : int, optional
        Number of equal, contiguous frequency bands (must divide ``F``);
        ``None`` gives a time-only ``B x T`` map.

    Returns
    -------
    torch.Tensor
        ``B x T x n_bands``, or ``B x T``.

    Example
    -------
    >>> import torch
    >>> s = torch.tensor([[[0.0, 1.0, 0.5, 0.5]]])
    >>> pool_saliency(s, 2).tolist(), pool_saliency(s).tolist()
    ([[[0.5, 0.5]]], [[0.5]])
    """
    if s.dim() != 3:
        raise ValueError(f"saliency to pool must be B x T x F, got {tuple(s.shape)}")
    if n_bands is None:
        return s.mean(dim=-1)
    n_freq = s.shape[-1]
    if n_bands < 1 or n_freq % n_bands != 0:
        raise ValueError(f"n_bands={n_bands} must divide the {n_freq} frequency bins")
    return s.unflatten(-1, (n_bands, n_freq // n_bands)).mean(dim=-1)


def expand_saliency(s, n_freq):
    """Broadcasts a saliency map to ``B x T x n_freq`` bins.

    Arguments
    ---------
    s : torch.Tensor
        ``B x T`` (time-only), ``B x T x n_bands`` (equal contiguous bands,
        ``n_bands`` dividing ``n_freq``) or ``B x T x n_freq``.
    n_freq : int
        Number of frequency bins of the features.

    Returns
    -------
    torch.Tensor
        ``B x T x n_freq`` (possibly an expanded view).

    Example
    -------
    >>> import torch
    >>> expand_saliency(torch.tensor([[[0.25, 1.0]]]), 4).tolist()
    [[[0.25, 0.25, 1.0, 1.0]]]
    >>> expand_saliency(torch.tensor([[0.5]]), 3).tolist()
    [[[0.5, 0.5, 0.5]]]
    """
    if s.dim() == 2:
        return s[..., None].expand(-1, -1, n_freq)
    if s.dim() != 3:
        raise ValueError(f"saliency must be B x T or B x T x bands, got {tuple(s.shape)}")
    n_bands = s.shape[-1]
    if n_bands == n_freq:
        return s
    if n_freq % n_bands != 0:
        raise ValueError(
            f"saliency has {n_bands} frequency bands, which do not divide the "
            f"{n_freq} feature bins"
        )
    return s.repeat_interleave(n_freq // n_bands, dim=-1)


def frame_saliency(s):
    """Per-frame saliency ``r`` in ``[0, 1]``: mean over frequency, renormalised.

    Arguments
    ---------
    s : torch.Tensor
        ``B x T`` or ``B x T x bands`` normalised saliency.

    Returns
    -------
    torch.Tensor
        ``B x T``; the most salient frame of each segment gets 1.

    Example
    -------
    >>> import torch
    >>> frame_saliency(torch.tensor([[[1.0, 0.0], [0.25, 0.25]]])).tolist()
    [[1.0, 0.5]]
    """
    frames = s.float().mean(dim=-1) if s.dim() == 3 else s.float()
    return normalised_saliency(frames)


def _check_alpha(alpha):
    """Rejects negative or non-finite rule strengths."""
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"integration strength alpha must be >= 0 and finite, got {alpha}")


def _check_saliency(x, s):
    """Checks ``s`` is a normalised map over the frames of ``x``."""
    if s.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"saliency of shape {tuple(s.shape)} does not match the B x T of "
            f"features {tuple(x.shape)}"
        )
    if s.numel() and (s.min() < 0 or s.max() > 1 or not torch.isfinite(s).all()):
        raise ValueError(
            "saliency must be normalised to [0, 1]; pass raw IG through normalised_saliency"
        )


def saliency_scale(x, s, alpha=1.0):
    """Integrated input ``x * (1 + alpha * s)``.

    Arguments
    ---------
    x : torch.Tensor
        ``B x T x F`` normalised features.
    s : torch.Tensor
        Normalised saliency, any shape accepted by :func:`expand_saliency`.
    alpha : float
        Strength, ``>= 0``; 0 returns ``x``.

    Returns
    -------
    torch.Tensor
        ``B x T x F``.

    Example
    -------
    >>> import torch
    >>> x = torch.tensor([[[2.0, -2.0]]])
    >>> saliency_scale(x, torch.tensor([[[1.0, 0.5]]]), alpha=1.0).tolist()
    [[[4.0, -3.0]]]
    """
    _check_alpha(alpha)
    _check_saliency(x, s)
    return x * (1 + alpha * expand_saliency(s, x.shape[-1]).to(x.dtype))


def temporal_weight(x, s, alpha=1.0, mode="linear"):
    """Integrated input with frames weighted by their saliency.

    Arguments
    ---------
    x : torch.Tensor
        ``B x T x F`` normalised features.
    s : torch.Tensor
        Normalised saliency, ``B x T`` or ``B x T x bands``.
    alpha : float
        Strength, ``>= 0``.
    mode : str
        ``"linear"``: ``w_t = 1 + alpha * r_t``. ``"softmax"``:
        ``w_t = T * softmax(alpha * r)_t``, weights averaging 1, ``alpha``
        acting as an inverse temperature. ``r`` is :func:`frame_saliency`.

    Returns
    -------
    torch.Tensor
        ``B x T x F``.

    Example
    -------
    >>> import torch
    >>> x = torch.ones(1, 2, 3)
    >>> s = torch.tensor([[1.0, 0.0]])
    >>> temporal_weight(x, s, alpha=2.0)[0, :, 0].tolist()
    [3.0, 1.0]
    >>> temporal_weight(x, s, alpha=0.0, mode="softmax")[0, :, 0].tolist()
    [1.0, 1.0]
    """
    _check_alpha(alpha)
    _check_saliency(x, s)
    r = frame_saliency(s).to(x.dtype)
    if mode == "linear":
        w = 1 + alpha * r
    elif mode == "softmax":
        w = r.shape[1] * torch.softmax(alpha * r, dim=1)
    else:
        raise ValueError(f"temporal_weight mode must be 'linear' or 'softmax', got {mode!r}")
    return x * w[..., None]


#: Integration rules by the name used in YAML: ``rule(x, s, alpha, **kwargs)``.
INTEGRATION_RULES = {"saliency_scale": saliency_scale, "temporal_weight": temporal_weight}


def integrated_inputs(x, saliency, rule="saliency_scale", alpha=1.0, **rule_kwargs):
    """Combines features with normalised saliency by a named rule.

    Arguments
    ---------
    x : torch.Tensor
        ``B x T x F`` normalised features of the segments.
    saliency : torch.Tensor
        Normalised saliency in ``[0, 1]`` (``normalised_saliency(ig)``, or a
        cached, possibly pooled or float16 map).
    rule : str or callable
        A key of :data:`INTEGRATION_RULES`, or a rule ``(x, s, alpha) -> x``.
    alpha : float
        Strength of the rule, ``>= 0``.
    **rule_kwargs
        Extra arguments of the rule (e.g. ``mode`` of :func:`temporal_weight`).

    Returns
    -------
    torch.Tensor
        ``B x T x F`` integrated inputs.

    Example
    -------
    >>> import torch
    >>> x = torch.ones(1, 2, 2)
    >>> s = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float16)
    >>> integrated_inputs(x, s, "saliency_scale", alpha=1.0).tolist()
    [[[2.0, 1.0], [1.0, 1.0]]]
    """
    if isinstance(rule, str):
        if rule not in INTEGRATION_RULES:
            raise ValueError(
                f"unknown integration rule={rule!r}; expected one of {sorted(INTEGRATION_RULES)}"
            )
        rule = INTEGRATION_RULES[rule]
    return rule(x, saliency, alpha, **rule_kwargs)


# --------------------------------------------------------------------------- #
# Teachers with their own features: carrying saliency to the student's space
# --------------------------------------------------------------------------- #
#: How a teacher's saliency map reaches the student's mel bands.
BAND_MAPPINGS = ("mel", "time")


def mel_position(hz):
    """Position of frequencies on the (HTK) mel axis, ``2595 log10(1 + f/700)``.

    Both mel scales in use (HTK for SpeechBrain's ``Fbank``, Slaney for
    librosa-style teachers) are monotonic in Hz, so interpolating between
    band centres on one common mel axis keeps their order; HTK's is used as
    the common axis because it is the student's.

    Arguments
    ---------
    hz : torch.Tensor
        Frequencies in Hz.

    Returns
    -------
    torch.Tensor
        Mel values, same shape.

    Example
    -------
    >>> round(float(mel_position(torch.tensor(700.0))), 2)
    781.17
    """
    return 2595.0 * torch.log10(1.0 + hz.double() / 700.0)


def band_interpolation(source_centres_hz, target_centres_hz):
    """Linear-interpolation matrix from source mel bands to target mel bands.

    Each target band takes the source saliency at its own centre frequency,
    interpolated on the mel axis between the two nearest source centres
    (clamped to the outermost source band below and above the source range).

    Arguments
    ---------
    source_centres_hz : torch.Tensor
        ``F_s`` increasing centre frequencies of the source (teacher) bands.
    target_centres_hz : torch.Tensor
        ``F_t`` centre frequencies of the target (student) bands.

    Returns
    -------
    torch.Tensor
        ``F_s x F_t`` float matrix whose columns sum to 1: ``s_target =
        s_source @ W``.

    Example
    -------
    >>> W = band_interpolation(torch.tensor([100.0, 300.0]),
    ...                        torch.tensor([100.0, 200.0, 300.0, 4000.0]))
    >>> W.sum(0).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> W[:, 3].tolist()
    [0.0, 1.0]
    """
    src = mel_position(torch.as_tensor(source_centres_hz).flatten())
    tgt = mel_position(torch.as_tensor(target_centres_hz).flatten())
    if src.numel() < 1 or tgt.numel() < 1:
        raise ValueError("band centre lists must not be empty")
    if src.numel() > 1 and not bool((src[1:] > src[:-1]).all()):
        raise ValueError("source band centres must be strictly increasing")
    weights = torch.zeros(src.numel(), tgt.numel(), dtype=torch.float64)
    if src.numel() == 1:
        weights[0] = 1.0
        return weights.float()
    tgt = tgt.clamp(float(src[0]), float(src[-1]))
    upper = torch.searchsorted(src, tgt).clamp(1, src.numel() - 1)
    lower = upper - 1
    frac = (tgt - src[lower]) / (src[upper] - src[lower])
    cols = torch.arange(tgt.numel())
    weights[lower, cols] = 1.0 - frac
    weights[upper, cols] += frac
    return weights.float()


class SaliencyMapping:
    """Carries a teacher's saliency map to the student's feature space.

    Teacher and student may use different front ends (e.g. a 40-band power
    mel for a GE2E teacher and SpeechBrain's 80-band log Fbank for the
    student). Both use a 10 ms hop on the same waveform, so frame ``t`` of
    one is frame ``t`` of the other (a frame-count mismatch of a frame or
    two at the end, from different centring or padding, is cropped or
    edge-padded). Along frequency, ``mode="mel"`` interpolates the map
    between band centres on the mel axis (:func:`band_interpolation`);
    ``mode="time"`` keeps only the per-frame saliency
    (:func:`frame_saliency`) and spreads it over every student band.

    Arguments
    ---------
    teacher_centres_hz : torch.Tensor
        Centre frequencies of the teacher's bands, in Hz.
    student_centres_hz : torch.Tensor
        Centre frequencies of the student's bands, in Hz.
    mode : str
        One of :data:`BAND_MAPPINGS`.

    Example
    -------
    >>> m = SaliencyMapping(torch.linspace(100, 7000, 40), torch.linspace(50, 7500, 80))
    >>> s = torch.zeros(1, 5, 40); s[0, 2, 10] = 1.0
    >>> out = m(s, n_frames=5)
    >>> out.shape, int(out[0].flatten().argmax()) // 80
    (torch.Size([1, 5, 80]), 2)
    """

    def __init__(self, teacher_centres_hz, student_centres_hz, mode="mel"):
        if mode not in BAND_MAPPINGS:
            raise ValueError(f"saliency band mapping must be one of {BAND_MAPPINGS}, got {mode!r}")
        self.mode = mode
        self.teacher_centres_hz = torch.as_tensor(teacher_centres_hz).float().flatten()
        self.student_centres_hz = torch.as_tensor(student_centres_hz).float().flatten()
        self.n_student_bands = self.student_centres_hz.numel()
        self.weights = band_interpolation(self.teacher_centres_hz, self.student_centres_hz)

    def as_dict(self):
        """Settings that change the mapped maps (for cache keys).

        Returns
        -------
        dict
            Mode and rounded band centres of both sides.

        Example
        -------
        >>> SaliencyMapping(torch.tensor([100.0]), torch.tensor([90.0]), "time").as_dict()["mode"]
        'time'
        """
        return {
            "mode": self.mode,
            "teacher_centres_hz": [round(float(f), 3) for f in self.teacher_centres_hz],
            "student_centres_hz": [round(float(f), 3) for f in self.student_centres_hz],
        }

    def __call__(self, saliency, n_frames=None):
        """Maps a normalised ``B x T x F_teacher`` map to ``B x T' x F_student``.

        Arguments
        ---------
        saliency : torch.Tensor
            Teacher saliency in ``[0, 1]``, ``B x T x F_teacher``.
        n_frames : int, optional
            Frames of the student's segment; the map is cropped or
            edge-padded to it (default: unchanged).

        Returns
        -------
        torch.Tensor
            Student-space saliency in ``[0, 1]``.
        """
        if saliency.dim() != 3 or saliency.shape[-1] != self.weights.shape[0]:
            raise ValueError(
                f"teacher saliency must be B x T x {self.weights.shape[0]}, "
                f"got {tuple(saliency.shape)}"
            )
        s = saliency.float()
        if n_frames is not None:
            s = match_frames(s, n_frames)
        if self.mode == "time":
            return frame_saliency(s)[..., None].expand(-1, -1, self.n_student_bands)
        return (s @ self.weights.to(s.device)).clamp(0.0, 1.0)


def match_frames(x, n_frames):
    """Crops or edge-pads ``B x T x ...`` to ``n_frames`` frames.

    Two front ends with the same hop can disagree on the last frame or two
    (centring, padding); anything larger is an error, not something to hide.

    Arguments
    ---------
    x : torch.Tensor
        ``B x T x ...``.
    n_frames : int
        Wanted number of frames.

    Returns
    -------
    torch.Tensor
        ``B x n_frames x ...``.

    Example
    -------
    >>> match_frames(torch.arange(3.0).view(1, 3, 1), 4).flatten().tolist()
    [0.0, 1.0, 2.0, 2.0]
    """
    gap = n_frames - x.shape[1]
    if abs(gap) > MAX_FRAME_MISMATCH:
        raise ValueError(
            f"teacher and student frame counts differ by {abs(gap)} frames "
            f"({x.shape[1]} vs {n_frames}): their front ends must share the hop"
        )
    if gap <= 0:
        return x[:, :n_frames]
    return torch.cat([x, x[:, -1:].expand(-1, gap, *x.shape[2:])], dim=1)


#: Largest frame-count difference between two front ends with one hop.
MAX_FRAME_MISMATCH = 2


def saliency_mapping_for(teacher, student_features, mode="mel"):
    """The saliency mapping a teacher needs, or None when it shares features.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The teacher; one with ``own_front_end`` must offer
        ``band_centres_hz()``.
    student_features : speechbrain.lobes.features.Fbank
        The student's front end.
    mode : str
        One of :data:`BAND_MAPPINGS`.

    Returns
    -------
    SaliencyMapping or None

    Example
    -------
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> fbank, norm = features_pipeline(n_mels=40)
    >>> saliency_mapping_for(Teacher(fbank, norm, build_ecapa(16, 8, 40)), fbank) is None
    True
    """
    if teacher is None or not getattr(teacher, "own_front_end", False):
        return None
    from speechbrain_imlkd.models import band_centres_hz

    return SaliencyMapping(teacher.band_centres_hz(), band_centres_hz(student_features), mode=mode)
