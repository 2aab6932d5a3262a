#!/usr/bin/env python3
"""Recipe for training an ECAPA-TDNN speaker model (the IML-KD teacher).

The embedding model is trained as a speaker classifier with the AAM softmax
on VoxCeleb1 dev (or the synthetic corpus in the same layout), as the hub
teacher ``speechbrain/spkrec-ecapa-voxceleb`` was. At the end, the best
checkpoint is exported in the hub layout to ``<output_folder>/exported``
(loadable by ``EncoderClassifier.from_hparams`` and by
:func:`speechbrain_imlkd.teacher.load_teacher`) and scored on the trial list.

To run this recipe:

> python train_teacher.py hparams/train_teacher_ecapa.yaml --data_folder=...

Re-running the same command resumes from the last checkpoint.

Authors
 * speechbrain-imlkd contributors 2025
"""

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_imlkd.data.dataset import train_dev_datasets
from speechbrain_imlkd.data.voxceleb import prepare_voxceleb1
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.hparams_utils import load_recipe_hparams
from speechbrain_imlkd.recipe_utils import (
    as_override_dict,
    check_label_encoder,
    leave_process_group,
    recipe_preamble,
    size_to_training_speakers,
)

try:  # scoring is optional for training; without it the export is not scored
    from speechbrain_imlkd.scoring import evaluate_model
except ImportError:  # pragma: no cover - depends on the installed package
    evaluate_model = None

logger = get_logger(__name__)


class TeacherBrain(sb.core.Brain):
    """Trains an ECAPA-TDNN embedding model as a speaker classifier."""

    def compute_forward(self, batch, stage):
        """Computes speaker cosine scores from the waveforms.

        Arguments
        ---------
        batch : PaddedBatch
            This batch object contains all the relevant tensors for computation.
        stage : sb.Stage
            One of sb.Stage.TRAIN, sb.Stage.VALID, or sb.Stage.TEST.

        Returns
        -------
        predictions : torch.Tensor
            ``B x 1 x N`` cosine similarities to the speaker prototypes.
        lens : torch.Tensor
            Relative lengths of the (possibly augmented) batch.
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig

        # Augmented copies are appended to the clean batch (concat_original).
        if stage == sb.Stage.TRAIN and self.hparams.use_augmentation:
            wavs, lens = self.hparams.wav_augment(wavs, lens)

        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        embeddings = self.modules.embedding_model(feats, lens)
        predictions = self.modules.classifier(embeddings)
        return predictions, lens

    def compute_objectives(self, predictions, batch, stage):
        """Computes the AAM-softmax loss against the speaker labels.

        Arguments
        ---------
        predictions : tuple
            The output of ``compute_forward``.
        batch : PaddedBatch
            This batch object contains all the relevant tensors for computation.
        stage : sb.Stage
            One of sb.Stage.TRAIN, sb.Stage.VALID, or sb.Stage.TEST.

        Returns
        -------
        loss : torch.Tensor
            A one-element tensor used for backpropagating the gradient.
        """
        predictions, lens = predictions
        spkid, _ = batch.spk_id_encoded

        if stage == sb.Stage.TRAIN and self.hparams.use_augmentation:
            spkid = self.hparams.wav_augment.replicate_labels(spkid)

        loss = self.hparams.compute_cost(predictions, spkid, lens)

        if stage != sb.Stage.TRAIN:
            self.error_metrics.append(batch.id, predictions, spkid, lens)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps a per-batch learning-rate scheduler, if one is configured.

        Arguments
        ---------
        batch : PaddedBatch
            The batch that was just processed.
        outputs : tuple
            The output of ``compute_forward``.
        loss : torch.Tensor
            The loss of the batch.
        should_step : bool
            Whether the optimizer stepped on this batch.
        """
        if should_step and hasattr(self.hparams.lr_annealing, "on_batch_end"):
            self.hparams.lr_annealing.on_batch_end(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Prepares the classification error tracker for dev/test stages.

        Arguments
        ---------
        stage : sb.Stage
            One of sb.Stage.TRAIN, sb.Stage.VALID, or sb.Stage.TEST.
        epoch : int
            The currently-starting epoch.
        """
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs statistics, anneals the learning rate and saves a checkpoint.

        Arguments
        ---------
        stage : sb.Stage
            One of sb.Stage.TRAIN, sb.Stage.VALID, sb.Stage.TEST.
        stage_loss : float
            The average loss for all of the data processed in this stage.
        epoch : int
            The currently-starting epoch.
        """
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["ErrorRate"] = self.error_metrics.summarize("average")

        if stage == sb.Stage.VALID:
            current_lr = self.optimizer.param_groups[0]["lr"]
            if not hasattr(self.hparams.lr_annealing, "on_batch_end"):
                _, new_lr = self.hparams.lr_annealing(epoch)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            # The most recent checkpoint (for resuming) and the best one
            # (for export) are kept.
            self.checkpointer.save_and_keep_only(
                meta={"ErrorRate": stage_stats["ErrorRate"]},
                min_keys=["ErrorRate"],
            )


def load_hparams(hparams_file, overrides):
    """Loads the YAML, prepares the data and sizes the classifier to its speakers.

    Arguments
    ---------
    hparams_file : str
        The recipe YAML.
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
    run_on_main(
        prepare_voxceleb1,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prep_folder"],
            "verification_pairs_file": hparams["verification_file"],
            "splits": ["train", "dev"],
            "split_ratio": hparams["split_ratio"],
            "seg_dur": hparams["seg_dur"],
            "sample_rate": hparams["sample_rate"],
            "skip_prep": hparams["skip_prep"],
        },
    )
    return size_to_training_speakers(
        hparams_file, hparams, overrides, csv_key="train_annotation"
    )


def prepare_data(hparams):
    """Builds the datasets of the prepared CSVs.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.

    Returns
    -------
    train_data : DynamicItemDataset
        Training segments.
    valid_data : DynamicItemDataset
        Dev segments of the training speakers.
    label_encoder : CategoricalEncoder
        Training speakers to classifier indices.
    """
    return train_dev_datasets(
        hparams["train_annotation"],
        hparams["valid_annotation"],
        hparams["label_encoder_file"],
        sample_rate=hparams["sample_rate"],
        random_chunk=hparams["random_chunk"],
        chunk_seconds=hparams["chunk_seconds"],
    )


def export_and_evaluate(brain, hparams, label_encoder):
    """Exports the best checkpoint and scores it on the trial list.

    Arguments
    ---------
    brain : TeacherBrain
        The trained brain (its best checkpoint is loaded first).
    hparams : dict
        The loaded hyperparameters.
    label_encoder : CategoricalEncoder
        The training speaker labels.

    Returns
    -------
    folder : pathlib.Path
        The exported model folder.
    results : dict or None
        The output of ``evaluate_model``, or None when not evaluated.
    """
    brain.checkpointer.recover_if_possible(min_key="ErrorRate")
    card = {
        "title": f"ECAPA-TDNN (C={hparams['channels']}) speaker embeddings",
        "training_data": hparams["card_training_data"],
        "method": hparams["card_method"],
    }
    export_kwargs = dict(
        embedding_model=brain.modules.embedding_model,
        classifier=brain.modules.classifier,
        label_encoder=label_encoder,
        model_hparams={
            "channels": hparams["channels"],
            "lin_neurons": hparams["lin_neurons"],
            "attention_channels": hparams["attention_channels"],
        },
        n_mels=hparams["n_mels"],
        sample_rate=hparams["sample_rate"],
    )
    folder = export_model(hparams["export_folder"], card=card, **export_kwargs)
    logger.info("Exported the best checkpoint to %s", folder)
    if not hparams["evaluate"] or evaluate_model is None:
        return folder, None
    results = evaluate_model(
        folder,
        hparams["data_folder"],
        hparams["verification_file"],
        hparams["eval_folder"],
        batch_size=hparams["eval_batch_size"],
        chunk_seconds=hparams["eval_chunk_seconds"],
        run_opts={"device": str(brain.device)},
        sample_rate=hparams["sample_rate"],
        progress=False,
    )
    (name, scores), *_ = results["trials"].items()
    eer = 100.0 * scores["eer"]
    logger.info("EER on %s: %.2f%%", name, eer)
    # Rewritten so that the model card carries the measured EER.
    card.update(eer=eer, eer_trials=name)
    export_model(hparams["export_folder"], card=card, **export_kwargs)
    return folder, results


def main(argv=None):
    """Runs the recipe: prepare, train (resuming if possible), export, score.

    Arguments
    ---------
    argv : list of str or None
        Command line (``sys.argv[1:]`` when None): the hparams file, then
        SpeechBrain options and overrides.

    Returns
    -------
    brain : TeacherBrain
        The trained brain.
    folder : pathlib.Path or None
        The exported model folder (None on non-main processes).
    """
    hparams_file, run_opts, hparams, overrides = recipe_preamble(load_hparams, argv)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    train_data, valid_data, label_encoder = prepare_data(hparams)
    check_label_encoder(label_encoder, hparams)

    brain = TeacherBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )

    folder = None
    if if_main_process():
        folder, _ = export_and_evaluate(brain, hparams, label_encoder)
    # Under torchrun, lets gloo's threads finish before the interpreter exits.
    leave_process_group()
    return brain, folder


if __name__ == "__main__":
    main()
