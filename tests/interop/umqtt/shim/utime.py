"""MicroPython's utime on CPython."""
import time as _time

_MAX = 1 << 30


def ticks_ms():
    return int(_time.monotonic() * 1000) & (_MAX - 1)


def ticks_add(ticks, delta):
    return (ticks + delta) & (_MAX - 1)


def ticks_diff(a, b):
    d = (a - b) & (_MAX - 1)
    return d - _MAX if d >= _MAX // 2 else d


def sleep_ms(ms):
    _time.sleep(ms / 1000)


sleep = _time.sleep
