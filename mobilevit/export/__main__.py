import sys

from mobilevit.export.cli import main

sys.exit(main())
