"""Dataset readers, splits, decoding and augmentation."""

from .augment import AugmentConfig, augment
from .dataset import DataBundle, FaceSet, build_data, read_table
from .table import LabelTable

__all__ = ["AugmentConfig", "augment", "DataBundle", "FaceSet", "build_data", "read_table", "LabelTable"]
