"""ragtune's CPU LoRA ops for vLLM give what vLLM's own ops give, on batches mixing adapters and none."""

from __future__ import annotations

import pytest
import torch

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from serving import vllm_cpu_server  # noqa: E402 - after the skip: it imports vLLM

RANK, HIDDEN, OUT = 16, 64, 96


@pytest.fixture
def batch():
    """Four sequences (300 tokens) over three adapter slots: adapter 0, none (-1), adapter 1, adapter 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, HIDDEN, generator=g)
    a = torch.randn(3, 1, RANK, HIDDEN, generator=g)
    b = torch.randn(3, 1, OUT, RANK, generator=g)
    return x, a, b, torch.tensor([0, -1, 1, 0]), torch.tensor([100, 50, 100, 50])


def _run_sgmv(x, a, b, indices, lengths):
    """vLLM's prefill path (sgmv_*), which calls the bgmv_* ops installed at that moment."""
    n = x.shape[0]
    shrunk, out, sliced = torch.zeros(n, RANK), torch.ones(n, OUT), torch.ones(n, OUT + 8)
    args = (None, lengths, indices, len(lengths), int(lengths.max()), n)
    lora_ops.sgmv_shrink(x, a, shrunk, *args, 0.5)
    lora_ops.sgmv_expand(shrunk, b, out, *args, True)
    lora_ops.sgmv_expand_slice(shrunk, b, sliced, *args, 8, OUT, True)
    return shrunk, out, sliced


def test_grouped_ops_match_vllms_own(batch, monkeypatch):
    assert vllm_cpu_server.install()
    ours = _run_sgmv(*batch)
    for name, original in vllm_cpu_server._vllm_ops.items():
        monkeypatch.setattr(lora_ops, name, original)  # back to vLLM's per-token gather
    theirs = _run_sgmv(*batch)
    for mine, vllms in zip(ours, theirs):
        torch.testing.assert_close(mine, vllms, rtol=1e-5, atol=1e-4)
    assert not torch.equal(ours[1], torch.ones_like(ours[1]))  # the adapters did change the output


def test_installed_where_the_cpu_wrapper_looks_them_up():
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_cpu_server.install()
    assert punica_cpu.bgmv_shrink is vllm_cpu_server.bgmv_shrink
    assert lora_ops.bgmv_expand_slice is vllm_cpu_server.bgmv_expand_slice
    assert vllm_cpu_server._vllm_ops["bgmv_expand"].__module__ == lora_ops.__name__


def test_single_token_decode_adds_to_every_row_as_vllm_does(batch):
    _, _, b, _, _ = batch
    one = torch.randn(1, RANK)
    ours, theirs = torch.zeros(4, OUT), torch.zeros(4, OUT)
    vllm_cpu_server.bgmv_expand(one, b, ours, torch.tensor([2]), True)
    vllm_cpu_server._vllm_ops["bgmv_expand"](one, b, theirs, torch.tensor([2]), True)
    assert torch.equal(ours, theirs)  # one token's product added to every row, as vLLM does
