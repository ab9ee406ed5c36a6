"""Reading and writing models: load (check, infer shapes, fold shape arithmetic),
constants, external data, the weightless skeleton, atomic saves, input arrays."""

from .arrays import load_arrays
from . import nbits
from .constants import MAX_ELEMENTS, const_value
from .external import DataFile, ExternalValues, Store
from .load import Model, concrete_inputs, load, parse_input_shapes, read_proto
from .save import Staged, check_output, check_targets, data_path, default_output, write_atomic
from .skeleton import full_check, infer, skeleton, with_shapes

__all__ = ["load_arrays", "MAX_ELEMENTS", "const_value", "DataFile", "ExternalValues", "Store", "Model", "concrete_inputs", "load",
           "parse_input_shapes", "read_proto", "Staged", "check_output", "check_targets", "data_path", "default_output", "write_atomic", "full_check", "infer",
           "skeleton", "with_shapes"]
