import sys

from dpclab.lab.speed.cli import main

sys.exit(main())
