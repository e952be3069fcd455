import sys

from pettingllms.cli import main

sys.exit(main())
