"""lmms-eval adapter: any checkpoint deco loads, answered with deco's own prompt, preprocessing and generation.

    pip install -e .[lmms]
    python -m lmms_eval --model deco --model_args ckpt=outputs/train/<run>/checkpoints/last.ckpt \\
        --tasks mme --batch_size 8

`DecoLMM` is lmms-eval's "simple" model kind: each request's context goes into the checkpoint's
conversation template with `<image>` first (as `deco.evaluate` and LLaVA-1.5 do), its image is
preprocessed with the checkpoint's aspect (or `image_aspect=`), and answers come from
`deco.eval.runner.generate_answers` (greedy, batched, left padded). `until` stop strings cut the
answer. `loglikelihood` scores a continuation after the prompt. Model args: ckpt (required), device
(auto), dtype, image_aspect, template, attn_implementation (sdpa), max_new_tokens (128), base,
trust_remote_code (false: a checkpoint's stored settings never turn it on), and a training-free reduction
(docs/reduction.md): reduction=fastv|visionzip|prumerge_plus|divprune|pool, reduction_keep=64 and the method's
knobs as reduction_<knob> (reduction_layer=2, reduction_contextual=10).
"""

from __future__ import annotations

import logging

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from deco.data.conversation import tokenize_prompt
from deco.data.image import process_image
from deco.eval.benchmarks import EvalSample
from deco.eval.runner import PromptDataset, generate_answers

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _stop(text: str, until: list[str]) -> str:
    """The answer up to the first stop string (lmms-eval's `until`)."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text


class DecoLMM(lmms):
    """A deco checkpoint as an lmms-eval model."""

    is_simple = True

    def __init__(self, ckpt: str, batch_size: int | str = 1, device: str | None = "auto", dtype: str | None = None,
                 image_aspect: str | None = None, template: str | None = None,
                 attn_implementation: str | None = "sdpa", max_new_tokens: int = 128, base: str | None = None,
                 trust_remote_code: bool | str = False, **kwargs) -> None:
        super().__init__()
        from deco.models.attention import set_attention
        from deco.models.loading import load_model
        from deco.models.reduction import reducer_from_config

        reduction = {k[len("reduction_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("reduction_")}
        reducer = reducer_from_config({"name": kwargs.pop("reduction"), **reduction}) if "reduction" in kwargs else None
        if kwargs:
            log.warning("deco lmms-eval model ignores model_args %s", sorted(kwargs))
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype} is unknown; allowed: {', '.join(DTYPES)}")
        trust = str(trust_remote_code).strip().lower() in ("true", "1", "yes")  # model_args arrive as strings
        loaded = load_model(str(ckpt), base=base, dtype=DTYPES.get(dtype), trust_remote_code=trust)
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self.model = loaded.model.to(self._device).eval()
        if attn_implementation:
            set_attention(self.model, attn_implementation)
        self.model.set_reduction(reducer)
        self.tokenizer, self.image_processor = loaded.tokenizer, loaded.image_processor
        self.template = template or loaded.config.get("stage", {}).get("template", "vicuna_v1")
        self.image_aspect = image_aspect or loaded.config.get("image_aspect", "pad")
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    def _visual(self, request: Instance):
        _, _, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        visuals = [v for v in (visuals or []) if v is not None]
        if len(visuals) > 1:
            raise ValueError(f"task {task} doc {doc_id}: {len(visuals)} images, deco models take one per question")
        return visuals[0] if visuals else None

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for k, request in enumerate(requests):  # one generate call per distinct generation budget / stops
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(k)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            samples = [EvalSample(k, requests[k].args[0], None, self._visual(requests[k])) for k in indices]
            dataset = PromptDataset(samples, [s.question for s in samples], self.tokenizer, self.image_processor,
                                    self.template, self.image_aspect)
            answers = generate_answers(self.model, self.tokenizer, dataset, batch_size=self.batch_size,
                                       max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
                                       device=self._device, progress=False, desc="deco")
            for k, answer in zip(indices, answers):
                out[k] = _stop(answer, until)
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """log p(continuation | prompt, image) summed over the continuation's tokens, and whether greedy
        decoding would produce exactly those tokens."""
        results = []
        param = next(self.model.parameters())
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            image = self._visual(request)
            prompt = tokenize_prompt(context, self.tokenizer, self.template, with_image=image is not None)
            cont = torch.tensor(self.tokenizer(continuation, add_special_tokens=False)["input_ids"], dtype=torch.long)
            if cont.numel() == 0:
                results.append((0.0, True))
                continue
            ids = torch.cat([prompt, cont])[None].to(self._device)  # 1 t
            pixels = None
            if image is not None:
                pixels = process_image(image.convert("RGB"), self.image_processor, self.image_aspect)[None]
                pixels = pixels.to(self._device, param.dtype)
            logits = self.model(ids, torch.ones_like(ids), pixels).logits[0].float()  # T v (image tokens merged in)
            # the continuation ends the merged sequence: its n tokens are predicted by the n positions before
            n = cont.numel()
            pred = logits[-n - 1:-1]
            logprob = torch.log_softmax(pred, dim=-1).gather(1, cont.to(pred.device)[:, None]).sum()
            results.append((float(logprob), bool((pred.argmax(-1).cpu() == cont).all())))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("deco's lmms-eval model answers one round per request (generate_until)")
