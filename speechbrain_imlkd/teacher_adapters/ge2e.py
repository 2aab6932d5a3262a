"""resemblyzer's GE2E speaker encoder and its pretrained weights.

:class:`GE2EEncoder` is the 3-layer LSTM of 256 units and 256-d linear
projection of resemblyzer's ``VoiceEncoder``, with the same parameter names,
so that the ``pretrained.pt`` shipped inside the PyPI wheel
``resemblyzer==0.1.4`` loads strictly (:func:`load_ge2e_encoder`). The
package is located, never imported (:func:`resemblyzer_weights_path`): its
``__init__`` pulls in librosa and webrtcvad.

Example
-------
>>> enc = GE2EEncoder()  # random weights
>>> emb = enc(torch.rand(2, 30, N_MELS), n_frames=[30, 12])
>>> emb.shape, RESEMBLYZER_INSTALL
(torch.Size([2, 256]), 'pip install --no-deps resemblyzer==0.1.4')

Authors
 * speechbrain-imlkd contributors 2025
"""

import contextlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from speechbrain_imlkd.teacher_adapters.front_end import N_MELS

RESEMBLYZER_PACKAGE = "resemblyzer"
RESEMBLYZER_VERSION = "0.1.4"
RESEMBLYZER_WEIGHTS_FILE = "pretrained.pt"
RESEMBLYZER_INSTALL = f"pip install --no-deps {RESEMBLYZER_PACKAGE}=={RESEMBLYZER_VERSION}"
#: Key of the model weights inside ``pretrained.pt`` (which also holds the
#: optimiser state and the step).
RESEMBLYZER_STATE_KEY = "model_state"
#: Parameters of the GE2E loss saved with the model; inference has no use
#: for them.
GE2E_LOSS_KEYS = ("similarity_weight", "similarity_bias")
HIDDEN_SIZE = 256
NUM_LAYERS = 3
EMBEDDING_DIM = 256


@contextlib.contextmanager
def _rnn_backward_allowed(rnn, inputs):
    """Lets gradients pass through an RNN kept in eval mode.

    cuDNN refuses the RNN backward pass unless the module is in training
    mode. With no dropout an LSTM computes exactly the same in both modes,
    so the flag is raised for the call and restored afterwards (on CPU too,
    so that this path is the one the tests exercise).
    """
    needed = torch.is_grad_enabled() and inputs.requires_grad and not rnn.training
    if needed:
        rnn.training = True
    try:
        yield
    finally:
        if needed:
            rnn.training = False


class GE2EEncoder(torch.nn.Module):
    """resemblyzer's speaker encoder: LSTM, linear, ReLU, L2 normalisation.

    Same parameter names as resemblyzer's ``VoiceEncoder`` (``lstm.*``,
    ``linear.*``), so its ``pretrained.pt`` loads strictly once the GE2E
    loss parameters are dropped.

    Arguments
    ---------
    n_mels : int
        Input features per frame.
    hidden_size : int
        LSTM units per layer.
    num_layers : int
        LSTM layers.
    embedding_dim : int
        Size of the embedding.

    Example
    -------
    >>> enc = GE2EEncoder()
    >>> feats = torch.rand(3, 20, 40)
    >>> emb = enc(feats, n_frames=[20, 5, 12])
    >>> emb.shape, torch.allclose(emb.norm(dim=1), torch.ones(3))
    (torch.Size([3, 256]), True)
    >>> torch.allclose(emb[1], enc(feats[1:2, :5])[0], atol=1e-6)
    True
    """

    def __init__(
        self,
        n_mels=N_MELS,
        hidden_size=HIDDEN_SIZE,
        num_layers=NUM_LAYERS,
        embedding_dim=EMBEDDING_DIM,
    ):
        super().__init__()
        # dropout stays 0: _rnn_backward_allowed relies on it.
        self.lstm = torch.nn.LSTM(n_mels, hidden_size, num_layers, batch_first=True)
        self.linear = torch.nn.Linear(hidden_size, embedding_dim)

    def forward(self, feats, n_frames=None):
        """Embeds ``B x T x F`` features, each sample over its valid frames.

        Arguments
        ---------
        feats : torch.Tensor
            ``B x T x F`` power mel spectrograms.
        n_frames : sequence of int or None
            Valid frames per sample (the LSTM's last state is taken there);
            None means all ``T``.

        Returns
        -------
        torch.Tensor
            ``B x embedding_dim``, unit L2 norm (non-negative entries).
        """
        inputs = feats
        if n_frames is not None and any(n != feats.shape[1] for n in n_frames):
            inputs = torch.nn.utils.rnn.pack_padded_sequence(
                feats,
                torch.as_tensor(list(n_frames), dtype=torch.long),
                batch_first=True,
                enforce_sorted=False,
            )
        with _rnn_backward_allowed(self.lstm, feats):
            _, (hidden, _) = self.lstm(inputs)
        emb = torch.relu(self.linear(hidden[-1]))
        return F.normalize(emb, dim=1)


def resemblyzer_weights_path():
    """Path of ``pretrained.pt`` in the installed resemblyzer package.

    The package is located, never imported (its ``__init__`` imports
    librosa and webrtcvad).

    Returns
    -------
    pathlib.Path
        The weights file.

    Raises
    ------
    ModuleNotFoundError
        resemblyzer is not installed (the message says how to install it).
    FileNotFoundError
        It is installed but holds no ``pretrained.pt``.

    Example
    -------
    >>> resemblyzer_weights_path().name  # doctest: +SKIP
    'pretrained.pt'
    """
    spec = importlib.util.find_spec(RESEMBLYZER_PACKAGE)
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    if spec is None or not locations:
        raise ModuleNotFoundError(
            f"the '{RESEMBLYZER_PACKAGE}' teacher needs the resemblyzer package "
            f"for its pretrained weights: {RESEMBLYZER_INSTALL}",
            name=RESEMBLYZER_PACKAGE,
        )
    for location in locations:
        path = Path(location) / RESEMBLYZER_WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"resemblyzer is installed in {locations} but holds no "
        f"{RESEMBLYZER_WEIGHTS_FILE}; reinstall it: {RESEMBLYZER_INSTALL}"
    )


def load_ge2e_encoder(path=None):
    """Builds a :class:`GE2EEncoder` with resemblyzer's pretrained weights.

    Arguments
    ---------
    path : str or pathlib.Path or None
        A ``pretrained.pt``; the installed package's when None.

    Returns
    -------
    GE2EEncoder
        On the CPU, weights loaded strictly.

    Raises
    ------
    ValueError
        The file is unreadable or does not fit the encoder (names the file).

    Example
    -------
    >>> load_ge2e_encoder().linear.out_features  # doctest: +SKIP
    256
    """
    path = Path(path) if path is not None else resemblyzer_weights_path()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read the resemblyzer weights ({e})") from e
    state = None
    if isinstance(checkpoint, Mapping):
        state = checkpoint.get(RESEMBLYZER_STATE_KEY)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: no '{RESEMBLYZER_STATE_KEY}' state dict inside")
    state = {k: v for k, v in state.items() if k not in GE2E_LOSS_KEYS}
    encoder = GE2EEncoder()
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the GE2E encoder ({e})") from e
    return encoder

