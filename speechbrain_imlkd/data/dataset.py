"""``DynamicItemDataset`` pipelines for training, dev, enrolment and test.

The CSVs are the ones written by
:func:`speechbrain_imlkd.data.voxceleb.prepare_voxceleb1`:
``ID,duration,wav,start,stop,spk_id`` with ``start``/``stop`` in samples.
Training and dev items provide the waveform of their ``start:stop``
segment (``sig``), the speaker label (``spk_id``) and its index
(``spk_id_encoded``); enrolment and test items provide ``sig`` only.
Audio is read with :func:`speechbrain_imlkd.data.audio.read_wav_checked`, so
a missing, corrupt, stereo or wrong-rate file fails with its path in the
message.

Example
-------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> train_csv, dev_csv = write_toy_csvs(root)
>>> train, dev, enc = train_dev_datasets(
...     train_csv, dev_csv, root / "label_encoder.txt"
... )
>>> item = train[0]
>>> item["sig"].shape, item["spk_id"], int(item["spk_id_encoded"])
(torch.Size([8000]), 'id00001', 0)

Authors
 * speechbrain-imlkd contributors 2025
"""

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_imlkd.data.audio import read_wav_checked

TRAIN_COLUMNS = ("ID", "duration", "wav", "start", "stop", "spk_id")
UTTERANCE_COLUMNS = ("ID", "duration", "wav", "start", "stop")
TRAIN_OUTPUT_KEYS = ["id", "sig", "spk_id", "spk_id_encoded"]
UTTERANCE_OUTPUT_KEYS = ["id", "sig"]


def _check_csv(path, required):
    """Raises if ``path`` is missing, empty or lacks a required column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
        has_rows = next(f, None) is not None
    if header is None:
        raise ValueError(f"{path}: empty CSV file (no header)")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; header is {header}, "
            f"expected at least {list(required)}"
        )
    if not has_rows:
        raise ValueError(f"{path}: no data rows")
    return path


def _segment_bounds(row_id, start, stop, csv_path):
    """Parses ``start``/``stop`` of one row into ints, naming the row on error."""
    try:
        start, stop = int(start), int(stop)
    except (TypeError, ValueError):
        raise ValueError(
            f"{csv_path}: row {row_id!r} has non-integer start/stop "
            f"({start!r}, {stop!r}); they are sample indices"
        ) from None
    if not 0 <= start < stop:
        raise ValueError(
            f"{csv_path}: row {row_id!r} has an empty or negative segment "
            f"[{start}, {stop})"
        )
    return start, stop


def _from_csv(csv_path, required, replacements):
    """Loads a CSV as a ``DynamicItemDataset`` after checking its columns."""
    csv_path = _check_csv(csv_path, required)
    return DynamicItemDataset.from_csv(
        csv_path=str(csv_path), replacements=replacements or {}
    )


def _add_audio_pipeline(datasets, csv_path, sample_rate, chunk_samples=None):
    """Adds the ``sig`` item: the row's segment, or a random chunk of it."""

    @sb.utils.data_pipeline.takes("id", "wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(row_id, wav, start, stop):
        """Reads the ``start:stop`` samples of ``wav`` (checked audio)."""
        start, stop = _segment_bounds(row_id, start, stop, csv_path)
        if chunk_samples is not None and stop - start > chunk_samples:
            # A fresh offset each time the item is drawn: every epoch sees a
            # different part of long segments.
            offset = int(torch.randint(0, stop - start - chunk_samples + 1, (1,)))
            start = start + offset
            stop = start + chunk_samples
        return read_wav_checked(wav, sample_rate=sample_rate, start=start, stop=stop)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)


def train_dev_datasets(
    train_csv,
    dev_csv,
    label_encoder_file,
    sample_rate=16000,
    random_chunk=False,
    chunk_seconds=None,
    replacements=None,
):
    """Creates the training and dev datasets and the speaker label encoder.

    The label encoder is fitted on the training speakers and saved to
    ``label_encoder_file`` (or loaded from it when it exists, so that a
    resumed run keeps the same class indices). Every dev speaker must be a
    training speaker, since dev rows are held-out segments of training
    speakers used to measure classification error.

    Arguments
    ---------
    train_csv : str or pathlib.Path
        Training CSV (``ID,duration,wav,start,stop,spk_id``).
    dev_csv : str or pathlib.Path
        Dev CSV, same columns.
    label_encoder_file : str or pathlib.Path
        Where the :class:`~speechbrain.dataio.encoder.CategoricalEncoder`
        is saved / loaded.
    sample_rate : int
        Required sample rate of every file.
    random_chunk : bool
        If True, training items are a random ``chunk_seconds`` chunk of their
        segment, redrawn each time (dev items always use the full segment).
    chunk_seconds : float or None
        Chunk length used when ``random_chunk`` is True.
    replacements : dict or None
        ``$key`` replacements applied to CSV fields (e.g.
        ``{"data_root": data_folder}``).

    Returns
    -------
    train_ds : speechbrain.dataio.dataset.DynamicItemDataset
        Provides ``id``, ``sig``, ``spk_id``, ``spk_id_encoded``.
    dev_ds : speechbrain.dataio.dataset.DynamicItemDataset
        Same keys.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Training speaker labels to indices.

    Raises
    ------
    FileNotFoundError
        If a CSV is missing.
    ValueError
        If a CSV is malformed, ``chunk_seconds`` is invalid, a dev speaker
        is not a training speaker, or a saved label encoder does not cover
        the training speakers.

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> train_csv, dev_csv = write_toy_csvs(root)
    >>> train, dev, enc = train_dev_datasets(
    ...     train_csv, dev_csv, root / "lab.txt", random_chunk=True,
    ...     chunk_seconds=0.25,
    ... )
    >>> train[0]["sig"].shape, dev[0]["sig"].shape, len(enc)
    (torch.Size([4000]), torch.Size([8000]), 2)
    >>> train_dev_datasets(train_csv, dev_csv, root / "lab.txt",
    ...                    random_chunk=True)
    Traceback (most recent call last):
    ...
    ValueError: random_chunk=True needs a positive chunk_seconds, got None
    """
    chunk_samples = None
    if random_chunk:
        if chunk_seconds is None or not chunk_seconds > 0:
            raise ValueError(
                "random_chunk=True needs a positive chunk_seconds, "
                f"got {chunk_seconds!r}"
            )
        chunk_samples = int(round(chunk_seconds * sample_rate))
    train_ds = _from_csv(train_csv, TRAIN_COLUMNS, replacements)
    dev_ds = _from_csv(dev_csv, TRAIN_COLUMNS, replacements)

    _add_audio_pipeline([train_ds], str(train_csv), sample_rate, chunk_samples)
    _add_audio_pipeline([dev_ds], str(dev_csv), sample_rate)

    label_encoder = CategoricalEncoder()

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        """Yields the speaker label and its index."""
        yield spk_id
        yield label_encoder.encode_sequence_torch([spk_id])

    sb.dataio.dataset.add_dynamic_item([train_ds, dev_ds], label_pipeline)

    label_encoder_file = Path(label_encoder_file)
    label_encoder_file.parent.mkdir(parents=True, exist_ok=True)
    train_speakers = _speakers(train_ds)
    label_encoder.load_or_create(
        path=str(label_encoder_file),
        from_iterables=[sorted(train_speakers)],
    )
    unknown = sorted(train_speakers - set(label_encoder.lab2ind))
    if unknown:
        raise ValueError(
            f"{label_encoder_file}: saved label encoder lacks {len(unknown)} "
            f"training speaker(s) of {train_csv} (e.g. {unknown[:3]}); delete "
            "it to refit on the current training set"
        )
    label_encoder.expect_len(len(label_encoder.lab2ind))
    not_in_train = sorted(_speakers(dev_ds) - train_speakers)
    if not_in_train:
        raise ValueError(
            f"{dev_csv}: {len(not_in_train)} dev speaker(s) absent from "
            f"{train_csv} (e.g. {not_in_train[:3]}); dev must hold segments "
            "of training speakers"
        )
    sb.dataio.dataset.set_output_keys([train_ds, dev_ds], TRAIN_OUTPUT_KEYS)
    return train_ds, dev_ds, label_encoder


def _speakers(dataset):
    """Returns the set of ``spk_id`` values of a dataset, without audio."""
    with dataset.output_keys_as(["spk_id"]):
        return {item["spk_id"] for item in dataset}


def utterance_dataset(csv_path, sample_rate=16000, replacements=None):
    """Creates an enrolment or test dataset: one whole utterance per row.

    Arguments
    ---------
    csv_path : str or pathlib.Path
        CSV with ``ID,duration,wav,start,stop`` (``spk_id`` optional);
        ``ID`` is the trial path of the utterance.
    sample_rate : int
        Required sample rate of every file.
    replacements : dict or None
        ``$key`` replacements applied to CSV fields.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Provides ``id`` and ``sig``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> train_csv, _ = write_toy_csvs(root)
    >>> ds = utterance_dataset(train_csv)
    >>> sorted(ds[0].keys()), ds[0]["sig"].shape
    (['id', 'sig'], torch.Size([8000]))
    """
    dataset = _from_csv(csv_path, UTTERANCE_COLUMNS, replacements)
    _add_audio_pipeline([dataset], str(csv_path), sample_rate)
    dataset.set_output_keys(UTTERANCE_OUTPUT_KEYS)
    return dataset


def write_toy_csvs(folder, n_speakers=2, seconds=0.5, sample_rate=16000):
    """Writes a toy two-speaker corpus and its train/dev CSVs (for examples).

    Arguments
    ---------
    folder : str or pathlib.Path
        Where the wavs and CSVs go.
    n_speakers : int
        Number of speakers (one tone frequency each).
    seconds : float
        Length of each file.
    sample_rate : int
        Sample rate of the files.

    Returns
    -------
    train_csv : pathlib.Path
        One row per speaker.
    dev_csv : pathlib.Path
        One row per speaker (the same files; it is a toy).

    Example
    -------
    >>> import tempfile
    >>> train_csv, dev_csv = write_toy_csvs(tempfile.mkdtemp())
    >>> train_csv.read_text().splitlines()[0]
    'ID,duration,wav,start,stop,spk_id'
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    rows = []
    for k in range(n_speakers):
        spk = f"id{k + 1:05d}"
        wav = folder / f"{spk}.wav"
        sf.write(wav, 0.1 * np.sin(2 * np.pi * 200.0 * (k + 1) * t), sample_rate)
        rows.append([f"{spk}--0", seconds, str(wav), 0, n, spk])
    paths = []
    for name in ("train.csv", "dev.csv"):
        path = folder / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(TRAIN_COLUMNS)
            writer.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]
