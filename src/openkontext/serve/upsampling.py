"""Prompt upsampling through an OpenAI-compatible chat-completions endpoint.

`OpenAIChatUpsampler` implements the `PromptUpsampler` protocol (see moderation.py) by asking a
language model, served anywhere that speaks `POST {base_url}/chat/completions` (OpenAI, vLLM,
llama.cpp, Ollama, ...), to rewrite the prompt. Configure it with `upsampler_url` and
`upsampler_model` (and `upsampler_api_key` if the endpoint wants one).
"""

from __future__ import annotations

import httpx
from PIL import Image

SYSTEM_PROMPT = (
    "You rewrite short image-editing instructions into richer, precise ones for an image "
    "editing model. Keep the user's intent exactly; make the requested change specific "
    "(what, where, colours, materials, style, lighting) and state that everything the "
    "instruction does not mention stays unchanged (identity, pose, composition, background, "
    "text). Do not add new edits. Answer with the rewritten instruction only, in one "
    "paragraph, without quotes, preamble or explanation."
)


class UpsamplingError(RuntimeError):
    """The upsampling endpoint failed: unreachable, timed out, an HTTP error or a bad answer."""


class OpenAIChatUpsampler:
    """Rewrites prompts with a chat model behind an OpenAI-compatible API.

    `base_url` is the API root, e.g. `http://127.0.0.1:8080/v1`; the request goes to
    `{base_url}/chat/completions` with `temperature` 0. Only the text is sent: the input images
    are not passed to the model, so the rewrite cannot describe them. Any failure raises
    `UpsamplingError` naming the URL, which ends the job as `Error` with that message.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 20.0, system_prompt: str = SYSTEM_PROMPT):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.system_prompt = system_prompt

    def __call__(self, prompt: str, images: list[Image.Image]) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
        }
        try:
            response = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as e:
            raise UpsamplingError(
                f"prompt upsampling at {self.url} timed out after {self.timeout:g} s") from e
        except httpx.HTTPError as e:
            raise UpsamplingError(f"prompt upsampling at {self.url} failed: {e}") from e
        if response.status_code != 200:
            raise UpsamplingError(
                f"prompt upsampling at {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise UpsamplingError(
                f"prompt upsampling at {self.url} gave a malformed answer: "
                f"{response.text[:200]!r}") from e
        if not isinstance(content, str) or not content.strip():
            raise UpsamplingError(f"prompt upsampling at {self.url} gave an empty answer")
        return content.strip()
