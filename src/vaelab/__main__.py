import sys

from vaelab.cli import main

if __name__ == "__main__":  # not when a spawned job process imports it (vaelab.jobs)
    sys.exit(main())
