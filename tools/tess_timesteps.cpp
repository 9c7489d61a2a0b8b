// tess_timesteps IMAGE LANG TESSDATA: every LSTM time step libtesseract computes on IMAGE
// read as one raw text line (page segmentation mode 13), one line per step: its choices as
// "symbol<US>probability" separated by tabs. The reference side of the lstm engine's parity
// test (tests/integration/test_lstm.sh); it uses only libtesseract's public C++ API.
#include <leptonica/allheaders.h>
#include <tesseract/baseapi.h>
#include <tesseract/resultiterator.h>

#include <cstdio>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tess_timesteps IMAGE LANG TESSDATA\n");
        return 2;
    }
    tesseract::TessBaseAPI api;
    if (api.Init(argv[3], argv[2], tesseract::OEM_LSTM_ONLY) != 0)
        return 1;
    api.SetPageSegMode(tesseract::PSM_RAW_LINE);
    api.SetVariable("lstm_choice_mode", "1");
    api.SetVariable("debug_file", "/dev/null");
    Pix *pix = pixRead(argv[1]);
    if (!pix)
        return 1;
    api.SetImage(pix);
    if (api.Recognize(nullptr) != 0)
        return 1;
    tesseract::ResultIterator *ri = api.GetIterator();
    if (ri) {
        do {
            auto *steps = ri->GetRawLSTMTimesteps();
            if (!steps)
                continue;
            for (auto &symbol : *steps)
                for (auto &step : symbol) {
                    for (auto &choice : step)
                        printf("%s\x1f%.9g\t", choice.first, choice.second);
                    printf("\n");
                }
        } while (ri->Next(tesseract::RIL_WORD));
        delete ri;
    }
    pixDestroy(&pix);
    return 0;
}
