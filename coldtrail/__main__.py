import sys

from coldtrail.cli import main

sys.exit(main())
