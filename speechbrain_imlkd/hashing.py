"""Hashing files in blocks: the one helper behind every content fingerprint.

Caches of this package are keyed by the content of files: the IG cache by
its training CSV and checks its shards (:mod:`speechbrain_imlkd.ig_cache`),
the embedding cache by the model folder
(:func:`speechbrain_imlkd.embeddings.model_fingerprint`), data preparation by
its trial list (:mod:`speechbrain_imlkd.data.voxceleb`). All read files
through :func:`update_with_file`, so a large checkpoint or shard never has to
fit in memory and every fingerprint hashes bytes the same way.

Example
-------
>>> import hashlib, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> _ = path.write_bytes(b"abc")
>>> file_digest(path) == hashlib.sha256(b"abc").hexdigest()
True

Authors
 * speechbrain-imlkd contributors
"""

import hashlib

#: Bytes read per call: large enough to be fast, small enough for any file.
HASH_BLOCK = 1 << 20


def update_with_file(digest, path, block=HASH_BLOCK):
    """Feeds a file's bytes into a running ``hashlib`` digest.

    Arguments
    ---------
    digest : hashlib hash object
        Updated in place (e.g. ``hashlib.sha256()``).
    path : str or pathlib.Path
        The file.
    block : int
        Bytes read at a time.

    Returns
    -------
    hashlib hash object
        ``digest``, for chaining.

    Raises
    ------
    FileNotFoundError
        If the file is missing (the message names it).

    Example
    -------
    >>> import hashlib, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a").write_bytes(b"ab")
    >>> _ = (d / "b").write_bytes(b"c")
    >>> h = update_with_file(update_with_file(hashlib.sha256(), d / "a"), d / "b")
    >>> h.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    True
    """
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest


def file_digest(path, algorithm="sha256", block=HASH_BLOCK):
    """Hex digest of a file's bytes.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.
    algorithm : str
        A ``hashlib`` algorithm name (``"sha256"``, ``"sha1"``, ...).
    block : int
        Bytes read at a time.

    Returns
    -------
    str
        Hex digest.

    Example
    -------
    >>> import hashlib, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = path.write_bytes(b"abc")
    >>> file_digest(path, "sha1") == hashlib.sha1(b"abc").hexdigest()
    True
    """
    return update_with_file(hashlib.new(algorithm), path, block).hexdigest()
