"""Finetuner's web app: `python app.py [--host H] [--port P] [--auth user:pass|FILE] [--share] [--runs-dir DIR]`.

Thin on purpose: parse the flags, refuse unsafe exposure, build the UI (finetuner/ui), launch. Binds
127.0.0.1 unless told otherwise; a non-local host or a public share link needs --auth. `--auth FILE` holds
one account a line (a class on one machine): each user then sees only their own runs and uploads, a
`user:password:teacher` line marks an account that sees everyone's (README, "A class on one machine").
"""

from __future__ import annotations

import argparse
import hmac
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("FINETUNER_ONLINE") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Finetuner: no-code SFT and RFT in the browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", help="user:password required to open the app (needed off this machine), or a file "
                   "of accounts, one `user:password` a line (`user:password:teacher` for a teacher, who sees "
                   "every user's runs; blank lines and # comments skipped): each user sees only their own runs"),
    p.add_argument("--share", action="store_true", help="also open a public link (needs --auth)")
    p.add_argument("--runs-dir", default="runs", help="folder for run folders and uploads (default runs)")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Accounts:
    """The accounts of --auth FILE: {user: password} and the teachers' names."""

    users: dict
    teachers: frozenset

    def check(self, username: str, password: str) -> bool:
        """Gradio's auth callable. compare_digest, and a comparison even for an unknown name, so the time
        taken does not tell which names exist or how much of a password was right."""
        expected = self.users.get(username)
        ok = hmac.compare_digest(str(password).encode(), (expected if expected is not None else "\0").encode())
        return ok and expected is not None


def read_accounts(path: str | Path) -> Accounts:
    """Parse an --auth file; exits naming the file and line of the first bad line."""
    users, teachers = {}, set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        sys.exit(f"error: cannot read the --auth file {path}: {err}")
    fmt = "each line is user:password, or user:password:teacher for a teacher; # starts a comment"
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        teacher = password.endswith(":teacher")
        if teacher:
            password = password[: -len(":teacher")]
        user = user.strip()
        problem = ("no colon" if not sep else "no user name" if not user else
                   "a space in the user name" if any(c.isspace() for c in user) else
                   "an empty password" if not password else
                   f"user {user} is already on line {users[user][1]}" if user in users else "")
        if problem:
            sys.exit(f"error: {path} line {n}: {problem} ({fmt}).")
        users[user] = (password, n)
        if teacher:
            teachers.add(user)
    if not users:
        sys.exit(f"error: the --auth file {path} holds no accounts ({fmt}).")
    return Accounts({u: pw for u, (pw, _n) in users.items()}, frozenset(teachers))


def as_accounts(auth) -> Accounts | None:
    """check_exposure's answer as accounts: one user:password pair is one account that sees everything
    (a teacher), as before --auth FILE existed."""
    if auth is None or isinstance(auth, Accounts):
        return auth
    return Accounts({auth[0]: auth[1]}, frozenset({auth[0]}))


def check_exposure(args) -> tuple[str, str] | Accounts | None:
    """The (user, password) pair, the Accounts of an --auth file, or None; exits with a message when the app
    would be exposed unprotected or the --auth value is unusable."""
    auth = None
    if args.auth and os.path.isfile(args.auth):
        auth = read_accounts(args.auth)
    elif args.auth:
        if ":" not in args.auth or not all(args.auth.split(":", 1)):
            sys.exit(f"error: --auth takes user:password, e.g. --auth teacher:s3cret, or the path of a file of "
                     f"user:password lines; {args.auth!r} is neither (no such file).")
        auth = tuple(args.auth.split(":", 1))
    if (args.host not in LOCAL_HOSTS or args.share) and not auth:
        where = "a public share link" if args.share else f"host {args.host}"
        sys.exit(f"error: refusing to serve on {where} without a password: anyone who reaches it could run code "
                 f"through Python graders. Add --auth user:password, or keep the default --host 127.0.0.1.")
    return auth


def main(argv=None) -> int:
    args = parse_args(argv)
    auth = check_exposure(args)
    from finetuner.modeling.load import keep_bitsandbytes_quiet
    from finetuner.ui import build_app, launch_kwargs

    keep_bitsandbytes_quiet()  # evaluation, chat and merging import peft here; on CPU nothing needs bitsandbytes
    from finetuner.ui.context import AppContext

    accounts = as_accounts(auth)
    ctx = AppContext(args.runs_dir, auth=accounts is not None,
                     teachers=accounts.teachers if accounts else frozenset())
    kwargs = class_kwargs(ctx, accounts, launch_kwargs(ctx))
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=8)
    demo.launch(server_name=args.host, server_port=args.port, auth=accounts.check if accounts else None,
                share=args.share, **kwargs)
    return 0


def class_kwargs(ctx, accounts: Accounts | None, kwargs: dict) -> dict:
    """Launch arguments for several accounts. Gradio's file route serves anything under `allowed_paths` to
    any signed-in user who types its URL, and run ids are guessable (name-date), so with more than one
    account the runs folder is not listed: a file a handler returns (a download) is still copied into
    Gradio's cache (allowed from the working folder or the temp folder) and served from there under a
    content hash. That needs the runs folder inside one of the two, which this checks."""
    if accounts is None or len(accounts.users) < 2:
        return kwargs
    runs = Path(ctx.runs_dir).resolve()
    homes = [Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]
    if not any(runs.is_relative_to(home) for home in homes):
        sys.exit(f"error: with several --auth accounts the runs folder must be inside the current folder "
                 f"({homes[0]}) or the temp folder, so that downloads reach each user only through Gradio's "
                 f"cache; {runs} is not. Start the app from its parent folder, or pick another --runs-dir.")
    return {**kwargs, "allowed_paths": []}


if __name__ == "__main__":
    sys.exit(main())
