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
# A clean exit of the process group under torchrun; a rank that ended well fails too when a peer failed.
if not distributed.shutdown(wait_for_peers=code == 0) and code == 0:
    code = 1
sys.exit(code)
