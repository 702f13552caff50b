"""Feature extraction to disk: `z` for many images, written in shards that survive a crash and resume exactly.

[`extract_features`] and [`encode_images`] are the job (`extraction`); [`write_features`], [`load_features`] and the
shard folder with its manifest are the format (`store`).
"""

from .extraction import FeatureExtractionOutput, encode_images, extract_features
from .store import (
    MANIFEST_NAME,
    atomic_write,
    feature_metadata,
    load_features,
    printable_name,
    shard_name,
    write_features,
)

__all__ = [
    "FeatureExtractionOutput",
    "MANIFEST_NAME",
    "atomic_write",
    "encode_images",
    "extract_features",
    "feature_metadata",
    "load_features",
    "printable_name",
    "shard_name",
    "write_features",
]
