"""Process titles, so `ps` tells the master, the arbiters and the workers apart:
`runprefork master [testproject]`, `runprefork arbiter [testproject] generation 2`,
`runprefork worker 2 [testproject]` (setproctitle: a dependency, wheels for every
platform Django supports)."""

from setproctitle import setproctitle


def set_title(title):
    setproctitle(title)
