"""Monitoring tab: how the published assistant is doing, per variant it answered with.

Reads the request log the deploy server keeps in the workspace (serving.deploy.metrics.summary),
so it works whether the server runs inside this app or as `ragtune deploy` elsewhere. A timer
refreshes it while the tab is open and stops when another tab is picked.
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from serving.deploy.metrics import plot_summary, summary

from .common import guarded, open_ws

COLUMNS = ["Answered with", "Versions", "Requests", "Errors", "Latency p50 (s)", "Latency p95 (s)",
           "Prompt tokens", "Completion tokens", "Feedback rate", "Thumbs up"]
# label -> (seconds back, bucket size of the plots)
WINDOWS = {"Last hour": (3600, 60), "Last 24 hours": (86400, 900), "Everything": (None, 3600)}
REFRESH_S = 10.0


def _num(x, digits=2):
    return "-" if x is None else round(float(x), digits)


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def get_summary(workspace: str, window: str = "Everything") -> dict:
    """Per deployed variant: requests, errors, latency p50/p95, tokens, feedback; plus a time series."""
    back, bucket = WINDOWS.get(window, WINDOWS["Everything"])
    return summary(open_ws(workspace), since=time.time() - back if back else None, bucket_s=bucket)


def table(data: dict) -> pd.DataFrame:
    rows = [[v["model"], ", ".join(f"v{n}" for n in v["deployment_versions"]), v["requests"], v["errors"],
             _num(v["latency_p50_s"]), _num(v["latency_p95_s"]), v["prompt_tokens"], v["completion_tokens"],
             _pct(v["feedback_rate"] if v["answers"] else None), _pct(v["up_rate"])]
            for v in data["variants"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def headline(data: dict, window: str) -> str:
    total = sum(v["requests"] for v in data["variants"])
    if not total:
        return (f"**No requests {window.lower() if window != 'Everything' else 'yet'}.** Publish on the Deploy tab, "
                "then send questions from the chat page or the API; they show up here.")
    errors = sum(v["errors"] for v in data["variants"])
    return (f"**{total} requests**, {errors} failed ({window.lower()}). "
            f"Updated {time.strftime('%H:%M:%S')}; feedback counts cover all time.")


def _zoom_time_axes(fig, data: dict) -> None:
    """Fit the time axes to the traffic (matplotlib spreads a lone point over years) with readable ticks."""
    import matplotlib.dates as mdates
    from datetime import datetime

    from matplotlib.ticker import MaxNLocator

    times = [p["t"] for p in data["series"]]
    if not times:
        return
    lo, hi = min(times) - 2 * data["bucket_s"], max(times) + 2 * data["bucket_s"]
    for i, ax in enumerate(fig.axes[:3]):  # requests, latency, errors; the fourth is the feedback bars
        ax.set_xlim(datetime.fromtimestamp(lo), datetime.fromtimestamp(hi))
        ax.set_ylim(bottom=0)
        if i != 1:  # counts, not seconds
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def monitoring_view(ws_name, window):
    import matplotlib.pyplot as plt
    if not ws_name:
        return "No workspace open.", pd.DataFrame(columns=COLUMNS), None
    data = get_summary(ws_name, window)
    fig = plot_summary(data)
    _zoom_time_axes(fig, data)
    plt.close(fig)  # Gradio renders it below; closing keeps pyplot from holding every refresh
    return headline(data, window), table(data), fig


def build(ctx, ws_select: gr.Dropdown, demo: gr.Blocks, tab: gr.Tab, tabs: gr.Tabs) -> None:
    gr.Markdown("How the published assistant is doing: requests, speed, tokens, errors and feedback for each "
                "variant it answered with. Also at `/metrics` on the assistant server, for Prometheus.")
    with gr.Row():
        window = gr.Dropdown(list(WINDOWS), value="Last 24 hours", label="Period", elem_id="mon-window")
        refresh = gr.Button("Refresh", elem_id="mon-refresh", scale=0)
    status = gr.Markdown(elem_id="mon-status")
    numbers = gr.Dataframe(headers=COLUMNS, label="Per variant", interactive=False, elem_id="mon-table")
    plot = gr.Plot(label="Over time", elem_id="mon-plot")
    timer = gr.Timer(REFRESH_S, active=False)

    view = guarded(monitoring_view)
    outputs = [status, numbers, plot]
    for trigger in (refresh.click, window.change, ws_select.change, tab.select, timer.tick):
        trigger(view, [ws_select, window], outputs, show_progress="hidden", api_visibility="private")

    def follow_tab(evt: gr.SelectData):
        return gr.Timer(active=evt.value == tab.label)

    tabs.select(follow_tab, None, [timer], show_progress="hidden", api_visibility="private")
    gr.api(guarded(get_summary), api_name="monitoring")
