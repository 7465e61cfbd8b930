# exec: ok
# Signal everything this process may: the parent (other pid namespace, root) must not get it.
import os
import signal

for pid in (@@PID@@, 1, os.getppid()):
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        pass
