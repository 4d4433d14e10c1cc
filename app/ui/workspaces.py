"""Workspaces tab: create, open, rename and delete the assistant projects."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ragtune.errors import BadInputError
from ragtune.workspace import Workspace
from retrieval.documents import list_documents

from .common import guarded, index_manifest_path, open_ws, workspace_choices


def _overview(name: str | None) -> pd.DataFrame:
    rows = []
    for n in workspace_choices():
        ws = Workspace.open(n)
        docs = list_documents(ws)
        index_built = index_manifest_path(ws).exists()
        rows.append({"Workspace": n + (" (open)" if n == name else ""), "Documents": len(docs),
                     "Index": "built" if index_built else "not built", "Folder": str(ws.root)})
    return pd.DataFrame(rows, columns=["Workspace", "Documents", "Index", "Folder"])


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks) -> None:
    gr.Markdown("A **workspace** holds one assistant project: its documents, index, fine-tuned "
                "models, evaluations and deployments. Pick the open one at the top of every screen.")
    with gr.Row():
        with gr.Column():
            new_name = gr.Textbox(label="New workspace name", placeholder="e.g. hr-policies", elem_id="ws-new-name")
            create_btn = gr.Button("Create and open", variant="primary", elem_id="ws-create")
        with gr.Column():
            rename_to = gr.Textbox(label="Rename the open workspace to", elem_id="ws-rename-name")
            rename_btn = gr.Button("Rename", elem_id="ws-rename")
        with gr.Column():
            confirm = gr.Textbox(label="Type the open workspace's name to delete it", elem_id="ws-delete-confirm")
            delete_btn = gr.Button("Delete workspace", variant="stop", elem_id="ws-delete")
    table = gr.Dataframe(label="All workspaces", interactive=False, elem_id="ws-table")

    @guarded(soft_outputs=2)
    def create(name):
        name = (name or "").strip()
        ws = Workspace.create(name)
        gr.Info(f"Workspace '{ws.name}' created.")
        return gr.update(choices=workspace_choices(), value=ws.name), ""

    @guarded(soft_outputs=2)
    def rename(current, new):
        ws = open_ws(current).rename((new or "").strip())
        ctx.forget_retriever(ws)
        gr.Info(f"Renamed to '{ws.name}'.")
        return gr.update(choices=workspace_choices(), value=ws.name), ""

    @guarded(soft_outputs=2)
    def delete(current, typed):
        ws = open_ws(current)
        if (typed or "").strip() != ws.name:
            raise BadInputError(f"Type '{ws.name}' in the box to confirm the deletion.")
        ctx.forget_retriever(ws)
        ws.delete()
        gr.Info(f"Workspace '{current}' deleted.")
        remaining = workspace_choices()
        return gr.update(choices=remaining, value=remaining[0] if remaining else None), ""

    create_btn.click(create, [new_name], [ws_select, new_name])
    new_name.submit(create, [new_name], [ws_select, new_name])
    rename_btn.click(rename, [ws_select, rename_to], [ws_select, rename_to])
    delete_btn.click(delete, [ws_select, confirm], [ws_select, confirm])
    ws_select.change(guarded(_overview), [ws_select], [table], show_progress="hidden")
    demo.load(guarded(_overview), [ws_select], [table], show_progress="hidden")
