#!/usr/bin/env python3
"""Silent clients on a node's control socket (test_control.sh): the node never blocks on them.
  silent_clients.py held|crowd SOCKET OCRPOOL BROKER PAGES_DIR NODE_PID
held: a new silent client every 0.4 s, each kept open 3 s, while 4 pages run and monitor asks;
      the node drops each at its deadline (2 s).
crowd: 30 silent clients at once (more than the node's 8), then 4 pages and a monitor call."""
import json, socket, subprocess, sys, time

mode = sys.argv[1]
path, ocrpool, q, pdir, node = sys.argv[2:7]


def done():
    out = subprocess.run([ocrpool, "status", "--broker", q, "--json"], capture_output=True, text=True)
    return json.loads(out.stdout)["done"]


def held():
    clients, dropped, t0 = [], [], time.time()
    def hold():
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        clients.append((time.time(), s))
    hold()
    subprocess.run([ocrpool, "submit", "--broker", q, "-l", "eng"] + ["%s/small%d.png" % (pdir, i) for i in (1, 2, 3, 4)],
                   check=True, stdout=subprocess.DEVNULL)
    monitor_ok = False
    while time.time() - t0 < 5:
        time.sleep(0.4)
        hold()
        for opened, s in list(clients):
            try:
                gone = s.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                gone = False
            if gone:
                dropped.append(time.time() - opened)
            if gone or time.time() - opened > 3:
                s.close()
                clients.remove((opened, s))
        if not monitor_ok and time.time() - t0 > 1:
            m = subprocess.run([ocrpool, "monitor", "--json", "--node", node], capture_output=True, text=True, timeout=10)
            monitor_ok = m.returncode == 0 and len(json.loads(m.stdout)["nodes"]) == 1
    n = done()
    print("# %d pages done in %.1f s with silent clients held; %d dropped after %s s" %
          (n, time.time() - t0, len(dropped), [round(d, 1) for d in dropped]))
    assert n == 4, n
    assert monitor_ok
    assert dropped and all(1.8 < d < 3 for d in dropped), dropped


def crowd():
    before = done()
    socks, refused = [], 0
    for _ in range(30):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)  # a full backlog refuses (EAGAIN) instead of blocking this test
        try:
            s.connect(path)
            socks.append(s)
        except (BlockingIOError, ConnectionRefusedError):
            refused += 1
            s.close()
    subprocess.run([ocrpool, "submit", "--broker", q, "-l", "eng"] + ["%s/small%d.png" % (pdir, i) for i in (1, 2, 3, 4)],
                   check=True, stdout=subprocess.DEVNULL)
    t0 = time.time()
    m = subprocess.run([ocrpool, "monitor", "--json", "--node", node], capture_output=True, text=True, timeout=20)
    took = time.time() - t0
    ok = m.returncode == 0 and len(json.loads(m.stdout)["nodes"]) == 1
    while done() < before + 4 and time.time() - t0 < 20:
        time.sleep(0.2)
    print("# %d silent clients connected (%d refused: backlog full); monitor answered (%s) in %.1f s;"
          " %d of 4 pages done in %.1f s" % (len(socks), refused, ok, took, done() - before, time.time() - t0))
    assert len(socks) > 8, len(socks)  # more than the node serves at once
    assert ok and took < 5, (ok, took, m.stderr[-300:])
    assert done() == before + 4


{"held": held, "crowd": crowd}[mode]()
