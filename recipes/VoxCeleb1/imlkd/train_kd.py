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

from speechbrain.utils.distributed import run_on_main

from speechbrain_imlkd.data.voxceleb import prepare_voxceleb1
from speechbrain_imlkd.hparams_utils import load_recipe_hparams
from speechbrain_imlkd.recipe_utils import (
    as_override_dict,
    run_kd_recipe,
    size_to_training_speakers,
)


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
    hparams : dict
        Hyperparameters whose classifier has one output per training speaker.
    overrides : dict
        The overrides, with ``n_train_speakers`` when it was resized.
    """
    overrides = as_override_dict(overrides)
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
    return size_to_training_speakers(hparams_file, hparams, overrides)


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
    return run_kd_recipe(load_hparams, argv)


if __name__ == "__main__":
    main()
