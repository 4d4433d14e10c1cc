"""Compare base, RAG, fine-tuned and both on the same questions: metrics with intervals, a blind
arena, a recommendation and a report.

Modules: ``qa_sets`` (test sets), ``metrics`` (per-answer scores), ``stats`` (bootstrap, paired
tests, Bradley-Terry), ``runner`` (resumable cached runs and summaries), ``judge`` (optional LLM
judge), ``arena`` (blind votes), ``recommend`` (the verdict), ``report`` (Markdown/HTML/CSV),
``service`` (``EvalConfig`` and the evaluation use case: in process or as a job), ``job`` (the job
process), ``assistants`` (the one assistant factory: engine + the workspace's retriever),
``store`` (the tables).
"""
