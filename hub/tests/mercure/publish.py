"""Publishes updates to a Mercure hub with mercure-publisher's MercurePublisher, as its users do.

Usage: python publish.py CONFIG UPDATE...
CONFIG is JSON: {"hub_url": ..., "key": ..., "publish_topics": [...]}, MercureConfig's
hub_url, publisher_jwt_key and publish_topics (the client mints its own HS256 token from them).
Each UPDATE is JSON: {"topic": str or [str], "data": str or object, and optionally "private",
"id", "type", "retry"}, the arguments of MercurePublisher.publish(), published in order.
Prints one JSON line per update: {"id": what publish() returned, the hub's answer}, or
{"status": ..., "body": ...} when the client raised MercurePublishError (the hub refused it).
"""

import json
import sys

from mercure_publisher import MercureConfig, MercurePublisher, MercurePublishError


def main() -> None:
    config = json.loads(sys.argv[1])
    config = MercureConfig(
        hub_url=config["hub_url"],
        publisher_jwt_key=config["key"],
        publish_topics=config["publish_topics"],
        request_timeout=10.0,
    )
    with MercurePublisher(config) as publisher:
        for arg in sys.argv[2:]:
            update = json.loads(arg)
            topic = update.pop("topic")
            data = update.pop("data")
            try:
                answer = {"id": publisher.publish(topic, data, **update)}
            except MercurePublishError as err:
                answer = {"status": err.status_code, "body": err.response_body}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
