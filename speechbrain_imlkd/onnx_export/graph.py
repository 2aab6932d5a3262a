"""The torch module that is exported: waveform batch to embeddings.

:class:`WaveformEmbedder` chains a hub-layout model's ``compute_features``,
``mean_var_norm`` and ``embedding_model`` as ``encode_batch`` does;
:class:`ConvSTFT` is SpeechBrain's STFT as a strided convolution (fast in
ONNX Runtime); :func:`min_input_samples` is the shortest input the model
accepts; ``_export_friendly_masks`` swaps ECAPA's ``length_to_mask`` for a
broadcasting one while exporting. See :mod:`speechbrain_imlkd.onnx_export`.

Authors
 * speechbrain-imlkd contributors 2025
"""

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

#: Name of the DFT basis buffer of :class:`ConvSTFT`; the int8 pass keeps the
#: convolution that uses it in fp32 (quantising the STFT would quantise the
#: features themselves).
DFT_KERNEL_NAME = "dft_kernel"


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
