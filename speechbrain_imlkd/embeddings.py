"""Batched speaker-embedding extraction with an on-disk cache.

:func:`extract_embeddings` embeds every unique utterance of a trial list
(full length by default, or averaged over fixed-length chunks), in batches of
utterances of similar length so that padding stays small, and caches the
result under a key derived from the model and from the audio list, so that
scoring again (another normalisation, another trial list over the same
utterances) does not touch the encoder. A model change gives another key, so
the embeddings are rebuilt.

Example
-------
>>> import tempfile, pathlib, numpy as np, soundfile as sf, torch
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> for name, n in (("a", 1600), ("b", 3200)):
...     sf.write(tmp / f"{name}.wav", 0.1 * np.random.randn(n), 16000)
>>> def encoder(wavs, wav_lens):  # toy encoder: mean and energy of each row
...     n = (wav_lens * wavs.shape[1]).round().long()
...     mask = torch.arange(wavs.shape[1])[None] < n[:, None]
...     x = wavs * mask
...     return torch.stack([x.sum(1) / n, (x ** 2).sum(1) / n], 1)[:, None]
>>> emb = extract_embeddings(encoder, ["a", "b"], [tmp / "a.wav", tmp / "b.wav"],
...                          batch_size=2, cache_dir=tmp / "cache",
...                          model_key="toy", progress=False)
>>> sorted(emb), emb["a"].shape
(['a', 'b'], (2,))
"""

import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from speechbrain_imlkd.data.audio import audio_info, check_audio_info, read_wav_checked
from speechbrain_imlkd.hashing import update_with_file

logger = logging.getLogger(__name__)

#: How many offending files an error message lists.
N_SHOWN = 5
# Bump when the cache content changes for an identical key.
_CACHE_VERSION = 1


def model_fingerprint(model_dir: Union[str, Path]) -> str:
    """Hash of a model folder's ``hyperparams.yaml`` and checkpoint files.

    Arguments
    ---------
    model_dir : str or pathlib.Path
        A model folder in the hub layout (see :mod:`speechbrain_imlkd.export`).

    Returns
    -------
    str
        Hex SHA-256 of the names and contents of ``hyperparams.yaml`` and of
        every ``*.ckpt`` file in the folder.

    Raises
    ------
    FileNotFoundError
        If the folder or its ``hyperparams.yaml`` is missing.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "hyperparams.yaml").write_text("a: 1")
    >>> _ = (d / "embedding_model.ckpt").write_bytes(b"weights")
    >>> key = model_fingerprint(d)
    >>> _ = (d / "embedding_model.ckpt").write_bytes(b"other weights")
    >>> model_fingerprint(d) != key
    True
    """
    model_dir = Path(model_dir)
    hparams = model_dir / "hyperparams.yaml"
    if not hparams.is_file():
        raise FileNotFoundError(
            f"Model folder {model_dir} has no hyperparams.yaml (expected a "
            "folder in the hub layout, e.g. written by speechbrain_imlkd.export)"
        )
    digest = hashlib.sha256()
    for f in [hparams] + sorted(model_dir.glob("*.ckpt")):
        digest.update(f.name.encode() + b"\0")
        update_with_file(digest, f)
        digest.update(b"\0")
    return digest.hexdigest()


def load_model(model_dir, savedir=None, run_opts=None):
    """Loads a local model folder as a SpeechBrain ``EncoderClassifier``.

    Nothing is downloaded: the folder's own ``hyperparams.yaml`` and
    checkpoints are used (SpeechBrain links them into ``savedir``).

    Arguments
    ---------
    model_dir : str or pathlib.Path
        A folder in the hub layout (``hyperparams.yaml`` + checkpoints).
    savedir : str or pathlib.Path or None
        Where SpeechBrain links the files. SpeechBrain reuses files already
        in ``savedir``, so never share one between models; ``None`` uses a
        fresh temporary folder.
    run_opts : dict or None
        SpeechBrain run options, e.g. ``{"device": "cuda:0"}``.

    Returns
    -------
    speechbrain.inference.speaker.EncoderClassifier
        The loaded model, in eval mode, with frozen parameters.

    Raises
    ------
    FileNotFoundError
        If the folder or its ``hyperparams.yaml`` does not exist.
    RuntimeError
        If the folder does not load, naming it and the underlying error.

    Example
    -------
    >>> load_model("/nonexistent/model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    from speechbrain.inference.speaker import EncoderClassifier

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model folder not found: {model_dir}")
    if not (model_dir / "hyperparams.yaml").is_file():
        raise FileNotFoundError(
            f"Model folder {model_dir} has no hyperparams.yaml (expected a "
            "folder in the hub layout, e.g. written by speechbrain_imlkd.export)"
        )
    if savedir is None:
        savedir = tempfile.mkdtemp(prefix="imlkd_model_")
    try:
        encoder = EncoderClassifier.from_hparams(
            source=str(model_dir.resolve()),
            savedir=str(savedir),
            run_opts=run_opts,
        )
    except Exception as e:
        raise RuntimeError(
            f"Could not load model folder {model_dir} as a SpeechBrain "
            f"EncoderClassifier: {type(e).__name__}: {e}"
        ) from e
    return encoder


def chunk_bounds(n_samples: int, chunk_samples: Optional[int]):
    """Splits ``[0, n_samples)`` into equal, evenly spread windows.

    Every window has ``chunk_samples`` samples (neighbours overlap when the
    length is not a multiple), so no embedding comes from a short tail. A
    signal shorter than one chunk is one window.

    Arguments
    ---------
    n_samples : int
        Signal length.
    chunk_samples : int or None
        Window length; ``None`` gives the whole signal.

    Returns
    -------
    list of (int, int)
        ``(start, stop)`` windows.

    Example
    -------
    >>> chunk_bounds(10, 4)
    [(0, 4), (3, 7), (6, 10)]
    >>> chunk_bounds(3, 4), chunk_bounds(8, None)
    ([(0, 3)], [(0, 8)])
    """
    if chunk_samples is None or n_samples <= chunk_samples:
        return [(0, n_samples)]
    n_chunks = math.ceil(n_samples / chunk_samples)
    starts = np.linspace(0, n_samples - chunk_samples, n_chunks).round()
    return [(int(s), int(s) + chunk_samples) for s in starts]


def _normalise_inputs(utterances, wav_paths, segments):
    """Pairs utterances with paths/segments; rejects conflicting duplicates."""
    utterances = list(utterances)
    if isinstance(wav_paths, Mapping):
        missing = [u for u in utterances if u not in wav_paths]
        if missing:
            raise KeyError(
                f"wav_paths has no entry for {len(missing)} utterance(s), "
                f"e.g. {missing[:N_SHOWN]}"
            )
        paths = [str(wav_paths[u]) for u in utterances]
    else:
        paths = [str(p) for p in wav_paths]
        if len(paths) != len(utterances):
            raise ValueError(
                f"Got {len(utterances)} utterances but {len(paths)} wav paths"
            )
    items = {}
    for utt, path in zip(utterances, paths):
        seg = None
        if segments is not None and utt in segments:
            seg = tuple(int(x) for x in segments[utt])
        entry = (path, seg)
        if items.setdefault(utt, entry) != entry:
            raise ValueError(
                f"Utterance {utt!r} is given twice with different audio: "
                f"{items[utt]} and {entry}"
            )
    return items


def _check_audio(items, sample_rate):
    """Reads every header; returns ``{utt: n_samples}`` of the used audio."""
    missing = sorted({p for p, _ in items.values() if not os.path.isfile(p)})
    if missing:
        shown = "\n  ".join(missing[:N_SHOWN])
        raise FileNotFoundError(
            f"{len(missing)} audio file(s) needed for scoring are missing "
            f"(first {min(len(missing), N_SHOWN)}):\n  {shown}"
        )
    lengths = {}
    for utt, (path, seg) in items.items():
        info = audio_info(path)
        check_audio_info(info, sample_rate=sample_rate)
        if seg is None:
            lengths[utt] = info.frames
        else:
            start, stop = seg
            if not 0 <= start < stop <= info.frames:
                raise ValueError(
                    f"Segment [{start}, {stop}) of utterance {utt!r} is outside "
                    f"{path} ({info.frames} samples)"
                )
            lengths[utt] = stop - start
    return lengths


def _cache_key(items, model_key, sample_rate, chunk_samples):
    """Key over the model, the settings and every file's path, size and mtime."""
    digest = hashlib.sha256()
    head = dict(
        version=_CACHE_VERSION,
        model=model_key,
        sample_rate=sample_rate,
        chunk_samples=chunk_samples,
    )
    digest.update(json.dumps(head, sort_keys=True).encode())
    for utt in sorted(items):
        path, seg = items[utt]
        st = os.stat(path)
        line = f"\n{utt}\t{path}\t{seg}\t{st.st_size}\t{st.st_mtime_ns}"
        digest.update(line.encode())
    return digest.hexdigest()


def _load_cache(cache_file, utterances):
    """Returns the cached embeddings, or None when absent or unusable."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            cached_utts = data["utterances"].tolist()
            matrix = data["embeddings"]
    except Exception as e:  # a truncated or foreign file: rebuild, but say so
        logger.warning("Ignoring unreadable embedding cache %s (%s)", cache_file, e)
        return None
    if sorted(cached_utts) != sorted(utterances) or matrix.shape[0] != len(cached_utts):
        logger.warning("Ignoring embedding cache %s: utterances differ", cache_file)
        return None
    return {u: matrix[i] for i, u in enumerate(cached_utts)}


def _save_cache(cache_file, embeddings):
    """Writes the cache atomically (temporary file, then rename)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    utts = list(embeddings)
    matrix = np.stack([embeddings[u] for u in utts]).astype(np.float32)
    tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
    np.savez(tmp, utterances=np.array(utts), embeddings=matrix)
    os.replace(tmp, cache_file)


def _encode(encoder, wavs, wav_lens):
    """Calls ``encode_batch`` (EncoderClassifier) or the callable itself."""
    fn = getattr(encoder, "encode_batch", encoder)
    out = fn(wavs, wav_lens)
    return out.detach().reshape(wavs.shape[0], -1).float().cpu().numpy()


def extract_embeddings(
    encoder: Callable,
    utterances: Sequence[str],
    wav_paths: Union[Sequence, Mapping[str, Union[str, Path]]],
    batch_size: int = 16,
    cache_dir: Optional[Union[str, Path]] = None,
    model_key: Optional[str] = None,
    chunk_seconds: Optional[float] = None,
    segments: Optional[Mapping[str, Tuple[int, int]]] = None,
    sample_rate: int = 16000,
    progress: bool = True,
    desc: str = "Embeddings",
) -> Dict[str, np.ndarray]:
    """Embeds every unique utterance, batched by length, with a disk cache.

    Arguments
    ---------
    encoder : EncoderClassifier or callable
        Its ``encode_batch(wavs, wav_lens)`` (or the callable itself) maps a
        ``B x T`` zero-padded batch and relative lengths to ``B x 1 x D`` or
        ``B x D`` embeddings.
    utterances : sequence of str
        Utterance IDs (duplicates with the same audio are embedded once).
    wav_paths : sequence or mapping
        The audio file of each utterance (aligned with ``utterances``, or a
        mapping from ID to path).
    batch_size : int
        Utterances (or chunks) per forward pass.
    cache_dir : str or pathlib.Path or None
        Folder of the cache; ``None`` disables caching.
    model_key : str or None
        Identifies the model, e.g. :func:`model_fingerprint` of its folder;
        required with ``cache_dir``.
    chunk_seconds : float or None
        ``None`` embeds each utterance at full length; otherwise the mean of
        the embeddings of equal windows of this length (see
        :func:`chunk_bounds`).
    segments : mapping or None
        Optional ``{utt: (start, stop)}`` in samples, to embed part of a file
        (e.g. training CSV rows used as a cohort).
    sample_rate : int
        Expected sample rate of every file.
    progress : bool
        Show a tqdm progress bar.
    desc : str
        Label of the progress bar.

    Returns
    -------
    dict
        ``{utt: float32 numpy vector}``.

    Raises
    ------
    FileNotFoundError
        Listing the first missing files and how many are missing.
    ValueError
        On bad arguments, conflicting duplicates, or segments outside files.
    speechbrain_imlkd.data.audio.AudioError
        On an unusable file (wrong rate, stereo, empty, corrupt).

    Example
    -------
    >>> extract_embeddings(lambda w, l: w[:, :2], ["x"], ["/nonexistent/x.wav"],
    ...                    progress=False)
    Traceback (most recent call last):
    ...
    FileNotFoundError: 1 audio file(s) needed for scoring are missing (first 1):
      /nonexistent/x.wav
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if chunk_seconds is not None and chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive or None, got {chunk_seconds}")
    if cache_dir is not None and not model_key:
        raise ValueError(
            "cache_dir needs a model_key (e.g. model_fingerprint(model_dir)) "
            "so that the cache is rebuilt when the model changes"
        )
    items = _normalise_inputs(utterances, wav_paths, segments)
    if not items:
        return {}
    lengths = _check_audio(items, sample_rate)
    chunk = None if chunk_seconds is None else int(round(chunk_seconds * sample_rate))

    cache_file = None
    if cache_dir is not None:
        key = _cache_key(items, model_key, sample_rate, chunk)
        cache_file = Path(cache_dir) / f"embeddings_{key[:24]}.npz"
        cached = _load_cache(cache_file, list(items))
        if cached is not None:
            logger.info("Loaded %d embeddings from %s", len(cached), cache_file)
            return cached

    # One piece per (utterance, window); longest first so that an
    # out-of-memory error shows up on the first batch, not the last.
    utts = list(items)
    pieces = []
    for idx, utt in enumerate(utts):
        offset = 0 if items[utt][1] is None else items[utt][1][0]
        for start, stop in chunk_bounds(lengths[utt], chunk):
            pieces.append((stop - start, idx, offset + start, offset + stop))
    pieces.sort(key=lambda p: -p[0])

    sums, counts = None, np.zeros(len(utts), dtype=np.int64)
    n_batches = math.ceil(len(pieces) / batch_size)
    with torch.inference_mode():
        for b in tqdm(range(n_batches), desc=desc, disable=not progress):
            batch = pieces[b * batch_size : (b + 1) * batch_size]
            longest = batch[0][0]
            wavs = torch.zeros(len(batch), longest)
            for row, (n, idx, start, stop) in enumerate(batch):
                wavs[row, :n] = read_wav_checked(
                    items[utts[idx]][0], sample_rate, start=start, stop=stop
                )
            wav_lens = torch.tensor([p[0] / longest for p in batch])
            emb = _encode(encoder, wavs, wav_lens)
            if sums is None:
                sums = np.zeros((len(utts), emb.shape[1]), dtype=np.float64)
            idxs = np.array([p[1] for p in batch])
            np.add.at(sums, idxs, emb)
            np.add.at(counts, idxs, 1)
    matrix = (sums / counts[:, None]).astype(np.float32)
    if not np.isfinite(matrix).all():
        bad = [utts[i] for i in np.flatnonzero(~np.isfinite(matrix).all(1))]
        raise ValueError(
            f"The encoder produced non-finite embeddings for {len(bad)} "
            f"utterance(s), e.g. {bad[:N_SHOWN]}"
        )
    embeddings = {u: matrix[i] for i, u in enumerate(utts)}
    if cache_file is not None:
        _save_cache(cache_file, embeddings)
        logger.info("Cached %d embeddings in %s", len(embeddings), cache_file)
    return embeddings
