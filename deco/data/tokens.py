"""The special tokens' strings and the ignored-label id (no imports: light modules such as the LLaVA record checks,
which run in a forked reader before transformers is imported, need them; `deco.data.tokenizer` re-exports them)."""

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100

UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<unk>", "<s>", "</s>", "<pad>"
# Order fixes the ids: <unk>=0, <s>=1, </s>=2 (as in Llama), <pad>=3, <image>=4.
SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN)
