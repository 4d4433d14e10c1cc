"""The LM head of a CPU training step: only the positions whose next token is learned, as one plain matmul.

With a 262k-token vocabulary (Gemma 3) the LM head is most of a small model's compute: 168M of the 270M
multiply-adds per token. trl's fused head scores every position on devices without Triton (prompt tokens
included, though assistant-only loss never learns them), recomputes the logits in its backward pass and
accumulates the gradient GEMMs in fp32 from bf16 tiles. On CPU that made a step of Gemma 3 270M (one
128-token pack, bf16 autocast, 1 thread) cost 2.9 CPU-seconds where the backbone alone took 0.8. This head
keeps the rows of the hidden states whose label is learned, projects them once (autocast picks the matmul
precision), and lets autograd do the rest: the same loss, gradients and token accuracy as trl's head, for
the answer tokens only. The entropy trl logs is not computed (NaN in the trainer's log history): over a
262k vocabulary it costs another 0.37 CPU-seconds a step, and nothing in ragtune reads it. On a GPU, and
for batches whose learned logits would not fit in memory at once, trl's own head runs.
"""

from __future__ import annotations

import functools
import types

# Learned positions x vocabulary above which trl's tiled head runs instead (2^27 fp32 logits: 512 MiB).
MAX_LOGITS = 2**27


def add_compact_lm_head(model) -> None:
    """Patch `model` (a causal LM, or a PEFT model around one) so that on CPU a call with labels in training
    (or with trl's ``fused_lm_head=True``, in training and evaluation) scores only the learned positions.
    Install it after trl's own patch (``SFTTrainer.__init__``), which it falls back to elsewhere."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = causal.forward
    softcap = getattr(causal.config.get_text_config(), "final_logit_softcapping", None)

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        learned = shift_labels if shift_labels is not None else (labels[:, 1:] if labels is not None else None)
        head = self.get_output_embeddings()
        use = (learned is not None and (fused_lm_head or self.training) and head.weight.device.type == "cpu"
               and int((learned != -100).sum()) * head.weight.shape[0] <= MAX_LOGITS)
        if not use:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            if fused_lm_head:
                extra["fused_lm_head"] = True
            return previous(*args, **kwargs, **extra)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden = hidden[:, :-1]
        mask = learned != -100
        targets = learned[mask]
        logits = head(hidden[mask])
        if softcap:
            logits = torch.tanh(logits.float() / softcap) * softcap
        log_probs = token_log_probs().apply(logits, targets)
        with torch.no_grad():
            is_top1 = logits.detach().argmax(-1) == targets
            entropy = torch.full_like(log_probs, float("nan"))  # not computed: see the module's docstring

        def spread(values):  # back to the labels' shape, zero where nothing is learned (as trl's head returns)
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / denominator, log_probs=spread(log_probs),
                                   entropy=spread(entropy), is_top1=spread(is_top1), label_mask=mask)

    causal.forward = types.MethodType(forward, causal)


ROWS_PER_PASS = 4  # for a 262k vocabulary, 4 MiB of fp32 logits at a time


@functools.cache
def token_log_probs():
    """An autograd function: log p(target) for each row of `logits`, without an fp32 copy of all the logits.

    ``cross_entropy(logits.float())`` writes the logits again in fp32, then their log-softmax, and as much
    again backward: four passes over 60 x 262k values a step, out of every cache. This one reads a few rows
    at a time in fp32 (exact: bf16 widens without rounding), keeps each row's log-sum-exp, and in the
    backward pass writes the gradient, ``grad * (onehot - softmax)``, straight in the logits' dtype. The
    arithmetic is fp32 throughout, as after the cast."""
    import torch

    class TokenLogProbs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, targets):
            with torch.autocast(logits.device.type, enabled=False):
                lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
                for i in range(0, logits.shape[0], ROWS_PER_PASS):
                    lse[i:i + ROWS_PER_PASS] = torch.logsumexp(logits[i:i + ROWS_PER_PASS].float(), dim=-1)
                picked = logits.gather(1, targets[:, None]).squeeze(1).float()
            ctx.save_for_backward(logits, targets, lse)
            return picked - lse

        @staticmethod
        def backward(ctx, grad):
            logits, targets, lse = ctx.saved_tensors
            out = torch.empty_like(logits)
            with torch.autocast(logits.device.type, enabled=False):
                for i in range(0, logits.shape[0], ROWS_PER_PASS):
                    rows = slice(i, i + ROWS_PER_PASS)
                    out[rows] = (logits[rows].float() - lse[rows, None]).exp_().mul_(-grad[rows, None])
                out[torch.arange(len(targets), device=out.device), targets] += grad.to(out.dtype)
            return out, None

    return TokenLogProbs


def frozen_weights_to_bf16(model) -> None:
    """Store the frozen weights in bf16, as loading the base in bf16 does: under bf16 autocast every matmul
    casts its fp32 weights to bf16 again on every step (0.2 s for Gemma 3's LM head alone on one core),
    though frozen weights never change. Trainable weights (the adapters) stay fp32."""
    import torch

    for param in model.parameters():
        if not param.requires_grad and param.dtype == torch.float32:
            param.data = param.data.to(torch.bfloat16)


def adapter_inputs_stay_bf16(model) -> None:
    """Let LoRA layers take their bf16 input as it comes under bf16 autocast. peft casts a layer's input to its
    adapter's dtype (fp32) before the dropout, and autocast casts it back to bf16 for the adapter's matmul:
    two copies of every adapted layer's input, forward and backward, and a dropout over twice the bytes, for
    the same bf16 matmul in the end. Only for runs under autocast: without it an fp32 adapter refuses bf16."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def prepare_bf16_lora(model) -> None:
    """A LoRA model as a bf16-autocast CPU run trains it (what the precision probe times for bf16, too)."""
    frozen_weights_to_bf16(model)
    adapter_inputs_stay_bf16(model)
