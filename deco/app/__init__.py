"""The browser relevance explorer: `python -m deco.app ckpt=[a,b,c]` (Gradio, thin over deco.explain).

`session` (reading images, answering, explaining and drawing for one model; no Gradio), `ui` (the
Gradio Blocks page), `__main__` (the Hydra entry point: load the checkpoints, build the page, launch).
"""
