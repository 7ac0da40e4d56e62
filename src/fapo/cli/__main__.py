import sys

from fapo.cli import main

sys.exit(main())
