"""MicroPython's uselect on CPython."""
from select import POLLERR, POLLHUP, POLLIN, POLLOUT, poll  # noqa: F401
