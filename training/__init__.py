"""Fine-tuning: documents -> Q&A training set -> LoRA / QLoRA / full fine-tune, run as a background job.

Modules: ``chat_data`` (training files), ``synth`` + ``teachers`` (synthetic sets), ``dataset_store``
(versions), ``config`` (TrainConfig, defaults_for), ``run`` (the recipe, ``python -m training.run``),
``jobs`` (start / resume / cancel), ``merge`` (export), ``feedback_data`` (next round).
Imports only ``ragtune`` (the core), never retrieval or serving.
"""
