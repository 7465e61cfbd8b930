# exec: build
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
# MS_REMOUNT | MS_BIND without MS_RDONLY: try to make / writable again.
if libc.mount(None, b"/", None, 32 | 4096, None) != 0:
    raise PermissionError(ctypes.get_errno(), "remount refused")
open("@@MARKER@@", "w").write("escaped")
