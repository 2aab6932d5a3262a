"""Speaker-verification trial lists in the VoxCeleb format.

One parser for ``veri_test2.txt``, ``veri_test.txt``, ``list_test_hard2.txt``,
``list_test_all2.txt`` and their gzip-compressed copies. Every line reads
``<1|0> <enrol path> <test path>`` with paths relative to the corpus ``wav/``
folder, e.g. ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``.

Example
-------
>>> import tempfile, pathlib
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "trials.txt").write_text(
...     "1 id10001/a/00001.wav id10001/b/00002.wav\\n"
...     "0 id10001/a/00001.wav id10002/c/00001.wav"
... )
>>> trials = read_trials(tmp / "trials.txt")
>>> trials.n_trials, trials.n_target, sorted(trials.speakers)
(2, 1, ['id10001', 'id10002'])
"""

import gzip
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import List, Set, Union

import numpy as np

logger = logging.getLogger(__name__)

# A well-formed line, matched in C so that half a million lines parse in
# well under a second; malformed lines are diagnosed separately.
_LINE_RE = re.compile(r"\s*([01])\s+(id\d{5}/\S+)\s+(id\d{5}/\S+)\s*")
_PATH_RE = re.compile(r"id\d{5}/\S+")
_GZIP_MAGIC = b"\x1f\x8b"


def trial_path_to_id(path):
    """Converts a trial path into the utterance ID used in enrol/test CSVs.

    The ID is the path relative to ``wav/`` without its ``.wav`` suffix, as
    fixed in ``DESIGN.md``.

    Arguments
    ---------
    path : str
        A path as written in a trial list, e.g. ``id10270/x6uYqmx31kE/00001.wav``.

    Returns
    -------
    str
        The utterance ID, e.g. ``id10270/x6uYqmx31kE/00001``.

    Example
    -------
    >>> trial_path_to_id("id10270/x6uYqmx31kE/00001.wav")
    'id10270/x6uYqmx31kE/00001'
    >>> trial_path_to_id("id10270/x6uYqmx31kE/00001")
    'id10270/x6uYqmx31kE/00001'
    """
    return path[:-4] if path.endswith(".wav") else path


def speaker_of(path):
    """Returns the speaker (first path component, ``idNNNNN``) of a trial path.

    Arguments
    ---------
    path : str
        A path relative to ``wav/``, e.g. ``id10270/x6uYqmx31kE/00001.wav``.

    Returns
    -------
    str
        The speaker ID, e.g. ``id10270``.

    Example
    -------
    >>> speaker_of("id10270/x6uYqmx31kE/00001.wav")
    'id10270'
    """
    return path.split("/", 1)[0]


# eq=False: field-wise equality is ambiguous for the numpy labels.
@dataclass(eq=False)
class Trials:
    """A parsed trial list.

    Arguments
    ---------
    labels : numpy.ndarray
        ``int8`` array, 1 for a target (same speaker) trial, 0 otherwise.
    enrol : list of str
        Enrolment paths as written in the file (relative to ``wav/``).
    test : list of str
        Test paths as written in the file (relative to ``wav/``).
    source : str
        Where the list was read from (used in messages).

    Example
    -------
    >>> import numpy as np
    >>> t = Trials(np.array([1, 0], dtype=np.int8),
    ...            ["id10001/a/1.wav", "id10001/a/1.wav"],
    ...            ["id10001/b/2.wav", "id10002/c/1.wav"])
    >>> t.n_nontarget, t.utterances
    (1, ['id10001/a/1.wav', 'id10001/b/2.wav', 'id10002/c/1.wav'])
    >>> print(t.summary())
    <memory>: 2 trials (1 target, 1 non-target), 3 utterances, 2 speakers
    """

    labels: np.ndarray
    enrol: List[str]
    test: List[str]
    source: str = field(default="<memory>")

    def __post_init__(self):
        if not (len(self.labels) == len(self.enrol) == len(self.test)):
            raise ValueError(
                f"Trials from {self.source}: labels, enrol and test must have "
                f"the same length, got {len(self.labels)}, {len(self.enrol)} "
                f"and {len(self.test)}"
            )
        self.labels = np.asarray(self.labels, dtype=np.int8)

    @property
    def n_trials(self):
        """Number of trials."""
        return int(self.labels.shape[0])

    @property
    def n_target(self):
        """Number of target (label 1) trials."""
        return int(np.count_nonzero(self.labels))

    @property
    def n_nontarget(self):
        """Number of non-target (label 0) trials."""
        return self.n_trials - self.n_target

    @cached_property
    def utterances(self) -> List[str]:
        """Sorted unique paths of all utterances used in the trials."""
        return sorted(set(self.enrol).union(self.test))

    @cached_property
    def enrol_utterances(self) -> List[str]:
        """Sorted unique enrolment paths."""
        return sorted(set(self.enrol))

    @cached_property
    def test_utterances(self) -> List[str]:
        """Sorted unique test paths."""
        return sorted(set(self.test))

    @cached_property
    def speakers(self) -> Set[str]:
        """Set of speaker IDs (``idNNNNN``) appearing in the trials."""
        return {speaker_of(p) for p in self.utterances}

    def summary(self):
        """Returns a one-line description of the counts.

        Returns
        -------
        str
            Trials, targets, non-targets, utterances and speakers.
        """
        return (
            f"{self.source}: {self.n_trials} trials ({self.n_target} target, "
            f"{self.n_nontarget} non-target), {len(self.utterances)} "
            f"utterances, {len(self.speakers)} speakers"
        )


def _diagnose(line):
    """Explains why a trial line did not match the expected format."""
    fields = line.split()
    if len(fields) != 3:
        return (
            f"expected 3 fields '<1|0> <enrol path> <test path>', "
            f"got {len(fields)}"
        )
    if fields[0] not in ("0", "1"):
        return f"label must be 0 or 1, got {fields[0]!r}"
    for name, path in (("enrol", fields[1]), ("test", fields[2])):
        if not _PATH_RE.fullmatch(path):
            return (
                f"{name} path {path!r} does not start with a speaker folder "
                "'idNNNNN/' (paths are relative to the wav/ folder)"
            )
    return "unrecognised format"  # pragma: no cover - regexes agree


def _read_text(path):
    """Reads a plain or gzip-compressed UTF-8 text file."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"Trial list {path}: corrupt gzip data ({e})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"Trial list {path}: not UTF-8 text ({e})")


def read_trials(path: Union[str, Path]) -> Trials:
    """Parses a VoxCeleb-style trial list (plain text or ``.gz``).

    Lines are ``<1|0> <enrol path> <test path>``. A last line without
    trailing newline, Windows line endings and blank lines at the end of the
    file are accepted. Any other line that does not follow the format
    (including a blank line between trials) raises a ``ValueError`` naming the
    file and the 1-based line number, because a silently dropped trial would
    change the reported error rates.

    Arguments
    ---------
    path : str or pathlib.Path
        The trial list. Compression is detected from the content, not the name.

    Returns
    -------
    Trials
        The labels and paths, in file order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On a malformed line, or a file with no trials.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "bad.txt"
    >>> _ = f.write_text("1 id10001/a/1.wav id10002/b/1.wav\\n2 id10001/a/1.wav id10002/b/1.wav\\n")
    >>> read_trials(f)
    Traceback (most recent call last):
    ...
    ValueError: ...bad.txt, line 2: label must be 0 or 1, got '2'...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Trial list not found: {path}")
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"Trial list {path} contains no trials")

    labels, enrol, test = [], [], []
    match = _LINE_RE.fullmatch
    for lineno, line in enumerate(lines, start=1):
        m = match(line)
        if m is None:
            reason = (
                "blank line between trials"
                if not line.strip()
                else _diagnose(line)
            )
            raise ValueError(
                f"Malformed trial list {path}, line {lineno}: {reason}: "
                f"{line!r}"
            )
        label, e, t = m.groups()
        labels.append(label)
        enrol.append(e)
        test.append(t)

    # '0'/'1' characters -> 0/1 in one vectorised step.
    label_arr = (
        np.frombuffer("".join(labels).encode("ascii"), dtype=np.uint8) - 48
    ).astype(np.int8)
    trials = Trials(label_arr, enrol, test, source=str(path))
    logger.info("Read trial list %s", trials.summary())
    return trials
