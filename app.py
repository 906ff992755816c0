"""Finetuner's web app: `python app.py [--host H] [--port P] [--auth user:pass] [--share] [--runs-dir DIR]`.

Thin on purpose: parse the flags, refuse unsafe exposure, build the UI (finetuner/ui), launch. Binds
127.0.0.1 unless told otherwise; a non-local host or a public share link needs --auth.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("FINETUNER_ONLINE") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Finetuner: no-code SFT and RFT in the browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", help="user:password required to open the app (needed off this machine)")
    p.add_argument("--share", action="store_true", help="also open a public link (needs --auth)")
    p.add_argument("--runs-dir", default="runs", help="folder for run folders and uploads (default runs)")
    return p.parse_args(argv)


def check_exposure(args) -> tuple[str, str] | None:
    """The (user, password) pair, or None; exits with a message when the app would be exposed unprotected."""
    auth = None
    if args.auth:
        if ":" not in args.auth or not all(args.auth.split(":", 1)):
            sys.exit("error: --auth takes user:password, e.g. --auth teacher:s3cret")
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

    ctx = AppContext(args.runs_dir)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=8)
    demo.launch(server_name=args.host, server_port=args.port, auth=auth, share=args.share,
                **launch_kwargs(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
