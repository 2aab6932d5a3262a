"""speechbrain-imlkd: Integrated Multi-level Knowledge Distillation for SpeechBrain.

A SpeechBrain recipe plugin that distils a frozen ECAPA-TDNN teacher into a
small ECAPA-TDNN student with IML-KD (Yang et al., arXiv 2409.09389) and the
baselines it is compared against.

Example
-------
>>> import speechbrain_imlkd
>>> speechbrain_imlkd.__version__
'0.1.0'
"""

__version__ = "0.1.0"
