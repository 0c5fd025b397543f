"""Subscribes to a Mercure hub with pymercure's Consumer, as its users do.

Usage: python subscribe.py HUB_URL COUNT TOPIC...
Prints {"ready": true} once the hub has answered the subscription (Consumer.start_consumption()
returns when the response has come), then one JSON line per update the Consumer's callback
gets: {"data": ..., "id": ..., "type": ...}; exits after COUNT updates.
"""

import json
import os
import sys
import threading

from pymercure.consumer import Consumer


def main() -> None:
    hub_url, count, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    received = []
    done = threading.Event()

    def callback(message) -> None:
        received.append(message)
        update = {"data": message.data, "id": message.message_id, "type": message.event_type}
        print(json.dumps(update), flush=True)
        if len(received) >= count:
            done.set()

    consumer = Consumer(hub_url, topics, callback)
    consumer.daemon = True
    consumer.start_consumption()
    print(json.dumps({"ready": True}), flush=True)
    done.wait()
    # The Consumer's thread reads the stream forever: leave without waiting for it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
