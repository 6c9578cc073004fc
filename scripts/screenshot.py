#!/usr/bin/env python3
"""Takes the README's screenshot: two Confab windows in a real conversation, under Xvfb.

Everything runs on 127.0.0.1 with mDNS off, in a temporary directory:
  1. a bootstrap; two nodes (`confab rpc`) register `ann` and `ben`, become friends and chat,
     ann sends a picture; the nodes stop (their history stays in their data dirs);
  2. Xvfb on display :99; the two apps start on those data dirs (each opens the conversation it
     had selected, written to its app.json), side by side;
  3. each window is captured (ImageMagick `import`) and the two are put side by side.

Needs: xvfb, imagemagick, xdotool, mesa-vulkan-drivers (apt), and the debug build:
  cargo build -p confab-app -p confab-node -p confab-bootstrap
Usage: python3 scripts/screenshot.py [OUTPUT.png]   (default docs/screenshot.png)
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/confab-target"))
BIN = os.path.join(TARGET, "debug")
PASSWORD = "seven quiet owls"
DISPLAY = ":99"
STEP_TIMEOUT = 30


class Rpc:
    """One `confab rpc` process: requests by line, answers matched by id, events kept."""

    def __init__(self, data_dir, name, bootstrap):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "confab"), "--data-dir", data_dir, "--name", name,
             "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap, "--no-mdns", "rpc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.next_id = 0
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.events = []

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def call(self, method, **params):
        self.next_id += 1
        self.proc.stdin.write(json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}) + "\n")
        self.proc.stdin.flush()
        deadline = time.time() + STEP_TIMEOUT
        while time.time() < deadline:
            msg = self.lines.get(timeout=STEP_TIMEOUT)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, method, pred):
        deadline = time.time() + STEP_TIMEOUT
        for e in self.events:
            if e.get("method") == method and pred(e["params"]):
                return e["params"]
        while time.time() < deadline:
            msg = self.lines.get(timeout=STEP_TIMEOUT)
            self.events.append(msg)
            if msg.get("method") == method and pred(msg["params"]):
                return msg["params"]
        raise TimeoutError(method)

    def stop(self):
        self.call("shutdown")
        self.proc.wait(timeout=STEP_TIMEOUT)


def picture(path):
    subprocess.run(["convert", "-size", "480x300", "gradient:#2a6bd1-#f2b35a",
                    "-fill", "white", "-pointsize", "34", "-gravity", "center",
                    "-annotate", "0", "the lake at dusk", path], check=True)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "screenshot.png")
    work = tempfile.mkdtemp(prefix="confab-shot-")
    boot = subprocess.Popen(
        [os.path.join(BIN, "confab-bootstrap"), "--data-dir", os.path.join(work, "boot"),
         "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs = [boot]
    try:
        addr = boot.stdout.readline().split()[1]
        dirs = {u: os.path.join(work, u) for u in ("ann", "ben")}
        ann = Rpc(dirs["ann"], "Ann", addr)
        ben = Rpc(dirs["ben"], "Ben", addr)
        ann.call("register", user="ann", password=PASSWORD)
        ben.call("register", user="ben", password=PASSWORD)
        ann.call("friend_add", user="ben")
        ben.call("friend_accept", user="ann")
        talk = [
            (ann, "ben", "Hi Ben! Are you coming to the lake on Saturday?"),
            (ben, "ann", "Yes! I'll bring the boat. What time?"),
            (ann, "ben", "Around 10. Here's the spot from last year:"),
        ]
        for who, to, text in talk:
            who.call("send", to=f"user:{to}", text=text)
            time.sleep(0.3)
        pic = os.path.join(work, "lake.png")
        picture(pic)
        ann.call("send", to="user:ben", text="the lake at dusk", file=pic)
        time.sleep(0.3)
        sent = ben.call("send", to="user:ann", text="Beautiful. See you at 10 🚣")
        ann.wait_for("message", lambda m: m["id"] == sent["id"])
        ben.call("mark_read", conversation="user:ann")
        ann.call("mark_read", conversation="user:ben")
        time.sleep(1)
        ann.stop()
        ben.stop()
        for user, other in (("ann", "ben"), ("ben", "ann")):
            with open(os.path.join(dirs[user], "app.json"), "w") as f:
                json.dump({"name": user.title(), "selected": f"user:{other}"}, f)

        xvfb = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", "2100x760x24"],
                                stderr=subprocess.DEVNULL)
        procs.append(xvfb)
        time.sleep(1)
        env = dict(os.environ, DISPLAY=DISPLAY)
        shots = []
        for i, user in enumerate(("ann", "ben")):
            app = subprocess.Popen(
                [os.path.join(BIN, "confab-app"), "--data-dir", dirs[user], "--no-mdns",
                 "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", addr],
                env=env, stderr=subprocess.DEVNULL)
            procs.append(app)
            deadline = time.time() + STEP_TIMEOUT
            wid = None
            while time.time() < deadline and not wid:
                found = subprocess.run(["xdotool", "search", "--pid", str(app.pid)],
                                       env=env, capture_output=True, text=True).stdout.split()
                wid = found[-1] if found else None
                time.sleep(0.5)
            if not wid:
                raise TimeoutError(f"{user}'s window")
            subprocess.run(["xdotool", "windowmove", wid, str(i * 1050), "0"], env=env)
            shots.append((wid, os.path.join(work, f"{user}.png")))
        time.sleep(12)  # sign-in, history and the thumbnail
        for wid, path in shots:
            subprocess.run(["import", "-window", wid, path], env=env, check=True)
        subprocess.run(["convert", shots[0][1], shots[1][1], "+append", out], check=True)
        print(out)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
