"""`python -m studies COMMAND ...`: the diffdict command line, also under torchrun.

    torchrun --nproc-per-node 2 -m studies harvest CONFIG
"""
import sys

from dictionaries import distributed
from studies.cli import main

try:
    code = main()
except BaseException:
    distributed.shutdown(wait_for_peers=False)
    raise
distributed.shutdown(wait_for_peers=code == 0)  # a clean exit of the process group under torchrun
sys.exit(code)
