"""The Gradio builder app: one module per tab (workspaces, documents, build, chat, evaluate, deploy)."""
