#!/usr/bin/env python3
"""Recipe: precompute the resemblyzer teacher's IG targets for IML-KD on LibriSpeech.

What ``recipes/VoxCeleb1/imlkd/compute_ig.py`` does, on this recipe's data
(same YAML and overrides as this ``train_kd.py``; ``ig_mode: cached``
training then runs no teacher pass; the steps and the ``torchrun`` use are
in the VoxCeleb1 script's docstring):

    python compute_ig.py hparams/imlkd.yaml --data_folder=/path/LibriSpeech/train-clean-100

Authors
 * speechbrain-imlkd contributors
"""

from speechbrain_imlkd.recipe_utils import run_ig_precompute
from train_kd import load_hparams


def main(argv=None):
    """Builds (or completes) the IG cache of the recipe's training CSV.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The cache key.
    """
    return run_ig_precompute(load_hparams, argv)

if __name__ == "__main__":
    main()
