"""Convert HF <-> jaxslm checkpoints: `python tools/convert_hf/convert.py import-hf|export-hf`."""

import sys

from jaxslm.hf.cli import main

if __name__ == "__main__":
    sys.exit(main())
