"""Precomputed, checksummed Integrated-Gradients targets of the frozen teacher.

Integrated Gradients cost ``m`` teacher forward and backward passes per
segment. Computed online, every epoch of every student pays them again, yet
the teacher is frozen: for a fixed set of segments its attributions, and its
outputs on the resulting integrated inputs, never change. This module
computes them once (:func:`precompute_ig_cache`) and serves them during
training (:class:`CachedSaliency`, a saliency source of
:class:`speechbrain_imlkd.distillers.IMLKD`), so that training from the cache
costs no teacher pass at all.

Segments. Instead of a free random crop per duration, every training chunk
has a fixed :class:`SegmentPlan`: for a 3 s chunk and the default durations,
the whole chunk, 2 s at two offsets (start, end) and 1 s at three offsets
(start, middle, end). Training draws one planned segment per duration and
chunk.

What a cache holds, for every chunk of the training CSV and every planned
segment: the normalised saliency of the teacher's IG (``full``: ``T x F``;
``bands``: averaged over ``n_bands`` equal frequency bands; ``time``: one
value per frame), and the teacher's embedding and (optionally) logits on the
integrated input built from that *stored* saliency, all in float16.

Layout of ``cache_dir``:

* ``key.json``: what the cache was built from (:func:`cache_key`): the
  teacher's weights and speaker table (:func:`teacher_fingerprint`),
  feature settings, IG settings, integration rule and strength, segment
  plan, storage, shard size and a content hash of the training CSV;
* ``shard_NNNNN.pt``: ``torch.save`` of a dict of tensors for
  ``shard_size`` consecutive CSV rows, written under a temporary name and
  renamed when complete;
* ``shard_NNNNN.json``: the shard's key hash, chunk IDs, size and SHA-256,
  written after its shard, so a shard without a matching record is redone;
* ``index.json``: written once every shard is there: chunk ID -> (shard,
  position), and each shard's checksum.

A cache built with another key is never reused silently: precomputation
rebuilds it, training with ``rebuild=False`` raises :class:`CacheKeyError`.

In the recipe (``ig_mode: cached``), :func:`prepare_ig_cache` is called on
every process by ``compute_ig.py`` and ``train_kd.py``: it precomputes what
is missing or stale (the ranks of ``torchrun`` sharing the shards) and opens
the YAML's :class:`CachedSaliency` with the expected key.

Example
-------
>>> import tempfile, torch
>>> from speechbrain_imlkd.data.dataset import write_toy_csvs
>>> from speechbrain_imlkd.teacher import Teacher
>>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
>>> d = tempfile.mkdtemp()
>>> train_csv, _ = write_toy_csvs(d, seconds=0.5)
>>> _ = torch.manual_seed(0)
>>> teacher = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
>>> _ = teacher.set_training_speakers(
...     ["id00001", "id00002"], mode="centroid",
...     centroid_data={"id00001": torch.randn(8), "id00002": torch.randn(8)})
>>> plan = SegmentPlan(durations=[0.25, 0.5], chunk_seconds=0.5)
>>> report = precompute_ig_cache(teacher, train_csv, d + "/cache", plan,
...                              IGSettings(steps=2), storage="bands")
>>> report.complete, report.computed
(True, [0])
>>> source = CachedSaliency(d + "/cache", plan).open()
>>> feats = teacher.features(torch.zeros(2, 8000))
>>> targets = source.segment_targets(feats, ["id00001--0", "id00002--0"],
...                                  [torch.tensor([0, 1]), torch.tensor([0, 0])])
>>> [tuple(t.inputs.shape) for t in targets], tuple(targets[0].teacher_logits.shape)
([(2, 25, 80), (2, 50, 80)], (2, 2))

Authors
 * speechbrain-imlkd contributors
"""

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from speechbrain_imlkd.attribution import (
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    embedding_cosine_target,
    integrated_gradients,
    quadrature,
    speaker_logit_target,
)
from speechbrain_imlkd.data.audio import read_wav_checked
from speechbrain_imlkd.integrated_inputs import (
    integrated_inputs,
    normalised_saliency,
    pool_saliency,
)

logger = logging.getLogger(__name__)

#: Bumped whenever the content or layout of a cache changes.
FORMAT_VERSION = 1
#: Saliency storage choices: ``T x F``, ``T x n_bands`` or ``T`` per segment.
STORAGES = ("full", "bands", "time")
#: IG targets, as in :class:`speechbrain_imlkd.distillers.OnlineSaliency`.
TARGETS = ("speaker_logit", "embedding_cosine")
KEY_FILE = "key.json"
INDEX_FILE = "index.json"
STORED_DTYPE = torch.float16
_SHARD_STEM = "shard_{:05d}"
_CSV_COLUMNS = ("ID", "wav", "start", "stop", "spk_id")
# Attributes of feature modules that change at run time without changing
# what the module computes: left out of the teacher fingerprint.
_VOLATILE_ATTRIBUTES = {"training", "count", "first_call", "device"}
_TEACHER_MODULES = ("compute_features", "mean_var_norm", "embedding_model", "classifier")
_TEACHER_TABLES = ("mode", "logit_scale", "training_speakers", "_columns", "_centroids")


class CacheError(RuntimeError):
    """An IG cache is incomplete, torn, or does not fit the batch it serves.

    Example
    -------
    >>> raise CacheError("cache/shard_00000.pt: checksum mismatch")
    Traceback (most recent call last):
    ...
    speechbrain_imlkd.ig_cache.CacheError: cache/shard_00000.pt: checksum mismatch
    """


class CacheKeyError(CacheError):
    """An IG cache was built from another teacher, CSV or setting.

    Example
    -------
    >>> issubclass(CacheKeyError, CacheError)
    True
    """


# ---------------------------------------------------------------------- #
# Settings
# ---------------------------------------------------------------------- #
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


@dataclass
class PrecomputeReport:
    """What one call of :func:`precompute_ig_cache` did.

    Arguments
    ---------
    cache_dir : str
        The cache folder.
    key_hash : str
        SHA-256 of the cache key.
    n_chunks : int
        Chunks in the training CSV.
    n_shards : int
        Shards of the whole cache.
    computed : list of int
        Shards computed by this process.
    reused : list of int
        Shards of this process found complete and kept.
    complete : bool
        Whether every shard is there and ``index.json`` is written.
    segments : int
        Segments whose IG this process computed.
    seconds : float
        Wall-clock time of the call.

    Example
    -------
    >>> PrecomputeReport("c", "ab", 3, 1).complete
    False
    """

    cache_dir: str
    key_hash: str
    n_chunks: int
    n_shards: int
    computed: List[int] = field(default_factory=list)
    reused: List[int] = field(default_factory=list)
    complete: bool = False
    segments: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------- #
# Key
# ---------------------------------------------------------------------- #
def _sha256_file(path, block=1 << 20):
    """SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_tensor(h, name, tensor):
    """Feeds a tensor's name, dtype, shape and bytes into ``h``."""
    t = tensor.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _plain(value):
    """Whether a value is a JSON scalar (hashed by its repr)."""
    return value is None or isinstance(value, (bool, int, float, str))


def teacher_fingerprint(teacher):
    """Content hash of everything the teacher computes with.

    Covers the weights and buffers of its modules (``compute_features``,
    ``mean_var_norm``, ``embedding_model``, ``classifier``), their
    configuration (plain attributes such as ``n_mels`` or ``hop_length``;
    run-time flags like ``training`` are left out) and the speaker table
    behind :meth:`~speechbrain_imlkd.teacher.Teacher.logits` (mode, scale,
    speakers, classifier columns or centroids). A teacher object may define
    its own ``fingerprint()`` instead.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The teacher (or an object with the same attributes).

    Returns
    -------
    str
        Hex SHA-256.

    Example
    -------
    >>> import torch
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
    >>> a = teacher_fingerprint(t)
    >>> _ = t.features(torch.rand(1, 1600))
    >>> a == teacher_fingerprint(t)
    True
    >>> with torch.no_grad():
    ...     _ = next(t.embedding_model.parameters()).add_(1.0)
    >>> a == teacher_fingerprint(t)
    False
    """
    own = getattr(teacher, "fingerprint", None)
    if callable(own):
        return str(own())
    h = hashlib.sha256()
    for name in _TEACHER_MODULES:
        module = getattr(teacher, name, None)
        h.update(f"module {name}: {type(module).__name__}\n".encode())
        if not isinstance(module, torch.nn.Module):
            continue
        for sub_name, sub in module.named_modules():
            config = {
                k: v
                for k, v in vars(sub).items()
                if _plain(v) and not k.startswith("_") and k not in _VOLATILE_ATTRIBUTES
            }
            h.update(f"{sub_name}:{type(sub).__name__}:{sorted(config.items())!r}\n".encode())
        for key, value in sorted(module.state_dict().items()):
            if torch.is_tensor(value):
                _hash_tensor(h, f"{name}.{key}", value)
    for name in _TEACHER_TABLES:
        value = getattr(teacher, name, None)
        if torch.is_tensor(value):
            _hash_tensor(h, name, value)
        else:
            h.update(f"{name}={json.dumps(value, default=repr)}\n".encode())
    return h.hexdigest()


def _rule_name(rule):
    """The integration rule as a key string."""
    if isinstance(rule, str):
        return rule
    return f"{getattr(rule, '__module__', '?')}.{getattr(rule, '__qualname__', repr(rule))}"


def cache_key(
    teacher,
    train_csv,
    plan,
    ig_settings,
    rule="saliency_scale",
    alpha=1.0,
    storage="full",
    n_bands=8,
    store_logits=True,
    shard_size=256,
):
    """Everything a cache's content depends on, as a JSON-able dict.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The frozen teacher (see :func:`teacher_fingerprint`).
    train_csv : str or pathlib.Path
        The training CSV (its bytes are hashed).
    plan : SegmentPlan
        The segment plan.
    ig_settings : IGSettings
        The IG settings.
    rule : str
        Integration rule.
    alpha : float
        Integration strength.
    storage : str
        One of :data:`STORAGES`.
    n_bands : int
        Frequency bands of the ``bands`` storage.
    store_logits : bool
        Whether teacher logits are stored.
    shard_size : int
        Chunks per shard (the layout).

    Returns
    -------
    dict

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_imlkd.data.dataset import write_toy_csvs
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> csv_path, _ = write_toy_csvs(tempfile.mkdtemp())
    >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
    >>> key = cache_key(t, csv_path, SegmentPlan(), IGSettings())
    >>> sorted(key)
    ['features', 'format', 'ig', 'integration', 'layout', 'plan', 'storage', 'teacher', 'train_csv']
    """
    train_csv = Path(train_csv)
    if not train_csv.is_file():
        raise FileNotFoundError(f"training CSV not found: {train_csv}")
    return {
        "format": FORMAT_VERSION,
        "teacher": teacher_fingerprint(teacher),
        "features": {
            "n_mels": int(teacher.n_mels),
            "sample_rate": int(teacher.sample_rate),
        },
        "ig": ig_settings.as_dict(),
        "integration": {"rule": _rule_name(rule), "alpha": float(alpha)},
        "plan": plan.as_dict(),
        "storage": {
            "kind": storage,
            "n_bands": int(n_bands) if storage == "bands" else None,
            "dtype": str(STORED_DTYPE).replace("torch.", ""),
            "store_logits": bool(store_logits),
        },
        "layout": {"shard_size": int(shard_size)},
        "train_csv": {"sha256": _sha256_file(train_csv)},
    }


def key_hash(key):
    """SHA-256 of a cache key (canonical JSON).

    Arguments
    ---------
    key : dict
        From :func:`cache_key`.

    Returns
    -------
    str

    Example
    -------
    >>> key_hash({"a": 1, "b": [2]}) == key_hash({"b": [2], "a": 1})
    True
    """
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def key_differences(found, expected):
    """Top-level fields on which two cache keys differ.

    Arguments
    ---------
    found : dict
        Key of an existing cache.
    expected : dict
        Key wanted now.

    Returns
    -------
    list of str

    Example
    -------
    >>> key_differences({"teacher": "a", "plan": 1}, {"teacher": "b", "plan": 1})
    ['teacher']
    """
    names = sorted(set(found) | set(expected))
    return [n for n in names if found.get(n) != expected.get(n)]


# ---------------------------------------------------------------------- #
# Training CSV
# ---------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Chunk:
    """One training CSV row."""

    id: str
    wav: str
    start: int
    stop: int
    spk_id: str


def read_chunks(train_csv, plan=None, sample_rate=16000):
    """Reads the training chunks of a CSV, checking what the cache needs.

    Arguments
    ---------
    train_csv : str or pathlib.Path
        ``ID,duration,wav,start,stop,spk_id`` with ``start``/``stop`` in
        samples.
    plan : SegmentPlan, optional
        When given, every chunk must be at least as long as its longest
        planned segment (checked from ``start``/``stop``, before any audio
        is read, for Fbank frames ``1 + samples // hop``).
    sample_rate : int
        Sample rate, to convert samples to frames.

    Returns
    -------
    list
        Rows with ``id``, ``wav``, ``start``, ``stop``, ``spk_id``, in CSV
        order.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file or column, non-integer or empty bounds, duplicate IDs,
        or a chunk too short for the plan; the message names the CSV and row.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_imlkd.data.dataset import write_toy_csvs
    >>> csv_path, _ = write_toy_csvs(tempfile.mkdtemp(), seconds=0.5)
    >>> [c.id for c in read_chunks(csv_path)]
    ['id00001--0', 'id00002--0']
    >>> read_chunks(csv_path, SegmentPlan(durations=[1.0], chunk_seconds=1.0))
    Traceback (most recent call last):
    ...
    ValueError: ...: chunk 'id00001--0' has 51 feature frames (0.51 s), shorter than the longest planned segment (1 s = 100 frames)
    """
    train_csv = Path(train_csv)
    if not train_csv.is_file():
        raise FileNotFoundError(f"training CSV not found: {train_csv}")
    hop = None
    if plan is not None:
        hop = sample_rate / plan.frames_per_second
    chunks, seen = [], set()
    with open(train_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{train_csv}: missing column(s) {missing}; header is {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            chunk_id = row["ID"]
            if chunk_id in seen:
                raise ValueError(f"{train_csv}:{line}: duplicate chunk ID {chunk_id!r}")
            seen.add(chunk_id)
            try:
                start, stop = int(row["start"]), int(row["stop"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{train_csv}:{line}: chunk {chunk_id!r} has non-integer "
                    f"start/stop ({row['start']!r}, {row['stop']!r})"
                ) from None
            if not 0 <= start < stop:
                raise ValueError(
                    f"{train_csv}:{line}: chunk {chunk_id!r} has an empty segment "
                    f"[{start}, {stop})"
                )
            if plan is not None:
                try:
                    plan.offsets(1 + int((stop - start) // hop), chunk_id=chunk_id)
                except ValueError as err:
                    raise ValueError(f"{train_csv}:{line}: {err}") from None
            chunks.append(_Chunk(chunk_id, row["wav"], start, stop, row["spk_id"]))
    if not chunks:
        raise ValueError(f"{train_csv}: no data rows")
    return chunks


# ---------------------------------------------------------------------- #
# Computing one shard
# ---------------------------------------------------------------------- #
def _store(saliency, storage, n_bands):
    """Normalised ``N x T x F`` saliency in its stored shape, float16."""
    if storage == "full":
        out = saliency
    elif storage == "bands":
        out = pool_saliency(saliency, n_bands)
    else:
        out = pool_saliency(saliency)
    return out.to(STORED_DTYPE)


def _speaker_indices(teacher, chunks):
    """Teacher logit column of each chunk's speaker (speaker_logit target)."""
    speakers = getattr(teacher, "training_speakers", None)
    if speakers is None:
        raise ValueError(
            "IG target 'speaker_logit' needs the teacher's training speakers: "
            "call teacher.set_training_speakers(...) before precomputing"
        )
    index = {str(s): i for i, s in enumerate(speakers)}
    out = {}
    for c in chunks:
        if c.spk_id not in index:
            raise ValueError(
                f"chunk {c.id!r}: speaker {c.spk_id!r} is not among the teacher's "
                f"{len(index)} training speakers"
            )
        out[c.id] = index[c.spk_id]
    return out


def _batches(chunks, batch_size):
    """Positions of ``chunks`` grouped in runs of equal length, ``batch_size`` at most."""
    by_length = {}
    for pos, c in enumerate(chunks):
        by_length.setdefault(c.stop - c.start, []).append(pos)
    for positions in by_length.values():
        for i in range(0, len(positions), batch_size):
            yield positions[i : i + batch_size]


def _compute_shard(
    teacher, chunks, labels, plan, settings, storage, n_bands, rule, alpha, store_logits, batch_size
):
    """Saliency and teacher targets of every planned segment of ``chunks``."""
    n = len(chunks)
    sal_shape = {"full": (teacher.n_mels,), "bands": (n_bands,), "time": ()}[storage]
    saliency = [
        torch.zeros(n, c, f, *sal_shape, dtype=STORED_DTYPE)
        for c, f in zip(plan.counts, plan.segment_frames)
    ]
    embs = [torch.zeros(n, c, teacher.embedding_dim, dtype=STORED_DTYPE) for c in plan.counts]
    logits = None
    n_frames = torch.zeros(n, dtype=torch.long)
    segments = 0
    for positions in _batches(chunks, batch_size):
        batch = [chunks[p] for p in positions]
        wavs = torch.stack(
            [
                read_wav_checked(c.wav, sample_rate=teacher.sample_rate, start=c.start, stop=c.stop)
                for c in batch
            ]
        )
        feats = teacher.features(wavs)
        n_t = feats.shape[1]
        offsets = plan.offsets(n_t, chunk_id=batch[0].id)
        n_frames[positions] = n_t
        embed = lambda x: teacher.embed(x)  # noqa: E731  (no lengths: whole segments)
        if settings.target == "embedding_cosine":
            with torch.no_grad():
                reference = teacher.embed(feats)
        for j, (starts, n_seg) in enumerate(zip(offsets, plan.segment_frames)):
            c = len(starts)
            segs = torch.stack([feats[:, s : s + n_seg] for s in starts], dim=1)
            segs = segs.flatten(0, 1)  # chunk-major: row b * c + k
            if settings.target == "speaker_logit":
                rows = torch.tensor([labels[ch.id] for ch in batch]).repeat_interleave(c)
                target_fn = speaker_logit_target(embed, teacher.logits, rows)
            else:
                target_fn = embedding_cosine_target(embed, reference.repeat_interleave(c, dim=0))
            ig = integrated_gradients(
                target_fn,
                segs,
                steps=settings.steps,
                method=settings.method,
                internal_batch_size=settings.internal_batch_size,
            )
            stored = _store(normalised_saliency(ig), storage, n_bands)
            # The teacher targets are those of the integrated input built from
            # the *stored* (pooled, float16) saliency: exactly what training
            # rebuilds from the cache.
            with torch.no_grad():
                x_int = integrated_inputs(segs, stored, rule=rule, alpha=alpha)
                emb = teacher.embed(x_int)
                lg = teacher.logits(emb) if store_logits else None
            saliency[j][positions] = stored.cpu().unflatten(0, (len(batch), c))
            embs[j][positions] = emb.cpu().to(STORED_DTYPE).unflatten(0, (len(batch), c))
            if lg is not None:
                if logits is None:
                    logits = [
                        torch.zeros(n, cc, lg.shape[1], dtype=STORED_DTYPE) for cc in plan.counts
                    ]
                logits[j][positions] = lg.cpu().to(STORED_DTYPE).unflatten(0, (len(batch), c))
            segments += segs.shape[0]
    return {
        "format": FORMAT_VERSION,
        "ids": [c.id for c in chunks],
        "n_frames": n_frames,
        "saliency": saliency,
        "emb": embs,
        "logits": logits,
    }, segments


# ---------------------------------------------------------------------- #
# Files
# ---------------------------------------------------------------------- #
def _shard_paths(cache_dir, k):
    """(data file, record file) of shard ``k``."""
    stem = _SHARD_STEM.format(k)
    return cache_dir / f"{stem}.pt", cache_dir / f"{stem}.json"


def _write_atomic(path, data, tmp_suffix):
    """Writes bytes under a temporary name, flushes them, then renames."""
    tmp = path.with_name(path.name + tmp_suffix)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path):
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_shard(cache_dir, k, h, ids, data, rank):
    """Writes shard ``k`` and then its record (checksum, IDs, key hash)."""
    buf = io.BytesIO()
    torch.save(data, buf)
    payload = buf.getvalue()
    data_path, record_path = _shard_paths(cache_dir, k)
    # Per-rank temporary names: a rank cleaning its own leftovers never
    # removes a file another rank is writing.
    suffix = f".rank{rank}.tmp"
    _write_atomic(data_path, payload, suffix)
    record = {
        "key_hash": h,
        "shard": k,
        "file": data_path.name,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "ids": ids,
    }
    _write_atomic(record_path, json.dumps(record).encode(), suffix)
    return record


def _valid_record(cache_dir, k, h, ids, check_sum=True):
    """Shard ``k``'s record if the shard is complete and intact, else None."""
    data_path, record_path = _shard_paths(cache_dir, k)
    record = _read_json(record_path)
    if not data_path.exists() and record is None:
        return None
    reason = None
    if record is None:
        reason = "no record (interrupted before it was written)"
    elif record.get("key_hash") != h or record.get("ids") != ids:
        reason = "built for another key or other chunks"
    elif not data_path.is_file():
        reason = "data file missing"
    elif data_path.stat().st_size != record.get("bytes"):
        reason = f"{data_path.stat().st_size} bytes, {record.get('bytes')} recorded (torn)"
    elif check_sum and _sha256_file(data_path) != record.get("sha256"):
        reason = "checksum mismatch (torn or corrupt)"
    if reason is not None:
        logger.warning("IG cache shard %s is not usable (%s): it will be redone", data_path, reason)
        return None
    return record


def _clear_stale(cache_dir, key, h):
    """Writes ``key.json``; on a key change removes what the old key built."""
    old = _read_json(cache_dir / KEY_FILE)
    if old is not None and old.get("hash") == h:
        return
    if old is not None:
        diff = key_differences(old.get("key", {}), key)
        logger.warning(
            "IG cache %s was built with another %s: rebuilding it", cache_dir, ", ".join(diff)
        )
    (cache_dir / INDEX_FILE).unlink(missing_ok=True)
    for record_path in cache_dir.glob("shard_*.json"):
        record = _read_json(record_path)
        if record is None or record.get("key_hash") != h:
            record_path.unlink(missing_ok=True)
            record_path.with_suffix(".pt").unlink(missing_ok=True)
    for data_path in cache_dir.glob("shard_*.pt"):
        if not data_path.with_suffix(".json").exists():
            data_path.unlink(missing_ok=True)
    _write_atomic(
        cache_dir / KEY_FILE, json.dumps({"hash": h, "key": key}, indent=1).encode(), ".tmp"
    )


def _distributed():
    """Whether torch.distributed is initialised with several processes."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _barrier():
    """Waits for every process when running distributed."""
    if _distributed():
        from speechbrain.utils.distributed import ddp_barrier

        ddp_barrier()


def _resolve_rank(rank, world_size):
    """(rank, world_size) from the arguments or from torch.distributed."""
    if _distributed():
        d_rank, d_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank is not None and rank != d_rank) or (
            world_size is not None and world_size != d_world
        ):
            raise ValueError(
                f"rank={rank}, world_size={world_size} contradict torch.distributed "
                f"(rank {d_rank} of {d_world})"
            )
        return d_rank, d_world
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    return rank, world_size


def _write_index_if_complete(cache_dir, key, h, chunks, n_shards, shard_size):
    """Writes ``index.json`` when every shard has a valid record."""
    shards, index = [], {}
    for k in range(n_shards):
        ids = [c.id for c in chunks[k * shard_size : (k + 1) * shard_size]]
        # Checksums were verified (or just computed) by the rank owning the
        # shard; here size and record suffice.
        record = _valid_record(cache_dir, k, h, ids, check_sum=False)
        if record is None:
            return False
        shards.append({name: record[name] for name in ("file", "bytes", "sha256")})
        for pos, chunk_id in enumerate(ids):
            index[chunk_id] = [k, pos]
    stored = _read_json(cache_dir / KEY_FILE)
    if stored is None or stored.get("hash") != h:
        # Every shard is verified for this key: the key file must say so too
        # (a rank other than 0 may finish last in direct multi-process use).
        _write_atomic(
            cache_dir / KEY_FILE,
            json.dumps({"hash": h, "key": key}, indent=1).encode(),
            f".{os.getpid()}.tmp",
        )
    content = {
        "key_hash": h,
        "format": FORMAT_VERSION,
        "n_chunks": len(chunks),
        "shards": shards,
        "chunks": index,
    }
    _write_atomic(cache_dir / INDEX_FILE, json.dumps(content).encode(), f".{os.getpid()}.tmp")
    return True


# ---------------------------------------------------------------------- #
# Precomputation
# ---------------------------------------------------------------------- #
def _check_options(storage, n_bands, shard_size, batch_size, teacher):
    """Raises on storage or size options that cannot work, naming them."""
    if storage not in STORAGES:
        raise ValueError(f"storage={storage!r}: expected one of {STORAGES}")
    if storage == "bands":
        if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands < 1:
            raise ValueError(f"n_bands={n_bands!r} must be a positive integer")
        if teacher.n_mels % n_bands != 0:
            raise ValueError(
                f"n_bands={n_bands} does not divide the teacher's {teacher.n_mels} mel bins"
            )
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def precompute_ig_cache(
    teacher,
    train_csv,
    cache_dir,
    plan=None,
    ig_settings=None,
    storage="full",
    n_bands=8,
    shard_size=256,
    batch_size=8,
    rank=None,
    world_size=None,
    rule="saliency_scale",
    alpha=1.0,
    store_logits=True,
    max_new_shards=None,
):
    """Computes (or completes) the IG cache of a training CSV.

    For every chunk (``wav[start:stop]``, read with soundfile) the teacher's
    normalised features are computed with ``teacher.features``; for every
    planned segment (a crop of them) the teacher's IG, its normalised
    saliency in the chosen storage, and the teacher's embedding and logits
    on the integrated input (``rule``, ``alpha``) built from the stored
    saliency. Chunks are processed ``batch_size`` at a time (runs of equal
    length), all segments of one duration in one IG call.

    Shard ``k`` holds CSV rows ``k * shard_size`` onwards and is computed by
    the process of rank ``k % world_size``: under ``torchrun`` every rank
    computes its share (rank and world size come from ``torch.distributed``
    when it is initialised), then rank 0 writes ``index.json`` after a
    barrier. Without ``torch.distributed``, ``rank``/``world_size`` split the
    work between independent processes sharing ``cache_dir``; the last to
    finish writes the index. Shards are laid out independently of the
    number of processes, so any split gives byte-identical shards.

    Re-running resumes: shards whose record matches the key, chunk IDs, size
    and SHA-256 are kept, the rest (missing, torn, interrupted) are redone.
    A cache with another key (:func:`cache_key`) is rebuilt.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The frozen teacher; for the ``speaker_logit`` target its
        ``set_training_speakers`` must have been called (each chunk's
        ``spk_id`` is looked up in it).
    train_csv : str or pathlib.Path
        Training CSV (``ID,duration,wav,start,stop,spk_id``).
    cache_dir : str or pathlib.Path
        The cache folder (created).
    plan : SegmentPlan, optional
        Default: ``SegmentPlan()``.
    ig_settings : IGSettings, optional
        Default: ``IGSettings()``.
    storage : str
        ``"full"`` (``T x F``), ``"bands"`` (``T x n_bands``) or ``"time"``.
    n_bands : int
        Frequency bands of the ``bands`` storage (divides ``n_mels``).
    shard_size : int
        Chunks per shard.
    batch_size : int
        Chunks per teacher batch.
    rank : int, optional
        This process's rank (direct use without torch.distributed).
    world_size : int, optional
        Number of processes sharing the work.
    rule : str
        Integration rule (see
        :func:`speechbrain_imlkd.integrated_inputs.integrated_inputs`).
    alpha : float
        Integration strength.
    store_logits : bool
        Store the teacher logits. When False, only embeddings are stored and
        :class:`CachedSaliency` applies the teacher's speaker head
        (``batch.teacher_logits``, a matrix product, no teacher pass).
    max_new_shards : int, optional
        Compute at most this many shards in this call, then return (for
        time-boxed jobs; a later call resumes).

    Returns
    -------
    PrecomputeReport

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_imlkd.data.dataset import write_toy_csvs
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> d = tempfile.mkdtemp()
    >>> csv_path, _ = write_toy_csvs(d, seconds=0.5)
    >>> t = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
    >>> plan = SegmentPlan(durations=[0.5], chunk_seconds=0.5)
    >>> args = dict(plan=plan, ig_settings=IGSettings("embedding_cosine", steps=2),
    ...             storage="time", shard_size=1, store_logits=False)
    >>> r = precompute_ig_cache(t, csv_path, d + "/c", max_new_shards=1, **args)
    >>> r.computed, r.complete
    ([0], False)
    >>> r = precompute_ig_cache(t, csv_path, d + "/c", **args)
    >>> r.reused, r.computed, r.complete
    ([0], [1], True)
    """
    start_time = time.perf_counter()
    plan = SegmentPlan() if plan is None else plan
    settings = IGSettings() if ig_settings is None else ig_settings
    _check_options(storage, n_bands, shard_size, batch_size, teacher)
    if max_new_shards is not None and max_new_shards < 0:
        raise ValueError(f"max_new_shards={max_new_shards!r} must be >= 0")
    rank, world_size = _resolve_rank(rank, world_size)
    chunks = read_chunks(train_csv, plan, teacher.sample_rate)
    labels = _speaker_indices(teacher, chunks) if settings.target == "speaker_logit" else None
    key = cache_key(
        teacher, train_csv, plan, settings, rule, alpha, storage, n_bands, store_logits, shard_size
    )
    h = key_hash(key)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _clear_stale(cache_dir, key, h)
    # Leftovers of interrupted writes. Before the barrier no rank writes, so
    # rank 0 may remove them all; independent processes only their own.
    everyone = rank == 0 and (world_size == 1 or _distributed())
    for leftover in cache_dir.glob("*.tmp" if everyone else f"*.rank{rank}.tmp"):
        leftover.unlink(missing_ok=True)
    _barrier()

    n_shards = math.ceil(len(chunks) / shard_size)
    report = PrecomputeReport(str(cache_dir), h, len(chunks), n_shards)
    for k in range(rank, n_shards, world_size):
        shard_chunks = chunks[k * shard_size : (k + 1) * shard_size]
        ids = [c.id for c in shard_chunks]
        if _valid_record(cache_dir, k, h, ids) is not None:
            report.reused.append(k)
            continue
        if max_new_shards is not None and len(report.computed) >= max_new_shards:
            break
        t0 = time.perf_counter()
        data, n_segments = _compute_shard(
            teacher, shard_chunks, labels, plan, settings, storage, n_bands,
            rule, alpha, store_logits, batch_size,
        )
        _write_shard(cache_dir, k, h, ids, data, rank)
        report.computed.append(k)
        report.segments += n_segments
        logger.info(
            "IG cache: shard %d/%d (%d chunks, %d segments) in %.1f s",
            k + 1, n_shards, len(ids), n_segments, time.perf_counter() - t0,
        )
    _barrier()
    if rank == 0 or not _distributed():
        report.complete = _write_index_if_complete(cache_dir, key, h, chunks, n_shards, shard_size)
    _barrier()
    if _distributed():
        report.complete = (cache_dir / INDEX_FILE).is_file() and _index_hash(cache_dir) == h
    report.seconds = time.perf_counter() - start_time
    return report


def _index_hash(cache_dir):
    """Key hash recorded in ``index.json`` (None when missing)."""
    index = _read_json(Path(cache_dir) / INDEX_FILE)
    return None if index is None else index.get("key_hash")


# ---------------------------------------------------------------------- #
# Training from the cache
# ---------------------------------------------------------------------- #
def _example_cache(folder, storage="bands", store_logits=True):
    """A two-chunk cache of a tiny random teacher, for the examples.

    Returns ``(teacher, cache_dir, plan, ids)``; the plan is 0.25 s (two
    segments) and 0.5 s (one) on 0.5 s chunks.
    """
    from speechbrain_imlkd.data.dataset import write_toy_csvs
    from speechbrain_imlkd.models import build_ecapa, features_pipeline
    from speechbrain_imlkd.teacher import Teacher

    folder = Path(folder)
    csv_path, _ = write_toy_csvs(folder, seconds=0.5)
    torch.manual_seed(0)
    teacher = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
    speakers = ["id00001", "id00002"]
    cents = dict(zip(speakers, torch.randn(2, 8)))
    teacher.set_training_speakers(speakers, mode="centroid", centroid_data=cents)
    plan = SegmentPlan(durations=[0.25, 0.5], chunk_seconds=0.5)
    precompute_ig_cache(
        teacher, csv_path, folder / "cache", plan, IGSettings(steps=2),
        storage=storage, store_logits=store_logits,
    )
    return teacher, folder / "cache", plan, ["id00001--0", "id00002--0"]


class CachedSaliency:
    """Saliency source of :class:`~speechbrain_imlkd.distillers.IMLKD` served from a cache.

    For the batch's chunk IDs it draws one planned segment per duration and
    chunk (with ``batch.generator``, or torch's global generator when it is
    None), crops ``batch.feats`` at the planned start and returns
    ``SegmentTargets(inputs=integrated_inputs(segment, saliency, rule, alpha),
    teacher_emb, teacher_logits)``, rule and strength being the cache's.
    Unlike :class:`~speechbrain_imlkd.distillers.OnlineSaliency`, whose
    crops start anywhere, segments come from the fixed :class:`SegmentPlan`.

    Augmented batches: ``batch.feats`` may come from an augmented waveform.
    The stored saliency, computed on the *clean* segment, is then applied to
    the augmented segment, and the teacher targets stay those of the clean
    integrated input: the student learns to map an augmented view to the
    teacher's view of the clean one (as in embedding KD with clean teacher
    targets). Batches with more rows than IDs (SpeechBrain's ``Augmenter``
    concatenating the clean and augmented copies) reuse the IDs in order;
    an augmentation that changes the number of frames (speed perturbation)
    cannot use the cache and raises :class:`CacheError`.

    The cache is opened lazily (first call, or :meth:`open`), so the object
    can be built in YAML before the cache exists.

    Arguments
    ---------
    cache_dir : str or pathlib.Path
        The cache folder.
    plan : SegmentPlan, optional
        Checked against the cache's plan when given.
    expected_key : dict or str, optional
        The key (or its hash) the cache must have (e.g. from
        :func:`cache_key`); a mismatch raises :class:`CacheKeyError`.
    device : str or torch.device, optional
        Where the targets go; default: the batch's device.
    verify : bool
        Check each shard's SHA-256 the first time it is opened.
    max_open_shards : int
        Shards kept memory-mapped at once (a mapping costs no memory until
        read; the page cache holds what was read).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_imlkd.distillers import IMLKD, DistillationBatch
    >>> teacher, cache, plan, ids = _example_cache(tempfile.mkdtemp())
    >>> batch = DistillationBatch.toy(batch_size=2, n_frames=51, n_feats=80, n_speakers=2)
    >>> batch.feats, batch.ids = teacher.features(torch.rand(2, 8000)), ids
    >>> batch.teacher_embed = None  # training from the cache runs no teacher
    >>> distiller = IMLKD(CachedSaliency(cache, plan), durations=plan.durations,
    ...                   temperatures=[1.0])
    >>> batch.projection = torch.nn.Linear(5, 8)
    >>> loss, terms = distiller(batch)
    >>> bool(torch.isfinite(loss))
    True
    """

    def __init__(
        self,
        cache_dir,
        plan=None,
        expected_key=None,
        device=None,
        verify=True,
        max_open_shards=1024,
    ):
        self.cache_dir = Path(cache_dir)
        self.plan = plan
        self.expected_key = expected_key
        self.device = device
        self.verify = verify
        self.max_open_shards = max_open_shards
        self.key = None
        self._index = None
        self._shards = OrderedDict()
        self._verified = set()

    def open(self, expected_key=None):
        """Reads and checks the cache's key and index.

        Arguments
        ---------
        expected_key : dict or str, optional
            Overrides the constructor's ``expected_key``.

        Returns
        -------
        CachedSaliency
            ``self``.

        Raises
        ------
        CacheError
            No complete cache in ``cache_dir``.
        CacheKeyError
            The cache's key differs from the expected one, or its plan from
            ``plan``.

        Example
        -------
        >>> CachedSaliency("/nonexistent/cache").open()
        Traceback (most recent call last):
        ...
        speechbrain_imlkd.ig_cache.CacheError: IG cache /nonexistent/cache is incomplete (no key.json): run recipes/VoxCeleb1/imlkd/compute_ig.py, or train with ig_cache_rebuild: True
        """
        if expected_key is not None:
            self.expected_key = expected_key
        stored = _read_json(self.cache_dir / KEY_FILE)
        index = _read_json(self.cache_dir / INDEX_FILE)
        if stored is None or index is None:
            raise CacheError(
                f"IG cache {self.cache_dir} is incomplete (no "
                f"{KEY_FILE if stored is None else INDEX_FILE}): run "
                "recipes/VoxCeleb1/imlkd/compute_ig.py, or train with ig_cache_rebuild: True"
            )
        if index.get("key_hash") != stored.get("hash"):
            raise CacheError(
                f"IG cache {self.cache_dir}: index.json and key.json disagree "
                "(a rebuild was interrupted): run compute_ig.py again"
            )
        key = stored["key"]
        expected = self.expected_key
        if isinstance(expected, dict) and key_hash(expected) != stored["hash"]:
            raise CacheKeyError(
                f"IG cache {self.cache_dir} was built with another "
                f"{', '.join(key_differences(key, expected))}: rebuild it "
                "(compute_ig.py, or ig_cache_rebuild: True)"
            )
        if isinstance(expected, str) and expected != stored["hash"]:
            raise CacheKeyError(
                f"IG cache {self.cache_dir} has key {stored['hash'][:12]}..., "
                f"expected {expected[:12]}...: rebuild it"
            )
        if self.plan is not None and self.plan.as_dict() != key["plan"]:
            raise CacheKeyError(
                f"IG cache {self.cache_dir} was built for the segment plan "
                f"{key['plan']}, not {self.plan.as_dict()}"
            )
        self.key = key
        self._index = index
        if self.plan is None:
            p = key["plan"]
            self.plan = SegmentPlan(**p)
        return self

    @property
    def rule(self):
        """Integration rule the cache's teacher targets were computed with.

        Example
        -------
        >>> import tempfile
        >>> _, cache, plan, _ = _example_cache(tempfile.mkdtemp())
        >>> src = CachedSaliency(cache)
        >>> src.rule, src.alpha, src.plan == plan
        ('saliency_scale', 1.0, True)
        """
        return self._opened().key["integration"]["rule"]

    @property
    def alpha(self):
        """Integration strength the cache's teacher targets were computed with.

        Example
        -------
        >>> import tempfile
        >>> _, cache, _, _ = _example_cache(tempfile.mkdtemp())
        >>> CachedSaliency(cache).alpha
        1.0
        """
        return self._opened().key["integration"]["alpha"]

    def _opened(self):
        if self._index is None:
            self.open()
        return self

    def _locate(self, chunk_id):
        """(shard, position) of a chunk; raises naming it when absent."""
        where = self._index["chunks"].get(chunk_id)
        if where is None:
            raise CacheError(
                f"chunk {chunk_id!r} is not in IG cache {self.cache_dir} "
                f"({self._index['n_chunks']} chunks): built from another training CSV?"
            )
        return where

    def _shard(self, k):
        """Shard ``k``, memory-mapped, checksum-verified on first use."""
        if k in self._shards:
            self._shards.move_to_end(k)
            return self._shards[k]
        meta = self._index["shards"][k]
        path = self.cache_dir / meta["file"]
        if not path.is_file():
            raise CacheError(f"IG cache shard {path} is missing: run compute_ig.py again")
        if path.stat().st_size != meta["bytes"] or (
            self.verify and k not in self._verified and _sha256_file(path) != meta["sha256"]
        ):
            raise CacheError(
                f"IG cache shard {path} is torn or corrupt (size or checksum "
                "differs from index.json): run compute_ig.py again to redo it"
            )
        self._verified.add(k)
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        self._shards[k] = data
        while len(self._shards) > self.max_open_shards:
            self._shards.popitem(last=False)
        return data

    def draw(self, n_rows, generator=None):
        """Draws one planned segment index per row and duration.

        Arguments
        ---------
        n_rows : int
            Rows of the batch.
        generator : torch.Generator, optional
            Source of randomness (torch's global generator when None).

        Returns
        -------
        list of torch.Tensor
            One ``(n_rows,)`` long tensor per duration, values in
            ``[0, count)``.

        Example
        -------
        >>> src = CachedSaliency("unused", SegmentPlan())
        >>> [c.shape[0] for c in src.draw(4, torch.Generator().manual_seed(0))]
        [4, 4, 4]
        """
        plan = self.plan if self.plan is not None else self._opened().plan
        device = generator.device if generator is not None else "cpu"
        return [
            torch.randint(c, (n_rows,), generator=generator, device=device).cpu()
            for c in plan.counts
        ]

    def segment_targets(self, feats, ids, choices, lengths=None, logits_fn=None):
        """Targets of given planned segments (the deterministic part of a call).

        Arguments
        ---------
        feats : torch.Tensor
            ``B x T x F`` normalised features of the chunks (possibly
            augmented, possibly padded).
        ids : list of str
            Chunk IDs; ``B`` must be a multiple of their number.
        choices : list of torch.Tensor
            Per duration, the planned segment index of each row.
        lengths : torch.Tensor, optional
            Relative lengths (for padded batches).
        logits_fn : callable, optional
            Teacher speaker head, needed when the cache has no logits.

        Returns
        -------
        list of speechbrain_imlkd.distillers.SegmentTargets
            One per duration.

        Example
        -------
        >>> import tempfile
        >>> teacher, cache, plan, ids = _example_cache(tempfile.mkdtemp(), store_logits=False)
        >>> feats = teacher.features(torch.rand(2, 8000))
        >>> src = CachedSaliency(cache, plan)
        >>> out = src.segment_targets(feats, ids, [torch.tensor([1, 0]), torch.tensor([0, 0])],
        ...                           logits_fn=teacher.logits)
        >>> [tuple(t.inputs.shape) for t in out], tuple(out[1].teacher_logits.shape)
        ([(2, 25, 80), (2, 50, 80)], (2, 2))
        """
        from speechbrain_imlkd.distillers import SegmentTargets

        self._opened()
        rows, n_t = feats.shape[0], feats.shape[1]
        ids = list(ids)
        if not ids or rows % len(ids) != 0:
            raise CacheError(
                f"batch has {rows} rows for {len(ids)} chunk IDs: cannot match "
                "rows to cached chunks"
            )
        ids = ids * (rows // len(ids))
        if lengths is None:
            valid = [n_t] * rows
        else:
            valid = torch.round(lengths.float().cpu() * n_t).long().tolist()
        where = [self._locate(i) for i in ids]
        shards = {k: self._shard(k) for k in sorted({k for k, _ in where})}
        device = self.device if self.device is not None else feats.device
        has_logits = self.key["storage"]["store_logits"]
        if not has_logits and logits_fn is None:
            raise CacheError(
                f"IG cache {self.cache_dir} stores no teacher logits: pass the "
                "teacher's speaker head (batch.teacher_logits)"
            )
        offsets = []
        for row, (chunk_id, (k, pos)) in enumerate(zip(ids, where)):
            cached = int(shards[k]["n_frames"][pos])
            if valid[row] != cached:
                raise CacheError(
                    f"chunk {chunk_id!r}: the batch has {valid[row]} frames but IG "
                    f"cache {self.cache_dir} has {cached}: cached IG needs the "
                    "CSV's fixed chunks (no random cropping, no length-changing "
                    "augmentation)"
                )
            offsets.append(self.plan.offsets(cached, chunk_id))
        out = []
        for j, n_seg in enumerate(self.plan.segment_frames):
            pick = choices[j].tolist()
            segs, sal, emb, logits = [], [], [], []
            for row, (k, pos) in enumerate(where):
                start = offsets[row][j][pick[row]]
                segs.append(feats[row, start : start + n_seg])
                shard = shards[k]
                sal.append(shard["saliency"][j][pos, pick[row]])
                emb.append(shard["emb"][j][pos, pick[row]])
                if has_logits:
                    logits.append(shard["logits"][j][pos, pick[row]])
            seg = torch.stack(segs).to(device)
            saliency = torch.stack(sal).to(device)
            t_emb = torch.stack(emb).to(device=device, dtype=torch.float32)
            if has_logits:
                t_logits = torch.stack(logits).to(device=device, dtype=torch.float32)
            else:
                with torch.no_grad():
                    t_logits = logits_fn(t_emb)
            inputs = integrated_inputs(seg, saliency, rule=self.rule, alpha=self.alpha)
            out.append(SegmentTargets(inputs, teacher_emb=t_emb, teacher_logits=t_logits))
        return out

    def __call__(self, batch, durations):
        """Integrated inputs and teacher targets for a training batch.

        Arguments
        ---------
        batch : speechbrain_imlkd.distillers.DistillationBatch
            Needs ``feats``, ``ids`` and (optionally) ``lengths`` and
            ``generator``; ``teacher_logits`` when the cache has no logits.
        durations : sequence of float
            The distiller's durations; must be the plan's.

        Returns
        -------
        list of speechbrain_imlkd.distillers.SegmentTargets

        Example
        -------
        >>> import tempfile
        >>> from speechbrain_imlkd.distillers import DistillationBatch
        >>> teacher, cache, plan, ids = _example_cache(tempfile.mkdtemp(), storage="time")
        >>> batch = DistillationBatch.toy(batch_size=2, n_frames=51, n_feats=80, n_speakers=2)
        >>> batch.feats, batch.ids = teacher.features(torch.rand(2, 8000)), ids
        >>> targets = CachedSaliency(cache, plan)(batch, plan.durations)
        >>> tuple(targets[0].teacher_emb.shape)
        (2, 8)
        """
        self._opened()
        if [float(d) for d in durations] != list(self.plan.durations):
            raise CacheKeyError(
                f"distiller durations {list(durations)} differ from the IG cache's "
                f"plan {list(self.plan.durations)} ({self.cache_dir})"
            )
        if batch.ids is None:
            raise CacheError("cached IG needs the chunk IDs of the batch (batch.ids)")
        choices = self.draw(batch.feats.shape[0], batch.generator)
        return self.segment_targets(
            batch.feats, batch.ids, choices, lengths=batch.lengths, logits_fn=batch.teacher_logits
        )


# ---------------------------------------------------------------------- #
# Recipe glue
# ---------------------------------------------------------------------- #
def select_saliency_source(ig_mode, online, cached):
    """Picks the saliency source of the recipe's ``ig_mode``.

    Arguments
    ---------
    ig_mode : str
        ``"online"`` or ``"cached"``.
    online : callable
        The online source (:class:`~speechbrain_imlkd.distillers.OnlineSaliency`).
    cached : CachedSaliency
        The cached source.

    Returns
    -------
    callable

    Example
    -------
    >>> select_saliency_source("online", "A", "B")
    'A'
    >>> select_saliency_source("offline", "A", "B")
    Traceback (most recent call last):
    ...
    ValueError: ig_mode='offline': expected 'online' or 'cached'
    """
    if ig_mode == "online":
        return online
    if ig_mode == "cached":
        return cached
    raise ValueError(f"ig_mode={ig_mode!r}: expected 'online' or 'cached'")


def recipe_plan(hparams):
    """The recipe's segment plan: ``ig_plan``, or one built from its durations.

    Arguments
    ---------
    hparams : dict
        Uses ``ig_plan`` when present, else ``durations``, ``seg_dur`` and
        ``ig_plan_offsets`` (optional).

    Returns
    -------
    SegmentPlan

    Example
    -------
    >>> recipe_plan({"durations": [1.0, 2.0], "seg_dur": 2.0}).counts
    (2, 1)
    """
    if hparams.get("ig_plan") is not None:
        return hparams["ig_plan"]
    return SegmentPlan(
        durations=hparams["durations"],
        chunk_seconds=hparams["seg_dur"],
        offsets_per_duration=hparams.get("ig_plan_offsets"),
    )


def auto_batch_sizes(
    teacher,
    plan,
    ig_settings,
    cpu_batch_size=8,
    memory_fraction=0.7,
    free_bytes=None,
    bytes_per_chunk=None,
):
    """Chunks per precompute batch sized to the device, and the IG fold size.

    On a GPU, the peak memory of the IG of ONE chunk (its longest planned
    segment, every quadrature step folded into one pass) is measured, and as
    many chunks are batched as fit in ``memory_fraction`` of the free memory;
    the IG then folds ``chunks x steps`` rows into each pass. On the CPU,
    throughput does not grow with the batch, so ``cpu_batch_size`` is kept.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The frozen teacher (its device decides).
    plan : SegmentPlan
        The segment plan (its longest segment is probed).
    ig_settings : IGSettings
        Quadrature steps.
    cpu_batch_size : int
        Chunks per batch on the CPU.
    memory_fraction : float
        Share of the free GPU memory to use.
    free_bytes : int, optional
        Free device memory (measured with ``torch.cuda.mem_get_info`` when
        None; given in tests).
    bytes_per_chunk : int, optional
        Peak bytes of one chunk's IG (measured when None; given in tests).

    Returns
    -------
    batch_size : int
        Chunks per precompute batch.
    internal_batch_size : int
        Rows per IG pass.

    Example
    -------
    >>> plan = SegmentPlan(durations=[1.0], chunk_seconds=1.0)
    >>> settings = IGSettings("embedding_cosine", steps=16)
    >>> class Cpu:
    ...     device = torch.device("cpu")
    >>> auto_batch_sizes(Cpu(), plan, settings)
    (8, 64)
    >>> class Gpu:
    ...     device = torch.device("cuda:0")
    >>> auto_batch_sizes(Gpu(), plan, settings, free_bytes=10 * 2**30, bytes_per_chunk=2**28)
    (28, 448)
    """
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction={memory_fraction!r} must be in (0, 1]")
    steps = ig_settings.steps or DEFAULT_STEPS
    if teacher.device.type != "cuda":
        return int(cpu_batch_size), int(ig_settings.internal_batch_size)
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(teacher.device)
    if bytes_per_chunk is None:
        bytes_per_chunk = _probe_chunk_bytes(teacher, plan, ig_settings, steps)
    chunks = max(1, int(memory_fraction * free_bytes // max(bytes_per_chunk, 1)))
    return chunks, chunks * steps


def _probe_chunk_bytes(teacher, plan, ig_settings, steps):
    """Peak CUDA bytes of the IG of one chunk's longest planned segment."""
    n_frames = max(plan.counts)
    x = torch.zeros(1, n_frames, teacher.n_mels, device=teacher.device)
    reference = torch.ones(1, teacher.embedding_dim, device=teacher.device)
    target = embedding_cosine_target(lambda f: teacher.embed(f), reference)
    torch.cuda.synchronize(teacher.device)
    torch.cuda.reset_peak_memory_stats(teacher.device)
    before = torch.cuda.memory_allocated(teacher.device)
    integrated_gradients(target, x, steps=steps, method=ig_settings.method, internal_batch_size=steps)
    torch.cuda.synchronize(teacher.device)
    return torch.cuda.max_memory_allocated(teacher.device) - before


def recipe_ig_settings(hparams):
    """The recipe's IG settings: ``ig_settings``, or ones built from ``ig_*`` keys.

    Arguments
    ---------
    hparams : dict
        Uses ``ig_settings`` when present, else ``ig_target``, ``ig_steps``,
        ``ig_method`` and ``ig_internal_batch_size`` (all optional).

    Returns
    -------
    IGSettings

    Example
    -------
    >>> recipe_ig_settings({"ig_target": "embedding_cosine", "ig_steps": 8}).as_dict()
    {'target': 'embedding_cosine', 'steps': 8, 'method': 'gauss_legendre'}
    """
    if hparams.get("ig_settings") is not None:
        return hparams["ig_settings"]
    return IGSettings(
        target=hparams.get("ig_target", "speaker_logit"),
        steps=hparams.get("ig_steps"),
        method=hparams.get("ig_method"),
        internal_batch_size=hparams.get("ig_internal_batch_size", 64),
    )


def prepare_ig_cache(hparams, teacher, rebuild=None):
    """Makes sure a recipe's IG cache exists and fits, and opens its source.

    Call it on *every* process (not ``run_on_main``): under ``torchrun`` the
    ranks share the precomputation. Reads these hyperparameters:
    ``train_csv``, ``integration_rule``, ``integration_alpha``, the plan and
    IG settings (:func:`recipe_plan`, :func:`recipe_ig_settings`), and
    optionally ``ig_cache_folder`` (``<output_root>/ig_cache``),
    ``ig_cache_storage`` (``bands``),
    ``ig_cache_n_bands`` (8), ``ig_cache_shard_size`` (256),
    ``ig_cache_batch_size`` (8), ``ig_cache_store_logits`` (True),
    ``ig_cache_rebuild`` (True) and ``saliency_source`` (opened when it is a
    :class:`CachedSaliency`).

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.
    teacher : speechbrain_imlkd.teacher.Teacher
        The frozen teacher, with its training speakers set.
    rebuild : bool, optional
        Overrides ``ig_cache_rebuild``: True computes what is missing or
        stale; False raises :class:`CacheKeyError` / :class:`CacheError`
        instead.

    Returns
    -------
    dict
        The cache key.

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_imlkd.data.dataset import write_toy_csvs
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> d = tempfile.mkdtemp()
    >>> csv_path, _ = write_toy_csvs(d, seconds=0.5)
    >>> t = Teacher(*features_pipeline(80), build_ecapa(16, 8, attention_channels=8))
    >>> plan = SegmentPlan(durations=[0.5], chunk_seconds=0.5)
    >>> hp = {"train_csv": csv_path, "ig_cache_folder": d + "/c", "ig_plan": plan,
    ...       "ig_settings": IGSettings("embedding_cosine", steps=2),
    ...       "integration_rule": "saliency_scale", "integration_alpha": 1.0,
    ...       "ig_cache_store_logits": False, "saliency_source": CachedSaliency(d + "/c", plan)}
    >>> prepare_ig_cache(hp, t, rebuild=False)
    Traceback (most recent call last):
    ...
    speechbrain_imlkd.ig_cache.CacheError: IG cache .../c is incomplete (no key.json): run recipes/VoxCeleb1/imlkd/compute_ig.py, or train with ig_cache_rebuild: True
    >>> key = prepare_ig_cache(hp, t)
    >>> hp["saliency_source"].key == key
    True
    """
    if rebuild is None:
        rebuild = hparams.get("ig_cache_rebuild", True)
    options = dict(
        plan=recipe_plan(hparams),
        ig_settings=recipe_ig_settings(hparams),
        storage=hparams.get("ig_cache_storage", "bands"),
        n_bands=hparams.get("ig_cache_n_bands", 8),
        shard_size=hparams.get("ig_cache_shard_size", 256),
        rule=hparams["integration_rule"],
        alpha=hparams["integration_alpha"],
        store_logits=hparams.get("ig_cache_store_logits", True),
    )
    cache_dir = hparams.get("ig_cache_folder")
    if cache_dir is None:
        cache_dir = Path(hparams["output_root"]) / "ig_cache"
    key_options = {k: v for k, v in options.items()}
    key = cache_key(
        teacher,
        hparams["train_csv"],
        key_options.pop("plan"),
        key_options.pop("ig_settings"),
        **key_options,
    )
    batch_size = hparams.get("ig_cache_batch_size", 8)
    if batch_size == "auto":
        batch_size, internal = auto_batch_sizes(teacher, options["plan"], options["ig_settings"])
        options["ig_settings"] = IGSettings(
            **{**asdict(options["ig_settings"]), "internal_batch_size": internal}
        )
        logger.info("IG precompute: %d chunks per batch, %d rows per IG pass", batch_size, internal)
    if rebuild:
        report = precompute_ig_cache(
            teacher,
            hparams["train_csv"],
            cache_dir,
            batch_size=batch_size,
            **options,
        )
        if not report.complete:
            raise CacheError(f"IG cache {cache_dir} is still incomplete after precomputation")
    source = hparams.get("saliency_source")
    if isinstance(source, CachedSaliency):
        if Path(source.cache_dir).resolve() != Path(cache_dir).resolve():
            raise ValueError(
                f"saliency_source reads {source.cache_dir} but ig_cache_folder is "
                f"{cache_dir}: point both at the same folder"
            )
        source.open(expected_key=key)
    else:
        CachedSaliency(cache_dir, options["plan"]).open(expected_key=key)
    return key
