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

Modules, in the order a cache is made and used:

* :mod:`~speechbrain_imlkd.ig_cache.plan`: :class:`SegmentPlan`, :class:`IGSettings`;
* :mod:`~speechbrain_imlkd.ig_cache.key`: :func:`cache_key`,
  :func:`teacher_fingerprint`, :func:`key_hash`;
* :mod:`~speechbrain_imlkd.ig_cache.storage`: shard, record, key and index
  files, :class:`CacheError`, :class:`CacheKeyError`;
* :mod:`~speechbrain_imlkd.ig_cache.precompute`: :func:`read_chunks`,
  :func:`precompute_ig_cache`;
* :mod:`~speechbrain_imlkd.ig_cache.reading`: :class:`CachedSaliency`;
* :mod:`~speechbrain_imlkd.ig_cache.recipe`: :func:`prepare_ig_cache` and the
  other helpers of the recipes.

Every public name (and the private ones the tests use) is importable from
``speechbrain_imlkd.ig_cache`` itself, as in the recipes' YAML files.

Authors
 * speechbrain-imlkd contributors
"""

from speechbrain_imlkd.ig_cache.key import (
    FORMAT_VERSION,
    STORED_DTYPE,
    cache_key,
    key_differences,
    key_hash,
    teacher_fingerprint,
)
from speechbrain_imlkd.ig_cache.plan import TARGETS, IGSettings, SegmentPlan
# _compute_shard and _example_cache: private, re-exported for the tests.
from speechbrain_imlkd.ig_cache.precompute import (  # noqa: F401
    PrecomputeReport,
    _compute_shard,
    precompute_ig_cache,
    read_chunks,
)
from speechbrain_imlkd.ig_cache.reading import CachedSaliency, _example_cache  # noqa: F401
from speechbrain_imlkd.ig_cache.recipe import (
    auto_batch_sizes,
    prepare_ig_cache,
    recipe_ig_settings,
    recipe_plan,
    select_saliency_source,
)
from speechbrain_imlkd.ig_cache.storage import (
    INDEX_FILE,
    KEY_FILE,
    STORAGES,
    CacheError,
    CacheKeyError,
)

__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILE",
    "KEY_FILE",
    "STORAGES",
    "STORED_DTYPE",
    "TARGETS",
    "CacheError",
    "CacheKeyError",
    "CachedSaliency",
    "IGSettings",
    "PrecomputeReport",
    "SegmentPlan",
    "auto_batch_sizes",
    "cache_key",
    "key_differences",
    "key_hash",
    "precompute_ig_cache",
    "prepare_ig_cache",
    "read_chunks",
    "recipe_ig_settings",
    "recipe_plan",
    "select_saliency_source",
    "teacher_fingerprint",
]
