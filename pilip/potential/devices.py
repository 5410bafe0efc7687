"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from pilip.errors import PilipError


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given.

    A CUDA request on a machine without CUDA, or any other device type, is a PilipError.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise PilipError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise PilipError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PilipError(f"--device {name}: CUDA is not available here; use cpu or auto")
    return device
