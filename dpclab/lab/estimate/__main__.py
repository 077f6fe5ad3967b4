import sys

from dpclab.lab.estimate.cli import main

sys.exit(main())
