import sys

from dpclab.lab.cli import main

sys.exit(main())
