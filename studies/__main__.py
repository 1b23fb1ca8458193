"""`python -m studies COMMAND ...`: the diffdict command line, also under torchrun.

    torchrun --nproc-per-node 2 -m studies harvest CONFIG
"""
import sys

from dictionaries import distributed
from studies.cli import main

try:
    code = main()
finally:
    distributed.shutdown()  # a clean exit of the process group, when torchrun started one
sys.exit(code)
