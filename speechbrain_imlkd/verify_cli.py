"""``imlkd-verify``: embed audio files and score pairs or a trial list.

The model is a hub-layout folder (run in torch by SpeechBrain) or an
``.onnx`` file written by :mod:`speechbrain_imlkd.onnx_export` (run by ONNX
Runtime); both take waveforms, so the scorer only reads audio:

.. code-block:: bash

    imlkd-verify MODEL a.wav b.wav folder/ --embeddings emb.npy
    imlkd-verify MODEL --pair a.wav b.wav --pair a.wav c.wav
    imlkd-verify MODEL --trials veri_test2.txt --wav-root corpus/wav \\
        --scores scores.txt

- ``INPUT`` files and folders (searched recursively for
  :data:`AUDIO_EXTENSIONS`) are embedded; ``--embeddings OUT.npy`` writes
  the ``N x D`` float32 matrix and ``OUT.index.tsv`` (``row<TAB>path``).
- ``--pair A B`` (repeatable) prints the cosine score of each pair.
- ``--trials FILE``: one trial a line, ``<1|0> <enrol> <test>`` (labelled:
  the EER and minDCF are printed too) or ``<enrol> <test>``; relative paths
  are under ``--wav-root`` (default: the list's folder). Unlike
  :func:`speechbrain_imlkd.data.trials.read_trials`, any path is accepted,
  not only VoxCeleb's ``idNNNNN/...``.
- Audio must be mono at the model's sample rate; ``--resample`` and
  ``--downmix`` convert instead of failing.

Every file is checked and embedded before anything is written. Failures
(missing, not audio, empty, wrong rate or channels without the option,
too short, truncated) are collected, all reported at the end with the file
and, for a trial list, the line; the exit status is then 1 and no output
file is written (each is written under a temporary name and renamed only
after a run without failures).

Example
-------
>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "pairs.txt"
>>> _ = f.write_text("a.wav b.wav\\n")
>>> [(t.label, t.enrol_text, t.test_text) for t in parse_pair_list(f)]
[(None, 'a.wav', 'b.wav')]

Authors
 * speechbrain-imlkd contributors 2025
"""

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf
import torch

from speechbrain_imlkd.data.audio import AudioError, audio_info
from speechbrain_imlkd.scoring import cosine_scores, verification_metrics, write_scores

logger = logging.getLogger(__name__)

#: Extensions searched for in input folders (what libsndfile decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
#: Index file written next to ``--embeddings X.npy``: ``X.index.tsv``.
INDEX_SUFFIX = ".index.tsv"
#: Priors of the minDCF printed for a labelled trial list.
P_TARGETS = (0.01, 0.05)
#: Utterances per forward pass (sorted by length to keep padding small).
DEFAULT_BATCH_SIZE = 16
#: Exit statuses: some files failed; the run could not start (bad model,
#: bad trial list, bad options).
EXIT_FAILED_FILES = 1
EXIT_USAGE = 2


@dataclass
class FileFailure:
    """One unusable input.

    Arguments
    ---------
    path : str
        The file.
    reason : str
        What is wrong.
    where : str
        Where it was named (``trials.txt, line 3``), or empty for an input.

    Example
    -------
    >>> print(FileFailure("a.wav", "file not found", "t.txt, line 2"))
    t.txt, line 2: a.wav: file not found
    """

    path: str
    reason: str
    where: str = ""

    def __str__(self):
        head = f"{self.where}: " if self.where else ""
        return f"{head}{self.path}: {self.reason}"


class BatchFailure(RuntimeError):
    """Some input files could not be used; nothing was written.

    Arguments
    ---------
    failures : list of FileFailure
        Every failure of the run.
    n_files : int
        Number of distinct files in the run.

    Example
    -------
    >>> err = BatchFailure([FileFailure("a.wav", "empty file")], 3)
    >>> print(err)
    1 of 3 file(s) failed; nothing was written:
      a.wav: empty file
    """

    def __init__(self, failures, n_files):
        self.failures = list(failures)
        lines = "\n".join(f"  {f}" for f in self.failures)
        super().__init__(
            f"{len(self.failures)} of {n_files} file(s) failed; nothing was "
            f"written:\n{lines}"
        )


@dataclass
class Trial:
    """One line of a pair or trial list.

    Arguments
    ---------
    lineno : int
        1-based line number.
    label : int or None
        1 target, 0 non-target, None unlabelled.
    enrol : str
        Enrolment path (resolved).
    test : str
        Test path (resolved).
    enrol_text : str
        Enrolment path as written.
    test_text : str
        Test path as written.

    Example
    -------
    >>> Trial(1, 1, "/d/a.wav", "/d/b.wav", "a.wav", "b.wav").label
    1
    """

    lineno: int
    label: Optional[int]
    enrol: str
    test: str
    enrol_text: str
    test_text: str


def parse_pair_list(path, wav_root=None):
    """Reads a trial list (``<1|0> <enrol> <test>``) or pair list (``<enrol> <test>``).

    Arguments
    ---------
    path : str or pathlib.Path
        The list. Blank lines at the end are ignored; every other line must
        have the same number of fields (2 or 3).
    wav_root : str or pathlib.Path or None
        Folder of relative paths (default: the list's folder).

    Returns
    -------
    list of Trial

    Raises
    ------
    FileNotFoundError
        If the list does not exist.
    ValueError
        On a malformed line (naming the file and line) or an empty list.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "trials.txt"
    >>> _ = f.write_text("1 a.wav b.wav\\n0 a.wav /x/c.wav\\n")
    >>> [(t.label, t.test) for t in parse_pair_list(f, wav_root="/data")]
    [(1, '/data/b.wav'), (0, '/x/c.wav')]
    >>> _ = f.write_text("1 a.wav b.wav\\n2 a.wav c.wav\\n")
    >>> parse_pair_list(f)
    Traceback (most recent call last):
    ...
    ValueError: ...trials.txt, line 2: label must be 0 or 1, got '2'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Trial list not found: {path}")
    root = Path(wav_root) if wav_root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"Trial list {path} contains no trials")
    n_fields = len(lines[0].split())
    trials = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        where = f"{path}, line {lineno}"
        if len(fields) not in (2, 3):
            raise ValueError(
                f"{where}: expected '<1|0> <enrol> <test>' or '<enrol> <test>', "
                f"got {len(fields)} field(s): {line!r}"
            )
        if len(fields) != n_fields:
            raise ValueError(
                f"{where}: {len(fields)} fields, but line 1 has {n_fields} "
                "(labelled and unlabelled lines cannot be mixed)"
            )
        label = None
        if len(fields) == 3:
            if fields[0] not in ("0", "1"):
                raise ValueError(f"{where}: label must be 0 or 1, got {fields[0]!r}")
            label = int(fields[0])
            fields = fields[1:]
        enrol, test = (str(root / f) for f in fields)
        trials.append(Trial(lineno, label, enrol, test, fields[0], fields[1]))
    return trials


def find_audio(inputs):
    """Expands files and folders into a list of audio files.

    Arguments
    ---------
    inputs : sequence of str or pathlib.Path
        Files (kept whatever their extension, so that a non-audio file is
        reported, not skipped) and folders (searched recursively for
        :data:`AUDIO_EXTENSIONS`, sorted).

    Returns
    -------
    files : list of str
        Audio files, in order, without duplicates.
    failures : list of FileFailure
        Missing inputs and folders without audio.

    Example
    -------
    >>> find_audio(["/nonexistent/a.wav"])[1][0].reason
    'file or folder not found'
    """
    files, failures, seen = [], [], set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            )
            if not found:
                failures.append(FileFailure(
                    str(item), f"folder holds no audio ({', '.join(AUDIO_EXTENSIONS)})"
                ))
            candidates = found
        elif item.is_file():
            candidates = [item]
        else:
            failures.append(FileFailure(str(item), "file or folder not found"))
            candidates = []
        for p in candidates:
            if str(p) not in seen:
                seen.add(str(p))
                files.append(str(p))
    return files, failures


def load_embedder(model, threads=None):
    """Loads a hub-layout folder (torch) or an ``.onnx`` file (ONNX Runtime).

    Arguments
    ---------
    model : str or pathlib.Path
        The model.
    threads : int or None
        Threads of either runtime (None: torch's current setting).

    Returns
    -------
    object
        Has ``encode_batch(wavs, wav_lens)`` (``batch x 1 x D``),
        ``sample_rate`` and ``min_samples``.

    Raises
    ------
    FileNotFoundError
        If the path does not exist, or a folder is not in the hub layout.
    ValueError
        If a file is not a waveform-input ONNX model.

    Example
    -------
    >>> load_embedder("/nonexistent/model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model not found: /nonexistent/model
    """
    from speechbrain_imlkd.onnx_export import OnnxEmbedder, min_input_samples

    model = Path(model)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if model.is_file():
        return OnnxEmbedder(model, threads=threads)
    if not model.is_dir():
        raise FileNotFoundError(f"Model not found: {model}")
    from speechbrain_imlkd.embeddings import load_model

    encoder = load_model(model)
    encoder.sample_rate = int(getattr(encoder.hparams, "sample_rate", 16000))
    encoder.min_samples = min_input_samples(
        encoder.mods["compute_features"], encoder.mods["embedding_model"]
    )
    return encoder


def _check_file(path, sample_rate, min_samples, resample, downmix):
    """Checks a header; returns (n_samples at the model rate, reason or None)."""
    try:
        info = audio_info(path)
    except FileNotFoundError:
        return 0, "file not found"
    except AudioError as e:
        return 0, e.reason
    if info.frames <= 0:
        return 0, "empty audio (0 samples)"
    if info.channels != 1 and not downmix:
        return 0, f"{info.channels} channels, expected mono (pass --downmix to average them)"
    if info.sample_rate != sample_rate and not resample:
        return 0, (
            f"sample rate {info.sample_rate} Hz, the model expects {sample_rate} Hz "
            "(pass --resample to convert)"
        )
    n = math.ceil(info.frames * sample_rate / info.sample_rate)
    if n < min_samples:
        return 0, (
            f"too short: {info.frames} samples ({info.duration:.3f} s), the model "
            f"needs at least {min_samples} at {sample_rate} Hz"
        )
    return n, None


def _read(path, sample_rate, resample, downmix):
    """Decodes one checked file into a mono waveform at ``sample_rate``."""
    info = audio_info(path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise AudioError(path, f"could not decode audio ({e})") from None
    if data.shape[0] != info.frames:
        raise AudioError(
            path, f"truncated or corrupt: decoded {data.shape[0]} of {info.frames} samples"
        )
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1) if downmix else data[:, 0]))
    if rate != sample_rate:
        import torchaudio

        wav = torchaudio.functional.resample(wav, rate, sample_rate)
    return wav


def embed_files(embedder, files, batch_size=DEFAULT_BATCH_SIZE, resample=False,
                downmix=False, where=None):
    """Embeds audio files in length-sorted batches, collecting every failure.

    Arguments
    ---------
    embedder : object
        From :func:`load_embedder`.
    files : sequence of str
        Audio files (duplicates are embedded once).
    batch_size : int
        Files per forward pass.
    resample : bool
        Resample files at another rate instead of failing.
    downmix : bool
        Average the channels of multi-channel files instead of failing.
    where : dict or None
        ``{path: "list, line N"}``, prefixed to the failures.

    Returns
    -------
    embeddings : dict
        ``{path: float32 vector}`` of the files that worked.
    failures : list of FileFailure
        One per file that did not.

    Example
    -------
    >>> class Toy:
    ...     sample_rate, min_samples = 16000, 1
    >>> embed_files(Toy(), ["/nonexistent/a.wav"])[1][0].reason
    'file not found'
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    where = where or {}
    sample_rate = int(embedder.sample_rate)
    min_samples = int(getattr(embedder, "min_samples", 1))
    lengths, failures = {}, []
    for path in dict.fromkeys(str(f) for f in files):
        n, reason = _check_file(path, sample_rate, min_samples, resample, downmix)
        if reason is None:
            lengths[path] = n
        else:
            failures.append(FileFailure(path, reason, where.get(path, "")))
    # Longest first: an out-of-memory error shows on the first batch.
    order = sorted(lengths, key=lambda p: -lengths[p])
    embeddings = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch, wavs = [], []
            for path in order[start : start + batch_size]:
                try:
                    wavs.append(_read(path, sample_rate, resample, downmix))
                    batch.append(path)
                except (AudioError, RuntimeError) as e:
                    reason = e.reason if isinstance(e, AudioError) else str(e)
                    failures.append(FileFailure(path, reason, where.get(path, "")))
            if not batch:
                continue
            longest = max(w.numel() for w in wavs)
            padded = torch.zeros(len(wavs), longest)
            for row, wav in enumerate(wavs):
                padded[row, : wav.numel()] = wav
            lens = torch.tensor([w.numel() / longest for w in wavs])
            out = embedder.encode_batch(padded, lens).reshape(len(wavs), -1)
            out = out.detach().float().cpu().numpy()
            for row, path in enumerate(batch):
                if np.isfinite(out[row]).all():
                    embeddings[path] = out[row]
                else:
                    failures.append(FileFailure(path, "non-finite embedding", where.get(path, "")))
    return embeddings, failures


@dataclass
class VerifyResult:
    """What :func:`verify` computed.

    Arguments
    ---------
    files : list of str
        Every embedded file, in output order.
    embeddings : numpy.ndarray
        ``len(files) x D`` float32.
    trials : list of Trial
        Scored pairs and trial lines.
    scores : numpy.ndarray
        Cosine score of each trial.
    metrics : dict or None
        :func:`speechbrain_imlkd.scoring.verification_metrics` of a fully
        labelled list.

    Example
    -------
    >>> VerifyResult([], np.zeros((0, 2), np.float32)).metrics is None
    True
    """

    files: List[str]
    embeddings: np.ndarray
    trials: List[Trial] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    metrics: Optional[Dict] = None


def _write_atomic(path, writer):
    """Calls ``writer(tmp_path)`` then renames; the temporary file keeps the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def index_path(embeddings_path):
    """The index file written next to an embeddings ``.npy``.

    Arguments
    ---------
    embeddings_path : str or pathlib.Path
        E.g. ``out/emb.npy``.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> index_path("out/emb.npy").as_posix()
    'out/emb.index.tsv'
    """
    p = Path(embeddings_path)
    return p.with_name(p.stem + INDEX_SUFFIX)


def verify(model, inputs=(), pairs=(), trials=None, wav_root=None, embeddings_out=None,
           scores_out=None, resample=False, downmix=False, batch_size=DEFAULT_BATCH_SIZE,
           threads=None):
    """Embeds files, scores pairs / a trial list and writes the outputs.

    Arguments
    ---------
    model : str or pathlib.Path or object
        Hub-layout folder, ``.onnx`` file, or a loaded embedder.
    inputs : sequence of path
        Files and folders to embed.
    pairs : sequence of (path, path)
        Pairs to score.
    trials : str or pathlib.Path or None
        A trial or pair list (see :func:`parse_pair_list`).
    wav_root : str or pathlib.Path or None
        Folder of the list's relative paths.
    embeddings_out : str or pathlib.Path or None
        ``.npy`` to write (with its :func:`index_path`).
    scores_out : str or pathlib.Path or None
        Score file: ``<label> <enrol> <test> <score>`` for a labelled list
        (:func:`speechbrain_imlkd.scoring.write_scores`), else
        ``<enrol> <test> <score>``.
    resample : bool
        Resample audio at another rate.
    downmix : bool
        Average the channels of multi-channel audio.
    batch_size : int
        Files per forward pass.
    threads : int or None
        Runtime threads.

    Returns
    -------
    VerifyResult

    Raises
    ------
    BatchFailure
        Listing every unusable file (nothing is written).
    FileNotFoundError, ValueError
        On a bad model, trial list or arguments.

    Example
    -------
    >>> verify("/nonexistent/model", inputs=["a.wav"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model not found: /nonexistent/model
    """
    embedder = model if hasattr(model, "encode_batch") else load_embedder(model, threads)
    files, failures = find_audio(inputs)
    where = {}
    trial_list = []
    for i, (a, b) in enumerate(pairs, start=1):
        trial_list.append(Trial(0, None, str(a), str(b), str(a), str(b)))
        for p in (str(a), str(b)):
            where.setdefault(p, f"--pair {i}")
    if trials is not None:
        listed = parse_pair_list(trials, wav_root)
        labelled = listed[0].label is not None
        if pairs and labelled:
            raise ValueError("--pair cannot be combined with a labelled trial list")
        trial_list += listed
        for t in listed:
            for p in (t.enrol, t.test):
                where.setdefault(p, f"{trials}, line {t.lineno}")
    needed = list(dict.fromkeys(files + [p for t in trial_list for p in (t.enrol, t.test)]))
    if not needed and not failures:
        raise ValueError("nothing to do: give audio files or folders, --pair or --trials")
    embeddings, embed_failures = embed_files(
        embedder, needed, batch_size=batch_size, resample=resample, downmix=downmix, where=where
    )
    failures += embed_failures
    if failures:
        raise BatchFailure(failures, len(needed) + sum(f.path not in needed for f in failures))
    matrix = np.stack([embeddings[p] for p in needed]).astype(np.float32)
    row = {p: i for i, p in enumerate(needed)}
    result = VerifyResult(files=needed, embeddings=matrix, trials=trial_list)
    if trial_list:
        e_idx = np.array([row[t.enrol] for t in trial_list])
        t_idx = np.array([row[t.test] for t in trial_list])
        result.scores = cosine_scores(matrix, matrix, e_idx, t_idx)
        labels = [t.label for t in trial_list]
        if all(lab is not None for lab in labels):
            result.metrics = verification_metrics(result.scores, np.array(labels), P_TARGETS)
    if embeddings_out is not None:
        _write_atomic(embeddings_out, lambda tmp: np.save(tmp, matrix))
        _write_atomic(
            index_path(embeddings_out),
            lambda tmp: Path(tmp).write_text(
                "row\tpath\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(needed)),
                encoding="utf-8",
            ),
        )
    if scores_out is not None and trial_list:
        enrol = [t.enrol_text for t in trial_list]
        test = [t.test_text for t in trial_list]
        if result.metrics is not None:
            write_scores(scores_out, [t.label for t in trial_list], enrol, test, result.scores)
        else:
            _write_atomic(scores_out, lambda tmp: Path(tmp).write_text(
                "".join(f"{e} {t} {s:.6f}\n" for e, t, s in zip(enrol, test, result.scores)),
                encoding="utf-8",
            ))
    return result


def format_result(result, print_scores=True):
    """The text :func:`main` prints.

    Arguments
    ---------
    result : VerifyResult
        From :func:`verify`.
    print_scores : bool
        Include one line per trial.

    Returns
    -------
    str

    Example
    -------
    >>> r = VerifyResult(["a", "b"], np.zeros((2, 3), np.float32),
    ...                  [Trial(0, None, "a", "b", "a", "b")], np.array([0.5]))
    >>> print(format_result(r))
    0.500000 a b
    embedded 2 file(s), 3-dim embeddings; scored 1 trial(s)
    """
    lines = []
    if print_scores:
        for t, s in zip(result.trials, result.scores.tolist()):
            head = "" if t.label is None else f"{t.label} "
            lines.append(f"{head}{s:.6f} {t.enrol_text} {t.test_text}")
    lines.append(
        f"embedded {len(result.files)} file(s), {result.embeddings.shape[1]}-dim "
        f"embeddings; scored {len(result.trials)} trial(s)"
    )
    if result.metrics is not None:
        m = result.metrics
        lines.append(
            f"EER {100 * m['eer']:.2f}% (threshold {m['eer_threshold']:.4f}) on "
            f"{m['n_target']} target / {m['n_nontarget']} non-target trials"
        )
        for p in P_TARGETS:
            lines.append(f"minDCF(p_target={p:g}) {m[f'min_dcf_{p:g}']:.4f}")
    return "\n".join(lines)


def build_parser():
    """The ``imlkd-verify`` argument parser.

    Returns
    -------
    argparse.ArgumentParser

    Example
    -------
    >>> build_parser().parse_args(["m.onnx", "--pair", "a.wav", "b.wav"]).pair
    [['a.wav', 'b.wav']]
    """
    parser = argparse.ArgumentParser(
        prog="imlkd-verify",
        description="Embed audio files and score pairs or a trial list with a "
        "hub-layout model folder (torch) or an exported .onnx file (ONNX Runtime).",
    )
    parser.add_argument("model", help="hub-layout model folder, or .onnx file")
    parser.add_argument("inputs", nargs="*", help="audio files or folders to embed")
    parser.add_argument("--pair", nargs=2, action="append", default=[],
                        metavar=("ENROL", "TEST"), help="score one pair (repeatable)")
    parser.add_argument("--trials", default=None,
                        help="trial list '<1|0> <enrol> <test>' or pair list '<enrol> <test>'")
    parser.add_argument("--wav-root", default=None,
                        help="folder of the trial list's relative paths (default: its folder)")
    parser.add_argument("--embeddings", default=None,
                        help=f"write embeddings to this .npy (and <stem>{INDEX_SUFFIX})")
    parser.add_argument("--scores", default=None, help="write trial scores to this file")
    parser.add_argument("--resample", action="store_true",
                        help="resample audio at another sample rate to the model's")
    parser.add_argument("--downmix", action="store_true",
                        help="average the channels of multi-channel audio")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="do not print per-trial scores")
    return parser


def main(argv=None):
    """Command-line entry point of ``imlkd-verify``.

    Arguments
    ---------
    argv : list of str or None
        Arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        0 on success, 1 when some files failed (all listed on stderr),
        2 when the run could not start (bad model, list or options).

    Example
    -------
    >>> main(["/nonexistent/model", "a.wav"])  # the reason goes to stderr
    2
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.embeddings is not None and not args.embeddings.endswith(".npy"):
        # numpy appends .npy otherwise, and the index would name another file.
        print(f"imlkd-verify: error: --embeddings must end in .npy: {args.embeddings}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        result = verify(
            args.model, inputs=args.inputs, pairs=[tuple(p) for p in args.pair],
            trials=args.trials, wav_root=args.wav_root, embeddings_out=args.embeddings,
            scores_out=args.scores, resample=args.resample, downmix=args.downmix,
            batch_size=args.batch_size, threads=args.threads,
        )
    except BatchFailure as e:
        print(f"imlkd-verify: {e}", file=sys.stderr)
        return EXIT_FAILED_FILES
    except (FileNotFoundError, ValueError) as e:
        print(f"imlkd-verify: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(format_result(result, print_scores=not args.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
