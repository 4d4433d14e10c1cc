"""LoRA dropout with masks drawn from 16 random bits per element, for CPU training.

peft drops out each adapted layer's input with ``nn.Dropout``. On CPU, PyTorch draws that mask one
element at a time from its Mersenne Twister (``bernoulli_``): 10% of a Gemma 3 270M LoRA step on two
threads, more than attention. Drawing 64-bit integers and reading each as four 16-bit ones needs a quarter
of the generator calls; an element is kept when its 16 bits are at or above a threshold. That is dropout
with p rounded to a multiple of 1/65536 (0.05 becomes 3277/65536 = 0.050003), kept elements scaled by
1 / (1 - p) as ``nn.Dropout`` scales them, drawn from torch's own generator, so a seed repeats a run.
On a GPU the fused dropout kernel is fast already; this is for CPU runs only.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 65536


class SixteenBitDropout(nn.Module):
    """``nn.Dropout(p)`` in training, identity in evaluation; the mask costs a quarter of the random draws."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), not {p}")
        self.p = p
        self.dropped = round(p * _LEVELS)  # of 65536 equally likely 16-bit values, this many drop an element

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropped == 0:
            return x
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        bits = words.view(torch.int16)[:n].view(x.shape)
        keep = (bits >= self.dropped - _LEVELS // 2).to(x.dtype).mul_(_LEVELS / (_LEVELS - self.dropped))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_sixteen_bit_dropout(model) -> int:
    """Swap every LoRA layer's ``nn.Dropout`` for ``SixteenBitDropout`` of the same p; returns how many."""
    from peft.tuners.lora import LoraLayer

    swapped = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, dropout in list(module.lora_dropout.items()):
                if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                    replacement = SixteenBitDropout(dropout.p)
                    replacement.train(dropout.training)
                    module.lora_dropout[name] = replacement
                    swapped += 1
    return swapped
