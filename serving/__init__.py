"""Serving: one engine interface (embedded transformers or a vLLM server), the four assistant
variants built on it (base, rag, ft, ft+rag), editable prompts, and an OpenAI-compatible API.

- ``serving.engine``: SamplingOptions, Generation, the Engine protocol, BaseEngine, CancelToken.
- ``serving.embedded`` / ``serving.vllm_engine``: the two engines; ``serving.factory.get_engine``.
- ``serving.vllm_cpu_server``: the vLLM server ragtune starts on CPU (LoRA computed per adapter).
- ``serving.variants``: Assistant, Answer, parse_variant.
- ``serving.prompts``: prompt templates with per-workspace overrides.
- ``serving.openai_protocol`` / ``openai_errors`` / ``openai_stream`` / ``openai_server``: the OpenAI wire
  format, the one error factory, the one stream encoder and the one app factory of both servers.
- ``serving.openai_api``: ``ragtune serve``'s app (build_app), variants named by ``model``.
- ``serving.streaming``: server-sent answers that stop when their client goes away.
- ``serving.deploy``: end-user deployments (keys, versions, feedback).
"""
