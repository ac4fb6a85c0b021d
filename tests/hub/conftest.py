"""Shared pieces of the Hugging Face interop tests."""

from __future__ import annotations

from typing import Callable

import pytest
from safetensors.torch import load_file, save_file


def _edit_weights(path: str, edit: Callable[[dict], object]) -> None:
    """Apply ``edit`` to the state dict of ``path/model.safetensors`` and write it back."""
    state = load_file(f"{path}/model.safetensors")
    edit(state)
    save_file(state, f"{path}/model.safetensors")


@pytest.fixture()
def edit_weights() -> Callable[[str, Callable[[dict], object]], None]:
    """``edit_weights(path, edit)``: change a saved checkpoint's tensors in place."""
    return _edit_weights
