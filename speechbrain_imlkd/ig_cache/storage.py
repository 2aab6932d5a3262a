"""On-disk layout of an IG cache: shards, their records, ``key.json`` and ``index.json``.

Every file is written under a temporary name and renamed when complete, and
a shard counts only once its record (key hash, chunk IDs, size, SHA-256) is
written after it, so an interrupted run leaves nothing that looks usable.

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _shard_paths(d, 3)[0].name
'shard_00003.pt'
>>> _valid_record(d, 3, "hash", ["a"]) is None  # no shard yet
True

Authors
 * speechbrain-imlkd contributors
"""

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch

from speechbrain_imlkd.hashing import file_digest
from speechbrain_imlkd.ig_cache.key import FORMAT_VERSION, STORED_DTYPE, key_differences
from speechbrain_imlkd.integrated_inputs import pool_saliency

logger = logging.getLogger(__name__)

#: Saliency storage choices: ``T x F``, ``T x n_bands`` or ``T`` per segment.
STORAGES = ("full", "bands", "time")
KEY_FILE = "key.json"
INDEX_FILE = "index.json"
_SHARD_STEM = "shard_{:05d}"
# The errors are documented, imported and reported under the package name.
_PUBLIC_MODULE = "speechbrain_imlkd.ig_cache"


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


CacheError.__module__ = CacheKeyError.__module__ = _PUBLIC_MODULE


def _store(saliency, storage, n_bands):
    """Normalised ``N x T x F`` saliency in its stored shape, float16."""
    if storage == "full":
        out = saliency
    elif storage == "bands":
        out = pool_saliency(saliency, n_bands)
    else:
        out = pool_saliency(saliency)
    return out.to(STORED_DTYPE)



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
    elif check_sum and file_digest(data_path) != record.get("sha256"):
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



def _index_hash(cache_dir):
    """Key hash recorded in ``index.json`` (None when missing)."""
    index = _read_json(Path(cache_dir) / INDEX_FILE)
    return None if index is None else index.get("key_hash")
