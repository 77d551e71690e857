"""Where and how models run: device, dtype, the trie cache's byte budget, CPU threads.

One :class:`RuntimeConfig` is given to every loader (policy, guard, MRM, released MRM) and is
what every command's ``--device``, ``--dtype``, ``--kv-budget`` and ``--threads`` build. It
follows Hugging Face's conventions: ``dtype`` is a torch dtype (``torch.bfloat16``) passed to
``from_pretrained`` as ``dtype=``, and a model meant for an accelerator is loaded straight onto
it with ``device_map`` (no float32 copy on the CPU first).

Computation runs in ``dtype``; the reward heads' outputs (guard verdicts, MRM reward vectors)
and the policy's next-token logits are returned in float32, where the comparisons and the
sampling that read them need the precision.

A device that is not there is refused with one line (:meth:`RuntimeConfig.check`) before any
weight is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saffron.errors import SaffronError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
DEVICE_TYPES = ("cpu", "cuda", "mps")


def dtype_name(text: str) -> str:
    """The canonical dtype name of ``text`` (``bf16`` → ``bfloat16``); SaffronError otherwise."""
    name = DTYPE_ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in DTYPES:
        raise SaffronError(f"unknown dtype {text!r}; expected one of {', '.join(DTYPES)}")
    return name


@dataclass(frozen=True)
class RuntimeConfig:
    """Device, dtype, KV byte budget and threads of every model a command loads."""

    device: str = "cpu"
    """Torch device of every model: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    dtype: str = "float32"
    """Weights and activations: ``float32``, ``bfloat16`` or ``float16``."""
    kv_budget: int | None = None
    """Bytes of each model's trie KV cache, transient buffers included (None: the default)."""
    threads: int | None = None
    """Torch CPU threads (None: torch's default)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        parse_device(self.device)
        if self.kv_budget is not None and self.kv_budget < 1:
            raise SaffronError(
                f"the KV budget must be a positive number of bytes, got {self.kv_budget}"
            )
        if self.threads is not None and self.threads < 1:
            raise SaffronError(f"threads must be ≥ 1, got {self.threads}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def on_cpu(self) -> bool:
        return parse_device(self.device).type == "cpu"

    def check(self) -> torch.device:
        """The torch device, or SaffronError (one line) when this machine does not have it."""
        return check_device(self.device)

    def apply(self) -> torch.device:
        """:meth:`check` the device and set torch's CPU threads; the device."""
        dev = self.check()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return dev

    def device_map(self) -> str | None:
        """``device_map`` for ``from_pretrained``: the device itself, or None on the CPU (the
        default placement, without accelerate's dispatch)."""
        return None if self.on_cpu else str(self.check())


def parse_device(device: str) -> torch.device:
    """``device`` as a torch device of a supported type; SaffronError otherwise (no I/O)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SaffronError(
            f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type not in DEVICE_TYPES:
        raise SaffronError(f"unsupported device {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


def check_device(device: str) -> torch.device:
    """``device`` if this machine has it, else SaffronError saying what is missing."""
    dev = parse_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SaffronError(
                f"device {device!r} is not available: torch {torch.__version__} finds no CUDA "
                "GPU on this machine; use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SaffronError(f"device {device!r} is not available: this machine has {count} GPUs")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SaffronError(f"device {device!r} is not available on this machine; use --device cpu")
    return dev


CPU = RuntimeConfig()  # the default of every loader: float32 on the CPU, default budget
