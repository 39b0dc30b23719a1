import sys

from openformers.cli.main import main

sys.exit(main())
