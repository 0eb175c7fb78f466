"""Shape, dtype and stride checks shared by the kernel wrappers.

Every failure raises ``ValueError`` naming the argument and what is expected, so a caller can fix the call.
"""

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _fmt(dtypes: Sequence[torch.dtype]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, t: object, *, ndim: int | None = None, min_ndim: int | None = None,
                 dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, last_dim_contiguous: bool = True) -> torch.Tensor:
    """Check that ``t`` is a tensor of an allowed dtype and rank whose last dimension has stride 1."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype {_fmt(dtypes)}, got {t.dtype}")
    if last_dim_contiguous and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension (stride 1), got strides {t.stride()}")
    return t


def check_contiguous(name: str, t: torch.Tensor) -> None:
    """Require a fully contiguous tensor (e.g. the paged KV cache, whose slots are computed by the kernel)."""
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got shape {tuple(t.shape)} strides {t.stride()}")


def check_same_device(**tensors: torch.Tensor) -> None:
    """All tensors on one device."""
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        where = ", ".join(f"{k} on {t.device}" for k, t in tensors.items())
        raise ValueError(f"tensors must be on one device, got {where}")


def check_same_dtype(**tensors: torch.Tensor) -> None:
    """All tensors of one dtype."""
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        what = ", ".join(f"{k}: {t.dtype}" for k, t in tensors.items())
        raise ValueError(f"tensors must share one dtype, got {what}")


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int]) -> None:
    """Exact shape match."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")


def check_scale(scale: float) -> None:
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
