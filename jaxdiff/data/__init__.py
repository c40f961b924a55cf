"""Offline data for history-conditioned diffusion: history encoding, rollout collection and
on-disk datasets (flashbax Vaults).

    ds = jaxdiff.data.load_dataset("datasets/smax_zerg_5v5_random_100000")
    tau, s = ds.train.tau(), ds.train.states()

`jaxdiff collect ...` (see `jaxdiff.data.collect`) writes the datasets.
"""
from jaxdiff.data import history
from jaxdiff.data.dataset import (
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    Split,
    load_dataset,
)

__all__ = ["Dataset", "DatasetError", "DatasetNotFoundError", "Split", "history", "load_dataset"]
