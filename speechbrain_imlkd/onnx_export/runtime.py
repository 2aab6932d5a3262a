"""Running an exported waveform-to-embedding graph with ONNX Runtime.

:class:`OnnxEmbedder` has the ``encode_batch(wavs, wav_lens)`` call of a
SpeechBrain ``EncoderClassifier`` and runs the fp32 or the int8 file.

Authors
 * speechbrain-imlkd contributors 2025
"""

from pathlib import Path

import torch

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
