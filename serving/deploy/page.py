"""The end-user chat page: one HTML document, one script, one stylesheet, no builder controls.

Kept as strings so they ship with the package. Model output is inserted with ``textContent``
only (never as HTML), and the server sends a strict Content-Security-Policy, so an answer that
contains markup cannot run script in the user's browser.
"""

from html import escape

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def render_page(workspace: str, title: str, welcome: str) -> str:
    ws = escape(workspace, quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="/static/chat.css">
<script src="/static/chat.js" defer></script>
</head>
<body data-workspace="{ws}">
<header><h1>{escape(title)}</h1></header>
<main id="log" aria-live="polite">
  <div class="msg assistant welcome">{escape(welcome)}</div>
</main>
<form id="ask" autocomplete="off">
  <textarea id="question" rows="2" maxlength="4000" placeholder="Ask a question…" required></textarea>
  <button id="send" type="submit">Send</button>
</form>
<footer>Answers come from an AI assistant and may be wrong; check the cited sources. Use 👍 / 👎 to help improve it.</footer>
</body>
</html>
"""


CSS = """
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f6f7f9;color:#1d1f23;
display:flex;flex-direction:column;height:100vh}
header{padding:.8rem 1.2rem;background:#fff;border-bottom:1px solid #e3e5e8}
header h1{font-size:1.1rem;margin:0}
main{flex:1;overflow-y:auto;padding:1rem;max-width:52rem;width:100%;margin:0 auto}
.msg{padding:.7rem .9rem;border-radius:.6rem;margin:.5rem 0;white-space:pre-wrap;line-height:1.45}
.user{background:#dbe9ff;margin-left:15%}
.assistant{background:#fff;border:1px solid #e3e5e8;margin-right:15%}
.error{background:#fdecea;border:1px solid #f5c2c0}
.sources{font-size:.8rem;color:#555;margin-top:.4rem}
.feedback{margin-top:.4rem;display:flex;gap:.4rem;align-items:center;flex-wrap:wrap}
.feedback button{border:1px solid #ccd;background:#fff;border-radius:.4rem;cursor:pointer;padding:.15rem .5rem}
.feedback button.chosen{background:#e6f0ff;border-color:#6b9cff}
.feedback textarea{width:100%;font:inherit}
.thanks{font-size:.8rem;color:#2e7d32}
form{display:flex;gap:.5rem;padding:.8rem;max-width:52rem;width:100%;margin:0 auto}
form textarea{flex:1;font:inherit;padding:.5rem;border-radius:.5rem;border:1px solid #ccd;resize:vertical}
form button{padding:.5rem 1rem;border-radius:.5rem;border:0;background:#2f6fed;color:#fff;cursor:pointer}
form button:disabled{background:#9bb5ef}
footer{font-size:.75rem;color:#777;text-align:center;padding:.3rem 0 .8rem}
"""

JS = r"""
(() => {
  const ws = document.body.dataset.workspace;
  const base = "/chat/" + encodeURIComponent(ws) + "/api/";
  const log = document.getElementById("log");
  const form = document.getElementById("ask");
  const input = document.getElementById("question");
  const send = document.getElementById("send");
  const history = [];
  let conversationId = null;

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  async function post(path, body) {
    return fetch(base + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Ragtune-Page": "1"},
      body: JSON.stringify(body),
    });
  }

  function feedbackBar(div, messageId) {
    const bar = document.createElement("div");
    bar.className = "feedback";
    const up = document.createElement("button"); up.type = "button"; up.textContent = "👍"; up.title = "Good answer";
    const down = document.createElement("button"); down.type = "button"; down.textContent = "👎"; down.title = "Bad answer";
    const fix = document.createElement("button"); fix.type = "button"; fix.textContent = "Suggest a correction";
    const note = document.createElement("span"); note.className = "thanks";
    let rating = null;
    async function sendFeedback(extra) {
      const res = await post("feedback", Object.assign({message_id: messageId, rating: rating}, extra || {}));
      const data = await res.json().catch(() => ({}));
      note.textContent = res.ok ? "Thanks for the feedback." : ((data.error && data.error.message) || "Feedback not saved.");
    }
    up.onclick = () => { rating = "up"; up.classList.add("chosen"); down.classList.remove("chosen"); sendFeedback(); };
    down.onclick = () => { rating = "down"; down.classList.add("chosen"); up.classList.remove("chosen"); sendFeedback(); };
    fix.onclick = () => {
      if (bar.querySelector("textarea")) return;
      const area = document.createElement("textarea"); area.rows = 3; area.maxLength = 4000;
      area.placeholder = "What should the answer have been?";
      const save = document.createElement("button"); save.type = "button"; save.textContent = "Send correction";
      save.onclick = () => { if (area.value.trim()) sendFeedback({correction: area.value}); };
      bar.appendChild(area); bar.appendChild(save);
    };
    bar.append(up, down, fix, note);
    div.appendChild(bar);
  }

  function showSources(div, citations) {
    if (!citations || !citations.length) return;
    const src = document.createElement("div");
    src.className = "sources";
    src.textContent = "Sources: " + citations.map(c => "[" + c.n + "] " + (c.citation || c.doc)).join("  ");
    div.appendChild(src);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question) return;
    input.value = "";
    send.disabled = true;
    bubble("user", question);
    const div = bubble("assistant", "…");
    const text = document.createTextNode("");
    let answer = "", meta = null, failed = null;
    try {
      const res = await post("chat", {messages: history.concat([{role: "user", content: question}]),
                                      conversation_id: conversationId, stream: true});
      if (!res.ok) {
        const data = await res.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || ("The assistant is unavailable (" + res.status + ")."));
      }
      div.textContent = ""; div.appendChild(text);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).trim(); buffer = buffer.slice(cut + 2);
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") continue;
          const chunk = JSON.parse(payload);
          if (chunk.error) { failed = chunk.error.message; continue; }
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) { answer += delta.content; text.data = answer; log.scrollTop = log.scrollHeight; }
          if (chunk.ragtune) meta = chunk.ragtune;
        }
      }
      if (failed) throw new Error(failed);
    } catch (err) {
      div.className = "msg error";
      div.textContent = err.message;
      send.disabled = false;
      return;
    }
    history.push({role: "user", content: question}, {role: "assistant", content: answer});
    while (history.length > 12) history.shift();
    if (meta) {
      conversationId = meta.conversation_id;
      showSources(div, meta.citations);
      if (meta.message_id) feedbackBar(div, meta.message_id);
    }
    send.disabled = false;
    input.focus();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
})();
"""
