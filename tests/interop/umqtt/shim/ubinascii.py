"""MicroPython's ubinascii on CPython."""
from binascii import *  # noqa: F401,F403
