#!/usr/bin/env python3
"""Recipe: distil a real pretrained teacher into a small ECAPA student on LibriSpeech.

The teacher is the GE2E encoder shipped in the ``resemblyzer`` wheel
(``teacher_source: resemblyzer``); its front end (40-band power mel) differs
from the student's (80-band log Fbank), so IG is taken on the teacher's own
features and carried to the student's (``saliency_band_mapping``). One YAML
per method, each the VoxCeleb1 recipe's method file with ``common.yaml``
laid over it:

    pip install --no-deps resemblyzer==0.1.4
    python train_kd.py hparams/imlkd.yaml --data_folder=/path/LibriSpeech/train-clean-100
    # the baselines: scratch.yaml, kd.yaml, emb_kd.yaml, mlkd.yaml (and attr_kd.yaml)

Steps: speaker-disjoint preparation with dev and test trial lists
(:func:`speechbrain_imlkd.data.librispeech.prepare_librispeech`), then the
shared distillation recipe
(:func:`speechbrain_imlkd.recipe_utils.run_kd_recipe`): training, export of
the best student in the hub layout, scoring on the dev and test trials.

Authors
 * speechbrain-imlkd contributors
"""

from speechbrain.utils.distributed import run_on_main

from speechbrain_imlkd.data.librispeech import prepare_librispeech
from speechbrain_imlkd.hparams_utils import load_recipe_hparams
from speechbrain_imlkd.recipe_utils import (
    as_override_dict,
    run_kd_recipe,
    size_to_training_speakers,
)


def load_hparams(hparams_file, overrides):
    """Loads the YAML, prepares LibriSpeech and sizes the classifier.

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
            prepare_librispeech,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["prep_folder"],
                "n_dev_speakers": hparams["n_dev_speakers"],
                "n_test_speakers": hparams["n_test_speakers"],
                "seg_dur": hparams["seg_dur"],
                "split_ratio": hparams["split_ratio"],
                "trial_window": hparams["trial_window"],
                "n_windows": hparams["n_windows"],
                "nontarget_per_target": hparams["nontarget_per_target"],
                "seed": hparams["prep_seed"],
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
