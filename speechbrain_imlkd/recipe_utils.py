"""Steps shared by the recipe scripts: teacher set-up, export, evaluation.

``train_kd.py`` stays a short script that wires YAML to these functions and
to :class:`speechbrain_imlkd.brain.KDBrain`.

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
from pathlib import Path

from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.models import count_parameters
from speechbrain_imlkd.teacher import load_teacher

logger = logging.getLogger(__name__)


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
        ``verification_file``, ``output_folder``, ``eval_norm``).
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
        hparams["data_folder"],
        hparams["verification_file"],
        out,
        norm=hparams["eval_norm"],
        cohort_csv=hparams["train_csv"] if hparams["eval_norm"] != "none" else None,
        run_opts=run_opts,
        sample_rate=hparams["sample_rate"],
        progress=False,
    )
    results["parameters"] = count_parameters(hparams["embedding_model"])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
