"""MicroPython's uerrno on CPython."""
from errno import *  # noqa: F401,F403
