"""flask-sse's quickstart app (https://flask-sse.readthedocs.io/en/latest/quickstart.html), as a
Flask team runs it, with the one change a move to the hub asks for: the page's EventSource
points at the hub's /events instead of the app's own /stream. The app itself still publishes
with sse.publish() and still serves flask-sse's /stream, for the tests to compare with.

REDIS_URL comes from the environment (the test's private redis-server). Run it as flask-sse
says to, under gunicorn with gevent workers:

    REDIS_URL=redis://127.0.0.1:6379/ gunicorn app:app --worker-class gevent --bind 127.0.0.1:8000
"""

import os

from flask import Flask, render_template, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.route("/")
def index():
    # The hub's address, which the test knows only once the hub runs; an app would keep it in
    # its config.
    return render_template("index.html", hub=request.args["hub"])


@app.route("/hello")
def publish_hello():
    sse.publish({"message": "Hello!"}, type="greeting")
    return "Message sent!"
