"""Loading a teacher: hub id, local folder in the hub layout, or adapter name.

:func:`load_teacher` loads an ECAPA-TDNN speaker model in the SpeechBrain hub
layout (``hyperparams.yaml``, ``embedding_model.ckpt``,
``mean_var_norm_emb.ckpt`` and, optionally, ``classifier.ckpt`` and
``label_encoder.txt``) from the hub or from a local folder, with
SpeechBrain's own ``Pretrainer``, checking every checkpoint against the
modules its yaml builds; the name of a teacher adapter
(:mod:`speechbrain_imlkd.teacher_adapters`) loads that adapter instead.

Example
-------
>>> load_teacher("/nonexistent/teacher", "/tmp/unused")
Traceback (most recent call last):
...
FileNotFoundError: teacher source '/nonexistent/teacher' is neither an existing folder, ...

Authors
 * speechbrain-imlkd contributors 2025
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.fetching import FetchConfig, LocalStrategy, fetch
from speechbrain.utils.logger import get_logger

from speechbrain_imlkd.teacher.base import Teacher

logger = get_logger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
# Loadables a teacher can do without: it then falls back to centroid posteriors.
OPTIONAL_LOADABLES = ("classifier", "label_encoder")
REQUIRED_MODULES = ("compute_features", "mean_var_norm", "embedding_model")
_PRETRAINED_PATH_LINE = re.compile(r"^pretrained_path\s*:", re.MULTILINE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _adapter_names():
    """Names accepted by :func:`load_teacher` besides folders and hub ids."""
    # Imported here: teacher_adapters imports this module.
    from speechbrain_imlkd.teacher_adapters import TEACHER_ADAPTERS

    return sorted(TEACHER_ADAPTERS)


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


def _on_main(func, **kwargs):
    """Runs ``func`` on the main process only; every rank gets its outcome.

    Under ``torchrun`` the ranks share ``savedir``: collecting on each of
    them lets one rank delete (re-link) a file another is loading. With
    ``run_on_main`` the main process collects, a barrier follows and the
    others read its result. ``run_on_main`` alone would leave the other
    ranks waiting forever for the broadcast result when ``func`` raises, so
    the error travels as the result: the main process raises the original,
    the others a ``RuntimeError`` naming it. Without ``torch.distributed``
    this is just ``func(**kwargs)``.

    Arguments
    ---------
    func : callable
        Run on the main process with ``kwargs``.
    **kwargs
        Its keyword arguments.

    Returns
    -------
    object
        What ``func`` returned on the main process (on every rank).

    Example
    -------
    >>> _on_main(dict, name="ecapa")
    {'name': 'ecapa'}
    >>> _on_main(os.stat, path="/nonexistent/teacher")
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/teacher'
    """
    caught = []

    def attempt():
        """Returns (result, None), or (None, error text) after catching it."""
        try:
            return func(**kwargs), None
        except Exception as e:  # re-raised below, on every rank
            caught.append(e)
            return None, f"{type(e).__name__}: {e}"

    result, error = run_on_main(attempt)
    if caught:
        raise caught[0]
    if error is not None:
        raise RuntimeError(f"failed on the main process ({error})")
    return result


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
            f"teacher source {str(source)!r} is neither an existing folder, "
            "a hub id of the form 'owner/name', nor a teacher adapter "
            f"(one of {', '.join(_adapter_names())})"
        )
    try:
        hparams_path = _on_main(
            fetch,
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
    adapter_options=None,
):
    """Loads a frozen teacher: hub id, local hub-layout folder, or adapter.

    A ``source`` that is exactly the name of a teacher adapter
    (:data:`speechbrain_imlkd.teacher_adapters.TEACHER_ADAPTERS`, e.g.
    ``"resemblyzer"``) loads that adapter; the name wins over a folder of
    the same name in the working directory (write ``./resemblyzer`` for
    the folder). Otherwise:

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
        Hub id (``speechbrain/spkrec-ecapa-voxceleb``), local folder, or
        adapter name (``resemblyzer``).
    savedir : str or pathlib.Path
        Where the files are collected (symlinks for a local folder).
    run_opts : dict or None
        SpeechBrain run options, e.g. ``{"device": "cuda:0"}``.
    expected_n_mels : int or None
        The recipe's feature size; raises if the teacher's differs. Only
        for teachers that share the student's features (hub layout): an
        adapter has its own front end and ignores it.
    expected_sample_rate : int or None
        The recipe's sample rate; raises if the teacher's differs (every
        teacher).
    adapter_options : dict or None
        Keyword arguments for an adapter's loader (e.g.
        ``{"utterance_mode": "whole"}``); an error for other sources.

    Returns
    -------
    Teacher
        Frozen, in eval mode, on the device of ``run_opts``.

    Raises
    ------
    FileNotFoundError
        Source neither a folder, a reachable hub id nor an adapter, no
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
    FileNotFoundError: teacher source '/nonexistent/teacher' is neither an existing folder, a hub id of the form 'owner/name', nor a teacher adapter (one of resemblyzer)
    """
    if isinstance(source, str) and source in _adapter_names():
        from speechbrain_imlkd.teacher_adapters import TEACHER_ADAPTERS

        return TEACHER_ADAPTERS[source](
            savedir,
            run_opts=run_opts,
            expected_n_mels=expected_n_mels,
            expected_sample_rate=expected_sample_rate,
            **(adapter_options or {}),
        )
    if adapter_options:
        raise ValueError(
            f"adapter_options={adapter_options!r} given, but teacher source "
            f"{str(source)!r} is not an adapter (one of {', '.join(_adapter_names())})"
        )
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
        # Main process only: the ranks share savedir (see _on_main).
        paths = _on_main(
            pretrainer.collect_files,
            default_source=source,
            local_strategy=LocalStrategy.SYMLINK,
            fetch_config=fetch_config,
        )
    except Exception as e:
        raise FileNotFoundError(
            f"cannot fetch the teacher checkpoints from {source} ({e})"
        ) from e
    if not if_main_process():
        # What collect_files records on the process that ran it.
        for name, path in paths.items():
            pretrainer.paths[name] = str(path)
            pretrainer.is_local.append(name)
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
