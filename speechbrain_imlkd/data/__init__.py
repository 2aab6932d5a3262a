"""Data: the synthetic VoxCeleb-layout corpus, VoxCeleb1 preparation, trial lists.

Example
-------
>>> import speechbrain_imlkd.data
"""
