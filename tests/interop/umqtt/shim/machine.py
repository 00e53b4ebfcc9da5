"""The bits of MicroPython's machine module the example uses."""
import os


def unique_id():
    return os.getpid().to_bytes(4, "big")
