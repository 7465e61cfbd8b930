# exec: build
# A user namespace gives capabilities inside it, but the mounts inherited are locked read-only.
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS
    if libc.mount(None, b"/", None, 32 | 4096, None) == 0:
        open("@@MARKER@@", "w").write("escaped")
raise PermissionError("no way to write outside")
