"""End users on the chat page (policy ``PAGE_SESSION``): the page itself (which issues the session cookie) and
its two routes, which take only that cookie and the page's own header."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from serving.openai_protocol import ChatCompletionRequest, FeedbackRequest, HealthReport
from serving.openai_server import body_of

from . import deployments, page
from .answers import chat, give_feedback
from .auth import SESSION_COOKIE, Caller, deploy_state, page_session, rate_check
from .state import DeployState

router = APIRouter()


@router.get("/health")
async def health():
    return HealthReport(status="ok").dump()


@router.get("/static/chat.js")
async def chat_js():
    return Response(page.JS, media_type="application/javascript")


@router.get("/static/chat.css")
async def chat_css():
    return Response(page.CSS, media_type="text/css")


@router.get("/chat/{workspace}", response_class=HTMLResponse)
async def chat_page(workspace: str, state: DeployState = Depends(deploy_state)):
    ws = state.spaces.get(workspace)
    if deployments.current(ws) is None:
        return HTMLResponse("<!doctype html><title>Not available</title><p>This assistant is not published.</p>",
                            status_code=404)
    settings = ws.get_setting("deploy", {}) or {}
    html = page.render_page(ws.name, settings.get("title") or f"{ws.name} assistant",
                            settings.get("welcome") or "Hello! Ask me a question about our documents.")
    response = HTMLResponse(html, headers={"Content-Security-Policy": page.CSP, "X-Frame-Options": "DENY"})
    token = state.signer.sign({"ws": ws.name, "sid": secrets.token_hex(12), "iat": int(time.time())})
    response.set_cookie(SESSION_COOKIE, token, max_age=state.signer.ttl_s, path=f"/chat/{ws.name}", httponly=True,
                        samesite="strict")
    return response


@router.post("/chat/{workspace}/api/chat")
async def page_chat(request: Request, caller: Caller = Depends(page_session),
                    state: DeployState = Depends(deploy_state),
                    body: ChatCompletionRequest = Depends(body_of(ChatCompletionRequest))):
    ws = caller.ws
    rate_check(state, f"page:{ws.name}", state.limits.page_workspace_rate_per_min, ws.name, "assistant's page")
    rate_check(state, f"session:{caller.session}", state.limits.page_rate_per_min, ws.name, "chat session")
    return await chat(state, request, ws, body, client=caller.client, channel="page")


@router.post("/chat/{workspace}/api/feedback")
async def page_feedback(caller: Caller = Depends(page_session), state: DeployState = Depends(deploy_state),
                        body: FeedbackRequest = Depends(body_of(FeedbackRequest))):
    rate_check(state, f"feedback:{caller.session}", state.limits.feedback_rate_per_min, caller.ws.name,
               "chat session")
    return await give_feedback(state, caller.ws, body, client=caller.client)
