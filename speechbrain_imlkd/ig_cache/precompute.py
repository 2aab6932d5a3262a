"""Precomputing an IG cache: training chunks, one shard's IG, ranks sharing the work.

:func:`precompute_ig_cache` reads the training CSV (:func:`read_chunks`),
computes the shards this process owns, keeps those already complete, and
writes ``index.json`` once every shard is there.

Example
-------
>>> PrecomputeReport("cache", "ab12", n_chunks=10, n_shards=1).computed
[]

Authors
 * speechbrain-imlkd contributors
"""

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch

from speechbrain_imlkd.attribution import (
    embedding_cosine_target,
    integrated_gradients,
    speaker_logit_target,
)
from speechbrain_imlkd.data.audio import read_wav_checked
from speechbrain_imlkd.ig_cache.key import FORMAT_VERSION, STORED_DTYPE, cache_key, key_hash
from speechbrain_imlkd.ig_cache.plan import IGSettings, SegmentPlan
from speechbrain_imlkd.ig_cache.storage import (
    INDEX_FILE,
    STORAGES,
    _clear_stale,
    _index_hash,
    _store,
    _valid_record,
    _write_index_if_complete,
    _write_shard,
)
from speechbrain_imlkd.integrated_inputs import integrated_inputs, normalised_saliency

logger = logging.getLogger(__name__)

_CSV_COLUMNS = ("ID", "wav", "start", "stop", "spk_id")


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
    teacher, chunks, labels, plan, settings, storage, n_bands, rule, alpha, store_logits,
    batch_size, mapping=None,
):
    """Saliency and teacher targets of every planned segment of ``chunks``.

    With a ``mapping`` (teacher with its own features) the stored saliency
    is the teacher's carried to the student's bands, while the teacher's
    targets come from its own integrated input, built from its own map.
    """
    n = len(chunks)
    n_freq = teacher.n_mels if mapping is None else mapping.n_student_bands
    sal_shape = {"full": (n_freq,), "bands": (n_bands,), "time": ()}[storage]
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
            sal = normalised_saliency(ig)
            if mapping is None:
                stored = _store(sal, storage, n_bands)
                # The teacher targets are those of the integrated input built
                # from the *stored* (pooled, float16) saliency: exactly what
                # training rebuilds from the cache.
                teacher_sal = stored
            else:
                stored = _store(mapping(sal), storage, n_bands)
                teacher_sal = sal
            with torch.no_grad():
                x_int = integrated_inputs(segs, teacher_sal, rule=rule, alpha=alpha)
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
# Ranks sharing the work
# ---------------------------------------------------------------------- #
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



# ---------------------------------------------------------------------- #
# Precomputation
# ---------------------------------------------------------------------- #
def _check_options(storage, n_bands, shard_size, batch_size, teacher, mapping=None):
    """Raises on storage or size options that cannot work, naming them."""
    if storage not in STORAGES:
        raise ValueError(f"storage={storage!r}: expected one of {STORAGES}")
    if storage == "bands":
        if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands < 1:
            raise ValueError(f"n_bands={n_bands!r} must be a positive integer")
        n_freq, whose = teacher.n_mels, "teacher's"
        if mapping is not None:
            n_freq, whose = mapping.n_student_bands, "student's"
        if n_freq % n_bands != 0:
            raise ValueError(f"n_bands={n_bands} does not divide the {whose} {n_freq} mel bins")
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
    saliency_mapping=None,
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
    saliency_mapping : speechbrain_imlkd.integrated_inputs.SaliencyMapping, optional
        For a teacher with its own front end: IG is taken on the teacher's
        features, the stored saliency is carried to the student's bands
        (``n_bands`` then divides the student's bands), and the stored
        teacher outputs are those on the teacher's own integrated input.

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
    _check_options(storage, n_bands, shard_size, batch_size, teacher, saliency_mapping)
    if max_new_shards is not None and max_new_shards < 0:
        raise ValueError(f"max_new_shards={max_new_shards!r} must be >= 0")
    rank, world_size = _resolve_rank(rank, world_size)
    chunks = read_chunks(train_csv, plan, teacher.sample_rate)
    labels = _speaker_indices(teacher, chunks) if settings.target == "speaker_logit" else None
    key = cache_key(
        teacher, train_csv, plan, settings, rule, alpha, storage, n_bands, store_logits, shard_size,
        saliency_mapping,
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
            rule, alpha, store_logits, batch_size, saliency_mapping,
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
