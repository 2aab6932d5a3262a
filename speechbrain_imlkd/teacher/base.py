"""The frozen teacher: :class:`Teacher` and the class centroids of its embeddings.

:class:`Teacher` wraps the SpeechBrain modules of a speaker model (feature
extraction, normalisation, embedding model, optional classifier and label
encoder). It is deliberately *not* a ``torch.nn.Module``, so that it stays
out of ``Brain.modules``; its weights are frozen, yet gradients flow to its
input features. :func:`compute_centroids` gives the class centroids behind
its centroid posteriors. Loading from the hub or a local folder lives in
:mod:`speechbrain_imlkd.teacher.hub`.

Example
-------
>>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
>>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
>>> t.set_training_speakers(["a", "b"], mode="centroid",
...                         centroid_data={"a": torch.rand(8), "b": torch.rand(8)})
'centroid'
>>> t.posteriors(t.embed_wavs(torch.rand(2, 4000))).shape
torch.Size([2, 2])

Authors
 * speechbrain-imlkd contributors 2025
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

LABEL_MODES = ("label", "centroid", "auto")
# SpeechBrain's Classifier returns cosines; the AAM softmax it was trained
# with multiplies them by this scale before the softmax.
DEFAULT_LOGIT_SCALE = 30.0
# Length of the dummy waveform used to probe the feature dimension.
PROBE_SECONDS = 0.1


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

    #: Whether the teacher computes features the student does not share
    #: (True for the adapters of :mod:`speechbrain_imlkd.teacher_adapters`).
    own_front_end = False
    #: Name of the front end family, first entry of :attr:`front_end`.
    adapter_name = "speechbrain"

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

    @property
    def front_end(self):
        """Settings that identify the teacher's features (for cache keys).

        Returns
        -------
        dict
            Plain values: ``adapter``, ``sample_rate``, ``n_mels`` and, for
            a SpeechBrain ``Fbank``, its STFT and filterbank settings, plus
            the feature normalisation.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> fe = t.front_end
        >>> fe["adapter"], fe["n_mels"], fe["hop_length_ms"], fe["log_mel"]
        ('speechbrain', 40, 10, True)
        """
        feats = self.compute_features
        desc = {
            "adapter": self.adapter_name,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "features": type(feats).__name__,
        }
        stft = getattr(feats, "compute_STFT", None)
        fbanks = getattr(feats, "compute_fbanks", None)
        if stft is not None:
            desc.update(
                n_fft=int(stft.n_fft),
                # STFT keeps its settings in samples; the ms values are the
                # Fbank arguments.
                win_length_ms=_plain(1000 * stft.win_length / stft.sample_rate),
                hop_length_ms=_plain(1000 * stft.hop_length / stft.sample_rate),
                center=bool(stft.center),
                pad_mode=str(stft.pad_mode),
            )
        if fbanks is not None:
            desc.update(
                mel_scale="htk",
                f_min=_plain(fbanks.f_min),
                f_max=_plain(fbanks.f_max),
                log_mel=bool(fbanks.log_mel),
                filter_shape=str(fbanks.filter_shape),
                power_spectrogram=_plain(fbanks.power_spectrogram),
            )
        for name in ("deltas", "context"):
            if hasattr(feats, name):
                desc[name] = bool(getattr(feats, name))
        norm = self.mean_var_norm
        if norm is not None:
            desc["normalisation"] = type(norm).__name__
            for name in ("norm_type", "std_norm"):
                if hasattr(norm, name):
                    desc["normalisation_" + name] = _plain(getattr(norm, name))
        return desc

    def band_centres_hz(self):
        """Centre frequency of each mel band of the teacher's features, in Hz.

        For a SpeechBrain ``Fbank``: the centres of its ``Filterbank``
        (mel scale ``2595 * log10(1 + f / 700)``, bands evenly spaced in
        mels between ``f_min`` and ``f_max``).

        Returns
        -------
        torch.Tensor
            ``(n_mels,)`` float64 on the CPU, increasing.

        Raises
        ------
        ValueError
            Features that are not a SpeechBrain ``Fbank``.

        Example
        -------
        >>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
        >>> t = Teacher(*features_pipeline(40), build_ecapa(16, 8, 40))
        >>> c = t.band_centres_hz()
        >>> c.shape, round(c[0].item(), 1), round(c[-1].item(), 1)
        (torch.Size([40]), 44.4, 7481.4)
        """
        fbanks = getattr(self.compute_features, "compute_fbanks", None)
        if fbanks is None or not hasattr(fbanks, "f_central"):
            raise ValueError(
                "band_centres_hz needs a SpeechBrain Fbank front end; this "
                f"teacher's is a {type(self.compute_features).__name__}"
            )
        centres = fbanks.f_central.detach().double().cpu()
        if not fbanks.freeze:
            # Learnable filters store centres scaled as Filterbank.forward
            # undoes it.
            factor = fbanks.param_change_factor
            centres = centres * fbanks.sample_rate * factor * factor
        return centres.clone()

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


def _plain(value):
    """A number or flag as a plain Python value (JSON-friendly)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    value = float(value)
    return int(value) if value.is_integer() else value
