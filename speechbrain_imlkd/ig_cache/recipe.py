"""Recipe glue of the IG cache: plan and settings from hyperparameters, batch sizing, preparation.

``train_kd.py`` and ``compute_ig.py`` call :func:`prepare_ig_cache` on every
process; the YAML picks the saliency source with
:func:`select_saliency_source`.

Example
-------
>>> recipe_plan({"durations": [1.0], "seg_dur": 1.0}).counts
(1,)

Authors
 * speechbrain-imlkd contributors
"""

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from speechbrain_imlkd.attribution import (
    DEFAULT_STEPS,
    embedding_cosine_target,
    integrated_gradients,
)
from speechbrain_imlkd.ig_cache.key import cache_key
from speechbrain_imlkd.ig_cache.plan import IGSettings, SegmentPlan
from speechbrain_imlkd.ig_cache.precompute import precompute_ig_cache
from speechbrain_imlkd.ig_cache.reading import CachedSaliency
from speechbrain_imlkd.ig_cache.storage import CacheError
from speechbrain_imlkd.integrated_inputs import saliency_mapping_for

logger = logging.getLogger(__name__)


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
    :class:`CachedSaliency`). For a teacher with its own front end,
    ``compute_features`` (the student's) and ``saliency_band_mapping``
    (``mel``) say how its saliency reaches the student's bands.

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
        saliency_mapping=saliency_mapping_for(
            teacher, hparams.get("compute_features"), hparams.get("saliency_band_mapping", "mel")
        ),
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
