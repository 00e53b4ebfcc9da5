"""A WLAN that is always connected: the test machine has its network."""
STA_IF = 0


class WLAN:
    def __init__(self, interface):
        self._active = False

    def active(self, on=None):
        if on is not None:
            self._active = on
        return self._active

    def isconnected(self):
        return True

    def connect(self, ssid, psk):
        pass
