"""Steps shared by the recipe scripts: start-up, classifier size, teacher, export, evaluation.

``train_teacher.py``, ``train_kd.py`` and ``compute_ig.py`` stay short
scripts that wire YAML to these functions and to their Brain. All three
start the same way (:func:`recipe_preamble`) and size their classifier the
same way (:func:`size_to_training_speakers`): the YAML builds it with
``n_train_speakers`` outputs, reloaded with the training CSV's speaker count
when the two differ.

Example
-------
>>> import tempfile, pathlib
>>> csv = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = csv.write_text("ID,duration,wav,start,stop,spk_id\\n"
...                    "a,1,x.wav,0,16000,id1\\nb,1,y.wav,0,16000,id2\\n")
>>> count_speakers(csv)
2
"""

import csv
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.hparams_utils import load_recipe_hparams
from speechbrain_imlkd.models import count_parameters
from speechbrain_imlkd.teacher import load_teacher

logger = logging.getLogger(__name__)

#: Hyperparameter holding the classifier's number of outputs in every recipe YAML.
N_SPEAKERS_KEY = "n_train_speakers"
#: Seconds a rank of a distributed run waits, without holding the GIL, before
#: it exits: time for the gloo worker threads to release the last works (see
#: :func:`leave_process_group`). Far above the microseconds that takes.
GLOO_DRAIN_SECONDS = 1.0


def recipe_preamble(load_hparams, argv=None):
    """Parses a recipe's command line, starts DDP and loads its hyperparameters.

    Arguments
    ---------
    load_hparams : callable
        ``(hparams_file, overrides) -> (hparams, overrides)``: the recipe's
        loader (data preparation, classifier size), e.g.
        ``train_kd.load_hparams``.
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``): the YAML, then
        SpeechBrain options and overrides.

    Returns
    -------
    hparams_file : str
        The YAML file.
    run_opts : dict
        SpeechBrain run options (device, distributed settings, ...).
    hparams : dict
        The loaded hyperparameters.
    overrides : dict
        The overrides, as ``load_hparams`` returned them.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "h.yaml"
    >>> _ = f.write_text("width: 1\\n")
    >>> load = lambda path, over: (load_recipe_hparams(path, over), as_override_dict(over))
    >>> _, _, hp, over = recipe_preamble(load, [str(f), "--width=2", "--device=cpu"])
    >>> hp["width"], over
    (2, {'width': 2})
    """
    import speechbrain as sb

    hparams_file, run_opts, overrides = sb.parse_arguments(
        sys.argv[1:] if argv is None else argv
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams, overrides = load_hparams(hparams_file, overrides)
    return hparams_file, run_opts, hparams, overrides


def leave_process_group(drain_seconds=GLOO_DRAIN_SECONDS):
    """Lets the gloo threads finish, then destroys the ``torch.distributed`` group.

    A gloo worker thread frees a finished collective after the rank has
    moved on; freeing the tensors of a collective called from Python (e.g.
    the broadcast of ``run_on_main``, which the barrier after it keeps
    alive) needs the GIL. A rank that exits right after its last barrier can
    reach interpreter shutdown first: the worker then dies taking the GIL
    and the process aborts (SIGABRT, "terminate called without an active
    exception", seen in a core dump of the two-process test), so torchrun
    fails a run that had finished its work. Sleeping releases the GIL for
    those threads; destroying the group then joins them when nothing else
    holds it (DDP keeps a reference, hence the wait first). Called at the
    end of a recipe on every rank. Not a collective: a rank done before the
    others (the main process still scoring) leaves on its own.

    Arguments
    ---------
    drain_seconds : float
        How long to wait (only when a group exists).

    Example
    -------
    >>> leave_process_group()  # no group: returns at once
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        time.sleep(drain_seconds)
        dist.destroy_process_group()


def as_override_dict(overrides):
    """Command-line overrides (a YAML string, a dict or None) as a new dict.

    Arguments
    ---------
    overrides : str, dict or None
        As returned by ``speechbrain.parse_arguments`` (a YAML string) or
        given by a caller.

    Returns
    -------
    dict

    Example
    -------
    >>> as_override_dict("lr: 0.1\\nseed: 3\\n"), as_override_dict(None)
    ({'lr': 0.1, 'seed': 3}, {})
    """
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides)
    return dict(overrides or {})


def size_to_training_speakers(hparams_file, hparams, overrides, csv_key="train_csv"):
    """Sizes a recipe's classifier to the speakers of its training CSV.

    The recipe YAML builds its classifier with ``n_train_speakers`` outputs.
    When the training CSV (prepared by then) holds another number of
    speakers, the YAML is loaded again with that number as an override, so
    that every object referring to the classifier (modules, checkpointer,
    distillers) gets the resized one; the YAML's seed is set again first, so
    the models start as if loaded once with the right size.

    Arguments
    ---------
    hparams_file : str or pathlib.Path
        The recipe YAML (``extends`` followed).
    hparams : dict
        Its hyperparameters, as loaded with ``overrides``.
    overrides : str, dict or None
        The command-line overrides.
    csv_key : str
        Hyperparameter naming the training CSV.

    Returns
    -------
    hparams : dict
        Hyperparameters whose ``n_train_speakers`` is the CSV's count.
    overrides : dict
        The overrides, with ``n_train_speakers`` when it was changed.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "train.csv").write_text("ID,spk_id\\na,s1\\nb,s2\\nc,s3\\n")
    >>> _ = (d / "h.yaml").write_text(
    ...     f"train_csv: {d / 'train.csv'}\\nn_train_speakers: 1211\\n"
    ...     "classifier: !apply:speechbrain_imlkd.models.build_classifier\\n"
    ...     "    n_speakers: !ref <n_train_speakers>\\n    lin_neurons: 4\\n")
    >>> hp, over = size_to_training_speakers(d / "h.yaml", load_recipe_hparams(d / "h.yaml"), {})
    >>> over, hp["classifier"].weight.shape[0]
    ({'n_train_speakers': 3}, 3)
    """
    overrides = as_override_dict(overrides)
    n_speakers = count_speakers(hparams[csv_key])
    if N_SPEAKERS_KEY not in hparams:
        raise KeyError(
            f"{hparams_file} has no {N_SPEAKERS_KEY!r}: the classifier must be built "
            f"with !ref <{N_SPEAKERS_KEY}> outputs"
        )
    if n_speakers != hparams[N_SPEAKERS_KEY]:
        logger.info(
            "%s has %d speakers, not %s: classifier resized",
            hparams[csv_key], n_speakers, hparams[N_SPEAKERS_KEY],
        )
        overrides[N_SPEAKERS_KEY] = n_speakers
        hparams = load_recipe_hparams(hparams_file, overrides)
    return hparams, overrides


def check_label_encoder(label_encoder, hparams, encoder_key="label_encoder_file"):
    """Raises unless the label encoder has one class per classifier output.

    A label encoder saved by an earlier run is reused (same indices on
    resume); if the training CSV was prepared again with fewer speakers, its
    extra classes would index past the classifier.

    Arguments
    ---------
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        The training speakers' encoder.
    hparams : dict
        Recipe hyperparameters (``n_train_speakers`` and ``encoder_key``).
    encoder_key : str
        Hyperparameter naming the encoder's file (for the message).

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> enc = CategoricalEncoder()
    >>> enc.update_from_iterable(["s1", "s2", "s3"])
    >>> check_label_encoder(enc, {"n_train_speakers": 2, "label_encoder_file": "enc.txt"})
    Traceback (most recent call last):
    ...
    ValueError: enc.txt has 3 speakers but the classifier 2 outputs (n_train_speakers): remove the stale label encoder, or the output folder, and run again
    """
    if len(label_encoder) != hparams[N_SPEAKERS_KEY]:
        raise ValueError(
            f"{hparams.get(encoder_key, 'the label encoder')} has {len(label_encoder)} "
            f"speakers but the classifier {hparams[N_SPEAKERS_KEY]} outputs "
            f"({N_SPEAKERS_KEY}): remove the stale label encoder, or the output "
            "folder, and run again"
        )


def count_speakers(csv_path):
    """Counts the distinct ``spk_id`` values of a SpeechBrain CSV.

    Arguments
    ---------
    csv_path : str or Path
        A CSV with a ``spk_id`` column.

    Returns
    -------
    int
        The number of speakers.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("ID,spk_id\\na,s1\\nb,s1\\n")
    >>> count_speakers(p)
    1
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"training CSV not found: {csv_path} (run data preparation)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "spk_id" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path} has no spk_id column")
        speakers = {row["spk_id"] for row in reader}
    if not speakers:
        raise ValueError(f"{csv_path} has no rows")
    return len(speakers)


def prepare_teacher(hparams, run_opts, label_encoder, train_dataset):
    """Loads the frozen teacher and maps the training speakers to its posteriors.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters: ``teacher_source``, ``teacher_savedir``,
        ``n_mels``, ``sample_rate``, ``teacher_posteriors``,
        ``teacher_logit_scale``.
    run_opts : dict
        SpeechBrain run options (device).
    label_encoder : CategoricalEncoder
        The student's training-speaker encoder (defines the class order).
    train_dataset : DynamicItemDataset
        Training data, for centroid posteriors.

    Returns
    -------
    speechbrain_imlkd.teacher.Teacher
        The frozen teacher, with :meth:`~Teacher.logits` over the training
        speakers in the student's class order.

    Example
    -------
    >>> # See tests/test_train_kd.py (needs an exported teacher folder).
    >>> callable(prepare_teacher)
    True
    """
    teacher = load_teacher(
        hparams["teacher_source"],
        hparams["teacher_savedir"],
        run_opts=run_opts,
        expected_n_mels=hparams["n_mels"],
        expected_sample_rate=hparams["sample_rate"],
    )
    mode = teacher.set_training_speakers(
        label_encoder,
        mode=hparams["teacher_posteriors"],
        centroid_scale=hparams["teacher_logit_scale"],
        logit_scale=hparams["teacher_logit_scale"],
        centroid_data=train_dataset,
    )
    logger.info("teacher %s: posteriors in %s mode", hparams["teacher_source"], mode)
    return teacher


def export_student(brain, hparams, label_encoder):
    """Exports the student with the best dev EER in the hub layout.

    Arguments
    ---------
    brain : KDBrain
        The trained Brain (its checkpointer holds the best checkpoint).
    hparams : dict
        Recipe hyperparameters (``export_folder``, ``embedding_model``,
        ``classifier``, ``n_mels``, ``sample_rate``, ``method``).
    label_encoder : CategoricalEncoder
        Training speakers.

    Returns
    -------
    pathlib.Path
        The exported folder.

    Example
    -------
    >>> callable(export_student)
    True
    """
    ckpt = brain.checkpointer.recover_if_possible(min_key="EER")
    meta = ckpt.meta if ckpt is not None else {}
    card = {
        "title": f"ECAPA-TDNN student ({hparams['method']})",
        "training_data": str(hparams["train_csv"]),
        "method": hparams["method"],
        "notes": f"best dev EER {meta.get('EER')}; teacher "
        f"{hparams.get('teacher_source') if hparams['method'] != 'scratch' else 'none'}",
    }
    folder = export_model(
        hparams["export_folder"],
        hparams["embedding_model"],
        classifier=hparams["classifier"],
        label_encoder=label_encoder,
        n_mels=hparams["n_mels"],
        sample_rate=hparams["sample_rate"],
        card=card,
    )
    logger.info("exported the student to %s", folder)
    return folder


def evaluate_student(hparams, run_opts=None):
    """Scores the exported student on the trial list and saves ``results.json``.

    Arguments
    ---------
    hparams : dict
        Recipe hyperparameters (``export_folder``, ``data_folder``,
        ``verification_file``, ``output_folder``, ``eval_norm``; optionally
        ``eval_data_folder`` and ``eval_trials``, a ``{name: trial list}``
        scored instead of ``verification_file`` under ``data_folder``).
    run_opts : dict, optional
        SpeechBrain run options.

    Returns
    -------
    dict
        The evaluation results, plus ``parameters`` of the student.

    Example
    -------
    >>> callable(evaluate_student)
    True
    """
    from speechbrain_imlkd.scoring import evaluate_model

    out = Path(hparams["output_folder"]) / "eval"
    results = evaluate_model(
        hparams["export_folder"],
        # A corpus whose trial utterances live elsewhere (LibriSpeech windows)
        # names them with eval_data_folder and eval_trials ({name: list}).
        hparams.get("eval_data_folder", hparams["data_folder"]),
        hparams.get("eval_trials", hparams["verification_file"]),
        out,
        norm=hparams["eval_norm"],
        cohort_csv=hparams["train_csv"] if hparams["eval_norm"] != "none" else None,
        run_opts=run_opts,
        sample_rate=hparams["sample_rate"],
        progress=False,
        extra={"parameters": count_parameters(hparams["embedding_model"])},
    )
    return results


def run_kd_recipe(load_hparams, argv=None):
    """The distillation recipe: prepare, train, export and score one student.

    Shared by every corpus's ``train_kd.py``, which only brings its own
    ``load_hparams`` (data preparation, classifier size). Steps: the
    preamble (:func:`recipe_preamble`), the training datasets, the teacher
    and its speaker mapping (skipped for ``scratch``), the IG cache when
    ``ig_mode: cached``, ``KDBrain.fit`` with per-epoch validation and
    checkpoints, export of the best student in the hub layout and, when
    ``evaluate_after_training``, scoring (:func:`evaluate_student`).

    Arguments
    ---------
    load_hparams : callable
        ``(hparams_file, overrides) -> (hparams, overrides)``.
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The final evaluation results (empty when evaluation is off).

    Example
    -------
    >>> # Run by recipes/*/imlkd/train_kd.py; see tests/test_train_kd.py.
    >>> callable(run_kd_recipe)
    True
    """
    import speechbrain as sb
    from speechbrain.utils.distributed import if_main_process, run_on_main

    from speechbrain_imlkd.brain import KDBrain
    from speechbrain_imlkd.data.dataset import TRAIN_OUTPUT_KEYS, train_dev_datasets
    from speechbrain_imlkd.hparams_utils import merged_yaml_text
    from speechbrain_imlkd.ig_cache import prepare_ig_cache

    hparams_file, run_opts, hparams, overrides = recipe_preamble(load_hparams, argv)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], overrides=overrides
    )
    if if_main_process():
        Path(hparams["output_folder"], "hyperparams.yaml").write_text(
            merged_yaml_text(hparams_file)
        )

    train_ds, dev_ds, label_encoder = train_dev_datasets(
        hparams["train_csv"],
        hparams["dev_csv"],
        hparams["label_encoder_file"],
        sample_rate=hparams["sample_rate"],
    )
    check_label_encoder(label_encoder, hparams)
    # The source file lets the dev EER leave out pairs cut from one file.
    sb.dataio.dataset.set_output_keys([train_ds, dev_ds], TRAIN_OUTPUT_KEYS + ["wav"])
    teacher = None
    if hparams["distiller"].uses_teacher:
        teacher = prepare_teacher(hparams, run_opts, label_encoder, train_ds)
    if teacher is not None and hparams.get("ig_mode") == "cached":
        # On every rank, not run_on_main: under torchrun the ranks share the
        # precomputation (each its own shards, then a barrier).
        prepare_ig_cache(hparams, teacher)

    brain = KDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        teacher=teacher,
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_ds,
        dev_ds,
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )

    results = {}
    run_on_main(export_student, args=[brain, hparams, label_encoder])
    if hparams["evaluate_after_training"] and if_main_process():
        results = evaluate_student(hparams, run_opts)
        logger.info("final evaluation: %s", json.dumps(results))
    leave_process_group()
    return results


def run_ig_precompute(load_hparams, argv=None):
    """Builds (or completes) the IG cache of a recipe's training CSV.

    Shared by every corpus's ``compute_ig.py``: the preamble, the training
    data, the teacher and its speaker mapping (as in :func:`run_kd_recipe`),
    then :func:`speechbrain_imlkd.ig_cache.prepare_ig_cache` with rebuild on.

    Arguments
    ---------
    load_hparams : callable
        ``(hparams_file, overrides) -> (hparams, overrides)``.
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The cache key.

    Example
    -------
    >>> # Run by recipes/*/imlkd/compute_ig.py; see tests/test_ig_cache.py.
    >>> callable(run_ig_precompute)
    True
    """
    from speechbrain.utils.distributed import if_main_process

    from speechbrain_imlkd.data.dataset import train_dev_datasets
    from speechbrain_imlkd.ig_cache import key_hash, prepare_ig_cache

    _, run_opts, hparams, _ = recipe_preamble(load_hparams, argv)
    train_ds, _, label_encoder = train_dev_datasets(
        hparams["train_csv"],
        hparams["dev_csv"],
        hparams["label_encoder_file"],
        sample_rate=hparams["sample_rate"],
    )
    teacher = prepare_teacher(hparams, run_opts, label_encoder, train_ds)
    key = prepare_ig_cache(hparams, teacher, rebuild=True)
    if if_main_process():
        logger.info("IG cache ready (teacher %s, key %s)", key["teacher"][:12], key_hash(key)[:12])
    leave_process_group()
    return key

