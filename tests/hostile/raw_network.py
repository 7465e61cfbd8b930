# exec: build
import socket

connected = []
for host in (("127.0.0.1", @@PORT@@), ("1.1.1.1", 53)):
    try:
        socket.create_connection(host, timeout=2).sendall(b"escaped")
        connected.append(host)
    except OSError:
        pass
if not connected:
    raise ConnectionError("no connection")
