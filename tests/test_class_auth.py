"""A class on one machine (--auth FILE): the accounts file, who sees which run, and every handler that takes a
run id or a path refusing another user's, called the way Gradio calls it (through `safe`, with a gr.Request).

To add a handler: put it in REFUSING (it must raise "belongs to another user") or in SHOWING (it draws the
page: it must not show the other user's run)."""

import json
import os
import signal
import subprocess
import sys
import time

import gradio as gr
import pytest

import app
from finetuner.runs import RunFolder
from finetuner.ui import queue_view, tab_data, tab_evaluate, tab_monitor, tab_runs, tab_train
from finetuner.ui.context import AppContext, new_project, safe
from finetuner.ui.eval_tables import COMPARE_FILTERS

NO_FILTER = ("", "", "all", "all", "total", "", "", "")
MARK = "ALICE-PRIVATE-7731"  # in alice's files: no handler answering bob may show it
NO_PROGRESS = lambda *a, **k: None  # noqa: E731 - stands in for gr.Progress


# ------------------------------------------------------------------ the accounts file


def write(tmp_path, text):
    path = tmp_path / "class.txt"
    path.write_text(text)
    return path


def test_accounts_file_reads_users_teachers_comments_and_colons(tmp_path):
    path = write(tmp_path, "# the class\n\nalice:pw1\n  bob:p:w:2  \nmrs.k:chalk:teacher\n")
    acc = app.read_accounts(path)
    assert acc.users == {"alice": "pw1", "bob": "p:w:2", "mrs.k": "chalk"} and acc.teachers == {"mrs.k"}
    assert acc.check("alice", "pw1") and acc.check("mrs.k", "chalk")
    assert not acc.check("alice", "pw2") and not acc.check("nobody", "pw1") and not acc.check("mrs.k", "chalk:teacher")
    got = app.check_exposure(app.parse_args(["--host", "0.0.0.0", "--auth", str(path)]))
    assert got == acc  # a file counts as a password for exposure


@pytest.mark.parametrize("text, line, problem", [
    ("alice:pw\nbob\n", 2, "no colon"),
    ("# c\n:pw\n", 2, "no user name"),
    ("alice:pw\n\nbob:\n", 3, "an empty password"),
    ("alice:pw\nbob:x\nalice:other\n", 3, "user alice is already on line 1"),
    ("al ice:pw\n", 1, "a space in the user name"),
    ("bob::teacher\n", 1, "an empty password"),
])
def test_bad_accounts_lines_are_refused_with_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        app.read_accounts(path)
    msg = str(info.value.code)
    assert f"{path} line {line}: {problem}" in msg and "user:password:teacher" in msg


def test_empty_accounts_file_and_missing_file_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="holds no accounts"):
        app.read_accounts(write(tmp_path, "# nobody yet\n\n"))
    with pytest.raises(SystemExit, match="--auth takes user:password.*no such file"):
        app.check_exposure(app.parse_args(["--auth", str(tmp_path / "missing.txt")]))


def test_one_pair_is_one_account_that_sees_everything():
    acc = app.as_accounts(app.check_exposure(app.parse_args(["--auth", "teacher:s3cret"])))
    assert acc.users == {"teacher": "s3cret"} and acc.teachers == {"teacher"}
    assert app.as_accounts(None) is None


def test_several_accounts_stop_gradio_serving_the_runs_folder(tmp_path, monkeypatch):
    two = app.Accounts({"a": "1", "b": "2"}, frozenset())
    ctx = AppContext(tmp_path / "runs", auth=True)
    assert app.class_kwargs(ctx, two, {"allowed_paths": [str(ctx.runs_dir)]})["allowed_paths"] == []
    one = app.Accounts({"a": "1"}, frozenset({"a"}))
    assert app.class_kwargs(ctx, one, {"allowed_paths": ["x"]})["allowed_paths"] == ["x"]
    monkeypatch.setattr(app.tempfile, "gettempdir", lambda: str(tmp_path / "elsewhere"))
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # the runs folder is then neither inside the cwd nor the temp folder
    with pytest.raises(SystemExit, match="must be inside the current folder"):
        app.class_kwargs(ctx, two, {})


# ------------------------------------------------------------------ a class's runs folder


def make_run(root, name, owner, state="finished", pid=None):
    run = RunFolder(root / name)
    run.path.mkdir(parents=True)
    run.config_path.write_text(f"name: {name}\nmethod: sft+rft\nmodel: {{name: tiny}}\n"
                               f"data: {{train: {name}-{MARK if owner == 'alice' else 'x'}.jsonl}}\n")
    now = time.time()
    status = dict(state=state, name=name, method="sft+rft", created=now, started=now - 30, pid=pid, pgid=pid)
    run.write_status(**status, **({"owner": owner} if owner else {}))
    row = {"stage": "rft", "step": 1, "run_step": 1, "loss": 1.0, "reward": 0.5}
    run.metrics_path.write_text(json.dumps(row) + "\n")
    run.samples_path.write_text(json.dumps({"stage": "rft", "step": 1, "prompt": "p", "completion": MARK,
                                            "reward": 0.5, "split": "train"}) + "\n")
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    return run


@pytest.fixture
def klass(tmp_path):
    """alice's run (training: a real process), bob's run, and a run from before --auth (no owner)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    ctx = AppContext(tmp_path / "runs", auth=True, teachers={"teach"})
    alice = make_run(ctx.runs_dir, "alice-run", "alice", state="running", pid=proc.pid)
    make_run(ctx.runs_dir, "bob-run", "bob")
    make_run(ctx.runs_dir, "old-run", None)
    upload = ctx.uploads_for("alice") / "alice-data.jsonl"
    upload.write_text('{"prompt": "p", "completion": "%s"}\n' % MARK)
    yield ctx, alice, proc, upload
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def as_user(user, fn, *args):
    """Call `fn` the way the page does: through `safe`, which Gradio hands the gr.Request first."""
    return safe(fn)(gr.Request(username=user), *args)


def untouched(alice, proc, before):
    status = alice.read_status()
    assert alice.path.is_dir() and alice.config_path.exists() and (alice.path / "adapter").is_dir()
    assert status["state"] == "running" and status == before, status
    assert "stop_requested" not in status and not alice.stop_path.exists()
    assert proc.poll() is None  # not killed


# (label, handler, its arguments after ctx for run id `rid`): each must refuse another user's run in words.
REFUSING = [
    ("Monitor: rollout filters", tab_monitor.apply_filters, lambda rid: (rid, *NO_FILTER)),
    ("Monitor: rollout detail", tab_monitor.select_rollout, lambda rid: (rid, [0], 0)),
    ("Monitor: Stop", tab_monitor.stop, lambda rid: (rid,)),
    ("Monitor: Force stop", tab_monitor.force_kill, lambda rid: (rid,)),
    ("Evaluate: show run", tab_evaluate.show_run, lambda rid: (rid,)),
    ("Evaluate: rows slider", tab_evaluate.rows_slider, lambda rid: (rid,)),
    ("Evaluate: Evaluate", tab_evaluate.run_evaluation, lambda rid: (rid, 5, 16, NO_PROGRESS)),
    ("Evaluate: compare", tab_evaluate.compare, lambda rid: (rid, "base", "final", COMPARE_FILTERS[0])),
    ("Evaluate: chat", tab_evaluate.chat, lambda rid: (rid, "final", "hi", [], [], 0.7, 16)),
    ("Runs: open in Monitor", tab_runs.open_in, lambda rid: ("monitor", rid)),
    ("Runs: Resume", tab_runs.resume, lambda rid: (rid,)),
    ("Runs: Delete", tab_runs.delete, lambda rid: (rid,)),
    ("Runs: config diff", tab_runs.config_diff, lambda rid: (["bob-run", rid],)),
    ("Runs: compare curves", tab_runs.compare, lambda rid: (["bob-run", rid], "reward", 0.0)),
    ("Runs: adapter download", tab_runs.export_adapter, lambda rid: (rid,)),
    ("Runs: bundle download", tab_runs.export_bundle, lambda rid: (rid,)),
    ("Runs: merged model", tab_runs.export_merged, lambda rid: (rid, NO_PROGRESS)),
    ("Runs: GGUF", tab_runs.make_gguf, lambda rid: (rid, "q8_0", NO_PROGRESS)),
    ("Runs: push to Hub", tab_runs.push, lambda rid: (rid, "me/x", "hf_" + "x" * 24, "adapter", True)),
    ("Queue: move", queue_view.step, lambda rid: (rid, -1)),
    ("Queue: cancel", queue_view.cancel_run, lambda rid: (rid,)),
]


@pytest.mark.parametrize("label, fn, args", REFUSING, ids=[r[0] for r in REFUSING])
def test_another_users_run_is_refused_in_words_and_left_alone(klass, label, fn, args):
    ctx, alice, proc, _upload = klass
    before = alice.read_status()
    with pytest.warns(UserWarning) as said:
        out = as_user("bob", fn, ctx, *args(alice.id))
    assert out == gr.skip()
    text = " ".join(str(w.message) for w in said)
    assert "alice-run belongs to another user" in text and "Pick one of your own runs" in text and MARK not in text
    untouched(alice, proc, before)


# (label, handler, arguments after ctx): handlers that draw the page from a run id; bob must not see alice's run.
SHOWING = [
    ("Monitor: draw", tab_monitor.render, lambda rid: (rid, 0.6, False, True, *NO_FILTER)),
    ("Monitor: timer", tab_monitor.tick, lambda rid: (rid, 0.6, False, True, None, *NO_FILTER)),
    ("Monitor: attach", tab_monitor.attach, lambda rid: (rid,)),
    ("Evaluate: view", tab_evaluate.view, lambda rid: (rid,)),
    ("Evaluate: attach", tab_evaluate.attach_view, lambda rid: (rid,)),
    ("Evaluate: timer", tab_evaluate.tick, lambda rid: (rid, None)),
    ("Runs: list", tab_runs.shown, lambda rid: (rid,)),
]


@pytest.mark.parametrize("label, fn, args", SHOWING, ids=[s[0] for s in SHOWING])
def test_pages_drawn_for_bob_never_show_alices_run(klass, label, fn, args):
    ctx, alice, proc, _upload = klass
    before = alice.read_status()
    out = as_user("bob", fn, ctx, *args(alice.id))
    shown = str(out)
    assert MARK not in shown and "old-run" not in shown
    assert "alice-run" not in shown or "alice-run belongs to another user" in shown  # named only to refuse it
    untouched(alice, proc, before)


def test_monitor_says_whose_run_it_is(klass):
    ctx, alice, _proc, _upload = klass
    assert "belongs to another user" in str(as_user("bob", tab_monitor.render, ctx, alice.id, 0.6, False, True,
                                                    *NO_FILTER))


def test_lists_are_per_user_teacher_sees_all_and_unowned_runs_only_teachers(klass):
    ctx, alice, _proc, _upload = klass
    ids = lambda user: [st["id"] for st in ctx.list_runs(user)]  # noqa: E731
    assert ids("bob") == ["bob-run"] and ids("alice") == ["alice-run"]
    assert sorted(ids("teach")) == ["alice-run", "bob-run", "old-run"]
    assert ctx.is_teacher("teach") and not ctx.is_teacher("bob")
    assert ctx.open_run(alice.id, "teach").id == "alice-run"
    _table, seen = as_user("teach", tab_runs.runs_table, ctx)
    assert sorted(seen) == ["alice-run", "bob-run", "old-run"]
    assert as_user("bob", tab_runs.runs_table, ctx)[1] == ["bob-run"]
    assert ctx.list_runs(None) == []  # auth on, nobody signed in: nothing
    with pytest.raises(Exception, match="needs a signed-in user"):
        ctx.open_run("bob-run", None)


def test_teacher_can_stop_a_students_run(klass):
    ctx, alice, _proc, _upload = klass
    as_user("teach", tab_monitor.stop, ctx, alice.id)
    assert alice.stop_path.exists() and "stop_requested" in alice.read_status()


def test_without_auth_nothing_is_filtered(klass):
    ctx, alice, _proc, _upload = klass
    open_ctx = AppContext(ctx.runs_dir)  # the same folder, the app started without --auth
    assert sorted(st["id"] for st in open_ctx.list_runs()) == ["alice-run", "bob-run", "old-run"]
    # A request without a user (no auth), or even with one, changes nothing when auth is off.
    assert as_user(None, tab_runs.runs_table, open_ctx)[1] == as_user("bob", tab_runs.runs_table, open_ctx)[1]
    assert open_ctx.open_run("old-run").id == "old-run" and open_ctx.uploads_for() == open_ctx.uploads
    open_ctx.check_path(alice.config_path)  # no owner rules without auth


def test_paths_in_another_users_uploads_or_runs_are_refused(klass, tmp_path):
    ctx, alice, _proc, upload = klass
    project = new_project()
    for path in (upload, alice.path / "adapter", alice.config_path, ctx.uploads / "x.jsonl", ctx.runs_dir / "_drafts"):
        with pytest.warns(UserWarning, match="another user's part of the runs folder"):
            assert as_user("bob", tab_data.use_typed_source, ctx, project, str(path)) == gr.skip()
    ctx.check_path(upload, "alice")  # her own upload, her own run, a teacher, a path outside runs/: allowed
    ctx.check_path(alice.path / "adapter", "alice")
    ctx.check_path(upload, "teach")
    ctx.check_path(tmp_path / "elsewhere.jsonl", "bob")
    assert ctx.uploads_for("bob") == ctx.uploads / "u-bob" and ctx.uploads_for("../x").parent == ctx.uploads


def test_uploads_land_in_the_users_own_folder(klass, tmp_path):
    ctx, _alice, _proc, _upload = klass
    src = tmp_path / "mine.jsonl"
    src.write_text('{"prompt": "1+1", "completion": "2"}\n')
    project = as_user("bob", tab_data.upload_data, ctx, new_project(), str(src))[0]
    assert project["data"]["path"].startswith(str(ctx.uploads / "u-bob"))


def test_launch_records_the_owner_and_refuses_another_users_model_folder(klass, monkeypatch):
    from finetuner.runs import cancel, queue
    from tests.test_ui_train import checked_demo, values

    ctx, alice, _proc, _upload = klass
    project = checked_demo()
    theirs = values(project, **{"model.name": str(alice.path / "adapter")})
    out = as_user("bob", tab_train.launch, ctx, project, *theirs)
    assert "another user's part of the runs folder" in out[2]
    assert "another user's part of the runs folder" in as_user("bob", tab_train.measure_step, ctx, project, *theirs)
    assert sorted(p.name for p in ctx.runs_dir.iterdir() if not p.name.startswith("_")) == \
        ["alice-run", "bob-run", "old-run"]  # nothing started
    monkeypatch.setattr(queue, "gpu_count", lambda: 0)  # one slot, held by alice's run: bob's waits, no process
    run_id, _tabs, _msg = as_user("bob", tab_train.launch, ctx, project,
                                  *values(project, method="sft", **{"sft.max_steps": 2, "name": "bob-launch"}))
    try:
        assert RunFolder(ctx.runs_dir / run_id).read_status()["owner"] == "bob"
        assert run_id in [st["id"] for st in ctx.list_runs("bob")]
        assert run_id not in [st["id"] for st in ctx.list_runs("alice")]
    finally:
        cancel(ctx.runs_dir, run_id)


# ------------------------------------------------------------------ the real app


def test_real_app_signed_in_users_get_their_own_runs_and_no_file_urls(klass):
    """The app as `python app.py --auth FILE` serves it: Gradio checks the password with Accounts.check,
    injects the gr.Request, and the user it names reaches the handler."""
    from gradio_client import Client

    from finetuner.ui import build_app, launch_kwargs
    from tests.browser import free_port

    ctx, alice, _proc, _upload = klass
    accounts = app.Accounts({"alice": "a-pw", "bob": "b-pw", "teach": "t-pw"}, frozenset({"teach"}))
    demo = build_app(ctx)
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=accounts.check, prevent_thread_lock=True,
                quiet=True, **app.class_kwargs(ctx, accounts, launch_kwargs(ctx)))
    url = f"http://127.0.0.1:{port}/"
    try:
        # The Runs tab's Refresh button: `shown` with the selected-run dropdown as its only input.
        api = next(f.api_name for f in demo.fns.values() if f.name == "shown" and
                   [type(c).__name__ for c in f.inputs] == ["Dropdown"])
        lists = {user: str(Client(url, auth=(user, pw), verbose=False).predict(None, api_name=f"/{api}"))
                 for user, pw in (("bob", "b-pw"), ("alice", "a-pw"), ("teach", "t-pw"))}
        assert "bob-run" in lists["bob"] and "alice-run" not in lists["bob"] and "old-run" not in lists["bob"]
        assert "alice-run" in lists["alice"] and "bob-run" not in lists["alice"]
        assert all(rid in lists["teach"] for rid in ("alice-run", "bob-run", "old-run"))
        with pytest.raises(Exception):
            Client(url, auth=("bob", "a-pw"), verbose=False)  # a wrong password is refused at login
        import httpx

        with httpx.Client(base_url=url, timeout=30) as web:
            assert web.post("login", data={"username": "bob", "password": "b-pw"}).status_code == 200
            # A signed-in user who types the URL of a file in another's run gets nothing from Gradio.
            assert web.get(f"gradio_api/file={alice.config_path}").status_code == 403
    finally:
        demo.close()


def test_a_grader_or_tool_file_in_another_users_uploads_is_refused_at_launch(tmp_path):
    """check_config_paths covers what the run would read besides model and data: Python grader files and tool
    files / tables (the Train tab's Launch and the Lab both call it)."""
    from finetuner.config import from_dict
    from finetuner.ui.context import AppContext, NotYours, current_user

    ctx = AppContext(tmp_path / "runs", auth=True, teachers={"t"})
    theirs = ctx.uploads_for("alice") / "secret.py"
    theirs.write_text("def grade(sample, item):\n    return 1.0\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "completion": "c"}\n' * 4)
    cfg = from_dict({"name": "r", "method": "sft", "model": {"name": "tiny"}, "data": {"train": str(rows)},
                     "graders": [{"name": "g", "type": "python", "file": str(theirs)}]})
    token = current_user.set("bob")
    try:
        with pytest.raises(NotYours):
            ctx.check_config_paths(cfg)
    finally:
        current_user.reset(token)
    token = current_user.set("alice")
    try:
        ctx.check_config_paths(cfg)  # her own file: fine
    finally:
        current_user.reset(token)
