"""The Gradio Blocks page of the relevance explorer: one column per model, side by side.

Top: the image upload (any size and aspect; each model preprocesses it as it was trained), the question,
an optional teacher-forced text (explained instead of the generated answers, as the DeCo paper's tool
does), the method and where the image side ends (patch features, or input patches through the ViT).
Per model: its answer, R_t2i over the image, R_t2q (bars, per-token heatmap, query grid), a query
selector -> that query's R_q2i, and an answer-word selector -> that word's R_t2i. The selectors redraw
from the session state (no new forward), on user input only: the answer's own update draws the first
ones itself, so no redraw races the state it reads. Everything computed comes from `deco.app.session`; this
file only lays out components and routes events. Element ids (`m{i}-answer`, `m{i}-t2i`, ...) are what
the browser test finds.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence

from deco.app import session
from deco.app.session import AppInputError, Slot, View
from deco.explain.methods import METHODS

log = logging.getLogger(__name__)
FIELDS = ("answer", "info", "t2i", "word", "word_img", "t2q", "query", "q2i", "state")
NOT_UPLOADED = "Upload the image through this page (only files the page received as uploads are read)."
VISION_CHOICES = [("patch features (R_ii = I)", "none"), ("input patches (GAE through the ViT)", "gae")]


def _column_outputs(gr, view: View | None, info: str) -> list:
    """Values for one model column, in FIELDS order (a View, or cleared with a message)."""
    if view is None:
        return ["", info, None, gr.update(choices=[], value=None), None, None,
                gr.update(choices=[], value=None), None, None]
    queries, words = session.query_choices(view), session.token_choices(view)
    return [view.answer, info, session.t2i_picture(view), gr.update(choices=words, value=words[0][1]),
            session.t2i_picture(view, words[0][1]), session.t2q_picture(view),
            gr.update(choices=queries, value=queries[0][1]), session.q2i_picture(view, queries[0][1]), view]


def uploaded_path(image_data, upload_dir: str, max_bytes: int) -> str | None:
    """The server path of an image Gradio received as an upload into `upload_dir`, else AppInputError.

    The click handler takes Gradio's file record unprocessed (our messages for broken images), so this is the
    upload-folder check Gradio's preprocessing would do: any other path, existing or not, a link out of the
    folder, a device or FIFO (`/dev/stdin` would block the worker) gets the same message, so a caller learns
    nothing about the server's files. None: nothing uploaded.
    """
    if image_data is None:
        return None
    path = image_data.get("path") if isinstance(image_data, dict) else image_data
    if not isinstance(path, str) or not path:
        raise AppInputError(NOT_UPLOADED)
    real, root = os.path.realpath(path), os.path.realpath(upload_dir)
    try:
        inside = os.path.commonpath([real, root]) == root and real != root
        info = os.stat(real) if inside else None
    except (OSError, ValueError):
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise AppInputError(NOT_UPLOADED)
    if info.st_size > max_bytes:
        raise AppInputError(f"The image file is {info.st_size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    return real


def ask(slots: Sequence[Slot], image, question: str, forced: str, method: str, vision_relevance: str,
        max_new_tokens: int, max_text_tokens: int, time_limit: float | None = None,
        ) -> tuple[str, list[tuple[View | None, str]]]:
    """(status message, per slot (View or None, info line)); bad input -> a message, never an exception.

    time_limit (s): models not started by then are skipped with a message, and no model's lock is waited for
    past it, so one request never holds the next for longer.
    """
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    try:
        picture = session.read_image(image)
        tok = slots[0].loaded.tokenizer
        question = session.check_text(question, tok, max_text_tokens, "question")
        forced = session.check_text(forced, tok, max_text_tokens, "teacher-forced text")
    except AppInputError as err:
        return f"**{err}**", [(None, "") for _ in slots]
    results = []
    for slot in slots:
        if deadline is not None and time.monotonic() > deadline:
            results.append((None, f"**Skipped: this request passed its time limit ({time_limit:g} s).**"))
            continue
        try:
            text = forced or session.answer(slot, picture, question, max_new_tokens, deadline)
            if not text:
                results.append((None, "The model answered nothing; type a teacher-forced text to explain one."))
                continue
            view = session.explain_text(slot, picture, question, text, method, vision_relevance, deadline)
            source = "teacher-forced text" if forced else "generated answer"
            side = "input patches (through the ViT)" if vision_relevance == "gae" else "patch features"
            results.append((view, f"{method}, {source}: log p = {view.rel.log_prob:.2f} over "
                                  f"{len(view.rel.target_tokens)} tokens; {view.rel.num_queries} queries, "
                                  f"{view.rel.grid}x{view.rel.grid} {side}"))
        except AppInputError as err:
            results.append((None, f"**{err}**"))
        except Exception as err:  # one model failing must not take the page (or the other models) down
            log.exception("model %s failed", slot.name)
            results.append((None, f"**{slot.name} failed: {type(err).__name__}: {err}**"))
    width = f"{picture.width}x{picture.height}"
    return f"Image {width}; {len(slots)} model(s) explained with {method}.", results


def build_ui(slots: Sequence[Slot], *, method: str = "rgae", vision_relevance: str = "none",
             question: str = "Describe the image briefly.", max_new_tokens: int = 24, max_text_tokens: int = 64,
             max_upload_bytes: int = 16 * 2**20, time_limit: float | None = 120.0, workers: int = 2):
    """The gr.Blocks app (not launched)."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    with gr.Blocks(title="deco relevance explorer", analytics_enabled=False) as demo:
        gr.Markdown("## deco relevance explorer\nWhere each projector's answer comes from: "
                    "R_t2i = R_t2q × R_q2i (DeCo's R-GAE and baselines).")
        for slot in slots:
            if slot.note:
                gr.Markdown(f"**Warning: {slot.name}: {slot.note}**", elem_id="model-warning")
        with gr.Row():
            image = gr.Image(type="filepath", label="image", sources=["upload", "clipboard"], height=320,
                             elem_id="image-input")
            with gr.Column():
                question_box = gr.Textbox(value=question, label="question", elem_id="question")
                forced = gr.Textbox(label="teacher-forced text (optional: explained instead of each answer)",
                                    elem_id="forced")
                method_box = gr.Dropdown(list(METHODS), value=method, label="method", elem_id="method")
                vision = gr.Radio(VISION_CHOICES, value=vision_relevance, label="image side", elem_id="vision")
                button = gr.Button("Ask and explain", variant="primary", elem_id="ask")
        status = gr.Markdown(elem_id="status")
        columns = []
        with gr.Row():
            for i, slot in enumerate(slots):
                with gr.Column():
                    gr.Markdown(f"### {slot.name}" + (f"\n**{slot.note}**" if slot.note else ""))
                    col = {
                        "answer": gr.Textbox(label="answer", interactive=False, elem_id=f"m{i}-answer"),
                        "info": gr.Markdown(elem_id=f"m{i}-info"),
                        "t2i": gr.Image(label="R_t2i (whole text)", type="pil", format="png", interactive=False,
                                        elem_id=f"m{i}-t2i"),
                        "word": gr.Radio([], label="answer word: its R_t2i", elem_id=f"m{i}-word"),
                        "word_img": gr.Image(label="R_t2i of the selected word", type="pil", format="png",
                                             interactive=False, elem_id=f"m{i}-word-img"),
                        "t2q": gr.Image(label="R_t2q (bars, per token, query grid)", type="pil", format="png",
                                        interactive=False, elem_id=f"m{i}-t2q"),
                        "query": gr.Dropdown([], label="query token (most relevant first): its R_q2i",
                                             elem_id=f"m{i}-query"),
                        "q2i": gr.Image(label="R_q2i of the selected query", type="pil", format="png",
                                        interactive=False, elem_id=f"m{i}-q2i"),
                        "state": gr.State(None),
                    }
                    columns.append(col)

        def on_ask(image_data, question_text, forced_text, method_name, vision_name):
            # preprocess=False: the upload arrives as Gradio's file record, read by us, so a broken file
            # gets our message rather than Gradio's preprocessing error; uploaded_path does Gradio's
            # upload-folder check that preprocessing would have done
            try:
                image_path = uploaded_path(image_data, get_upload_folder(), max_upload_bytes)
                message, results = ask(slots, image_path, question_text, forced_text, method_name, vision_name,
                                       max_new_tokens, max_text_tokens, time_limit)
            except AppInputError as err:  # not an upload of this page
                message, results = f"**{err}**", [(None, "") for _ in slots]
            outputs = [message]
            for view, info in results:
                outputs += _column_outputs(gr, view, info)
            return outputs

        outputs = [status] + [col[f] for col in columns for f in FIELDS]
        button.click(on_ask, [image, question_box, forced, method_box, vision], outputs, concurrency_limit=workers,
                     preprocess=False)
        for col in columns:
            col["word"].input(lambda view, k: None if view is None or k is None else session.t2i_picture(view, int(k)),
                               [col["state"], col["word"]], col["word_img"])
            col["query"].input(lambda view, j: None if view is None or j is None else session.q2i_picture(view, int(j)),
                                [col["state"], col["query"]], col["q2i"])
    return demo
