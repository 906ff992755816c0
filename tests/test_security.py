"""Security: local-only serving unless protected, uploads and run ids kept inside the runs folder, secrets never
written anywhere, and the Python sandbox holding against hostile graders sent through the Graders tab."""

import json
import os
import socket
import uuid
import zipfile
from pathlib import Path

import pytest

import app
from finetuner.runs import export
from graders.errors import DataError, FinetunerError, RunError
from finetuner.runs import RunFolder, list_runs, open_run
from finetuner.ui import grader_forms as gf
from finetuner.ui import tab_evaluate, tab_graders, tab_monitor, tab_runs
from finetuner.ui.context import AppContext, new_project
from finetuner.ui.data_view import save_upload
from finetuner.ui.welcome import demo_project

SECRET = "sk-test-SECRET-1234"
HUB_TOKEN = "hf_testSECRETtoken5678abcdefgh"


# ------------------------------------------------------------------ binding


def exposure(*argv):
    return app.check_exposure(app.parse_args(list(argv)))


def test_default_binds_this_machine_only():
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and not args.share and args.auth is None
    assert app.check_exposure(args) is None
    assert exposure("--host", "localhost") is None and exposure("--host", "::1") is None


@pytest.mark.parametrize("argv", [["--host", "0.0.0.0"], ["--host", "0"], ["--host", "192.168.1.20"], ["--share"],
                                  ["--host", "::"], ["--share", "--host", "127.0.0.1"]])
def test_exposed_without_a_password_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        exposure(*argv)
    assert "without a password" in str(info.value.code) and "--auth user:password" in str(info.value.code)


def test_exposed_with_a_password_is_allowed_and_bad_auth_is_refused():
    assert exposure("--host", "0.0.0.0", "--auth", "teacher:s3cret") == ("teacher", "s3cret")
    assert exposure("--share", "--auth", "a:b:c") == ("a", "b:c")  # the password may hold a colon
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(SystemExit, match="--auth takes user:password"):
            exposure("--host", "0.0.0.0", "--auth", bad)


def test_refused_exposure_never_builds_or_serves_the_app(monkeypatch):
    import finetuner.ui

    monkeypatch.setattr(finetuner.ui, "build_app", lambda ctx: pytest.fail("the app was built"))
    with pytest.raises(SystemExit):
        app.main(["--host", "0.0.0.0"])


# ------------------------------------------------------------------ uploads


@pytest.mark.parametrize("name", ["x.jsonl", "...jsonl", ".hidden.jsonl", "-rf .jsonl", "a;rm -rf ~.jsonl",
                                  "evil\u202egnp.jsonl", "new\nline.jsonl", "CON.jsonl", "x" * 200 + ".jsonl",
                                  "data.jsonl.exe", "%2e%2e%2fx.jsonl"])
def test_uploaded_names_are_sanitised_into_the_uploads_folder(tmp_path, name):
    ctx = AppContext(tmp_path / "runs")
    deep = tmp_path / "client" / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "client" / name).write_text('{"text": "hi"}\n')
    src = str(deep / ".." / ".." / name)  # a path that climbs, as `../../x.jsonl` would
    stored = save_upload(src, ctx.uploads)
    assert stored.resolve().parent == ctx.uploads.resolve() and ctx.uploads.parent == ctx.runs_dir
    assert stored.read_text() == '{"text": "hi"}\n'
    assert all(c.isalnum() or c in "._-" for c in stored.name) and not stored.name.startswith(".")
    # the data extension is kept; any other is dropped (the reader sniffs the content)
    assert stored.suffix == ".jsonl" if name.endswith(".jsonl") else not stored.name.endswith(".exe")


def test_upload_paths_that_cannot_exist_get_a_message(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    for bad in ("x\x00.jsonl", str(tmp_path / "gone.jsonl"), "/etc"):
        with pytest.raises(DataError, match="did not arrive"):
            save_upload(bad, ctx.uploads)
    assert list(ctx.uploads.iterdir()) == []


def test_the_data_tab_stores_an_upload_inside_the_runs_folder(tmp_path):
    from finetuner.ui import tab_data

    ctx = AppContext(tmp_path / "runs")
    src = tmp_path / "up" / "..train.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "completion": str(i + 1)}) + "\n"
                           for i in range(5)))
    project = tab_data.upload_data(ctx, new_project(), str(src))[0]
    stored = Path(project["data"]["path"])
    assert stored.resolve().parent == ctx.uploads.resolve() and stored.name.startswith("train-")


# ------------------------------------------------------------------ run ids


@pytest.fixture
def runs(tmp_path):
    """A runs folder with one real run, and a decoy run folder outside it that no run id may reach."""
    ctx = AppContext(tmp_path / "runs")
    decoy = RunFolder(tmp_path / "decoy")
    for run in (RunFolder(ctx.runs_dir / "good"), decoy):
        run.path.mkdir()
        run.config_path.write_text("name: x\nmethod: sft\nmodel: {name: tiny}\ndata: {train: rows.jsonl}\n")
        run.write_status(state="stopped", name="x", method="sft")
    (ctx.runs_dir / "link").symlink_to(decoy.path, target_is_directory=True)
    return ctx, decoy


def bad_ids(decoy):
    return ["..", "../decoy", str(decoy.path), "link", "good/../../decoy", ".", "a\x00b", "/", "~"]


def handlers(ctx, run_id):
    quiet = lambda *a, **k: None  # noqa: E731 - a progress callback
    return {
        "runs.open_in": lambda: tab_runs.open_in(ctx, "monitor", run_id),
        "runs.resume": lambda: tab_runs.resume(ctx, run_id),
        "runs.delete": lambda: tab_runs.delete(ctx, run_id),
        "runs.export_adapter": lambda: tab_runs.export_adapter(ctx, run_id),
        "runs.export_bundle": lambda: tab_runs.export_bundle(ctx, run_id),
        "runs.export_merged": lambda: tab_runs.export_merged(ctx, run_id, quiet),
        "runs.push": lambda: tab_runs.push(ctx, run_id, "me/model", HUB_TOKEN, "adapter", True),
        "runs.compare": lambda: tab_runs.compare(ctx, ["good", run_id], "loss", 0.0),
        "monitor.stop": lambda: tab_monitor.stop(ctx, run_id),
        "monitor.force_kill": lambda: tab_monitor.force_kill(ctx, run_id),
        "evaluate.show_run": lambda: tab_evaluate.show_run(ctx, run_id),
        "evaluate.run_evaluation": lambda: tab_evaluate.run_evaluation(ctx, run_id, 2, 4, quiet),
        "evaluate.compare": lambda: tab_evaluate.compare(ctx, run_id, "base", "rft", "all"),
    }


def test_run_ids_cannot_escape_the_runs_folder(runs):
    ctx, decoy = runs
    before = decoy.status_path.read_text()
    for run_id in bad_ids(decoy):
        with pytest.raises(RunError):
            open_run(ctx.runs_dir, run_id)
        for name, call in handlers(ctx, run_id).items():
            with pytest.raises(RunError):
                call()
                pytest.fail(f"{name} accepted run id {run_id!r}")
        shown = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run_id, 0.0), force=True)
        assert "no longer exists" in shown["progress"] or "No run selected" in shown["progress"], run_id
    # the decoy outside is untouched: not deleted, not resumed or stopped, nothing exported into it
    assert decoy.status_path.read_text() == before and sorted(p.name for p in decoy.path.iterdir()) == [
        "config.yaml", "status.json", "status.lock"]
    assert "link" not in [r["id"] for r in list_runs(ctx.runs_dir)]
    assert tab_runs.open_in(ctx, "monitor", "good")[0] == "good"  # a real id still works


# ------------------------------------------------------------------ secrets


def every_text(root: Path):
    """(name, bytes) of every file under root, and of every member of every zip there."""
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        yield str(path), data
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    yield f"{path}!{member}", zf.read(member)


@pytest.mark.slow
def test_secrets_never_reach_run_files_logs_samples_or_exports(tmp_path, monkeypatch):
    from finetuner.config import from_dict
    from finetuner.runs import launch, wait
    from graders.testing import Reply, ScriptedJudgeServer

    monkeypatch.setenv("FT_JUDGE_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", HUB_TOKEN)
    server = ScriptedJudgeServer()

    def script(body, n):
        if "Cue: echo" in body["messages"][-1]["content"]:  # a server that echoes the key back in its error
            return Reply(f"invalid key: {server.headers[n].get('authorization')}", status=401)
        return Reply('{"result": 0.5}')

    server.script = script
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "answer": str(i + 1), "cue": cue}) + "\n"
                            for i, cue in enumerate(["ok", "echo", "ok", "echo"])))
    envdump = {"name": "envdump", "type": "python",
               "source": "import os\ndef grade(sample, item):\n    print(dict(os.environ))\n"
                         f"    return float(any('SECRET' in v for v in os.environ.values()))\n"}
    with server.start():
        judge = {"name": "judge", "type": "score_model", "model": "m", "base_url": server.base_url,
                 "api_key_env": "FT_JUDGE_KEY", "max_retries": 0, "input": "Cue: {{item.cue}} {{sample.output_text}}"}
        cfg = from_dict({"name": "secrets", "method": "rft", "model": {"name": "tiny", "max_length": 64},
                         "data": {"train": str(rows), "eval_fraction": 0}, "graders": [judge, envdump],
                         "rft": {"max_steps": 1, "batch_size": 8, "num_generations": 2, "max_completion_length": 8,
                                 "max_grader_error_rate": 1.0}})
        run = launch(cfg, tmp_path / "runs")
        status = wait(run, timeout=300)
        sent = [h.get("authorization") for h in server.headers]
    assert status["state"] == "finished", (status.get("error"), run.log_path.read_text()[-2000:])
    assert sent and all(h == f"Bearer {SECRET}" for h in sent)  # the key was really used, from the environment
    samples = run.samples()
    echoed = [s["errors"]["judge"]["message"] for s in samples if "judge" in s["errors"]]
    assert echoed and all("HTTP 401" in m and "***" in m for m in echoed)
    assert all(s["scores"]["envdump"] == 0.0 and "PATH" in s["logs"]["envdump"] for s in samples)  # ran, saw none

    export.export_bundle(run)
    export.export_adapter(run)
    with pytest.raises(FinetunerError) as info:  # offline: the push fails, and says so without the token
        export.push_to_hub(run, "me/model", HUB_TOKEN)
    assert HUB_TOKEN not in str(info.value)
    assert run.log_path.stat().st_size > 0 and (run.path / "export").is_dir()
    for name, data in every_text(run.path):
        for secret in (SECRET, HUB_TOKEN):
            assert secret.encode() not in data, f"{secret} found in {name}"
    assert "FT_JUDGE_KEY" in run.config_path.read_text()  # only the variable's name is kept


def test_a_key_pasted_in_the_ui_is_refused_and_never_kept():
    system, user = gf.rubric_messages("correctness")
    fields = ["score_model", "judge", 1, system, user, "http://127.0.0.1:9/v1", "m", SECRET, 0, 1, "", ""]
    project, _t, _y, _p, message = tab_graders.add_judge(new_project(), *fields)
    assert message.startswith("❌") and "NAME of an environment variable" in message and SECRET not in message
    for text in (f"- {{name: j, type: score_model, model: m, input: x, api_key: {SECRET}}}\n",
                 f"- {{name: j, type: score_model, model: m, input: x, api_key_env: {SECRET}}}\n",
                 "- {name: j, type: score_model, model: m, input: x, api_key_env: hf_abcdefghijklmnopqrstu}\n"):
        out = tab_graders.apply_yaml(new_project(), text)
        assert out[4].startswith("❌") and SECRET not in out[4] and "hf_abc" not in out[4], out[4]
    from graders import build_graders
    with pytest.raises(FinetunerError, match="not the key itself"):
        build_graders([{"name": "j", "type": "score_model", "model": "m", "input": "x", "api_key_env": SECRET}])


# ------------------------------------------------------------------ the sandbox, from the Graders tab


@pytest.fixture(scope="module")
def listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s


def hostile(listener, marker):
    port = listener.getsockname()[1]
    return [
        ("loop", "while True:\n        pass", "timeout", "longer than 1 s"),
        ("alloc", "x = bytearray(10 ** 11)\n    return 1.0", "runtime_error", "out of memory"),
        ("network", f"import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return 1.0",
         "runtime_error", "not allowed in the grader sandbox"),
        ("raw_socket", f"import socket\n    socket.socket().connect(('127.0.0.1', {port}))\n    return 1.0",
         "runtime_error", "network access is not allowed"),
        ("ssh", "return len(open(os.path.expanduser('~/.ssh/id_rsa')).read())", "runtime_error",
         "does not allow reading"),
        ("write", f"open({marker + '-w'!r}, 'w').write('x')\n    return 1.0", "runtime_error",
         "only allows writing inside"),
        ("fork", "while True:\n        os.fork()", "runtime_error", "not allowed"),
        ("subprocess", f"import subprocess\n    subprocess.run(['touch', {marker + '-s'!r}])\n    return 1.0",
         "runtime_error", "not allowed"),
        ("kill_app", "import signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1.0", "runtime_error",
         "other processes"),
    ]


def dry_run(graders):
    project = demo_project()
    project["config"]["method"] = "rft"
    project["graders"] = graders
    _p, summary, _w, _f, table, _r = tab_graders.test_on_data(project, 2, tab_graders.COLUMN, "completion", 2)
    rows = table["value"]
    return summary, [dict(zip(rows["headers"], r)) for r in rows["data"]]


@pytest.mark.parametrize("case", range(9), ids=lambda i: ["loop", "alloc", "network", "raw_socket", "ssh", "write",
                                                          "fork", "subprocess", "kill_app"][i])
def test_hostile_python_graders_are_stopped_per_row_from_the_graders_tab(listener, case):
    marker = f"/tmp/finetuner-escape-{uuid.uuid4().hex}"
    name, body, kind, needle = hostile(listener, marker)[case]
    source = f"import os\ndef grade(sample, item):\n    {body}\n"
    project, _t, _y, _p, message = tab_graders.add_python(new_project(), name, 1, source, 1)
    assert message.startswith("✅"), message  # it is valid code: only running it is refused
    summary, rows = dry_run(project["graders"])
    assert "error rate 100%" in summary and len(rows) == 2
    for row in rows:
        assert row[name] == "ERR" and f"{name}: [{kind}]" in row["errors"] and needle in row["errors"], row
    assert not os.path.exists(marker + "-w") and not os.path.exists(marker + "-s")
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    # the app is unharmed: this process is alive (it ran the line above) and the tab still grades
    _summary, good = dry_run([{"name": "ok", "type": "python", "source": "def grade(s, i):\n    return 0.25\n"}])
    assert [r["ok"] for r in good] == [0.25, 0.25]


@pytest.mark.parametrize("spec, field", [
    ({"api_key_env": SECRET}, "api_key_env"),
    ({"api_key": "whatever-key"}, "api_key"),
])
def test_a_key_in_a_run_file_is_refused_before_anything_is_saved(tmp_path, spec, field):
    # The CLI and YAML path: validation refuses before the config is copied into a run folder.
    from finetuner.config import from_dict
    from graders.errors import ConfigError

    judge = {"name": "j", "type": "score_model", "model": "m", "input": "{{sample.output_text}}", **spec}
    with pytest.raises(ConfigError, match=field) as info:
        from_dict({"method": "rft", "data": {"train": "x.jsonl"}, "graders": [judge]})
    assert SECRET not in str(info.value)
