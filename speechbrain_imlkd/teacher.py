"""The frozen pretrained teacher of IML-KD.

:func:`load_teacher` loads an ECAPA-TDNN speaker model in the SpeechBrain hub
layout (``hyperparams.yaml``, ``embedding_model.ckpt``,
``mean_var_norm_emb.ckpt`` and, optionally, ``classifier.ckpt`` and
``label_encoder.txt``) from the hub (``speechbrain/spkrec-ecapa-voxceleb``)
or from a local folder, with SpeechBrain's own ``Pretrainer``. A local
folder loads with no network access, even when its ``hyperparams.yaml``
still names the hub in ``pretrained_path``.

The returned :class:`Teacher` is deliberately *not* a ``torch.nn.Module``:
it must stay out of ``Brain.modules``, so that ``Brain.fit`` never switches
it to training mode, the optimiser and checkpointer never see its weights,
and DDP never wraps it. Its weights are frozen (``requires_grad=False``,
eval mode, re-asserted at every call), yet gradients flow to its *input
features*, which is what Integrated Gradients needs.

Teacher posteriors over the student's training speakers come either from
the teacher's own classifier (columns picked through its label encoder;
the hub teacher's 7,205 classes include every VoxCeleb1 dev speaker) or,
when there is no classifier or a speaker is unknown to it, from cosine
similarities to class centroids of the teacher's embeddings
(:func:`compute_centroids`).

Example
-------
>>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
>>> fbank, norm = features_pipeline(n_mels=40)
>>> teacher = Teacher(fbank, norm, build_ecapa(16, lin_neurons=8, n_mels=40))
>>> feats = teacher.features(torch.rand(2, 8000), torch.ones(2))
>>> _ = feats.requires_grad_()
>>> emb = teacher.embed(feats)
>>> emb.sum().backward()
>>> emb.shape, bool(feats.grad.abs().sum() > 0)
(torch.Size([2, 8]), True)
>>> any(p.grad is not None for p in teacher.embedding_model.parameters())
False

Authors
 * speechbrain-imlkd contributors 2025
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.utils.fetching import FetchConfig, LocalStrategy, fetch
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
# Loadables a teacher can do without: it then falls back to centroid posteriors.
OPTIONAL_LOADABLES = ("classifier", "label_encoder")
REQUIRED_MODULES = ("compute_features", "mean_var_norm", "embedding_model")
LABEL_MODES = ("label", "centroid", "auto")
# SpeechBrain's Classifier returns cosines; the AAM softmax it was trained
# with multiplies them by this scale before the softmax.
DEFAULT_LOGIT_SCALE = 30.0
# Length of the dummy waveform used to probe the feature dimension.
PROBE_SECONDS = 0.1
_PRETRAINED_PATH_LINE = re.compile(r"^pretrained_path\s*:", re.MULTILINE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Teacher:
    """A frozen speaker-embedding teacher whose inputs can receive gradients.

    Arguments
    ---------
    compute_features : torch.nn.Module
        Waveform to features (SpeechBrain ``Fbank``), as the teacher was
        trained.
    mean_var_norm : torch.nn.Module
        Feature normalisation (sentence mean normalisation for the hub
        teacher), called as ``mean_var_norm(feats, wav_lens)``.
    embedding_model : torch.nn.Module
        Features ``B x T x F`` (and relative lengths) to ``B x 1 x D``.
    classifier : torch.nn.Module or None
        SpeechBrain cosine ``Classifier``: ``B x 1 x D`` to ``B x 1 x N``.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder or None
        Speaker labels of the classifier's outputs.
    sample_rate : int or None
        Audio sample rate; read from ``compute_features`` when None.
    device : str or torch.device
        Where the modules run.
    interface : speechbrain.inference.classifiers.EncoderClassifier or None
        The SpeechBrain inference object the modules came from, if any.

    Example
    -------
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> fbank, norm = features_pipeline(n_mels=40)
    >>> t = Teacher(fbank, norm, build_ecapa(16, lin_neurons=8, n_mels=40))
    >>> t.sample_rate, t.n_mels, t.embedding_dim
    (16000, 40, 8)
    """

    def __init__(
        self,
        compute_features,
        mean_var_norm,
        embedding_model,
        classifier=None,
        label_encoder=None,
        sample_rate=None,
        device="cpu",
        interface=None,
    ):
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model
        self.classifier = classifier
        self.label_encoder = label_encoder
        self.interface = interface
        self.device = torch.device(device)
        if sample_rate is None:
            stft = getattr(compute_features, "compute_STFT", None)
            sample_rate = getattr(stft, "sample_rate", None)
        if sample_rate is None:
            raise ValueError(
                "cannot tell the teacher's sample rate from its "
                f"{type(compute_features).__name__}: pass sample_rate="
            )
        self.sample_rate = int(sample_rate)
        self.mode = None
        self.training_speakers = None
        self.logit_scale = DEFAULT_LOGIT_SCALE
        self._columns = None
        self._centroids = None
        self.to(self.device)
        self.ensure_frozen()
        self.n_mels, self.embedding_dim = self._probe_dims()

    # ------------------------------------------------------------------ #
    # Freezing
    # ------------------------------------------------------------------ #
    def _modules(self):
        """The teacher's torch modules (classifier included when present)."""
        mods = [self.compute_features, self.mean_var_norm, self.embedding_model]
        if self.classifier is not None:
            mods.append(self.classifier)
        return mods

    def parameters(self):
        """Iterates over every weight of the teacher.

        Returns
        -------
        iterator of torch.nn.Parameter
            Parameters of all modules (all with ``requires_grad=False``).

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> any(p.requires_grad for p in t.parameters())
        False
        """
        for module in self._modules():
            yield from module.parameters()

    def ensure_frozen(self):
        """Re-asserts eval mode and ``requires_grad=False`` on every module.

        Called at the start of every computation, so that a stray
        ``.train()`` (e.g. a ``Brain`` that reached the module some other
        way) can neither update BatchNorm running statistics nor enable
        dropout. Cheap: it only flips flags.

        Returns
        -------
        Teacher
            ``self``.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> _ = t.embedding_model.train()
        >>> t.ensure_frozen().embedding_model.training
        False
        """
        for module in self._modules():
            if module.training:
                module.eval()
        for param in self.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
        return self

    def to(self, device):
        """Moves the teacher (and its speaker tables) to ``device``.

        Arguments
        ---------
        device : str or torch.device
            Target device.

        Returns
        -------
        Teacher
            ``self``.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> t.to("cpu").device
        device(type='cpu')
        """
        self.device = torch.device(device)
        for module in self._modules():
            module.to(self.device)
        if self.interface is not None:
            # The inference object shares these modules; keep it consistent.
            self.interface.device = str(self.device)
        if self._columns is not None:
            self._columns = self._columns.to(self.device)
        if self._centroids is not None:
            self._centroids = self._centroids.to(self.device)
        return self

    def _probe_dims(self):
        """Feature and embedding sizes, from one tiny forward pass."""
        n_samples = max(1, int(PROBE_SECONDS * self.sample_rate))
        wav = torch.zeros(1, n_samples, device=self.device)
        with torch.no_grad():
            feats = self.features(wav)
            emb = self.embed(feats)
        return int(feats.shape[-1]), int(emb.shape[-1])

    # ------------------------------------------------------------------ #
    # Forward computations
    # ------------------------------------------------------------------ #
    def features(self, wavs, wav_lens=None):
        """Computes the teacher's normalised input features (no gradient).

        Arguments
        ---------
        wavs : torch.Tensor
            ``B x samples`` waveforms at :attr:`sample_rate`.
        wav_lens : torch.Tensor or None
            Relative lengths in (0, 1]; None means no padding.

        Returns
        -------
        torch.Tensor
            ``B x T x F`` features (Fbank, then sentence mean
            normalisation for the hub teacher), detached.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> t.features(torch.rand(3, 16000)).shape
        torch.Size([3, 101, 40])
        """
        self.ensure_frozen()
        wavs = wavs.to(self.device).float()
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=self.device)
        with torch.no_grad():
            feats = self.compute_features(wavs)
            feats = self.mean_var_norm(feats, wav_lens.to(self.device))
        return feats

    def embed(self, feats, lengths=None):
        """Computes embeddings; gradients flow to ``feats``, not to weights.

        Arguments
        ---------
        feats : torch.Tensor
            ``B x T x F`` features, e.g. from :meth:`features`, possibly
            with ``requires_grad=True``.
        lengths : torch.Tensor or None
            Relative lengths of the feature sequences.

        Returns
        -------
        torch.Tensor
            ``B x D`` embeddings.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> t.embed(torch.rand(2, 30, 40)).shape
        torch.Size([2, 8])
        """
        self.ensure_frozen()
        if lengths is not None:
            lengths = lengths.to(self.device)
        emb = self.embedding_model(feats.to(self.device), lengths)
        return emb.reshape(emb.shape[0], -1)

    def embed_wavs(self, wavs, wav_lens=None):
        """Embeds waveforms: :meth:`features` then :meth:`embed`.

        Arguments
        ---------
        wavs : torch.Tensor
            ``B x samples`` waveforms.
        wav_lens : torch.Tensor or None
            Relative lengths.

        Returns
        -------
        torch.Tensor
            ``B x D`` embeddings.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> t.embed_wavs(torch.rand(2, 4000)).shape
        torch.Size([2, 8])
        """
        return self.embed(self.features(wavs, wav_lens), wav_lens)

    # ------------------------------------------------------------------ #
    # Speaker posteriors
    # ------------------------------------------------------------------ #
    def set_training_speakers(
        self,
        spk_ids,
        mode="label",
        centroid_scale=DEFAULT_LOGIT_SCALE,
        centroid_data=None,
        logit_scale=DEFAULT_LOGIT_SCALE,
    ):
        """Prepares :meth:`logits` over the student's training speakers.

        Arguments
        ---------
        spk_ids : sequence of str or CategoricalEncoder
            The training speakers, in the order of the student's classes
            (an encoder gives ``ind2lab`` order).
        mode : str
            ``"label"``: columns of the teacher classifier, found through
            its label encoder (every speaker must be known to it).
            ``"centroid"``: cosine to class centroids of teacher embeddings.
            ``"auto"``: ``"label"`` when possible, else ``"centroid"``.
        centroid_scale : float
            Scale applied to centroid cosines.
        centroid_data : Mapping or dataset or dataloader or None
            Centroids ``{spk_id: D tensor}`` (from
            :func:`compute_centroids`), or data to compute them from;
            required by the centroid mode.
        logit_scale : float
            Scale applied to classifier cosines in the label mode (30, like
            the AAM softmax the classifier was trained with).

        Returns
        -------
        str
            The mode in use (``"label"`` or ``"centroid"``).

        Raises
        ------
        ValueError
            Unknown mode, bad scale, duplicate speakers, a speaker unknown
            to the label encoder (label mode), no classifier or label
            encoder (label mode), or missing centroid data or centroids.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> cents = {"a": torch.rand(8), "b": torch.rand(8)}
        >>> t.set_training_speakers(["b", "a"], mode="auto", centroid_data=cents)
        'centroid'
        >>> t.logits(torch.rand(4, 8)).shape
        torch.Size([4, 2])
        """
        if mode not in LABEL_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {LABEL_MODES}")
        for name, value in (
            ("centroid_scale", centroid_scale),
            ("logit_scale", logit_scale),
        ):
            if not value > 0:
                raise ValueError(f"{name}={value!r} must be positive")
        if isinstance(spk_ids, CategoricalEncoder):
            spk_ids = [spk_ids.ind2lab[i] for i in range(len(spk_ids))]
        spk_ids = [str(s) for s in spk_ids]
        if not spk_ids:
            raise ValueError("spk_ids is empty: no training speakers given")
        if len(set(spk_ids)) != len(spk_ids):
            dupes = sorted({s for s in spk_ids if spk_ids.count(s) > 1})
            raise ValueError(f"duplicate training speakers: {dupes[:5]}")

        if mode == "auto":
            mode = "label" if not self._label_problem(spk_ids) else "centroid"
            logger.info("Teacher posteriors: %s mode", mode)
        if mode == "label":
            problem = self._label_problem(spk_ids)
            if problem:
                raise ValueError(problem)
            columns = [self.label_encoder.lab2ind[s] for s in spk_ids]
            self._columns = torch.tensor(columns, device=self.device)
            self._centroids = None
            self.logit_scale = float(logit_scale)
        else:
            if centroid_data is None:
                raise ValueError(
                    "centroid mode needs centroid_data (centroids from "
                    "compute_centroids, or a dataset of training speakers)"
                )
            if not isinstance(centroid_data, Mapping):
                centroid_data = compute_centroids(self, centroid_data)
            missing = [s for s in spk_ids if s not in centroid_data]
            if missing:
                raise ValueError(
                    f"no centroid for {len(missing)} training speaker(s) "
                    f"(e.g. {missing[:3]}); centroid_data covers "
                    f"{len(centroid_data)} speakers"
                )
            cents = torch.stack(
                [torch.as_tensor(centroid_data[s]).flatten().float() for s in spk_ids]
            )
            if cents.shape[1] != self.embedding_dim:
                raise ValueError(
                    f"centroids have dimension {cents.shape[1]}, the teacher "
                    f"embeddings {self.embedding_dim}"
                )
            self._centroids = F.normalize(cents, dim=1).to(self.device)
            self._columns = None
            self.logit_scale = float(centroid_scale)
        self.mode = mode
        self.training_speakers = spk_ids
        return mode

    def _label_problem(self, spk_ids):
        """Why the label mode is impossible for ``spk_ids`` (None if it is not)."""
        if self.classifier is None or self.label_encoder is None:
            missing = "classifier" if self.classifier is None else "label encoder"
            return (
                f"label mode needs the teacher's {missing}; use "
                "mode='centroid' (or 'auto') with centroid_data"
            )
        unknown = [s for s in spk_ids if s not in self.label_encoder.lab2ind]
        if unknown:
            return (
                f"{len(unknown)} training speaker(s) unknown to the teacher's "
                f"label encoder (e.g. {unknown[:3]}); use mode='centroid' "
                "(or 'auto') with centroid_data"
            )
        return None

    def logits(self, embeddings):
        """Teacher logits over the training speakers: scale times cosine.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``B x D`` teacher embeddings (e.g. from :meth:`embed`).

        Returns
        -------
        torch.Tensor
            ``B x N_train`` logits, columns in the order given to
            :meth:`set_training_speakers`.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> t.logits(torch.rand(1, 8))
        Traceback (most recent call last):
        ...
        RuntimeError: call set_training_speakers() before logits()
        """
        if self.mode is None:
            raise RuntimeError("call set_training_speakers() before logits()")
        self.ensure_frozen()
        embeddings = embeddings.to(self.device)
        embeddings = embeddings.reshape(embeddings.shape[0], -1)
        if self.mode == "label":
            cos = self.classifier(embeddings.unsqueeze(1)).squeeze(1)
            cos = cos.index_select(1, self._columns)
        else:
            cos = F.normalize(embeddings, dim=1) @ self._centroids.t()
        return self.logit_scale * cos

    def posteriors(self, embeddings, temperature=1.0):
        """Teacher posteriors over the training speakers.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``B x D`` teacher embeddings.
        temperature : float
            Softmax temperature (> 0); larger is smoother.

        Returns
        -------
        torch.Tensor
            ``B x N_train`` probabilities (rows sum to one).

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> _ = t.set_training_speakers(
        ...     ["a", "b", "c"], mode="centroid",
        ...     centroid_data={k: torch.rand(8) for k in "abc"})
        >>> p = t.posteriors(torch.rand(2, 8), temperature=2.0)
        >>> torch.allclose(p.sum(dim=1), torch.ones(2))
        True
        """
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be positive")
        return torch.softmax(self.logits(embeddings) / temperature, dim=-1)


def compute_centroids(
    teacher,
    data,
    batch_size=8,
    sig_key="sig",
    spk_key="spk_id",
    num_workers=0,
):
    """Class centroids of L2-normalised teacher embeddings.

    Arguments
    ---------
    teacher : Teacher
        The frozen teacher.
    data : DynamicItemDataset or iterable of batches
        A dataset providing ``sig_key`` (waveform) and ``spk_key`` (speaker
        label string), or a dataloader yielding ``PaddedBatch`` objects with
        those keys.
    batch_size : int
        Batch size when ``data`` is a dataset.
    sig_key : str
        Key of the waveform.
    spk_key : str
        Key of the speaker label.
    num_workers : int
        Dataloader workers when ``data`` is a dataset.

    Returns
    -------
    dict
        ``{spk_id: D tensor}``, each of unit L2 norm, on the CPU.

    Raises
    ------
    ValueError
        If the data yields nothing.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_imlkd.data.dataset import train_dev_datasets, write_toy_csvs
    >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
    >>> d = tempfile.mkdtemp()
    >>> tr, dv, _ = train_dev_datasets(*write_toy_csvs(d), d + "/lab.txt")
    >>> t = Teacher(*features_pipeline(80), build_ecapa(16, 8))
    >>> cents = compute_centroids(t, tr)
    >>> sorted(cents), cents["id00001"].shape
    (['id00001', 'id00002'], torch.Size([8]))
    """
    if isinstance(data, DynamicItemDataset):
        keys = ["id", sig_key, spk_key]
        with data.output_keys_as(keys):
            loader = make_dataloader(
                data, batch_size=batch_size, num_workers=num_workers
            )
            return _centroids_from_batches(teacher, loader, sig_key, spk_key)
    return _centroids_from_batches(teacher, data, sig_key, spk_key)


def _centroids_from_batches(teacher, batches, sig_key, spk_key):
    """Accumulates normalised embeddings per speaker over ``batches``."""
    sums = {}
    for batch in batches:
        wavs, lens = getattr(batch, sig_key)
        speakers = getattr(batch, spk_key)
        with torch.no_grad():
            emb = F.normalize(teacher.embed_wavs(wavs, lens), dim=1).cpu()
        for spk, vec in zip(speakers, emb):
            spk = str(spk)
            sums[spk] = sums[spk] + vec if spk in sums else vec.clone()
    if not sums:
        raise ValueError("compute_centroids: the data yielded no utterance")
    return {spk: F.normalize(v, dim=0) for spk, v in sums.items()}


# ---------------------------------------------------------------------- #
# Loading
# ---------------------------------------------------------------------- #
def _hub_offline():
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _looks_like_path(source):
    """A source that can only be a filesystem path (not ``owner/name``)."""
    text = str(source)
    return (
        isinstance(source, Path)
        or text.startswith(("/", ".", "~"))
        or os.path.exists(text)
        or not _HUB_ID.match(text)
    )


def _resolve_source(source, savedir):
    """Returns (is_local, normalised source, local hyperparams.yaml path)."""
    if os.path.isdir(str(source)):
        folder = Path(source).expanduser().resolve()
        hparams_path = folder / HPARAMS_FILE
        if not hparams_path.is_file():
            raise FileNotFoundError(
                f"teacher folder {folder} has no {HPARAMS_FILE}: expected the "
                "SpeechBrain hub layout (hyperparams.yaml, "
                "embedding_model.ckpt, ...)"
            )
        return True, str(folder), hparams_path
    if _looks_like_path(source):
        raise FileNotFoundError(
            f"teacher source {str(source)!r} is neither an existing folder "
            "nor a hub id of the form 'owner/name'"
        )
    try:
        hparams_path = fetch(
            filename=HPARAMS_FILE,
            source=str(source),
            savedir=savedir,
            fetch_config=FetchConfig(allow_network=not _hub_offline()),
        )
    except Exception as e:  # hub errors come in many types
        raise FileNotFoundError(
            f"teacher source {source!r} is neither a local folder nor a "
            f"reachable hub id ({type(e).__name__}: {e})"
        ) from e
    return False, str(source), Path(hparams_path)


def _local_file(folder, pretrainer, name):
    """Local file a loadable resolves to in ``folder`` (hub-layout paths)."""
    if name in pretrainer.paths:
        path = str(pretrainer.paths[name])
        source, filename = pretrainer.split_path(path)
        candidate = Path(source) / filename
        if Path(source).is_dir():
            return candidate
        # A hub path left in a local yaml: the file must sit in the folder.
        return Path(folder) / filename
    return Path(folder) / (name + ".ckpt")


def _check_state_dict(name, module, path):
    """Raises a ValueError naming ``path`` if it does not fit ``module``."""
    expected = module.state_dict()
    if not expected:
        return  # e.g. InputNormalization keeps its statistics elsewhere
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as e:
        raise ValueError(f"{path}: cannot read checkpoint of '{name}' ({e})") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: checkpoint of '{name}' is not a state dict")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append(f"shape mismatch {wrong[:3]}")
        if missing:
            details.append(f"missing keys {missing[:3]}")
        if unexpected:
            details.append(f"unexpected keys {unexpected[:3]}")
        raise ValueError(
            f"{path} does not fit the '{name}' defined in the "
            f"hyperparams.yaml ({'; '.join(details)})"
        )


def load_teacher(
    source,
    savedir,
    run_opts=None,
    expected_n_mels=None,
    expected_sample_rate=None,
):
    """Loads a frozen teacher from the hub or from a local hub-layout folder.

    The steps are those of ``EncoderClassifier.from_hparams`` (fetch the
    ``hyperparams.yaml``, let its ``Pretrainer`` collect and load the
    checkpoints), with three differences: for a local folder,
    ``pretrained_path`` is overridden to the folder itself so that no hub
    is contacted; a missing optional file (``classifier.ckpt``,
    ``label_encoder.txt``) drops that part instead of failing; and every
    checkpoint is checked against the modules its yaml builds, so that a
    mismatch names the file.

    Arguments
    ---------
    source : str or pathlib.Path
        Hub id (``speechbrain/spkrec-ecapa-voxceleb``) or local folder.
    savedir : str or pathlib.Path
        Where the files are collected (symlinks for a local folder).
    run_opts : dict or None
        SpeechBrain run options, e.g. ``{"device": "cuda:0"}``.
    expected_n_mels : int or None
        The recipe's feature size; raises if the teacher's differs.
    expected_sample_rate : int or None
        The recipe's sample rate; raises if the teacher's differs.

    Returns
    -------
    Teacher
        Frozen, in eval mode, on the device of ``run_opts``.

    Raises
    ------
    FileNotFoundError
        Source neither a folder nor a reachable hub id, no
        ``hyperparams.yaml``, or a required checkpoint missing.
    ValueError
        A checkpoint whose shapes do not fit the yaml, a yaml without the
        needed modules, or n_mels / sample rate differing from the
        expected ones.

    Example
    -------
    >>> load_teacher("/nonexistent/teacher", "/tmp/unused")
    Traceback (most recent call last):
    ...
    FileNotFoundError: teacher source '/nonexistent/teacher' is neither an existing folder nor a hub id of the form 'owner/name'
    """
    savedir = Path(savedir)
    is_local, source, hparams_path = _resolve_source(source, savedir)
    text = Path(hparams_path).read_text(encoding="utf-8")
    overrides = {}
    if is_local and _PRETRAINED_PATH_LINE.search(text):
        # Hub yamls name the hub here; the weights next to the yaml win.
        overrides["pretrained_path"] = source
    try:
        hparams = load_hyperpyyaml(text, overrides)
    except Exception as e:
        raise ValueError(f"{hparams_path}: cannot load ({e})") from e
    missing = [k for k in REQUIRED_MODULES + ("pretrainer",) if k not in hparams]
    if missing:
        raise ValueError(f"{hparams_path}: no {missing} defined")
    hparams["savedir"] = str(savedir)

    pretrainer = hparams["pretrainer"]
    if "embedding_model" not in pretrainer.loadables:
        raise ValueError(
            f"{hparams_path}: its pretrainer does not load 'embedding_model' "
            "(the teacher would keep random weights)"
        )
    if is_local:
        for name in list(pretrainer.loadables):
            path = _local_file(source, pretrainer, name)
            if path.is_file():
                # Point the pretrainer at the checked local file.
                pretrainer.paths[name] = str(path)
                continue
            if name in OPTIONAL_LOADABLES:
                del pretrainer.loadables[name]
                pretrainer.paths.pop(name, None)
                continue
            raise FileNotFoundError(
                f"teacher folder {source} lacks {path.name} (needed for "
                f"'{name}' by its {HPARAMS_FILE})"
            )
    pretrainer.set_collect_in(savedir)
    fetch_config = FetchConfig(
        allow_network=not (is_local or _hub_offline()),
        # Re-link local files: a savedir reused for another teacher must not
        # serve stale checkpoints.
        overwrite=is_local,
    )
    try:
        paths = pretrainer.collect_files(
            default_source=source,
            local_strategy=LocalStrategy.SYMLINK,
            fetch_config=fetch_config,
        )
    except Exception as e:
        raise FileNotFoundError(
            f"cannot fetch the teacher checkpoints from {source} ({e})"
        ) from e
    for name, path in paths.items():
        obj = pretrainer.loadables[name]
        if isinstance(obj, torch.nn.Module):
            _check_state_dict(name, obj, path)
    pretrainer.load_collected()

    # A classifier or label encoder whose file was not loaded would be
    # random / empty: such parts are dropped, never used.
    unloaded = [k for k in OPTIONAL_LOADABLES if k not in pretrainer.loadables]
    for name in unloaded:
        if hparams.get(name) is not None:
            logger.info(
                "Teacher %s: no %s loaded, posteriors need centroids", source, name
            )
        hparams[name] = None
    modules = {
        k: v for k, v in hparams.get("modules", {}).items() if k not in unloaded
    }
    for key in REQUIRED_MODULES:
        modules.setdefault(key, hparams[key])
    if hparams.get("classifier") is not None:
        modules.setdefault("classifier", hparams["classifier"])
    label_encoder = hparams.get("label_encoder")
    classifier = modules.get("classifier")
    if label_encoder is not None:
        _check_label_encoder(label_encoder, classifier, paths.get("label_encoder"))

    interface = EncoderClassifier(
        modules=modules, hparams=hparams, run_opts=run_opts, freeze_params=True
    )
    mods = interface.mods
    teacher = Teacher(
        compute_features=mods["compute_features"],
        mean_var_norm=mods["mean_var_norm"],
        embedding_model=mods["embedding_model"],
        classifier=mods["classifier"] if "classifier" in mods else None,
        label_encoder=label_encoder,
        device=interface.device,
        interface=interface,
    )
    for name, expected, actual in (
        ("n_mels", expected_n_mels, teacher.n_mels),
        ("sample_rate", expected_sample_rate, teacher.sample_rate),
    ):
        if expected is not None and int(expected) != actual:
            raise ValueError(
                f"teacher {source} uses {name}={actual} but the recipe sets "
                f"{name}={expected}: features must match the teacher's"
            )
    return teacher


def _check_label_encoder(label_encoder, classifier, path):
    """Raises if the label encoder is empty or does not fit the classifier."""
    n_labels = len(label_encoder)
    if n_labels == 0:
        raise ValueError(f"{path}: label encoder is empty or unreadable")
    if classifier is not None:
        n_classes = int(classifier.weight.shape[0])
        if n_classes != n_labels:
            raise ValueError(
                f"{path}: {n_labels} labels but the classifier has "
                f"{n_classes} outputs"
            )
        label_encoder.expect_len(n_classes)
    else:
        label_encoder.ignore_len()
