#!/usr/bin/env python3
"""Recipe: precompute the resemblyzer teacher's IG targets for IML-KD on LibriSpeech.

Takes the same YAML and overrides as ``train_kd.py``; with ``ig_mode:
cached`` training then reads the cache and runs no teacher pass:

    python compute_ig.py hparams/imlkd.yaml --data_folder=/path/LibriSpeech/train-clean-100

    # the ranks share the chunks (one GPU each; gloo on CPUs):
    torchrun --standalone --nproc_per_node=4 compute_ig.py hparams/imlkd.yaml ...

Steps: data preparation (main process), teacher loading and speaker mapping
(as ``train_kd.py``), then :func:`speechbrain_imlkd.ig_cache.prepare_ig_cache`
with rebuild on: a stale cache (other teacher, CSV or setting) is rebuilt,
an interrupted one resumes, torn shards are redone.

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
