"""ONNX export of the whole embedding pipeline, int8 quantisation, parity.

:func:`export_onnx` writes one ONNX graph that takes a waveform batch and
returns speaker embeddings, with feature extraction and normalisation inside
the graph, so that a deployment needs ONNX Runtime and nothing else:

- inputs ``wavs`` (``float32``, ``batch x time``, zero-padded) and
  ``wav_lens`` (``float32``, ``batch``, each row's length relative to the
  longest, as SpeechBrain's ``encode_batch`` takes them); both the batch and
  the time axis are dynamic;
- output ``embeddings`` (``float32``, ``batch x D``);
- inside: ``Fbank`` (STFT, magnitude, mel filterbank, dB), sentence mean
  normalisation over each row's valid frames, the ECAPA-TDNN with its masked
  statistics pooling: exactly the ``EncoderClassifier.encode_batch`` path of
  the hub-layout folder (``normalize=False``).

Padding is handled in the graph through ``wav_lens``, as in torch: a padded
row gets the same embedding as in SpeechBrain's own padded batch (which,
as in SpeechBrain, differs very slightly from the row embedded alone, because
the frames at the edge of the padding and the convolutions see zeros). A
caller that embeds one utterance at a time passes ``wav_lens = 1``.

Two changes make the graph exportable and fast without changing what it
computes (:func:`check_parity` measures that):

- the STFT is computed as a strided 1-D convolution with the windowed DFT
  basis (:class:`ConvSTFT`): the torch exporter maps ``torch.stft`` to the
  ONNX ``STFT`` operator, which ONNX Runtime evaluates as a direct DFT for
  SpeechBrain's 400-point frames (measured 25 ms of the 43 ms of a 3 s
  utterance through the C=256 student, against about 3 ms as a convolution);
- during export only, SpeechBrain's ``length_to_mask`` in the ECAPA module is
  replaced by a broadcasting equivalent (:func:`_broadcast_length_to_mask`):
  the original sizes its mask with ``len(lengths)``, a Python integer that
  freezes the batch axis of the exported graph at the example's batch size.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch's default):
the TorchScript exporter rejects the complex-valued STFT outright.

:func:`quantize_int8` writes a dynamically quantised copy (int8 weights,
activations quantised on the fly by ONNX Runtime); :class:`OnnxEmbedder`
runs either file with the same ``encode_batch(wavs, wav_lens)`` call as a
SpeechBrain ``EncoderClassifier``.

Modules:

* :mod:`~speechbrain_imlkd.onnx_export.graph`: the exported torch module
  (:class:`WaveformEmbedder`, :class:`ConvSTFT`, :func:`min_input_samples`);
* :mod:`~speechbrain_imlkd.onnx_export.exporter`: :func:`export_onnx` and
  the graph's contract (input, output and metadata names);
* :mod:`~speechbrain_imlkd.onnx_export.quantize`: :func:`quantize_int8`;
* :mod:`~speechbrain_imlkd.onnx_export.runtime`: :class:`OnnxEmbedder`;
* :mod:`~speechbrain_imlkd.onnx_export.parity`: :func:`check_parity`,
  :func:`synthetic_waveforms`, :func:`format_parity`, :class:`ParityError`;
* :mod:`~speechbrain_imlkd.onnx_export.cli`: :func:`export_folder` and the
  command line (``python -m speechbrain_imlkd.onnx_export FOLDER``).

Every public name is importable from ``speechbrain_imlkd.onnx_export`` itself.

Example
-------
>>> import tempfile, pathlib
>>> from speechbrain_imlkd.export import export_model
>>> from speechbrain_imlkd.models import build_ecapa
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = torch.manual_seed(0)
>>> folder = export_model(tmp / "model", build_ecapa(16, lin_neurons=8))
>>> onnx_file = export_onnx(folder, tmp / "model.onnx")   # doctest: +SKIP
>>> embedder = OnnxEmbedder(onnx_file)                     # doctest: +SKIP
>>> embedder.encode_batch(torch.randn(2, 16000)).shape     # doctest: +SKIP
torch.Size([2, 1, 8])

Authors
 * speechbrain-imlkd contributors 2025
"""

# The example above (and callers patching torch.onnx.export) use it from here.
import torch  # noqa: F401

from speechbrain_imlkd.onnx_export.cli import ONNX_FILE, export_folder, main
from speechbrain_imlkd.onnx_export.exporter import (
    EMBEDDINGS_OUTPUT,
    EXPORT_CHECK_SECONDS,
    FORMAT_KEY,
    FORMAT_VALUE,
    LENS_INPUT,
    TRACE_LENS,
    TRACE_SECONDS,
    WAVS_INPUT,
    export_onnx,
)
from speechbrain_imlkd.onnx_export.graph import (
    DFT_KERNEL_NAME,
    ConvSTFT,
    WaveformEmbedder,
    min_input_samples,
)
from speechbrain_imlkd.onnx_export.parity import (
    PARITY_BATCH,
    PARITY_MIN_COSINE,
    PARITY_SECONDS,
    ParityError,
    _compare,  # noqa: F401  (the tests compare embeddings with it)
    check_parity,
    format_parity,
    synthetic_waveforms,
)
from speechbrain_imlkd.onnx_export.quantize import INT8_SUFFIX, INT8_WEIGHT_TYPE, quantize_int8
from speechbrain_imlkd.onnx_export.runtime import OnnxEmbedder

__all__ = [
    "DFT_KERNEL_NAME",
    "EMBEDDINGS_OUTPUT",
    "EXPORT_CHECK_SECONDS",
    "FORMAT_KEY",
    "FORMAT_VALUE",
    "INT8_SUFFIX",
    "INT8_WEIGHT_TYPE",
    "LENS_INPUT",
    "ONNX_FILE",
    "PARITY_BATCH",
    "PARITY_MIN_COSINE",
    "PARITY_SECONDS",
    "TRACE_LENS",
    "TRACE_SECONDS",
    "WAVS_INPUT",
    "ConvSTFT",
    "OnnxEmbedder",
    "ParityError",
    "WaveformEmbedder",
    "check_parity",
    "export_folder",
    "export_onnx",
    "format_parity",
    "main",
    "min_input_samples",
    "quantize_int8",
    "synthetic_waveforms",
]
