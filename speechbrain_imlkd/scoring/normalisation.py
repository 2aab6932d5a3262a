"""Cosine scoring and score normalisation (s-norm, AS-norm) over a cohort.

S-norm / AS-norm use the unbiased standard deviation (``ddof=1``) of the
cohort scores, as ``torch.std`` in SpeechBrain's verification recipe. The
cohort is (a random draw of) the training CSV's segments
(:func:`read_cohort_csv`).

Example
-------
>>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
>>> raw = cosine_scores([[1.0, 0.0]], [[1.0, 1.0]])
>>> snorm(raw, [[1.0, 0.0]], [[1.0, 1.0]], cohort).round(4).tolist()
[0.6422]

Authors
 * speechbrain-imlkd contributors
"""

from pathlib import Path

import numpy as np

from speechbrain_imlkd.scoring.metrics import _to_numpy

COHORT_COLUMNS = ("ID", "wav", "start", "stop")


def _as_matrix(x, name):
    """2-D finite float32 array of embeddings (rows)."""
    arr = _to_numpy(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty N x D matrix, got shape {arr.shape}"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def l2_normalise(x, mean=None):
    """Subtracts an optional mean vector, then scales rows to unit norm.

    Arguments
    ---------
    x : array-like
        ``N x D`` embeddings.
    mean : array-like or None
        ``D`` vector subtracted first (mean subtraction).

    Returns
    -------
    numpy.ndarray
        ``N x D`` float32 unit vectors (a zero row stays zero).

    Example
    -------
    >>> x = l2_normalise([[4.0, 5.0], [1.0, 1.0]], mean=[1.0, 1.0])
    >>> x.astype(float).round(4).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.array(x, dtype=np.float32)
    if mean is not None:
        x -= np.asarray(mean, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def cosine_scores(
    enrol_emb, test_emb, enrol_index=None, test_index=None, chunk_size=65536
):
    """Cosine similarity of enrol/test embedding pairs, in chunks of trials.

    Arguments
    ---------
    enrol_emb : array-like
        ``E x D`` enrolment embeddings.
    test_emb : array-like
        ``T x D`` test embeddings.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``; ``None`` pairs rows one to one.
    test_index : array-like or None
        Trial -> row of ``test_emb``; ``None`` pairs rows one to one.
    chunk_size : int
        Trials per chunk (bounds the gathered ``chunk x D`` copies).

    Returns
    -------
    numpy.ndarray
        float64 score per trial.

    Example
    -------
    >>> s = cosine_scores([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [1.0, 1.0]])
    >>> s.round(4).tolist()
    [1.0, 0.7071]
    >>> cosine_scores([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [0, 0]).tolist()
    [1.0, 0.0]
    """
    e = l2_normalise(_as_matrix(enrol_emb, "enrol_emb"))
    t = l2_normalise(_as_matrix(test_emb, "test_emb"))
    ei, ti = _trial_indices(e, t, enrol_index, test_index)
    out = np.empty(ei.size, dtype=np.float64)
    for s in range(0, ei.size, chunk_size):
        sl = slice(s, s + chunk_size)
        out[sl] = np.einsum("ij,ij->i", e[ei[sl]], t[ti[sl]])
    return out


def _trial_indices(e, t, enrol_index, test_index):
    """Validated trial -> row index arrays."""
    ei = np.arange(e.shape[0]) if enrol_index is None else enrol_index
    ti = np.arange(t.shape[0]) if test_index is None else test_index
    ei, ti = np.asarray(ei, dtype=np.int64), np.asarray(ti, dtype=np.int64)
    if ei.shape != ti.shape or ei.ndim != 1:
        raise ValueError(
            f"enrol and test sides give {ei.shape} and {ti.shape} trials; "
            "they must match (pass enrol_index/test_index to reuse rows)"
        )
    for name, idx, n in (("enrol", ei, e.shape[0]), ("test", ti, t.shape[0])):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name}_index out of range for {n} embeddings")
    if e.shape[1] != t.shape[1]:
        raise ValueError(
            f"Embedding sizes differ: enrol {e.shape[1]}, test {t.shape[1]}"
        )
    return ei, ti


def cohort_statistics(
    embeddings, cohort, top_k=None, chunk_size=None, max_chunk_bytes=64 << 20
):
    """Mean and standard deviation of each embedding's cosine scores to a cohort.

    Arguments
    ---------
    embeddings : array-like
        ``U x D`` embeddings (one per unique utterance).
    cohort : array-like
        ``C x D`` cohort (training) embeddings.
    top_k : int or None
        Keep only the ``top_k`` highest cohort scores of each row (adaptive
        normalisation); ``None`` keeps the whole cohort.
    chunk_size : int or None
        Rows per chunk; ``None`` picks it so that a ``chunk x C`` block stays
        under ``max_chunk_bytes``.
    max_chunk_bytes : int
        Memory bound of one block of scores.

    Returns
    -------
    mean : numpy.ndarray
        ``U`` means.
    std : numpy.ndarray
        ``U`` unbiased standard deviations (``ddof=1``, as ``torch.std`` in
        SpeechBrain's verification recipe).

    Raises
    ------
    ValueError
        If the cohort is smaller than ``top_k`` or than 2, or ``top_k < 2``.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> mean, std = cohort_statistics([[1.0, 0.0]], cohort)
    >>> mean.round(4).tolist(), std.round(4).tolist()
    ([0.0], [1.0])
    >>> cohort_statistics([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], top_k=3)
    Traceback (most recent call last):
    ...
    ValueError: The cohort has 2 embeddings, fewer than top_k=3
    """
    x = l2_normalise(_as_matrix(embeddings, "embeddings"))
    c = l2_normalise(_as_matrix(cohort, "cohort"))
    n_c = c.shape[0]
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"Embedding sizes differ: {x.shape[1]} vs cohort {c.shape[1]}")
    if top_k is not None:
        if top_k < 2:
            raise ValueError(
                f"top_k must be at least 2 (a std needs 2 scores), got {top_k}"
            )
        if n_c < top_k:
            raise ValueError(
                f"The cohort has {n_c} embeddings, fewer than top_k={top_k}"
            )
    if n_c < 2:
        raise ValueError(f"The cohort needs at least 2 embeddings, got {n_c}")
    if chunk_size is None:
        chunk_size = max(1, max_chunk_bytes // (4 * n_c))
    mean = np.empty(x.shape[0], dtype=np.float64)
    std = np.empty(x.shape[0], dtype=np.float64)
    for s in range(0, x.shape[0], chunk_size):
        block = x[s : s + chunk_size] @ c.T
        if top_k is not None and top_k < n_c:
            block = np.partition(block, n_c - top_k, axis=1)[:, n_c - top_k :]
        block = block.astype(np.float64)
        mean[s : s + chunk_size] = block.mean(1)
        std[s : s + chunk_size] = block.std(1, ddof=1)
    return mean, std


def asnorm(
    scores,
    enrol_emb,
    test_emb,
    cohort,
    top_k=None,
    enrol_index=None,
    test_index=None,
):
    """Symmetric (adaptive) score normalisation over a cohort.

    ``s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2`` where ``mu, sd`` are
    the statistics of the enrolment (test) embedding's cosine scores to the
    cohort (its ``top_k`` highest with AS-norm). Statistics are computed once
    per embedding row, as matrix products, so pass unique embeddings with
    ``enrol_index`` / ``test_index`` for large trial lists.

    Arguments
    ---------
    scores : array-like
        Raw score of each trial.
    enrol_emb : array-like
        Enrolment embeddings (one per trial, or rows indexed by ``enrol_index``).
    test_emb : array-like
        Test embeddings (one per trial, or rows indexed by ``test_index``).
    cohort : array-like
        ``C x D`` cohort embeddings (already mean-subtracted if scores were).
    top_k : int or None
        AS-norm cohort size per side; ``None`` is plain s-norm.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``.
    test_index : array-like or None
        Trial -> row of ``test_emb``.

    Returns
    -------
    numpy.ndarray
        Normalised float64 scores.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> asnorm([0.5], [[1.0, 0.0]], [[0.0, 1.0]], cohort).round(4).tolist()
    [0.3943]
    >>> asnorm([0.5], [[1.0, 0.0]], [[0.0, 1.0]], cohort, top_k=2).round(4).tolist()
    [0.0]
    """
    s = _to_numpy(scores).astype(np.float64).ravel()
    e = _as_matrix(enrol_emb, "enrol_emb")
    t = _as_matrix(test_emb, "test_emb")
    ei, ti = _trial_indices(e, t, enrol_index, test_index)
    if ei.size != s.size:
        raise ValueError(f"{s.size} scores but {ei.size} trials")
    mu_e, sd_e = cohort_statistics(e, cohort, top_k)
    mu_t, sd_t = cohort_statistics(t, cohort, top_k)
    return 0.5 * ((s - mu_e[ei]) / sd_e[ei] + (s - mu_t[ti]) / sd_t[ti])


def snorm(scores, enrol_emb, test_emb, cohort, enrol_index=None, test_index=None):
    """Symmetric score normalisation over the whole cohort.

    Same as :func:`asnorm` with ``top_k=None``.

    Arguments
    ---------
    scores : array-like
        Raw score of each trial.
    enrol_emb : array-like
        Enrolment embeddings (one per trial, or rows indexed by ``enrol_index``).
    test_emb : array-like
        Test embeddings (one per trial, or rows indexed by ``test_index``).
    cohort : array-like
        ``C x D`` cohort embeddings.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``.
    test_index : array-like or None
        Trial -> row of ``test_emb``.

    Returns
    -------
    numpy.ndarray
        Normalised float64 scores.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> snorm([1.0], [[1.0, 0.0]], [[1.0, 0.0]], cohort).round(4).tolist()
    [1.0]
    """
    return asnorm(scores, enrol_emb, test_emb, cohort, None, enrol_index, test_index)



def read_cohort_csv(csv_path, cohort_size=None, seed=1234, data_folder=None):
    """Reads (a random subset of) a training CSV as cohort segments.

    Arguments
    ---------
    csv_path : str or pathlib.Path
        CSV with at least ``ID,wav,start,stop`` (the training CSV of data
        preparation: ``ID,duration,wav,start,stop,spk_id``).
    cohort_size : int or None
        Number of rows drawn without replacement; ``None`` keeps every row.
    seed : int
        Seed of the draw (the cohort is reproducible).
    data_folder : str or pathlib.Path or None
        Replaces ``$data_root`` in ``wav`` (SpeechBrain's placeholder).

    Returns
    -------
    ids : list of str
        Row IDs, in file order.
    wav_paths : dict
        ``{ID: wav path}``.
    segments : dict
        ``{ID: (start, stop)}`` in samples.

    Raises
    ------
    ValueError
        On a missing column, bad ``start``/``stop`` (with the line number),
        duplicate IDs, or ``cohort_size`` larger than the CSV.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
    >>> _ = f.write_text("ID,duration,wav,start,stop,spk_id\\n"
    ...                  "a,1.0,$data_root/a.wav,0,16000,id1\\n"
    ...                  "b,1.0,/x/b.wav,16000,x,id2\\n")
    >>> read_cohort_csv(f)
    Traceback (most recent call last):
    ...
    ValueError: ...train.csv, line 3: start/stop must be integers with 0 <= start < stop, got start='16000', stop='x'
    """
    import csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Cohort CSV not found: {csv_path}")
    ids, wavs, segments = [], {}, {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COHORT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"Cohort CSV {csv_path} lacks column(s) {missing}; expected "
                "ID,duration,wav,start,stop,spk_id"
            )
        for lineno, row in enumerate(reader, start=2):
            try:
                start, stop = int(row["start"]), int(row["stop"])
                if not 0 <= start < stop:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"Cohort CSV {csv_path}, line {lineno}: start/stop must be "
                    "integers with 0 <= start < stop, got "
                    f"start={row['start']!r}, stop={row['stop']!r}"
                ) from None
            utt = row["ID"]
            if utt in wavs:
                raise ValueError(
                    f"Cohort CSV {csv_path}, line {lineno}: duplicate ID {utt!r}"
                )
            wav = row["wav"]
            if data_folder is not None:
                wav = wav.replace("$data_root", str(data_folder))
            ids.append(utt)
            wavs[utt] = wav
            segments[utt] = (start, stop)
    if not ids:
        raise ValueError(f"Cohort CSV {csv_path} has no rows")
    if cohort_size is not None:
        if cohort_size > len(ids):
            raise ValueError(
                f"cohort_size={cohort_size} but the cohort CSV {csv_path} has "
                f"only {len(ids)} rows (use cohort_size: null for all of them)"
            )
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(ids), cohort_size, replace=False))
        ids = [ids[i] for i in pick]
    return ids, {u: wavs[u] for u in ids}, {u: segments[u] for u in ids}
