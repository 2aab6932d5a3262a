#!/usr/bin/env python3
"""Recipe: distil a frozen ECAPA-TDNN teacher into a small ECAPA student.

One script for every method; the YAML picks it (``distiller``):

    python train_kd.py hparams/imlkd_ecapa.yaml --data_folder=/path/VoxCeleb1 \\
        --teacher_source=speechbrain/spkrec-ecapa-voxceleb

    # the baselines: scratch_ecapa.yaml, kd_ecapa.yaml, emb_kd_ecapa.yaml, mlkd_ecapa.yaml
    # several GPUs / CPU processes:
    torchrun --standalone --nproc_per_node=2 train_kd.py hparams/imlkd_ecapa.yaml ...

Steps: data preparation (on the main process), teacher loading and speaker
mapping, training with per-epoch validation (classification error and dev
EER), checkpointing and resume, export of the best student in the hub
layout, and scoring on the trial list.

Authors
 * speechbrain-imlkd contributors
"""

import json
import logging
import sys
from pathlib import Path

import speechbrain as sb
import yaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_imlkd.brain import KDBrain
from speechbrain_imlkd.data.dataset import TRAIN_OUTPUT_KEYS, train_dev_datasets
from speechbrain_imlkd.data.voxceleb import prepare_voxceleb1
from speechbrain_imlkd.ig_cache import prepare_ig_cache
from speechbrain_imlkd.hparams_utils import load_recipe_hparams, merged_yaml_text
from speechbrain_imlkd.recipe_utils import (
    evaluate_student,
    count_speakers,
    export_student,
    prepare_teacher,
)

logger = logging.getLogger(__name__)


def load_hparams(hparams_file, overrides):
    """Loads the YAML, prepares the data and fixes the number of speakers.

    Arguments
    ---------
    hparams_file : str
        The method YAML.
    overrides : str or dict
        Command-line overrides.

    Returns
    -------
    dict
        Hyperparameters whose classifier has one output per training speaker.
    """
    overrides = yaml.safe_load(overrides) if isinstance(overrides, str) else overrides
    overrides = dict(overrides or {})
    hparams = load_recipe_hparams(hparams_file, overrides)
    if not hparams["skip_prep"]:
        run_on_main(
            prepare_voxceleb1,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["prep_folder"],
                "verification_pairs_file": hparams["verification_file"],
                "split_ratio": hparams["split_ratio"],
                "seg_dur": hparams["seg_dur"],
                "sample_rate": hparams["sample_rate"],
            },
        )
    n_speakers = count_speakers(hparams["train_csv"])
    if n_speakers != hparams["n_train_speakers"]:
        logger.info("train.csv has %d speakers: classifier resized", n_speakers)
        overrides["n_train_speakers"] = n_speakers
        hparams = load_recipe_hparams(hparams_file, overrides)
    return hparams, overrides


def main(argv=None):
    """Runs the recipe.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The final evaluation results (empty when evaluation is off).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(
        sys.argv[1:] if argv is None else argv
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams, overrides = load_hparams(hparams_file, overrides)
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
    return results


if __name__ == "__main__":
    main()
