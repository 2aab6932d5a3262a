"""Packaging for speechbrain-imlkd, a SpeechBrain plugin for IML-KD."""
from setuptools import find_packages, setup

setup(
    name="speechbrain-imlkd",
    version="0.1.0",
    description=(
        "Integrated Multi-level Knowledge Distillation (IML-KD) for "
        "speaker verification, as a SpeechBrain recipe plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["speechbrain_imlkd", "speechbrain_imlkd.*"]),
    python_requires=">=3.9",
    # Ranges admit the verified set pinned in requirements.txt.
    install_requires=[
        "torch>=2.1,<2.15",
        "torchaudio>=2.1,<2.12",
        "speechbrain>=1.0.0,<1.2",
        "hyperpyyaml>=1.2",
        "numpy>=1.23,<3",
        "soundfile>=0.12",
        "tqdm>=4.0",
    ],
    extras_require={
        "ig": ["captum>=0.7"],
        "plots": ["matplotlib>=3.6"],
        # ONNX export (torch's dynamo exporter needs onnxscript) and runtime.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.17", "onnxscript>=0.1"],
        "test": ["pytest>=7", "captum>=0.7", "matplotlib>=3.6"],
    },
    entry_points={
        "console_scripts": [
            "imlkd-synth=speechbrain_imlkd.data.synthetic:main",
            "imlkd-export=speechbrain_imlkd.export:main",
            "imlkd-verify=speechbrain_imlkd.verify_cli:main",
        ]
    },
)
