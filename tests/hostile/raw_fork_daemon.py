# exec: ok
# A child that outlives the task: it must be gone after the task (and never write the marker).
import os
import time

if os.fork() == 0:
    os.setsid()
    time.sleep(3)
    try:
        open("@@MARKER@@", "w").write("escaped")
    finally:
        os._exit(0)
