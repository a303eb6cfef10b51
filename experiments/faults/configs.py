"""The 31 bad `deco.train` configurations of the fault audit: (overrides, the key the error must name).

Handled means: the run stops before training with a message that names the key (SystemExit or a clear
exception), and no checkpoint is written.
"""

from __future__ import annotations

FAST = ["data.train.num_samples=12", "data.val.num_samples=8", "data.batch_size=4", "data.eval_batch_size=8",
        "data.num_workers=0", "data.max_length=128", "trainer.max_steps=2", "logger=none", "stage=pretrain",
        "query_num=16"]

BAD_CONFIGS: list[tuple[list[str], str]] = [
    (["stage.lr=-1e-3"], "stage.lr"),
    (["stage.lr=0"], "stage.lr"),
    (["stage.projector_lr=-1e-4"], "stage.projector_lr"),
    (["stage.weight_decay=-0.1"], "stage.weight_decay"),
    (["stage.warmup_ratio=2"], "stage.warmup_ratio"),
    (["+stage.lrr=1e-3"], "stage.lrr"),
    (["+stage.lora.rank=8"], "stage.lora.rank"),
    (["stage=finetune_lora", "stage.lora.r=0"], "stage.lora.r"),
    (["stage=finetune_lora", "stage.lora.dropout=1.5"], "stage.lora.dropout"),
    (["stage.template=alpaca"], "stage.template"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=-2"], "data.batch_size"),
    (["data.eval_batch_size=0"], "data.eval_batch_size"),
    (["data.max_length=0"], "data.max_length"),
    (["data.num_workers=-1"], "data.num_workers"),
    (["data.global_batch_size=6"], "data.global_batch_size"),
    (["data.image_aspect=stretch"], "image_aspect"),
    (["+data.batchsize=8"], "data.batchsize"),
    (["projector=nonexistent"], "projector"),
    (["query_num=150"], "query_num"),
    (["query_num=0"], "query_num"),
    (["query_num=1024"], "query_num"),
    (["pooling=median"], "pooling"),
    (["fault.on_nan=ignore"], "fault.on_nan"),
    (["+fault.on_nann=skip"], "fault.on_nann"),
    (["resume=sometimes"], "resume"),
    (["ckpt_path=/no/such.ckpt"], "ckpt_path"),
    (["init_from=/no/such.ckpt"], "init_from"),
    (["model.llm.name_or_path=/no/such/llm"], "model.llm.name_or_path"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
]
