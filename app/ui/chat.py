"""Chat tab: streamed answers with clickable sources, and 2-4 variants side by side on one prompt."""

from __future__ import annotations

from functools import partial

import gradio as gr

from ragtune.errors import BadInputError
from serving.engine import SamplingOptions
from serving.variants import Answer

from .common import VARIANT_LABELS, VARIANTS, adapter_names, citations_html, esc, guarded, open_ws

MAX_COMPARE = 4


def _options(max_tokens, temperature) -> SamplingOptions:
    return SamplingOptions(max_tokens=int(max_tokens), temperature=float(temperature))


def _adapter(value):
    return value or None  # None: the assistant picks the newest adapter for ft variants


def _cite_line(citations) -> str:
    if not citations:
        return ""
    return "\n\n<sub>Sources: " + " ".join(f"[{c.get('n')}] {esc(c.get('citation') or c.get('doc'))}" for c in citations) + "</sub>"


def _stream_answer(ctx, ws, question, variant, adapter, history, options):
    """Yield (text so far, final Answer or None). The assistant comes from the composition root
    (``app.wiring.assistants.build_assistant``) on the app's shared engine."""
    assistant = ctx.assistant(ws, [variant])
    text = ""
    for item in assistant.stream(question, variant=variant, adapter=adapter, history=history, options=options):
        if isinstance(item, Answer):
            yield item.text or text, item
        else:
            text += item
            yield text, None


def chat_turn(ctx, ws_name, question, variant, adapter, max_tokens, temperature, messages, history):
    question = (question or "").strip()
    if not question:
        raise BadInputError("Type a question first.")
    ws = open_ws(ws_name)
    messages = list(messages or []) + [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
    history = list(history or [])
    yield messages, "", gr.skip(), history
    answer = None
    for text, answer in _stream_answer(ctx, ws, question, variant, _adapter(adapter), history,
                                       _options(max_tokens, temperature)):
        messages[-1] = {"role": "assistant", "content": text}
        yield messages, gr.skip(), gr.skip(), gr.skip()
    if answer is None:
        raise BadInputError("The model returned nothing; try again.")
    citations = answer.citations or []
    label = variant + (f":{answer.adapter}" if answer.adapter else "")
    stats = f"\n\n<sub>{esc(label)} - {answer.completion_tokens or 0} tokens in {answer.latency_s or 0:.1f} s</sub>"
    messages[-1] = {"role": "assistant", "content": (answer.text or "(empty answer)") + _cite_line(citations) + stats}
    history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]
    yield messages, gr.skip(), citations_html(citations, "src"), history


def compare(ctx, ws_name, question, variants, adapter, max_tokens, temperature):
    question = (question or "").strip()
    if not question:
        raise BadInputError("Type a question to compare.")
    variants = list(variants or [])
    if not 2 <= len(variants) <= MAX_COMPARE:
        raise BadInputError(f"Pick between 2 and {MAX_COMPARE} variants to compare.")
    ws = open_ws(ws_name)
    options = _options(max_tokens, temperature)
    outs = [""] * MAX_COMPARE
    headers = [gr.update(visible=i < len(variants)) for i in range(MAX_COMPARE)]
    yield *headers, *outs
    for i, variant in enumerate(variants):
        title = f"<h4>{esc(variant)} - {esc(VARIANT_LABELS.get(variant, variant))}</h4>"
        for text, answer in _stream_answer(ctx, ws, question, variant, _adapter(adapter), None, options):
            outs[i] = title + f"<div class='rt-answer'>{esc(text)}</div>"
            if answer is not None:
                outs[i] = (title + f"<div class='rt-answer'>{esc(answer.text or '(empty answer)')}</div>"
                           + citations_html(answer.citations, f"cmp{i}"))
            yield *[gr.skip()] * MAX_COMPARE, *outs


def refresh_adapters(ws_name):
    names = adapter_names(open_ws(ws_name)) if ws_name else []
    return gr.update(choices=[("newest", "")] + [(n, n) for n in names], value="")


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks) -> None:
    with gr.Row():
        variant = gr.Dropdown([(VARIANT_LABELS[v], v) for v in VARIANTS], value="rag", label="Answer with",
                              elem_id="chat-variant", scale=2)
        adapter = gr.Dropdown([("newest", "")], value="", label="Fine-tuned model", elem_id="chat-adapter", scale=1)
    with gr.Accordion("Advanced", open=False, elem_id="chat-advanced"):
        max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Longest answer (tokens)", elem_id="chat-max-tokens")
        temperature = gr.Slider(0, 1.5, value=0.0, step=0.1, label="Creativity (temperature)")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot", buttons=["copy"],
                                 placeholder="Ask a question about your documents.")
            with gr.Row():
                question = gr.Textbox(show_label=False, placeholder="Ask about your documents...", scale=5,
                                      elem_id="chat-input", autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            clear = gr.Button("New conversation", size="sm", elem_id="chat-clear")
        with gr.Column(scale=2):
            sources = gr.HTML("<div class='rt-muted'>Sources of the last answer appear here: click one to read the passage.</div>",
                              elem_id="chat-sources")
    history = gr.State([])

    gr.Markdown("### Compare side by side\nThe same question to 2-4 variants at once.")
    with gr.Row():
        cmp_variants = gr.CheckboxGroup(VARIANTS, value=["base", "rag"], label="Variants", elem_id="compare-variants", scale=2)
        cmp_question = gr.Textbox(label="Question", elem_id="compare-input", scale=4)
        cmp_btn = gr.Button("Compare", variant="primary", elem_id="compare-run", scale=1)
    cols, outs = [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_COMPARE):
            with gr.Column(visible=i < 2, variant="panel", min_width=200) as col:
                outs.append(gr.HTML(elem_id=f"compare-out-{i}"))
            cols.append(col)

    chat_inputs = [ws_select, question, variant, adapter, max_tokens, temperature, chatbot, history]
    chat_fn = guarded(partial(chat_turn, ctx))
    for trigger in (send.click, question.submit):
        trigger(chat_fn, chat_inputs, [chatbot, question, sources, history], api_visibility="private")
    clear.click(lambda: ([], [], ""), None, [chatbot, history, sources], api_visibility="private")
    cmp_fn = guarded(partial(compare, ctx))
    cmp_args = [ws_select, cmp_question, cmp_variants, adapter, max_tokens, temperature]
    cmp_btn.click(cmp_fn, cmp_args, [*cols, *outs], api_visibility="private")
    cmp_question.submit(cmp_fn, cmp_args, [*cols, *outs], api_visibility="private")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(refresh_adapters), [ws_select], [adapter], show_progress="hidden")
    ws_select.change(lambda: ([], [], ""), None, [chatbot, history, sources], show_progress="hidden")

    def ask(workspace: str, question: str, variant: str = "rag", adapter: str = "", max_tokens: int = 256) -> dict:
        """Answer one question with a variant; returns the answer with its citations."""
        ws = open_ws(workspace)
        answer = ctx.assistant(ws, [variant]).answer(question, variant=variant, adapter=_adapter(adapter),
                                                     options=_options(max_tokens, 0.0))
        return answer.to_dict()

    gr.api(guarded(ask), api_name="ask")
