"""`python -m diffdict COMMAND ...`: the diffdict command line, also under torchrun.

torchrun --nproc-per-node 2 -m diffdict harvest CONFIG
"""

import sys

from diffdict.studies.cli import main


def _shutdown(wait_for_peers: bool) -> bool:
    # A process group is only ever joined through diffdict.dictionaries.distributed; when no command
    # imported it there is nothing to tear down, and `--help` need not import torch.
    if "diffdict.dictionaries.distributed" not in sys.modules:
        return True
    from diffdict.dictionaries import distributed

    return distributed.shutdown(wait_for_peers=wait_for_peers)


try:
    code = main()
except BaseException:
    _shutdown(wait_for_peers=False)
    raise
# A clean exit of the process group under torchrun; a rank that ended well fails too when a peer failed.
if not _shutdown(wait_for_peers=code == 0) and code == 0:
    code = 1
sys.exit(code)
