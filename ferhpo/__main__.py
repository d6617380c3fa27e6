import sys

from ferhpo.cli import main

sys.exit(main())
