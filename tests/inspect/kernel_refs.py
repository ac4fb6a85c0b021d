"""The independent per-kernel references of tests/attention/test_attn_kernels.py, loaded by path.

They are written there with einsum and loop-built masks in float64 and share nothing with the
library's masked softmax, causal mask or pattern predicates.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent / "attention"
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))  # test_attn_kernels imports sparse_reference from beside it
_spec = importlib.util.spec_from_file_location("_attn_kernel_refs", _HERE / "test_attn_kernels.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)

REFERENCES = _mod.REFERENCES
PARAMS = _mod.PARAMS
PATTERN_PREDICATES = _mod.PATTERN_PREDICATES
BIDIRECTIONAL_ONLY = _mod.BIDIRECTIONAL_ONLY
allowed_mask = _mod.allowed_mask
user_mask = _mod.user_mask
