"""LibriSpeech files and readers: listing the FLAC files, speaker labels, sexes.

Part of :mod:`speechbrain_imlkd.data.librispeech`: :func:`list_flac_files`
walks the real layout (``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``)
or a flat folder of such files, :func:`speaker_label` turns a reader ID
into the ``idNNNNN`` label every output uses, and :func:`read_speakers_file`
reads each reader's sex from ``SPEAKERS.TXT`` (to stratify the speaker
split).

Example
-------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("19-198-0001.flac", "19-198-0002.flac", "84-121123-0000.flac"):
...     _ = (root / name).write_bytes(b"")
>>> sorted({f.speaker for f in list_flac_files(root)})
['id00019', 'id00084']

Authors
 * speechbrain-imlkd contributors
"""

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from speechbrain_imlkd.data.voxceleb import _format_list

# Logged under the name of the preparation driver, as before the split,
# so that one logger covers all of it.
logger = logging.getLogger("speechbrain_imlkd.data.librispeech")

SPEAKERS_TXT = "SPEAKERS.TXT"
#: Speaker label of a reader ID; five digits as trials.read_trials requires.
SPEAKER_LABEL = "id{:05d}"
MAX_READER_ID = 99999
UNKNOWN_SEX = "unknown"
SEXES = ("F", "M")
#: ``speakers_file`` value that looks for SPEAKERS.TXT next to the data.
AUTO = "auto"
_FLAC_RE = re.compile(r"(\d+)-(\d+)-(\d+)\.flac")
_SPEAKERS_FIELDS = 5  # ID | SEX | SUBSET | MINUTES | NAME


@dataclass(frozen=True)
class LibriFile:
    """One LibriSpeech utterance file.

    Arguments
    ---------
    rel : str
        Path relative to the data folder, ``/`` separators.
    reader : str
        LibriSpeech reader (speaker) ID, as an integer string.
    chapter : str
        Chapter ID.
    stem : str
        File name without ``.flac``: ``<spk>-<chapter>-<utt>``.

    Example
    -------
    >>> f = LibriFile("19/198/19-198-0001.flac", "19", "198", "19-198-0001")
    >>> f.speaker
    'id00019'
    """

    rel: str
    reader: str
    chapter: str
    stem: str

    @property
    def speaker(self):
        """The ``idNNNNN`` speaker label."""
        return speaker_label(self.reader)


def speaker_label(reader_id) -> str:
    """Returns the ``idNNNNN`` label of a LibriSpeech reader ID.

    Arguments
    ---------
    reader_id : str or int
        The reader ID, e.g. ``"19"``.

    Returns
    -------
    str
        ``id`` and the ID zero-padded to five digits.

    Raises
    ------
    ValueError
        If the ID is not a non-negative integer below 100000.

    Example
    -------
    >>> speaker_label("19"), speaker_label(8975)
    ('id00019', 'id08975')
    """
    try:
        value = int(str(reader_id))
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_READER_ID:
        raise ValueError(
            f"LibriSpeech reader ID {reader_id!r} is not an integer in "
            f"[0, {MAX_READER_ID}] (labels are idNNNNN)"
        )
    return SPEAKER_LABEL.format(value)


def read_speakers_file(path: Union[str, Path]) -> Dict[str, str]:
    """Reads the sex of each reader from LibriSpeech's ``SPEAKERS.TXT``.

    Lines starting with ``;`` are comments; the others read
    ``ID | SEX | SUBSET | MINUTES | NAME`` (the name may itself hold ``|``).

    Arguments
    ---------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    dict
        Reader ID (integer string, e.g. ``"19"``) -> ``"F"`` or ``"M"``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On a malformed line or a reader listed twice (file and line named).

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "SPEAKERS.TXT"
    >>> _ = f.write_text(";ID|SEX|SUBSET|MINUTES|NAME\\n"
    ...                  "19 | F | train-clean-100 | 25.19 | Kara\\n"
    ...                  "60 | M | train-clean-100 | 20.18 | |CBW|Simon\\n")
    >>> read_speakers_file(f)
    {'19': 'F', '60': 'M'}
    >>> _ = f.write_text("19 | X | train-clean-100 | 25.19 | Kara\\n")
    >>> read_speakers_file(f)
    Traceback (most recent call last):
    ...
    ValueError: ...SPEAKERS.TXT, line 1: sex 'X' is not one of ('F', 'M')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Speakers file not found: {path}")
    sexes = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        where = f"{path}, line {lineno}"
        fields = [f.strip() for f in line.split("|", _SPEAKERS_FIELDS - 1)]
        if len(fields) != _SPEAKERS_FIELDS:
            raise ValueError(
                f"{where}: expected 'ID | SEX | SUBSET | MINUTES | NAME', "
                f"got {line!r}"
            )
        reader, sex = fields[0], fields[1]
        if not reader.isdigit():
            raise ValueError(f"{where}: reader ID {reader!r} is not an integer")
        if sex not in SEXES:
            raise ValueError(f"{where}: sex {sex!r} is not one of {SEXES}")
        reader = str(int(reader))
        if reader in sexes:
            raise ValueError(f"{where}: reader {reader} listed twice")
        sexes[reader] = sex
    return sexes


def list_flac_files(
    data_folder: Union[str, Path], subsets: Optional[Sequence[str]] = None
) -> List[LibriFile]:
    """Lists the ``<spk>-<chapter>-<utt>.flac`` files under a folder.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        LibriSpeech root, one subset folder, or a flat folder of FLAC files.
    subsets : sequence of str or None
        Only walk these sub-folders of ``data_folder`` (e.g.
        ``["train-clean-100"]``); ``None`` walks everything.

    Returns
    -------
    list of LibriFile
        Sorted by relative path.

    Raises
    ------
    FileNotFoundError
        If ``data_folder`` or a requested subset is missing.
    ValueError
        If no FLAC file is found, a file lies in a ``<spk>/<chapter>``
        folder that contradicts its name, or an utterance appears twice.

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "dev-clean" / "19" / "198").mkdir(parents=True)
    >>> _ = (root / "dev-clean" / "19" / "198" / "19-198-0001.flac").write_bytes(b"")
    >>> _ = (root / "dev-clean" / "19" / "198" / "19-198.trans.txt").write_text("")
    >>> [f.rel for f in list_flac_files(root)]
    ['dev-clean/19/198/19-198-0001.flac']
    >>> list_flac_files(root, subsets=["train-clean-100"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: Subset folder not found: .../train-clean-100
    """
    root = Path(os.path.abspath(data_folder))
    if not root.exists():
        raise FileNotFoundError(f"Data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"Data folder is not a folder: {root}")
    tops = [root]
    if subsets is not None:
        tops = []
        for name in subsets:
            top = root / name
            if not top.is_dir():
                raise FileNotFoundError(f"Subset folder not found: {top}")
            tops.append(top)
    found, ignored, seen = [], [], {}
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(".flac"):
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                m = _FLAC_RE.fullmatch(name)
                if m is None:
                    ignored.append(rel)
                    continue
                reader, chapter = str(int(m.group(1))), m.group(2)
                parent = path.parent
                if (
                    parent != root
                    and parent.name.isdigit()
                    and parent.parent.name.isdigit()
                    and (int(parent.parent.name), parent.name)
                    != (int(reader), chapter)
                ):
                    raise ValueError(
                        f"{path}: the name says speaker {reader}, chapter "
                        f"{chapter} but the file lies in "
                        f"{parent.parent.name}/{parent.name}/"
                    )
                stem = name[: -len(".flac")]
                if stem in seen:
                    raise ValueError(
                        f"Utterance {stem} found twice under {root}: "
                        f"{seen[stem]} and {rel}"
                    )
                seen[stem] = rel
                found.append(LibriFile(rel, reader, chapter, stem))
    if ignored:
        logger.warning(
            "Ignored %d .flac files of %s not named <spk>-<chapter>-<utt>.flac,"
            " e.g. %s",
            len(ignored),
            root,
            _format_list(ignored),
        )
    if not found:
        raise ValueError(
            f"No LibriSpeech FLAC files (<spk>-<chapter>-<utt>.flac) found in "
            f"{root}" + ("" if subsets is None else f" subsets {list(subsets)}")
        )
    return sorted(found, key=lambda f: f.rel)


def _resolve_speakers_file(data_folder, speakers_file):
    """Path of SPEAKERS.TXT to use, or None (no sex stratification)."""
    if speakers_file is None:
        return None
    if speakers_file != AUTO:
        path = Path(os.path.abspath(speakers_file))
        if not path.is_file():
            raise FileNotFoundError(f"speakers_file not found: {path}")
        return path
    root = Path(os.path.abspath(data_folder))
    for candidate in (root / SPEAKERS_TXT, root.parent / SPEAKERS_TXT):
        if candidate.is_file():
            return candidate
    return None
