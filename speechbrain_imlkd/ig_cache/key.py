"""Cache key and teacher fingerprint: everything an IG cache's content depends on.

A cache is reused only when its stored key equals the one wanted now
(:func:`cache_key`, compared through :func:`key_hash`); otherwise it is
rebuilt, or training raises, naming the fields that differ
(:func:`key_differences`).

Example
-------
>>> key_differences({"teacher": "a", "plan": 1}, {"teacher": "a", "plan": 2})
['plan']

Authors
 * speechbrain-imlkd contributors
"""

import hashlib
import json
from pathlib import Path

import torch

from speechbrain_imlkd.hashing import file_digest

#: Bumped whenever the content or layout of a cache changes.
FORMAT_VERSION = 1
#: Type of every tensor stored in a cache (saliency, embeddings, logits).
STORED_DTYPE = torch.float16
# Attributes of feature modules that change at run time without changing
# what the module computes: left out of the teacher fingerprint.
_VOLATILE_ATTRIBUTES = {"training", "count", "first_call", "device"}
_TEACHER_MODULES = ("compute_features", "mean_var_norm", "embedding_model", "classifier")
_TEACHER_TABLES = ("mode", "logit_scale", "training_speakers", "_columns", "_centroids")


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
    saliency_mapping=None,
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
        One of :data:`speechbrain_imlkd.ig_cache.storage.STORAGES`.
    n_bands : int
        Frequency bands of the ``bands`` storage.
    store_logits : bool
        Whether teacher logits are stored.
    shard_size : int
        Chunks per shard (the layout).
    saliency_mapping : speechbrain_imlkd.integrated_inputs.SaliencyMapping, optional
        For a teacher with its own front end: how its saliency is carried to
        the student's bands. The key then also holds the teacher's
        ``front_end`` settings and the mapping (a same-feature key is
        unchanged).

    Returns
    -------
    dict

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_imlkd.data.dataset import write_toy_csvs
    >>> from speechbrain_imlkd.teacher import Teacher
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> from speechbrain_imlkd.ig_cache.plan import IGSettings, SegmentPlan
    >>> csv_path, _ = write_toy_csvs(tempfile.mkdtemp())
    >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
    >>> key = cache_key(t, csv_path, SegmentPlan(), IGSettings())
    >>> sorted(key)
    ['features', 'format', 'ig', 'integration', 'layout', 'plan', 'storage', 'teacher', 'train_csv']
    """
    train_csv = Path(train_csv)
    if not train_csv.is_file():
        raise FileNotFoundError(f"training CSV not found: {train_csv}")
    key = {
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
        "train_csv": {"sha256": file_digest(train_csv)},
    }
    if saliency_mapping is not None:
        key["front_end"] = dict(getattr(teacher, "front_end", {}))
        key["saliency_mapping"] = saliency_mapping.as_dict()
    return key


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
