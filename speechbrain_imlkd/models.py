"""ECAPA-TDNN teacher and student builders, parameter and MAC counts.

The teacher of IML-KD is the public SpeechBrain ECAPA-TDNN
(``speechbrain/spkrec-ecapa-voxceleb``: channels ``[1024]*4 + [3072]``,
20.8M parameters); the students are the same architecture with a narrower
trunk. A single width ``C`` describes every size used in the paper: the
four frame-level blocks get ``C`` channels and the multi-layer feature
aggregation gets ``3C``, so ``C=1024`` is the teacher and ``C=256`` the
default student (2.05M parameters).

All builders return plain SpeechBrain modules
(:class:`speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`,
:class:`~speechbrain.lobes.models.ECAPA_TDNN.Classifier`), so checkpoints stay
loadable by SpeechBrain alone.

Example
-------
>>> student = build_ecapa(channels=16, lin_neurons=32, attention_channels=8)
>>> emb = student(torch.rand(2, 50, 80))
>>> emb.shape
torch.Size([2, 1, 32])

Authors
 * speechbrain-imlkd contributors 2025
"""

import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.processing.features import InputNormalization

# The ECAPA-TDNN layout of Desplanques et al. (2020), as in the hub teacher:
# one TDNN block, three SE-Res2Net blocks, then multi-layer aggregation.
ECAPA_KERNEL_SIZES = (5, 3, 3, 3, 1)
ECAPA_DILATIONS = (1, 2, 3, 4, 1)
# The aggregation layer concatenates the three SE-Res2Net outputs.
MFA_WIDTH_FACTOR = 3
# Widths reported by the benchmark: the hub teacher and the paper's students.
TEACHER_CHANNELS = 1024
STUDENT_CHANNELS = (512, 256, 128)


def ecapa_kwargs(
    channels=256,
    lin_neurons=192,
    n_mels=80,
    attention_channels=128,
    res2net_scale=8,
    se_channels=128,
    global_context=True,
):
    """Returns the full ``ECAPA_TDNN`` constructor arguments for width ``C``.

    Keeping the explicit argument dictionary (rather than only the module)
    lets :mod:`speechbrain_imlkd.export` write a ``hyperparams.yaml`` that
    rebuilds exactly the same network with SpeechBrain alone.

    Arguments
    ---------
    channels : int
        Width ``C`` of the four frame-level blocks; the aggregation layer
        gets ``3C``. Must be a positive multiple of ``res2net_scale``.
    lin_neurons : int
        Embedding dimension.
    n_mels : int
        Number of input filterbank channels.
    attention_channels : int
        Hidden size of the attentive statistics pooling.
    res2net_scale : int
        Number of Res2Net splits in each SE-Res2Net block.
    se_channels : int
        Bottleneck size of the squeeze-excitation blocks.
    global_context : bool
        Whether the pooling attention sees utterance-level statistics.

    Returns
    -------
    dict
        Keyword arguments for
        :class:`speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`.

    Example
    -------
    >>> kw = ecapa_kwargs(channels=1024)
    >>> kw["channels"]
    [1024, 1024, 1024, 1024, 3072]
    >>> ecapa_kwargs(channels=12)
    Traceback (most recent call last):
    ...
    ValueError: channels=12 must be a positive multiple of res2net_scale=8
    """
    for name, value in (
        ("channels", channels),
        ("lin_neurons", lin_neurons),
        ("n_mels", n_mels),
        ("attention_channels", attention_channels),
        ("res2net_scale", res2net_scale),
        ("se_channels", se_channels),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if channels % res2net_scale != 0:
        # Res2Net splits the channels into `res2net_scale` equal chunks.
        raise ValueError(
            f"channels={channels} must be a positive multiple of "
            f"res2net_scale={res2net_scale}"
        )
    n_blocks = len(ECAPA_KERNEL_SIZES) - 1
    return dict(
        input_size=n_mels,
        channels=[channels] * n_blocks + [MFA_WIDTH_FACTOR * channels],
        kernel_sizes=list(ECAPA_KERNEL_SIZES),
        dilations=list(ECAPA_DILATIONS),
        attention_channels=attention_channels,
        lin_neurons=lin_neurons,
        res2net_scale=res2net_scale,
        se_channels=se_channels,
        global_context=global_context,
    )


def build_ecapa(
    channels=256,
    lin_neurons=192,
    n_mels=80,
    attention_channels=128,
    res2net_scale=8,
    se_channels=128,
    global_context=True,
):
    """Builds an ECAPA-TDNN embedding model of width ``C``.

    Arguments
    ---------
    channels : int
        Width ``C``: channels ``[C, C, C, C, 3C]``. ``1024`` is the hub
        teacher (20.8M parameters), ``256`` the default student (2.05M);
        ``512`` and ``128`` are the other students of the paper.
    lin_neurons : int
        Embedding dimension.
    n_mels : int
        Number of input filterbank channels.
    attention_channels : int
        Hidden size of the attentive statistics pooling.
    res2net_scale : int
        Number of Res2Net splits.
    se_channels : int
        Bottleneck size of the squeeze-excitation blocks.
    global_context : bool
        Whether the pooling attention sees utterance-level statistics.

    Returns
    -------
    speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
        The embedding model; it maps ``B x T x n_mels`` features to
        ``B x 1 x lin_neurons`` embeddings.

    Example
    -------
    >>> model = build_ecapa(channels=16, lin_neurons=8, n_mels=20)
    >>> model(torch.rand(3, 40, 20)).shape
    torch.Size([3, 1, 8])
    """
    return ECAPA_TDNN(
        **ecapa_kwargs(
            channels=channels,
            lin_neurons=lin_neurons,
            n_mels=n_mels,
            attention_channels=attention_channels,
            res2net_scale=res2net_scale,
            se_channels=se_channels,
            global_context=global_context,
        )
    )


def infer_ecapa_kwargs(model):
    """Recovers the ``ECAPA_TDNN`` constructor arguments from a built model.

    Used by the exporter when it is handed a module without its
    hyperparameters (e.g. one rebuilt from a training YAML).

    Arguments
    ---------
    model : speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
        A model built with the default activation, groups and dropout.

    Returns
    -------
    dict
        Keyword arguments that rebuild a model with the same state-dict
        shapes.

    Example
    -------
    >>> kw = infer_ecapa_kwargs(build_ecapa(channels=16, lin_neurons=8))
    >>> kw["channels"], kw["lin_neurons"], kw["attention_channels"]
    ([16, 16, 16, 16, 48], 8, 128)
    """
    if not isinstance(model, ECAPA_TDNN):
        raise TypeError(
            f"expected an ECAPA_TDNN embedding model, got {type(model).__name__}"
        )
    first = model.blocks[0].conv.conv
    res2net = model.blocks[1].res2net_block
    se = model.blocks[1].se_block
    attention_out = model.asp.tdnn.conv.conv.out_channels
    return dict(
        input_size=first.in_channels,
        channels=list(model.channels),
        kernel_sizes=[model.blocks[0].conv.conv.kernel_size[0]]
        + [b.res2net_block.blocks[0].conv.conv.kernel_size[0] for b in model.blocks[1:]]
        + [model.mfa.conv.conv.kernel_size[0]],
        dilations=[model.blocks[0].conv.conv.dilation[0]]
        + [b.res2net_block.blocks[0].conv.conv.dilation[0] for b in model.blocks[1:]]
        + [model.mfa.conv.conv.dilation[0]],
        attention_channels=attention_out,
        lin_neurons=model.fc.conv.out_channels,
        res2net_scale=res2net.scale,
        se_channels=se.conv1.conv.out_channels,
        global_context=model.asp.global_context,
    )


def build_classifier(n_speakers, lin_neurons=192):
    """Builds the cosine classifier trained with the AAM-softmax loss.

    Arguments
    ---------
    n_speakers : int
        Number of training speakers (output classes).
    lin_neurons : int
        Embedding dimension of the model it sits on.

    Returns
    -------
    speechbrain.lobes.models.ECAPA_TDNN.Classifier
        Maps ``B x 1 x lin_neurons`` embeddings to ``B x 1 x n_speakers``
        cosine similarities.

    Example
    -------
    >>> clf = build_classifier(5, lin_neurons=8)
    >>> cos = clf(torch.rand(2, 1, 8))
    >>> cos.shape, bool(cos.abs().max() <= 1.0)
    (torch.Size([2, 1, 5]), True)
    """
    if isinstance(n_speakers, bool) or not isinstance(n_speakers, int) or n_speakers < 1:
        raise ValueError(f"n_speakers={n_speakers!r} must be a positive integer")
    return Classifier(input_size=lin_neurons, out_neurons=n_speakers)


def features_pipeline(n_mels=80, sample_rate=16000):
    """Returns the feature front-end the hub teacher was trained with.

    Arguments
    ---------
    n_mels : int
        Number of mel filterbank channels.
    sample_rate : int
        Audio sample rate in Hz.

    Returns
    -------
    compute_features : speechbrain.lobes.features.Fbank
        Log mel filterbanks, ``B x T`` waveforms to ``B x frames x n_mels``.
    mean_var_norm : speechbrain.processing.features.InputNormalization
        Per-sentence mean normalisation without variance normalisation.

    Example
    -------
    >>> fbank, norm = features_pipeline(n_mels=40)
    >>> feats = norm(fbank(torch.rand(2, 16000)), torch.ones(2))
    >>> feats.shape
    torch.Size([2, 101, 40])
    >>> bool(feats.mean(dim=1).abs().max() < 1e-4)
    True
    """
    compute_features = Fbank(n_mels=n_mels, sample_rate=sample_rate)
    mean_var_norm = InputNormalization(norm_type="sentence", std_norm=False)
    return compute_features, mean_var_norm


def band_centres_hz(compute_features):
    """Centre frequencies of the mel bands of a SpeechBrain ``Fbank``.

    Arguments
    ---------
    compute_features : speechbrain.lobes.features.Fbank
        The front end.

    Returns
    -------
    torch.Tensor
        ``n_mels`` centre frequencies in Hz, increasing.

    Example
    -------
    >>> fbank, _ = features_pipeline(n_mels=40)
    >>> centres = band_centres_hz(fbank)
    >>> centres.shape, bool((centres[1:] > centres[:-1]).all())
    (torch.Size([40]), True)
    """
    filterbank = getattr(compute_features, "compute_fbanks", None)
    centres = getattr(filterbank, "f_central", None)
    if centres is None:
        raise ValueError(
            f"cannot read mel band centres from {type(compute_features).__name__}: "
            "expected a SpeechBrain Fbank"
        )
    return centres.detach().float().cpu().clone()


def count_parameters(module, trainable_only=False):
    """Counts the parameters of a module.

    Arguments
    ---------
    module : torch.nn.Module
        The module.
    trainable_only : bool
        Count only parameters with ``requires_grad=True``.

    Returns
    -------
    int
        Number of scalar parameters.

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    >>> count_parameters(build_ecapa(channels=256))
    2049952
    """
    return sum(
        p.numel()
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )


def _conv1d_macs(module, inputs, output):
    """MACs of one ``nn.Conv1d`` call: each output element is a dot product
    over ``in_channels / groups * kernel_size`` inputs."""
    per_output = (module.in_channels // module.groups) * module.kernel_size[0]
    return output.numel() * per_output


def _linear_macs(module, inputs, output):
    """MACs of one ``nn.Linear`` call."""
    return output.numel() * module.in_features


def count_macs(module, n_mels=80, seconds=3.0, frame_shift_ms=10.0):
    """Counts multiply-accumulates of one forward pass over a single utterance.

    The count comes from forward hooks on every ``torch.nn.Conv1d`` and
    ``torch.nn.Linear`` (SpeechBrain's ``Conv1d``/``Linear`` wrap them), which
    hold all the weights of ECAPA-TDNN. Batch normalisation, activations,
    the attention softmax, statistics pooling and the filterbank front-end are
    element-wise or negligible and are not counted; this is the usual
    convention for reporting ECAPA-TDNN complexity.

    Arguments
    ---------
    module : torch.nn.Module
        An embedding model taking ``B x T x n_mels`` features.
    n_mels : int
        Feature dimension of the dummy input.
    seconds : float
        Utterance duration; the dummy input has
        ``1 + seconds * 1000 / frame_shift_ms`` frames, as Fbank produces.
    frame_shift_ms : float
        Frame shift of the feature front-end in milliseconds.

    Returns
    -------
    int
        MACs for a batch of one utterance.

    Example
    -------
    >>> count_macs(torch.nn.Sequential(torch.nn.Linear(80, 10)), seconds=0.01)
    1600
    >>> small = build_ecapa(channels=16, lin_neurons=8)
    >>> count_macs(small, seconds=2.0) < count_macs(small, seconds=3.0)
    True
    """
    if seconds <= 0:
        raise ValueError(f"seconds={seconds!r} must be positive")
    n_frames = 1 + int(round(seconds * 1000.0 / frame_shift_ms))
    total = [0]
    counters = {torch.nn.Conv1d: _conv1d_macs, torch.nn.Linear: _linear_macs}

    def make_hook(counter):
        def hook(mod, inputs, output):
            total[0] += counter(mod, inputs, output)

        return hook

    handles = []
    for sub in module.modules():
        for cls, counter in counters.items():
            if isinstance(sub, cls):
                handles.append(sub.register_forward_hook(make_hook(counter)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, n_frames, n_mels))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return total[0]
