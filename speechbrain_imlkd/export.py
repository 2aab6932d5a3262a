"""Writes a trained ECAPA-TDNN as a folder in the SpeechBrain hub layout.

The folder holds ``hyperparams.yaml``, ``embedding_model.ckpt`` and, when
given, ``classifier.ckpt``, ``label_encoder.txt`` and
``mean_var_norm_emb.ckpt``, plus a ``README.md`` model card. It loads, with
SpeechBrain alone and with no network and no overrides, through
``EncoderClassifier.from_hparams(source=folder, savedir=...)`` and
``SpeakerRecognition.from_hparams`` (so ``verify_files`` works), and through
:func:`speechbrain_imlkd.teacher.load_teacher` (so any exported model can
serve as a teacher).

How the files are found: ``from_hparams`` lets the yaml's ``Pretrainer``
fetch every loadable that has no explicit path from ``<source>/<name>.ckpt``.
The exported yaml therefore names no path (unlike the hub's, whose
``pretrained_path: speechbrain/spkrec-ecapa-voxceleb`` sends a local folder
to the hub), and the same folder works locally or uploaded to a hub repo.
Because of that naming rule the label encoder is also written as
``label_encoder.ckpt`` (same text as ``label_encoder.txt``, the hub's name).

Example
-------
>>> import tempfile
>>> from speechbrain_imlkd.models import build_ecapa
>>> folder = export_model(tempfile.mkdtemp(), build_ecapa(16, lin_neurons=8))
>>> sorted(p.name for p in folder.iterdir())
['README.md', 'embedding_model.ckpt', 'hyperparams.yaml']

Authors
 * speechbrain-imlkd contributors 2025
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_imlkd.models import (
    count_macs,
    count_parameters,
    ecapa_kwargs,
    infer_ecapa_kwargs,
)

EMBEDDING_FILE = "embedding_model.ckpt"
CLASSIFIER_FILE = "classifier.ckpt"
LABEL_ENCODER_FILE = "label_encoder.txt"
# The name SpeechBrain's Pretrainer looks for when the yaml gives no path.
LABEL_ENCODER_CKPT = "label_encoder.ckpt"
MEAN_VAR_NORM_EMB_FILE = "mean_var_norm_emb.ckpt"
HPARAMS_FILE = "hyperparams.yaml"
CARD_FILE = "README.md"
OPTIONAL_FILES = (
    CLASSIFIER_FILE,
    LABEL_ENCODER_FILE,
    LABEL_ENCODER_CKPT,
    MEAN_VAR_NORM_EMB_FILE,
)
MODEL_HPARAM_KEYS = (
    "channels",
    "lin_neurons",
    "attention_channels",
    "res2net_scale",
    "se_channels",
    "global_context",
)
CARD_KEYS = (
    "title",
    "training_data",
    "method",
    "eer",
    "eer_trials",
    "min_dcf",
    "notes",
)
# Utterance length at which the card reports MACs (the paper's convention).
CARD_MACS_SECONDS = 3.0


def _yaml_value(value):
    """Formats a scalar or list as YAML (flow style)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value)


def _ecapa_yaml(kwargs):
    """The ``embedding_model`` block for the given constructor arguments."""
    lines = ["embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"]
    for key, value in kwargs.items():
        if key == "input_size":
            lines.append("    input_size: !ref <n_mels>")
        elif key == "lin_neurons":
            lines.append("    lin_neurons: !ref <lin_neurons>")
        else:
            lines.append(f"    {key}: {_yaml_value(value)}")
    return "\n".join(lines)


def _hparams_yaml(kwargs, n_mels, sample_rate, classifier_spec, has_labels, has_norm):
    """Builds the text of ``hyperparams.yaml``."""
    loadables = ["embedding_model"]
    modules = ["compute_features", "mean_var_norm", "embedding_model"]
    parts = [
        "# ############################################################################",
        "# Model: ECAPA-TDNN speaker embeddings (exported by speechbrain-imlkd)",
        "# Load: EncoderClassifier / SpeakerRecognition.from_hparams(source=<folder>)",
        "# No pretrainer path is given on purpose: every file is fetched from the",
        "# source itself (<source>/<name>.ckpt), a local folder or a hub repo alike.",
        "# ############################################################################",
        "",
        f"n_mels: {n_mels}",
        f"sample_rate: {sample_rate}",
        f"lin_neurons: {kwargs['lin_neurons']}",
        "",
        "compute_features: !new:speechbrain.lobes.features.Fbank",
        "    n_mels: !ref <n_mels>",
        "    sample_rate: !ref <sample_rate>",
        "",
        "mean_var_norm: !new:speechbrain.processing.features.InputNormalization",
        "    norm_type: sentence",
        "    std_norm: False",
        "",
        _ecapa_yaml(kwargs),
        "",
        "audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer",
        "    sample_rate: !ref <sample_rate>",
        "",
    ]
    if classifier_spec is not None:
        n_out, lin_blocks, clf_neurons = classifier_spec
        parts += [
            f"out_n_neurons: {n_out}",
            "",
            "classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier",
            "    input_size: !ref <lin_neurons>",
            f"    lin_blocks: {lin_blocks}",
            f"    lin_neurons: {clf_neurons}",
            "    out_neurons: !ref <out_n_neurons>",
            "",
        ]
        loadables.append("classifier")
        modules.append("classifier")
    if has_norm:
        parts += [
            "mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization",
            "    norm_type: global",
            "    std_norm: False",
            "",
        ]
        loadables.append("mean_var_norm_emb")
        modules.append("mean_var_norm_emb")
    if has_labels:
        parts += [
            "label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder",
            "",
        ]
        loadables.append("label_encoder")
    parts.append("modules:")
    parts += [f"    {m}: !ref <{m}>" for m in modules]
    parts += [
        "",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
    ]
    parts += [f"        {m}: !ref <{m}>" for m in loadables]
    return "\n".join(parts) + "\n"


def _resolve_model_kwargs(embedding_model, model_hparams, n_mels):
    """ECAPA constructor arguments, checked against the module's weights."""
    if not isinstance(embedding_model, ECAPA_TDNN):
        raise TypeError(
            "export_model writes ECAPA_TDNN models; got "
            f"{type(embedding_model).__name__}"
        )
    actual = infer_ecapa_kwargs(embedding_model)
    if actual["input_size"] != n_mels:
        raise ValueError(
            f"n_mels={n_mels} but the embedding model takes "
            f"{actual['input_size']} input features"
        )
    if model_hparams is None:
        return actual
    unknown = sorted(set(model_hparams) - set(MODEL_HPARAM_KEYS))
    if unknown:
        raise ValueError(
            f"model_hparams: unknown key(s) {unknown}; expected some of "
            f"{list(MODEL_HPARAM_KEYS)}"
        )
    declared = ecapa_kwargs(n_mels=n_mels, **model_hparams)
    wrong = [
        f"{k}={declared[k]!r} (model has {actual[k]!r})"
        for k in declared
        if declared[k] != actual[k]
    ]
    if wrong:
        raise ValueError(
            "model_hparams do not describe the embedding model: " + ", ".join(wrong)
        )
    return declared


def _classifier_spec(classifier, lin_neurons):
    """(out_neurons, lin_blocks, lin_neurons) of a SpeechBrain Classifier."""
    if not isinstance(classifier, Classifier):
        raise TypeError(
            "classifier must be a speechbrain.lobes.models.ECAPA_TDNN."
            f"Classifier, got {type(classifier).__name__}"
        )
    n_out, in_features = (int(s) for s in classifier.weight.shape)
    linears = [b for b in classifier.blocks if hasattr(b, "w")]
    if linears:
        first_in = int(linears[0].w.in_features)
        clf_neurons = int(linears[-1].w.out_features)
    else:
        first_in, clf_neurons = in_features, lin_neurons
    if first_in != lin_neurons:
        raise ValueError(
            f"classifier takes {first_in}-dim inputs but the embedding model "
            f"outputs {lin_neurons}"
        )
    return n_out, len(linears), clf_neurons


def _load_label_encoder(label_encoder):
    """A CategoricalEncoder from an encoder or a saved file."""
    if isinstance(label_encoder, CategoricalEncoder):
        return label_encoder
    path = Path(label_encoder)
    if not path.is_file():
        raise FileNotFoundError(f"label encoder file not found: {path}")
    encoder = CategoricalEncoder()
    try:
        encoder.load(path)
    except Exception as e:
        raise ValueError(f"{path}: not a CategoricalEncoder file ({e})") from e
    return encoder


def _card_text(card, n_params, macs, kwargs, classifier_spec, n_mels, sample_rate):
    """The README.md model card."""
    card = dict(card or {})
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(
            f"card: unknown key(s) {unknown}; expected some of {list(CARD_KEYS)}"
        )
    title = card.get("title") or "ECAPA-TDNN speaker verification model"
    eer = card.get("eer")
    if eer is None:
        eer_text = "not measured"
    else:
        trials = card.get("eer_trials")
        eer_text = f"{float(eer):.2f}%" + (f" on {trials}" if trials else "")
    lines = [
        f"# {title}",
        "",
        "Speaker embedding model exported by speechbrain-imlkd in the "
        "SpeechBrain hub layout.",
        "",
        "## Usage",
        "",
        "```python",
        "from speechbrain.inference.speaker import SpeakerRecognition",
        'model = SpeakerRecognition.from_hparams(source="<this folder>", '
        'savedir="pretrained_models/<name>")',
        'score, decision = model.verify_files("a.wav", "b.wav")',
        "```",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        "| architecture | ECAPA-TDNN |",
        f"| channels | {kwargs['channels']} |",
        f"| embedding size | {kwargs['lin_neurons']} |",
        f"| attention channels | {kwargs['attention_channels']} |",
        f"| parameters (embedding model) | {n_params:,} ({n_params / 1e6:.2f}M) |",
        f"| MACs, {CARD_MACS_SECONDS:g} s input | {macs / 1e9:.3f} G |",
        f"| features | Fbank({n_mels}), sentence mean normalisation |",
        f"| sample rate | {sample_rate} Hz |",
    ]
    if classifier_spec is not None:
        lines.append(f"| training speakers (classifier outputs) | {classifier_spec[0]} |")
    lines += [
        "",
        "## Training",
        "",
        f"- Training data: {card.get('training_data') or 'not stated'}",
        f"- Method: {card.get('method') or 'not stated'}",
        "",
        "## Evaluation",
        "",
        f"- EER: {eer_text}",
    ]
    if card.get("min_dcf") is not None:
        lines.append(f"- minDCF: {float(card['min_dcf']):.4f}")
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def _cpu_state(module):
    """A detached CPU copy of a module's state dict."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def export_model(
    folder,
    embedding_model,
    classifier=None,
    label_encoder=None,
    model_hparams=None,
    n_mels=80,
    sample_rate=16000,
    card=None,
    mean_var_norm_emb=None,
):
    """Writes a model folder in the SpeechBrain hub layout.

    Arguments
    ---------
    folder : str or pathlib.Path
        Output folder (created; files of a previous export are replaced,
        and optional files not written this time are removed).
    embedding_model : speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
        The trained embedding model.
    classifier : speechbrain.lobes.models.ECAPA_TDNN.Classifier or None
        Its speaker classifier.
    label_encoder : CategoricalEncoder or str or pathlib.Path or None
        The training speaker labels (object or saved file).
    model_hparams : dict or None
        ``build_ecapa`` arguments (``channels``, ``lin_neurons``,
        ``attention_channels``, ...); checked against the module. None
        infers them from the module.
    n_mels : int
        Number of filterbank channels of the features.
    sample_rate : int
        Sample rate of the audio the model expects.
    card : dict or None
        Model card fields: ``title``, ``training_data``, ``method``,
        ``eer`` (percent), ``eer_trials``, ``min_dcf``, ``notes``.
    mean_var_norm_emb : InputNormalization or None
        Global embedding normalisation (used by
        ``encode_batch(normalize=True)``).

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    TypeError
        If the models are not SpeechBrain ECAPA-TDNN / Classifier modules.
    ValueError
        If ``model_hparams`` or ``n_mels`` do not describe the model, the
        classifier does not fit the embedding size or the label encoder,
        or ``card`` has unknown keys.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_imlkd.models import build_classifier, build_ecapa
    >>> enc = CategoricalEncoder()
    >>> enc.update_from_iterable(["id00001", "id00002"])
    >>> folder = export_model(
    ...     tempfile.mkdtemp(), build_ecapa(16, lin_neurons=8),
    ...     classifier=build_classifier(2, lin_neurons=8), label_encoder=enc,
    ...     model_hparams=dict(channels=16, lin_neurons=8),
    ...     card={"training_data": "toy", "eer": 1.5},
    ... )
    >>> "EER: 1.50%" in (folder / "README.md").read_text()
    True
    >>> export_model(tempfile.mkdtemp(), build_ecapa(16, lin_neurons=8),
    ...              model_hparams=dict(channels=32, lin_neurons=8))
    Traceback (most recent call last):
    ...
    ValueError: model_hparams do not describe the embedding model: channels=[32, 32, 32, 32, 96] (model has [16, 16, 16, 16, 48])
    """
    kwargs = _resolve_model_kwargs(embedding_model, model_hparams, n_mels)
    lin_neurons = kwargs["lin_neurons"]
    classifier_spec = None
    if classifier is not None:
        classifier_spec = _classifier_spec(classifier, lin_neurons)
    if label_encoder is not None:
        label_encoder = _load_label_encoder(label_encoder)
        if classifier_spec is not None and len(label_encoder) != classifier_spec[0]:
            raise ValueError(
                f"label encoder has {len(label_encoder)} labels but the "
                f"classifier has {classifier_spec[0]} outputs"
            )
    if mean_var_norm_emb is not None and not isinstance(
        mean_var_norm_emb, InputNormalization
    ):
        raise TypeError(
            "mean_var_norm_emb must be an InputNormalization, got "
            f"{type(mean_var_norm_emb).__name__}"
        )
    # The card is built first so that a bad card leaves no half-written folder.
    card_text = _card_text(
        card,
        count_parameters(embedding_model),
        count_macs(embedding_model, n_mels=n_mels, seconds=CARD_MACS_SECONDS),
        kwargs,
        classifier_spec,
        n_mels,
        sample_rate,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in OPTIONAL_FILES:
        (folder / name).unlink(missing_ok=True)
    torch.save(_cpu_state(embedding_model), folder / EMBEDDING_FILE)
    if classifier is not None:
        torch.save(_cpu_state(classifier), folder / CLASSIFIER_FILE)
    if label_encoder is not None:
        label_encoder.save(folder / LABEL_ENCODER_FILE)
        shutil.copyfile(folder / LABEL_ENCODER_FILE, folder / LABEL_ENCODER_CKPT)
    if mean_var_norm_emb is not None:
        mean_var_norm_emb._save(folder / MEAN_VAR_NORM_EMB_FILE)
    (folder / HPARAMS_FILE).write_text(
        _hparams_yaml(
            kwargs,
            n_mels,
            sample_rate,
            classifier_spec,
            has_labels=label_encoder is not None,
            has_norm=mean_var_norm_emb is not None,
        ),
        encoding="utf-8",
    )
    (folder / CARD_FILE).write_text(card_text, encoding="utf-8")
    return folder


def _find_checkpoint(path, min_key=None):
    """The checkpoint folder: ``path`` itself or the chosen one inside it."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    if (path / EMBEDDING_FILE).is_file():
        return path
    ckpt = Checkpointer(path).find_checkpoint(min_key=min_key)
    if ckpt is None:
        raise FileNotFoundError(
            f"{path} holds neither {EMBEDDING_FILE} nor CKPT+* checkpoints"
        )
    return Path(ckpt.path)


def _load_weights(module, path, name):
    """Loads a state dict into ``module``, naming the file on failure."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint has no {path.name} for '{name}': {path}")
    try:
        module.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    except Exception as e:
        raise ValueError(
            f"{path} does not fit the '{name}' of the hparams file ({e})"
        ) from e


def _build_classifier(classifier, path):
    """The classifier module; a ``!name:`` factory gets the checkpoint's size.

    Recipes whose speaker count is only known after data preparation give
    the classifier as a factory taking ``n_speakers``.
    """
    if isinstance(classifier, torch.nn.Module):
        return classifier
    if not callable(classifier):
        raise TypeError(
            f"hparams 'classifier' is neither a module nor a factory: {classifier!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint has no {path.name} for 'classifier': {path}")
    weight = torch.load(path, map_location="cpu").get("weight")
    if weight is None:
        raise ValueError(f"{path}: no 'weight' entry, not a Classifier checkpoint")
    return classifier(n_speakers=int(weight.shape[0]))


def main(argv=None):
    """Command line: export a SpeechBrain training checkpoint.

    ``imlkd-export HPARAMS --checkpoint CKPT --output FOLDER`` rebuilds the
    modules from the training hparams file (``embedding_model``,
    ``classifier``), loads their weights from the checkpoint, and writes the
    hub-layout folder with :func:`export_model`.

    ``--onnx [FILE]`` also writes the whole embedding pipeline (waveform in,
    embedding out) as ONNX, by default ``FOLDER/embedding_model.onnx``, and
    prints its parity with the torch model; ``--int8`` adds the dynamically
    quantised copy (see :mod:`speechbrain_imlkd.onnx_export`). Given a
    hub-layout folder instead of an hparams file (``imlkd-export FOLDER
    --onnx [FILE]``), only the ONNX files are written, from that folder.

    Arguments
    ---------
    argv : list of str or None
        Command-line arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    None
        (A console-script entry point: a return value would become the
        exit status.)

    Example
    -------
    >>> main(["/nonexistent/hparams.yaml", "--checkpoint", "/x", "--output", "/y"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: hparams file not found: /nonexistent/hparams.yaml
    """
    parser = argparse.ArgumentParser(
        prog="imlkd-export",
        description="Export a SpeechBrain ECAPA-TDNN checkpoint in the hub layout.",
    )
    parser.add_argument(
        "hparams",
        help="training hparams YAML (e.g. <output>/hyperparams.yaml), or a "
        "hub-layout model folder (with --onnx)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a CKPT+... folder, or the folder holding them (the most recent, "
        "or the best by --min-key, is used); required with an hparams file",
    )
    parser.add_argument(
        "--output", default=None, help="folder to write; required with an hparams file"
    )
    parser.add_argument(
        "--onnx",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="also write the waveform-to-embedding ONNX graph (default "
        "<folder>/embedding_model.onnx)",
    )
    parser.add_argument(
        "--int8", action="store_true", help="with --onnx: also a dynamic int8 copy"
    )
    parser.add_argument("--min-key", default=None, help="e.g. ErrorRate")
    parser.add_argument(
        "--label-encoder",
        default=None,
        help="label encoder file (default: the hparams' label_encoder_file)",
    )
    parser.add_argument("--no-classifier", action="store_true")
    parser.add_argument(
        "--overrides", default=None, help="YAML overrides for the hparams file"
    )
    parser.add_argument("--title", default=None)
    parser.add_argument("--training-data", default=None)
    parser.add_argument("--method", default=None)
    parser.add_argument("--eer", type=float, default=None, help="EER in percent")
    parser.add_argument("--eer-trials", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.int8 and args.onnx is None:
        parser.error("--int8 needs --onnx")
    if Path(args.hparams).is_dir():
        if args.onnx is None:
            parser.error(f"{args.hparams} is a folder: pass --onnx to export it to ONNX")
        _export_onnx_files(args.hparams, args.onnx, args.int8)
        return
    if args.checkpoint is None or args.output is None:
        parser.error("an hparams file needs --checkpoint and --output")

    # Imported here: only the CLI needs recipe-level YAML handling.
    from speechbrain_imlkd.hparams_utils import load_recipe_hparams

    hparams = load_recipe_hparams(args.hparams, args.overrides)
    if "embedding_model" not in hparams:
        raise ValueError(f"{args.hparams}: no 'embedding_model' defined")
    ckpt = _find_checkpoint(args.checkpoint, args.min_key)
    embedding_model = hparams["embedding_model"]
    _load_weights(embedding_model, ckpt / EMBEDDING_FILE, "embedding_model")
    classifier = None
    if not args.no_classifier and hparams.get("classifier") is not None:
        classifier = _build_classifier(hparams["classifier"], ckpt / CLASSIFIER_FILE)
        _load_weights(classifier, ckpt / CLASSIFIER_FILE, "classifier")
    label_encoder = args.label_encoder or hparams.get("label_encoder_file")
    if label_encoder is not None and not Path(label_encoder).is_file():
        if args.label_encoder is not None:
            raise FileNotFoundError(f"label encoder file not found: {label_encoder}")
        label_encoder = None
    if classifier is None:
        label_encoder = None
    card = {
        "title": args.title,
        "training_data": args.training_data,
        "method": args.method,
        "eer": args.eer,
        "eer_trials": args.eer_trials,
    }
    folder = export_model(
        args.output,
        embedding_model,
        classifier=classifier,
        label_encoder=label_encoder,
        n_mels=hparams.get("n_mels", infer_ecapa_kwargs(embedding_model)["input_size"]),
        sample_rate=hparams.get("sample_rate", 16000),
        card={k: v for k, v in card.items() if v is not None},
    )
    print(f"Exported {ckpt} to {folder}")
    if args.onnx is not None:
        _export_onnx_files(folder, args.onnx, args.int8)


def _export_onnx_files(folder, onnx_file, int8):
    """Writes a hub-layout folder as ONNX (``onnx_file`` "" for the default)."""
    # Imported here: the ONNX exporter and runtime are only needed for --onnx.
    from speechbrain_imlkd.onnx_export import export_folder

    export_folder(folder, onnx_file or None, int8=int8)


if __name__ == "__main__":
    main()
