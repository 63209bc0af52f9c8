"""A backend talking to roomd's server API with Python's standard library only.

    ROOMD_URL=http://127.0.0.1:7700 ROOMD_API_KEY=... python3 examples/backend.py

It posts a system message to a room, bumps a counter, reads the room's last messages and
shows who is online: the four things a backend most often does.
"""

import datetime
import json
import os
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ.get("ROOMD_URL", "http://127.0.0.1:7700")
KEY = os.environ["ROOMD_API_KEY"]
ROOM = urllib.parse.quote(os.environ.get("ROOMD_ROOM", "chat:lobby"), safe="")


def api(method, path, body=None):
    """One API call: JSON in, JSON out; a non-2xx answer raises with roomd's error code."""
    req = urllib.request.Request(
        f"{BASE}/api/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as res:
            return json.load(res)
    except urllib.error.HTTPError as e:
        err = json.load(e)
        raise RuntimeError(f"{method} {path}: {e.code} {err['error']} ({err['code']}): {err['message']}")


# `mid` makes the publish safe to retry: a second one with the same mid is not stored again.
today = datetime.date.today().isoformat()
posted = api("POST", f"/rooms/{ROOM}/messages",
             {"data": {"text": "The server restarts at 02:00 UTC", "name": "system"},
              "mid": f"notice-{today}"})
print(f"posted seq {posted['seq']}" + (" (already posted)" if posted["dup"] else ""))

counter = api("POST", f"/rooms/{ROOM}/state/visits/incr", {"by": 1})
print(f"visits: {counter['value']}")

history = api("GET", f"/rooms/{ROOM}/messages?limit=5")
for m in history["items"]:
    if m["type"] == "msg":
        body = m["text"] if "text" in m else json.dumps(m.get("data", m.get("data_b64")))
        print(f"#{m['seq']} {m.get('uid', m['from'])}: {body}")

who = api("GET", f"/rooms/{ROOM}/presence")
print("online: " + (", ".join(m.get("user", m["conn"]) for m in who["members"]) or "nobody"))
