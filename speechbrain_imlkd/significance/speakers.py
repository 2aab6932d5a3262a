"""The speaker of every trial: the clusters of the speaker bootstrap.

A trial joins the cluster of its enrolment speaker (see
:mod:`speechbrain_imlkd.significance`); :func:`default_speaker` reads it
from a VoxCeleb path or a LibriSpeech-style id, :func:`speakers_of_trials`
maps a whole trial list.

Example
-------
>>> speakers_of_trials(["id10270/a/1.wav", "19-198-0001_w0"]).tolist()
['id10270', '19']

Authors
 * speechbrain-imlkd contributors
"""

from typing import Callable, Optional, Sequence

import numpy as np


def default_speaker(trial_id: str) -> str:
    """The speaker of a VoxCeleb path or a LibriSpeech-style utterance id.

    Rule: a path with folders gives its **first component** (VoxCeleb
    ``idNNNNN/<video>/<clip>.wav``; LibriSpeech's own layout
    ``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` gives the same speaker);
    a bare id gives the **text before its first '-'** (LibriSpeech file or
    window ids ``<spk>-<chapter>-<utt>[...]``).

    Arguments
    ---------
    trial_id : str
        A trial path relative to ``wav/``, or an utterance / window id.

    Returns
    -------
    str
        The speaker id.

    Raises
    ------
    ValueError
        When the rule finds no speaker (absolute path, empty first
        component, bare id without '-').

    Example
    -------
    >>> default_speaker("id10270/x6uYqmx31kE/00001.wav")
    'id10270'
    >>> default_speaker("19-198-0001_w3")
    '19'
    >>> default_speaker("19/198/19-198-0001.flac")
    '19'
    >>> default_speaker("utt7")
    Traceback (most recent call last):
    ...
    ValueError: cannot tell the speaker of 'utt7': expected a path 'speaker/...' (VoxCeleb) or an id 'speaker-chapter-utterance' (LibriSpeech); pass speaker_fn for other layouts
    """
    text = str(trial_id)
    if "/" in text:
        speaker = text.split("/", 1)[0]
    elif "-" in text:
        speaker = text.split("-", 1)[0]
    else:
        speaker = ""
    if not speaker:
        raise ValueError(
            f"cannot tell the speaker of {trial_id!r}: expected a path "
            "'speaker/...' (VoxCeleb) or an id 'speaker-chapter-utterance' "
            "(LibriSpeech); pass speaker_fn for other layouts"
        )
    return speaker


def speakers_of_trials(
    trial_paths: Sequence[str], speaker_fn: Optional[Callable[[str], str]] = None
) -> np.ndarray:
    """Maps trial paths or utterance ids to speaker ids.

    Arguments
    ---------
    trial_paths : sequence of str
        E.g. ``Trials.enrol`` (the enrolment side gives the bootstrap
        clusters) or ``Trials.test``.
    speaker_fn : callable, optional
        ``str -> str``; defaults to :func:`default_speaker` (first path
        component, else the text before the first '-').

    Returns
    -------
    numpy.ndarray
        One speaker id (str) per path.

    Raises
    ------
    ValueError
        Naming the first path whose speaker cannot be told, or for which
        ``speaker_fn`` returns an empty or non-string value.

    Example
    -------
    >>> speakers_of_trials(["id10270/a/1.wav", "id10309/b/2.wav"]).tolist()
    ['id10270', 'id10309']
    >>> speakers_of_trials(["84-121123-0001_w0", "174-50561-0002"]).tolist()
    ['84', '174']
    >>> speakers_of_trials(["spkA_utt1"], speaker_fn=lambda p: p.split("_")[0]).tolist()
    ['spkA']
    """
    fn = default_speaker if speaker_fn is None else speaker_fn
    speakers = []
    for i, path in enumerate(trial_paths):
        spk = fn(path)
        if not isinstance(spk, str) or not spk:
            raise ValueError(
                f"speaker_fn returned {spk!r} for trial path {i} ({path!r}); "
                "expected a non-empty speaker id string"
            )
        speakers.append(spk)
    return np.array(speakers, dtype=str)
