"""Evaluation: TF-Inception FID/KID with cached reference statistics, our critic network (critic score,
R-precision, attribute accuracy, critic_is), nearest-training-neighbour memorisation checks, the report.

Submodules are imported where used (`from fashiongen.evaluation.fid import reference_stats`), so that
importing one piece does not load the others' dependencies (faiss, the Inception network).
"""
