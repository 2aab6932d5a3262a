"""KDBrain: a SpeechBrain Brain that trains a student with any distiller.

The Brain runs the student on the clean chunk, computes its AAM-softmax
classification loss and asks its distiller (``hparams.distiller``, chosen in
YAML, see :mod:`speechbrain_imlkd.distillers`) for the distillation term.
It knows nothing of the individual methods.

The frozen teacher is passed to the constructor and kept as a plain
attribute: it is not in ``self.modules``, so ``Brain.fit`` cannot switch it
to train mode, the checkpointer does not save it and DDP does not wrap it.

Example
-------
>>> import torch
>>> from speechbrain_imlkd.brain import dev_pair_scores
>>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
>>> scores, labels = dev_pair_scores(emb, ["a", "a", "b"], ["f1", "f2", "f3"])
>>> labels.tolist()
[1, 0, 0]

Authors
 * speechbrain-imlkd contributors
"""

import logging
import time

import numpy as np
import speechbrain as sb
import torch

from speechbrain_imlkd.distillers import DistillationBatch
from speechbrain_imlkd.integrated_inputs import saliency_mapping_for

logger = logging.getLogger(__name__)


def dev_pair_scores(embeddings, speakers, sources, max_pairs=None, seed=0):
    """Cosine scores of all pairs of dev embeddings from different source files.

    Pairs of chunks cut from the same file are left out, since they would
    make the dev EER look better than cross-utterance verification.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``N x D`` embeddings.
    speakers : list of str
        Speaker of each embedding.
    sources : list of str
        Source file of each embedding.
    max_pairs : int, optional
        Score at most this many pairs, drawn at random (with replacement)
        when the split has more.
    seed : int
        Seed of the subset.

    Returns
    -------
    scores : numpy.ndarray
    labels : numpy.ndarray
        1 for same-speaker pairs, 0 otherwise.

    Example
    -------
    >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> s, l = dev_pair_scores(emb, ["a", "b", "a"], ["x", "y", "z"])
    >>> s.tolist(), l.tolist()
    ([0.0, 1.0, 0.0], [0, 1, 0])
    >>> s, l = dev_pair_scores(torch.randn(100, 4), ["a", "b"] * 50, [str(k) for k in range(100)], max_pairs=50)
    >>> len(s) <= 50 and len(s) == len(l)
    True
    """
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu().numpy()
    spk = np.asarray(speakers)
    src = np.asarray(sources)
    n = len(speakers)
    if max_pairs is not None and n * (n - 1) // 2 > max_pairs:
        # Draw pairs instead of enumerating them: a VoxCeleb1 dev split has
        # ~33k chunks, i.e. ~550M pairs, far too many to list or score.
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=2 * max_pairs)
        j = rng.integers(0, n, size=2 * max_pairs)
        keep = (i < j) & (src[i] != src[j])
        i, j = i[keep][:max_pairs], j[keep][:max_pairs]
    else:
        i, j = np.triu_indices(n, k=1)
        keep = src[i] != src[j]
        i, j = i[keep], j[keep]
    scores = np.einsum("nd,nd->n", emb[i], emb[j])
    return scores, (spk[i] == spk[j]).astype(np.int64)


class KDBrain(sb.Brain):
    """Trains a student speaker-embedding model by knowledge distillation.

    Expected ``modules``: ``compute_features``, ``mean_var_norm``,
    ``embedding_model``, ``classifier`` and, for distillers that use it,
    ``projection``. Expected ``hparams``: ``distiller``, ``compute_cost``
    (AAM softmax), ``logit_scale`` (the student's posteriors are its cosine
    logits times this scale, without margin), ``error_stats``, and optionally
    ``wav_augment``, ``train_logger``, ``lr_annealing``, ``dev_max_pairs``
    and, for a teacher with its own front end, ``saliency_band_mapping``
    (``mel`` or ``time``, see
    :class:`speechbrain_imlkd.integrated_inputs.SaliencyMapping`).

    A teacher with its own front end (``teacher.own_front_end``, e.g. the
    resemblyzer adapter) gets its own features of the same augmented
    waveforms at every training step; teacher and student frames share the
    10 ms hop, so segments are cut at the same frames in both spaces.

    Arguments
    ---------
    *args
        Passed to :class:`speechbrain.Brain`.
    teacher : speechbrain_imlkd.teacher.Teacher, optional
        The frozen teacher; required by every distiller but ``scratch``.
    **kwargs
        Passed to :class:`speechbrain.Brain`.

    Example
    -------
    >>> # See tests/test_brain.py and recipes/VoxCeleb1/imlkd/train_kd.py.
    >>> KDBrain.__mro__[1] is sb.Brain
    True
    """

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.saliency_mapping = None
        if self.hparams.distiller.uses_teacher and teacher is None:
            raise ValueError(
                f"distiller {type(self.hparams.distiller).__name__} needs a "
                "teacher: set teacher_source in the YAML"
            )
        self.train_time = 0.0

    def student(self, feats, lengths=None):
        """Runs the student on normalised features.

        Arguments
        ---------
        feats : torch.Tensor
            ``B x T x F`` normalised features.
        lengths : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        embeddings : torch.Tensor
            ``B x D``.
        logits : torch.Tensor
            ``B x N``: cosine logits times ``logit_scale`` (no margin).
        """
        emb = self.modules.embedding_model(feats, lengths)
        cos = self.modules.classifier(emb)
        return emb.squeeze(1), self.hparams.logit_scale * cos.squeeze(1)

    def compute_forward(self, batch, stage):
        """Computes features and runs the student on the clean chunk.

        Arguments
        ---------
        batch : PaddedBatch
            With ``sig`` and ``spk_id_encoded``.
        stage : sb.Stage
            The stage.

        Returns
        -------
        dict
            ``feats``, ``lengths``, ``emb``, ``cos`` (the classifier's
            cosines, ``B x 1 x N``) and ``wavs`` (the waveforms the
            features came from, for a teacher with its own front end).
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "wav_augment", None):
            wavs, lens = self.hparams.wav_augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        emb = self.modules.embedding_model(feats, lens)
        cos = self.modules.classifier(emb)
        return {"feats": feats, "lengths": lens, "emb": emb.squeeze(1), "cos": cos, "wavs": wavs}

    def compute_objectives(self, predictions, batch, stage):
        """AAM-softmax loss on the clean chunk plus the distiller's term.

        Arguments
        ---------
        predictions : dict
            From :meth:`compute_forward`.
        batch : PaddedBatch
            The batch.
        stage : sb.Stage
            The stage.

        Returns
        -------
        torch.Tensor
            The loss.
        """
        labels, _ = batch.spk_id_encoded
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "wav_augment", None):
            labels = self.hparams.wav_augment.replicate_labels(labels)
        lens = predictions["lengths"]
        cls_loss = self.hparams.compute_cost(predictions["cos"], labels, lens)
        if stage != sb.Stage.TRAIN:
            self.error_metrics.append(batch.id, predictions["cos"], labels, lens)
            self.dev_embeddings.append(predictions["emb"].detach().cpu())
            self.dev_speakers.extend(batch.spk_id)
            self.dev_sources.extend(batch.wav)
            return cls_loss

        teacher = self.teacher
        kd_batch = DistillationBatch(
            feats=predictions["feats"],
            lengths=lens,
            labels=labels.squeeze(-1),
            student_emb=predictions["emb"],
            student_logits=self.hparams.logit_scale * predictions["cos"].squeeze(1),
            student=self.student,
            teacher_embed=teacher.embed if teacher is not None else None,
            teacher_logits=teacher.logits if teacher is not None else None,
            projection=getattr(self.modules, "projection", None),
            ids=batch.id,
            # Only if a distiller asks: cached imlkd never runs the teacher.
            teacher_features=self._teacher_features(predictions),
            saliency_mapping=self.saliency_mapping,
        )
        kd_loss, terms = self.hparams.distiller(kd_batch)
        self._accumulate_terms({"cls": cls_loss.detach(), **terms})
        return cls_loss + kd_loss

    def _teacher_features(self, predictions):
        """``() -> teacher features`` of the batch's waveforms, or None.

        Only a teacher with its own front end (``saliency_mapping`` set in
        :meth:`on_fit_start`) needs features of its own.
        """
        if self.saliency_mapping is None:
            return None
        wavs, lens = predictions["wavs"], predictions["lengths"]
        return lambda: self.teacher.features(wavs, lens)

    def _accumulate_terms(self, terms):
        for name, value in terms.items():
            total, count = self.loss_terms.get(name, (0.0, 0))
            self.loss_terms[name] = (total + float(value), count + 1)

    def on_fit_start(self):
        """Moves the teacher to the run device, then the usual fit start.

        Returns
        -------
        None
        """
        if self.teacher is not None:
            self.teacher.to(self.device)
            self.saliency_mapping = saliency_mapping_for(
                self.teacher,
                self.modules.compute_features,
                mode=getattr(self.hparams, "saliency_band_mapping", "mel"),
            )
        super().on_fit_start()

    def _wrap_distributed(self):
        """Wraps the student's modules with DDP; the teacher stays unwrapped.

        SpeechBrain converts every module to ``SyncBatchNorm`` first, which
        PyTorch only supports on GPUs: a CPU (gloo) run fails with
        "SyncBatchNorm layers only work with GPU modules". On the CPU the
        modules are wrapped without the conversion (each process keeps its
        own BatchNorm statistics, as plain DDP does); on GPUs SpeechBrain's
        own wrapping is used unchanged.
        """
        if not (self.distributed_launch and str(self.device).startswith("cpu")):
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel as DDP

        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DDP(
                    module, device_ids=None, find_unused_parameters=self.find_unused_parameters
                )

    def on_stage_start(self, stage, epoch=None):
        """Resets the per-stage statistics.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        epoch : int, optional
            The epoch.
        """
        self.loss_terms = {}
        self.stage_start = time.time()
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()
            self.dev_embeddings, self.dev_speakers, self.dev_sources = [], [], []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the losses, dev error and dev EER; checkpoints on the dev EER.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        stage_loss : float
            Average loss of the stage.
        epoch : int, optional
            The epoch.
        """
        from speechbrain_imlkd.scoring import compute_eer

        if stage == sb.Stage.TRAIN:
            self.train_time += time.time() - self.stage_start
            self.train_stats = {"loss": stage_loss}
            self.train_stats.update(
                {k: total / max(count, 1) for k, (total, count) in self.loss_terms.items()}
            )
            return
        stats = {"loss": stage_loss, "error": self.error_metrics.summarize("average")}
        scores, labels = dev_pair_scores(
            torch.cat(self.dev_embeddings),
            self.dev_speakers,
            self.dev_sources,
            max_pairs=getattr(self.hparams, "dev_max_pairs", None),
        )
        if labels.min() != labels.max():
            stats["EER"] = float(compute_eer(scores[labels == 1], scores[labels == 0])[0])
        else:
            # A dev split with one speaker, or one file per speaker, has no
            # target or no non-target pairs: the classification error ranks.
            stats["EER"] = stats["error"]
            logger.warning("dev split has no %s pairs: EER replaced by error",
                           "target" if labels.max() == 0 else "non-target")
        self.last_dev_stats = stats
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"] if self.optimizer else None
            lr_sched = getattr(self.hparams, "lr_annealing", None)
            if lr_sched is not None and self.optimizer is not None:
                # An epoch-level schedule, as SpeechBrain's ECAPA recipe uses.
                lr, next_lr = lr_sched(epoch)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
            logger_ = getattr(self.hparams, "train_logger", None)
            if logger_ is not None:
                logger_.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr, "train_time_s": round(self.train_time, 1)},
                    train_stats=getattr(self, "train_stats", None),
                    valid_stats=stats,
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"EER": stats["EER"], "train_time_s": self.train_time},
                    min_keys=["EER"],
                )
