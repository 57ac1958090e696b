"""Every target form Captum accepts for a ``(B, classes)`` output, and the ones
it must reject, for a batch of two; shared by the attr and metrics tests of the
one target normaliser (``captum_vit._targets``)."""

from __future__ import annotations

import numpy as np
import torch

#: (id, target, the classes it names for the two samples)
ACCEPTED = [
    ("int", 1, [1, 1]),
    ("numpy_int", np.int64(2), [2, 2]),
    ("numpy_int32", np.int32(1), [1, 1]),
    ("tuple", (2,), [2, 2]),
    ("tensor_0d", torch.tensor(1), [1, 1]),
    ("tensor_1", torch.tensor([2]), [2, 2]),
    ("tensor_b", torch.tensor([0, 3]), [0, 3]),
    ("tensor_int32", torch.tensor([3, 0], dtype=torch.int32), [3, 0]),
    ("numpy_array", np.array([1, 2]), [1, 2]),
    ("numpy_0d", np.array(3), [3, 3]),
    ("list", [2, 0], [2, 0]),
    ("list_numpy", [np.int64(0), np.int64(1)], [0, 1]),
    ("list_of_tuples", [(1,), (3,)], [1, 3]),
    ("list_1", [3], [3, 3]),
]

#: (id, target, exception type, message pattern)
REJECTED = [
    ("bool", True, TypeError, "bool"),
    ("numpy_bool", np.bool_(False), TypeError, "bool"),
    ("float", 1.0, TypeError, "float"),
    ("string", "cat", TypeError, "str"),
    ("float_tensor", torch.tensor([0.0, 1.0]), TypeError, "integers"),
    ("bool_tensor", torch.tensor([True, False]), TypeError, "integers"),
    ("float_array", np.array([0.0, 1.0]), TypeError, "integers"),
    ("list_of_floats", [0.5, 1.0], TypeError, "per sample"),
    ("list_with_bool", [True, 1], TypeError, "per sample"),
    ("tuple_2", (0, 1), ValueError, "1-tuple"),
    ("list_of_2_tuples", [(0, 1), (1, 0)], ValueError, "1-tuple"),
    ("tensor_2d", torch.tensor([[0, 1]]), ValueError, r"shape \(B,\)"),
    ("too_many", [0, 1, 2], ValueError, "3 entries for a batch of 2"),
    ("empty", [], ValueError, "0 entries for a batch of 2"),
    ("out_of_range", 5, ValueError, "out of range for 5 classes"),
    ("negative", torch.tensor([0, -1]), ValueError, "out of range"),
]
