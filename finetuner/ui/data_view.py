"""What the Data tab shows, as plain functions: stored uploads, the check report as Markdown, and the preview
as HTML with the trained text highlighted. No Gradio here, so tests and other tabs can reuse it.

    path = save_upload(tmp_path, ctx.uploads)          # a sanitised copy; the client's name is never trusted
    tok, note = tokenizer_for("Qwen/Qwen2.5-0.5B-Instruct")  # falls back to the built-in model's, with a note
    report_markdown(report, display="train.jsonl"), preview_html(report.preview)
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
import shutil
import threading
from pathlib import Path

from finetuner.data.read import EXTENSIONS
from graders.errors import DataError, FinetunerError
from finetuner.runs import safe_name

SHOWN_ERRORS = 20
TRAINED_STYLE = "background:#c8f0c8;color:#0b4a0b;border-bottom:2px solid #2e9e2e;border-radius:2px"
SPECIAL_STYLE = "color:#8a8a8a;font-style:italic"
_SPECIAL = re.compile(r"(<\|[^|<>]{1,40}\|>|</?s>|\[/?INST\])")


def save_upload(src: str | Path, uploads: Path) -> Path:
    """Copy an uploaded file into `uploads` under a safe name: the sanitised stem, a short content hash (two
    uploads of the same name never overwrite each other) and the real extension if it is a data one."""
    src = Path(src)
    if not src.is_file():
        raise DataError("The upload did not arrive (the file is gone). Upload it again.")
    ext = src.suffix.lower()
    ext = ext if ext in EXTENSIONS else ""  # the reader sniffs the content, so an odd extension is dropped
    digest = hashlib.sha1()
    with open(src, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    stem = safe_name(Path(src.name).stem)[:40]
    dest = uploads / f"{stem}-{digest.hexdigest()[:8]}{ext}"
    if not dest.exists():
        uploads.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return dest


def display_name(path: str) -> str:
    """How a stored upload is named to the person: the file name without our hash suffix."""
    p = Path(path)
    if not p.exists():
        return path  # a Hugging Face id
    return re.sub(r"-[0-9a-f]{8}$", "", p.stem) + p.suffix


# Fast tokenizers are not safe to call from several threads at once ("Already borrowed"), and Gradio runs
# handlers in threads: whoever uses a tokenizer from tokenizer_for holds this lock.
TOKENIZER_LOCK = threading.RLock()


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str):
    from finetuner.modeling.load import load_tokenizer

    return load_tokenizer(name)


def tokenizer_for(model_name: str | None):
    """(tokenizer, note): the named model's tokenizer, or the built-in model's with a note saying why."""
    name = (model_name or "tiny").strip() or "tiny"
    # Loading under the lock too: two handler threads importing transformers for the first time at once
    # can fail with "cannot import name AutoTokenizer".
    from finetuner.modeling import builtin_real

    if builtin_real.is_builtin_real(name) and not builtin_real.is_ready():
        # Fetching and converting it takes ~40 s (a 93 MB download): never inside a Data-tab check.
        return _tokenizer("tiny"), (f"Token counts use the built-in model's tokenizer: `{name}` is fetched and "
                                    f"converted when a run first uses it (scripts/setup.sh does it ahead). Real "
                                    f"counts will differ.")
    with TOKENIZER_LOCK:
        if name != "tiny":
            try:
                return _tokenizer(name), ""
            except FinetunerError as err:
                note = (f"Token counts use the built-in model's tokenizer: `{name}`'s could not be loaded here "
                        f"({str(err).split('(')[0].strip()}). Real counts will differ.")
                return _tokenizer("tiny"), note
        return _tokenizer("tiny"), ""


def _clean(text: str, path: str, display: str) -> str:
    # Messages name the stored copy; show the name the person uploaded instead.
    return md_text(text.replace(path, display) if path and display else text)


def md_text(text: str) -> str:
    """Text for Markdown: `<` and `>` outside `code` spans escaped, so `{{item.<column>}}` or a row's
    `<|im_start|>` is shown, not swallowed as an HTML tag."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def report_markdown(report, display: str, eval_line: str = "", extra_notes: list[str] | None = None,
                    tokenizer: str = "") -> str:
    """The check report as Markdown: a verdict, a table of facts, every error (by line), then notes."""
    src = report.source
    notes = [_clean(n, src, display) for n in list(report.notes) + list(extra_notes or [])]
    if report.ok:
        head = f"### ✅ Ready: {report.rows:,} rows, format `{report.format}`"
    else:
        n = report.error_count
        head = f"### ❌ Not usable yet: {n} problem{'s' if n != 1 else ''}"
    lines = [head, "", "| Check | Found |", "|---|---|", f"| Source | `{display}` |"]
    if report.columns:
        lines.append(f"| Columns | {', '.join(f'`{c}`' for c in report.columns)} |")
    if report.rows:
        lines.append(f"| Rows | {report.rows:,} |")
    s = report.lengths
    if s:
        lines.append(f"| Tokens per row ({s.what}) | min {s.min} · mean {s.mean:.1f} · p95 {s.p95} · max {s.max} |")
        verb = "leave no room for an answer" if s.what == "prompt" else "will be truncated"
        over = f"**{s.over_max}** ({verb})" if s.over_max else "none"
        lines.append(f"| Longer than max length ({s.max_length} tokens) | {over} |")
        if tokenizer:
            shown = "the built-in model's" if Path(tokenizer).name == "tiny" else f"`{tokenizer}`'s"
            lines.append(f"| Counted with | {shown} tokenizer (the Train tab's model) |")
    if eval_line:
        lines.append(f"| Evaluation | {eval_line} |")
    if report.errors:
        lines += ["", "**Fix these** (line numbers are the file's):"]
        lines += [f"- {_clean(e, src, display)}" for e in report.errors[:SHOWN_ERRORS]]
        if report.error_count > SHOWN_ERRORS:
            lines.append(f"- … and {report.error_count - SHOWN_ERRORS} more.")
        if report.hint:
            lines += ["", report.hint]
    if notes:
        lines += ["", "**Notes** (nothing is dropped silently):"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _render_text(text: str) -> str:
    """Escape text for <pre>, greying the template's special tokens so the content stands out."""
    out = []
    for part in _SPECIAL.split(text):
        if not part:
            continue
        esc = html.escape(part)
        out.append(f'<span style="{SPECIAL_STYLE}">{esc}</span>' if _SPECIAL.fullmatch(part) else esc)
    return "".join(out)


def highlighted(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` as HTML with each trained [start, end) span marked."""
    out, pos = [], 0
    for a, b in spans:
        out.append(_render_text(text[pos:a]))
        out.append(f'<span style="{TRAINED_STYLE}" title="trained">{_render_text(text[a:b])}</span>')
        pos = b
    out.append(_render_text(text[pos:]))
    return "".join(out)


LEGEND = (f'<div style="margin:4px 0 10px 0;font-size:0.9em"><span style="{TRAINED_STYLE};padding:1px 6px">'
          'trained text</span> the loss learns these tokens &nbsp;·&nbsp; plain text: context the model reads but '
          f'is not trained on &nbsp;·&nbsp; <span style="{SPECIAL_STYLE}">&lt;|grey|&gt;</span> the chat '
          'template\'s special tokens</div>')


def _short(value, n: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def preview_html(rows) -> str:
    """The preview rows (finetuner.data.preview.PreviewRow) as HTML: how each row reaches the model, trained text marked."""
    if not rows:
        return ""
    parts = ['<div class="ft-preview"><h4 style="margin:6px 0">Preview: what the model sees</h4>', LEGEND]
    for row in rows:
        title = f"{row.stage.upper()} stage · {html.escape(row.where)}"
        parts.append(f'<div style="font-weight:600;margin-top:8px">{title}</div>')
        parts.append('<pre style="white-space:pre-wrap;word-break:break-word;padding:8px;border-radius:6px;'
                     'border:1px solid var(--border-color-primary);margin:4px 0">'
                     f"{highlighted(row.text, row.spans)}</pre>")
        if row.stage == "rft":
            cols = ", ".join(f"<code>{html.escape(k)}</code> = {html.escape(_short(v))}"
                             for k, v in row.columns.items())
            parts.append('<div style="font-size:0.9em">RFT trains on the model\'s own answers to this prompt, '
                         "so nothing here is marked. Graders see "
                         f"{cols or 'no other columns'} as <code>{{{{item.&lt;column&gt;}}}}</code>.</div>")
    parts.append("</div>")
    return "".join(parts)
