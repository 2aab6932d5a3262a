"""Training from an IG cache: :class:`CachedSaliency`, a saliency source of IML-KD.

It serves, for the chunks of a batch, the integrated inputs built from the
stored saliency and the teacher's stored outputs, so that training from the
cache runs no teacher pass.

Example
-------
>>> src = CachedSaliency("not/opened/yet", SegmentPlan(durations=[1.0], chunk_seconds=1.0))
>>> src.plan.counts
(1,)

Authors
 * speechbrain-imlkd contributors
"""

from collections import OrderedDict
from pathlib import Path

import torch

from speechbrain_imlkd.hashing import file_digest
from speechbrain_imlkd.ig_cache.key import key_differences, key_hash
from speechbrain_imlkd.ig_cache.plan import IGSettings, SegmentPlan
from speechbrain_imlkd.ig_cache.precompute import precompute_ig_cache
from speechbrain_imlkd.ig_cache.storage import (
    INDEX_FILE,
    KEY_FILE,
    CacheError,
    CacheKeyError,
    _read_json,
)
from speechbrain_imlkd.integrated_inputs import integrated_inputs


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
            self.verify and k not in self._verified and file_digest(path) != meta["sha256"]
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
