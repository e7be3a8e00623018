import os

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
LOADED_BY = os.getpid()  # under --preload the arbiter, else each worker
