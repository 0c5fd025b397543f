"""Publishes with flask-sse's own sse.publish(), in the quickstart app's context, as app code
does. Each argument is a JSON object of sse.publish's keyword arguments (data, type, id, retry,
channel), published in order. Prints, per publish, what sse.publish returns: the number of Redis
subscriptions that got it.

    REDIS_URL=redis://127.0.0.1:6379/ python publish.py '{"data": {"message": "Hello!"}, "type": "greeting"}'
"""

import json
import sys

from app import app
from flask_sse import sse

with app.app_context():
    for arg in sys.argv[1:]:
        print(sse.publish(**json.loads(arg)), flush=True)
