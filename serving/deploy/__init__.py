"""The deployed assistant: published variants, API keys, rate limits, the end-user server, metrics.

Modules:
- ``deployments``: publish a variant (and adapter) of a workspace as a numbered version; roll back.
- ``keys``: API keys, stored as salted SHA-256 hashes; the plaintext is shown once.
- ``ratelimit``: token buckets per key / per page session.
- ``metrics``: Prometheus metrics of the running server and ``summary(ws)`` for the builder UI.
- ``upload_safety``: checks on uploaded files before anything is stored.
- ``server``: ``build_deploy_app``, the FastAPI app for end users (chat page + OpenAI API) and builders.
"""
