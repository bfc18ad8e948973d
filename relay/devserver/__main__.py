"""`python -m relay.devserver`: serve until SIGINT or SIGTERM."""

import sys

from relay.devserver.server import main

sys.exit(main())
