"""Fine-tuning: documents -> Q&A training set -> LoRA / QLoRA / full fine-tune, run as a background job.

Modules: ``chat_data`` (training files), ``synth`` with ``teachers``, ``chat_teachers`` and ``questions``
(synthetic sets), ``dataset_store`` (versions), ``config`` (TrainConfig, defaults_for), ``run`` (the recipe
in phases: data, plan, build, fit, finalize) with ``plan``, ``precision``, ``trainer`` and ``callbacks``,
``jobs`` (the ``TRAIN`` operation of the job runner), ``merge`` (export), ``feedback_data`` (next round).
Imports only ``ragtune`` (the core), never retrieval or serving.
"""
