"""Datasets: many micrographs or tilt series from one TOML description, on Dask.

A consumer stage after ``simulate`` (``... -> io -> simulate -> dataset``): it reads a dataset
description (:func:`load_dataset_spec`), derives every item's parameters from the master seed
and the item index (:func:`item_parameters`), simulates items one task each on a Dask cluster
(:func:`generate_dataset`; a local one by default) and writes per item an MRC image with its
ground truth (noise-free image, particles STAR, potential volume), a record with the settings
hash that makes runs resumable, and one metadata table for the whole set.
"""

from tem_core.dataset.item import (
    generate_item,
    item_name,
    item_parameters,
    item_paths,
    record_is_current,
    settings_hash,
)
from tem_core.dataset.run import DatasetReport, generate_dataset, metadata_rows
from tem_core.dataset.spec import (
    DatasetSpec,
    DatasetSpecError,
    ParameterDistribution,
    load_dataset_spec,
    parse_dataset_spec,
)
from tem_core.dataset.star import (
    euler_zyz_from_matrices,
    matrices_from_euler_zyz,
    particle_centers_a,
    read_star,
    write_star,
)

__all__ = [
    "DatasetReport",
    "generate_dataset",
    "metadata_rows",
    "DatasetSpec",
    "DatasetSpecError",
    "ParameterDistribution",
    "euler_zyz_from_matrices",
    "generate_item",
    "item_name",
    "item_parameters",
    "item_paths",
    "load_dataset_spec",
    "matrices_from_euler_zyz",
    "parse_dataset_spec",
    "particle_centers_a",
    "read_star",
    "record_is_current",
    "settings_hash",
    "write_star",
]
