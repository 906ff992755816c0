"""One background event loop for all LLM-judge HTTP traffic.

HTTP clients (httpx inside `openai.AsyncOpenAI`) belong to the event loop they were first used on. Graders
are called from TRL's own daemon loop, from plain threads (dry run, UI) and from `asyncio.run` in tests,
so every judge request is sent from this one long-lived loop instead, and callers wait on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(_loop)
                _loop.call_soon(ready.set)
                _loop.run_forever()

            _thread = threading.Thread(target=run, name="grader-judges", daemon=True)
            _thread.start()
            ready.wait()
        return _loop


def submit(coro) -> concurrent.futures.Future:
    """Schedule `coro` on the judges' loop from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run(coro, timeout: float | None = None):
    """Block the calling thread until `coro` finishes on the judges' loop."""
    if _thread is not None and threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("graders.aio.run() called from the judges' own loop; await the coroutine instead")
    return submit(coro).result(timeout)


async def run_async(coro):
    """Await `coro` on the judges' loop from whatever loop the caller runs in."""
    if asyncio.get_running_loop() is _loop:
        return await coro
    return await asyncio.wrap_future(submit(coro))
