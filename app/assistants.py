"""The assistant factory lives in ``evaluation.assistants`` (the CLI, the UI, the deploy server
and the evaluation runner all use that one); this name stays for existing imports."""

from evaluation.assistants import FreshRetriever, make_assistant

__all__ = ["FreshRetriever", "make_assistant"]
