"""Relevance of image regions for an MLLM's text: R-GAE (DeCo) and baselines, rendering, export and scores.

Modules: `gae` (GAE rules and attention baselines), `inputs` (teacher-forced explanation inputs),
`llm_relevance` (the forward pass with attention maps in the graph; R_t2q by GAE over the LLM),
`methods` (rgae / rawattn / gradcam / ig -> `Relevance` with R_t2q, R_q2i and R_t2i = R_t2q x R_q2i),
`render` (heatmap pictures), `export` (PNG + tensor files), `score` (energy in box, pointing game,
perturbation test). `python -m deco.explain` (`__main__`) is the Hydra entry point; the other modules
import neither Hydra nor Lightning.
"""
