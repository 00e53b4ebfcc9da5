"""paho-mqtt (Python) publish/subscribe round trip against a broker.

Usage: paho_roundtrip.py HOST PORT (311|5)
Subscribes at QoS 2, publishes one message at each QoS 0/1/2 (and, in
MQTT 5, a user property), checks each arrives with its payload and QoS.
Exits 0 on success, 1 with a reason on stderr otherwise. Every wait is
bounded.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
topic = f"interop/paho/{version}"
WAIT = 10

received = []
subscribed = threading.Event()
done = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        print(f"connect refused: {reason_code}", file=sys.stderr)
        sys.exit(1)
    client.subscribe(topic, qos=2)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subscribed.set()


def on_message(client, userdata, message):
    user = []
    if message.properties is not None and hasattr(message.properties, "UserProperty"):
        user = message.properties.UserProperty
    received.append((message.payload.decode(), message.qos, user))
    if len(received) == 3:
        done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{version}", protocol=protocol)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, port, keepalive=30)
client.loop_start()
try:
    if not subscribed.wait(WAIT):
        sys.exit("no SUBACK in time")
    for qos in (0, 1, 2):
        props = None
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("k", "v")]
        info = client.publish(topic, f"paho {qos}", qos=qos, properties=props)
        info.wait_for_publish(WAIT)
        if not info.is_published():
            sys.exit(f"QoS {qos} publish not acknowledged")
    if not done.wait(WAIT):
        sys.exit(f"received only {received}")
    want = [(f"paho {q}", q) for q in (0, 1, 2)]
    got = sorted((p, q) for p, q, _ in received)
    if got != want:
        sys.exit(f"got {got}, want {want}")
    if protocol == mqtt.MQTTv5 and any(u != [("k", "v")] for _, _, u in received):
        sys.exit(f"user properties lost: {received}")
finally:
    client.disconnect()
    client.loop_stop()
