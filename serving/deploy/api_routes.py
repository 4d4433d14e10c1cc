"""Programs with an API key (policy ``API_KEY``): OpenAI's chat completions and models, and feedback.

``/v1/...`` lets the key decide the workspace; ``/w/<workspace>/v1/...`` names it and refuses a
key of any other workspace.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from serving.openai_protocol import ChatCompletionRequest, FeedbackRequest, ModelCard, ModelList
from serving.openai_server import body_of

from . import deployments
from .answers import chat, give_feedback
from .auth import Caller, api_caller, api_caller_in, deploy_state
from .state import DeployState

router = APIRouter()
chat_body = Depends(body_of(ChatCompletionRequest))
feedback_body = Depends(body_of(FeedbackRequest))


def _models(ws) -> dict:
    d = deployments.current(ws)
    cards = [] if d is None else [ModelCard(id=f"{ws.name}/{d.model}", owned_by=ws.name, ragtune=d.to_dict())]
    return ModelList(data=cards).dump()


@router.post("/v1/chat/completions")
async def completions(request: Request, caller: Caller = Depends(api_caller),
                      state: DeployState = Depends(deploy_state), body: ChatCompletionRequest = chat_body):
    return await chat(state, request, caller.ws, body, client=caller.client, channel="api")


@router.post("/w/{workspace}/v1/chat/completions")
async def completions_in(request: Request, caller: Caller = Depends(api_caller_in),
                         state: DeployState = Depends(deploy_state), body: ChatCompletionRequest = chat_body):
    return await chat(state, request, caller.ws, body, client=caller.client, channel="api")


@router.get("/v1/models")
async def models(caller: Caller = Depends(api_caller)):
    return _models(caller.ws)


@router.get("/w/{workspace}/v1/models")
async def models_in(caller: Caller = Depends(api_caller_in)):
    return _models(caller.ws)


@router.post("/v1/feedback")
async def feedback(caller: Caller = Depends(api_caller), state: DeployState = Depends(deploy_state),
                   body: FeedbackRequest = feedback_body):
    return await give_feedback(state, caller.ws, body, client=caller.client)


@router.post("/w/{workspace}/v1/feedback")
async def feedback_in(caller: Caller = Depends(api_caller_in), state: DeployState = Depends(deploy_state),
                      body: FeedbackRequest = feedback_body):
    return await give_feedback(state, caller.ws, body, client=caller.client)
