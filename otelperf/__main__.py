import sys

from otelperf.cli import main

sys.exit(main())
