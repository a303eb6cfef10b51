"""Relevance math shared by projectors (their R_q2i) and deco.explain: plain tensor functions, no model imports."""
