"""Writing the waveform-to-embedding graph: :func:`export_onnx`.

Traces :class:`~speechbrain_imlkd.onnx_export.graph.WaveformEmbedder` with
torch's dynamo exporter (dynamic batch and time axes), records the graph's
contract in its metadata, checks parity with the torch model and writes the
file atomically.

Authors
 * speechbrain-imlkd contributors 2025
"""

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch

from speechbrain_imlkd.onnx_export.graph import _as_embedder, _describe, _export_friendly_masks
from speechbrain_imlkd.onnx_export.parity import PARITY_MIN_COSINE, ParityError, check_parity

#: Names of the graph's inputs and output.
WAVS_INPUT = "wavs"
LENS_INPUT = "wav_lens"
EMBEDDINGS_OUTPUT = "embeddings"
#: ``metadata_props`` key naming the graph's contract, and its value.
FORMAT_KEY = "imlkd_format"
FORMAT_VALUE = "waveform-to-embedding/1"
#: Durations (s) of the synthetic audio checked at export time.
EXPORT_CHECK_SECONDS = (1.0, 3.0)
#: Batch and relative lengths of the example input the graph is traced with:
#: two rows of unequal length, so that neither the batch axis nor the masking
#: can be traced as a constant.
TRACE_SECONDS = 1.0
TRACE_LENS = (1.0, 0.75)


def _atomic_target(path):
    """A temporary name next to ``path`` (same folder, so rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _set_metadata(proto, meta):
    """Adds (or replaces) string ``metadata_props`` of an ONNX model."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)


def export_onnx(model, output, check=True, savedir=None, opset_version=None, metadata=None):
    """Writes the whole embedding pipeline as one ONNX graph.

    Arguments
    ---------
    model : str or pathlib.Path or EncoderClassifier or WaveformEmbedder
        A hub-layout folder (teacher or student, e.g. written by
        :func:`speechbrain_imlkd.export.export_model`), or the loaded model.
    output : str or pathlib.Path
        The ``.onnx`` file to write (written under a temporary name and
        renamed, so a failed export never leaves a partial file there).
    check : bool
        Compare the graph with the torch model on synthetic audio
        (:data:`EXPORT_CHECK_SECONDS`, padded batches) before renaming it;
        raise :class:`ParityError` below :data:`PARITY_MIN_COSINE`.
    savedir : str or pathlib.Path or None
        Where SpeechBrain links a folder's files (a fresh temporary folder
        when None).
    opset_version : int or None
        ONNX opset (None: the exporter's default).
    metadata : dict or None
        Extra ``metadata_props`` entries (e.g. ``source_fingerprint``; a
        folder's fingerprint is added by itself).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or is not in the hub layout.
    RuntimeError
        If the exporter fails (with the model named).
    ParityError
        If the graph's embeddings differ from torch's.

    Example
    -------
    >>> export_onnx("/nonexistent/model", "/tmp/x.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    import onnx

    reference, embedder = _as_embedder(model, savedir)
    embedder = embedder.cpu().eval()
    min_samples = embedder.min_samples
    trace_samples = max(int(TRACE_SECONDS * embedder.sample_rate), 2 * min_samples)
    generator = torch.Generator().manual_seed(0)
    example = (
        torch.randn(len(TRACE_LENS), trace_samples, generator=generator),
        torch.tensor(TRACE_LENS),
    )
    batch = torch.export.Dim("batch")
    time = torch.export.Dim("time", min=min_samples)
    captured = io.StringIO()
    try:
        # The exporter reports its stages on stdout; keep them for errors only.
        with _export_friendly_masks(), torch.no_grad(), contextlib.redirect_stdout(
            captured
        ), warnings.catch_warnings():
            # Both inputs share the batch axis; the exporter says so at length.
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            program = torch.onnx.export(
                embedder,
                example,
                dynamo=True,
                input_names=[WAVS_INPUT, LENS_INPUT],
                output_names=[EMBEDDINGS_OUTPUT],
                dynamic_shapes=({0: batch, 1: time}, {0: batch}),
                opset_version=opset_version,
                verbose=False,
            )
    except Exception as e:
        raise RuntimeError(
            f"ONNX export of {_describe(model)} failed: {type(e).__name__}: {e}\n"
            f"exporter log:\n{captured.getvalue()}"
        ) from e
    proto = program.model_proto
    embedding_dim = int(embedder(*example).shape[-1])
    meta = {
        FORMAT_KEY: FORMAT_VALUE,
        "sample_rate": embedder.sample_rate,
        "min_samples": min_samples,
        "embedding_dim": embedding_dim,
        "quantization": "none",
        "producer": "speechbrain-imlkd",
    }
    if isinstance(model, (str, Path)):
        from speechbrain_imlkd.embeddings import model_fingerprint

        meta["source_fingerprint"] = model_fingerprint(model)
    meta.update(metadata or {})
    _set_metadata(proto, meta)
    output = Path(output)
    tmp = _atomic_target(output)
    try:
        onnx.save_model(proto, tmp)
        onnx.checker.check_model(str(tmp))
        if check:
            results = check_parity(reference, tmp, seconds=EXPORT_CHECK_SECONDS)
            worst = min(r["cosine_min"] for r in results)
            if worst < PARITY_MIN_COSINE:
                raise ParityError(
                    f"ONNX export of {_describe(model)}: cosine {worst:.6f} with the torch "
                    f"model, below {PARITY_MIN_COSINE} ({results})"
                )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output
