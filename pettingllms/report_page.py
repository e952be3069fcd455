"""The frame of the report page: its style, its episode browser script, and how they wrap the content.

Kept apart from `pettingllms.report` because it is CSS and JavaScript, not Python. The script
reads the episodes from the `<script id="episode-data" type="application/json">` block (the format
is `report.EPISODE_FIELDS` / `report.TURN_FIELDS` over a string table; gzipped when `data-encoding`
says so), filters them, and draws one
page of `PAGE_SIZE` summaries; a transcript is built when its episode is opened. Model text is
only ever assigned to `textContent`, never parsed as HTML.
"""

from __future__ import annotations

PAGE_SIZE = 50

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
  background: #f6f8fa; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 28px 60px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 14px; margin: 0 0 4px; } .muted, .note { color: #656d76; font-size: 12px; }
nav { margin: 6px 0 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eaeef2; text-align: right; vertical-align: top; }
th:first-child { text-align: left; } thead th { background: #f6f8fa; }
caption.note { caption-side: bottom; text-align: left; padding-top: 3px; }
table.settings th, table.settings td, table.values td { text-align: left; }
table.settings { font-family: ui-monospace, monospace; font-size: 12px; }
.kv { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); column-gap: 24px;
  font: 12px ui-monospace, monospace; }
.kv div { display: flex; justify-content: space-between; gap: 12px; border-bottom: 1px solid #eaeef2;
  padding: 2px 4px; }
.kv span:first-child { font-weight: 600; } .kv span:last-child { text-align: right; word-break: break-all; }
.tables { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; }
figure img { display: block; max-width: 600px; width: 100%; } figcaption { color: #656d76; font-size: 12px; }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; padding: 8px 0; position: sticky; top: 0;
  background: #fff; border-bottom: 1px solid #d0d7de; z-index: 1; }
.controls input[type=text] { width: 150px; }
details.episode { border: 1px solid #d0d7de; border-radius: 6px; margin: 6px 0; }
details.episode > summary { cursor: pointer; padding: 5px 10px; display: flex; gap: 10px; align-items: center;
  flex-wrap: wrap; }
details.episode[open] > summary { background: #f6f8fa; border-bottom: 1px solid #d0d7de; }
.badge { font-size: 11px; padding: 1px 7px; border-radius: 10px; background: #eaeef2; }
.success { background: #dafbe1; color: #116329; } .failed { background: #ffebe9; color: #a40e26; }
.error { background: #fff8c5; color: #7d4e00; } .kept { background: #ddf4ff; color: #0550ae; }
.id { font-family: ui-monospace, monospace; font-weight: 600; }
.turn { margin: 8px 10px; padding: 4px 10px; border-left: 4px solid #2da44e; }
.turn.invalid { border-left-color: #cf222e; }
.turn-head { display: flex; gap: 10px; flex-wrap: wrap; align-items: center; font-size: 12px; color: #424a53; }
.turn-head b { color: #1f2328; font-size: 13px; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; border-radius: 4px; padding: 6px 8px;
  margin: 4px 0; max-height: 420px; overflow: auto; font-size: 12px; }
.label { font-size: 11px; color: #656d76; margin-top: 4px; } .parse-error { color: #a40e26; font-size: 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 4px 0; font-size: 12px; }
.facts code { background: #f6f8fa; padding: 0 4px; border-radius: 3px; word-break: break-word; }
.meta { padding: 4px 10px 0; }
.pager { display: flex; gap: 10px; align-items: center; margin: 8px 0; }
"""

SCRIPT = r"""
"use strict";
async function readEpisodes() {
  // A big run comes gzipped (data-encoding), as a JSON string of base64: 50 MB of transcripts are 2 MB.
  const block = document.getElementById("episode-data"), text = JSON.parse(block.textContent);
  if (block.dataset.encoding !== "gzip+base64") return text;
  const binary = atob(text), bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}
readEpisodes().then((data) => {
  const S = data.strings, E = data.episodes, F = {}, T = {}, PAGE = __PAGE_SIZE__;
  data.episode_fields.forEach((name, i) => { F[name] = i; });
  data.turn_fields.forEach((name, i) => { T[name] = i; });
  const $ = (id) => document.getElementById(id);
  const count = (n) => n.toLocaleString("en-US");
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  for (const agent of data.agents) { const o = el("option", null, agent); o.value = agent; $("f-agent").append(o); }
  let shown = [], page = 0;

  function wanted() {
    return { outcome: $("f-outcome").value, kept: $("f-kept").value, agent: $("f-agent").value,
             task: $("f-task").value.trim().toLowerCase(), text: $("f-text").value.trim().toLowerCase() };
  }
  function matches(ep, f) {
    if (f.outcome && ep[F.outcome] !== f.outcome) return false;
    if (f.kept === "kept" && !ep[F.kept]) return false;
    if (f.kept === "dropped" && ep[F.kept]) return false;
    const turns = ep[F.turns];
    if (f.agent && !turns.some((t) => S[t[T.agent]] === f.agent)) return false;
    if (f.task && !(f.exact ? isTask(ep, f.task) : taskName(ep).includes(f.task))) return false;
    if (f.text && !turns.some((t) => S[t[T.response]].toLowerCase().includes(f.text)
        || String(t[T.parse_error] ?? "").toLowerCase().includes(f.text))) return false;
    return true;
  }
  const taskName = (ep) => String(ep[F.task_id] ?? ep[F.env_idx]).toLowerCase();
  const isTask = (ep, task) => taskName(ep) === task || String(ep[F.env_idx]) === task;
  function apply() {
    const f = wanted();
    f.exact = f.task !== "" && E.some((ep) => isTask(ep, f.task));  // "sudoku-1" is task 1, not also 10, 11...
    shown = [];
    for (let i = 0; i < E.length; i++) if (matches(E[i], f)) shown.push(i);
    page = 0;
    draw();
  }
  function draw() {
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    const list = $("episodes");
    list.replaceChildren(...shown.slice(page * PAGE, (page + 1) * PAGE).map((i) => card(E[i])));
    for (const where of ["top", "bottom"]) {
      $("info-" + where).textContent =
        `page ${page + 1} of ${count(pages)} · ${count(shown.length)} of ${count(E.length)} episodes`;
      $("prev-" + where).disabled = page === 0;
      $("next-" + where).disabled = page >= pages - 1;
    }
  }
  function card(ep) {
    const box = el("details", "episode"), head = el("summary");
    head.append(el("span", "badge " + ep[F.outcome], ep[F.outcome]), el("span", "id", ep[F.episode_id]),
      taskLink(ep), el("span", "muted", "sample " + ep[F.rollout_idx]),
      el("span", "muted", ep[F.turns].length + " turns"), el("span", "muted", "return " + ep[F.return]));
    if (ep[F.kept]) head.append(el("span", "badge kept", ep[F.kept] + " kept"));
    if (ep[F.error_kind]) head.append(el("span", "badge error", ep[F.error_kind]));
    box.append(head);
    box.addEventListener("toggle", () => { if (box.open && box.children.length === 1) box.append(transcript(ep)); });
    return box;
  }
  function taskLink(ep) {  // a click shows every sample of the task
    const link = el("a", "task", "task " + (ep[F.task_id] ?? ep[F.env_idx]));
    link.href = "#";
    link.title = "show every sample of this task";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      $("f-task").value = String(ep[F.task_id] ?? ep[F.env_idx]);
      apply();
    });
    return link;
  }
  function transcript(ep) {
    const body = el("div");
    if (ep[F.error_kind]) body.append(el("pre", "parse-error", ep[F.error_kind] + ": " + (ep[F.error_message] ?? "")));
    body.append(el("div", "muted meta", `seed ${ep[F.seed]} · terminated ${ep[F.terminated]}`
      + ` · truncated ${ep[F.truncated]} · ${ep[F.wall_time_s]} s`));
    for (const t of ep[F.turns]) body.append(turn(t));
    return body;
  }
  function turn(t) {
    const box = el("div", t[T.valid] ? "turn" : "turn invalid"), head = el("div", "turn-head");
    head.append(el("b", null, `turn ${t[T.turn_idx]} · ${S[t[T.agent]]}`), el("span", null, "policy " + S[t[T.policy]]),
      el("span", "badge " + (t[T.valid] ? "success" : "failed"), t[T.valid] ? "valid" : "parse_error"),
      el("span", null, "reward " + t[T.reward]));
    if (t[T.kept]) head.append(el("span", "badge kept", "kept"));
    if (t[T.prompt_tokens] || t[T.completion_tokens])
      head.append(el("span", "muted", `tokens ${t[T.prompt_tokens]} + ${t[T.completion_tokens]}`));
    if (t[T.finish_reason]) head.append(el("span", "muted", "finish " + t[T.finish_reason]));
    box.append(head);
    const prompt = el("details"), messages = t[T.messages];
    prompt.append(el("summary", "label", `prompt (${messages.length} messages)`));
    prompt.addEventListener("toggle", () => {
      if (prompt.open && prompt.children.length === 1)
        for (const [role, content] of messages) prompt.append(el("div", "label", S[role]), el("pre", null, S[content]));
    });
    box.append(prompt, el("div", "label", "reply"), el("pre", null, S[t[T.response]]));
    if (t[T.parse_error]) box.append(el("div", "parse-error", "parse error: " + t[T.parse_error]));
    const details = Object.entries(t[T.details] || {}), inline = el("div", "facts");
    for (const [key, value] of details) {  // short values on one line, program output in boxes
      const text = typeof value === "string" ? value : JSON.stringify(value);
      if (typeof value === "string" && (value.includes("\n") || value.length > 100)) {
        box.append(el("div", "label", key), el("pre", null, text));
      } else {
        const fact = el("span");
        const shown = typeof value === "string" ? JSON.stringify(value) : text;
        fact.append(el("span", "label", key + " "), el("code", null, shown));
        inline.append(fact);
      }
    }
    if (inline.children.length) box.append(inline);
    return box;
  }
  let timer = null;
  for (const id of ["f-outcome", "f-kept", "f-agent"]) $(id).addEventListener("change", apply);
  for (const id of ["f-task", "f-text"])
    $(id).addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 200); });
  for (const where of ["top", "bottom"]) {
    $("prev-" + where).addEventListener("click", () => { page -= 1; draw(); });
    $("next-" + where).addEventListener("click", () => { page += 1; draw(); $("browser").scrollIntoView(); });
  }
  apply();
}).catch((error) => {
  document.getElementById("episodes").textContent = "The episodes could not be read: " + error
    + " (a big run's are gzipped: this needs DecompressionStream, in Chrome 80+, Firefox 113+, Safari 16.4+).";
});
"""

CONTROLS = """
<div class="controls">
  <label>outcome <select id="f-outcome"><option value="">all</option><option>success</option><option>failed</option>
    <option>error</option></select></label>
  <label>records <select id="f-kept"><option value="">all</option><option value="kept">some kept</option>
    <option value="dropped">none kept</option></select></label>
  <label>agent <select id="f-agent"><option value="">all</option></select></label>
  <label>task <input type="text" id="f-task" placeholder="task id or number"></label>
  <label>reply text <input type="text" id="f-text" placeholder="search replies"></label>
</div>
"""


def pager(where: str) -> str:
    return (
        f"<div class='pager'><button id='prev-{where}'>&larr; previous</button>"
        f"<span id='info-{where}'></span><button id='next-{where}'>next &rarr;</button></div>"
    )


def page_html(title: str, body: str, data_block: str) -> str:
    """The whole page: `title` and `body` already escaped HTML, `data_block` the episodes' <script> element."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n"
        f"{CONTROLS}{pager('top')}<div id='episodes'></div>{pager('bottom')}\n"
        "<noscript>The episode browser needs JavaScript; the tables and plots above do not.</noscript>\n"
        "</main>\n"
        f"{data_block}\n"
        f"<script>{SCRIPT.replace('__PAGE_SIZE__', str(PAGE_SIZE))}</script>\n</body></html>\n"
    )
