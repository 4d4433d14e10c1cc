"""The CPU training head: the loss, gradients and metrics of the full LM head, computed on the learned positions only;
frozen weights in bf16 when bf16 runs, adapters in fp32."""

from __future__ import annotations

import pytest

from ragtune.models import resolve_llm
from training.config import defaults_for
from training.lm_head import ROWS_PER_PASS, adapter_inputs_stay_bf16, frozen_weights_to_bf16, token_log_probs
from training.precision import probe_inputs
from training.trainer import build_trainer, method_label, trainable_model

from .conftest import FACTS

pytestmark = pytest.mark.timeout(300)


def _model_and_batch(name: str):
    import torch

    config = defaults_for(name, "lora")
    model = trainable_model(resolve_llm(name, progress=False).path, config)  # has the compact head
    for p in model.parameters():  # LoRA B starts at zero: move it so the adapters change the logits
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (2, 40), generator=generator)
    labels = ids.clone()
    labels[:, :25] = -100  # the prompt: not learned
    labels[1, 30:] = -100
    return model, ids, labels


def _gradients(model):
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma"])
def test_the_compact_head_gives_the_loss_and_gradients_of_the_full_head(name):
    import torch

    model, ids, labels = _model_and_batch(name)
    model.train()
    compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
    compact.loss.backward()
    ours = _gradients(model)
    model.zero_grad()
    model.eval()  # in evaluation without trl's flag the model's own forward runs: full logits, its own loss
    full = model(input_ids=ids, labels=labels)
    assert full.logits.shape == (2, 40, model.config.vocab_size)
    model.train()
    model.get_base_model().__class__.forward(model.get_base_model(), input_ids=ids, labels=labels).loss.backward()
    assert compact.loss.item() == pytest.approx(full.loss.item(), rel=1e-5)
    for a, b in zip(ours, _gradients(model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    learned = labels[:, 1:] != -100
    assert torch.equal(compact.label_mask, learned)
    logits = full.logits[:, :-1][learned]
    assert torch.equal(compact.is_top1[learned], logits.argmax(-1) == labels[:, 1:][learned])
    assert not compact.is_top1[~learned].any()
    assert compact.entropy[learned].isnan().all()  # not computed, and not pretended to be


def test_frozen_weights_go_to_bf16_and_the_adapters_stay_fp32():
    import torch

    model, _, _ = _model_and_batch("tiny-llama")
    frozen_weights_to_bf16(model)
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}


def test_bf16_adapter_inputs_give_the_loss_and_gradients_of_peft_casting_them_to_fp32():
    import torch

    model, ids, labels = _model_and_batch("tiny-llama")
    for module in model.modules():  # dropout masks would differ between the two runs
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    frozen_weights_to_bf16(model)
    model.train()
    runs = []
    for keep_bf16 in (False, True):
        if keep_bf16:
            adapter_inputs_stay_bf16(model)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        runs.append((loss.item(), _gradients(model)))
    (peft_loss, peft_grads), (our_loss, our_grads) = runs
    assert our_loss == pytest.approx(peft_loss, rel=1e-6)
    for a, b in zip(our_grads, peft_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError):  # outside autocast an fp32 adapter refuses a bf16 input: autocast runs only
        model(input_ids=ids, labels=labels, fused_lm_head=True)


def test_a_bf16_lora_trainer_stores_its_base_in_bf16_and_labels_it_truthfully(tmp_path):
    import torch

    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    for bf16, frozen in ((True, torch.bfloat16), (False, torch.float32)):
        config = defaults_for("tiny-llama", "lora", bf16=bf16, max_steps=2, eval_each_epoch=False)
        trainer = build_trainer(config, resolve_llm("tiny-llama", progress=False).path, rows, [], tmp_path / str(bf16))
        assert trainer.args.bf16 is bf16
        assert {p.dtype for p in trainer.model.parameters() if not p.requires_grad} == {frozen}
        assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
        casts = {m.cast_input_dtype_enabled for m in trainer.model.modules() if hasattr(m, "cast_input_dtype_enabled")}
        assert casts == {not bf16}  # under autocast the adapters take their bf16 input as it is
        assert method_label(config.method, bf16) == ("LoRA, bf16 mixed precision" if bf16 else "LoRA, fp32")
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert losses and all(loss == loss for loss in losses)  # finite: trained through the compact head


def test_the_probe_learns_the_answers_only_as_training_does():
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_llm("tiny-gemma", progress=False).path)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    ids, labels = probe_inputs(tok, rows, 128, 2)
    assert ids.shape == labels.shape == (2, 128)
    learned = labels != -100
    assert torch.equal(labels[learned], ids[learned])
    answer = tok(FACTS[0][1], add_special_tokens=False)["input_ids"]
    first = ids[0].tolist()
    start = next(i for i in range(len(first)) if first[i:i + len(answer)] == answer)
    assert learned[0, start:start + len(answer)].all() and not learned[0, :start].any()
    _, everything = probe_inputs(tok, rows, 128, 2, answers_only=False)
    assert (everything != -100).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_token_log_probs_match_cross_entropy_over_fp32_logits_forward_and_backward(dtype):
    import torch


    generator = torch.Generator().manual_seed(0)
    rows = 3 * ROWS_PER_PASS + 1  # a last pass with fewer rows
    logits = (torch.randn(rows, 5000, generator=generator) * 4).to(getattr(torch, dtype))
    targets = torch.randint(0, 5000, (rows,), generator=generator)
    targets[1] = targets[0]  # two rows learning the same token
    weights = torch.randn(rows, generator=generator)

    def run(fn):
        x = logits.clone().requires_grad_()
        out = fn(x)
        (out * weights).sum().backward()
        return out.detach(), x.grad

    expected, expected_grad = run(lambda x: -torch.nn.functional.cross_entropy(x.float(), targets, reduction="none"))
    got, got_grad = run(lambda x: token_log_probs().apply(x, targets))
    assert got.dtype == torch.float32 and got_grad.dtype == logits.dtype
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    # Both end in the logits' dtype: bf16 rounds each gradient to 3 significant digits.
    tolerance = (1e-5 if dtype == "float32" else 1e-2) * float(expected_grad.abs().max())
    assert float((got_grad.float() - expected_grad.float()).abs().max()) <= tolerance
