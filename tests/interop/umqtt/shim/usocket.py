"""MicroPython's usocket on CPython: sockets with read() and write()."""
import socket as _socket

getaddrinfo = _socket.getaddrinfo
AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM


class socket(_socket.socket):
    def read(self, n):
        try:
            return self.recv(n)
        except BlockingIOError:
            return None  # MicroPython: no data on a non-blocking socket

    def write(self, data, length=-1):
        data = bytes(data)
        if length >= 0:
            data = data[:length]
        self.sendall(data)
        return len(data)
