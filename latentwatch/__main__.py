import sys

from latentwatch.cli.main import main

sys.exit(main())
