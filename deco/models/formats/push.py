"""Upload an exported model directory to the Hugging Face Hub (`python -m deco.export ... push_to=<repo id>`).

One commit with every file of the directory, through huggingface_hub's `HfApi` (token: `HF_TOKEN` or
`hf auth login`; endpoint: `HF_ENDPOINT`, e.g. a private hub). The repo is created when it does not exist
(private unless asked otherwise). Errors name the repo and what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True, message: str | None = None,
                token: str | None = None, endpoint: str | None = None) -> str:
    """Create `repo_id` (model repo) if needed and commit `folder` to it; returns the commit URL."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not REPO_ID.match(str(repo_id)):
        raise ValueError(f"push_to={repo_id!r} is not a hub repo id; use <user or org>/<name>")
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"nothing to push: {folder} is not a directory with files")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message or f"deco export of {folder.name}")
    except (HfHubHTTPError, httpx.HTTPError) as error:  # refused (401/403/...) or unreachable
        raise ValueError(f"push_to={repo_id}: the hub refused the upload ({error}); check the token "
                         "(HF_TOKEN or `hf auth login`) and that it may write to that namespace") from None
    return str(info.commit_url)
