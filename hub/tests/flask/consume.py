"""Reads a channel with flask-sse's own sse.messages(), in the quickstart app's context, as a
Flask app does to stream. Prints each message as a line of JSON: its data, type, id and retry
as flask-sse's Message holds them, and "text", what flask-sse's /stream sends for it
(str(message)). Exits after COUNT messages.

    REDIS_URL=redis://127.0.0.1:6379/ python consume.py CHANNEL COUNT
"""

import json
import sys

from app import app
from flask_sse import sse

channel, count = sys.argv[1], int(sys.argv[2])
with app.app_context():
    for n, message in enumerate(sse.messages(channel=channel), start=1):
        fields = {
            "data": message.data,
            "type": message.type,
            "id": message.id,
            "retry": message.retry,
            "text": str(message),
        }
        print(json.dumps(fields), flush=True)
        if n == count:
            break
