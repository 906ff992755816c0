"""`python -m finetuner <verb>`: see finetuner/cli.py."""

import sys

from .cli import main

sys.exit(main())
