"""Tiny exported models shared by the ONNX and ``imlkd-verify`` tests.

One C=16 ECAPA-TDNN with random weights goes through the whole command-line
path once per test session: a training hparams file and a checkpoint
folder, ``imlkd-export ... --onnx --int8``, giving a hub-layout folder, its
fp32 graph and its int8 copy. The export takes about 10 s, so the result is
cached for every test module of the session.
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from speechbrain_imlkd.export import EMBEDDING_FILE, main as export_main
from speechbrain_imlkd.models import build_ecapa
from speechbrain_imlkd.onnx_export import INT8_SUFFIX, ONNX_FILE

SEED = 7
CHANNELS = 16
LIN_NEURONS = 8
ATTENTION = 8

HPARAMS = f"""\
n_mels: 80
sample_rate: 16000
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [{CHANNELS}, {CHANNELS}, {CHANNELS}, {CHANNELS}, {3 * CHANNELS}]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {ATTENTION}
    lin_neurons: {LIN_NEURONS}
"""


@functools.lru_cache(maxsize=None)
def tiny_exports():
    """Exports the tiny model once; returns its folder and ONNX files."""
    root = Path(tempfile.mkdtemp(prefix="imlkd_onnx_test_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    torch.manual_seed(SEED)
    model = build_ecapa(CHANNELS, lin_neurons=LIN_NEURONS, attention_channels=ATTENTION)
    # Non-trivial batch-norm statistics, as a trained model has.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    ckpt = root / "ckpt"
    ckpt.mkdir()
    torch.save(model.state_dict(), ckpt / EMBEDDING_FILE)
    (root / "hparams.yaml").write_text(HPARAMS)
    folder = root / "model"
    export_main([str(root / "hparams.yaml"), "--checkpoint", str(ckpt),
                 "--output", str(folder), "--onnx", "--int8"])
    onnx_file = folder / ONNX_FILE
    return SimpleNamespace(
        root=root,
        folder=folder,
        onnx=onnx_file,
        int8=onnx_file.with_name(onnx_file.name[: -len(".onnx")] + INT8_SUFFIX),
    )


def feature_input_graph():
    """A graph taking features (batch x frames x 80), not waveforms."""
    from onnx import TensorProto, helper

    feats = helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", 80])
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 80])
    node = helper.make_node("ReduceMean", ["feats"], ["embeddings"], axes=[1], keepdims=0)
    graph = helper.make_graph([node], "features_to_embedding", [feats], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
