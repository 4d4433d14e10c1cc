"""Deploy tab: publish the winning variant as the end-user assistant, show its URL, an API key and examples.

The end-user server (serving.deploy.server) runs inside this process on its own port, sharing the
loaded model, and reads the current deployment on every request: publishing takes effect at once.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import gradio as gr
import pandas as pd

from app.wiring.servers import deploy_server
from evaluation.service import suggested_variant as suggest
from ragtune.errors import BadInputError, ServerUnavailableError
from ragtune.paths import workspaces_root
from serving.deploy import deployments, keys

from .common import VARIANT_LABELS, VARIANTS, adapter_names, guarded, log, open_ws

HISTORY_COLUMNS = ["Version", "Answers with", "Fine-tuned model", "Published", "Note", "Live"]


class EndUserServer:
    """The end-user server of this app, started on first use (``serving.deploy.server.DeployServer``)."""

    def __init__(self, ctx, host: str, port: int | None):
        self.ctx, self.host, self.port = ctx, host, port
        self._server = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._server is not None

    def ensure(self) -> str:
        with self._lock:
            if self.started:
                return self.url
            # the same app as `ragtune deploy`'s, on this app's engine
            server = deploy_server(workspaces_root(), self.ctx.engine(), host=self.host, port=self.port or 0,
                                   fallback=True)
            self.port = server.port
            try:
                server.start()
            except ServerUnavailableError:
                raise ServerUnavailableError(f"The assistant server could not start on port {self.port}.") from None
            self._server = server
            return self.url


def _examples(base: str, ws_name: str, model: str, key: str | None) -> str:
    key = key or "<your API key>"
    return (
        f"# Chat page for your users:\n#   {base}/chat/{ws_name}\n\n"
        f"# curl\ncurl {base}/v1/chat/completions \\\n"
        f"  -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f"  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\n"
        f"# Python (openai package)\nfrom openai import OpenAI\n"
        f"client = OpenAI(base_url=\"{base}/v1\", api_key=\"{key}\")\n"
        f"reply = client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n"
        f"print(reply.choices[0].message.content)\n"
    )


def history_table(ws) -> pd.DataFrame:
    rows = [[d.version, d.variant, d.adapter or "", time.strftime("%Y-%m-%d %H:%M", time.localtime(d.created_at)),
             d.note, "yes" if d.current else ""] for d in deployments.history(ws)]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def deploy_view(server: EndUserServer, ws_name, key=None, start=False):
    if not ws_name:
        return "No workspace open.", "", pd.DataFrame(columns=HISTORY_COLUMNS)
    ws = open_ws(ws_name)
    live = deployments.current(ws)
    if live is None:
        return "**Nothing published yet.** Pick the variant that won your evaluation and publish it.", "", history_table(ws)
    # Serve the live version as soon as the model is there (e.g. after an app restart).
    start = start or server.started or server.ctx.engine_loaded
    base = server.ensure() if start else server.url
    page = f"{base}/chat/{ws.name}"
    status = (f"**Live: version {live.version}** - {VARIANT_LABELS.get(live.variant, live.variant)}"
              + (f" with **{live.adapter}**" if live.adapter else "")
              + f"\n\nChat page for your users: <a href='{page}' target='_blank' id='deploy-url'>{page}</a>"
              + ("" if server.started else " (starts as soon as the model has loaded)"))
    return status, _examples(base, ws.name, live.model, key), history_table(ws)


def suggested_variant(ws_name):
    """Preselect what the newest evaluation recommended (evaluation.service.suggested_variant)."""
    try:
        return suggest(open_ws(ws_name))
    except Exception:  # noqa: BLE001 - only a preselection: a broken run store must not block publishing
        log.debug("no deploy suggestion", exc_info=True)
        return "rag"


def publish(ctx, server: EndUserServer, ws_name, variant, adapter, note):
    ws = open_ws(ws_name)
    if variant.endswith("rag"):
        ctx.retriever(ws)  # refuse to publish a RAG assistant without an index
    if variant.startswith("ft") and not adapter_names(ws):
        raise BadInputError("There is no fine-tuned model yet: run a fine-tune on the Build tab first.")
    dep = deployments.publish(ws, variant, adapter or None, note=note or "")
    gr.Info(f"Version {dep.version} is live.")
    return deploy_view(server, ws_name, start=True)


def rollback(server: EndUserServer, ws_name):
    dep = deployments.rollback(open_ws(ws_name))
    gr.Info(f"Version {dep.version} is live again.")
    return deploy_view(server, ws_name)


def create_key(server: EndUserServer, ws_name, name, rate):
    key = keys.create_key(open_ws(ws_name), (name or "").strip() or "key", int(rate or 60))
    return key, deploy_view(server, ws_name, key=key)[1]


def on_open(server: EndUserServer, ws_name):
    ws = open_ws(ws_name) if ws_name else None
    choices = [("newest", "")] + ([(a, a) for a in adapter_names(ws)] if ws else [])
    return (*deploy_view(server, ws_name), gr.update(choices=choices, value=""),
            suggested_variant(ws_name) if ws_name else "rag")


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks, server: EndUserServer) -> None:
    gr.Markdown("Publish the assistant your users will chat with. Publishing again replaces it at once; "
                "every version is kept so you can roll back.")
    with gr.Row():
        variant = gr.Dropdown([(VARIANT_LABELS[v], v) for v in VARIANTS], value="rag", label="Answer with",
                              elem_id="deploy-variant")
        adapter = gr.Dropdown([("newest", "")], value="", label="Fine-tuned model (for ft variants)",
                              elem_id="deploy-adapter")
        note = gr.Textbox(label="Note (optional)", placeholder="e.g. won the May evaluation", elem_id="deploy-note")
    with gr.Row():
        publish_btn = gr.Button("Publish", variant="primary", elem_id="deploy-publish")
        rollback_btn = gr.Button("Roll back to the previous version", elem_id="deploy-rollback")
    status = gr.Markdown(elem_id="deploy-status")
    with gr.Row():
        key_name = gr.Textbox(label="API key name", value="my-app", elem_id="deploy-key-name")
        key_rate = gr.Number(value=60, precision=0, label="Requests per minute", elem_id="deploy-key-rate")
        key_btn = gr.Button("Create API key", elem_id="deploy-key-create")
    key_out = gr.Textbox(label="New API key (shown once: copy it now)", interactive=False, elem_id="deploy-key")
    example = gr.Code(language="python", label="Use it from your code", elem_id="deploy-example")
    history = gr.Dataframe(headers=HISTORY_COLUMNS, label="Versions", interactive=False, elem_id="deploy-history")

    view = [status, example, history]
    # partial() has no __name__ for gradio to name the API route after: the routes keep their names
    publish_btn.click(guarded(partial(publish, ctx, server)), [ws_select, variant, adapter, note], view,
                      api_name="publish")
    rollback_btn.click(guarded(partial(rollback, server)), [ws_select], view, api_name="rollback")
    key_btn.click(guarded(partial(create_key, server)), [ws_select, key_name, key_rate], [key_out, example],
                  api_name="create_key")
    for trigger in (ws_select.change, demo.load):
        trigger(guarded(partial(on_open, server)), [ws_select], [*view, adapter, variant], show_progress="hidden")
