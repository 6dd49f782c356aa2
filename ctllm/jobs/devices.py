"""Device sets: 'cpu' or a set of GPU ids, written canonically as '0,1'. Two jobs conflict when their sets share
a device; 'cpu' conflicts only with 'cpu'."""

from __future__ import annotations

from collections.abc import Iterable

from ctllm.errors import UserError

CPU = "cpu"


def parse_devices(devices: str | int | Iterable[int | str]) -> str:
    """'cpu', 'cuda:1', '1,0', 1 or [0, 1] → the canonical text ('cpu', '1', '0,1')."""
    if isinstance(devices, int):
        items: list[str] = [str(devices)]
    elif isinstance(devices, str):
        if devices.strip().lower() == CPU:
            return CPU
        items = [part for part in devices.replace(" ", "").split(",") if part]
    else:
        items = [str(part) for part in devices]
        if [item.lower() for item in items] == [CPU]:
            return CPU
    ids = set()
    for item in items:
        text = item.strip().lower().removeprefix("cuda:")
        if not text.isdigit():
            raise UserError(f"devices: {item!r} is neither 'cpu' nor a GPU id (0, 1, ... or cuda:N)")
        ids.add(int(text))
    if not ids:
        raise UserError("devices: choose 'cpu' or at least one GPU id")
    return ",".join(str(i) for i in sorted(ids))


def device_set(canonical: str) -> frozenset[str]:
    return frozenset({CPU}) if canonical == CPU else frozenset(canonical.split(","))


def conflicts(a: str, b: str) -> bool:
    return bool(device_set(a) & device_set(b))


def cuda_visible_devices(canonical: str) -> str:
    """The CUDA_VISIBLE_DEVICES value: the GPU ids, or '' (no GPU visible) for a CPU job."""
    return "" if canonical == CPU else canonical
