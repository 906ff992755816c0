"""`python -m finetuner <verb>`: see finetuner/cli.py."""

import sys

from finetuner.cli import main

sys.exit(main())
