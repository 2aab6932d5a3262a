"""Segment plan and IG settings of an IG cache.

:class:`SegmentPlan` fixes which segments of every training chunk are cached
(instead of a free random crop per duration), :class:`IGSettings` how the
teacher's Integrated Gradients are computed. Both enter the cache key
(:func:`speechbrain_imlkd.ig_cache.key.cache_key`).

Example
-------
>>> SegmentPlan(durations=[1.0, 2.0], chunk_seconds=2.0).counts
(2, 1)
>>> IGSettings(steps=4).steps
4

Authors
 * speechbrain-imlkd contributors
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from speechbrain_imlkd.attribution import DEFAULT_METHOD, DEFAULT_STEPS, quadrature

#: IG targets, as in :class:`speechbrain_imlkd.distillers.OnlineSaliency`.
TARGETS = ("speaker_logit", "embedding_cosine")


@dataclass(frozen=True)
class SegmentPlan:
    """The fixed segments of every training chunk, per duration.

    A segment of ``d`` seconds has ``round(d * frames_per_second)`` frames of
    the chunk's normalised feature sequence. Its planned start frames are
    evenly spaced from the chunk's first to its last possible start:
    ``k * (T - n) // (c - 1)`` for ``k = 0 .. c-1`` (the start alone when
    ``c = 1``), ``T`` the chunk's frames, ``n`` the segment's. By default
    ``c = ceil(chunk_seconds / d)``, the fewest segments that cover the whole
    chunk: a 3 s chunk gets the whole chunk, 2 s at its start and end, 1 s
    at its start, middle and end.

    Arguments
    ---------
    durations : sequence of float
        Segment durations in seconds, each at most ``chunk_seconds``.
    chunk_seconds : float
        Duration of the training chunks (the CSV's ``seg_dur``); it only
        sets the default number of segments per duration.
    offsets_per_duration : int or sequence of int, optional
        Number of planned segments per duration: one count for all, or one
        per duration. ``None``: ``ceil(chunk_seconds / d)``.
    frames_per_second : int
        Feature frame rate (100 for a 10 ms hop).

    Example
    -------
    >>> plan = SegmentPlan()
    >>> plan.counts, plan.segment_frames
    ((3, 2, 1), (100, 200, 300))
    >>> plan.offsets(301)
    [[0, 100, 201], [0, 101], [0]]
    >>> SegmentPlan(offsets_per_duration=[4, 1, 1]).offsets(301)[0]
    [0, 67, 134, 201]
    """

    durations: Tuple[float, ...] = (1.0, 2.0, 3.0)
    chunk_seconds: float = 3.0
    offsets_per_duration: Optional[Union[int, Sequence[int]]] = None
    frames_per_second: int = 100

    def __post_init__(self):
        durations = tuple(float(d) for d in self.durations)
        if not durations:
            raise ValueError("SegmentPlan: durations must name at least one duration")
        if not (math.isfinite(self.chunk_seconds) and self.chunk_seconds > 0):
            raise ValueError(f"SegmentPlan: chunk_seconds={self.chunk_seconds!r} must be > 0")
        if isinstance(self.frames_per_second, bool) or not self.frames_per_second > 0:
            raise ValueError(
                f"SegmentPlan: frames_per_second={self.frames_per_second!r} must be > 0"
            )
        for d in durations:
            if not (math.isfinite(d) and d > 0):
                raise ValueError(f"SegmentPlan: duration {d!r} must be positive")
            if d > self.chunk_seconds + 1e-9:
                raise ValueError(
                    f"SegmentPlan: duration {d} s is longer than chunk_seconds="
                    f"{self.chunk_seconds}"
                )
            if round(d * self.frames_per_second) < 1:
                raise ValueError(
                    f"SegmentPlan: duration {d} s is under one frame at "
                    f"{self.frames_per_second} frames/s"
                )
        counts = self.offsets_per_duration
        if counts is None:
            # The small tolerance keeps 3.0 / 1.0 from becoming 4 by rounding.
            counts = [math.ceil(self.chunk_seconds / d - 1e-9) for d in durations]
        elif isinstance(counts, int) and not isinstance(counts, bool):
            counts = [counts] * len(durations)
        else:
            counts = list(counts)
            if len(counts) != len(durations):
                raise ValueError(
                    f"SegmentPlan: offsets_per_duration={counts} has {len(counts)} "
                    f"counts for {len(durations)} durations {list(durations)}"
                )
        for c in counts:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(
                    f"SegmentPlan: offsets_per_duration holds {c!r}; counts must "
                    "be positive integers"
                )
        object.__setattr__(self, "durations", durations)
        object.__setattr__(self, "offsets_per_duration", tuple(counts))

    @property
    def counts(self):
        """Number of planned segments per duration (tuple of int)."""
        return self.offsets_per_duration

    @property
    def segment_frames(self):
        """Frames per segment, per duration (tuple of int)."""
        return tuple(int(round(d * self.frames_per_second)) for d in self.durations)

    def offsets(self, n_frames, chunk_id=None):
        """Planned start frames of every segment of a chunk of ``n_frames``.

        Arguments
        ---------
        n_frames : int
            Frames of the chunk's normalised feature sequence.
        chunk_id : str, optional
            Named in the error message.

        Returns
        -------
        list of list of int
            One list of start frames per duration.

        Raises
        ------
        ValueError
            If the chunk is shorter than the longest planned segment.

        Example
        -------
        >>> SegmentPlan(durations=[0.5, 1.0], chunk_seconds=1.0).offsets(101)
        [[0, 51], [0]]
        >>> SegmentPlan().offsets(250, chunk_id="id10001/a/00001_0_40000")
        Traceback (most recent call last):
        ...
        ValueError: chunk 'id10001/a/00001_0_40000' has 250 feature frames (2.50 s), shorter than the longest planned segment (3 s = 300 frames)
        """
        n_frames = int(n_frames)
        longest = max(range(len(self.durations)), key=lambda j: self.segment_frames[j])
        if n_frames < self.segment_frames[longest]:
            name = "a chunk" if chunk_id is None else f"chunk {chunk_id!r}"
            raise ValueError(
                f"{name} has {n_frames} feature frames "
                f"({n_frames / self.frames_per_second:.2f} s), shorter than the "
                f"longest planned segment ({self.durations[longest]:g} s = "
                f"{self.segment_frames[longest]} frames)"
            )
        out = []
        for n, c in zip(self.segment_frames, self.counts):
            slack = n_frames - n
            out.append([0] if c == 1 else [k * slack // (c - 1) for k in range(c)])
        return out

    def as_dict(self):
        """The plan as plain JSON values (for the cache key).

        Returns
        -------
        dict

        Example
        -------
        >>> SegmentPlan(durations=[1.0], chunk_seconds=1.0).as_dict()
        {'durations': [1.0], 'chunk_seconds': 1.0, 'offsets_per_duration': [1], 'frames_per_second': 100}
        """
        return {
            "durations": list(self.durations),
            "chunk_seconds": float(self.chunk_seconds),
            "offsets_per_duration": list(self.counts),
            "frames_per_second": self.frames_per_second,
        }


@dataclass(frozen=True)
class IGSettings:
    """How the teacher's Integrated Gradients are computed.

    Arguments
    ---------
    target : str
        ``"speaker_logit"`` (the teacher's logit of the chunk's speaker, from
        ``spk_id`` through the teacher's training-speaker table) or
        ``"embedding_cosine"`` (cosine to the teacher embedding of the whole
        chunk), as in :class:`speechbrain_imlkd.distillers.OnlineSaliency`.
    steps : int, optional
        Quadrature steps; ``None``: the attribution module's default.
    method : str, optional
        Quadrature rule; ``None``: the attribution module's default.
    internal_batch_size : int
        Rows per teacher pass. A memory knob only, so not part of the key.

    Example
    -------
    >>> IGSettings(steps=8, method="riemann_right").as_dict()
    {'target': 'speaker_logit', 'steps': 8, 'method': 'riemann_right'}
    >>> IGSettings(target="logit")
    Traceback (most recent call last):
    ...
    ValueError: IG target must be one of ('speaker_logit', 'embedding_cosine'), got 'logit'
    """

    target: str = "speaker_logit"
    steps: Optional[int] = None
    method: Optional[str] = None
    internal_batch_size: int = 64

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"IG target must be one of {TARGETS}, got {self.target!r}")
        object.__setattr__(self, "steps", DEFAULT_STEPS if self.steps is None else self.steps)
        object.__setattr__(self, "method", DEFAULT_METHOD if self.method is None else self.method)
        quadrature(self.method, self.steps)  # validates both, naming the value

    def as_dict(self):
        """The settings that change the attributions (for the cache key).

        Returns
        -------
        dict

        Example
        -------
        >>> sorted(IGSettings().as_dict())
        ['method', 'steps', 'target']
        """
        return {"target": self.target, "steps": int(self.steps), "method": self.method}
