"""The draft: what a person has built across the tabs (the `project` state: data choice, column mapping,
graders, Train settings), kept on disk per user so that a page reload or an app restart gives it back.

    runs/_drafts/<key>.json    {"version": 1, "saved": <unix time>, "project": {...new_project()...}}

`<key>` is `u-<name>` for a signed-in user (--auth; a name unsafe as a file name is hashed: `h-<sha256>`) or
`b-<random hex>` for a browser without auth, whose id lives in its localStorage (gr.BrowserState), so two
people or two browsers never overwrite each other's draft. A browser's id is checked before it names a file;
anything else gets a fresh id. Saved on every change of the project (a temporary file, then os.replace, so a
reader never sees half a draft; an unchanged project is not rewritten; an empty one removes the file),
restored on page load, removed by "Start over". Secrets are never written: graders hold only the names of
environment variables, and `export.strip_secrets` drops anything that looks like a key all the same.

`wire(ctx, shared, parts, demo)` connects it to the page (build_app calls it once); the file functions
(`save_draft`, `restore`, `remove_draft`, `draft_key`) and `restore_page` are plain and tested without a browser.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from graders.errors import FinetunerError
from finetuner.runs.export import strip_secrets
from finetuner.ui.context import AppContext, Shared, new_project, safe, user_folder

log = logging.getLogger("finetuner.ui")

VERSION = 1
FOLDER = "_drafts"
STORAGE_KEY = "finetuner-draft-id"  # the browser's localStorage entry holding its draft id
BROWSER_ID = re.compile(r"[0-9a-f]{32}")
# Extensions the Data tab accepts: a source ending in one is a file (gone if missing), anything else without a
# folder part may be a Hugging Face dataset id, which cannot be checked offline and is kept as it is.
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq")
SIDE_FILES = {"eval": "evaluation file", "rft_train": "RFT prompts file"}


class DraftError(FinetunerError):
    """A saved draft cannot be read (not JSON, not a draft, unreadable) or a draft id is unusable."""


def drafts_dir(runs_dir: str | Path) -> Path:
    path = Path(runs_dir).resolve() / FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_browser_id() -> str:
    return secrets.token_hex(16)


def valid_browser_id(value) -> bool:
    return isinstance(value, str) and bool(BROWSER_ID.fullmatch(value))


def draft_key(username: str | None = None, browser_id: str | None = None) -> str:
    """The draft's file stem: the signed-in user's, else the browser's. Never holds a path separator, a dot
    prefix or anything but [A-Za-z0-9_.@-], whatever the name or id held."""
    if username:
        return user_folder(username)  # the same name as the user's uploads folder
    if valid_browser_id(browser_id):
        return f"b-{browser_id}"
    raise DraftError("This page has no usable draft id (a browser id is 32 hexadecimal characters); a new one "
                     "is given on the next page load.")


def draft_path(runs_dir: str | Path, key: str) -> Path:
    folder = drafts_dir(runs_dir)
    path = folder / f"{key}.json"
    if not re.fullmatch(r"[ubh]-[A-Za-z0-9_.@-]+", key) or ".." in key or path.parent != folder:
        raise DraftError(f"`{key}` is not a draft id this app makes.")
    return path


def is_empty(project: dict | None) -> bool:
    return not project or project == new_project()


# ---------------------------------------------------------------- save, read, restore, remove

_last_saved: dict[str, str] = {}  # path -> the text last written there, so an unchanged project is not rewritten


def save_draft(runs_dir: str | Path, key: str, project: dict | None) -> Path | None:
    """Write the project as this key's draft (atomically); an empty project removes the draft. Returns the
    file written, or None when there is none now."""
    path = draft_path(runs_dir, key)
    if is_empty(project):
        remove_draft(runs_dir, key)
        return None
    text = json.dumps({"version": VERSION, "saved": time.time(), "project": strip_secrets(project)},
                      ensure_ascii=False, indent=1)
    body = text.split('"project"', 1)[1]  # the project without its time stamp
    if _last_saved.get(str(path)) == body and path.exists():
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _last_saved[str(path)] = body
    return path


def remove_draft(runs_dir: str | Path, key: str) -> bool:
    """Delete this key's draft; True if there was one."""
    path = draft_path(runs_dir, key)
    _last_saved.pop(str(path), None)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def read_draft(path: Path) -> tuple[dict, float | None]:
    """(project, saved time) from a draft file, its shape checked; DraftError says what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DraftError(f"it could not be read ({type(err).__name__}: {err})") from None
    except ValueError as err:
        raise DraftError(f"it is not valid JSON ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("project"), dict):
        raise DraftError("it holds no project")
    if raw.get("version") != VERSION:
        raise DraftError(f"it was written by another version of the app (draft version {raw.get('version')!r})")
    saved, got = raw.get("saved"), raw["project"]
    project = new_project()
    for name, kinds in (("data", dict), ("graders", list), ("dry_run", (dict, type(None))), ("config", dict)):
        value = got.get(name, project[name])
        if not isinstance(value, kinds):
            raise DraftError(f"its `{name}` is a {type(value).__name__}")
        project[name] = value
    if not all(isinstance(g, dict) for g in project["graders"]):
        raise DraftError("its graders are not a list of grader specs")
    return project, float(saved) if isinstance(saved, (int, float)) else None


def _is_file(source: str) -> bool:
    p = Path(source).expanduser()
    return p.is_absolute() or source.startswith(".") or p.suffix.lower() in DATA_SUFFIXES


def _drop_missing_files(project: dict) -> list[str]:
    """Remove data sources whose file is gone (the settings around them stay); the names of what was removed."""
    gone = []
    data, cfg_data = project.get("data") or {}, (project.get("config") or {}).get("data") or {}
    train = data.get("path") or cfg_data.get("train")
    if isinstance(train, str) and train and _is_file(train) and not Path(train).expanduser().is_file():
        gone.append(f"training data `{data.get('name') or Path(train).name}`")
        project["data"] = {}
        if cfg_data:
            cfg_data["train"] = ""
    for key, what in SIDE_FILES.items():
        side = cfg_data.get(key)
        if isinstance(side, str) and side and _is_file(side) and not Path(side).expanduser().is_file():
            gone.append(f"{what} `{Path(side).name}`")
            cfg_data[key] = ""
    return gone


@dataclass
class Restored:
    project: dict = field(default_factory=new_project)  # empty when there was nothing usable
    found: bool = False  # a draft file was there
    saved: float | None = None
    problem: str = ""  # what went wrong, to warn about ("" when nothing did)
    gone: list = field(default_factory=list)  # data files the draft named that are gone


def restore(runs_dir: str | Path, key: str) -> Restored:
    """This key's draft, ready to load. Never raises for a bad draft: an unreadable file is moved aside (kept
    as <key>.json.unreadable for a look) and an empty project is returned with the reason."""
    path = draft_path(runs_dir, key)
    if not path.exists():
        return Restored()
    try:
        project, saved = read_draft(path)
    except DraftError as err:
        aside = path.with_name(path.name + ".unreadable")
        try:
            os.replace(path, aside)
            kept = f" The file was kept as `{aside}`."
        except OSError:
            kept = ""
        log.warning("draft %s unreadable: %s", path, err)
        return Restored(found=True, problem=f"Your saved draft could not be restored: {err}. Started with an empty "
                                            f"project.{kept}")
    gone = _drop_missing_files(project)
    return Restored(project=project, found=True, saved=saved, gone=gone)


def summary(project: dict) -> str:
    """What a draft holds, in a few words: "data `x.jsonl`, 2 graders, Train settings"."""
    parts = []
    name = (project.get("data") or {}).get("name")
    if name:
        parts.append(f"data `{name}`")
    n = len(project.get("graders") or [])
    if n:
        parts.append(f"{n} grader{'s' if n != 1 else ''}")
    t = len((project.get("config") or {}).get("tools") or [])
    if t:
        parts.append(f"{t} tool{'s' if t != 1 else ''}")
    if set(project.get("config") or {}) - {"data", "tools"}:
        parts.append("Train settings")
    return ", ".join(parts) or "settings"


def note_for(result: Restored) -> str:
    """The line under the header after a page load ("" when there is nothing to say)."""
    if result.problem:
        return f"⚠️ {result.problem}"
    if not result.found or (is_empty(result.project) and not result.gone):
        return ""
    when = time.strftime(" (saved %Y-%m-%d %H:%M)", time.localtime(result.saved)) if result.saved else ""
    line = f"Restored your draft{when}: {summary(result.project)}. **Start over** empties it."
    if result.gone:
        line += (f"\n\n⚠️ The {' and the '.join(result.gone)} {'is' if len(result.gone) == 1 else 'are'} no longer "
                 "on this machine: upload it again on the Data tab. The graders and settings are restored.")
    return line


# ---------------------------------------------------------------- the page


def browser_secret(runs_dir: str | Path) -> str:
    """The key the browser's stored draft id is encrypted with. Gradio picks a new random one each start,
    which would make every browser forget its id (and its draft) when the app restarts; this one lives in the
    runs folder, created once, readable only by its owner."""
    path = drafts_dir(runs_dir) / ".browser-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="utf-8").strip()
        if len(text) >= 16:
            return text
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # empty or cut short: write a new one
    value = secrets.token_hex(16)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value)
    return value


def restore_page(ctx: AppContext, browser_id, username: str | None):
    """Page load: (browser id to keep, project, whether saving may start, note). A browser without a valid id
    gets a new one (and an empty project)."""
    if not username and not valid_browser_id(browser_id):
        browser_id = new_browser_id()
    result = restore(ctx.runs_dir, draft_key(username, browser_id))
    if result.problem or result.gone:
        gr.Warning(result.problem or "Some of the draft's data files are gone: upload them again on the Data tab.")
    note = note_for(result)
    return browser_id, result.project, True, gr.update(value=note, visible=bool(note))


_warned: set[str] = set()  # keys whose failed save was already shown, so a full disk is not a toast per click


def save_page(ctx: AppContext, project, browser_id, live, username: str | None) -> None:
    """The project changed: write this page's draft, once it has restored its own (so a page that is still
    loading never overwrites the draft it is about to restore)."""
    if not live:
        return
    key = draft_key(username, browser_id)
    try:
        save_draft(ctx.runs_dir, key, project)
        _warned.discard(key)
    except (OSError, TypeError, ValueError) as err:
        log.warning("could not save draft %s: %s", key, err)
        if key not in _warned:
            _warned.add(key)
            gr.Warning(f"Could not save your draft in {drafts_dir(ctx.runs_dir)} ({type(err).__name__}: {err}). "
                       "Your work stays on this page, but a reload would lose it: check the disk space and "
                       "permissions of the runs folder.")


def start_over(ctx: AppContext, browser_id, username: str | None):
    """Delete this page's draft and stop saving from it; the page then reloads, empty."""
    if username or valid_browser_id(browser_id):
        remove_draft(ctx.runs_dir, draft_key(username, browser_id))
    return False, gr.update(visible=False)


def wire(ctx: AppContext, shared: Shared, parts: dict, demo) -> None:
    """Restore on load, save on every project change, and the Start over button with its confirmation.
    `parts` is what welcome.header returns: start_over (button), confirm ((row, yes, no)), note (markdown)."""
    browser = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=browser_secret(ctx.runs_dir))
    live = gr.State(False)  # True once this page restored its draft: only then do its changes overwrite it
    row, yes, no = parts["confirm"]

    def user(request: gr.Request | None) -> str | None:
        return getattr(request, "username", None) or None

    @safe
    def on_load(browser_id, request: gr.Request):
        return restore_page(ctx, browser_id, user(request))

    @safe
    def on_change(project, browser_id, is_live, request: gr.Request):
        save_page(ctx, project, browser_id, is_live, user(request))

    @safe
    def on_start_over(browser_id, request: gr.Request):
        return start_over(ctx, browser_id, user(request))

    event = demo.load(on_load, [browser], [browser, shared.project, live, parts["note"]])
    for fn, outputs in shared.refreshers:
        event = event.then(safe(fn), inputs=[shared.project], outputs=outputs)
    shared.project.change(on_change, [shared.project, browser, live], None, show_progress="hidden",
                          trigger_mode="always_last")
    parts["start_over"].click(lambda: gr.update(visible=True), None, [row])
    no.click(lambda: gr.update(visible=False), None, [row])
    # A reload, not a redraw: it also empties what is not in the project (the upload box, forms, test results).
    yes.click(on_start_over, [browser], [live, row]).then(None, js="() => { window.location.reload(); }")
