"""Command line and folder-level export: :func:`export_folder`, :func:`main`.

``python -m speechbrain_imlkd.onnx_export FOLDER`` and ``imlkd-export
FOLDER --onnx`` export a hub-layout folder to ONNX (and int8) and print the
parity report.

Authors
 * speechbrain-imlkd contributors 2025
"""

import argparse
import sys
from pathlib import Path

from speechbrain_imlkd.onnx_export.exporter import export_onnx
from speechbrain_imlkd.onnx_export.parity import PARITY_SECONDS, check_parity, format_parity
from speechbrain_imlkd.onnx_export.quantize import quantize_int8

#: File name of the ONNX model written next to a hub-layout folder's files.
ONNX_FILE = "embedding_model.onnx"


def export_folder(model_dir, output=None, int8=False, parity_seconds=PARITY_SECONDS,
                  clips=(), report=print):
    """Exports a hub-layout folder to ONNX (and int8), and reports parity.

    The command-line entries (``imlkd-export --onnx``, ``python -m
    speechbrain_imlkd.onnx_export``) call this.

    Arguments
    ---------
    model_dir : str or pathlib.Path
        The hub-layout folder.
    output : str or pathlib.Path or None
        The fp32 ``.onnx`` file (default ``<model_dir>/embedding_model.onnx``).
    int8 : bool
        Also write the dynamically quantised copy (``<stem>.int8.onnx``).
    parity_seconds : sequence of float
        Synthetic durations of the parity report.
    clips : sequence of path
        Real clips for the parity report.
    report : callable
        Receives the report lines.

    Returns
    -------
    dict
        ``onnx`` (path), ``int8`` (path or None), ``parity`` and
        ``parity_int8`` (lists of :func:`check_parity` rows).

    Example
    -------
    >>> export_folder("/nonexistent/model", report=lambda s: None)
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    from speechbrain_imlkd.embeddings import load_model, model_fingerprint

    model_dir = Path(model_dir)
    encoder = load_model(model_dir)
    output = Path(output) if output is not None else model_dir / ONNX_FILE
    onnx_path = export_onnx(
        encoder, output, metadata={"source_fingerprint": model_fingerprint(model_dir)}
    )
    parity = check_parity(encoder, onnx_path, seconds=parity_seconds, clips=clips)
    report(f"Wrote {onnx_path} (fp32); parity with the torch model:")
    report(format_parity(parity))
    result = dict(onnx=onnx_path, int8=None, parity=parity, parity_int8=None)
    if int8:
        int8_path = quantize_int8(onnx_path)
        parity_int8 = check_parity(encoder, int8_path, seconds=parity_seconds, clips=clips)
        report(f"Wrote {int8_path} (dynamic int8); agreement with the fp32 torch model:")
        report(format_parity(parity_int8))
        result.update(int8=int8_path, parity_int8=parity_int8)
    return result


def main(argv=None):
    """Command line: ``python -m speechbrain_imlkd.onnx_export FOLDER``.

    Arguments
    ---------
    argv : list of str or None
        ``FOLDER [--output FILE.onnx] [--int8] [--clips FILE ...]``.

    Returns
    -------
    None

    Example
    -------
    >>> main(["/nonexistent/model"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder not found: /nonexistent/model
    """
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_imlkd.onnx_export",
        description="Export a hub-layout model folder as one waveform-to-embedding ONNX graph.",
    )
    parser.add_argument("folder", help="hub-layout model folder (teacher or student)")
    parser.add_argument("--output", default=None, help=f"default: <folder>/{ONNX_FILE}")
    parser.add_argument("--int8", action="store_true", help="also write a dynamic int8 copy")
    parser.add_argument("--clips", nargs="*", default=[], help="real clips for the parity report")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    export_folder(args.folder, args.output, int8=args.int8, clips=args.clips)
