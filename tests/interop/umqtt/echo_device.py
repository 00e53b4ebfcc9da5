# The MicroPython echo example of the seed document (a device that echoes
# each message on ticle/demo/in to ticle/demo/out with an "echo:" prefix,
# with a heartbeat), run under CPython with the shims in shim/.
# Changes from the document: the broker and port come from the command
# line, the heartbeat period is 1 s instead of 5 s, and the loop ends after
# RUN_S seconds so the test is bounded.
import sys

import network, utime, ubinascii
from machine import unique_id
from umqtt.simple2 import MQTTClient

BROKER = sys.argv[1]
PORT = int(sys.argv[2])
RUN_S = int(sys.argv[3]) if len(sys.argv) > 3 else 10
WIFI_SSID = "YOUR_WIFI_SSID"
WIFI_PSK = "YOUR_WIFI_PASSWORD"
CLIENT_ID = b"mpy-" + ubinascii.hexlify(unique_id())
TOPIC_SUB = b"ticle/demo/in"
TOPIC_PUB = b"ticle/demo/out"


def wifi_connect(ssid, psk, timeout=15000):
    sta = network.WLAN(network.STA_IF)
    if not sta.active():
        sta.active(True)
    if not sta.isconnected():
        sta.connect(ssid, psk)
        start = utime.ticks_ms()
        while not sta.isconnected() and utime.ticks_diff(utime.ticks_ms(), start) < timeout:
            utime.sleep_ms(100)
    return sta.isconnected()


def main():
    if not wifi_connect(WIFI_SSID, WIFI_PSK):
        raise OSError("wifi failed")
    last_pub = 0

    def on_msg(topic, msg, ret, dup):
        c.publish(TOPIC_PUB, b"echo:" + msg)

    c = MQTTClient(CLIENT_ID, BROKER, port=PORT, keepalive=30)
    c.set_callback(on_msg)
    c.connect(clean_session=True)
    c.subscribe(TOPIC_SUB)
    c.publish(TOPIC_PUB, b"online")
    started = utime.ticks_ms()
    while utime.ticks_diff(utime.ticks_ms(), started) < RUN_S * 1000:
        c.check_msg()
        now = utime.ticks_ms()
        if utime.ticks_diff(now, last_pub) >= 1000:
            c.publish(TOPIC_PUB, b"heartbeat")
            last_pub = now
        utime.sleep_ms(50)
    c.disconnect()


main()
