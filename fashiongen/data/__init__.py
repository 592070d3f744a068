"""Datasets: one record type for every source, readers, captions from attributes, splits and transforms.

    source = open_source("../shared/data/fashion-products", split="train")
    dataset = FashionDataset.from_config(DataConfig(resolution=64))
"""

from .dataset import FashionDataset, collate
from .records import DataError, Record, RecordError, RecordMeta, SkipLog, Source, iter_records
from .sources import READERS, detect_format, open_from_config, open_source

__all__ = [
    "READERS", "DataError", "FashionDataset", "Record", "RecordError", "RecordMeta", "SkipLog", "Source",
    "collate", "detect_format", "iter_records", "open_from_config", "open_source",
]
