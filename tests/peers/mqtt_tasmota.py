"""A Tasmota smart plug as paho-mqtt sees it: Tasmota's own topics, no Brume firmware.

Usage: mqtt_tasmota.py HOST PORT TOPIC USERNAME PASSWORD
Logs in, sets its last will "Offline" on tele/TOPIC/LWT (retained, as Tasmota does), says
"Online" there, subscribes to cmnd/TOPIC/POWER and prints READY once subscribed. A POWER command
(ON, OFF, TOGGLE) switches the output and is answered on stat/TOPIC/POWER with ON or OFF, as
Tasmota does; each command received is printed as "cmnd POWER <payload>".

Driven by stdin, one command per line:
  sensor <temperature> <humidity>   publish tele/TOPIC/SENSOR in Tasmota's AM2301 layout
  raw <subtopic> <payload>          publish <payload> on tele/TOPIC/<subtopic>
  quit                              disconnect cleanly and exit
"""

import json
import queue
import sys
import threading

import paho.mqtt.client as mqtt


def main(host, port, topic, username, password):
    subscribed = threading.Event()
    state = {"power": False}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tasmota_" + topic)
    client.username_pw_set(username, password)
    client.will_set("tele/%s/LWT" % topic, "Offline", qos=1, retain=True)
    failures = queue.Queue()

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            failures.put("CONNACK %s" % reason_code)
            return
        c.publish("tele/%s/LWT" % topic, "Online", qos=1, retain=True)
        c.subscribe("cmnd/%s/POWER" % topic, qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            failures.put("SUBACK %s" % reason_codes)
        else:
            subscribed.set()

    def on_message(c, userdata, msg):
        payload = msg.payload.decode()
        print("cmnd POWER %s" % payload, flush=True)
        word = payload.strip().upper()
        if word in ("ON", "1", "TRUE"):
            state["power"] = True
        elif word in ("OFF", "0", "FALSE"):
            state["power"] = False
        elif word in ("TOGGLE", "2"):
            state["power"] = not state["power"]
        c.publish("stat/%s/POWER" % topic, "ON" if state["power"] else "OFF", qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        reason = failures.get() if not failures.empty() else "timed out"
        print("FAILED: %s" % reason, file=sys.stderr, flush=True)
        sys.exit(1)
    print("READY", flush=True)

    for line in sys.stdin:
        words = line.split(maxsplit=2)
        if not words:
            continue
        if words[0] == "sensor":
            doc = {
                "Time": "2024-01-01T00:00:00",
                "AM2301": {"Temperature": float(words[1]), "Humidity": float(words[2])},
                "TempUnit": "C",
            }
            client.publish("tele/%s/SENSOR" % topic, json.dumps(doc), qos=1).wait_for_publish(20)
            print("sent sensor", flush=True)
        elif words[0] == "raw":
            client.publish("tele/%s/%s" % (topic, words[1]), words[2].rstrip("\n"), qos=1).wait_for_publish(20)
            print("sent raw", flush=True)
        elif words[0] == "quit":
            break
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main(*sys.argv[1:6])
