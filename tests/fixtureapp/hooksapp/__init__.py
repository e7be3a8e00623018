"""An app whose AppConfig.ready connects a receiver to every hook, as a project would.

Each receiver appends one JSON line to the file named by PREFORK_TEST_HOOKS_LOG: the
hook's name, the pid of the process it ran in, and the arguments it was sent.
"""
