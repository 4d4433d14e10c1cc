"""LoRA dropout from 16 random bits per element: the statistics and gradient of nn.Dropout, torch's seeding,
and the swap into a peft model (CPU runs only)."""

from __future__ import annotations

import pytest
import torch

from ragtune.models import resolve_llm
from training.config import defaults_for
from training.lora_dropout import SixteenBitDropout, use_sixteen_bit_dropout
from training.trainer import trainable_model

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drops_the_share_p_and_scales_the_rest_as_nn_dropout_does(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(1000, 1003, dtype=dtype)  # an odd element count: the last 64-bit word is used in part
    y = SixteenBitDropout(p).train()(x)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # 1M draws: the share's standard deviation is at most 5e-4.
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    expected_scale = torch.tensor(1 / (1 - p), dtype=dtype).item()
    assert torch.allclose(y[kept].float(), torch.full((int(kept.sum()),), expected_scale), rtol=1e-2)
    assert abs(y.float().mean().item() - 1.0) < 1e-2  # unbiased, as inverted dropout is
    # Rows are not copies of each other (each element has bits of its own).
    assert not torch.equal(kept[0], kept[1])


def test_identity_in_evaluation_and_at_zero():
    x = torch.randn(64, 64)
    assert torch.equal(SixteenBitDropout(0.3).eval()(x), x)
    assert torch.equal(SixteenBitDropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        SixteenBitDropout(1.0)


def test_a_seed_repeats_the_mask_and_another_seed_changes_it():
    x = torch.ones(128, 640)
    drop = SixteenBitDropout(0.1).train()
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    b = drop(x)
    torch.manual_seed(8)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_gradient_is_the_mask():
    x = torch.randn(256, 300, requires_grad=True)
    torch.manual_seed(1)
    y = SixteenBitDropout(0.2).train()(x)
    y.sum().backward()
    keep = (y != 0).float() / (1 - round(0.2 * 65536) / 65536)
    assert torch.allclose(x.grad, keep)


def test_the_swap_replaces_every_lora_dropout_and_keeps_the_model_s_output():
    from dataclasses import replace

    config = replace(defaults_for("tiny-llama", "lora"), dropout=0.1)
    model = trainable_model(resolve_llm("tiny-llama", progress=False).path, config)  # swapped on CPU already
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(isinstance(m.lora_dropout["default"], SixteenBitDropout) for m in layers)
    assert all(m.lora_dropout["default"].p == 0.1 for m in layers)
    assert use_sixteen_bit_dropout(model) == 0  # nothing left to swap

    ids = torch.randint(3, 200, (1, 24), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.train()
    torch.manual_seed(0)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)  # evaluation is untouched by the swap
