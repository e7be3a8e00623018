"""Process titles (`runprefork worker 2 [testproject]`) when setproctitle is installed."""

try:
    from setproctitle import setproctitle
except ImportError:  # optional: ps shows the python command line instead
    setproctitle = None


def set_title(title):
    if setproctitle is not None:
        setproctitle(title)
