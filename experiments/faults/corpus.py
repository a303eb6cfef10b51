"""The crafted corpus of the fault audit: 50 kinds of bad (or merely unusual) LLaVA-format samples.

Each kind is one record (plus the files it needs) with the outcome deco must give it: `skip:<reason>`
(counted under that reason, never trained on, nothing outside image_root read) or `ok` (an unusual but
valid sample that must load). `build(root)` writes every file and returns [(kind, record, expected)].
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image

from deco.data.shapes import make_sample


def _qa(question: str = "What shape is it?", answer: str = "A circle.") -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def _text(question: str = "What colour is the circle?", answer: str = "Red.") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build(root: Path) -> list[tuple[str, object, str]]:
    """Write root/img/* and return the 50 (kind, record or raw line, expected outcome)."""
    img = root / "img"
    img.mkdir(parents=True, exist_ok=True)
    good = make_sample(3, 0, image_size=64)[0].image
    good.save(img / "good.jpg")
    jpeg = (img / "good.jpg").read_bytes()
    files = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage.jpg": b"this is not an image" * 20,
        "text.png": b"hello, I am a text file\n" * 10,
        "truncated.png": _png(good)[:120],
        "bomb.png": _png(Image.new("1", (12000, 12000))),
        "strip_wide.png": _png(Image.new("L", (60000, 4))),
        "strip_tall.png": _png(Image.new("L", (4, 60000))),
        "thin_100.png": _png(Image.new("RGB", (5000, 50))),
        "one_pixel.png": _png(Image.new("RGB", (1, 1), (9, 9, 9))),
        "rgba.png": _png(good.convert("RGBA")),
        "gray.png": _png(good.convert("L")),
        "palette.png": _png(good.convert("P")),
        "i16.png": _png(Image.new("I;16", (40, 30))),
        "wide_ok.png": _png(good.resize((640, 64))),
        "big_ok.jpg": None,
        "cmyk.jpg": None,
        "anim.gif": None,
        "image.webp": None,
        "name with spaces é.jpg": jpeg,
    }
    for name, data in files.items():
        if data is not None:
            (img / name).write_bytes(data)
    good.resize((2400, 1800)).save(img / "big_ok.jpg")
    good.convert("CMYK").save(img / "cmyk.jpg")
    frames = [good, good.rotate(90)]
    frames[0].save(img / "anim.gif", save_all=True, append_images=frames[1:])
    good.save(img / "image.webp")
    (img / "adir.jpg").mkdir(exist_ok=True)
    os.symlink(img / "good.jpg", img / "link.jpg") if not (img / "link.jpg").exists() else None
    (root.parent / "outside.jpg").write_bytes(jpeg)

    def rec(kind: str, conversations, image: object = "img/good.jpg", **extra) -> dict:
        out = {"id": kind, "conversations": conversations, **extra}
        if image is not None:
            out["image"] = image
        return out

    long_answer = " ".join(["red circle"] * 200)
    return [
        # --- malformed JSON and records (found while reading the file) ---
        ("malformed_json_line", '{"id": "x", "conversations": [', "skip:malformed_json"),
        ("record_is_list", "[1, 2, 3]", "skip:malformed_json"),
        ("record_is_string", '"just text"', "skip:malformed_json"),
        ("record_is_null", "null", "skip:malformed_json"),
        ("no_conversations", json.dumps({"id": "nc", "image": "img/good.jpg"}), "skip:malformed_json"),
        ("conversations_not_list", rec("cnl", "hello"), "skip:malformed_json"),
        ("bom_prefixed_line", "\ufeff" + json.dumps(rec("bom", _qa())), "ok"),  # json reads a UTF-8 BOM
        ("deeply_nested_line", '{"id": "dn", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",  # issue 29
         "skip:malformed_json"),
        ("empty_conversations", rec("ec", []), "skip:empty_conversation"),
        ("blank_turns", rec("bt", [{"from": "human", "value": "<image>\n "}, {"from": "gpt", "value": " "}]),
         "skip:empty_conversation"),
        ("turn_not_object", rec("tno", ["<image>\nhi", "there"]), "skip:bad_conversation"),
        ("turn_without_from", rec("twf", [{"value": "<image>\nhi"}, {"from": "gpt", "value": "yo"}]),
         "skip:bad_conversation"),
        ("value_not_string", rec("vns", [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]),
         "skip:bad_conversation"),
        ("image_in_gpt_turn", rec("igt", [{"from": "human", "value": "<image>\nq"},
                                          {"from": "gpt", "value": "<image> a"}]), "skip:bad_conversation"),
        ("two_placeholders", rec("tp", [{"from": "human", "value": "<image>\n<image>\nq"},
                                        {"from": "gpt", "value": "a"}]), "skip:bad_conversation"),
        ("placeholder_without_image", rec("pwi", _qa(), image=None), "skip:bad_conversation"),
        ("image_without_placeholder", rec("iwp", _text()), "skip:bad_conversation"),
        ("image_not_string", rec("ins", _qa(), image=["img/good.jpg"]), "skip:bad_conversation"),
        # --- found when the sample is loaded ---
        ("roles_not_alternating", rec("rna", [{"from": "human", "value": "<image>\nq"},
                                              {"from": "human", "value": "a"}]), "skip:bad_conversation"),
        ("starts_with_gpt", rec("swg", [{"from": "gpt", "value": "a"}, {"from": "human", "value": "<image>\nq"}]),
         "skip:bad_conversation"),
        ("unknown_role", rec("ur", [{"from": "system", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]),
         "skip:bad_conversation"),
        ("too_long", rec("tl", _qa(answer=long_answer)), "skip:too_long"),
        ("too_long_word", rec("tlw", _qa(answer="x" * 3000)), "skip:too_long"),
        # --- image files ---
        ("missing_image", rec("mi", _qa(), image="img/nope.jpg"), "skip:missing_image"),
        ("image_is_directory", rec("iid", _qa(), image="img/adir.jpg"), "skip:missing_image"),
        ("zero_byte_image", rec("zbi", _qa(), image="img/empty.jpg"), "skip:corrupt_image"),
        ("truncated_jpeg", rec("tj", _qa(), image="img/truncated.jpg"), "skip:corrupt_image"),
        ("garbage_jpeg", rec("gj", _qa(), image="img/garbage.jpg"), "skip:corrupt_image"),
        ("text_named_png", rec("tnp", _qa(), image="img/text.png"), "skip:corrupt_image"),
        ("truncated_png", rec("tpn", _qa(), image="img/truncated.png"), "skip:corrupt_image"),
        ("decompression_bomb", rec("db", _qa(), image="img/bomb.png"), "skip:oversized_image"),
        ("strip_60000x4", rec("s1", _qa(), image="img/strip_wide.png"), "skip:extreme_aspect"),
        ("strip_4x60000", rec("s2", _qa(), image="img/strip_tall.png"), "skip:extreme_aspect"),
        ("strip_5000x50", rec("s3", _qa(), image="img/thin_100.png"), "skip:extreme_aspect"),
        # --- paths that leave image_root ---
        ("parent_path", rec("pp", _qa(), image="../outside.jpg"), "skip:unsafe_path"),
        ("etc_passwd", rec("ep", _qa(), image="../../../../etc/passwd"), "skip:unsafe_path"),
        ("absolute_path", rec("ap", _qa(), image=str(root.parent / "outside.jpg")), "skip:unsafe_path"),
        ("dotdot_inside", rec("ddi", _qa(), image="img/../img/../../outside.jpg"), "skip:unsafe_path"),
        # --- unusual but valid: must load ---
        ("one_pixel_image", rec("opi", _qa(), image="img/one_pixel.png"), "ok"),
        ("rgba_png", rec("rgba", _qa(), image="img/rgba.png"), "ok"),
        ("grayscale_png", rec("gray", _qa(), image="img/gray.png"), "ok"),
        ("palette_png", rec("pal", _qa(), image="img/palette.png"), "ok"),
        ("sixteen_bit_png", rec("i16", _qa(), image="img/i16.png"), "ok"),
        ("cmyk_jpeg", rec("cmyk", _qa(), image="img/cmyk.jpg"), "ok"),
        ("animated_gif", rec("gif", _qa(), image="img/anim.gif"), "ok"),
        ("webp_image", rec("webp", _qa(), image="img/image.webp"), "ok"),
        ("wide_10_to_1", rec("wide", _qa(), image="img/wide_ok.png"), "ok"),
        ("large_2400x1800", rec("big", _qa(), image="img/big_ok.jpg"), "ok"),
        ("unicode_path_and_text", rec("uni", _qa("Qué forma tiene? 🙂", "Un círculo."),
                                      image="img/name with spaces é.jpg"), "ok"),
        ("symlink_inside_root", rec("sym", _qa(), image="img/link.jpg"), "ok"),
        ("text_only_multi_turn", rec("tom", _text() + _text("And the square?", "Blue."), image=None), "ok"),
    ]
