"""django-prefork: `manage.py runprefork`, an arbiter forking sync workers."""

__version__ = "0.1.0"
