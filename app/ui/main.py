"""The builder app: a header with the open workspace, then one tab per step.

    python -m app.ui.main --model tiny-llama --port 7860     (or: ragtune app)
"""

from __future__ import annotations

import argparse
import logging
import os

import gradio as gr

from ragtune.ingest_gate import IngestLimits
from ragtune.models import DEFAULT_LLM
from serving.deploy.server import builder_app_middleware, gradio_auth

from . import build as build_tab
from . import chat, deploy, documents, evaluate, monitoring, workspaces
from .common import AppContext, guarded, workspace_choices

CSS = """
.rt-header {align-items: center;}
.rt-header h1 {margin: 0; font-size: 1.6em;}
.rt-muted {color: var(--body-text-color-subdued);}
.rt-sources details {border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 4px 8px; margin: 6px 0;}
.rt-sources summary {cursor: pointer; font-weight: 600; color: var(--link-text-color);}
.rt-passage {white-space: pre-wrap; font-size: 0.9em; margin-top: 4px;}
.rt-answer {white-space: pre-wrap;}
.rt-bar {background: var(--neutral-200); border-radius: 4px; height: 10px; margin: 6px 0;}
.rt-bar > div {background: var(--color-accent); height: 10px; border-radius: 4px;}
.rt-error {color: var(--error-text-color, #b91c1c); margin-top: 4px;}
footer {display: none !important;}
"""

TABS = [
    ("Workspaces", "workspaces", workspaces),
    ("Documents", "documents", documents),
    ("Build", "build", build_tab),
    ("Chat", "chat", chat),
    ("Evaluate", "evaluate", evaluate),
    ("Deploy", "deploy", deploy),
    ("Monitoring", "monitoring", monitoring),
]


def build_app(ctx: AppContext, host: str = "127.0.0.1", deploy_port: int | None = None) -> gr.Blocks:
    server = deploy.EndUserServer(ctx, host, deploy_port)
    with gr.Blocks(title="ragtune") as demo:
        with gr.Row(elem_classes="rt-header"):
            gr.Markdown("# ragtune\nTeach a model your documents, compare, ship.", scale=3)
            choices = workspace_choices()
            initial = ctx.default_workspace if ctx.default_workspace in choices else (choices[0] if choices else None)
            # allow_custom_value: an event still carrying a just-renamed name must not fail validation
            ws_select = gr.Dropdown(choices, value=initial, label="Open workspace", elem_id="workspace-select", scale=2,
                                    allow_custom_value=True)
            model_md = gr.Markdown(ctx.engine_status(), elem_id="model-status")
        # Reopen the workspace this browser had open, so a reload lands where the user was. The browser saves
        # it itself, in the first handler of a workspace change: the page starts a change's handlers one after
        # the other (each a request), so a save registered after the tabs' ones, or one that went to the server,
        # came seconds late and a reload in between reopened the previous workspace.
        remembered = gr.BrowserState(None, storage_key="ragtune-open-workspace")
        ws_select.change(None, [ws_select], [remembered], js="(name) => name", show_progress="hidden",
                         api_visibility="private")
        with gr.Tabs(elem_id="tabs") as tabs:
            for label, key, module in TABS:
                with gr.Tab(label, id=key, elem_id=f"tab-{key}") as tab:
                    if module is deploy:
                        module.build(ctx, ws_select, demo, server)
                    elif module is build_tab:
                        module.build(ctx, ws_select, demo, tab)
                    elif module is monitoring:
                        module.build(ctx, ws_select, demo, tab, tabs)
                    else:
                        module.build(ctx, ws_select, demo)
        model_timer = gr.Timer(2.0)

        def model_status():
            done = ctx._engine_ready.is_set()
            return ctx.engine_status(), gr.Timer(active=not done)

        model_timer.tick(model_status, None, [model_md, model_timer], show_progress="hidden", api_visibility="private")


        def refresh_workspaces(current, last):
            names = workspace_choices()
            value = last if last in names else current if current in names else (ctx.default_workspace if ctx.default_workspace in names
                                                      else (names[0] if names else None))
            return gr.update(choices=names, value=value)

        demo.load(guarded(refresh_workspaces), [ws_select, remembered], [ws_select], show_progress="hidden", api_visibility="private")
    return demo


def launch(model: str = DEFAULT_LLM, host: str = "127.0.0.1", port: int = 7860, workspace: str | None = None,
           engine_kind: str = "embedded", engine_url: str | None = None, deploy_port: int | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = AppContext(model=model, engine_kind=engine_kind, engine_url=engine_url, default_workspace=workspace)
    demo = build_app(ctx, host=host, deploy_port=deploy_port or port + 1)  # port+1 when free, else any
    demo.queue(default_concurrency_limit=2)
    auth = gradio_auth()  # a login page when RAGTUNE_BUILDER_PASSWORD is set; open otherwise
    print(f"ragtune app: http://{host}:{port}  (model {model} loading in the background"
          + ("; log in with the builder password" if auth else "") + ")", flush=True)
    demo.launch(server_name=host, server_port=port, share=False, show_error=True, inbrowser=False,
                css=CSS, theme=gr.themes.Soft(), footer_links=[], quiet=True, auth=auth,
                # no dropped file over the documents' size limit: Gradio stops reading it at the limit,
                # deletes the part it wrote and answers 413 (the browser and gradio_client check first)
                max_file_size=IngestLimits().max_file_bytes,
                # its own host names only (DNS rebinding), no state change from another site
                app_kwargs={"middleware": builder_app_middleware(host)},
                auth_message="Enter the builder password (RAGTUNE_BUILDER_PASSWORD); any user name." if auth else None,
                prevent_thread_lock=True)
    # The model loads in the background once the server is up, so the page is up before the model is.
    # Loading Gemma while the server started kept Gradio's server thread from starting within its 5 s,
    # and `ragtune app --sample` stopped with "Cannot find empty port" on a free port (2-core CPU).
    ctx.start_loading()
    demo.block_thread()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="ragtune builder app")
    p.add_argument("--model", default=DEFAULT_LLM)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workspace", default=None)
    args = p.parse_args(argv)
    launch(model=args.model, host=args.host, port=args.port, workspace=args.workspace)


if __name__ == "__main__":
    main()
