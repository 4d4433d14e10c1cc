"""What the `openai` client costs per streamed chunk against a hand SSE parser (the vLLM engine's old one).

Both read the same canned chat.completion.chunk stream through httpx's MockTransport (no server,
no model), N streams of 32 text chunks plus usage and [DONE]; prints both times and the ratio.

    python bench/sse_parsing.py
"""
import json
import time

import httpx
import openai

chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None, "logprobs": None}]}
body = "".join(f"data: {json.dumps(chunk)}\n\n" for _ in range(32))
body += "data: " + json.dumps({**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 32, "total_tokens": 37}}) + "\n\ndata: [DONE]\n\n"
def handler(request): return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})
N = 300
http = httpx.Client(transport=httpx.MockTransport(handler))
t = time.perf_counter()
for _ in range(N):
    with http.stream("POST", "http://x/v1/chat/completions", json={}) as r:
        out = []
        for line in r.iter_lines():
            if not line.startswith("data:"): continue
            d = line[5:].strip()
            if d == "[DONE]": break
            c = json.loads(d)
            for ch in c.get("choices") or []:
                if (ch.get("delta") or {}).get("content"): out.append(ch["delta"]["content"])
hand = time.perf_counter() - t
client = openai.OpenAI(base_url="http://x/v1", api_key="e", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
t = time.perf_counter()
for _ in range(N):
    s = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    out = [c.choices[0].delta.content for c in s if c.choices and c.choices[0].delta.content]
oa = time.perf_counter() - t
print(f"{N} streams x 33 chunks: hand SSE {hand:.3f} s, openai client {oa:.3f} s, ratio {oa/hand:.2f}x; per chunk {hand/N/33*1e6:.0f} us vs {oa/N/33*1e6:.0f} us")
