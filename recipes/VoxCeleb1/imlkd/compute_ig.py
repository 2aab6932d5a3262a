#!/usr/bin/env python3
"""Recipe: precompute the teacher's Integrated-Gradients targets for IML-KD.

Takes the same YAML and overrides as ``train_kd.py``; with ``ig_mode:
cached`` training then reads the cache and runs no teacher pass:

    python compute_ig.py hparams/imlkd_ecapa.yaml --data_folder=/path/VoxCeleb1 \\
        --teacher_source=speechbrain/spkrec-ecapa-voxceleb

    # the ranks share the chunks (one GPU each; gloo on CPUs):
    torchrun --standalone --nproc_per_node=4 compute_ig.py hparams/imlkd_ecapa.yaml ...

Steps: data preparation (main process), teacher loading and speaker mapping
(as ``train_kd.py``), then :func:`speechbrain_imlkd.ig_cache.prepare_ig_cache`
with rebuild on: a stale cache (other teacher, CSV or setting) is rebuilt,
an interrupted one resumes, torn shards are redone.

Authors
 * speechbrain-imlkd contributors
"""

import logging
import sys

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from speechbrain_imlkd.data.dataset import train_dev_datasets
from speechbrain_imlkd.ig_cache import key_hash, prepare_ig_cache
from speechbrain_imlkd.recipe_utils import prepare_teacher
from train_kd import load_hparams

logger = logging.getLogger(__name__)


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
    hparams_file, run_opts, overrides = sb.parse_arguments(
        sys.argv[1:] if argv is None else argv
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams, _ = load_hparams(hparams_file, overrides)
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
    return key


if __name__ == "__main__":
    main()
