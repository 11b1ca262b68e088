import sys

from maq.cli import main

sys.exit(main())
