# exec: build
# No policy, no restricted builtins: only the OS boundary. Every write outside the private tmpfs fails.
wrote = []
for path in ("@@MARKER@@", "/etc/cenas-escaped", "/usr/cenas-escaped"):
    try:
        with open(path, "w") as f:
            f.write("escaped")
        wrote.append(path)
    except OSError:
        pass
if not wrote:
    raise PermissionError("every write was refused")
