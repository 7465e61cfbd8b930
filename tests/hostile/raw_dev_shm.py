# exec: ok
# /dev/shm is a private tmpfs: the write works inside and nothing appears on the host.
with open("/dev/shm/@@SHM_NAME@@", "w") as f:
    f.write("inside only")
