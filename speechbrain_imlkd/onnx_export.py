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

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Names of the graph's inputs and output.
WAVS_INPUT = "wavs"
LENS_INPUT = "wav_lens"
EMBEDDINGS_OUTPUT = "embeddings"
#: File name of the ONNX model written next to a hub-layout folder's files.
ONNX_FILE = "embedding_model.onnx"
#: The int8 copy of ``x.onnx`` is ``x.int8.onnx``.
INT8_SUFFIX = ".int8.onnx"
#: ``metadata_props`` key naming the graph's contract, and its value.
FORMAT_KEY = "imlkd_format"
FORMAT_VALUE = "waveform-to-embedding/1"
#: Cosine similarity below which an fp32 export is rejected.
PARITY_MIN_COSINE = 0.9999
#: Durations (s) of the synthetic audio checked at export time.
EXPORT_CHECK_SECONDS = (1.0, 3.0)
#: Durations (s) of the full parity check (the issue's 1 s to 20 s range).
PARITY_SECONDS = (1.0, 3.0, 10.0, 20.0)
#: Batch and relative lengths of the example input the graph is traced with:
#: two rows of unequal length, so that neither the batch axis nor the masking
#: can be traced as a constant.
TRACE_SECONDS = 1.0
TRACE_LENS = (1.0, 0.75)
#: Rows per synthetic parity batch (the last ones padded, see
#: :func:`synthetic_waveforms`).
PARITY_BATCH = 3
#: Weights of the dynamic quantisation. Unsigned weights run ONNX Runtime's
#: u8u8 ``ConvInteger`` kernel, measured twice as fast on x86 as the signed
#: ones for the C=256 student (BENCHMARKS.md, "Inference").
INT8_WEIGHT_TYPE = "QUInt8"
#: Name of the DFT basis buffer of :class:`ConvSTFT`; the int8 pass keeps the
#: convolution that uses it in fp32 (quantising the STFT would quantise the
#: features themselves).
DFT_KERNEL_NAME = "dft_kernel"
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
    speechbrain_imlkd.onnx_export.ParityError: cosine 0.9 < 0.9999
    """


class ConvSTFT(torch.nn.Module):
    """SpeechBrain's ``STFT`` as a strided convolution with the DFT basis.

    Computes the same ``batch x frames x freq x 2`` tensor as
    :class:`speechbrain.processing.features.STFT` for single-channel
    ``batch x time`` input, from the module's own settings (window, hop,
    ``n_fft``, centring and its padding mode, normalisation, one-sided).

    Arguments
    ---------
    stft : speechbrain.processing.features.STFT
        The module to reproduce.

    Example
    -------
    >>> from speechbrain.processing.features import STFT
    >>> stft = STFT(sample_rate=16000)
    >>> x = torch.randn(2, 8000)
    >>> bool(torch.allclose(ConvSTFT(stft)(x), stft(x), atol=1e-3))
    True
    """

    def __init__(self, stft):
        super().__init__()
        n_fft, window = int(stft.n_fft), stft.window.double()
        if window.numel() > n_fft:
            raise ValueError(
                f"STFT window of {window.numel()} samples is longer than "
                f"n_fft={n_fft}"
            )
        # torch.stft centres a shorter window inside the n_fft frame.
        left = (n_fft - window.numel()) // 2
        frame_window = torch.zeros(n_fft, dtype=torch.float64)
        frame_window[left : left + window.numel()] = window
        n_freq = n_fft // 2 + 1 if stft.onesided else n_fft
        k = torch.arange(n_freq, dtype=torch.float64)[:, None]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]
        angle = 2.0 * math.pi * k * n / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * frame_window
        if stft.normalized_stft:
            basis = basis / math.sqrt(n_fft)
        self.register_buffer(DFT_KERNEL_NAME, basis.float()[:, None, :])
        self.n_fft = n_fft
        self.n_freq = n_freq
        self.hop_length = int(stft.hop_length)
        self.center = bool(stft.center)
        self.pad_mode = stft.pad_mode

    def forward(self, x):
        """Returns the real and imaginary STFT.

        Arguments
        ---------
        x : torch.Tensor
            ``batch x time`` waveforms.

        Returns
        -------
        torch.Tensor
            ``batch x frames x freq x 2``.
        """
        if x.dim() != 2:
            raise ValueError(
                f"ConvSTFT takes batch x time waveforms, got shape {tuple(x.shape)}"
            )
        x = x.unsqueeze(1)
        if self.center:
            half = self.n_fft // 2
            x = F.pad(x, (half, half), mode=self.pad_mode)
        spec = F.conv1d(x, getattr(self, DFT_KERNEL_NAME), stride=self.hop_length)
        spec = spec.transpose(1, 2)
        return torch.stack([spec[..., : self.n_freq], spec[..., self.n_freq :]], -1)


def min_input_samples(compute_features, embedding_model):
    """The shortest waveform the pipeline accepts, in samples.

    ECAPA-TDNN pads its convolutions by reflection, which needs more frames
    than the widest padding; a shorter input fails in torch and in the graph.

    Arguments
    ---------
    compute_features : speechbrain.lobes.features.Fbank
        The feature front-end (its STFT hop and centring set the frames).
    embedding_model : torch.nn.Module
        The embedding model.

    Returns
    -------
    int
        Minimum number of samples (at least 1).

    Example
    -------
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> fbank, _ = features_pipeline()
    >>> min_input_samples(fbank, build_ecapa(16, lin_neurons=8))
    640
    """
    from speechbrain.nnet.CNN import Conv1d

    widest = 0
    for module in embedding_model.modules():
        if isinstance(module, Conv1d) and module.padding == "same":
            if getattr(module, "padding_mode", "reflect") == "reflect":
                widest = max(widest, module.dilation * (module.kernel_size - 1) // 2)
    stft = compute_features.compute_STFT
    # frames = time // hop + 1 with centring; reflection needs frames > widest.
    frames_needed = widest + 1
    if stft.center:
        return max(1, (frames_needed - 1) * stft.hop_length)
    return max(1, stft.win_length + (frames_needed - 1) * stft.hop_length)


class WaveformEmbedder(torch.nn.Module):
    """Waveform batch to embeddings: the module that is exported.

    Runs ``compute_features``, ``mean_var_norm`` and ``embedding_model`` as
    ``EncoderClassifier.encode_batch`` does, and returns ``batch x D``.

    Arguments
    ---------
    compute_features : speechbrain.lobes.features.Fbank
        Feature front-end.
    mean_var_norm : speechbrain.processing.features.InputNormalization
        Feature normalisation.
    embedding_model : torch.nn.Module
        Takes ``(feats, lengths)``, returns ``batch x 1 x D``.
    sample_rate : int
        Sample rate the model expects (recorded in the ONNX metadata).
    conv_stft : bool
        Replace the front-end's STFT by :class:`ConvSTFT` (a copy of the
        front-end is changed, never the caller's).

    Example
    -------
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> fbank, norm = features_pipeline()
    >>> model = WaveformEmbedder(fbank, norm, build_ecapa(16, lin_neurons=8)).eval()
    >>> model(torch.randn(3, 16000), torch.tensor([1.0, 0.8, 0.5])).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        compute_features,
        mean_var_norm,
        embedding_model,
        sample_rate=16000,
        conv_stft=True,
    ):
        super().__init__()
        if conv_stft:
            import copy

            if not hasattr(compute_features, "compute_STFT"):
                raise TypeError(
                    "conv_stft needs a SpeechBrain Fbank-like front-end with a "
                    f"compute_STFT module, got {type(compute_features).__name__}"
                )
            compute_features = copy.deepcopy(compute_features)
            compute_features.compute_STFT = ConvSTFT(compute_features.compute_STFT)
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model
        self.sample_rate = int(sample_rate)

    @classmethod
    def from_encoder(cls, encoder, conv_stft=True):
        """Builds the module from a loaded SpeechBrain ``EncoderClassifier``.

        Arguments
        ---------
        encoder : speechbrain.inference.speaker.EncoderClassifier
            E.g. from :func:`speechbrain_imlkd.embeddings.load_model`.
        conv_stft : bool
            See the class.

        Returns
        -------
        WaveformEmbedder
            On the CPU, in eval mode.
        """
        mods = encoder.mods
        for name in ("compute_features", "mean_var_norm", "embedding_model"):
            if name not in mods:
                raise ValueError(
                    f"the model has no '{name}' module; expected the hub layout "
                    "(compute_features, mean_var_norm, embedding_model)"
                )
        sample_rate = int(getattr(encoder.hparams, "sample_rate", 16000))
        model = cls(
            mods["compute_features"],
            mods["mean_var_norm"],
            mods["embedding_model"],
            sample_rate=sample_rate,
            conv_stft=conv_stft,
        )
        return model.cpu().eval()

    @property
    def min_samples(self):
        """Shortest accepted input, see :func:`min_input_samples`."""
        return min_input_samples(self.compute_features, self.embedding_model)

    def forward(self, wavs, wav_lens):
        """Embeds a zero-padded waveform batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``batch x time`` waveforms.
        wav_lens : torch.Tensor
            ``batch`` relative lengths (1.0 for the longest row).

        Returns
        -------
        torch.Tensor
            ``batch x D`` embeddings.
        """
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, wav_lens)
        return self.embedding_model(feats, wav_lens).squeeze(1)


def _broadcast_length_to_mask(length, max_len=None, dtype=None, device=None):
    """``speechbrain.dataio.dataio.length_to_mask`` without ``len(length)``.

    Same values: ``arange(max_len) < length`` row by row, cast to ``dtype``
    (the lengths' dtype by default).
    """
    from speechbrain.dataio.dataio import length_to_mask

    if max_len is None:  # not used by ECAPA; keep SpeechBrain's behaviour
        return length_to_mask(length, max_len, dtype, device)
    steps = torch.arange(max_len, device=length.device, dtype=length.dtype)
    mask = steps.unsqueeze(0) < length.unsqueeze(1)
    return mask.to(
        dtype=length.dtype if dtype is None else dtype,
        device=length.device if device is None else device,
    )


@contextlib.contextmanager
def _export_friendly_masks():
    """Swaps ECAPA's ``length_to_mask`` for the broadcasting one (export only)."""
    import speechbrain.lobes.models.ECAPA_TDNN as ecapa_module

    original = ecapa_module.length_to_mask
    ecapa_module.length_to_mask = _broadcast_length_to_mask
    try:
        yield
    finally:
        ecapa_module.length_to_mask = original


def _as_embedder(model, savedir=None):
    """(reference callable, WaveformEmbedder) from a folder or loaded model."""
    if isinstance(model, WaveformEmbedder):
        return model, model
    if isinstance(model, (str, Path)):
        from speechbrain_imlkd.embeddings import load_model

        model = load_model(model, savedir=savedir)
    if hasattr(model, "mods") and hasattr(model, "encode_batch"):
        return model, WaveformEmbedder.from_encoder(model)
    raise TypeError(
        "expected a hub-layout folder, an EncoderClassifier or a "
        f"WaveformEmbedder, got {type(model).__name__}"
    )


def _describe(model):
    """A short name for messages: the folder, or the model's class."""
    return str(model) if isinstance(model, (str, Path)) else type(model).__name__


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
    example = (
        torch.zeros(len(TRACE_LENS), trace_samples).normal_(generator=torch.Generator().manual_seed(0)),
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


def _dft_conv_nodes(proto):
    """Names of the Conv nodes that apply the STFT basis."""
    names = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and any(DFT_KERNEL_NAME in i for i in node.input[1:2]):
            names.append(node.name)
    return names


def quantize_int8(onnx_path, output=None):
    """Writes a dynamically quantised (int8) copy of an exported graph.

    Weights of every convolution and matrix product except the STFT are
    stored as 8-bit integers; activations are quantised at run time by ONNX
    Runtime (``onnxruntime.quantization.quantize_dynamic``). No calibration
    data is needed.

    Arguments
    ---------
    onnx_path : str or pathlib.Path
        An fp32 graph written by :func:`export_onnx`.
    output : str or pathlib.Path or None
        Where to write (default ``<stem>.int8.onnx`` next to the input);
        written under a temporary name, then renamed.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    FileNotFoundError
        If ``onnx_path`` does not exist.
    ValueError
        If it is not an fp32 graph of :func:`export_onnx`.

    Example
    -------
    >>> quantize_int8("/nonexistent/model.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: ONNX model not found: /nonexistent/model.onnx
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    proto = _load_proto(onnx_path)
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(FORMAT_KEY) != FORMAT_VALUE:
        raise ValueError(
            f"{onnx_path}: not a graph written by export_onnx (no "
            f"{FORMAT_KEY}={FORMAT_VALUE} metadata)"
        )
    if meta.get("quantization", "none") != "none":
        raise ValueError(f"{onnx_path}: already quantised ({meta['quantization']})")
    if output is None:
        output = onnx_path.with_name(onnx_path.name[: -len(".onnx")] + INT8_SUFFIX)
    output = Path(output)
    tmp = _atomic_target(output)
    # quantize_dynamic logs advice about pre-processing on the root logger at
    # WARNING; the graph is already optimised by the exporter.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            proto,
            tmp,
            weight_type=getattr(QuantType, INT8_WEIGHT_TYPE),
            nodes_to_exclude=_dft_conv_nodes(proto),
        )
        quantised = onnx.load_model(str(tmp))
        meta["quantization"] = f"dynamic-int8 ({INT8_WEIGHT_TYPE} weights, per tensor)"
        _set_metadata(quantised, meta)
        onnx.save_model(quantised, tmp)
        os.replace(tmp, output)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return output


def _load_proto(path):
    """Loads an ONNX model, naming the file when it is not one."""
    import onnx

    try:
        return onnx.load_model(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e


class OnnxEmbedder:
    """Runs an exported waveform-to-embedding graph with ONNX Runtime.

    Has the call of a SpeechBrain ``EncoderClassifier``:
    ``encode_batch(wavs, wav_lens=None)`` returns ``batch x 1 x D``.

    Arguments
    ---------
    path : str or pathlib.Path
        The ``.onnx`` file.
    threads : int or None
        Intra-op threads (None: ``torch.get_num_threads()``, so that the
        process's thread setting applies to both runtimes).
    sample_rate : int or None
        Needed only for a graph without the ``sample_rate`` metadata that
        :func:`export_onnx` writes.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not an ONNX model, or its inputs are not a waveform batch
        (``batch x time`` float) and optional relative lengths (``batch``).

    Example
    -------
    >>> OnnxEmbedder("/nonexistent/model.onnx")
    Traceback (most recent call last):
    ...
    FileNotFoundError: ONNX model not found: /nonexistent/model.onnx
    """

    def __init__(self, path, threads=None, sample_rate=None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise ValueError(
                f"{self.path}: not a loadable ONNX model ({type(e).__name__}: {e})"
            ) from e
        inputs = self.session.get_inputs()
        self._check_inputs(inputs)
        self.wavs_name = inputs[0].name
        self.lens_name = inputs[1].name if len(inputs) == 2 else None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        rate = meta.get("sample_rate", sample_rate)
        if rate is None:
            raise ValueError(
                f"{self.path}: the graph does not record its sample rate "
                "(not written by speechbrain_imlkd.onnx_export); pass sample_rate"
            )
        self.sample_rate = int(rate)
        self.min_samples = int(meta.get("min_samples", 1))

    def _check_inputs(self, inputs):
        """Rejects graphs whose inputs are not (waveforms[, lengths])."""

        def describe(arg):
            return f"input '{arg.name}' {arg.type} of shape {list(arg.shape)}"

        if not 1 <= len(inputs) <= 2:
            raise ValueError(
                f"{self.path}: expected a waveform input (and optional relative "
                f"lengths), got {len(inputs)} inputs: "
                + "; ".join(describe(a) for a in inputs)
            )
        wavs = inputs[0]
        if len(wavs.shape) != 2 or wavs.type != "tensor(float)":
            raise ValueError(
                f"{self.path}: {describe(wavs)} is not a waveform batch "
                "(expected float batch x time; a graph taking features, "
                "batch x frames x n_mels, needs its own front-end)"
            )
        if len(inputs) == 2:
            lens = inputs[1]
            if len(lens.shape) != 1 or lens.type != "tensor(float)":
                raise ValueError(
                    f"{self.path}: {describe(lens)} is not a vector of relative "
                    "lengths (expected float of shape [batch])"
                )

    def encode_batch(self, wavs, wav_lens=None):
        """Embeds a zero-padded waveform batch.

        Arguments
        ---------
        wavs : torch.Tensor or numpy.ndarray
            ``batch x time`` (or one ``time`` waveform).
        wav_lens : torch.Tensor or numpy.ndarray or None
            ``batch`` relative lengths; None means every row is full length.

        Returns
        -------
        torch.Tensor
            ``batch x 1 x D`` embeddings.
        """
        wavs = torch.as_tensor(wavs, dtype=torch.float32)
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be batch x time, got shape {tuple(wavs.shape)}")
        if wavs.shape[1] < self.min_samples:
            raise ValueError(
                f"waveforms of {wavs.shape[1]} samples are shorter than the "
                f"{self.min_samples} samples the model needs"
            )
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        feed = {self.wavs_name: wavs.detach().cpu().numpy()}
        if self.lens_name is not None:
            lens = torch.as_tensor(wav_lens, dtype=torch.float32).reshape(-1)
            feed[self.lens_name] = lens.detach().cpu().numpy()
        elif not bool(torch.all(torch.as_tensor(wav_lens) == 1)):
            raise ValueError(
                f"{self.path} takes no lengths input: pad-free batches only "
                "(every relative length must be 1)"
            )
        (embeddings,) = self.session.run(None, feed)
        return torch.from_numpy(embeddings).reshape(wavs.shape[0], 1, -1)

    __call__ = encode_batch


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


def export_folder(model_dir, output=None, int8=False, parity_seconds=PARITY_SECONDS,
                  clips=(), report=print):
    """Exports a hub-layout folder to ONNX (and int8), and reports parity.

    The command-line entries (``imlkd-export --onnx``, ``python -m
    speechbrain_imlkd.onnx_export``) call this.

    Arguments
    ---------
    model_dir : str or pathlib.Path
        The hub-layout folder.
    output : str or pathlib.Path or None
        The fp32 ``.onnx`` file (default ``<model_dir>/embedding_model.onnx``).
    int8 : bool
        Also write the dynamically quantised copy (``<stem>.int8.onnx``).
    parity_seconds : sequence of float
        Synthetic durations of the parity report.
    clips : sequence of path
        Real clips for the parity report.
    report : callable
        Receives the report lines.

    Returns
    -------
    dict
        ``onnx`` (path), ``int8`` (path or None), ``parity`` and
        ``parity_int8`` (lists of :func:`check_parity` rows).

    Example
    -------
    >>> export_folder("/nonexistent/model", report=lambda s: None)
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    from speechbrain_imlkd.embeddings import load_model, model_fingerprint

    model_dir = Path(model_dir)
    encoder = load_model(model_dir)
    output = Path(output) if output is not None else model_dir / ONNX_FILE
    onnx_path = export_onnx(
        encoder, output, metadata={"source_fingerprint": model_fingerprint(model_dir)}
    )
    parity = check_parity(encoder, onnx_path, seconds=parity_seconds, clips=clips)
    report(f"Wrote {onnx_path} (fp32); parity with the torch model:")
    report(format_parity(parity))
    result = dict(onnx=onnx_path, int8=None, parity=parity, parity_int8=None)
    if int8:
        int8_path = quantize_int8(onnx_path)
        parity_int8 = check_parity(encoder, int8_path, seconds=parity_seconds, clips=clips)
        report(f"Wrote {int8_path} (dynamic int8); agreement with the fp32 torch model:")
        report(format_parity(parity_int8))
        result.update(int8=int8_path, parity_int8=parity_int8)
    return result


def main(argv=None):
    """Command line: ``python -m speechbrain_imlkd.onnx_export FOLDER``.

    Arguments
    ---------
    argv : list of str or None
        ``FOLDER [--output FILE.onnx] [--int8] [--clips FILE ...]``.

    Returns
    -------
    None

    Example
    -------
    >>> main(["/nonexistent/model"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_imlkd.onnx_export",
        description="Export a hub-layout model folder as one waveform-to-embedding ONNX graph.",
    )
    parser.add_argument("folder", help="hub-layout model folder (teacher or student)")
    parser.add_argument("--output", default=None, help=f"default: <folder>/{ONNX_FILE}")
    parser.add_argument("--int8", action="store_true", help="also write a dynamic int8 copy")
    parser.add_argument("--clips", nargs="*", default=[], help="real clips for the parity report")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    export_folder(args.folder, args.output, int8=args.int8, clips=args.clips)


if __name__ == "__main__":
    main()
