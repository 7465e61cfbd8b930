"""Which isolation layer stops cuInit (diagnosis for the GPU sandbox); run as root on a GPU host."""
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cenas_jax.candidates import isolation as iso


def cuinit():
    lib = ctypes.CDLL("libcuda.so.1")
    return lib.cuInit(0)

def trial(name, fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fn()
            res = str(cuinit())
        except Exception as e:
            res = f"exc {type(e).__name__}: {e}"
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    print(f"{name:<28} cuInit -> {out}", flush=True)

def in_pid_ns():
    iso.unshare(iso.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        _, st = os.waitpid(pid, 0)
        os._exit(0)

def fresh_proc():
    iso.unshare(iso.CLONE_NEWNS | iso.CLONE_NEWPID)
    iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        os._exit(0)
    iso.mount_fresh_proc()

def shm():
    iso.unshare(iso.CLONE_NEWNS)
    iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE)
    iso.mount("tmpfs", "/dev/shm", "tmpfs", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC, "mode=1777,size=64m")

def ro():
    iso.unshare(iso.CLONE_NEWNS)
    iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE)
    iso.make_tree_readonly("/")

def ro_tmpfs():
    ro()
    for t in ("/tmp", "/dev/shm"):
        iso.mount("tmpfs", t, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV, "mode=1777,size=64m")

def ro_dev_rw():
    ro_tmpfs()
    iso.mount(None, "/dev", None, iso.MS_REMOUNT | iso.MS_BIND, None)

def fresh_proc_info():
    fresh_proc()
    print("  /proc/driver/nvidia:", os.listdir("/proc/driver/nvidia") if os.path.isdir("/proc/driver/nvidia") else "absent",
          "self->", os.readlink("/proc/self"), flush=True)

def accel():
    iso.unshare(iso.CLONE_NEWNS | iso.CLONE_NEWNET | iso.CLONE_NEWIPC | iso.CLONE_NEWUTS)
    iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE)
    iso.make_tree_readonly("/", keep=iso.ACCELERATOR_WRITABLE)
    for t in ("/tmp", "/dev/shm"):
        iso.mount("tmpfs", t, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV, "mode=1777,size=64m")

for keep in (("/dev",), ("/proc",), ("/sys",)):
    trial(f"ro keep {keep}", lambda keep=keep: (iso.unshare(iso.CLONE_NEWNS), iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE), iso.make_tree_readonly("/", keep=keep)))
trial("accelerator plan", accel)
