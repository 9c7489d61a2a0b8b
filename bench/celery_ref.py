"""The reference system's OCR worker, as a Python Celery app: prefork
children, each with its own Tesseract model (Debian's python3-tesserocr,
loaded when the child starts), pages shrunk to 2048 px with Lanczos, the
page's text and its words with boxes and confidences returned. Run by
bench/celery_bench.py with the reference's settings (-c 2, prefetch 1, acks
late, max tasks per child 50, max memory per child 200000 KiB)."""
import os

import tesserocr
from celery import Celery
from celery.signals import worker_process_init, worker_ready
from PIL import Image

URL = os.environ["BENCH_BROKER"]
app = Celery("ref", broker=URL, backend=URL)
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_serializer = "json"
app.conf.result_serializer = "json"
MAX_SIDE = 2048
_api = {}


def api(lang):
    if lang not in _api:
        _api[lang] = tesserocr.PyTessBaseAPI(lang=lang, psm=tesserocr.PSM.AUTO)
    return _api[lang]


@worker_process_init.connect
def load_model(**_):
    api(os.environ.get("BENCH_LANG", "eng"))


@worker_ready.connect
def say_ready(**_):
    open(os.environ["BENCH_READY"], "w").close()


@app.task(name="ocrpool.ocr_page")
def ocr_page(source, lang, page=1, **kwargs):
    img = Image.open(source)
    w, h = img.size
    scale = min(1.0, MAX_SIDE / max(w, h))
    if scale < 1.0:
        img = img.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
    a = api(lang)
    a.SetImage(img)
    a.Recognize()
    text = a.GetUTF8Text()
    words = []
    it = a.GetIterator()
    level = tesserocr.RIL.WORD
    for w_ in tesserocr.iterate_level(it, level):
        t = w_.GetUTF8Text(level)
        if not t:
            continue
        x0, y0, x1, y1 = w_.BoundingBox(level)
        words.append({"text": t, "bbox": [round(x0 / scale), round(y0 / scale),
                                         round(x1 / scale), round(y1 / scale)],
                      "confidence": w_.Confidence(level)})
    return {"source": source, "page": page, "width": w, "height": h, "text": text,
            "words": words}
