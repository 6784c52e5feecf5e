"""``python -m bench.peers NAME COUNT WORKDIR``: one peer run (see bench.peers.driver)."""

import sys

from bench.peers.driver import main

sys.exit(main(sys.argv[1:]))
