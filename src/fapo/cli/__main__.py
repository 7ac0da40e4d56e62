import sys

from fapo.cli import main

if __name__ == "__main__":  # a spawned worker process re-imports this module as __mp_main__
    sys.exit(main())
