"""An app that takes PREFORK_TEST_BOOT_SECONDS to load: the time /healthz says 503."""

import os
import time

from .rawapps import application as _application

time.sleep(float(os.environ.get("PREFORK_TEST_BOOT_SECONDS", "0")))
application = _application
