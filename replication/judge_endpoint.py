"""Any OpenAI-compatible chat endpoint as a judge (the OpenAI API, or a local vLLM server).

Configured from the environment:

    HARMPRUNE_JUDGE_BASE_URL   (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)
    HARMPRUNE_JUDGE_MODEL      (default: gpt-4o-2024-08-06, the paper's EM judge)
    HARMPRUNE_JUDGE_API_KEY    (default: $OPENAI_API_KEY; a local server may need none)

The emergent-misalignment judges (`em_judge`) and the explanation judge (`recognition`) share it.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_JUDGE_MODEL = "gpt-4o-2024-08-06"


@dataclass
class JudgeEndpoint:
    """Where the judge lives (read from the environment by `from_env`)."""

    base_url: str
    model: str = DEFAULT_JUDGE_MODEL
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 3

    @classmethod
    def from_env(cls) -> "JudgeEndpoint":
        base = os.environ.get("HARMPRUNE_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = os.environ.get("HARMPRUNE_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return cls(base_url=base.rstrip("/"), model=os.environ.get("HARMPRUNE_JUDGE_MODEL", DEFAULT_JUDGE_MODEL), api_key=key)

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


class ChatClient:
    """One OpenAI-compatible `/chat/completions` endpoint: greedy completions, retried."""

    def __init__(self, endpoint: JudgeEndpoint | None = None):
        self.endpoint = endpoint or JudgeEndpoint.from_env()

    def complete(self, prompt: str, *, max_tokens: int = 1, logprobs: bool = True) -> dict[str, Any]:
        """One greedy chat completion (temperature 0) with the first token's top-20 log-probabilities."""
        ep = self.endpoint
        body: dict[str, Any] = {"model": ep.model, "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": max_tokens, "temperature": 0}
        if logprobs:
            body.update(logprobs=True, top_logprobs=20)
        headers = {"Content-Type": "application/json"}
        if ep.api_key:
            headers["Authorization"] = f"Bearer {ep.api_key}"
        req = urllib.request.Request(f"{ep.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers)
        last: Exception | None = None
        for attempt in range(ep.retries):
            try:
                with urllib.request.urlopen(req, timeout=ep.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as err:
                if err.code in (400, 401, 403, 404):
                    raise RuntimeError(f"judge endpoint {ep.base_url} answered HTTP {err.code} for model {ep.model!r}: "
                                       "check HARMPRUNE_JUDGE_BASE_URL, HARMPRUNE_JUDGE_MODEL and the API key") from None
                last = err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = err
            time.sleep(min(2 ** attempt, 8))
        raise RuntimeError(f"judge endpoint {ep.base_url} unreachable after {ep.retries} tries ({last}); set "
                           "HARMPRUNE_JUDGE_BASE_URL to a running OpenAI-compatible server")


__all__ = ["JudgeEndpoint", "ChatClient", "DEFAULT_JUDGE_MODEL"]
