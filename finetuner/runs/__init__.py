"""The run folder (DESIGN.md joint 2) and the launch of training as a child process (joint 4).

`runs/<run-id>/` is the only channel between the training process and the UI: `config.yaml`,
`status.json`, `metrics.jsonl`, `samples.jsonl`, `log.txt`, `checkpoints/`, `adapter/`, `eval/`.
Writers append and flush each line as it happens; `read_jsonl` skips a half-written last line and can
resume from a byte offset so a reader tails a long file instead of re-reading it. The two files that grow
with every step are rotated into numbered segments (`metrics.1.jsonl`, ...) so a long run cannot fill the
disk; `JsonlTail` reads segments and live file as one continuous stream (finetuner/runs/jsonl_log.py).

The folder itself is `runs.folder`, the child process `runs.process`, the queue `runs.queue`; this package re-exports what callers use.
"""

from finetuner.runs.folder import (  # noqa: F401 - the package's interface
    ACTIVE_STATES, FINAL_STATES, STOP_FILE, RunFolder, checkpoint_complete, new_run, open_run, safe_name)
from finetuner.runs.jsonl_log import (  # noqa: F401 - part of this package's interface
    KEEP_FULL, METRICS_MAX_BYTES, METRICS_SEGMENT_BYTES, SAMPLES_KEEP, SAMPLES_SEGMENT_BYTES, JsonlTail,
    compact_metrics, read_jsonl, rotate, segments, tail_jsonl)
from finetuner.runs.process import (  # noqa: F401 - the package's interface
    LOW_DISK_BYTES, QUEUED_TIMEOUT_S, active_run, force_stop, launch, launch_lock, list_runs, pid_alive,
    refresh_state, refuse_if_busy, request_stop, start_child, train_command, wait)
from finetuner.runs.queue import (  # noqa: F401 - the package's interface
    QUEUE_FILE, WAITING, advance, cancel, device_slots, enqueue, move, position, waiting)
