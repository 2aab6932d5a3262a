"""Sample data for the recipe rows of ``tests/recipes/*.csv``.

SpeechBrain runs its recipe rows on tiny sample data committed under
``tests/samples``; ours is generated instead (a few seconds): the rows'
debug flags point at ``tests/tmp/samples/<name>``, relative to the folder
the rows run from, and :func:`make_samples` writes those folders.

``pytest tests/test_recipe_rows.py`` builds them in a scratch folder and
runs every row from there. To run the rows from the repository root instead
(by hand, or with SpeechBrain's ``run_recipe_tests``), build them first::

    python tests/recipe_samples.py          # writes ./tests/tmp/samples/*

A new dataset's rows add a builder to :data:`SAMPLES`.
"""

import sys
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_imlkd.data.synthetic import generate_corpus
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.models import build_classifier, build_ecapa

#: Where the rows find the samples, relative to the folder they run from.
SAMPLES_DIR = Path("tests") / "tmp" / "samples"
#: A tiny corpus in the VoxCeleb1 layout (as tests/test_train_kd.py).
VOXCELEB1_CORPUS = dict(
    n_train_speakers=4,
    n_test_speakers=2,
    sessions_per_speaker=2,
    utterances_per_session=2,
    min_duration=2.5,
    max_duration=3.0,
    n_trials=12,
    seed=3,
)
#: A tiny corpus of synthetic voices laid out as a flat LibriSpeech folder.
LIBRISPEECH_CORPUS = {**VOXCELEB1_CORPUS, "n_train_speakers": 6, "n_trials": 4, "seed": 11}
#: LibriSpeech-like reader ids of the sample speakers start here.
LIBRISPEECH_FIRST_READER = 101
#: A random-weight teacher small enough for the rows' debug runs.
TEACHER = dict(channels=16, lin_neurons=16, attention_channels=8, seed=0)


def make_voxceleb1(folder, samples):
    """The tiny VoxCeleb1-layout corpus.

    Arguments
    ---------
    folder : Path
        Where to write it.
    samples : Path
        The samples folder (for samples that depend on others).

    Returns
    -------
    dict
        The corpus ``meta.json`` content.
    """
    return generate_corpus(folder, **VOXCELEB1_CORPUS)


def make_teacher(folder, samples):
    """A random tiny teacher whose label encoder knows the corpus' training speakers.

    Arguments
    ---------
    folder : Path
        Where to export it (hub layout).
    samples : Path
        The samples folder: the teacher needs the ``voxceleb1`` corpus.

    Returns
    -------
    Path
        The exported folder.
    """
    meta = make_voxceleb1(samples / "voxceleb1", samples)
    train_speakers = meta["speakers"]["train"]
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(train_speakers)
    torch.manual_seed(TEACHER["seed"])
    return export_model(
        folder,
        build_ecapa(TEACHER["channels"], lin_neurons=TEACHER["lin_neurons"],
                    attention_channels=TEACHER["attention_channels"]),
        classifier=build_classifier(len(train_speakers), lin_neurons=TEACHER["lin_neurons"]),
        label_encoder=encoder,
    )


def make_librispeech(folder, samples):
    """A flat LibriSpeech-style folder: one ``<spk>-<chapter>-<utt>.flac`` per speaker.

    Each speaker's synthetic clips are joined into one file, as in the
    shared one-utterance-per-speaker folder.

    Arguments
    ---------
    folder : Path
        Where to write the FLAC files.
    samples : Path
        The samples folder (a scratch corpus is written next to it).

    Returns
    -------
    Path
        The folder.
    """
    import numpy as np
    import soundfile as sf

    corpus = samples / "_librispeech_voices"
    meta = generate_corpus(corpus, **LIBRISPEECH_CORPUS)
    folder.mkdir(parents=True, exist_ok=True)
    speakers = sorted(meta["speakers"]["train"] + meta["speakers"]["test"])
    for k, spk in enumerate(speakers):
        clips = sorted((corpus / "wav" / spk).glob("*/*.wav"))
        audio = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])
        reader = LIBRISPEECH_FIRST_READER + k
        sf.write(folder / f"{reader}-1-0000.flac", audio, 16000)
    return folder


#: Sample name (the folder under ``tests/tmp/samples``) -> builder.
SAMPLES = {"voxceleb1": make_voxceleb1, "teacher": make_teacher,
           "librispeech": make_librispeech}


def make_samples(root, names=None):
    """Writes the named samples under ``<root>/tests/tmp/samples``.

    Arguments
    ---------
    root : str or Path
        The folder the rows run from.
    names : iterable of str, optional
        Samples to build (default: all of :data:`SAMPLES`).

    Returns
    -------
    Path
        The samples folder.
    """
    samples = Path(root) / SAMPLES_DIR
    names = list(SAMPLES) if names is None else list(names)
    unknown = sorted(set(names) - set(SAMPLES))
    if unknown:
        raise KeyError(f"no builder for samples {unknown} in tests/recipe_samples.py "
                       f"(known: {sorted(SAMPLES)})")
    for name in names:
        SAMPLES[name](samples / name, samples)
    return samples


if __name__ == "__main__":
    print(make_samples(Path.cwd() if len(sys.argv) < 2 else sys.argv[1]))
