"""A Python Celery worker's task of ocrpool's name, for the other direction
of the wire: pages that `ocrpool submit --broker redis://` writes must be
consumed by an ordinary Celery worker (`celery -A celery_peer worker`).
The task reads the file it is given and answers what it received."""
import os

from celery import Celery

URL = os.environ["PEER_BROKER"]
app = Celery("peer", broker=URL, backend=URL)
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1


@app.task(name="ocrpool.ocr_page")
def ocr_page(source, lang, page=1, **kwargs):
    with open(source, "rb") as f:
        size = len(f.read())
    return {"peer": "python-celery", "source": source, "lang": lang, "page": page,
            "bytes": size, "kwargs": sorted(kwargs)}
