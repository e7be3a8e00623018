"""A WSGI module that cannot be imported: the boot-failure tests point WSGI_APPLICATION here."""

raise RuntimeError("fixture app is broken on purpose")
