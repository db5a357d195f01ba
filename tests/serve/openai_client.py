"""The official `openai` Python client against `herd serve` (run by tests/serve.rs).

Usage: python3 tests/serve/openai_client.py BASE_URL MODEL
Prints one JSON object with what each call returned; the Rust test checks it.
"""

import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
out = {}

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Give three tips for staying healthy."}],
    max_tokens=20,
    temperature=0,
    logprobs=True,
    top_logprobs=3,
)
choice = chat.choices[0]
out["chat_text"] = choice.message.content
out["chat_finish"] = choice.finish_reason
out["chat_usage"] = [chat.usage.prompt_tokens, chat.usage.completion_tokens]
out["chat_logprobs"] = [
    [entry.token, entry.logprob, [top.token for top in entry.top_logprobs]]
    for entry in choice.logprobs.content
]

pieces = []
usage = None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Give three tips for staying healthy."}],
    max_tokens=20,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
out["stream_pieces"] = pieces
out["stream_usage"] = usage

completion = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2
)
out["completion_text"] = completion.choices[0].text
out["completion_tokens"] = completion.choices[0].logprobs.tokens
out["completion_top"] = completion.choices[0].logprobs.top_logprobs

streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    if c.choices
)
out["completion_stream_text"] = streamed

out["models"] = [m.id for m in client.models.list().data]

try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}], max_tokens=10**6
    )
    out["error"] = None
except openai.BadRequestError as error:
    out["error"] = [error.status_code, error.body.get("param"), error.body.get("code")]

print(json.dumps(out))
