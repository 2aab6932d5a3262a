#!/usr/bin/env python3
"""Recipe: score an exported speaker-embedding model on VoxCeleb1 trial lists.

    python verify.py hparams/verify.yaml --model_dir=results/imlkd/seed1986/exported \\
        --data_folder=/path/VoxCeleb1 \\
        [--trials_e=/path/list_test_all2.txt --trials_h=/path/list_test_hard2.txt] \\
        [--norm=asnorm --cohort_csv=results/prepared/train.csv]

Writes, in ``output_folder``: ``scores_<list>.txt`` (``<label> <enrol> <test>
<score>`` lines) per trial list, ``results.json`` (EER, minDCF at each prior,
trial counts, normalisation, model) and ``det.png``. The work is done by
:func:`speechbrain_imlkd.scoring.evaluate_model`, which the training recipes
call for their final evaluation too.

Authors
 * speechbrain-imlkd contributors
"""

import json
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    trials = {k: v for k, v in hparams["trial_lists"].items() if v is not None}
    results = hparams["evaluate"](
        trials=trials, run_opts={"device": run_opts.get("device", "cpu")}
    )
    print(json.dumps(results["trials"], indent=2))
