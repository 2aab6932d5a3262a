"""Parity of an ONNX graph with the torch model it was exported from.

:func:`check_parity` embeds the same audio (synthetic padded batches from
:func:`synthetic_waveforms`, and real clips) with both and reports the lowest
cosine similarity and the largest absolute difference; :func:`format_parity`
writes the rows as a Markdown table.

Authors
 * speechbrain-imlkd contributors 2025
"""

from pathlib import Path

import numpy as np
import torch

from speechbrain_imlkd.onnx_export.graph import _as_embedder
from speechbrain_imlkd.onnx_export.runtime import OnnxEmbedder

#: Cosine similarity below which an fp32 export is rejected.
PARITY_MIN_COSINE = 0.9999
#: Durations (s) of the full parity check (the issue's 1 s to 20 s range).
PARITY_SECONDS = (1.0, 3.0, 10.0, 20.0)
#: Rows per synthetic parity batch (the last ones padded, see
#: :func:`synthetic_waveforms`).
PARITY_BATCH = 3
# Amplitude and tone range of the synthetic parity audio (speech-like level).
_SYNTH_NOISE = 0.05
_SYNTH_TONE = 0.2
_SYNTH_F0_HZ = (90.0, 260.0)
_SYNTH_ENVELOPE_HZ = 4.0


class ParityError(RuntimeError):
    """The ONNX graph does not compute what the torch model computes.

    Example
    -------
    >>> raise ParityError("cosine 0.9 < 0.9999")
    Traceback (most recent call last):
    ...
    speechbrain_imlkd.onnx_export.parity.ParityError: cosine 0.9 < 0.9999
    """



def synthetic_waveforms(seconds, batch=PARITY_BATCH, sample_rate=16000, seed=0):
    """A padded batch of speech-like synthetic audio for parity checks.

    Each row is a gliding harmonic tone under a syllable-rate envelope plus
    noise; row ``i`` keeps ``1 - i / (2 batch)`` of the length and is
    zero-padded after it, so that the lengths input matters.

    Arguments
    ---------
    seconds : float
        Length of the longest row.
    batch : int
        Number of rows.
    sample_rate : int
        Samples per second.
    seed : int
        Random seed.

    Returns
    -------
    wavs : torch.Tensor
        ``batch x time``.
    wav_lens : torch.Tensor
        ``batch`` relative lengths.

    Example
    -------
    >>> wavs, lens = synthetic_waveforms(1.0, batch=2)
    >>> wavs.shape, lens.tolist()
    (torch.Size([2, 16000]), [1.0, 0.75])
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    wavs = np.zeros((batch, n), dtype=np.float32)
    lens = np.zeros(batch, dtype=np.float32)
    for i in range(batch):
        f0 = rng.uniform(*_SYNTH_F0_HZ) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        tone = sum(np.sin(h * phase) / h for h in range(1, 6))
        envelope = 0.5 * (1 + np.sin(2 * np.pi * _SYNTH_ENVELOPE_HZ * t + rng.uniform(0, 6)))
        x = _SYNTH_TONE * envelope * tone + _SYNTH_NOISE * rng.standard_normal(n)
        keep = n - (i * n) // (2 * batch)
        wavs[i, :keep] = x[:keep]
        lens[i] = keep / n
    return torch.from_numpy(wavs), torch.from_numpy(lens)


def _compare(reference, candidate):
    """Cosine (min over rows) and max absolute difference of two B x D arrays."""
    ref = reference.reshape(reference.shape[0], -1).double()
    cand = candidate.reshape(candidate.shape[0], -1).double()
    cosine = torch.nn.functional.cosine_similarity(ref, cand, dim=1)
    return float(cosine.min()), float((ref - cand).abs().max())


def check_parity(reference, onnx_model, seconds=PARITY_SECONDS, clips=(), batch=PARITY_BATCH, seed=0):
    """Compares the torch model and an ONNX graph on the same audio.

    Arguments
    ---------
    reference : EncoderClassifier or callable or str or pathlib.Path
        The torch model: anything with ``encode_batch(wavs, wav_lens)`` (a
        loaded hub folder), a callable taking the same, or a hub folder.
    onnx_model : OnnxEmbedder or str or pathlib.Path
        The graph.
    seconds : sequence of float
        Durations of synthetic padded batches (:func:`synthetic_waveforms`).
    clips : sequence of str or pathlib.Path
        Real audio files at the model's rate, each embedded alone (full
        length) and then all together as one padded batch.
    batch : int
        Rows per synthetic batch.
    seed : int
        Seed of the synthetic audio.

    Returns
    -------
    list of dict
        One per case: ``case``, ``batch``, ``samples``, ``cosine_min``
        (lowest cosine similarity over the rows) and ``max_abs_diff``.

    Example
    -------
    >>> class Same:  # a reference and a "graph" that agree exactly
    ...     sample_rate = 16000
    ...     def encode_batch(self, wavs, wav_lens=None):
    ...         return wavs[:, None, :4] + 1.0
    >>> rows = check_parity(Same(), Same(), seconds=(0.1,), batch=2)
    >>> rows[0]["case"], round(rows[0]["cosine_min"], 12), rows[0]["max_abs_diff"]
    ('synthetic 0.1 s', 1.0, 0.0)
    """
    from speechbrain_imlkd.data.audio import read_wav_checked

    if isinstance(reference, (str, Path)):
        reference, _ = _as_embedder(reference)
    if isinstance(onnx_model, (str, Path)):
        onnx_model = OnnxEmbedder(onnx_model)
    ref_fn = getattr(reference, "encode_batch", reference)
    sample_rate = int(getattr(onnx_model, "sample_rate", 16000))
    cases = []
    for i, sec in enumerate(seconds):
        wavs, lens = synthetic_waveforms(sec, batch=batch, sample_rate=sample_rate, seed=seed + i)
        cases.append((f"synthetic {sec:g} s", wavs, lens))
    if clips:
        loaded = [read_wav_checked(c, sample_rate) for c in clips]
        for clip, wav in zip(clips, loaded):
            # speaker/video/file: clip names repeat across folders.
            short = "/".join(Path(clip).parts[-3:])
            cases.append((f"clip {short}", wav[None], torch.ones(1)))
        longest = max(w.numel() for w in loaded)
        wavs = torch.zeros(len(loaded), longest)
        for row, wav in enumerate(loaded):
            wavs[row, : wav.numel()] = wav
        lens = torch.tensor([w.numel() / longest for w in loaded])
        cases.append((f"{len(loaded)} clips, padded batch", wavs, lens))
    results = []
    with torch.inference_mode():
        for name, wavs, lens in cases:
            ref = torch.as_tensor(ref_fn(wavs, lens)).detach().cpu()
            out = onnx_model.encode_batch(wavs, lens)
            cosine, diff = _compare(ref, out)
            results.append(
                dict(case=name, batch=int(wavs.shape[0]), samples=int(wavs.shape[1]),
                     cosine_min=cosine, max_abs_diff=diff)
            )
    return results


def format_parity(results):
    """Formats :func:`check_parity` rows as a Markdown table.

    Arguments
    ---------
    results : list of dict
        From :func:`check_parity`.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_parity([dict(case="x", batch=1, samples=16000,
    ...                           cosine_min=1.0, max_abs_diff=1e-6)]))
    | case | batch | samples | cosine (min) | max abs diff |
    |---|---:|---:|---:|---:|
    | x | 1 | 16000 | 1.000000 | 1.0e-06 |
    """
    lines = [
        "| case | batch | samples | cosine (min) | max abs diff |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['batch']} | {r['samples']} | "
            f"{r['cosine_min']:.6f} | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)
